//! Accuracy without the download: a FEBRL-shaped fixture made by the synthetic generator
//! (`examples/make_fixture.rs`; not the FEBRL data), and a synthetic population scored
//! against its truth. The published figures (README) come from `aqueduct bench match`.

use std::time::Instant;

use aqueduct_match::bench::{read_febrl_csv, run_labelled, run_synthetic};
use aqueduct_match::{Matcher, PairScope, Settings, synth};

#[test]
fn febrl_shaped_fixture_is_matched_accurately() {
    let text = include_str!("fixtures/synthetic_febrl.csv");
    let data = read_febrl_csv(text, "fixture").expect("fixture parses");
    assert_eq!(data.records.len(), 2_000);
    let r = run_labelled(
        "fixture",
        &data,
        PairScope::All,
        None,
        None,
        Instant::now(),
        0.0,
    )
    .expect("runs");
    println!("{r}");
    // The FEBRL layout has no sex, phone or email: a person who moved keeps only name and
    // birth date in common, so recall is lower than on the full synthetic records.
    assert!(r.shipped.precision >= 0.99, "{r}");
    assert!(r.shipped.recall >= 0.80, "{r}");
    assert!(r.best.f1 >= 0.90, "{r}");
}

#[test]
fn synthetic_population_is_deduplicated_against_its_truth() {
    let r = run_synthetic(5_000, 3, None, true, None).expect("runs");
    println!("{r}");
    assert!(r.shipped.precision >= 0.99, "{r}");
    assert!(r.shipped.f1 >= 0.95, "{r}");
}

#[test]
fn em_learns_agreement_from_unlabelled_records() {
    let data = synth::generate(3_000, 5);
    let mut m = Matcher::new(Settings::default());
    for r in &data.records {
        m.insert(r).expect("id");
    }
    let report = m.train();
    assert!(report.em_iterations > 0);
    let model = m.model();
    for (field, f) in aqueduct_match::compare::FIELDS.iter().enumerate() {
        if *f == aqueduct_match::Field::Line2 {
            continue; // the generator writes units, which are not a second line
        }
        // the first level (agreement) is likelier among matches than among non-matches, and
        // far likelier for everything but sex (half of random pairs agree on it)
        let factor = if *f == aqueduct_match::Field::Sex {
            1.5
        } else {
            5.0
        };
        assert!(
            model.m[field][0] > factor * model.u[field][0],
            "{f:?}: m {:?} u {:?}",
            model.m[field],
            model.u[field]
        );
    }
    assert!(report.prior > 0.0 && report.prior < 0.01, "{report:?}");
}

#[test]
fn confirmed_pairs_refine_m() {
    let data = synth::generate(2_000, 9);
    let mut m = Matcher::new(Settings::default());
    for r in &data.records {
        m.insert(r).expect("id");
    }
    m.train();
    let before = m.model().m.clone();
    let pairs: Vec<(&str, &str)> = data
        .records
        .windows(2)
        .zip(data.entity.windows(2))
        .filter(|(_, e)| e[0] == e[1])
        .map(|(r, _)| (r[0].id.as_str(), r[1].id.as_str()))
        .take(200)
        .collect();
    assert!(pairs.len() > 50);
    m.refine_with_confirmed(&pairs, 100.0);
    assert_ne!(before, m.model().m);
}
