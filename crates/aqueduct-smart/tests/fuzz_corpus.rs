//! The committed fuzz corpus (`fuzz/corpus/*`) goes through the same functions the fuzz
//! targets call, so CI replays it without building a fuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = e.unwrap().path();
        f(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(
        n >= 5,
        "{target}: only {n} corpus files in {}",
        dir.display()
    );
}

#[test]
fn smart_configuration_corpus_replays() {
    replay(
        "smart_configuration",
        aqueduct_smart::fuzzing::smart_configuration,
    );
}

#[test]
fn id_token_jwks_corpus_replays() {
    replay("id_token_jwks", aqueduct_smart::fuzzing::id_token_and_jwks);
}
