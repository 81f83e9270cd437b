//! The format checks behind "is this code really of the system it is labelled with".
//! Valid cases are real codes; invalid ones are what sources actually send (athenahealth's
//! LOINC-labelled local numbers "31337" and "3953") or a single slip away from a real code.

#![allow(clippy::unwrap_used)]

use aqueduct_normalize::Terminology;
use aqueduct_normalize::code_format::{self, FormatError, NdcForm};
use aqueduct_normalize::terminology::StdSystem;
use proptest::prelude::*;

type Check = fn(&str) -> Result<(), FormatError>;

fn table(name: &str, check: Check, valid: &[&str], invalid: &[(&str, FormatError)]) {
    for v in valid {
        assert_eq!(check(v), Ok(()), "{name}: {v:?} is a real code");
    }
    for (v, why) in invalid {
        assert_eq!(check(v), Err(*why), "{name}: {v:?}");
    }
}

#[test]
fn loinc_mod10_check_digit() {
    use FormatError::*;
    table(
        "LOINC",
        code_format::loinc,
        &[
            "2345-7", "718-7", "4548-4", "8480-6", "85354-9", "29463-7", "39156-5",
        ],
        &[
            ("31337", NoCheckDigit),
            ("3953", NoCheckDigit),
            ("2345-8", CheckDigit),
            ("4548-3", CheckDigit),
            ("781-7", CheckDigit), // transposition of 718-7
            ("2345-77", Length),
            ("12345678-1", Length),
            ("-7", NotDigits),
            ("2345-", NotDigits),
            ("LA6576-8", NotDigits), // an answer code, not a term
            ("2345-7-1", NotDigits),
            ("", Empty),
        ],
    );
}

#[test]
fn snomed_verhoeff_and_partition() {
    use FormatError::*;
    table(
        "SNOMED CT concept",
        code_format::snomed_concept,
        &[
            "38341003",  // hypertensive disorder
            "73211009",  // diabetes mellitus
            "22298006",  // myocardial infarction
            "44054006",  // type 2 diabetes mellitus
            "448337001", // telemedicine consultation
            "100005",    // the shortest concept id
            "900000000000003001",
            "428361000124107", // a US extension concept: namespace 1000124, partition 10
        ],
        &[
            ("38341004", CheckDigit), // wrong Verhoeff digit
            ("73211008", CheckDigit),
            ("22289006", CheckDigit),     // transposition
            ("197761014", NotAConceptId), // a description id (partition 01)
            ("100022", NotAConceptId),    // a relationship id (partition 02)
            ("1005", Length),
            ("1234567890123456789", Length),
            ("038341003", LeadingZero),
            ("3834100X", NotDigits),
            ("", Empty),
        ],
    );
    // any component's id is a SNOMED CT id; only concepts are codes
    assert_eq!(code_format::snomed_id("197761014"), Ok(()));
    assert_eq!(code_format::snomed_id("38341004"), Err(CheckDigit));
}

#[test]
fn icd10cm_pattern() {
    use FormatError::*;
    table(
        "ICD-10-CM",
        code_format::icd10cm,
        &[
            "E11.9", "I10", "S72.001A", "C4A.0", "Z3A.01", "U07.1", "E119", "e11.9", "T36.0X1A",
        ],
        &[
            ("E1", Pattern),
            ("11.9", Pattern),
            ("E11.", Pattern),
            ("E1.19", Pattern),
            ("E11.99999", Pattern),
            ("EE1.9", Pattern),
            ("E11-9", Pattern),
            ("E11.9.1", Pattern),
            ("31337", Pattern),
            ("", Empty),
        ],
    );
}

#[test]
fn rxnorm_cvx_cpt_numbers() {
    use FormatError::*;
    table(
        "RxNorm",
        code_format::rxnorm,
        &["197361", "860975", "723", "314076"],
        &[
            ("0197361", LeadingZero),
            ("19736a", NotDigits),
            ("1234567890", Length),
            ("2345-7", NotDigits),
            ("", Empty),
        ],
    );
    table(
        "CVX",
        code_format::cvx,
        &["08", "140", "208", "03", "3"],
        &[("1400", Length), ("8a", NotDigits), ("", Empty)],
    );
    table(
        "CPT",
        code_format::cpt,
        &["99213", "0001F", "0042T"],
        &[("9921", Length), ("9921X", NotDigits), ("", Empty)],
    );
}

#[test]
fn ndc_ten_and_eleven_digit_forms() {
    let eleven = |s: &str| Ok(NdcForm::Eleven(s.to_string()));
    for (code, want) in [
        ("0071-0155-23", eleven("00071015523")),  // 4-4-2
        ("00071-0155-23", eleven("00071015523")), // 5-4-2
        ("00071015523", eleven("00071015523")),   // 11 bare digits
        ("12345-678-90", eleven("12345067890")),  // 5-3-2
        ("12345-6789-1", eleven("12345678901")),  // 5-4-1
        ("0071015523", Ok(NdcForm::TenUnsegmented)),
        ("0071-155-23", Err(FormatError::NdcSegments)), // 4-3-2
        ("71-0155-23", Err(FormatError::NdcSegments)),
        ("0071-0155-23-1", Err(FormatError::NdcSegments)),
        ("0071015", Err(FormatError::Length)),
        ("ABCD-0155-23", Err(FormatError::NotDigits)),
        ("0071--23", Err(FormatError::NotDigits)),
        ("", Err(FormatError::Empty)),
    ] {
        assert_eq!(code_format::ndc(code), want, "{code:?}");
    }
    assert_eq!(code_format::ndc_11("0071015523"), None, "ambiguous");
}

#[test]
fn npi_luhn_with_80840_prefix() {
    use FormatError::*;
    table(
        "NPI",
        code_format::npi,
        &["1234567893", "1245319599", "1003000126"],
        &[
            ("1234567890", CheckDigit),
            ("1234567839", CheckDigit), // transposition
            // passes plain Luhn (no prefix) but not the NPI's
            ("1234567897", CheckDigit),
            ("123456789", Length),
            ("12345678931", Length),
            ("12345678X3", NotDigits),
            ("", Empty),
        ],
    );
}

#[test]
fn std_system_check_trims_and_routes() {
    assert!(StdSystem::Loinc.valid_code(" 2345-7 "));
    assert_eq!(
        StdSystem::Loinc.check("31337"),
        Err(FormatError::NoCheckDigit)
    );
    assert_eq!(
        StdSystem::Snomed.check("197761014"),
        Err(FormatError::NotAConceptId)
    );
    assert!(StdSystem::Ndc.valid_code("0071015523"), "a real NDC shape");
    assert!(!StdSystem::Cvx.valid_code("2345-7"));
    assert!(StdSystem::Icd10Cm.valid_code("S72.001A"));
    // every reason reads as a sentence fragment for the flag detail
    assert_eq!(
        FormatError::CheckDigit.to_string(),
        "wrong check digit".to_string()
    );
}

#[test]
fn embedded_tables_pass_their_checks() {
    let t = Terminology::embedded();
    for code in t.loinc.keys() {
        assert_eq!(code_format::loinc(code), Ok(()), "loinc.csv {code}");
    }
    for code in t.snomed.keys() {
        assert_eq!(
            code_format::snomed_concept(code),
            Ok(()),
            "snomed.csv {code}"
        );
    }
    for (code, e) in &t.rxnorm {
        assert_eq!(code_format::rxnorm(code), Ok(()), "rxnorm.csv {code}");
        if let Some(i) = &e.ingredient {
            assert_eq!(code_format::rxnorm(i), Ok(()), "rxnorm.csv ingredient {i}");
        }
    }
    for code in t.cvx.keys() {
        assert_eq!(code_format::cvx(code), Ok(()), "cvx.csv {code}");
    }
    for (ndc, rxcui) in &t.ndc {
        assert!(
            matches!(code_format::ndc(ndc), Ok(NdcForm::Eleven(ref n)) if n == ndc),
            "ndc_rxnorm.csv {ndc}"
        );
        assert_eq!(code_format::rxnorm(rxcui), Ok(()), "ndc_rxnorm.csv {rxcui}");
    }
}

fn all_checks(s: &str) {
    let _ = code_format::loinc(s);
    let _ = code_format::snomed_id(s);
    let _ = code_format::snomed_concept(s);
    let _ = code_format::icd10cm(s);
    let _ = code_format::rxnorm(s);
    let _ = code_format::cvx(s);
    let _ = code_format::cpt(s);
    let _ = code_format::ndc(s);
    let _ = code_format::ndc_11(s);
    let _ = code_format::npi(s);
    for sys in [
        StdSystem::Loinc,
        StdSystem::Snomed,
        StdSystem::Icd10Cm,
        StdSystem::RxNorm,
        StdSystem::Ndc,
        StdSystem::Cvx,
        StdSystem::Cpt,
    ] {
        let _ = sys.check(s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn checks_never_panic_on_any_string(s in any::<String>()) {
        all_checks(&s);
    }

    /// Strings near the codes' alphabets reach the deeper branches (check digits, segments).
    #[test]
    fn checks_never_panic_on_code_like_strings(s in "[0-9A-Za-z.\\- é]{0,20}") {
        all_checks(&s);
    }

    /// Every single-digit change of a valid LOINC, SNOMED CT or NPI check digit is caught.
    #[test]
    fn a_changed_check_digit_is_refused(d in 0u8..10) {
        let d = char::from(b'0' + d);
        for (good, check) in [
            ("2345-7", code_format::loinc as Check),
            ("38341003", code_format::snomed_concept as Check),
            ("1234567893", code_format::npi as Check),
        ] {
            let mut s = good[..good.len() - 1].to_string();
            s.push(d);
            prop_assert_eq!(check(&s).is_ok(), s == good, "{}", s);
        }
    }
}
