//! AllergyIntolerance: code, clinical and verification status, criticality (unknown values
//! flagged) and reactions.

use super::{Norm, concept_text, first_code, patient_ref};
use crate::fhir::{self, LStr};
use crate::model::*;
use crate::terminology::Domain;

impl Norm<'_> {
    pub(super) fn allergy(&mut self, a: fhir::AllergyIntolerance) -> NormalizedRow {
        self.lax(&a.code, "code");
        self.lax(&a.patient, "patient");
        self.many(&a.reaction, "reaction");
        let code = self.resolve(a.code.get(), Domain::Allergy, "code");
        let criticality = match self.lstr(&a.criticality, "criticality") {
            None => None,
            Some(c) => {
                let l = c.to_ascii_lowercase();
                match l.as_str() {
                    "low" | "high" | "unable-to-assess" => Some(l),
                    _ => {
                        self.flag("unknown-criticality", "criticality", c);
                        None
                    }
                }
            }
        };
        let reactions = a
            .reaction
            .items
            .iter()
            .map(|r| ReactionOut {
                substance: r.substance.get().and_then(concept_text).map(str::to_string),
                manifestations: r
                    .manifestation
                    .items
                    .iter()
                    .filter_map(|m| {
                        concept_text(m)
                            .map(str::to_string)
                            .or_else(|| m.coding.items.iter().find_map(|c| c.code.owned()))
                    })
                    .collect(),
                severity: r.severity.owned().map(|s| s.to_ascii_lowercase()),
            })
            .collect();
        let onset = self.when(&a.onsetDateTime, "onsetDateTime");
        let recorded = self.when(&a.recordedDate, "recordedDate");
        let clinical_status = first_code(&a.clinicalStatus);
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Allergy,
            patient_id: patient_ref(&a.patient),
            status: clinical_status.clone(),
            effective: onset.or(recorded),
            code: Some(code),
            detail: Detail::Allergy(AllergyDetail {
                clinical_status,
                verification_status: first_code(&a.verificationStatus),
                type_: a.type_.owned(),
                categories: a.category.items.iter().filter_map(LStr::owned).collect(),
                criticality,
                reactions,
            }),
            flags: self.take_flags(),
        }
    }
}
