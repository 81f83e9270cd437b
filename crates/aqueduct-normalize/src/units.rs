//! UCUM units: the full grammar and tables through `octofhir-ucum`, plus the clinical rules
//! UCUM itself does not make.
//!
//! UCUM is the arithmetic: any valid expression (`mg/dL`, `10*3/uL`, `mL/min/{1.73_m2}`,
//! `kg.m-2`, `[degF]`) is parsed and reduced to a dimension and a factor, so `convert` needs
//! no table of unit pairs. UCUM also treats the mole as a plain number (6.022e23), the
//! equivalent as a mole and an annotation as nothing at all; read literally, that would turn
//! glucose in mmol/L into cells per microlitre, calcium in meq/L into mmol/L (wrong by the
//! valence) and an eGFR per 1.73 m² into a raw flow. Wrong unit conversion is a
//! patient-safety bug, so on top of UCUM a conversion is refused unless:
//! * amounts of substance (`mol`, `U`, `kat`), equivalents (`eq`) and osmoles (`osm`) appear
//!   with the same exponents on both sides; mass <-> substance needs the analyte's molar
//!   mass, and equivalents <-> moles are never converted (the valence is not known here);
//! * arbitrary units (`[IU]`, `[arb'U]`) match exactly (UCUM's own rule);
//! * the annotations agree, apart from the purely descriptive ones in [`DESCRIPTIVE`]
//!   (`{beats}/min` is `/min`; `mL/min/{1.73_m2}` is not `mL/min`).
//!
//! What EHRs write as a unit is often not UCUM (`mmHg`, `bpm`, `lbs`, `MG/DL`, `x10^3/uL`).
//! [`to_ucum`] repairs the common spellings through an alias table and a case-insensitive
//! match against [`COMMON_UNITS`]; anything else that is not valid UCUM stays unknown and
//! the caller flags it. Nothing is guessed.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use octofhir_ucum::{SpecialKind, UnitExpr};

/// Why a conversion could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{unit:?} is not a valid UCUM unit: {reason}")]
    Unknown { unit: String, reason: String },
    #[error("cannot convert {from} to {to}: different dimensions")]
    Incompatible { from: String, to: String },
    #[error("cannot convert {from} to {to} without the analyte's molar mass")]
    NeedsMolarMass { from: String, to: String },
    #[error("cannot convert {from} to {to}: equivalents and moles differ by the ion's valence")]
    NeedsValence { from: String, to: String },
    #[error(
        "cannot convert {from} to {to}: the annotations {from_notes:?} and {to_notes:?} differ"
    )]
    AnnotationsDiffer {
        from: String,
        to: String,
        from_notes: Vec<String>,
        to_notes: Vec<String>,
    },
    #[error("value is not a finite number")]
    NotFinite,
}

/// Annotations that only say what is counted, never change the quantity: dropped before two
/// units' annotations are compared. Everything else (`{1.73_m2}`, `{INR}`, `{score}`) must
/// match.
pub const DESCRIPTIVE: &[&str] = &[
    "beats",
    "beat",
    "breaths",
    "breath",
    "creat",
    "creatinine",
    "cells",
    "cell",
    "rbc",
    "rbcs",
    "wbc",
    "wbcs",
    "total",
    "hba1c",
    "hb",
    "hgb",
    "puffs",
    "tbl",
    "tablet",
    "tablets",
    "dose",
    "doses",
    "drop",
    "drops",
    "spray",
    "sprays",
    "capsule",
    "capsules",
];

/// UCUM units clinical data uses most, spelled as UCUM spells them: the targets of the
/// case-insensitive repair in [`to_ucum`] (`MG/DL` -> `mg/dL`) and the population the
/// property tests draw from. Any other valid UCUM expression converts just the same.
pub const COMMON_UNITS: &[&str] = &[
    "kg",
    "g",
    "mg",
    "ug",
    "ng",
    "pg",
    "[lb_av]",
    "[oz_av]",
    "m",
    "cm",
    "mm",
    "[in_i]",
    "[ft_i]",
    "L",
    "dL",
    "mL",
    "uL",
    "fL",
    "s",
    "ms",
    "min",
    "h",
    "d",
    "wk",
    "mo",
    "a",
    "K",
    "Cel",
    "[degF]",
    "mm[Hg]",
    "kPa",
    "cm[H2O]",
    "/min",
    "/s",
    "/h",
    "%",
    "1",
    "{ratio}",
    "{INR}",
    "{score}",
    "kg/m2",
    "m2",
    "mL/min/{1.73_m2}",
    "mL/min",
    "U/L",
    "U/mL",
    "kU/L",
    "mU/L",
    "[IU]/L",
    "m[IU]/L",
    "u[IU]/mL",
    "m[IU]/mL",
    "[IU]/mL",
    "mg/g",
    "g/g",
    "g/L",
    "g/dL",
    "mg/L",
    "mg/dL",
    "mg/mL",
    "ug/L",
    "ug/dL",
    "ug/mL",
    "ng/L",
    "ng/dL",
    "ng/mL",
    "pg/mL",
    "pg/L",
    "mol/L",
    "mmol/L",
    "umol/L",
    "nmol/L",
    "pmol/L",
    "mmol/mol",
    "meq/L",
    "eq/L",
    "mosm/kg",
    "10*3/uL",
    "10*6/uL",
    "10*9/L",
    "10*12/L",
    "10*3/mL",
    "/uL",
    "/L",
    "/[HPF]",
    "/[LPF]",
    "mg/d",
    "g/d",
    "mL/h",
    "L/min",
    "[iU]/L",
];

/// Case-folded spellings seen in EHR data, mapped to UCUM. Checked before UCUM parsing: a
/// bare `C` in a temperature is Celsius, not the coulomb UCUM would read.
static ALIASES: &[(&str, &str)] = &[
    ("kgs", "kg"),
    ("kilograms", "kg"),
    ("kilogram", "kg"),
    ("gm", "g"),
    ("gms", "g"),
    ("grams", "g"),
    ("lb", "[lb_av]"),
    ("lbs", "[lb_av]"),
    ("lb_av", "[lb_av]"),
    ("pounds", "[lb_av]"),
    ("oz", "[oz_av]"),
    ("ounces", "[oz_av]"),
    ("in", "[in_i]"),
    ("inch", "[in_i]"),
    ("inches", "[in_i]"),
    ("in_i", "[in_i]"),
    ("ft", "[ft_i]"),
    ("feet", "[ft_i]"),
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
    ("fahrenheit", "[degF]"),
    ("k", "K"),
    ("mmhg", "mm[Hg]"),
    ("mm hg", "mm[Hg]"),
    ("cmh2o", "cm[H2O]"),
    ("bpm", "/min"),
    ("beats/min", "/min"),
    ("beats/minute", "/min"),
    ("breaths/min", "/min"),
    ("/minute", "/min"),
    ("per min", "/min"),
    ("percent", "%"),
    ("kg/m^2", "kg/m2"),
    ("kg/m²", "kg/m2"),
    ("ml/min/1.73m2", "mL/min/{1.73_m2}"),
    ("ml/min/1.73 m2", "mL/min/{1.73_m2}"),
    ("ml/min/1.73m^2", "mL/min/{1.73_m2}"),
    ("ml/min/1.73 m^2", "mL/min/{1.73_m2}"),
    ("ml/min/1.73m²", "mL/min/{1.73_m2}"),
    ("iu/l", "[IU]/L"),
    ("miu/l", "m[IU]/L"),
    ("uiu/ml", "u[IU]/mL"),
    ("µiu/ml", "u[IU]/mL"),
    ("miu/ml", "m[IU]/mL"),
    ("iu/ml", "[IU]/mL"),
    ("k/ul", "10*3/uL"),
    ("x10^3/ul", "10*3/uL"),
    ("x10e3/ul", "10*3/uL"),
    ("10^3/ul", "10*3/uL"),
    ("thou/ul", "10*3/uL"),
    ("x10^9/l", "10*9/L"),
    ("10^9/l", "10*9/L"),
    ("x10e9/l", "10*9/L"),
    ("m/ul", "10*6/uL"),
    ("x10^6/ul", "10*6/uL"),
    ("x10e6/ul", "10*6/uL"),
    ("10^6/ul", "10*6/uL"),
    ("mill/ul", "10*6/uL"),
    ("x10^12/l", "10*12/L"),
    ("10^12/l", "10*12/L"),
    ("mg/g creat", "mg/g{creat}"),
    ("µg/l", "ug/L"),
    ("µg/dl", "ug/dL"),
    ("µg/ml", "ug/mL"),
    ("µmol/l", "umol/L"),
    ("µl", "uL"),
    ("mcg", "ug"),
    ("mcg/l", "ug/L"),
    ("mcg/dl", "ug/dL"),
    ("mcg/ml", "ug/mL"),
    ("sec", "s"),
    ("secs", "s"),
    ("seconds", "s"),
    ("inr", "{INR}"),
    ("ratio", "{ratio}"),
    ("score", "{score}"),
];

/// A unit reduced to what conversion needs: UCUM's dimension and factor, plus the clinical
/// kinds UCUM folds into numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitInfo {
    /// The expression as given (valid UCUM).
    pub code: String,
    /// Exponents of UCUM's seven base units (m, s, g, rad, K, C, cd).
    pub dimension: [i8; 7],
    /// Base units per one of this unit (for a temperature: per degree).
    pub factor: f64,
    /// Base units at zero (273.15 K for `Cel`); 0 for every non-temperature unit.
    pub offset: f64,
    /// A special unit other than a temperature (`[pH]`, `dB`): converted by UCUM's function.
    pub nonlinear: bool,
    /// Arbitrary atoms (`[iU]`) with their exponents, sorted.
    pub arbitrary: Vec<(String, i32)>,
    /// Amount-of-substance atoms (`mol`, `U`, `kat`): exponents in the numerator and in the
    /// denominator, kept apart so `mmol/mol` is not mistaken for a plain ratio.
    pub substance: Exponents,
    /// Exponents of `eq`.
    pub equivalents: Exponents,
    /// Exponents of `osm`.
    pub osmoles: Exponents,
    /// Annotations that matter, lower-cased and sorted (descriptive ones dropped).
    pub annotations: Vec<String>,
    /// No unit atom at all: `1`, `{INR}`, `{score}`. Only such a unit may be assumed for a
    /// value sent without one (`%` and `mg/g` are dimensionless too, but a bare 48 for an
    /// HbA1c may be mmol/mol).
    pub unitless: bool,
}

impl UnitInfo {
    /// No dimension, no arbitrary unit and no amount of substance: `1`, `%`, `{INR}`.
    pub fn is_dimensionless(&self) -> bool {
        self.dimension == [0; 7]
            && self.arbitrary.is_empty()
            && self.substance == Exponents::default()
            && self.equivalents == Exponents::default()
            && self.osmoles == Exponents::default()
    }
}

/// Exponents of one kind of atom, numerator and denominator apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exponents {
    pub numerator: i32,
    pub denominator: i32,
}

impl Exponents {
    fn add(&mut self, exp: i32) {
        if exp >= 0 {
            self.numerator = self.numerator.saturating_add(exp);
        } else {
            self.denominator = self.denominator.saturating_add(exp.saturating_neg());
        }
    }
}

/// How a conversion was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The same expression.
    Identity,
    /// A UCUM conversion within one kind of quantity.
    Scaled,
    /// Mass <-> amount of substance through the analyte's molar mass.
    MolarMass,
}

const MASS: usize = 2;
/// Bound on the memo of analysed units: unit strings come from the network.
const CACHE_LIMIT: usize = 4096;

type Analysed = Result<Arc<UnitInfo>, UnitError>;
static CACHE: LazyLock<RwLock<HashMap<String, Analysed>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));
/// Avogadro's number as UCUM defines the mole (base units per mol).
static MOLE: LazyLock<f64> =
    LazyLock::new(|| octofhir_ucum::analyse("mol").map_or(6.022_140_76e23, |a| a.factor.to_f64()));

/// The table version recorded on converted values: UCUM's own version plus the revision of
/// the clinical rules above.
pub fn version() -> String {
    format!("ucum-{}+aqueduct-rules-1", octofhir_ucum::UCUM_VERSION)
}

/// Parses and reduces a UCUM expression (case-sensitive, as UCUM requires). Results are
/// memoised, so the hot path of normalization pays for each distinct unit once.
pub fn analyze(code: &str) -> Result<Arc<UnitInfo>, UnitError> {
    if let Ok(cache) = CACHE.read()
        && let Some(hit) = cache.get(code)
    {
        return hit.clone();
    }
    let result = analyze_uncached(code).map(Arc::new);
    if let Ok(mut cache) = CACHE.write()
        && cache.len() < CACHE_LIMIT
    {
        cache.insert(code.to_string(), result.clone());
    }
    result
}

fn analyze_uncached(code: &str) -> Result<UnitInfo, UnitError> {
    let unknown = |reason: String| UnitError::Unknown {
        unit: code.to_string(),
        reason,
    };
    let a = octofhir_ucum::analyse(code).map_err(|e| unknown(e.message.clone()))?;
    let scale = a.scale.to_f64();
    let factor = a.factor.to_f64() * scale;
    let offset = a.offset.to_f64();
    if !factor.is_finite() || factor == 0.0 || !offset.is_finite() {
        return Err(unknown("its magnitude does not fit a 64-bit float".into()));
    }
    let temperature = matches!(
        a.special,
        Some(SpecialKind::Celsius | SpecialKind::Fahrenheit | SpecialKind::Reaumur)
    );
    let nonlinear = !temperature
        && a.special
            .is_some_and(|s| !matches!(s, SpecialKind::None | SpecialKind::Arbitrary));
    let mut atoms = Atoms::default();
    atoms.walk(&a.parsed_ast, 1);
    let mut arbitrary: Vec<(String, i32)> = a
        .arbitrary
        .iter()
        .map(|(atom, n)| ((*atom).to_string(), *n))
        .collect();
    arbitrary.sort();
    atoms.annotations.sort();
    atoms.annotations.dedup();
    Ok(UnitInfo {
        code: code.to_string(),
        dimension: a.dimension.0,
        factor,
        offset,
        nonlinear,
        arbitrary,
        substance: atoms.substance,
        equivalents: atoms.equivalents,
        osmoles: atoms.osmoles,
        unitless: !atoms.symbols && factor == 1.0,
        annotations: atoms.annotations,
    })
}

/// Walks a parsed expression for what UCUM's reduction forgets.
#[derive(Default)]
struct Atoms {
    /// Any unit symbol (`%`, `g`, `10*`), as opposed to numbers and annotations only.
    symbols: bool,
    substance: Exponents,
    equivalents: Exponents,
    osmoles: Exponents,
    annotations: Vec<String>,
}

impl Atoms {
    fn walk(&mut self, e: &UnitExpr, exp: i32) {
        match e {
            UnitExpr::Symbol(s) => {
                self.symbols = true;
                match atom_of(s) {
                    Some("mol" | "U" | "kat") => self.substance.add(exp),
                    Some("eq") => self.equivalents.add(exp),
                    Some("osm") => self.osmoles.add(exp),
                    _ => {}
                }
            }
            UnitExpr::Numeric(_) => {}
            UnitExpr::Power(inner, n) => self.walk(inner, exp.saturating_mul(*n)),
            UnitExpr::Annotation(a) => self.note(a),
            UnitExpr::Annotated(inner, a) => {
                self.walk(inner, exp);
                self.note(a);
            }
            UnitExpr::Product(items) => {
                for item in items {
                    self.walk(item, exp);
                }
            }
            UnitExpr::Quotient(num, den) => {
                self.walk(num, exp);
                self.walk(den, -exp);
            }
            UnitExpr::Reciprocal(inner) => self.walk(inner, -exp),
        }
    }

    fn note(&mut self, a: &str) {
        let lower = a.trim().to_ascii_lowercase();
        if !lower.is_empty() && !DESCRIPTIVE.contains(&lower.as_str()) {
            self.annotations.push(lower);
        }
    }
}

/// The unit atom of a symbol, its prefix removed (`mmol` -> `mol`).
fn atom_of(symbol: &str) -> Option<&'static str> {
    if let Some(u) = octofhir_ucum::find_unit(symbol) {
        return Some(u.code);
    }
    for n in [1, 2] {
        let (Some(prefix), Some(rest)) = (symbol.get(..n), symbol.get(n..)) else {
            continue;
        };
        if octofhir_ucum::find_prefix(prefix).is_some()
            && let Some(u) = octofhir_ucum::find_unit(rest)
            && u.is_metric
        {
            return Some(u.code);
        }
    }
    None
}

/// Whether `code` is a valid (case-sensitive) UCUM expression.
pub fn is_valid(code: &str) -> bool {
    analyze(code).is_ok()
}

/// The UCUM code for a unit as written by an EHR: a known alias first (case-insensitive),
/// then a case-insensitive match against [`COMMON_UNITS`], then the text itself when it is
/// valid UCUM. `None` when the text is not recognised.
pub fn to_ucum(text: &str) -> Option<String> {
    static MEMO: LazyLock<RwLock<HashMap<String, Option<String>>>> =
        LazyLock::new(|| RwLock::new(HashMap::new()));
    if let Ok(memo) = MEMO.read()
        && let Some(hit) = memo.get(text)
    {
        return hit.clone();
    }
    let result = repair(text);
    if let Ok(mut memo) = MEMO.write()
        && memo.len() < CACHE_LIMIT
    {
        memo.insert(text.to_string(), result.clone());
    }
    result
}

fn repair(text: &str) -> Option<String> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let lower = t.to_lowercase();
    if let Some((_, code)) = ALIASES.iter().find(|(a, _)| *a == lower) {
        return Some((*code).to_string());
    }
    // the clinical spelling wins over a rarer UCUM reading of the same letters: `ML` is a
    // millilitre typed in capitals, not a megalitre; `mg/dl` is written `mg/dL`
    // single letters stay case-sensitive: `M` is not metres, nor `A` years
    if let Some(c) = COMMON_UNITS
        .iter()
        .find(|c| c.len() > 1 && c.eq_ignore_ascii_case(t))
    {
        return Some((*c).to_string());
    }
    is_valid(t).then(|| t.to_string())
}

/// Converts `value` from one UCUM unit to another of the same kind.
pub fn convert(value: f64, from: &str, to: &str) -> Result<f64, UnitError> {
    convert_detailed(value, from, to, None).map(|(v, _)| v)
}

/// Converts `value`, allowing mass concentration <-> substance concentration when the
/// analyte's molar mass (g/mol) is known (glucose 180.16: 100 mg/dL = 5.55 mmol/L).
pub fn convert_with_molar_mass(
    value: f64,
    from: &str,
    to: &str,
    molar_mass: Option<f64>,
) -> Result<f64, UnitError> {
    convert_detailed(value, from, to, molar_mass).map(|(v, _)| v)
}

/// As [`convert_with_molar_mass`], also saying how the value was converted.
pub fn convert_detailed(
    value: f64,
    from: &str,
    to: &str,
    molar_mass: Option<f64>,
) -> Result<(f64, Method), UnitError> {
    if !value.is_finite() {
        return Err(UnitError::NotFinite);
    }
    let f = analyze(from)?;
    let t = analyze(to)?;
    let incompatible = || UnitError::Incompatible {
        from: from.to_string(),
        to: to.to_string(),
    };
    if f.annotations != t.annotations {
        return Err(UnitError::AnnotationsDiffer {
            from: from.to_string(),
            to: to.to_string(),
            from_notes: f.annotations.clone(),
            to_notes: t.annotations.clone(),
        });
    }
    if f.arbitrary != t.arbitrary || f.osmoles != t.osmoles {
        return Err(incompatible());
    }
    if f.equivalents != t.equivalents {
        let moles = |u: &UnitInfo| {
            (
                u.substance.numerator + u.equivalents.numerator,
                u.substance.denominator + u.equivalents.denominator,
            )
        };
        let swaps_mol = moles(&f) == moles(&t);
        return Err(if swaps_mol {
            UnitError::NeedsValence {
                from: from.to_string(),
                to: to.to_string(),
            }
        } else {
            incompatible()
        });
    }
    if f.code == t.code {
        return Ok((value, Method::Identity));
    }
    let (out, method) = if f.substance == t.substance {
        if f.dimension != t.dimension {
            return Err(incompatible());
        }
        if f.nonlinear || t.nonlinear {
            let v = octofhir_ucum::convert(value, from, to).map_err(|_| incompatible())?;
            (v, Method::Scaled)
        } else {
            let base = value * f.factor + f.offset;
            let mut out = (base - t.offset) / t.factor;
            // affine units: 32 [degF] is 0 Cel, not 5.7e-14 left over from the offsets
            let offsets = f.offset.abs() + t.offset.abs();
            if offsets > 0.0 && (out * t.factor).abs() < 1e-9 * offsets {
                out = 0.0;
            }
            (out, Method::Scaled)
        }
    } else {
        // mass <-> substance: one more gram on one side is one more mole on the other, in
        // the numerator only (mg/dL <-> mmol/L; never mmol/mol <-> %)
        let step = t.substance.numerator.saturating_sub(f.substance.numerator);
        let mut expected = f.dimension;
        let mass_moves = match step {
            1 => expected[MASS].checked_sub(1),
            -1 => expected[MASS].checked_add(1),
            _ => None,
        };
        if let Some(m) = mass_moves {
            expected[MASS] = m;
        }
        if mass_moves.is_none()
            || f.substance.denominator != t.substance.denominator
            || expected != t.dimension
            || f.nonlinear
            || t.nonlinear
        {
            return Err(incompatible());
        }
        let mm = match molar_mass {
            Some(m) if m > 0.0 && m.is_finite() => m,
            _ => {
                return Err(UnitError::NeedsMolarMass {
                    from: from.to_string(),
                    to: to.to_string(),
                });
            }
        };
        let base = value * f.factor;
        // base is grams (step 1) or counts (step -1) per whatever the rest of the unit is
        let moved = if step == 1 {
            base / mm * *MOLE
        } else {
            base / *MOLE * mm
        };
        (moved / t.factor, Method::MolarMass)
    };
    if out.is_finite() {
        Ok((out, method))
    } else {
        Err(UnitError::NotFinite)
    }
}

/// The curated units as a sorted list (for documentation and tests).
pub fn known_units() -> Vec<&'static str> {
    let mut v = COMMON_UNITS.to_vec();
    v.sort_unstable();
    v
}
