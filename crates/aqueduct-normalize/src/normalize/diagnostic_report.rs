//! DiagnosticReport: code, effective time (falling back to `issued`), and whether the report is
//! structured, narrative-only or empty.

use super::{Norm, attachment, codes_of, patient_ref};
use crate::fhir;
use crate::model::*;
use crate::terminology::Domain;

impl Norm<'_> {
    pub(super) fn diagnostic_report(&mut self, r: fhir::DiagnosticReport) -> NormalizedRow {
        self.lax(&r.code, "code");
        self.lax(&r.subject, "subject");
        self.many(&r.result, "result");
        self.many(&r.presentedForm, "presentedForm");
        let code = self.resolve(r.code.get(), Domain::Observation, "code");
        let effective = if r.effectiveDateTime.get().is_some() {
            self.when(&r.effectiveDateTime, "effectiveDateTime")
        } else if r.effectivePeriod.get().is_some() {
            self.period_start(&r.effectivePeriod, "effectivePeriod")
        } else {
            self.when(&r.issued, "issued")
        };
        let forms: Vec<AttachmentOut> = r.presentedForm.items.iter().map(attachment).collect();
        let conclusion = r.conclusion.owned();
        let result_count = r.result.items.len();
        let form = if result_count > 0 {
            "structured"
        } else if !forms.is_empty() || conclusion.is_some() {
            self.flag("narrative-only", "result", "no structured results");
            "narrative-only"
        } else {
            self.flag("empty-report", "result", "");
            "empty"
        };
        NormalizedRow {
            ordinal: 0,
            kind: Kind::DiagnosticReport,
            patient_id: patient_ref(&r.subject),
            status: r.status.owned(),
            effective,
            code: Some(code),
            detail: Detail::DiagnosticReport(DiagnosticReportDetail {
                categories: codes_of(&r.category),
                result_count,
                form,
                conclusion,
                presented_forms: forms,
            }),
            flags: self.take_flags(),
        }
    }
}
