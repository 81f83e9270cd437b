//! Pharmacy: RDE^O11 (encoded order) becomes a MedicationRequest, RDS^O13 (dispense) a
//! MedicationDispense that points at the request it fills.

use serde_json::{Value, json};

use super::{Out, PatientInfo, field_concept, parse_decimal, person_reference, reference};
use crate::error::Hl7Error;
use crate::message::{Message, Segment};

fn request_status(control: Option<&str>) -> &'static str {
    match control {
        Some("NW") | Some("XO") | Some("RP") | Some("RL") | Some("RE") | Some("SC") | None => {
            "active"
        }
        Some("DC") | Some("OD") => "stopped",
        Some("CA") | Some("OC") | Some("CR") => "cancelled",
        Some("HD") | Some("OH") => "on-hold",
        Some("CM") => "completed",
        Some(_) => "unknown",
    }
}

fn quantity(seg: &Segment<'_, '_>, value: usize, unit: usize) -> Option<Value> {
    let v = seg
        .field_str(&value.to_string())
        .and_then(|v| parse_decimal(&v))?;
    let mut q = json!({ "value": v });
    if let Some(u) = seg.field_str(&format!("{unit}.1")) {
        q["unit"] = json!(
            seg.field_str(&format!("{unit}.2"))
                .unwrap_or_else(|| u.clone())
        );
        q["code"] = json!(u);
    }
    Some(q)
}

pub(super) fn medications(
    m: &Message<'_>,
    kind: &str,
    out: &mut Out<'_, '_>,
) -> Result<(), Hl7Error> {
    let patient = out.first_patient(m, kind)?;
    let segs: Vec<Segment<'_, '_>> = m.all_segments().collect();
    let mut orc: Option<Segment<'_, '_>> = None;
    let mut n = 0;
    for (i, seg) in segs.iter().enumerate() {
        let rxr = || {
            segs[i + 1..]
                .iter()
                .take_while(|s| s.name() != "ORC")
                .find(|s| s.name() == "RXR")
                .copied()
        };
        match seg.name() {
            "ORC" => orc = Some(*seg),
            "RXE" | "RXO" if kind == "RDE" => {
                n += 1;
                request(seg, orc.as_ref(), rxr(), &patient, n, out);
            }
            "RXD" if kind == "RDS" => {
                n += 1;
                dispense(seg, orc.as_ref(), rxr(), &patient, n, out);
            }
            _ => {}
        }
    }
    if n == 0 {
        return Err(Hl7Error::Conversion(format!(
            "{kind} without an {} segment",
            if kind == "RDE" { "RXE" } else { "RXD" }
        )));
    }
    Ok(())
}

fn request(
    rxe: &Segment<'_, '_>,
    orc: Option<&Segment<'_, '_>>,
    rxr: Option<Segment<'_, '_>>,
    patient: &PatientInfo,
    n: usize,
    out: &mut Out<'_, '_>,
) {
    let placer = orc.and_then(|o| o.field_str("2.1"));
    let id = out.id_from("medrx", placer.clone(), n);
    let mut r = out.base("MedicationRequest", &id);
    if let Some(v) = placer {
        r.insert("identifier".into(), json!([{ "value": v }]));
    }
    let control = orc.and_then(|o| o.field_str("1"));
    r.insert("status".into(), json!(request_status(control.as_deref())));
    r.insert("intent".into(), json!("order"));
    r.insert(
        "medicationCodeableConcept".into(),
        field_concept(rxe, 2).unwrap_or_else(|| json!({ "text": "unknown" })),
    );
    r.insert("subject".into(), reference("Patient", &patient.id));
    if let Some(at) = orc.and_then(|o| out.ctx.datetime("ORC-9", o.field_str("9.1"))) {
        r.insert("authoredOn".into(), json!(at));
    }
    if let Some(who) = orc.and_then(|o| o.raw_field(12).and_then(|f| person_reference(o, f))) {
        r.insert("requester".into(), who);
    }
    let mut dosage = serde_json::Map::new();
    // RXE-1 (TQ) quantity^interval: the interval (BID, Q6H...) as the timing code
    if let Some(interval) = rxe.field_str("1.2") {
        dosage.insert("text".into(), json!(interval));
        dosage.insert(
            "timing".into(),
            json!({ "code": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation", "code": interval }] } }),
        );
    }
    if let Some(q) = quantity(rxe, 3, 5) {
        dosage.insert("doseAndRate".into(), json!([{ "doseQuantity": q }]));
    }
    if let Some(route) = rxr.as_ref().and_then(|s| field_concept(s, 1)) {
        dosage.insert("route".into(), route);
    }
    if !dosage.is_empty() {
        r.insert("dosageInstruction".into(), json!([dosage]));
    }
    if let Some(q) = quantity(rxe, 10, 11) {
        let mut dr = json!({ "quantity": q });
        if let Some(refills) = rxe.field_str("12").and_then(|v| v.parse::<u32>().ok()) {
            dr["numberOfRepeatsAllowed"] = json!(refills);
        }
        r.insert("dispenseRequest".into(), dr);
    }
    out.push("MedicationRequest", Some(patient), r);
}

fn dispense(
    rxd: &Segment<'_, '_>,
    orc: Option<&Segment<'_, '_>>,
    rxr: Option<Segment<'_, '_>>,
    patient: &PatientInfo,
    n: usize,
    out: &mut Out<'_, '_>,
) {
    let filler = orc
        .and_then(|o| o.field_str("3.1"))
        .or_else(|| rxd.field_str("7"));
    let id = out.id_from(
        "meddispense",
        filler.map(|f| format!("{f}-{}", rxd.field_str("1").unwrap_or_default())),
        n,
    );
    let mut d = out.base("MedicationDispense", &id);
    d.insert("status".into(), json!("completed"));
    d.insert(
        "medicationCodeableConcept".into(),
        field_concept(rxd, 2).unwrap_or_else(|| json!({ "text": "unknown" })),
    );
    d.insert("subject".into(), reference("Patient", &patient.id));
    if let Some(placer) = orc.and_then(|o| o.field_str("2.1")) {
        let req = super::fhir_id(&format!("{}-medrx-{placer}", out.ctx.facility));
        d.insert(
            "authorizingPrescription".into(),
            json!([reference("MedicationRequest", &req)]),
        );
    }
    if let Some(at) = out.ctx.datetime("RXD-3", rxd.field_str("3.1")) {
        d.insert("whenHandedOver".into(), json!(at));
    }
    if let Some(q) = quantity(rxd, 4, 5) {
        d.insert("quantity".into(), q);
    }
    if let Some(route) = rxr.as_ref().and_then(|s| field_concept(s, 1)) {
        d.insert("dosageInstruction".into(), json!([{ "route": route }]));
    }
    out.push("MedicationDispense", Some(patient), d);
}
