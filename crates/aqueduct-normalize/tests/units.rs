#![allow(clippy::unwrap_used)]

use aqueduct_normalize::units::{
    Method, UnitError, analyze, convert, convert_detailed, convert_with_molar_mass, is_valid,
    known_units, to_ucum,
};
use proptest::prelude::*;

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn known_values() {
    // glucose: 100 mg/dL = 5.55 mmol/L (factor 18.016)
    let mmol = convert_with_molar_mass(100.0, "mg/dL", "mmol/L", Some(180.16)).unwrap();
    assert!(close(mmol, 100.0 / 18.016, 1e-12), "{mmol}");
    assert!(close(mmol, 5.5506, 1e-4));
    let mgdl = convert_with_molar_mass(7.0, "mmol/L", "mg/dL", Some(180.16)).unwrap();
    assert!(close(mgdl, 7.0 * 18.016, 1e-12));
    // 5.4 mg/dL = 0.054 g/L
    assert!(close(convert(5.4, "mg/dL", "g/L").unwrap(), 0.054, 1e-12));
    // weight, height
    assert!(close(
        convert(150.0, "[lb_av]", "kg").unwrap(),
        68.0388555,
        1e-9
    ));
    assert!(close(
        convert(1.0, "kg", "[lb_av]").unwrap(),
        2.20462262185,
        1e-9
    ));
    assert!(close(convert(70.0, "[in_i]", "cm").unwrap(), 177.8, 1e-12));
    assert!(close(
        convert(8.0, "[oz_av]", "g").unwrap(),
        226.796185,
        1e-9
    ));
    // temperature
    assert!(close(convert(98.6, "[degF]", "Cel").unwrap(), 37.0, 1e-12));
    assert!(close(
        convert(32.0, "[degF]", "Cel").unwrap() + 1.0,
        1.0,
        1e-12
    ));
    assert!(close(
        convert(-40.0, "Cel", "[degF]").unwrap(),
        -40.0,
        1e-12
    ));
    assert!(close(convert(37.0, "Cel", "K").unwrap(), 310.15, 1e-12));
    // pressure
    // UCUM defines m[Hg] as 133.3220 kPa (the conventional 133.322387 differs by 3 ppm)
    assert!(close(
        convert(1.0, "kPa", "mm[Hg]").unwrap(),
        1000.0 / 133.322,
        1e-12
    ));
    // counts
    assert!(close(
        convert(7.5, "10*3/uL", "10*9/L").unwrap(),
        7.5,
        1e-12
    ));
    assert!(close(
        convert(4.5, "10*6/uL", "10*12/L").unwrap(),
        4.5,
        1e-12
    ));
    // fraction
    assert!(close(convert(0.97, "1", "%").unwrap(), 97.0, 1e-12));
    assert!(close(convert(97.0, "%", "1").unwrap(), 0.97, 1e-12));
    // annotations
    assert!(close(
        convert(72.0, "{beats}/min", "/min").unwrap(),
        72.0,
        1e-12
    ));
    assert!(close(convert(1.0, "/s", "/min").unwrap(), 60.0, 1e-12));
}

#[test]
fn refusals() {
    assert!(matches!(
        convert(1.0, "kg", "cm"),
        Err(UnitError::Incompatible { .. })
    ));
    assert!(matches!(
        convert(1.0, "mg/dL", "mmol/L"),
        Err(UnitError::NeedsMolarMass { .. })
    ));
    // UCUM defines eq as mol; a divalent ion (calcium) would be off by two
    assert!(matches!(
        convert(1.0, "meq/L", "mmol/L"),
        Err(UnitError::NeedsValence { .. })
    ));
    // UCUM counts moles as numbers; glucose is not cells per microlitre
    assert!(matches!(
        convert(1.0, "mmol/L", "10*3/uL"),
        Err(UnitError::Incompatible { .. })
    ));
    assert!(matches!(
        convert(1.0, "U/L", "[IU]/L"),
        Err(UnitError::Incompatible { .. })
    ));
    assert!(matches!(
        convert(1.0, "{INR}", "{score}"),
        Err(UnitError::AnnotationsDiffer { .. })
    ));
    // an eGFR normalised to body surface is not a raw clearance
    assert!(matches!(
        convert(60.0, "mL/min/{1.73_m2}", "mL/min"),
        Err(UnitError::AnnotationsDiffer { .. })
    ));
    assert!(matches!(
        convert(1.0, "furlong", "m"),
        Err(UnitError::Unknown { .. })
    ));
    assert!(matches!(
        convert(f64::NAN, "kg", "g"),
        Err(UnitError::NotFinite)
    ));
    assert!(matches!(
        convert(f64::INFINITY, "kg", "g"),
        Err(UnitError::NotFinite)
    ));
    assert!(convert_with_molar_mass(1.0, "mg/dL", "mmol/L", Some(0.0)).is_err());
    assert!(convert_with_molar_mass(1.0, "mg/dL", "mmol/L", Some(-3.0)).is_err());
    // a molar mass does not make mass and length commensurable
    assert!(convert_with_molar_mass(1.0, "mg", "mmol/L", Some(180.16)).is_err());
    // magnitudes beyond f64 are refused, not turned into infinity
    assert!(convert(1.0, "10*999/L", "/L").is_err());
}

#[test]
fn full_ucum_grammar() {
    // expressions no table lists: the grammar reduces them
    assert!(close(convert(1.0, "kg.m-2", "kg/m2").unwrap(), 1.0, 1e-12));
    assert!(close(
        convert(2.0, "mg/(kg.d)", "ug/(kg.h)").unwrap(),
        2000.0 / 24.0,
        1e-12
    ));
    assert!(close(
        convert(1.0, "[ft_i]", "[in_i]").unwrap(),
        12.0,
        1e-12
    ));
    assert!(close(
        convert(1.0, "U/L", "ukat/L").unwrap(),
        1.0 / 60.0,
        1e-12
    ));
    assert!(close(
        convert(5.0, "m[IU]/L", "u[IU]/mL").unwrap(),
        5.0,
        1e-12
    ));
    assert!(close(
        convert(1.0, "[degF]", "K").unwrap(),
        255.927_777_8,
        1e-9
    ));
    assert!(close(
        convert(30.0, "mg/g{creat}", "mg/g").unwrap(),
        30.0,
        1e-12
    ));
    assert!(close(convert(2.0, "mg/g", "%").unwrap(), 0.2, 1e-12));
    // HbA1c: IFCC mmol/mol and NGSP % are related by a regression, not a factor
    assert!(convert(53.0, "mmol/mol", "%").is_err());
    assert!(convert_with_molar_mass(53.0, "mmol/mol", "%", Some(64_500.0)).is_err());
    // mass <-> substance through any prefixes and volumes
    let (y, m) = convert_detailed(1.0, "g/L", "umol/mL", Some(100.0)).unwrap();
    assert_eq!(m, Method::MolarMass);
    assert!(close(y, 10.0, 1e-12), "{y}");
    assert_eq!(
        convert_detailed(3.0, "mg/dL", "mg/dL", None).unwrap(),
        (3.0, Method::Identity)
    );
    assert!(is_valid("mL/min/{1.73_m2}"));
    assert!(!is_valid("mg/"));
    assert!(!is_valid("mmHg"));
    let a = analyze("10*3/uL").unwrap();
    assert!(!a.is_dimensionless());
    assert!(analyze("{INR}").unwrap().is_dimensionless());
    assert!(!analyze("mmol/L").unwrap().is_dimensionless());
}

#[test]
fn aliases() {
    let u = |s: &str| to_ucum(s);
    assert_eq!(u("mg/dl").as_deref(), Some("mg/dL"));
    assert_eq!(u("MG/DL").as_deref(), Some("mg/dL"));
    assert_eq!(u("lbs").as_deref(), Some("[lb_av]"));
    assert_eq!(u("°F").as_deref(), Some("[degF]"));
    assert_eq!(u("deg C").as_deref(), Some("Cel"));
    // a bare C on a temperature is Celsius, not UCUM's coulomb
    assert_eq!(u("C").as_deref(), Some("Cel"));
    assert_eq!(u("mmHg").as_deref(), Some("mm[Hg]"));
    assert_eq!(u("bpm").as_deref(), Some("/min"));
    assert_eq!(u("K/uL").as_deref(), Some("10*3/uL"));
    assert_eq!(u("mmol/l").as_deref(), Some("mmol/L"));
    assert_eq!(u("kg/m^2").as_deref(), Some("kg/m2"));
    assert_eq!(u("mL/min/1.73m2").as_deref(), Some("mL/min/{1.73_m2}"));
    assert_eq!(u("mcg/mL").as_deref(), Some("ug/mL"));
    // valid UCUM passes through as written
    assert_eq!(u("ng/(24.h)").as_deref(), Some("ng/(24.h)"));
    assert_eq!(u("widgets"), None);
    assert_eq!(u(""), None);
}

#[test]
fn review_regressions() {
    // only a unit with no unit atom may be assumed for a bare value
    for u in ["1", "{INR}", "{score}", "{ratio}"] {
        assert!(analyze(u).unwrap().unitless, "{u}");
    }
    for u in ["%", "mg/g", "10*3", "g/g", "mmol/mol", "[IU]"] {
        assert!(!analyze(u).unwrap().unitless, "{u}");
    }
    // exponents at the edge of i8 are refused, not overflowed (debug builds panicked)
    assert!(convert_with_molar_mass(1.0, "g-128", "mol", Some(10.0)).is_err());
    assert!(convert_with_molar_mass(1.0, "mol-128", "g", Some(10.0)).is_err());
    // affine conversions land on exact zeros
    assert_eq!(convert(32.0, "[degF]", "Cel").unwrap(), 0.0);
    assert_eq!(convert(273.15, "K", "Cel").unwrap(), 0.0);
    assert!(close(
        convert(32.5, "[degF]", "Cel").unwrap(),
        0.5 * 5.0 / 9.0,
        1e-9
    ));
    // single letters are not repaired across case: M is not metres, A not years
    assert_eq!(to_ucum("M"), None);
    assert_eq!(
        to_ucum("A").as_deref(),
        Some("A"),
        "valid UCUM (ampere) stays as written"
    );
    assert_eq!(to_ucum("ML").as_deref(), Some("mL"));
}

#[test]
fn every_common_unit_is_valid_ucum() {
    for code in known_units() {
        assert!(is_valid(code), "{code}: {:?}", analyze(code));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip_same_dimension(x in -1e6f64..1e6, i in 0usize..400, j in 0usize..400) {
        let units = known_units();
        let a = units[i % units.len()];
        let b = units[j % units.len()];
        if let Ok(y) = convert(x, a, b) {
            let back = convert(y, b, a).unwrap();
            prop_assert!(close(back, x, 1e-9) || (back - x).abs() < 1e-9, "{x} {a}->{b}->{a} = {back}");
        }
    }

    #[test]
    fn round_trip_molar(x in 0.0f64..1e5, mm in 1.0f64..1000.0) {
        for (a, b) in [("mg/dL", "mmol/L"), ("g/L", "umol/L"), ("ug/mL", "nmol/L"), ("mg/L", "mmol/L")] {
            let y = convert_with_molar_mass(x, a, b, Some(mm)).unwrap();
            let back = convert_with_molar_mass(y, b, a, Some(mm)).unwrap();
            prop_assert!(close(back, x, 1e-9) || (back - x).abs() < 1e-12);
        }
    }

    #[test]
    fn glucose_factor(x in 0.0f64..2000.0) {
        let y = convert_with_molar_mass(x, "mg/dL", "mmol/L", Some(180.16)).unwrap();
        prop_assert!(close(y * 18.016, x, 1e-9) || x == 0.0);
    }

    #[test]
    fn temperature_monotonic(a in -100.0f64..200.0, b in -100.0f64..200.0) {
        let ca = convert(a, "[degF]", "Cel").unwrap();
        let cb = convert(b, "[degF]", "Cel").unwrap();
        prop_assert_eq!(a < b, ca < cb);
    }

    #[test]
    fn arbitrary_unit_strings_never_panic(s in ".{0,20}", t in ".{0,20}", x in proptest::num::f64::ANY) {
        let _ = convert(x, &s, &t);
        let _ = to_ucum(&s);
    }
}
