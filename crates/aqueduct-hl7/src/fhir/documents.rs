//! Documents: MDM^T01–T11 become a DocumentReference with the TXA metadata and the OBX content
//! as attachments; an ED (or RP) OBX value anywhere is an attachment.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Out, field_concept, hl7_instant, person_reference, reference};
use crate::error::Hl7Error;
use crate::message::{Message, Segment, unescape};

/// ED-3 (data subtype) or a MIME type to a content type.
fn content_type(subtype: Option<&str>, kind: Option<&str>) -> String {
    match subtype.map(|s| s.to_ascii_uppercase()).as_deref() {
        Some("PDF") => "application/pdf".into(),
        Some("RTF") => "application/rtf".into(),
        Some("HTML") => "text/html".into(),
        Some("XML") => "application/xml".into(),
        Some("JPEG") | Some("JPG") => "image/jpeg".into(),
        Some("PNG") => "image/png".into(),
        Some("TIFF") => "image/tiff".into(),
        Some("GIF") => "image/gif".into(),
        Some("TEXT") | Some("PLAIN") => "text/plain".into(),
        Some(s) if s.contains('/') => s.to_ascii_lowercase(),
        _ => match kind {
            Some("TEXT") | Some("TX") => "text/plain".into(),
            _ => "application/octet-stream".into(),
        },
    }
}

/// The attachment of an ED (source^type^subtype^encoding^data) or RP (pointer^app^type^subtype)
/// OBX-5.
pub(super) fn obx_attachment(obx: &Segment<'_, '_>) -> Option<Value> {
    let vt = obx.field_str("2").unwrap_or_default();
    let first = *obx.repetitions(5).first()?;
    let c = |n| obx.component_of_owned(first, n);
    if vt == "RP" {
        let url = c(1)?;
        return Some(json!({
            "contentType": content_type(c(4).as_deref(), c(3).as_deref()),
            "url": url,
        }));
    }
    let data = c(5)?;
    let encoding = c(4).unwrap_or_default().to_ascii_uppercase();
    let engine = base64::engine::general_purpose::STANDARD;
    let b64 = match encoding.as_str() {
        "BASE64" => data
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>(),
        "HEX" => {
            let bytes: Option<Vec<u8>> = (0..data.len() / 2)
                .map(|i| u8::from_str_radix(data.get(2 * i..2 * i + 2)?, 16).ok())
                .collect();
            engine.encode(bytes?)
        }
        _ => engine.encode(data.as_bytes()),
    };
    let mut a = json!({
        "contentType": content_type(c(3).as_deref(), c(2).as_deref()),
        "data": b64,
    });
    if let Some(title) = obx.field_str("3.2") {
        a["title"] = json!(title);
    }
    Some(a)
}

/// Text OBX values (TX, ST, FT; repetitions are lines) as one plain-text attachment.
fn text_attachment(lines: &[String]) -> Value {
    let text = lines.join("\n");
    json!({
        "contentType": "text/plain; charset=utf-8",
        "data": base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
    })
}

/// TXA-17 (document completion status, table 0271) to DocumentReference.docStatus.
fn doc_status(code: Option<&str>) -> Option<&'static str> {
    match code {
        Some("AU") | Some("LA") | Some("DO") => Some("final"),
        Some("IP") | Some("IN") | Some("PA") | Some("DI") => Some("preliminary"),
        Some("AM") => Some("amended"),
        _ => None,
    }
}

pub(super) fn document_references(m: &Message<'_>, out: &mut Out<'_, '_>) -> Result<(), Hl7Error> {
    let patient = out.first_patient(m, "MDM")?;
    let txa = m
        .segment("TXA", 1)
        .ok_or_else(|| Hl7Error::Conversion("MDM without a TXA segment".into()))?;
    let number = txa.field_str("12.1").or_else(|| txa.field_str("13.1"));
    let id = out.id_from("document", number.clone(), 1);
    let mut d = out.base("DocumentReference", &id);
    if let Some(v) = number {
        d.insert("masterIdentifier".into(), json!({ "value": v }));
    }
    // T11 cancels the document; TXA-17 CA says the same
    let cancelled = out.event == "T11" || txa.field_str("17").as_deref() == Some("CA");
    d.insert(
        "status".into(),
        json!(if cancelled {
            "entered-in-error"
        } else {
            "current"
        }),
    );
    if let Some(ds) = doc_status(txa.field_str("17").as_deref()) {
        d.insert("docStatus".into(), json!(ds));
    }
    if let Some(t) = field_concept(&txa, 2) {
        d.insert("type".into(), t);
    }
    d.insert("subject".into(), reference("Patient", &patient.id));
    let when = txa.field_str("22.1").or_else(|| txa.field_str("4.1"));
    if let Some(at) = when.as_deref().and_then(hl7_instant) {
        d.insert("date".into(), json!(at));
    }
    let authors: Vec<Value> = txa
        .repetitions(9)
        .iter()
        .chain(txa.repetitions(5).iter())
        .filter_map(|r| person_reference(&txa, r))
        .collect();
    if !authors.is_empty() {
        d.insert("author".into(), Value::Array(authors));
    }
    let mut content = Vec::new();
    let mut lines = Vec::new();
    for obx in m.segments("OBX") {
        match obx.field_str("2").as_deref() {
            Some("ED") | Some("RP") => {
                if let Some(a) = obx_attachment(&obx) {
                    content.push(json!({ "attachment": a }));
                }
            }
            _ => {
                let delims = obx.delimiters();
                for r in obx.repetitions(5) {
                    lines.push(unescape(r, &delims).into_owned());
                }
            }
        }
    }
    if !lines.is_empty() {
        content.insert(0, json!({ "attachment": text_attachment(&lines) }));
    }
    if content.is_empty() {
        // T01/T03/T05/T07/T09/T11 carry no content: FHIR needs one, so the TXA stands in
        content.push(json!({ "attachment": {
            "contentType": "text/plain",
            "title": txa.field_str("2.2").unwrap_or_else(|| "document (no content in the message)".into()),
        } }));
    }
    d.insert("content".into(), Value::Array(content));
    if let Some(visit) = m.segment("PV1", 1).and_then(|pv1| pv1.field_str("19.1")) {
        let enc = super::fhir_id(&format!("{}-{visit}", out.ctx.facility));
        d.insert(
            "context".into(),
            json!({ "encounter": [reference("Encounter", &enc)] }),
        );
    }
    out.push("DocumentReference", Some(&patient), d);
    Ok(())
}
