//! Replays the committed fuzz corpus (fuzz/corpus) so CI covers it without a fuzzer.

#[test]
fn patient_adapter_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/patient_adapter");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("corpus file");
        aqueduct_match::fuzzing::patient_adapter(&bytes);
        n += 1;
    }
    assert!(n >= 5, "corpus has {n} files");
}

#[test]
fn the_adapter_reads_a_full_patient() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/patient_adapter");
    let bytes = std::fs::read(dir.join("full.json")).expect("full.json");
    let f = aqueduct_match::fhir::patient_from_slice("ehr-a", &bytes).expect("a Patient");
    let r = &f.record;
    assert_eq!(r.id, "ehr-a/Patient/p1");
    assert_eq!(
        r.family, "Garcia-Lopez",
        "the official name, not the old one"
    );
    assert_eq!(r.given, vec!["Ana", "María"]);
    assert_eq!(r.birth_date.as_deref(), Some("1988-02-29"));
    assert_eq!(r.phone.as_deref(), Some("(217) 555-0101"));
    assert_eq!(r.email.as_deref(), Some("Ana@Example.ORG"));
    assert_eq!(r.identifiers.len(), 1, "old identifiers are left out");
    assert_eq!(r.address.as_ref().map(|a| a.lines.len()), Some(2));
    assert_eq!(f.links.len(), 1);
    assert!(f.links[0].is_same_person());
    let bom = std::fs::read(dir.join("bom.json")).expect("bom.json");
    let f = aqueduct_match::fhir::patient_from_slice("s", &bom).expect("BOM is dropped");
    assert_eq!(f.record.family, "Smith");
    let obs = std::fs::read(dir.join("not_patient.json")).expect("file");
    assert!(aqueduct_match::fhir::patient_from_slice("s", &obs).is_err());
}
