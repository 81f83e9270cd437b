//! The committed fuzz corpus (`fuzz/corpus/TARGET/*`) goes through the same functions the fuzz
//! targets call, so CI replays every input the fuzzer kept without building a fuzzer; a
//! proptest throws arbitrary bytes (and NDJSON-shaped ones) at them as well.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use aqueduct_bulk::fuzzing::{Exercised, manifest, ndjson};
use proptest::prelude::*;

fn replay(target: &str, f: fn(&[u8]) -> Exercised) -> Exercised {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut sum = Exercised::default();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        sum.add(&f(&data));
        n += 1;
    }
    assert!(n >= 5, "{target}: only {n} corpus files");
    sum
}

#[test]
fn manifest_corpus_replays() {
    let s = replay("manifest", manifest);
    assert!(s.manifests >= 3 && s.files >= 3 && s.unusable >= 3, "{s:?}");
}

#[test]
fn ndjson_corpus_replays() {
    let s = replay("ndjson", ndjson);
    assert!(s.resources >= 4 && s.flagged >= 4 && s.blank >= 4, "{s:?}");
    assert!(s.deletes >= 2 && s.unterminated >= 2, "{s:?}");
}

fn ndjson_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(|id| format!(r#"{{"resourceType":"Observation","id":"{id}"}}"#)),
        Just(String::new()),
        Just("\r".to_string()),
        "\\PC{0,40}",
        Just(r#"{"resourceType":"Bundle","entry":[{"request":{"method":"DELETE","url":"Patient/1"}}]}"#.to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = manifest(&data);
        let _ = ndjson(&data);
    }

    #[test]
    fn ndjson_shaped_input(lines in proptest::collection::vec(ndjson_line(), 0..30), step in 1u8..40, bom: bool) {
        let mut data = vec![step];
        if bom {
            data.extend_from_slice(b"\xEF\xBB\xBF");
        }
        data.extend_from_slice(lines.join("\n").as_bytes());
        let _ = ndjson(&data);
    }
}
