//! What a user of the matcher notices: who links, who does not, person ids that stay, reviewer
//! decisions that hold, events that carry their evidence.

use std::sync::OnceLock;

use aqueduct_match::identity::{IdentityEvent, LinkReason, Verdict};
use aqueduct_match::{
    Address, Decision, Identifier, Identity, Matcher, MemoryIdentityStore, Model, Record, Settings,
    Sex, synth,
};
use chrono::{TimeZone, Utc};

/// A model trained (no labels) on a synthetic population, as an organization's would be.
fn trained_model() -> Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let data = synth::generate(4_000, 7);
            let mut m = Matcher::new(Settings::default());
            for r in &data.records {
                m.insert(r).expect("synthetic records have ids");
            }
            m.train();
            m.model().clone()
        })
        .clone()
}

fn matcher() -> Matcher {
    Matcher::with_model(Settings::default(), trained_model())
}

#[allow(clippy::too_many_arguments)]
fn person(
    id: &str,
    source: &str,
    given: &str,
    family: &str,
    dob: &str,
    sex: Sex,
    street: &str,
    phone: &str,
) -> Record {
    Record {
        id: id.into(),
        source: source.into(),
        given: vec![given.into()],
        family: family.into(),
        birth_date: (!dob.is_empty()).then(|| dob.into()),
        sex: Some(sex),
        address: (!street.is_empty()).then(|| Address {
            lines: vec![street.into()],
            city: "Springfield".into(),
            state: "IL".into(),
            postal_code: "62704".into(),
        }),
        phone: (!phone.is_empty()).then(|| phone.into()),
        email: None,
        identifiers: vec![Identifier {
            system: format!("urn:mrn:{source}"),
            value: format!("MRN-{id}"),
        }],
    }
}

fn decision(a: &Record, b: &Record) -> (Decision, String) {
    let mut m = matcher();
    m.insert(a).expect("id");
    m.insert(b).expect("id");
    let e = m.explain(&a.id, &b.id).expect("both inserted");
    (e.decision, e.to_string())
}

fn at(h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0)
        .single()
        .unwrap_or_default()
}

#[test]
fn bob_smith_links_with_robert_smith() {
    let a = person(
        "a1",
        "ehr-a",
        "Robert",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main Street",
        "(217) 555-0101",
    );
    let b = person(
        "b1",
        "ehr-b",
        "Bob",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main St",
        "+1 217 555 0101",
    );
    let (d, text) = decision(&a, &b);
    assert_eq!(d, Decision::Link, "{text}");
    assert!(text.contains("nickname"), "{text}");
}

#[test]
fn liz_links_with_elizabeth_across_a_typo_in_the_surname() {
    let a = person(
        "a1",
        "ehr-a",
        "Elizabeth",
        "Johnson",
        "1982-11-30",
        Sex::Female,
        "7 Oak Avenue Apt 3",
        "2175550199",
    );
    let b = person(
        "b1",
        "ehr-b",
        "Liz",
        "Jonhson",
        "1982-11-30",
        Sex::Female,
        "7 Oak Ave #3",
        "",
    );
    let (d, text) = decision(&a, &b);
    assert_eq!(d, Decision::Link, "{text}");
}

#[test]
fn twins_with_the_same_birthday_and_address_do_not_link() {
    let a = person(
        "a1",
        "ehr-a",
        "Emma",
        "Larsen",
        "2001-03-14",
        Sex::Female,
        "40 Birch Lane",
        "2175550123",
    );
    let b = person(
        "a2",
        "ehr-a",
        "Olivia",
        "Larsen",
        "2001-03-14",
        Sex::Female,
        "40 Birch Lane",
        "2175550123",
    );
    let (d, text) = decision(&a, &b);
    assert_ne!(d, Decision::Link, "{text}");
    // a brother of a twin pair with a similar name: the sex keeps them apart
    let c = person(
        "a3",
        "ehr-a",
        "Michael",
        "Larsen",
        "2001-03-14",
        Sex::Male,
        "40 Birch Lane",
        "2175550123",
    );
    let e = person(
        "a4",
        "ehr-a",
        "Michelle",
        "Larsen",
        "2001-03-14",
        Sex::Female,
        "40 Birch Lane",
        "2175550123",
    );
    let (d, text) = decision(&c, &e);
    assert_ne!(d, Decision::Link, "{text}");
}

#[test]
fn parent_and_child_with_the_same_name_do_not_link() {
    let a = person(
        "a1",
        "ehr-a",
        "John",
        "Carter",
        "1952-06-01",
        Sex::Male,
        "9 Elm Street",
        "2175550142",
    );
    let b = person(
        "b1",
        "ehr-b",
        "John",
        "Carter Jr",
        "1979-06-01",
        Sex::Male,
        "9 Elm Street",
        "2175550142",
    );
    let (d, text) = decision(&a, &b);
    assert_ne!(d, Decision::Link, "{text}");
}

#[test]
fn explain_shows_each_comparison_its_weight_and_the_total() {
    let a = person(
        "a1",
        "ehr-a",
        "Robert",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main Street",
        "",
    );
    let b = person(
        "b1",
        "ehr-b",
        "Bob",
        "Smith",
        "1970-07-05",
        Sex::Male,
        "12 Main St",
        "",
    );
    let mut m = matcher();
    m.insert(&a).expect("id");
    m.insert(&b).expect("id");
    let e = m.explain("a1", "b1").expect("known");
    let sum: f64 = e.prior
        + e.terms
            .iter()
            .map(|t| t.weight + t.tf_adjustment)
            .sum::<f64>();
    assert!(
        (sum - e.total).abs() < 1e-9,
        "total is the sum of its parts"
    );
    let text = e.to_string();
    for want in [
        "given name",
        "nickname",
        "birth date",
        "one digit off",
        "prior",
        "total",
        "decision",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
}

#[test]
fn a_new_record_is_compared_with_its_blocks_only() {
    let data = synth::generate(3_000, 11);
    let mut m = matcher();
    for r in &data.records {
        m.insert(r).expect("id");
    }
    let newcomer = person(
        "new",
        "ehr-z",
        "Robert",
        "Quinlan",
        "1990-01-02",
        Sex::Male,
        "5 Quay Street",
        "2175550777",
    );
    let pairs = m.add_and_match(&newcomer).expect("id");
    assert!(
        pairs.len() < 100,
        "{} comparisons for one record among 3,000",
        pairs.len()
    );
    let stats = m.block_stats();
    assert!(stats.rules.iter().all(|r| !r.rule.is_empty()));
    assert!(
        stats.rules.iter().filter(|r| r.pairs > 0).count() >= 5,
        "{stats}"
    );
}

fn identity() -> Identity<MemoryIdentityStore> {
    Identity::new(matcher(), MemoryIdentityStore::default()).expect("empty store")
}

#[test]
fn a_person_id_stays_when_a_new_source_arrives() {
    let mut id = identity();
    let first = [
        person(
            "ehr-a/1",
            "ehr-a",
            "Robert",
            "Smith",
            "1970-05-05",
            Sex::Male,
            "12 Main Street",
            "2175550101",
        ),
        person(
            "ehr-a/2",
            "ehr-a",
            "Ana",
            "Garcia-Lopez",
            "1988-02-29",
            Sex::Female,
            "3 Pine Road",
            "2175550102",
        ),
        person(
            "ehr-a/3",
            "ehr-a",
            "Wei",
            "Chen",
            "1961-09-09",
            Sex::Male,
            "77 Cedar Court",
            "2175550103",
        ),
    ];
    for r in &first {
        id.upsert(r).expect("upsert");
    }
    let before: Vec<_> = first.iter().map(|r| id.person(&r.id)).collect();
    assert!(before.iter().all(Option::is_some));
    let second = [
        person(
            "payer/x",
            "payer",
            "Bob",
            "Smith",
            "1970-05-05",
            Sex::Male,
            "12 Main St",
            "217-555-0101",
        ),
        person(
            "payer/y",
            "payer",
            "Ana",
            "Garcia",
            "1988-02-29",
            Sex::Female,
            "3 Pine Rd",
            "",
        ),
        person(
            "payer/z",
            "payer",
            "Wei",
            "Chen",
            "1961-09-09",
            Sex::Male,
            "",
            "2175550103",
        ),
    ];
    for (r, want) in second.iter().zip(&before) {
        let events = id.upsert(r).expect("upsert");
        assert_eq!(id.person(&r.id), *want, "{events:?}");
        assert!(
            events.iter().any(|e| matches!(e, IdentityEvent::Joined { record, evidence, .. } if record == &r.id && !evidence.is_empty())),
            "{events:?}"
        );
    }
    for (r, want) in first.iter().zip(&before) {
        assert_eq!(id.person(&r.id), *want, "old records keep their person");
    }
    assert_eq!(id.persons(), 3);
}

#[test]
fn a_merge_keeps_the_earliest_id_and_carries_its_evidence() {
    let mut id = identity();
    // two partial records of one person that do not link on their own
    let mut x = person(
        "ehr-a/1",
        "ehr-a",
        "K",
        "Voss",
        "",
        Sex::Female,
        "",
        "2175550155",
    );
    x.identifiers.clear();
    let mut y = person(
        "ehr-b/9",
        "ehr-b",
        "Katarina",
        "Voss",
        "1979-12-24",
        Sex::Female,
        "18 Harbor Drive",
        "",
    );
    y.identifiers.clear();
    id.upsert(&x).expect("upsert");
    id.upsert(&y).expect("upsert");
    let (px, py) = (id.person(&x.id).expect("x"), id.person(&y.id).expect("y"));
    assert_ne!(
        px,
        py,
        "the partial records alone are not enough:\n{}",
        id.explain(&x.id, &y.id)
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    // a full record links to both
    let z = person(
        "payer/4",
        "payer",
        "Katarina",
        "Voss",
        "1979-12-24",
        Sex::Female,
        "18 Harbor Dr",
        "217 555 0155",
    );
    let events = id.upsert(&z).expect("upsert");
    let merged = events
        .iter()
        .find_map(|e| match e {
            IdentityEvent::Merged {
                kept,
                absorbed,
                evidence,
            } => Some((*kept, absorbed.clone(), evidence.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no merge in {events:?}"));
    assert_eq!(merged.0, px.min(py), "earliest person id kept");
    assert_eq!(merged.1, vec![px.max(py)]);
    assert!(!merged.2.is_empty());
    for link in &merged.2 {
        match &link.reason {
            LinkReason::Matched(e) => {
                assert!(e.total >= e.thresholds.link);
                assert!(e.terms.iter().any(|t| t.weight > 0.0));
            }
            other => panic!("unexpected reason {other:?}"),
        }
    }
    for r in [&x, &y, &z] {
        assert_eq!(id.person(&r.id), Some(px.min(py)));
    }
}

#[test]
fn a_reviewer_unlink_survives_rematching() {
    let mut id = identity();
    let a = person(
        "ehr-a/1",
        "ehr-a",
        "Robert",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main Street",
        "2175550101",
    );
    let b = person(
        "ehr-b/1",
        "ehr-b",
        "Bob",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main St",
        "2175550101",
    );
    id.upsert(&a).expect("upsert");
    id.upsert(&b).expect("upsert");
    let p = id.person(&a.id).expect("a");
    assert_eq!(
        id.person(&b.id),
        Some(p),
        "they link before the reviewer speaks"
    );
    let events = id
        .decide(&a.id, &b.id, Verdict::Unlink, "dr.jones", at(9))
        .expect("decide");
    assert!(
        events.iter().any(|e| matches!(e, IdentityEvent::Split { from, reason, .. } if *from == p && reason.contains("dr.jones"))),
        "{events:?}"
    );
    assert_ne!(id.person(&a.id), id.person(&b.id));
    assert_eq!(id.person(&a.id), Some(p), "the person keeps its id");
    id.rematch_all().expect("rematch");
    assert_ne!(
        id.person(&a.id),
        id.person(&b.id),
        "re-matching does not overturn the reviewer"
    );
    let mut b2 = b.clone();
    b2.email = Some("bob@example.org".into());
    id.upsert(&b2).expect("changed record");
    assert_ne!(
        id.person(&a.id),
        id.person(&b.id),
        "nor does a changed record"
    );
    let audit = aqueduct_match::IdentityStore::decisions(id.store()).expect("store");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].reviewer, "dr.jones");
    assert_eq!(audit[0].at, at(9));
}

#[test]
fn a_reviewer_link_joins_a_pair_the_score_left_in_review() {
    let mut id = identity();
    let a = person(
        "ehr-a/1",
        "ehr-a",
        "Emma",
        "Larsen",
        "2001-03-14",
        Sex::Female,
        "40 Birch Lane",
        "2175550123",
    );
    let b = person(
        "ehr-b/1",
        "ehr-b",
        "Olivia",
        "Larsen",
        "2001-03-14",
        Sex::Female,
        "40 Birch Lane",
        "2175550123",
    );
    id.upsert(&a).expect("upsert");
    id.upsert(&b).expect("upsert");
    assert_ne!(id.person(&a.id), id.person(&b.id));
    assert!(
        id.review_queue()
            .iter()
            .any(|r| r.evidence.decision == Decision::Review)
    );
    id.decide(&a.id, &b.id, Verdict::Link, "registrar", at(10))
        .expect("decide");
    assert_eq!(id.person(&a.id), id.person(&b.id));
    assert!(id.review_queue().is_empty());
    id.rematch_all().expect("rematch");
    assert_eq!(
        id.person(&a.id),
        id.person(&b.id),
        "the reviewer's link holds"
    );
}

#[test]
fn hard_evidence_from_a_source_links_what_the_score_would_not() {
    let mut id = identity();
    let old = serde_json::json!({
        "resourceType": "Patient", "id": "1",
        "name": [{"family": "Nakamura", "given": ["Yuki"]}],
        "birthDate": "1990-04-01", "gender": "female"
    });
    let new = serde_json::json!({
        "resourceType": "Patient", "id": "2",
        "name": [{"family": "Brennan", "given": ["Yuki"]}],
        "birthDate": "1990-04-01", "gender": "female",
        "link": [{"other": {"reference": "Patient/1"}, "type": "replaces"}]
    });
    aqueduct_match::fhir::upsert_patient(&mut id, "ehr-a", &old, at(8)).expect("patient 1");
    let events =
        aqueduct_match::fhir::upsert_patient(&mut id, "ehr-a", &new, at(8)).expect("patient 2");
    assert_eq!(
        id.person("ehr-a/Patient/1"),
        id.person("ehr-a/Patient/2"),
        "{events:?}"
    );
    // an HL7 A40 merge as well
    let third = person("hl7-x/77", "hl7-x", "Pat", "Doe", "", Sex::Unknown, "", "");
    id.upsert(&third).expect("upsert");
    id.force_link(
        "hl7-x/77",
        "ehr-a/Patient/1",
        "HL7 ADT^A40 control id 881",
        at(9),
    )
    .expect("forced");
    assert_eq!(id.person("hl7-x/77"), id.person("ehr-a/Patient/1"));
    id.rematch_all().expect("rematch");
    assert_eq!(id.person("hl7-x/77"), id.person("ehr-a/Patient/2"));
}

#[test]
fn a_changed_record_that_no_longer_links_splits_off_with_an_event() {
    let mut id = identity();
    let a = person(
        "ehr-a/1",
        "ehr-a",
        "Robert",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main Street",
        "2175550101",
    );
    let b = person(
        "ehr-b/1",
        "ehr-b",
        "Bob",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main St",
        "2175550101",
    );
    id.upsert(&a).expect("upsert");
    id.upsert(&b).expect("upsert");
    let p = id.person(&a.id).expect("a");
    assert_eq!(id.person(&b.id), Some(p));
    // the source corrects its record: it was another person all along
    let corrected = person(
        "ehr-b/1",
        "ehr-b",
        "Maria",
        "Okafor",
        "1993-08-17",
        Sex::Female,
        "5 Lake Road",
        "2175550999",
    );
    let events = id.upsert(&corrected).expect("changed record");
    let split = events
        .iter()
        .find_map(|e| match e {
            IdentityEvent::Split {
                from,
                into,
                reason,
                moved,
            } => Some((*from, into.clone(), reason.clone(), moved.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no split in {events:?}"));
    assert_eq!(split.0, p);
    assert_eq!(split.3, vec!["ehr-b/1".to_string()]);
    assert!(split.2.contains("ehr-b/1 changed"), "{}", split.2);
    assert_eq!(
        id.person(&a.id),
        Some(p),
        "the remaining record keeps the person id"
    );
    assert_eq!(id.person(&b.id), split.1.first().copied());
    assert_eq!(id.persons(), 2);
}

#[test]
fn a_restored_identity_keeps_its_persons_and_matches_only_what_is_new() {
    let robert = person(
        "ehr-a/1",
        "ehr-a",
        "Robert",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main Street",
        "2175550101",
    );
    let bob = person(
        "payer/x",
        "payer",
        "Bob",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main St",
        "217-555-0101",
    );
    let ana = person(
        "ehr-a/2",
        "ehr-a",
        "Ana",
        "Garcia",
        "1988-02-29",
        Sex::Female,
        "3 Pine Road",
        "2175550102",
    );
    let mut first = identity();
    for r in [&robert, &bob, &ana] {
        first.upsert(r).expect("upsert");
    }
    let smith = first.person(&robert.id).expect("matched");
    assert_eq!(first.person(&bob.id), Some(smith));

    // a later session over the same store: every record put back with its person, none
    // compared
    let mut later =
        Identity::new(matcher(), first.store().clone()).expect("the store of the first");
    for r in [&robert, &bob, &ana] {
        let p = first.person(&r.id).expect("matched");
        later.restore(r, p).expect("restore");
    }
    assert_eq!(later.persons(), 2);
    // a reviewer's word on a Smith record touches the Smiths: their links, not kept in memory,
    // are worked out again rather than taken for a split
    let events = later
        .decide(
            &robert.id,
            &ana.id,
            Verdict::Unlink,
            "reviewer@example",
            at(9),
        )
        .expect("decide");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, IdentityEvent::Split { .. })),
        "{events:?}"
    );
    assert_eq!(later.person(&bob.id), Some(smith));
    // a third source's Robert joins the Smiths
    let third = person(
        "clinic/9",
        "clinic",
        "Robert",
        "Smith",
        "1970-05-05",
        Sex::Male,
        "12 Main Street",
        "",
    );
    let events = later.upsert(&third).expect("upsert");
    assert_eq!(later.person(&third.id), Some(smith), "{events:?}");
    assert_eq!(later.person(&robert.id), Some(smith));
    assert_eq!(later.person(&bob.id), Some(smith));
    // a changed record of the other person is matched on its own, the Smiths untouched
    let mut moved = ana.clone();
    moved.phone = Some("2175550999".into());
    let events = later.upsert(&moved).expect("upsert");
    assert_eq!(later.person(&ana.id), first.person(&ana.id), "{events:?}");
    assert_eq!(later.records_of(smith).len(), 3);
}
