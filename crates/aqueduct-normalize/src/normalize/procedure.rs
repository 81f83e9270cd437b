//! Procedure: code and when it was performed (a date-time, or a period's start and end).

use super::{Norm, patient_ref};
use crate::fhir;
use crate::model::*;
use crate::terminology::Domain;

impl Norm<'_> {
    pub(super) fn procedure(&mut self, p: fhir::Procedure) -> NormalizedRow {
        self.lax(&p.code, "code");
        self.lax(&p.subject, "subject");
        let code = self.resolve(p.code.get(), Domain::Procedure, "code");
        let (effective, end) = if p.performedDateTime.get().is_some() {
            (self.when(&p.performedDateTime, "performedDateTime"), None)
        } else {
            let s = self.period_start(&p.performedPeriod, "performedPeriod");
            let e = match p.performedPeriod.get() {
                Some(pp) => self.when(&pp.end, "performedPeriod.end"),
                None => None,
            };
            (s, e)
        };
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Procedure,
            patient_id: patient_ref(&p.subject),
            status: p.status.owned(),
            effective,
            code: Some(code),
            detail: Detail::Procedure(ProcedureDetail { performed_end: end }),
            flags: self.take_flags(),
        }
    }
}
