//! Observation: one row per value, or one per component when the observation has components
//! and no value of its own (each keeps the panel code); a value that also has components keeps
//! the components in raw only. Units are read as UCUM (repairs and guesses from text flagged),
//! converted to the LOINC code's canonical unit (molar-mass aware) and checked for plausibility;
//! no unit is ever assumed unless the canonical unit is dimensionless.

use super::{Norm, codes_of, concept_text, first_code, patient_ref};
use crate::fhir::{self, CodeableConcept, LStr, Lax, Many, Num};
use crate::model::*;
use crate::terminology::{Domain, LOINC, LoincEntry, LoincKind, UCUM};
use crate::units;

impl Norm<'_> {
    fn loinc_entry(&self, code: &ResolvedCode) -> Option<&LoincEntry> {
        if code.system.as_deref() != Some(LOINC) {
            return None;
        }
        self.ctx.terminology.loinc.get(code.code.as_deref()?)
    }

    pub(super) fn observation(&mut self, o: fhir::Observation) -> Vec<NormalizedRow> {
        let patient_id = patient_ref(&o.subject);
        self.lax(&o.subject, "subject");
        self.lax(&o.code, "code");
        self.many(&o.category, "category");
        let status = self.lstr(&o.status, "status").map(str::to_string);
        if status.as_deref() == Some("entered-in-error") {
            self.flag("entered-in-error", "status", "");
        }
        let effective = if o.effectiveDateTime.get().is_some() {
            self.when(&o.effectiveDateTime, "effectiveDateTime")
        } else if o.effectiveInstant.get().is_some() {
            self.when(&o.effectiveInstant, "effectiveInstant")
        } else if o.effectivePeriod.get().is_some() {
            self.period_start(&o.effectivePeriod, "effectivePeriod")
        } else if o.issued.get().is_some() {
            self.flag("effective-from-issued", "issued", "");
            self.when(&o.issued, "issued")
        } else {
            self.flag("no-effective-time", "effective", "");
            None
        };
        let categories = codes_of(&o.category);
        let code = self.resolve(o.code.get(), Domain::Observation, "code");
        let common_flags = self.take_flags();
        let has_value = o.valueQuantity.get().is_some()
            || o.valueString.get().is_some()
            || o.valueCodeableConcept.get().is_some()
            || o.valueInteger != Num::Missing
            || o.valueBoolean.get().is_some();
        let mut rows = Vec::new();
        if !has_value && !o.component.items.is_empty() {
            let panel_code = code.code.clone();
            for c in &o.component.items {
                self.lax(&c.code, "component.code");
                let ccode = self.resolve(c.code.get(), Domain::Observation, "component.code");
                let entry = self.loinc_entry(&ccode).cloned();
                let value = self.value(
                    &c.valueQuantity,
                    &c.valueString,
                    &c.valueCodeableConcept,
                    &c.valueInteger,
                    None,
                    entry.as_ref(),
                );
                if value.is_none() && c.dataAbsentReason.get().is_some() {
                    self.flag(
                        "data-absent",
                        "component.value",
                        first_code(&c.dataAbsentReason).unwrap_or_default(),
                    );
                }
                let rr = self.range(&c.referenceRange, value.as_ref(), entry.as_ref());
                let interp = interpretations(&c.interpretation);
                let mut flags = common_flags.clone();
                flags.extend(self.take_flags());
                rows.push(NormalizedRow {
                    ordinal: 0,
                    kind: Kind::Observation,
                    patient_id: patient_id.clone(),
                    status: status.clone(),
                    effective: effective.clone(),
                    detail: Detail::Observation(ObservationDetail {
                        class: obs_class(entry.as_ref(), &categories),
                        categories: categories.clone(),
                        value,
                        reference_range: rr,
                        interpretation: interp,
                        panel_code: panel_code.clone(),
                        derived_from: Vec::new(),
                    }),
                    code: Some(ccode),
                    flags,
                });
            }
            return rows;
        }
        if has_value && !o.component.items.is_empty() {
            self.flag(
                "components-not-split",
                "component",
                "observation has both a value and components; components kept in raw only",
            );
        }
        let entry = self.loinc_entry(&code).cloned();
        if entry.as_ref().is_some_and(|e| e.kind == LoincKind::Panel) && !has_value {
            self.flag(
                "empty-panel",
                "component",
                "panel without components or value",
            );
        }
        let value = self.value(
            &o.valueQuantity,
            &o.valueString,
            &o.valueCodeableConcept,
            &o.valueInteger,
            o.valueBoolean.get().copied(),
            entry.as_ref(),
        );
        self.lax(&o.valueBoolean, "valueBoolean");
        if value.is_none() {
            match first_code(&o.dataAbsentReason) {
                Some(r) => self.flag("data-absent", "value", r),
                None => self.flag("no-value", "value", ""),
            }
        }
        let rr = self.range(&o.referenceRange, value.as_ref(), entry.as_ref());
        let mut flags = common_flags;
        flags.extend(self.take_flags());
        rows.push(NormalizedRow {
            ordinal: 0,
            kind: Kind::Observation,
            patient_id,
            status,
            effective,
            detail: Detail::Observation(ObservationDetail {
                class: obs_class(entry.as_ref(), &categories),
                categories,
                value,
                reference_range: rr,
                interpretation: interpretations(&o.interpretation),
                panel_code: None,
                derived_from: Vec::new(),
            }),
            code: Some(code),
            flags,
        });
        rows
    }

    /// The unit of a quantity as UCUM, flagging what was repaired or guessed from text.
    fn quantity_unit(
        &mut self,
        q: &fhir::Quantity,
        field: &'static str,
    ) -> (Option<String>, Option<String>) {
        let text = q.unit.get().map(str::to_string);
        let ucum_code = match (q.system.get(), q.code.get()) {
            (Some(s), Some(c)) if s.trim_end_matches('/') == UCUM => Some(c),
            (None, Some(c)) => Some(c),
            _ => None,
        };
        if let Some(c) = ucum_code
            && let Some(u) = units::to_ucum(c)
        {
            if u != c {
                self.flag("unit-not-ucum", field, c);
            }
            return (text, Some(u));
        }
        if let Some(tx) = text.as_deref() {
            if let Some(u) = units::to_ucum(tx) {
                if u != tx {
                    self.flag("unit-from-text", field, tx);
                }
                return (text, Some(u));
            }
            self.flag("unknown-unit", field, tx);
        } else if let Some(c) = q.code.get() {
            self.flag("unknown-unit", field, c);
        }
        (text, None)
    }

    fn value(
        &mut self,
        vq: &Lax<fhir::Quantity>,
        vs: &LStr,
        vc: &Lax<CodeableConcept>,
        vi: &Num,
        vb: Option<bool>,
        entry: Option<&LoincEntry>,
    ) -> Option<ValueOut> {
        self.lax(vq, "valueQuantity");
        self.lax(vc, "valueCodeableConcept");
        if let Some(q) = vq.get() {
            let num = match &q.value {
                Num::Number(v) => Some(*v),
                Num::FromString(v) => {
                    self.flag("number-as-string", "valueQuantity.value", v.to_string());
                    Some(*v)
                }
                Num::NotNumber(s) => {
                    self.flag("not-a-number", "valueQuantity.value", s.clone());
                    None
                }
                Num::Missing => {
                    self.flag("no-value", "valueQuantity.value", "");
                    None
                }
            };
            let (unit_text, ucum) = self.quantity_unit(q, "valueQuantity.unit");
            let mut v = ValueOut {
                kind: "quantity",
                value: num,
                comparator: q.comparator.owned(),
                unit_text,
                ucum,
                ..Default::default()
            };
            self.canonicalize(&mut v, entry);
            return Some(v);
        }
        if let Some(s) = vs.get() {
            // a plain number in a string: read it, never guess its unit
            if let Ok(x) = s.parse::<f64>()
                && x.is_finite()
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
            {
                self.flag("number-as-string", "valueString", s);
                let mut v = ValueOut {
                    kind: "quantity",
                    value: Some(x),
                    text: Some(s.to_string()),
                    ..Default::default()
                };
                self.canonicalize(&mut v, entry);
                return Some(v);
            }
            return Some(ValueOut {
                kind: "string",
                text: Some(s.to_string()),
                ..Default::default()
            });
        }
        if vs.is_invalid() {
            self.flag("malformed-field", "valueString", "expected a string");
        }
        if let Some(cc) = vc.get() {
            let c = cc.coding.items.first();
            return Some(ValueOut {
                kind: "coded",
                text: concept_text(cc).map(str::to_string),
                coded: c.map(|c| CodingOut {
                    system: c.system.owned(),
                    code: c.code.owned(),
                    display: c.display.owned(),
                }),
                ..Default::default()
            });
        }
        match vi {
            Num::Number(x) | Num::FromString(x) => {
                if matches!(vi, Num::FromString(_)) {
                    self.flag("number-as-string", "valueInteger", x.to_string());
                }
                let mut v = ValueOut {
                    kind: "integer",
                    value: Some(*x),
                    ..Default::default()
                };
                self.canonicalize(&mut v, entry);
                return Some(v);
            }
            Num::NotNumber(s) => self.flag("not-a-number", "valueInteger", s.clone()),
            Num::Missing => {}
        }
        vb.map(|b| ValueOut {
            kind: "boolean",
            boolean: Some(b),
            ..Default::default()
        })
    }

    fn canonicalize(&mut self, v: &mut ValueOut, entry: Option<&LoincEntry>) {
        let Some(x) = v.value else { return };
        let canonical = entry.and_then(|e| e.canonical_unit.as_deref());
        match (v.ucum.as_deref(), canonical) {
            (None, Some(_)) if v.unit_text.is_some() => {
                // a unit was given but is not recognised (already flagged unknown-unit)
                v.conversion = Some("not-convertible");
            }
            (None, Some(c)) => {
                // dimensionless canonical units need no unit; others are never assumed
                if units::analyze(c).is_ok_and(|d| d.unitless) {
                    v.canonical_value = Some(x);
                    v.canonical_unit = Some(c.to_string());
                    v.conversion = Some("identity");
                } else {
                    self.flag("missing-unit", "value.unit", format!("expected {c}"));
                    v.conversion = Some("missing-unit");
                }
            }
            (None, None) => {
                v.conversion = Some("missing-unit");
            }
            (Some(u), None) => {
                v.canonical_value = Some(x);
                v.canonical_unit = Some(u.to_string());
                v.conversion = Some("no-canonical");
            }
            (Some(u), Some(c)) => {
                let mm = entry.and_then(|e| e.molar_mass);
                match units::convert_detailed(x, u, c, mm) {
                    Ok((y, method)) => {
                        v.canonical_value = Some(round_sig(y));
                        v.canonical_unit = Some(c.to_string());
                        v.conversion = Some(match method {
                            units::Method::Identity => "identity",
                            units::Method::Scaled => "converted",
                            units::Method::MolarMass => "molar-mass",
                        });
                    }
                    Err(e) => {
                        self.flag("unit-not-convertible", "value.unit", e.to_string());
                        v.conversion = Some("not-convertible");
                    }
                }
            }
        }
        if let (Some(cv), Some((lo, hi))) = (v.canonical_value, entry.and_then(|e| e.plausible))
            && (cv < lo || cv > hi)
        {
            self.flag(
                "implausible-value",
                "value",
                format!(
                    "{cv} {} outside {lo}..{hi}",
                    v.canonical_unit.as_deref().unwrap_or("")
                ),
            );
        }
    }

    fn range(
        &mut self,
        rr: &Many<fhir::ReferenceRange>,
        value: Option<&ValueOut>,
        entry: Option<&LoincEntry>,
    ) -> Option<RangeOut> {
        self.many(rr, "referenceRange");
        let r = rr.items.first()?;
        let mut out = RangeOut {
            text: r.text.owned(),
            ..Default::default()
        };
        let value_unit = value.and_then(|v| v.ucum.clone());
        let conv = |q: &Lax<fhir::Quantity>,
                    this: &mut Self,
                    field: &'static str|
         -> (Option<f64>, Option<String>) {
            let Some(q) = q.get() else {
                return (None, None);
            };
            let x = q.value.value();
            let (_, u) = this.quantity_unit(q, field);
            (x, u.or_else(|| value_unit.clone()))
        };
        let (low, lu) = conv(&r.low, self, "referenceRange.low");
        let (high, hu) = conv(&r.high, self, "referenceRange.high");
        out.low = low;
        out.high = high;
        out.unit = lu.clone().or(hu.clone());
        if let Some(c) = entry.and_then(|e| e.canonical_unit.as_deref()) {
            let mm = entry.and_then(|e| e.molar_mass);
            let cv = |x: Option<f64>, u: &Option<String>| match (x, u) {
                (Some(x), Some(u)) => units::convert_with_molar_mass(x, u, c, mm)
                    .ok()
                    .map(round_sig),
                _ => None,
            };
            out.canonical_low = cv(low, &lu);
            out.canonical_high = cv(high, &hu);
        }
        Some(out)
    }
}

/// Rounds to 12 significant digits: removes binary noise (5.550999999999999) without
/// changing any clinically meaningful digit.
pub fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mag = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(11 - mag);
    if !scale.is_finite() || scale == 0.0 {
        return x;
    }
    let r = (x * scale).round() / scale;
    if r.is_finite() { r } else { x }
}

fn obs_class(entry: Option<&LoincEntry>, categories: &[String]) -> String {
    match entry.map(|e| e.kind) {
        Some(LoincKind::Vital) => return "vital-sign".into(),
        Some(LoincKind::Lab) => return "laboratory".into(),
        _ => {}
    }
    for c in categories {
        match c.as_str() {
            "vital-signs" | "vital signs" | "vitals" => return "vital-sign".into(),
            "laboratory" | "lab" => return "laboratory".into(),
            _ => {}
        }
    }
    categories
        .first()
        .cloned()
        .unwrap_or_else(|| "other".into())
}

fn interpretations(v: &Many<CodeableConcept>) -> Vec<String> {
    let mut out = Vec::new();
    for cc in &v.items {
        let code = cc
            .coding
            .items
            .iter()
            .find_map(|c| c.code.get())
            .map(|c| c.to_ascii_uppercase())
            .or_else(|| {
                concept_text(cc).map(|t| {
                    match t.to_ascii_lowercase().as_str() {
                        "high" | "h" | "above high normal" => "H",
                        "low" | "l" | "below low normal" => "L",
                        "normal" | "n" => "N",
                        "abnormal" | "a" => "A",
                        "critical high" | "critically high" | "hh" => "HH",
                        "critical low" | "critically low" | "ll" => "LL",
                        "positive" | "pos" => "POS",
                        "negative" | "neg" => "NEG",
                        _ => "?",
                    }
                    .to_string()
                })
            });
        if let Some(c) = code {
            out.push(c);
        }
    }
    out
}
