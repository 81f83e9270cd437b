//! DocumentReference: type, date and its attachments, flagged when there is no content or none
//! of it is machine-readable.

use super::{Norm, attachment, codes_of, patient_ref};
use crate::fhir;
use crate::model::*;
use crate::terminology::Domain;

impl Norm<'_> {
    pub(super) fn document(&mut self, d: fhir::DocumentReference) -> NormalizedRow {
        self.lax(&d.type_, "type");
        self.lax(&d.subject, "subject");
        self.many(&d.content, "content");
        let code = self.resolve(d.type_.get(), Domain::Document, "type");
        let effective = self.when(&d.date, "date");
        let contents: Vec<AttachmentOut> = d
            .content
            .items
            .iter()
            .filter_map(|c| c.attachment.get())
            .map(attachment)
            .collect();
        if contents.is_empty() {
            self.flag("no-content", "content", "");
        }
        let machine_readable = contents.iter().any(|c| c.machine_readable);
        if !contents.is_empty() && !machine_readable {
            self.flag("not-machine-readable", "content", "");
        }
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Document,
            patient_id: patient_ref(&d.subject),
            status: d.status.owned(),
            effective,
            code: Some(code),
            detail: Detail::Document(DocumentDetail {
                categories: codes_of(&d.category),
                contents,
                machine_readable,
            }),
            flags: self.take_flags(),
        }
    }
}
