//! Encounter: its class (inpatient, outpatient, emergency, telehealth, other) from the several
//! ways vendors code it — an R4 Coding, an R5 / vendor array of CodeableConcept, a bare string,
//! type and service-type text — with the connection's own mapping of a class or type code to a
//! v3 ActCode winning over everything else.

use super::{Norm, RULES_VERSION, concept_text, patient_ref};
use crate::fhir::{self, CodeableConcept, LStr, Many};
use crate::model::*;

impl Norm<'_> {
    pub(super) fn encounter(&mut self, e: fhir::Encounter) -> NormalizedRow {
        self.lax(&e.subject, "subject");
        self.lax(&e.period, "period");
        self.lax(&e.serviceType, "serviceType");
        self.many(&e.type_, "type");
        // class: R4 Coding, or R5 / vendor array of CodeableConcept, or a CodeableConcept
        let mut class_codings: Vec<(Option<String>, Option<String>, Option<String>)> = Vec::new();
        if let Some(raw) = e.class {
            let s = raw.get();
            if s.starts_with('"') {
                if let Ok(LStr::Str(c)) = serde_json::from_str::<LStr>(s) {
                    self.flag("malformed-field", "class", "class given as a bare string");
                    class_codings.push((None, Some(c.into_owned()), None));
                }
            } else if let Ok(c) = serde_json::from_str::<fhir::Coding>(s)
                && (c.code.get().is_some() || c.display.get().is_some())
            {
                class_codings.push((c.system.owned(), c.code.owned(), c.display.owned()));
            } else if let Ok(m) = serde_json::from_str::<Many<CodeableConcept>>(s) {
                for cc in &m.items {
                    for c in &cc.coding.items {
                        class_codings.push((c.system.owned(), c.code.owned(), c.display.owned()));
                    }
                    if let Some(t) = cc.text.owned() {
                        class_codings.push((None, None, Some(t)));
                    }
                }
            } else if s != "null" {
                self.flag("malformed-field", "class", "unreadable class");
            }
        }
        let mut types: Vec<String> = Vec::new();
        for cc in &e.type_.items {
            if let Some(t) = concept_text(cc) {
                types.push(t.to_string());
            }
            for c in &cc.coding.items {
                if let Some(k) = c.code.get() {
                    types.push(k.to_string());
                }
            }
        }
        let service_type = e.serviceType.get().and_then(|cc| {
            concept_text(cc)
                .map(str::to_string)
                .or_else(|| cc.coding.items.iter().find_map(|c| c.code.owned()))
        });
        // the connection's own mapping of a class or type code to a v3 ActCode wins
        let mut local_hit: Option<(&'static str, String)> = None;
        let type_codings = e
            .type_
            .items
            .iter()
            .flat_map(|cc| cc.coding.items.iter())
            .map(|c| (c.system.owned(), c.code.owned()));
        let class_keys = class_codings.iter().map(|c| (c.0.clone(), c.1.clone()));
        for (sys, code) in class_keys.chain(type_codings) {
            let Some(code) = code else { continue };
            if let Some(m) = self.ctx.local_mapping(sys.as_deref().unwrap_or(""), &code)
                && m.target_system == ACT_CODE
            {
                local_hit = Some((
                    act_code_class(&m.target_code),
                    format!("local-mapping:{code}"),
                ));
                break;
            }
        }
        let (class, rule, resolution) = match local_hit {
            Some((c, r)) => (c, r, Resolution::Mapped),
            None => classify_encounter(&class_codings, &types, service_type.as_deref()),
        };
        if class == "other" && class_codings.is_empty() {
            self.flag("no-encounter-class", "class", "");
        }
        let raw_class = class_codings
            .first()
            .and_then(|c| c.1.clone().or_else(|| c.2.clone()));
        let start = self.period_start(&e.period, "period");
        let end = match e.period.get() {
            Some(p) => self.when(&p.end, "period.end"),
            None => None,
        };
        let code = ResolvedCode {
            resolution,
            system: Some("urn:aqueduct:encounter-class".to_string()),
            code: Some(class.to_string()),
            display: Some(class.to_string()),
            source_system: class_codings.first().and_then(|c| c.0.clone()),
            source_code: raw_class.clone(),
            source_text: types.first().cloned(),
            rule: "encounter-class",
            table_version: Some(RULES_VERSION.to_string()),
            confidence: None,
            candidate: None,
        };
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Encounter,
            patient_id: patient_ref(&e.subject),
            status: e.status.owned(),
            effective: start,
            code: Some(code),
            detail: Detail::Encounter(EncounterDetail {
                class,
                class_rule: rule,
                raw_class,
                types,
                service_type,
                period_end: end,
            }),
            flags: self.take_flags(),
        }
    }
}

const TELEHEALTH_PHRASES: &[&str] = &[
    "telehealth",
    "tele-health",
    "telemedicine",
    "tele-medicine",
    "telehealth visit",
    "video visit",
    "virtual visit",
    "virtual care",
    "virtual encounter",
    "e-visit",
    "evisit",
    "telephone visit",
    "phone visit",
    "video consult",
];

fn mentions_telehealth(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    TELEHEALTH_PHRASES.iter().any(|p| l.contains(p)) || l == "448337001"
}

/// The v3 ActCode system encounter classes are coded in.
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// The normalized class of a v3 ActCode encounter code.
pub fn act_code_class(code: &str) -> &'static str {
    match code.to_ascii_uppercase().as_str() {
        "VR" => "telehealth",
        "IMP" | "ACUTE" | "NONAC" => "inpatient",
        "EMER" => "emergency",
        "AMB" => "outpatient",
        _ => "other",
    }
}

/// Encounter class from the several ways vendors code it: (class, rule, resolution).
fn classify_encounter(
    class: &[(Option<String>, Option<String>, Option<String>)],
    types: &[String],
    service_type: Option<&str>,
) -> (&'static str, String, Resolution) {
    for (sys, code, disp) in class {
        for s in [code.as_deref(), disp.as_deref()].into_iter().flatten() {
            if s.eq_ignore_ascii_case("vr")
                || s.eq_ignore_ascii_case("virtual")
                || mentions_telehealth(s)
            {
                let res = if sys.as_deref() == Some(ACT_CODE) {
                    Resolution::Standard
                } else {
                    Resolution::Mapped
                };
                return ("telehealth", format!("class:{s}"), res);
            }
        }
    }
    for t in types.iter().map(String::as_str).chain(service_type) {
        if mentions_telehealth(t) {
            return ("telehealth", format!("type-text:{t}"), Resolution::Inferred);
        }
    }
    for (sys, code, disp) in class {
        for s in [code.as_deref(), disp.as_deref()].into_iter().flatten() {
            let l = s.to_ascii_lowercase();
            let c = match l.as_str() {
                "imp"
                | "acute"
                | "nonac"
                | "inpatient"
                | "inpatient encounter"
                | "ip"
                | "hospital" => "inpatient",
                "emer" | "emergency" | "ed" | "er" | "emergency department" => "emergency",
                "amb" | "ambulatory" | "outpatient" | "op" | "office" | "office visit"
                | "clinic" => "outpatient",
                _ => continue,
            };
            let res = if sys.as_deref() == Some(ACT_CODE) && code.as_deref() == Some(s) {
                Resolution::Standard
            } else {
                Resolution::Mapped
            };
            return (c, format!("class:{s}"), res);
        }
    }
    for t in types.iter().map(String::as_str).chain(service_type) {
        let l = t.to_ascii_lowercase();
        if l.contains("emergency") {
            return ("emergency", format!("type-text:{t}"), Resolution::Inferred);
        }
        if l.contains("inpatient") || l.contains("admission") {
            return ("inpatient", format!("type-text:{t}"), Resolution::Inferred);
        }
        if l.contains("office") || l.contains("outpatient") || l.contains("clinic") {
            return ("outpatient", format!("type-text:{t}"), Resolution::Inferred);
        }
    }
    if class.is_empty() && types.is_empty() && service_type.is_none() {
        ("other", "no-signal".to_string(), Resolution::None)
    } else {
        ("other", "unrecognised".to_string(), Resolution::Unmapped)
    }
}
