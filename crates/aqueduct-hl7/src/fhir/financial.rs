//! Financial messages: DFT^P03 (charges) and BAR^P01–P12 (accounts) become an Account, a
//! ChargeItem per FT1, the Encounter of the PV1, and a Coverage per IN1 (IN1 in ADT messages
//! too).

use serde_json::json;

use super::{Out, PatientInfo, encounter_resource, field_concept, parse_decimal, reference};
use crate::error::Hl7Error;
use crate::message::Message;

pub(super) fn accounts(m: &Message<'_>, kind: &str, out: &mut Out<'_, '_>) -> Result<(), Hl7Error> {
    let patient = out.first_patient(m, kind)?;
    let pid = m.segment("PID", 1);
    let pv1 = m.segment("PV1", 1);
    let number = pid
        .as_ref()
        .and_then(|p| p.field_str("18.1"))
        .or_else(|| pv1.as_ref().and_then(|v| v.field_str("19.1")));
    let account_id = out.id_from("account", number.clone(), 1);
    let mut a = out.base("Account", &account_id);
    if let Some(v) = &number {
        a.insert("identifier".into(), json!([{ "value": v }]));
    }
    // P06 ends the account; P07/P08 are the same account's updates
    let status = if out.event == "P06" {
        "inactive"
    } else {
        "active"
    };
    a.insert("status".into(), json!(status));
    a.insert("subject".into(), json!([reference("Patient", &patient.id)]));
    out.push("Account", Some(&patient), a);
    let mut encounter = None;
    if let Some(pv1) = &pv1 {
        let event = out.event.clone();
        if let Some(e) = encounter_resource(pv1, &event, &patient, out.ctx) {
            encounter = Some(e.id.clone());
            out.resources.push(e);
        }
    }
    let mut n = 0;
    for ft1 in m.segments("FT1") {
        n += 1;
        let id = out.id_from(
            "charge",
            ft1.field_str("2.1").or_else(|| ft1.field_str("3.1")),
            n,
        );
        let mut c = out.base("ChargeItem", &id);
        // FT1-6 transaction type: CD credit, CG charge, PY payment, AJ adjustment
        let status = match ft1.field_str("6.1").as_deref() {
            Some("CD") => "aborted",
            _ => "billable",
        };
        c.insert("status".into(), json!(status));
        c.insert(
            "code".into(),
            field_concept(&ft1, 7).unwrap_or_else(|| json!({ "text": "unknown" })),
        );
        c.insert("subject".into(), reference("Patient", &patient.id));
        if let Some(e) = &encounter {
            c.insert("context".into(), reference("Encounter", e));
        }
        if let Some(at) = out.ctx.datetime("FT1-4", ft1.field_str("4.1")) {
            c.insert("occurrenceDateTime".into(), json!(at));
        }
        if let Some(q) = ft1.field_str("10").and_then(|v| parse_decimal(&v)) {
            c.insert("quantity".into(), json!({ "value": q }));
        }
        if let Some(v) = ft1.field_str("11.1").and_then(|v| parse_decimal(&v)) {
            c.insert(
                "priceOverride".into(),
                json!({ "value": v, "currency": "USD" }),
            );
        }
        c.insert("account".into(), json!([reference("Account", &account_id)]));
        out.push("ChargeItem", Some(&patient), c);
    }
    if kind == "DFT" && n == 0 {
        return Err(Hl7Error::Conversion("DFT without an FT1 segment".into()));
    }
    coverages_for(m, &patient, out);
    Ok(())
}

/// The Coverage of each IN1 of an ADT message (its first patient's).
pub(super) fn coverages(m: &Message<'_>, out: &mut Out<'_, '_>) -> Result<(), Hl7Error> {
    if m.segment("IN1", 1).is_none() {
        return Ok(());
    }
    let Some(pid) = m.segment("PID", 1) else {
        return Ok(());
    };
    let facility = out.ctx.facility.clone();
    let Some(patient) = super::patient_identity(&pid, 3, &facility)
        .or_else(|| super::patient_identity(&pid, 2, &facility))
    else {
        return Ok(());
    };
    coverages_for(m, &patient, out);
    Ok(())
}

fn coverages_for(m: &Message<'_>, patient: &PatientInfo, out: &mut Out<'_, '_>) {
    let mut n = 0;
    for in1 in m.segments("IN1") {
        n += 1;
        let policy = in1.field_str("36.1");
        let plan = in1.field_str("2.1");
        let key = policy
            .clone()
            .or_else(|| plan.clone().map(|p| format!("{p}-{}", patient.id)));
        let id = out.id_from("coverage", key, n);
        let mut c = out.base("Coverage", &id);
        if let Some(p) = &policy {
            c.insert("identifier".into(), json!([{ "value": p }]));
            c.insert("subscriberId".into(), json!(p));
        }
        c.insert("status".into(), json!("active"));
        c.insert("beneficiary".into(), reference("Patient", &patient.id));
        let payor = in1
            .field_str("4.1")
            .or_else(|| in1.field_str("3.1"))
            .unwrap_or_else(|| "unknown payor".into());
        c.insert("payor".into(), json!([{ "display": payor }]));
        let relationship = match in1.field_str("17.1").as_deref() {
            Some("SEL") | Some("01") => Some("self"),
            Some("SPO") | Some("02") => Some("spouse"),
            Some("CHD") | Some("03") => Some("child"),
            Some(_) => Some("other"),
            None => None,
        };
        if let Some(r) = relationship {
            c.insert(
                "relationship".into(),
                json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": r }] }),
            );
        }
        let mut classes = Vec::new();
        if let Some(g) = in1.field_str("8") {
            classes.push(json!({ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group" }] }, "value": g }));
        }
        if let Some(p) = &plan {
            classes.push(json!({ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan" }] }, "value": p, "name": in1.field_str("2.2").unwrap_or_default() }));
        }
        if !classes.is_empty() {
            c.insert("class".into(), json!(classes));
        }
        let start = out.ctx.date("IN1-12", in1.field_str("12.1"));
        let end = out.ctx.date("IN1-13", in1.field_str("13.1"));
        if start.is_some() || end.is_some() {
            let mut p = serde_json::Map::new();
            if let Some(s) = start {
                p.insert("start".into(), json!(s));
            }
            if let Some(e) = end {
                p.insert("end".into(), json!(e));
            }
            c.insert("period".into(), json!(p));
        }
        out.push("Coverage", Some(patient), c);
    }
}
