#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::BufReader;

use aqueduct_normalize::Terminology;
use aqueduct_normalize::terminology::*;

fn fixture(name: &str) -> BufReader<File> {
    BufReader::new(
        File::open(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
}

#[test]
fn embedded_tables_are_consistent() {
    let t = Terminology::embedded();
    assert!(t.loinc.len() >= 80, "{}", t.loinc.len());
    for (code, e) in &t.loinc {
        assert!(
            loinc_check_digit_ok(code),
            "bad LOINC check digit in table: {code}"
        );
        if let Some(u) = &e.canonical_unit {
            assert!(
                aqueduct_normalize::units::is_valid(u),
                "{code}: canonical unit {u} unknown"
            );
        }
    }
    assert!(t.cvx.len() >= 30);
    assert!(t.rxnorm.len() >= 40);
    assert!(t.snomed.len() >= 20);
    for v in [
        "loinc",
        "snomed",
        "cvx",
        "rxnorm",
        "ndc",
        "condition-groups",
    ] {
        assert_ne!(t.version(v), "unknown", "{v}");
    }
}

#[test]
fn loinc_check_digit() {
    for ok in [
        "8480-6", "8462-4", "2345-7", "29463-7", "4548-4", "85354-9", "718-7",
    ] {
        assert!(loinc_check_digit_ok(ok), "{ok}");
    }
    for bad in [
        "8480-5",
        "2345-1",
        "2345",
        "abc-1",
        "-1",
        "12345678-1",
        "2345-77",
    ] {
        assert!(!loinc_check_digit_ok(bad), "{bad}");
    }
}

#[test]
fn systems() {
    assert_eq!(
        recognise_system("http://loinc.org"),
        Some((StdSystem::Loinc, false))
    );
    assert_eq!(recognise_system("LOINC"), Some((StdSystem::Loinc, true)));
    assert_eq!(
        recognise_system("urn:oid:2.16.840.1.113883.6.90"),
        Some((StdSystem::Icd10Cm, true))
    );
    assert_eq!(
        recognise_system("http://snomed.info/sct/"),
        Some((StdSystem::Snomed, true))
    );
    assert_eq!(
        recognise_system("urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0"),
        None
    );
}

#[test]
fn ndc_forms() {
    assert_eq!(
        normalize_ndc("0093-1048-01").as_deref(),
        Some("00093104801")
    );
    assert_eq!(
        normalize_ndc("12345-678-90").as_deref(),
        Some("12345067890")
    );
    assert_eq!(
        normalize_ndc("12345-6789-1").as_deref(),
        Some("12345678901")
    );
    assert_eq!(normalize_ndc("12345678901").as_deref(), Some("12345678901"));
    assert_eq!(
        normalize_ndc("1234567890"),
        None,
        "10 digits without hyphens is ambiguous"
    );
    assert_eq!(normalize_ndc("12-34-56"), None);
}

#[test]
fn icd10_groups() {
    let t = Terminology::embedded();
    assert_eq!(t.icd10_groups("I10"), vec!["hypertension"]);
    assert_eq!(t.icd10_groups("I16.0"), vec!["hypertension"]);
    assert!(t.icd10_groups("I17").is_empty());
    assert_eq!(t.icd10_groups("E11.9"), vec!["diabetes"]);
    assert_eq!(t.icd10_groups("e08.65"), vec!["diabetes"]);
    assert!(t.icd10_groups("E14").is_empty());
    assert_eq!(t.icd10_groups("I50.22"), vec!["heart-failure"]);
    assert!(t.icd10_groups("I5").is_empty() || t.icd10_groups("I5") == vec!["heart-failure"]);
    assert_eq!(t.icd10_groups("O9A.1"), vec!["pregnancy"]);
    assert_eq!(t.snomed_group("44054006"), Some("diabetes"));
}

#[test]
fn icd10_chapters() {
    let t = Terminology::embedded();
    let ch = |c: &str| t.icd10_chapter(c).map(|g| g.group.as_str());
    assert_eq!(ch("I50.22"), Some("9"));
    assert_eq!(ch("A00.0"), Some("1"));
    assert_eq!(ch("D49.9"), Some("2"));
    assert_eq!(ch("D50.0"), Some("3"));
    assert_eq!(ch("O9A.12"), Some("15"));
    assert_eq!(ch("S72.001A"), Some("19"));
    assert_eq!(ch("T88.7"), Some("19"));
    assert_eq!(ch("U07.1"), Some("22"));
    assert_eq!(ch("z99.89"), Some("21"));
    assert_eq!(ch(""), None);
    assert_eq!(ch("ÄÖÜ"), None);
    assert_eq!(ch("123"), None);
    assert_eq!(t.chapters.len(), 22);
    assert!(
        t.icd10_chapter("I10")
            .unwrap()
            .display
            .contains("circulatory")
    );
    // chapters do not overlap, and every condition group lies inside one chapter
    for (i, a) in t.chapters.iter().enumerate() {
        for b in &t.chapters[i + 1..] {
            assert!(a.to < b.from || b.to < a.from, "{a:?} overlaps {b:?}");
        }
    }
    for g in &t.groups {
        let from = t.icd10_chapter(&g.from).map(|c| &c.group);
        assert!(from.is_some(), "{g:?}");
        assert_eq!(from, t.icd10_chapter(&g.to).map(|c| &c.group), "{g:?}");
    }
}

#[test]
fn text_matching() {
    let t = Terminology::embedded();
    let m = t.match_text(Domain::Observation, "Hemoglobin A1c").unwrap();
    assert_eq!(m.code, "4548-4");
    assert!(m.score >= 0.99);
    let m = t
        .match_text(Domain::Observation, "HDL Cholesterol")
        .unwrap();
    assert_eq!(m.code, "2085-9");
    // a typo still matches, with a lower score
    let m = t.match_text(Domain::Observation, "Glucos serum").unwrap();
    assert_eq!(m.code, "2345-7");
    // hdl vs ldl must not be confused by string similarity
    let m = t.match_text(Domain::Observation, "XDL cholesterol");
    assert!(m.is_none_or(|m| m.score < 0.9));
    let m = t.match_text(Domain::Condition, "HTN").unwrap();
    assert_eq!(m.code, "38341003");
    let m = t.match_text(Domain::Medication, "Metformin").unwrap();
    assert_eq!(m.code, "6809");
    assert!(t.match_text(Domain::Observation, "zzzz qqqq").is_none());
}

#[test]
fn load_loinc_csv() {
    let mut t = Terminology::embedded();
    let n = t.load_loinc_csv(fixture("Loinc.csv"), "2.77").unwrap();
    assert_eq!(n, 3, "deprecated row skipped");
    assert!(!t.loinc.contains_key("1111-3"));
    let e = &t.loinc["1234-5"];
    assert_eq!(
        e.name,
        "Fictional analyte [Mass/volume] in Serum or Plasma, sample only"
    );
    assert_eq!(e.canonical_unit.as_deref(), Some("ng/mL"));
    assert_eq!(t.loinc["24323-8"].kind, LoincKind::Panel);
    // curated canonical unit and molar mass survive
    assert_eq!(t.loinc["2345-7"].molar_mass, Some(180.16));
    assert_eq!(t.version("loinc"), "2.77");
    assert_eq!(
        t.match_text(Domain::Observation, "fictional analyte")
            .unwrap()
            .code,
        "1234-5"
    );
}

#[test]
fn load_rxnorm() {
    let mut t = Terminology::default();
    assert_eq!(
        t.load_rxnconso(fixture("RXNCONSO.RRF"), "2026-11").unwrap(),
        2
    );
    assert_eq!(t.rxnorm["6809"].name, "metformin");
    assert!(!t.rxnorm.contains_key("999999"), "suppressed");
    assert_eq!(t.load_rxnsat(fixture("RXNSAT.RRF"), "2026-11").unwrap(), 1);
    assert_eq!(t.ndc.get("99999012301").map(String::as_str), Some("860975"));
    assert!(!t.ndc.contains_key("99999045602"));
    assert!(
        t.load_rxnconso(std::io::Cursor::new("6809|ENG|x\n"), "v")
            .is_err()
    );
}

#[test]
fn load_snomed() {
    let mut t = Terminology::default();
    let n = t
        .load_snomed_rf2(
            fixture("sct2_Concept_Snapshot_INT_sample.txt"),
            fixture("sct2_Description_Snapshot-en_INT_sample.txt"),
            "20260901",
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        t.snomed["44054006"].display,
        "Diabetes mellitus type 2 (disorder)"
    );
    assert!(!t.snomed.contains_key("111111000"));
    assert_eq!(
        t.match_text(Domain::Condition, "Type II diabetes mellitus")
            .unwrap()
            .code,
        "44054006"
    );
    assert_eq!(
        t.match_text(Domain::Condition, "diabetes mellitus type 2")
            .unwrap()
            .code,
        "44054006"
    );
}

#[test]
fn load_icd10cm() {
    let mut t = Terminology::embedded();
    assert_eq!(
        t.load_icd10cm_order(fixture("icd10cm_order_sample.txt"), "2026")
            .unwrap(),
        4
    );
    assert_eq!(
        t.icd10cm["I5022"],
        "Chronic systolic (congestive) heart failure"
    );
    assert!(
        t.load_icd10cm_order(std::io::Cursor::new("00001 E11\n"), "x")
            .is_err()
    );
}

#[test]
fn load_cvx() {
    let mut t = Terminology::default();
    assert_eq!(t.load_cvx(fixture("cvx_sample.txt"), "2026-10").unwrap(), 2);
    assert_eq!(
        t.cvx["208"],
        "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose"
    );
    assert!(!t.cvx.contains_key("998"), "non-vaccine skipped");
}

#[test]
fn load_groups() {
    let mut t = Terminology::embedded();
    let n = t
        .load_condition_groups(
            std::io::Cursor::new("sleep-apnea,G47.3,G47.3,Sleep apnea\n"),
            "site-1",
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(t.icd10_groups("G47.33"), vec!["sleep-apnea"]);
}

#[test]
fn load_directory_of_release_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (t, loaded) = Terminology::embedded_with_dir(&dir).unwrap();
    let names: Vec<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "Loinc.csv",
            "RXNCONSO.RRF",
            "RXNSAT.RRF",
            "sct2_Description_Snapshot-en_INT_sample.txt",
            "icd10cm_order_sample.txt",
            "cvx_sample.txt"
        ]
    );
    // the version names the file, its size and mtime: a release swapped in under the same
    // name changes it, and with it the fingerprint that decides what is re-derived
    let v = t.version("cvx");
    assert!(v.starts_with("cvx_sample.txt@"), "{v}");
    let size = std::fs::metadata(dir.join("cvx_sample.txt")).map(|m| m.len());
    assert!(v.contains(&format!("@{}-", size.unwrap())), "{v}");
    assert!(t.loinc.contains_key("8480-6"), "embedded tables kept");
    assert!(Terminology::embedded_with_dir(std::path::Path::new("/nonexistent/dir")).is_err());
}

#[test]
fn snomed_verhoeff() {
    let t = Terminology::embedded();
    for code in t.snomed.keys() {
        assert!(snomed_check_digit_ok(code), "{code}");
    }
    assert!(snomed_check_digit_ok("448337001"));
    assert!(!snomed_check_digit_ok("44054007"), "typo in last digit");
    assert!(!snomed_check_digit_ok("44504006"), "transposition");
    assert!(!snomed_check_digit_ok("04405400"));
    assert!(!snomed_check_digit_ok("12345"));
}

#[test]
fn unicode_codes_do_not_panic() {
    let t = Terminology::embedded();
    assert!(t.icd10_groups("Ié0").is_empty());
    assert!(t.icd10_groups("é").is_empty());
    assert!(t.icd10_groups("").is_empty());
    assert!(!loinc_check_digit_ok("é-1"));
    assert!(!snomed_check_digit_ok("éééééé"));
    assert_eq!(normalize_ndc("ééé-é-é"), None);
}

#[test]
fn load_snomed_groups_csv() {
    let mut t = Terminology::embedded();
    let n = t
        .load_snomed_groups(
            std::io::Cursor::new(
                "# comment\n448337001,telehealth-test,Telemedicine consultation,tele consult\n",
            ),
            "site-1",
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(t.snomed_group("448337001"), Some("telehealth-test"));
    assert_eq!(
        t.match_text(Domain::Condition, "tele consult")
            .unwrap()
            .code,
        "448337001"
    );
    assert!(
        t.load_snomed_groups(std::io::Cursor::new("12345,x,y\n"), "bad")
            .is_err()
    );
}
