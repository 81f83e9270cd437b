//! SIU^S12–S26 (scheduling): the SCH appointment as an Appointment, its status from the event
//! (S15 cancellation, S26 no-show, S13/S14 reschedules and changes) or the filler status.

use serde_json::{Value, json};

use super::{Out, field_concept, hl7_instant, person_reference, reference};
use crate::error::Hl7Error;
use crate::message::Message;

fn status(event: &str, filler_status: Option<&str>) -> &'static str {
    match event {
        "S15" | "S16" => "cancelled",
        "S17" => "entered-in-error",
        "S26" => "noshow",
        "S12" | "S13" | "S14" => match filler_status.map(str::to_ascii_lowercase).as_deref() {
            Some("pending") | Some("waitlist") => "pending",
            _ => "booked",
        },
        _ => match filler_status.map(str::to_ascii_lowercase).as_deref() {
            Some("booked") | Some("confirmed") => "booked",
            Some("cancelled") | Some("deleted") => "cancelled",
            Some("noshow") => "noshow",
            Some("complete") => "fulfilled",
            Some("started") => "arrived",
            Some("pending") | Some("waitlist") => "pending",
            _ => "booked",
        },
    }
}

pub(super) fn appointments(m: &Message<'_>, out: &mut Out<'_, '_>) -> Result<(), Hl7Error> {
    let sch = m
        .segment("SCH", 1)
        .ok_or_else(|| Hl7Error::Conversion("SIU without an SCH segment".into()))?;
    let patient = out.first_patient(m, "SIU")?;
    let number = sch.field_str("1.1").or_else(|| sch.field_str("2.1"));
    let id = out.id_from("appointment", number, 1);
    let mut a = out.base("Appointment", &id);
    let mut ids = Vec::new();
    for (f, t) in [(1, "PLAC"), (2, "FILL")] {
        if let Some(v) = sch.field_str(&format!("{f}.1")) {
            ids.push(json!({ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": t }] }, "value": v }));
        }
    }
    if !ids.is_empty() {
        a.insert("identifier".into(), Value::Array(ids));
    }
    a.insert(
        "status".into(),
        json!(status(&out.event, sch.field_str("25.1").as_deref())),
    );
    if out.event == "S15" || out.event == "S16" {
        if let Some(reason) = field_concept(&sch, 6) {
            a.insert("cancelationReason".into(), reason);
        }
    } else if let Some(reason) = field_concept(&sch, 6) {
        a.insert("reasonCode".into(), json!([reason]));
    }
    if let Some(t) = field_concept(&sch, 7) {
        a.insert("appointmentType".into(), t);
    }
    // SCH-11 (TQ: quantity^interval^duration^start^end, up to v2.5), else the resources' start
    let start = sch
        .field_str("11.4")
        .or_else(|| m.segment("AIS", 1).and_then(|s| s.field_str("4.1")))
        .or_else(|| m.segment("AIL", 1).and_then(|s| s.field_str("6.1")))
        .or_else(|| m.segment("AIP", 1).and_then(|s| s.field_str("6.1")))
        .or_else(|| m.segment("TQ1", 1).and_then(|s| s.field_str("7.1")));
    let end = sch
        .field_str("11.5")
        .or_else(|| m.segment("TQ1", 1).and_then(|s| s.field_str("8.1")));
    // Appointment.start/end are instants: the sender's zone applies to times without one
    for (k, v) in [("start", start), ("end", end)] {
        let Some(dt) = out.ctx.datetime(&format!("SCH {k}"), v) else {
            continue;
        };
        match hl7_instant_from_fhir(&dt) {
            Some(i) => {
                a.insert(k.into(), json!(i));
            }
            None => out
                .ctx
                .warnings
                .push(format!("appointment {k} {dt:?} has no time zone: left out")),
        }
    }
    if let Some(d) = sch.field_str("9").and_then(|d| d.parse::<u64>().ok()) {
        a.insert("minutesDuration".into(), json!(d));
    }
    let mut participants = vec![json!({
        "actor": reference("Patient", &patient.id),
        "status": "accepted",
    })];
    for aip in m.segments("AIP") {
        if let Some(who) = aip.raw_field(3).and_then(|r| person_reference(&aip, r)) {
            participants.push(json!({ "actor": who, "status": "accepted" }));
        }
    }
    for ail in m.segments("AIL") {
        if let Some(loc) = ail.raw_field(3).filter(|r| !r.is_empty()) {
            let parts: Vec<String> = (1..=4)
                .filter_map(|n| ail.component_of_owned(loc, n))
                .collect();
            if !parts.is_empty() {
                participants
                    .push(json!({ "actor": { "display": parts.join(" ") }, "status": "accepted" }));
            }
        }
    }
    a.insert("participant".into(), Value::Array(participants));
    out.push("Appointment", Some(&patient), a);
    Ok(())
}

/// A FHIR dateTime with seconds and a zone, as an instant.
fn hl7_instant_from_fhir(dt: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(dt)
        .ok()
        .map(|_| dt.to_string())
        .or_else(|| hl7_instant(dt))
}
