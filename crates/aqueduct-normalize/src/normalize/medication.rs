//! MedicationRequest and MedicationStatement: the medication from its CodeableConcept, a
//! contained Medication, or a referenced one fetched by the caller (a reference display is
//! still text worth matching); the RxNorm ingredient; and "probably stale": active, authored
//! long ago, nothing showing it is still meant to be dispensed.

use chrono::Duration;

use super::{Norm, patient_ref};
use crate::dates::parse_utc;
use crate::fhir::{self, CodeableConcept, LStr, Lax, Many};
use crate::model::*;
use crate::terminology::{Domain, RXNORM};

impl Norm<'_> {
    pub(super) fn medication(
        &mut self,
        resource_type: &str,
        m: fhir::MedicationRequest,
    ) -> NormalizedRow {
        self.lax(&m.subject, "subject");
        self.lax(&m.medicationCodeableConcept, "medicationCodeableConcept");
        self.lax(&m.medicationReference, "medicationReference");
        self.lax(&m.dispenseRequest, "dispenseRequest");
        let mut source = "missing";
        let mut concept: Option<&CodeableConcept> = None;
        let mut referenced = fhir::Contained::default();
        if let Some(cc) = m.medicationCodeableConcept.get() {
            source = "codeable-concept";
            concept = Some(cc);
        } else if let Some(r) = m.medicationReference.get() {
            source = "reference-only";
            if let Some(local) = r.reference.get().and_then(|s| s.strip_prefix('#')) {
                if let Some(c) = m.contained.items.iter().find(|c| {
                    c.id.get() == Some(local) && c.resourceType.get() == Some("Medication")
                }) {
                    concept = c.code.get();
                    source = "contained";
                }
            } else if let Some(Ok(med)) = self
                .referenced_medication
                .map(serde_json::from_slice::<fhir::Contained>)
            {
                referenced = med;
                if referenced.resourceType.get() == Some("Medication") {
                    source = "referenced";
                } else {
                    self.flag(
                        "medication-by-reference",
                        "medicationReference",
                        "referenced resource is not a Medication",
                    );
                }
            } else {
                self.flag(
                    "medication-by-reference",
                    "medicationReference",
                    r.reference.owned().unwrap_or_default(),
                );
            }
        }
        if source == "referenced" {
            concept = referenced.code.get();
        }
        let code = match concept {
            Some(cc) => self.resolve(Some(cc), Domain::Medication, "medication"),
            None => {
                // a reference display is still text worth matching
                let disp = m.medicationReference.get().and_then(|r| r.display.owned());
                match disp {
                    Some(d) => {
                        let cc = CodeableConcept {
                            coding: Many::default(),
                            text: LStr::Str(d.into()),
                        };
                        self.resolve(Some(&cc), Domain::Medication, "medication")
                    }
                    None => self.resolve(None, Domain::Medication, "medication"),
                }
            }
        };
        let status = self
            .lstr(&m.status, "status")
            .map(|s| s.to_ascii_lowercase());
        let authored_field = if resource_type == "MedicationStatement" {
            "dateAsserted"
        } else {
            "authoredOn"
        };
        let authored = if resource_type == "MedicationStatement" {
            if m.effectiveDateTime.get().is_some() {
                self.when(&m.effectiveDateTime, "effectiveDateTime")
            } else if m.effectivePeriod.get().is_some() {
                self.period_start(&m.effectivePeriod, "effectivePeriod")
            } else {
                self.when(&m.dateAsserted, "dateAsserted")
            }
        } else {
            self.when(&m.authoredOn, authored_field)
        };
        let dr = m.dispenseRequest.get();
        let validity_end = match dr.and_then(|d| d.validityPeriod.get()) {
            Some(p) => self.when(&p.end, "dispenseRequest.validityPeriod.end"),
            None => None,
        };
        let repeats = dr.and_then(|d| d.numberOfRepeatsAllowed.value());
        let dosage_text = m
            .dosageInstruction
            .items
            .iter()
            .chain(m.dosage.items.iter())
            .find_map(|d| d.text.owned());
        let t = &*self.ctx.terminology;
        let ingredient_rxcui = match (code.system.as_deref(), code.code.as_deref()) {
            (Some(RXNORM), Some(k)) => t
                .rxnorm
                .get(k)
                .map(|e| {
                    if e.tty == "IN" {
                        k.to_string()
                    } else {
                        e.ingredient.clone().unwrap_or_default()
                    }
                })
                .filter(|s| !s.is_empty()),
            _ => None,
        };
        // stale: active, old, nothing showing it is still meant to be dispensed
        let mut probably_stale = false;
        let mut stale_reason = None;
        if status.as_deref() == Some("active") {
            let now = self.ctx.now;
            let authored_at = authored
                .as_ref()
                .and_then(|w| w.utc.as_deref())
                .and_then(parse_utc);
            let validity_at = validity_end
                .as_ref()
                .and_then(|w| w.utc.as_deref())
                .and_then(parse_utc);
            match authored_at {
                None => self.flag(
                    "active-without-date",
                    authored_field,
                    "cannot judge staleness",
                ),
                Some(a) if now - a > Duration::days(self.ctx.stale_after_days) => {
                    let validity_current = validity_at.is_some_and(|v| v > now);
                    let has_repeats = repeats.is_some_and(|r| r > 0.0) && validity_at.is_none();
                    if !validity_current && !has_repeats {
                        probably_stale = true;
                        let days = (now - a).num_days();
                        let why = match validity_at {
                            Some(_) => {
                                format!("active, authored {days} days ago, validity period ended")
                            }
                            None => format!(
                                "active, authored {days} days ago, no validity period or refills"
                            ),
                        };
                        self.flag("probably-stale", "status", why.clone());
                        stale_reason = Some(why);
                    }
                }
                Some(_) => {}
            }
        }
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Medication,
            patient_id: patient_ref(&m.subject),
            status,
            effective: authored.clone(),
            code: Some(code),
            detail: Detail::Medication(MedicationDetail {
                resource_type: resource_type.to_string(),
                intent: m.intent.owned(),
                authored,
                dosage_text,
                validity_end,
                repeats_allowed: repeats,
                ingredient_rxcui,
                medication_source: source,
                probably_stale,
                stale_reason,
            }),
            flags: self.take_flags(),
        }
    }
}

/// The reference a MedicationRequest/MedicationStatement makes to a separate Medication
/// resource (`Medication/<id>`, relative or absolute), if any: the caller can fetch it and
/// pass its bytes to [`normalize_with_refs`].
pub fn medication_reference(raw: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Peek<'a> {
        #[serde(borrow, rename = "medicationReference")]
        r: Lax<fhir::Reference<'a>>,
    }
    let p: Peek = serde_json::from_slice(raw).ok()?;
    let s = p.r.get()?.reference.get()?;
    if s.starts_with('#') {
        return None;
    }
    let mut parts = s.split(['?', '#']).next().unwrap_or(s).rsplit('/');
    let id = parts.next()?;
    (parts.next() == Some("Medication") && !id.is_empty()).then(|| id.to_string())
}
