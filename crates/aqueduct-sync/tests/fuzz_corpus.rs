//! The committed fuzz corpus (`fuzz/corpus/TARGET/*`) goes through the same functions the
//! fuzz targets call, so CI replays every input the fuzzer kept without building a fuzzer.
//! The sums check that the corpus still reaches the paths its seeds were written for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use aqueduct_sync::fuzzing::{Exercised, bundle_handling, fhir_page, ndjson_lines};

fn replay(target: &str, f: fn(&[u8]) -> Exercised) -> Exercised {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{target}: corpus dir {} missing: {e}", dir.display()));
    let mut sum = Exercised::default();
    let mut n = 0;
    for e in entries {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        sum.add(&f(&data));
        n += 1;
    }
    assert!(
        n >= 5,
        "{target}: only {n} corpus files in {}",
        dir.display()
    );
    sum
}

#[test]
fn fhir_page_corpus_replays() {
    let s = replay("fhir_page", fhir_page);
    assert!(s.followed > 0 && s.refused_next >= 3, "{s:?}");
    assert!(
        s.resources > 10 && s.duplicates > 0 && s.malformed > 0,
        "{s:?}"
    );
    assert!(s.outcomes > s.gap_outcomes && s.gap_outcomes > 0, "{s:?}");
    assert!(s.synthetic_ids > 0, "{s:?}");
    assert!(s.local_refs > 0 && s.versioned_refs > 0, "{s:?}");
    assert!(s.contained_refs > 0 && s.urn_refs > 0, "{s:?}");
    assert!(s.external_refs > 0 && s.invalid_refs > 0, "{s:?}");
    assert!(s.attachments >= 5, "{s:?}");
    assert!(
        s.operation_outcomes > 0 && s.capability_statements > 0,
        "{s:?}"
    );
}

#[test]
fn bundle_handling_corpus_replays() {
    let s = replay("bundle_handling", bundle_handling);
    assert!(s.bundles >= 5, "{s:?}");
    assert!(
        s.resources > 10 && s.duplicates > 0 && s.malformed > 0,
        "{s:?}"
    );
    assert!(s.outcomes > s.gap_outcomes && s.gap_outcomes > 0, "{s:?}");
    assert!(s.synthetic_ids > 0 && s.attachments > 0, "{s:?}");
}

#[test]
fn ndjson_lines_corpus_replays() {
    let s = replay("ndjson_lines", ndjson_lines);
    assert!(
        s.resources > 10 && s.synthetic_ids > 0 && s.lossy > 0,
        "{s:?}"
    );
    assert!(s.local_refs > 0 && s.versioned_refs > 0, "{s:?}");
    assert!(
        s.contained_refs > 0 && s.urn_refs > 0 && s.attachments > 0,
        "{s:?}"
    );
}
