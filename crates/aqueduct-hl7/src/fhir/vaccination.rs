//! VXU^V04: each RXA becomes an Immunization (CVX vaccine, lot, expiry, manufacturer, route and
//! site from RXR; a refusal is `not-done` with its reason).

use serde_json::json;

use super::{Out, codeable_concept, field_concept, parse_decimal, reference};
use crate::error::Hl7Error;
use crate::message::{Message, Segment};

fn vaccine_code(rxa: &Segment<'_, '_>) -> serde_json::Value {
    rxa.raw_field(5)
        .filter(|r| !r.is_empty())
        .and_then(|r| codeable_concept(rxa, r))
        .unwrap_or_else(|| json!({ "text": "unknown" }))
}

pub(super) fn immunizations(m: &Message<'_>, out: &mut Out<'_, '_>) -> Result<(), Hl7Error> {
    let patient = out.first_patient(m, "VXU")?;
    let segs: Vec<Segment<'_, '_>> = m.all_segments().collect();
    let mut order: Option<String> = None;
    let mut n = 0;
    for (i, rxa) in segs.iter().enumerate() {
        match rxa.name() {
            "ORC" => order = rxa.field_str("3.1").or_else(|| rxa.field_str("2.1")),
            "RXA" => {
                n += 1;
                let id = out.id_from("immunization", order.take(), n);
                let mut im = out.base("Immunization", &id);
                let completion = rxa.field_str("20").unwrap_or_else(|| "CP".into());
                let status = if rxa.field_str("21").as_deref() == Some("D") {
                    "entered-in-error"
                } else if matches!(completion.as_str(), "RE" | "NA") {
                    "not-done"
                } else {
                    "completed"
                };
                im.insert("status".into(), json!(status));
                if let Some(reason) = field_concept(rxa, 18) {
                    im.insert("statusReason".into(), reason);
                } else if completion == "RE" {
                    im.insert(
                        "statusReason".into(),
                        json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "PATOBJ", "display": "patient objection" }] }),
                    );
                }
                im.insert("vaccineCode".into(), vaccine_code(rxa));
                im.insert("patient".into(), reference("Patient", &patient.id));
                match out.ctx.datetime("RXA-3", rxa.field_str("3.1")) {
                    Some(at) => im.insert("occurrenceDateTime".into(), json!(at)),
                    None => im.insert("occurrenceString".into(), json!("unknown")),
                };
                // 999 is "amount unknown"
                if let Some(v) = rxa
                    .field_str("6")
                    .filter(|v| v != "999")
                    .and_then(|v| parse_decimal(&v))
                {
                    let mut q = json!({ "value": v });
                    if let Some(u) = rxa.field_str("7.1") {
                        q["unit"] = json!(u);
                        q["system"] = json!("http://unitsofmeasure.org");
                        q["code"] = json!(u);
                    }
                    im.insert("doseQuantity".into(), q);
                }
                if let Some(src) = rxa.field_str("9.1") {
                    im.insert("primarySource".into(), json!(src == "00"));
                }
                if let Some(lot) = rxa.field_str("15") {
                    im.insert("lotNumber".into(), json!(lot));
                }
                if let Some(exp) = out.ctx.date("RXA-16", rxa.field_str("16.1")) {
                    im.insert("expirationDate".into(), json!(exp));
                }
                if let Some(mvx) = rxa.field_str("17.2").or_else(|| rxa.field_str("17.1")) {
                    im.insert("manufacturer".into(), json!({ "display": mvx }));
                }
                // the RXR that follows this RXA
                if let Some(rxr) = segs[i + 1..]
                    .iter()
                    .take_while(|s| s.name() != "RXA")
                    .find(|s| s.name() == "RXR")
                {
                    if let Some(route) = field_concept(rxr, 1) {
                        im.insert("route".into(), route);
                    }
                    if let Some(site) = field_concept(rxr, 2) {
                        im.insert("site".into(), site);
                    }
                }
                out.push("Immunization", Some(&patient), im);
            }
            _ => {}
        }
    }
    if n == 0 {
        return Err(Hl7Error::Conversion("VXU without an RXA segment".into()));
    }
    Ok(())
}
