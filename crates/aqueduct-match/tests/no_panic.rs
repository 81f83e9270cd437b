//! No input string panics a normalizer, the record preparation, a comparison, the explanation
//! or the FHIR adapter.

use aqueduct_match::compare::{FIELDS, Prepared, compare};
use aqueduct_match::{Address, Identifier, Matcher, Record, Settings, Sex, fhir, normalize};
use proptest::prelude::*;

fn record(id: String, s: Vec<String>) -> Record {
    let g = |i: usize| s.get(i).cloned().unwrap_or_default();
    Record {
        id,
        source: g(0),
        given: vec![g(1), g(2)],
        family: g(3),
        birth_date: Some(g(4)),
        sex: Some(Sex::parse(&g(5))),
        address: Some(Address {
            lines: vec![g(6), g(7)],
            city: g(8),
            state: g(9),
            postal_code: g(10),
        }),
        phone: Some(g(11)),
        email: Some(g(12)),
        identifiers: vec![
            Identifier {
                system: g(13),
                value: g(14),
            },
            Identifier {
                system: g(13),
                value: g(15),
            },
        ],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn normalizers_never_panic(s in any::<String>()) {
        let _ = normalize::words(&s);
        let _ = normalize::name_words(&s);
        let _ = normalize::street_line(&s);
        let _ = normalize::zip5(&s);
        let _ = normalize::phone_e164(&s);
        let _ = normalize::email(&s);
        let _ = normalize::birth_date(&s);
        let _ = normalize::identifier(&s, &s);
        let _ = normalize::place(&s);
        let _ = aqueduct_match::nickname_equivalent(&s, "bob");
    }

    #[test]
    fn odd_looking_strings_still_normalize(s in "[0-9a-zA-Z #,.'\\-/éñß\u{1f}\u{1e}]{0,60}") {
        let p = normalize::phone_e164(&s);
        prop_assert!(p.is_empty() || (p.starts_with('+') && p.len() <= 16));
        prop_assert!(normalize::zip5(&s).len() <= 5);
        let w = normalize::name_words(&s);
        prop_assert!(w.iter().all(|x| x.chars().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn comparisons_never_panic(a in proptest::collection::vec(any::<String>(), 16), b in proptest::collection::vec(".{0,40}", 16)) {
        let ra = record("a".into(), a);
        let rb = record("b".into(), b);
        let (pa, pb) = (Prepared::new(&ra), Prepared::new(&rb));
        let g = compare(&pa, &pb);
        for (f, l) in FIELDS.iter().zip(g) {
            prop_assert!(usize::from(l) <= f.level_count());
            let _ = pa.value(*f);
        }
        let mut m = Matcher::new(Settings::default());
        m.insert(&ra).map_err(|e| TestCaseError::fail(e.to_string()))?;
        m.insert(&rb).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let e = m.explain("a", "b").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let _ = e.to_string();
        let _ = m.score_all(f64::NEG_INFINITY);
    }

    #[test]
    fn the_patient_adapter_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        aqueduct_match::fuzzing::patient_adapter(&bytes);
    }

    #[test]
    fn patients_of_any_shape_never_panic(
        name in any::<String>(), given in any::<String>(), dob in any::<String>(), line in any::<String>(),
        phone in any::<String>(), n in 0i64..5,
    ) {
        let v = serde_json::json!({
            "resourceType": "Patient", "id": "x",
            "name": [{"family": name, "given": [given, n]}, {"text": "A B C"}, 7],
            "birthDate": dob, "gender": n,
            "address": [{"line": [line, null]}, "nonsense"],
            "telecom": [{"system": "phone", "value": phone}, {"system": "email", "value": n}],
            "identifier": [{"system": "s", "value": name}, {"value": 3}],
            "link": [{"other": {"reference": line}, "type": "replaced-by"}, {"other": 5}]
        });
        if let Ok(f) = fhir::patient("src", &v) {
            let p = Prepared::new(&f.record);
            let _ = compare(&p, &p);
        }
    }
}
