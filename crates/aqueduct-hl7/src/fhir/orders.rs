//! Orders (ORM^O01, OML^O21, OMG^O19) and referrals (REF^I12..I15): ServiceRequest, with the
//! order control (ORC-1) as the status and the specimens (SPM) of lab orders.

use serde_json::{Value, json};

use super::{Out, PatientInfo, field_concept, person_reference, reference};
use crate::error::Hl7Error;
use crate::message::{Message, Segment};

/// ORC-1 (HL7 table 0119) to ServiceRequest.status.
fn order_status(control: &str, order_status: Option<&str>) -> &'static str {
    match control {
        "NW" | "XO" | "XX" | "RL" | "RP" | "RO" | "OK" | "SN" | "NA" | "RR" | "XR" => "active",
        "CA" | "OC" | "CR" | "DC" | "OD" | "DR" | "UA" => "revoked",
        "HD" | "OH" | "HR" => "on-hold",
        "CM" => "completed",
        _ => match order_status {
            // ORC-5 (table 0038)
            Some("CM") => "completed",
            Some("CA") | Some("DC") => "revoked",
            Some("HD") => "on-hold",
            Some("IP") | Some("SC") | Some("A") => "active",
            _ => "unknown",
        },
    }
}

fn priority(code: Option<&str>) -> Option<&'static str> {
    match code {
        Some("S") => Some("stat"),
        Some("A") | Some("P") => Some("asap"),
        Some("R") => Some("routine"),
        _ => None,
    }
}

struct Draft {
    orc: Option<String>,
    status: &'static str,
    placer: Option<String>,
    filler: Option<String>,
    authored: Option<String>,
    requester: Option<Value>,
}

pub(super) fn service_requests(m: &Message<'_>, out: &mut Out<'_, '_>) -> Result<(), Hl7Error> {
    let mut patient: Option<PatientInfo> = None;
    let mut draft: Option<Draft> = None;
    let mut n = 0;
    let mut specimens: Vec<Value> = Vec::new();
    let mut last_request: Option<usize> = None;
    for seg in m.all_segments() {
        match seg.name() {
            "PID" => patient = Some(out.patient(&seg)?),
            "ORC" => {
                let control = seg.field_str("1").unwrap_or_default();
                draft = Some(Draft {
                    status: order_status(&control, seg.field_str("5").as_deref()),
                    orc: Some(control),
                    placer: seg.field_str("2.1"),
                    filler: seg.field_str("3.1"),
                    authored: out.ctx.datetime("ORC-9", seg.field_str("9.1")),
                    requester: seg.raw_field(12).and_then(|r| person_reference(&seg, r)),
                });
            }
            "OBR" => {
                let Some(p) = &patient else {
                    return Err(Hl7Error::Conversion("OBR before any PID segment".into()));
                };
                n += 1;
                let d = draft.take();
                last_request = Some(out.resources.len());
                let r = request(&seg, d, p, n, out);
                out.push("ServiceRequest", Some(p), r);
            }
            "SPM" => {
                let Some(p) = &patient else { continue };
                let id = out.id_from("specimen", seg.field_str("2.1"), specimens.len() + 1);
                let mut sp = out.base("Specimen", &id);
                if let Some(t) = field_concept(&seg, 4) {
                    sp.insert("type".into(), t);
                }
                sp.insert("subject".into(), reference("Patient", &p.id));
                if let Some(at) = out.ctx.datetime("SPM-17", seg.field_str("17.1")) {
                    sp.insert("collection".into(), json!({ "collectedDateTime": at }));
                }
                let r = reference("Specimen", &id);
                if let Some(i) = last_request {
                    if let Some(Value::Object(sr)) = out.resources.get_mut(i).map(|r| &mut r.json) {
                        if let Value::Array(a) = sr.entry("specimen").or_insert_with(|| json!([])) {
                            a.push(r.clone());
                        }
                    }
                }
                specimens.push(r);
                out.push("Specimen", Some(p), sp);
            }
            _ => {}
        }
    }
    if n == 0 {
        return Err(Hl7Error::Conversion(
            "order message without an OBR segment".into(),
        ));
    }
    Ok(())
}

fn request(
    obr: &Segment<'_, '_>,
    d: Option<Draft>,
    p: &PatientInfo,
    n: usize,
    out: &mut Out<'_, '_>,
) -> serde_json::Map<String, Value> {
    let placer = d
        .as_ref()
        .and_then(|d| d.placer.clone())
        .or_else(|| obr.field_str("2.1"));
    let filler = d
        .as_ref()
        .and_then(|d| d.filler.clone())
        .or_else(|| obr.field_str("3.1"));
    let id = out.id_from("order", placer.clone().or_else(|| filler.clone()), n);
    let mut r = out.base("ServiceRequest", &id);
    let mut ids = Vec::new();
    for (v, t) in [(&placer, "PLAC"), (&filler, "FILL")] {
        if let Some(v) = v {
            ids.push(json!({ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": t }] }, "value": v }));
        }
    }
    if !ids.is_empty() {
        r.insert("identifier".into(), Value::Array(ids));
    }
    r.insert(
        "status".into(),
        json!(d.as_ref().map(|d| d.status).unwrap_or("active")),
    );
    r.insert("intent".into(), json!("order"));
    if let Some(code) = d.as_ref().and_then(|d| d.orc.clone()) {
        // the order control itself, for consumers that track NW / CA / XO
        r.insert(
            "extension".into(),
            json!([{ "url": "urn:aqueduct:hl7v2:order-control", "valueCode": code }]),
        );
    }
    r.insert(
        "code".into(),
        field_concept(obr, 4).unwrap_or_else(|| json!({ "text": "unknown" })),
    );
    r.insert("subject".into(), reference("Patient", &p.id));
    if let Some(pr) = priority(obr.field_str("5").as_deref()) {
        r.insert("priority".into(), json!(pr));
    }
    if let Some(at) = d.as_ref().and_then(|d| d.authored.clone()) {
        r.insert("authoredOn".into(), json!(at));
    }
    if let Some(at) = out.ctx.datetime("OBR-7", obr.field_str("7.1")) {
        r.insert("occurrenceDateTime".into(), json!(at));
    }
    let requester = d
        .and_then(|d| d.requester)
        .or_else(|| obr.raw_field(16).and_then(|f| person_reference(obr, f)));
    if let Some(who) = requester {
        r.insert("requester".into(), who);
    }
    let reasons: Vec<Value> = obr
        .repetitions(31)
        .iter()
        .filter_map(|rep| super::codeable_concept(obr, rep))
        .collect();
    if !reasons.is_empty() {
        r.insert("reasonCode".into(), Value::Array(reasons));
    }
    r
}

/// REF^I12 (and I13/I14/I15): the referral as a ServiceRequest of category referral.
pub(super) fn referral(m: &Message<'_>, out: &mut Out<'_, '_>) -> Result<(), Hl7Error> {
    let patient = out.first_patient(m, "REF")?;
    let rf1 = m
        .segment("RF1", 1)
        .ok_or_else(|| Hl7Error::Conversion("REF without an RF1 segment".into()))?;
    let id = out.id_from(
        "referral",
        rf1.field_str("6.1").or_else(|| rf1.field_str("11.1")),
        1,
    );
    let mut r = out.base("ServiceRequest", &id);
    if let Some(v) = rf1.field_str("6.1") {
        r.insert("identifier".into(), json!([{ "value": v }]));
    }
    let status = match rf1.field_str("1.1").as_deref() {
        Some("A") | Some("P") => "active",
        Some("R") | Some("E") => "revoked",
        Some("C") => "completed",
        _ if out.event == "I14" => "revoked",
        _ => "active",
    };
    r.insert("status".into(), json!(status));
    r.insert("intent".into(), json!("order"));
    r.insert(
        "category".into(),
        json!([{ "coding": [{ "system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral" }] }]),
    );
    r.insert(
        "code".into(),
        field_concept(&rf1, 3).unwrap_or_else(|| json!({ "text": "referral" })),
    );
    r.insert("subject".into(), reference("Patient", &patient.id));
    if let Some(pr) = priority(rf1.field_str("2.1").as_deref()) {
        r.insert("priority".into(), json!(pr));
    }
    if let Some(at) = out.ctx.datetime("RF1-7", rf1.field_str("7.1")) {
        r.insert("authoredOn".into(), json!(at));
    }
    let reasons: Vec<Value> = rf1
        .repetitions(10)
        .iter()
        .filter_map(|rep| super::codeable_concept(&rf1, rep))
        .collect();
    if !reasons.is_empty() {
        r.insert("reasonCode".into(), Value::Array(reasons));
    }
    let mut performers = Vec::new();
    for prd in m.segments("PRD") {
        // PRD-2 is a name (XPN: family^given), PRD-7 the provider's identifiers
        let Some(name) = prd.raw_field(2) else {
            continue;
        };
        let display: Vec<String> = [2usize, 1]
            .iter()
            .filter_map(|&c| prd.component_of_owned(name, c))
            .collect();
        if display.is_empty() {
            continue;
        }
        let mut who = json!({ "display": display.join(" ") });
        if let Some(id) = prd.field_str("7.1") {
            who["identifier"] = json!({ "value": id });
        }
        match prd.field_str("1.1").as_deref() {
            Some("RP") => {
                r.insert("requester".into(), who);
            }
            _ => performers.push(who),
        }
    }
    if !performers.is_empty() {
        r.insert("performer".into(), Value::Array(performers));
    }
    out.push("ServiceRequest", Some(&patient), r);
    Ok(())
}
