//! UCUM units as clinical data uses them: a table-driven subset, no algebraic parser.
//!
//! Every unit known here has a dimension and an affine map to the dimension's base unit
//! (`base = value * factor + offset`). Two units convert only when their dimensions are equal;
//! mass concentration and molar concentration convert only when the caller supplies the
//! analyte's molar mass (g/mol). Anything not in the table does not convert: the caller keeps
//! the original value and flags it. Nothing is guessed.

use std::collections::HashMap;
use std::sync::LazyLock;

/// What a unit measures. Units convert only within one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dimension {
    Mass,
    Length,
    Volume,
    Time,
    Temperature,
    Pressure,
    /// mass per volume, base g/L
    MassConcentration,
    /// amount per volume, base mol/L
    MolarConcentration,
    /// equivalents per volume, base eq/L (not convertible to mol/L without valence)
    EquivalentConcentration,
    /// count per volume, base /L
    NumberConcentration,
    /// events per time, base /min
    Frequency,
    /// fraction, base % (1 = 100 %)
    Fraction,
    /// enzyme activity per volume, base U/L
    CatalyticConcentration,
    /// international units per volume, base `[IU]/L`
    ArbitraryConcentration,
    /// kg/m2
    Bmi,
    /// mL/min/{1.73_m2}
    NormalizedFlow,
    /// mg/g and similar mass ratios, base g/g
    MassRatio,
    /// dimensionless scores, ratios, INR
    Dimensionless,
    /// volume of one cell, base fL
    EntiticVolume,
    /// mass of one cell, base pg
    EntiticMass,
}

/// One unit: its canonical UCUM code, dimension and map to the base unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitDef {
    pub code: &'static str,
    pub dimension: Dimension,
    pub factor: f64,
    pub offset: f64,
}

/// Why a conversion could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("unknown unit {0:?}")]
    Unknown(String),
    #[error("cannot convert {from} to {to}: different dimensions")]
    Incompatible { from: String, to: String },
    #[error("cannot convert {from} to {to} without the analyte's molar mass")]
    NeedsMolarMass { from: String, to: String },
    #[error("value is not a finite number")]
    NotFinite,
}

fn def(code: &'static str, dimension: Dimension, factor: f64) -> UnitDef {
    UnitDef {
        code,
        dimension,
        factor,
        offset: 0.0,
    }
}

static TABLE: LazyLock<HashMap<&'static str, UnitDef>> = LazyLock::new(build_table);

fn leak(s: String) -> &'static str {
    // Built once into a static table; bounded (a few hundred short strings).
    Box::leak(s.into_boxed_str())
}

fn build_table() -> HashMap<&'static str, UnitDef> {
    use Dimension::*;
    let mut t: Vec<UnitDef> = vec![
        // mass, base g
        def("kg", Mass, 1000.0),
        def("g", Mass, 1.0),
        def("mg", Mass, 1e-3),
        def("ug", Mass, 1e-6),
        def("[lb_av]", Mass, 453.592_37),
        def("[oz_av]", Mass, 28.349_523_125),
        // length, base m
        def("m", Length, 1.0),
        def("cm", Length, 0.01),
        def("mm", Length, 0.001),
        def("[in_i]", Length, 0.0254),
        def("[ft_i]", Length, 0.3048),
        // volume, base L
        def("L", Volume, 1.0),
        def("dL", Volume, 0.1),
        def("mL", Volume, 1e-3),
        def("uL", Volume, 1e-6),
        // time, base s
        def("s", Time, 1.0),
        def("ms", Time, 1e-3),
        def("min", Time, 60.0),
        def("h", Time, 3600.0),
        def("d", Time, 86_400.0),
        def("wk", Time, 604_800.0),
        def("mo", Time, 2_629_800.0),
        def("a", Time, 31_557_600.0),
        // temperature, base K
        UnitDef {
            code: "K",
            dimension: Temperature,
            factor: 1.0,
            offset: 0.0,
        },
        UnitDef {
            code: "Cel",
            dimension: Temperature,
            factor: 1.0,
            offset: 273.15,
        },
        UnitDef {
            code: "[degF]",
            dimension: Temperature,
            factor: 5.0 / 9.0,
            offset: 459.67 * 5.0 / 9.0,
        },
        // pressure, base mm[Hg]
        def("mm[Hg]", Pressure, 1.0),
        def("kPa", Pressure, 1000.0 / 133.322_387_415),
        def("cm[H2O]", Pressure, 98.066_5 / 133.322_387_415),
        // frequency, base /min
        def("/min", Frequency, 1.0),
        def("/s", Frequency, 60.0),
        def("/h", Frequency, 1.0 / 60.0),
        // fraction, base %
        def("%", Fraction, 1.0),
        def("1", Dimensionless, 1.0),
        def("{ratio}", Dimensionless, 1.0),
        def("{INR}", Dimensionless, 1.0),
        def("{score}", Dimensionless, 1.0),
        // BMI and eGFR
        def("kg/m2", Bmi, 1.0),
        def("mL/min/{1.73_m2}", NormalizedFlow, 1.0),
        // enzyme activity
        def("U/L", CatalyticConcentration, 1.0),
        def("U/mL", CatalyticConcentration, 1000.0),
        def("kU/L", CatalyticConcentration, 1000.0),
        def("mU/L", CatalyticConcentration, 1e-3),
        // international units (not interchangeable with enzyme units)
        def("[IU]/L", ArbitraryConcentration, 1.0),
        def("m[IU]/L", ArbitraryConcentration, 1e-3),
        def("u[IU]/mL", ArbitraryConcentration, 1e-3),
        def("m[IU]/mL", ArbitraryConcentration, 1.0),
        def("[IU]/mL", ArbitraryConcentration, 1000.0),
        // cells
        def("fL", EntiticVolume, 1.0),
        def("pg", EntiticMass, 1.0),
        // mass ratios, base g/g
        def("mg/g", MassRatio, 1e-3),
        def("g/g", MassRatio, 1.0),
    ];
    // the fraction "1" is 100 %: handled by an explicit pair below, not by dimension.
    let masses = [
        ("g", 1.0),
        ("mg", 1e-3),
        ("ug", 1e-6),
        ("ng", 1e-9),
        ("pg", 1e-12),
    ];
    let moles = [
        ("mol", 1.0),
        ("mmol", 1e-3),
        ("umol", 1e-6),
        ("nmol", 1e-9),
        ("pmol", 1e-12),
    ];
    let eqs = [("eq", 1.0), ("meq", 1e-3)];
    let volumes = [("L", 1.0), ("dL", 0.1), ("mL", 1e-3), ("uL", 1e-6)];
    for (m, mf) in masses {
        for (v, vf) in volumes {
            t.push(def(leak(format!("{m}/{v}")), MassConcentration, mf / vf));
        }
    }
    for (m, mf) in moles {
        for (v, vf) in volumes {
            t.push(def(leak(format!("{m}/{v}")), MolarConcentration, mf / vf));
        }
    }
    for (m, mf) in eqs {
        for (v, vf) in volumes {
            let code = if m == "meq" {
                format!("meq/{v}")
            } else {
                format!("eq/{v}")
            };
            t.push(def(leak(code), EquivalentConcentration, mf / vf));
        }
    }
    for (p, pf) in [("10*3", 1e3), ("10*6", 1e6), ("10*9", 1e9), ("10*12", 1e12)] {
        for (v, vf) in [("L", 1.0), ("uL", 1e-6), ("mL", 1e-3)] {
            t.push(def(leak(format!("{p}/{v}")), NumberConcentration, pf / vf));
        }
    }
    t.push(def("/uL", NumberConcentration, 1e6));
    t.push(def("/L", NumberConcentration, 1.0));
    t.into_iter().map(|d| (d.code, d)).collect()
}

/// Case-folded aliases seen in EHR data for the `unit` text, mapped to UCUM codes.
static ALIASES: &[(&str, &str)] = &[
    ("kg", "kg"),
    ("kgs", "kg"),
    ("kilograms", "kg"),
    ("g", "g"),
    ("gm", "g"),
    ("grams", "g"),
    ("lb", "[lb_av]"),
    ("lbs", "[lb_av]"),
    ("lb_av", "[lb_av]"),
    ("[lb_av]", "[lb_av]"),
    ("pounds", "[lb_av]"),
    ("oz", "[oz_av]"),
    ("[oz_av]", "[oz_av]"),
    ("cm", "cm"),
    ("mm", "mm"),
    ("m", "m"),
    ("in", "[in_i]"),
    ("inch", "[in_i]"),
    ("inches", "[in_i]"),
    ("[in_i]", "[in_i]"),
    ("in_i", "[in_i]"),
    ("ft", "[ft_i]"),
    ("[ft_i]", "[ft_i]"),
    ("cel", "Cel"),
    ("c", "Cel"),
    ("°c", "Cel"),
    ("degc", "Cel"),
    ("deg c", "Cel"),
    ("celsius", "Cel"),
    ("f", "[degF]"),
    ("°f", "[degF]"),
    ("degf", "[degF]"),
    ("deg f", "[degF]"),
    ("[degf]", "[degF]"),
    ("fahrenheit", "[degF]"),
    ("k", "K"),
    ("mmhg", "mm[Hg]"),
    ("mm hg", "mm[Hg]"),
    ("mm[hg]", "mm[Hg]"),
    ("kpa", "kPa"),
    ("/min", "/min"),
    ("bpm", "/min"),
    ("beats/min", "/min"),
    ("{beats}/min", "/min"),
    ("beats/minute", "/min"),
    ("{breaths}/min", "/min"),
    ("breaths/min", "/min"),
    ("/s", "/s"),
    ("%", "%"),
    ("percent", "%"),
    ("kg/m2", "kg/m2"),
    ("kg/m^2", "kg/m2"),
    ("kg/m²", "kg/m2"),
    ("ml/min/{1.73_m2}", "mL/min/{1.73_m2}"),
    ("ml/min/1.73m2", "mL/min/{1.73_m2}"),
    ("ml/min/1.73 m2", "mL/min/{1.73_m2}"),
    ("ml/min/1.73m^2", "mL/min/{1.73_m2}"),
    ("u/l", "U/L"),
    ("iu/l", "[IU]/L"),
    ("[iu]/l", "[IU]/L"),
    ("miu/l", "m[IU]/L"),
    ("m[iu]/l", "m[IU]/L"),
    ("uiu/ml", "u[IU]/mL"),
    ("u[iu]/ml", "u[IU]/mL"),
    ("k/ul", "10*3/uL"),
    ("x10^3/ul", "10*3/uL"),
    ("x10e3/ul", "10*3/uL"),
    ("10^3/ul", "10*3/uL"),
    ("10*3/ul", "10*3/uL"),
    ("thou/ul", "10*3/uL"),
    ("10*9/l", "10*9/L"),
    ("x10^9/l", "10*9/L"),
    ("10^9/l", "10*9/L"),
    ("m/ul", "10*6/uL"),
    ("x10^6/ul", "10*6/uL"),
    ("x10e6/ul", "10*6/uL"),
    ("10^6/ul", "10*6/uL"),
    ("10*6/ul", "10*6/uL"),
    ("mill/ul", "10*6/uL"),
    ("10*12/l", "10*12/L"),
    ("x10^12/l", "10*12/L"),
    ("meq/l", "meq/L"),
    ("fl", "fL"),
    ("pg", "pg"),
    ("mg/g", "mg/g"),
    ("mg/g{creat}", "mg/g"),
    ("sec", "s"),
    ("s", "s"),
    ("seconds", "s"),
    ("inr", "{INR}"),
    ("{inr}", "{INR}"),
    ("ratio", "{ratio}"),
];

/// Looks a unit up by its UCUM code exactly (annotations such as `{beats}` ignored when
/// they decorate a known unit).
pub fn lookup(code: &str) -> Option<&'static UnitDef> {
    if let Some(d) = TABLE.get(code) {
        return Some(d);
    }
    let stripped = strip_annotations(code);
    if stripped != code && !stripped.is_empty() && stripped != "/" {
        return TABLE.get(stripped.as_str());
    }
    None
}

fn strip_annotations(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut depth = 0u32;
    for c in code.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    // "{beats}/min" -> "/min"; "mg/g{creat}" -> "mg/g"
    out
}

/// The UCUM code for a unit as written by an EHR: exact UCUM first, then known aliases
/// (case-insensitive), then mass/molar concentrations written with other capitalisation
/// ("mg/dl", "MMOL/L"). `None` when the text is not recognised.
pub fn to_ucum(text: &str) -> Option<&'static str> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Some(d) = lookup(t) {
        return Some(d.code);
    }
    let lower = t.to_lowercase();
    if let Some((_, code)) = ALIASES.iter().find(|(a, _)| *a == lower) {
        return Some(code);
    }
    // concentrations: find a table code equal ignoring case (unambiguous for m/d/u prefixes
    // of g, mol, L because the table has no two codes differing only by case in these families)
    TABLE
        .values()
        .find(|d| {
            matches!(
                d.dimension,
                Dimension::MassConcentration
                    | Dimension::MolarConcentration
                    | Dimension::EquivalentConcentration
                    | Dimension::NumberConcentration
            ) && d.code.eq_ignore_ascii_case(&lower)
        })
        .map(|d| d.code)
}

/// Converts `value` from one UCUM unit to another of the same dimension.
pub fn convert(value: f64, from: &str, to: &str) -> Result<f64, UnitError> {
    convert_with_molar_mass(value, from, to, None)
}

/// Converts `value`, allowing mass concentration <-> molar concentration when the analyte's
/// molar mass (g/mol) is known (glucose 180.16: 100 mg/dL = 5.55 mmol/L).
pub fn convert_with_molar_mass(
    value: f64,
    from: &str,
    to: &str,
    molar_mass: Option<f64>,
) -> Result<f64, UnitError> {
    if !value.is_finite() {
        return Err(UnitError::NotFinite);
    }
    let f = lookup(from).ok_or_else(|| UnitError::Unknown(from.to_string()))?;
    let t = lookup(to).ok_or_else(|| UnitError::Unknown(to.to_string()))?;
    let base = value * f.factor + f.offset;
    let base = match (f.dimension, t.dimension) {
        (Dimension::Dimensionless, Dimension::Dimensionless)
            if f.code != t.code && f.code != "1" && t.code != "1" =>
        {
            return Err(UnitError::Incompatible {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        (a, b) if a == b => base,
        (Dimension::Fraction, Dimension::Dimensionless) if t.code == "1" => base,
        (Dimension::Dimensionless, Dimension::Fraction) if f.code == "1" => base * 100.0,
        (Dimension::MassConcentration, Dimension::MolarConcentration) => match molar_mass {
            Some(m) if m > 0.0 && m.is_finite() => base / m,
            _ => {
                return Err(UnitError::NeedsMolarMass {
                    from: from.to_string(),
                    to: to.to_string(),
                });
            }
        },
        (Dimension::MolarConcentration, Dimension::MassConcentration) => match molar_mass {
            Some(m) if m > 0.0 && m.is_finite() => base * m,
            _ => {
                return Err(UnitError::NeedsMolarMass {
                    from: from.to_string(),
                    to: to.to_string(),
                });
            }
        },
        _ => {
            return Err(UnitError::Incompatible {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
    };
    let out = if f.dimension == Dimension::Fraction && t.code == "1" {
        base / 100.0
    } else {
        (base - t.offset) / t.factor
    };
    if out.is_finite() {
        Ok(out)
    } else {
        Err(UnitError::NotFinite)
    }
}

/// All UCUM codes in the table (for documentation and tests).
pub fn known_units() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = TABLE.keys().copied().collect();
    v.sort_unstable();
    v
}
