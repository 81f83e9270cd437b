//! Immunization: vaccine code, occurrence (a text-only occurrence is flagged), lot number and
//! primary source.

use super::{Norm, patient_ref};
use crate::fhir;
use crate::model::*;
use crate::terminology::Domain;

impl Norm<'_> {
    pub(super) fn immunization(&mut self, i: fhir::Immunization) -> NormalizedRow {
        self.lax(&i.vaccineCode, "vaccineCode");
        self.lax(&i.patient, "patient");
        let code = self.resolve(i.vaccineCode.get(), Domain::Immunization, "vaccineCode");
        let effective = self.when(&i.occurrenceDateTime, "occurrenceDateTime");
        let occurrence_text = i.occurrenceString.owned();
        if effective.is_none() {
            match &occurrence_text {
                Some(s) => self.flag("occurrence-as-text", "occurrenceString", s.clone()),
                None => self.flag("no-effective-time", "occurrence", ""),
            }
        }
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Immunization,
            patient_id: patient_ref(&i.patient),
            status: i.status.owned(),
            effective,
            code: Some(code),
            detail: Detail::Immunization(ImmunizationDetail {
                lot_number: i.lotNumber.owned(),
                primary_source: i.primarySource.get().copied(),
                occurrence_text,
            }),
            flags: self.take_flags(),
        }
    }
}
