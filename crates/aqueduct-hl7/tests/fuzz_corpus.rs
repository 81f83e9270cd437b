//! Replays the committed fuzz corpus (fuzz/corpus/TARGET/*) through the fuzz target bodies, so
//! CI checks every input the fuzzer kept without building the fuzzer.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).expect("a corpus file");
        f(&data);
        n += 1;
    }
    assert!(n >= 5, "{target}: {n} corpus files");
}

#[test]
fn parse_corpus() {
    replay("parse", aqueduct_hl7::fuzzing::parse);
}

#[test]
fn mllp_corpus() {
    replay("mllp", aqueduct_hl7::fuzzing::mllp);
}

#[test]
fn convert_corpus() {
    replay("convert", aqueduct_hl7::fuzzing::convert);
}
