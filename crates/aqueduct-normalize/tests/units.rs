#![allow(clippy::unwrap_used)]

use aqueduct_normalize::units::{
    UnitError, convert, convert_with_molar_mass, known_units, lookup, to_ucum,
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
    assert!(close(
        convert(1.0, "kPa", "mm[Hg]").unwrap(),
        7.500615758,
        1e-9
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
    assert!(matches!(
        convert(1.0, "meq/L", "mmol/L"),
        Err(UnitError::Incompatible { .. })
    ));
    assert!(matches!(
        convert(1.0, "U/L", "[IU]/L"),
        Err(UnitError::Incompatible { .. })
    ));
    assert!(matches!(
        convert(1.0, "{INR}", "{score}"),
        Err(UnitError::Incompatible { .. })
    ));
    assert!(matches!(
        convert(1.0, "furlong", "m"),
        Err(UnitError::Unknown(_))
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
}

#[test]
fn aliases() {
    assert_eq!(to_ucum("mg/dl"), Some("mg/dL"));
    assert_eq!(to_ucum("MG/DL"), Some("mg/dL"));
    assert_eq!(to_ucum("lbs"), Some("[lb_av]"));
    assert_eq!(to_ucum("°F"), Some("[degF]"));
    assert_eq!(to_ucum("deg C"), Some("Cel"));
    assert_eq!(to_ucum("mmHg"), Some("mm[Hg]"));
    assert_eq!(to_ucum("bpm"), Some("/min"));
    assert_eq!(to_ucum("K/uL"), Some("10*3/uL"));
    assert_eq!(to_ucum("mmol/l"), Some("mmol/L"));
    assert_eq!(to_ucum("kg/m^2"), Some("kg/m2"));
    assert_eq!(to_ucum("mL/min/1.73m2"), Some("mL/min/{1.73_m2}"));
    assert_eq!(to_ucum("widgets"), None);
    assert_eq!(to_ucum(""), None);
    assert!(lookup("mg/dL").is_some());
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
