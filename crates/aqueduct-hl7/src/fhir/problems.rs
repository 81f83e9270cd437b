//! PPR^PC1/PC2/PC3 (problem add, update, delete): each PRB becomes a Condition.

use serde_json::json;

use super::{Out, field_concept, reference};
use crate::error::Hl7Error;
use crate::message::Message;

pub(super) fn conditions(m: &Message<'_>, out: &mut Out<'_, '_>) -> Result<(), Hl7Error> {
    let patient = out.first_patient(m, "PPR")?;
    let mut n = 0;
    for prb in m.segments("PRB") {
        n += 1;
        let id = out.id_from("problem", prb.field_str("4.1"), n);
        let mut c = out.base("Condition", &id);
        if let Some(v) = prb.field_str("4.1") {
            c.insert("identifier".into(), json!([{ "value": v }]));
        }
        let action = prb.field_str("1").unwrap_or_default();
        let life = prb
            .field_str("14.1")
            .or_else(|| prb.field_str("13.1"))
            .map(|s| s.to_ascii_lowercase());
        let clinical = match life.as_deref() {
            Some("resolved") | Some("r") => "resolved",
            Some("inactive") | Some("i") => "inactive",
            Some("remission") => "remission",
            Some("recurrence") => "recurrence",
            _ => "active",
        };
        c.insert(
            "clinicalStatus".into(),
            json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical }] }),
        );
        let verification = if action == "DE" || out.event == "PC3" {
            "entered-in-error"
        } else {
            "confirmed"
        };
        c.insert(
            "verificationStatus".into(),
            json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification }] }),
        );
        c.insert(
            "category".into(),
            json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item" }] }]),
        );
        match field_concept(&prb, 3) {
            Some(code) => {
                c.insert("code".into(), code);
            }
            None => out
                .ctx
                .warnings
                .push(format!("PRB {n} has no problem code (PRB-3)")),
        }
        c.insert("subject".into(), reference("Patient", &patient.id));
        if let Some(at) = out.ctx.datetime("PRB-2", prb.field_str("2.1")) {
            c.insert("recordedDate".into(), json!(at));
        }
        let onset = prb.field_str("16.1").or_else(|| prb.field_str("7.1"));
        if let Some(at) = out.ctx.datetime("PRB-16", onset) {
            c.insert("onsetDateTime".into(), json!(at));
        }
        if let Some(at) = out.ctx.datetime("PRB-9", prb.field_str("9.1")) {
            c.insert("abatementDateTime".into(), json!(at));
        }
        out.push("Condition", Some(&patient), c);
    }
    if n == 0 {
        return Err(Hl7Error::Conversion("PPR without a PRB segment".into()));
    }
    Ok(())
}
