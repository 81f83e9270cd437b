#![allow(clippy::unwrap_used)]
//! ADT and ORU to FHIR resources.

use std::sync::Arc;

use aqueduct_hl7::Message;
use aqueduct_hl7::fhir::{apply, convert};
use aqueduct_store::{ConnectionRef, Store};
use serde_json::Value;

const ORU: &str = "MSH|^~\\&|LAB|HOSP|AQ|AQ|20240301101500-0500||ORU^R01^ORU_R01|L100|P|2.5.1\r\
PID|1||555^^^HOSP&1.2.3.4&ISO^MR||Smith^Ann||19700215|F\r\
OBR|1|PL1|FL1|24331-1^Lipid panel^LN|||20240301090000-0500|||||||||||||||20240301101000-0500|||F\r\
OBX|1|NM|2093-3^Cholesterol^LN||182|mg/dL^mg/dL^UCUM|<200|N|||F|||20240301090000-0500\r\
OBX|2|SN|2571-8^Triglyceride^LN||>^150|mg/dL|||||F\r\
OBX|3|SN|X1^Range^99LOC||^10^-^20|mg/dL|||||P\r\
OBX|4|SN|X2^Titer^99LOC||^1^:^128||||||F\r\
OBX|5|ST|X3^Comment^99LOC||Sample \\T\\ slightly hemolyzed||||||F\r\
OBX|6|CWE|X4^Culture^99LOC||112283007^E. coli^SCT||||||C\r\
OBX|7|DT|X5^Collected^99LOC||20240229||||||F\r\
OBX|8|TS|X6^Reported^99LOC||202403011015+0100||||||F\r\
OBX|9|NM|X7^Bad number^99LOC||abc||||||F\r\
OBX|10|TX|X8^Text^99LOC||line one~line two||||||F\r\
OBR|2||FL2|X9^Second^99LOC\r\
OBX|1|NM|X10^Glucose^99LOC||5.4|mmol/L|3.5-5.0|H|||F\r";

fn by_id<'a>(c: &'a aqueduct_hl7::fhir::Converted, ty: &str, id: &str) -> &'a Value {
    &c.resources
        .iter()
        .find(|r| r.resource_type == ty && r.id == id)
        .unwrap_or_else(|| panic!("{ty}/{id} missing"))
        .json
}

#[test]
fn oru_becomes_observations_and_reports() {
    let m = Message::parse(ORU).unwrap();
    let c = convert(&m).unwrap();
    assert_eq!(c.connection, "hl7-HOSP");
    assert_eq!(c.source_url, "mllp://LAB^HOSP/L100");
    let p = by_id(&c, "Patient", "HOSP-555");
    assert_eq!(p["identifier"][0]["system"], "urn:oid:1.2.3.4");
    assert_eq!(p["gender"], "female");
    assert_eq!(c.refresh.len(), 1);
    assert_eq!(
        c.refresh[0].patient_key.as_deref(),
        Some("urn:oid:1.2.3.4|555")
    );
    assert_eq!(c.refresh[0].reason, "hl7:ORU^R01");

    let o1 = by_id(&c, "Observation", "FL1-2093-3");
    assert_eq!(o1["valueQuantity"]["value"], 182);
    assert_eq!(o1["valueQuantity"]["unit"], "mg/dL");
    assert_eq!(o1["valueQuantity"]["system"], "http://unitsofmeasure.org");
    assert_eq!(o1["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(o1["code"]["coding"][0]["code"], "2093-3");
    assert_eq!(o1["effectiveDateTime"], "2024-03-01T09:00:00-05:00");
    assert_eq!(o1["subject"]["reference"], "Patient/HOSP-555");
    assert_eq!(o1["interpretation"][0]["coding"][0]["code"], "N");
    assert_eq!(o1["status"], "final");

    let o2 = by_id(&c, "Observation", "FL1-2571-8");
    assert_eq!(o2["valueQuantity"]["comparator"], ">");
    assert_eq!(o2["valueQuantity"]["value"], 150);
    let o3 = by_id(&c, "Observation", "FL1-X1");
    assert_eq!(o3["valueRange"]["low"]["value"], 10);
    assert_eq!(o3["valueRange"]["high"]["value"], 20);
    assert_eq!(o3["status"], "preliminary");
    let o4 = by_id(&c, "Observation", "FL1-X2");
    assert_eq!(o4["valueRatio"]["numerator"]["value"], 1);
    assert_eq!(o4["valueRatio"]["denominator"]["value"], 128);
    let o5 = by_id(&c, "Observation", "FL1-X3");
    assert_eq!(o5["valueString"], "Sample & slightly hemolyzed");
    let o6 = by_id(&c, "Observation", "FL1-X4");
    assert_eq!(
        o6["valueCodeableConcept"]["coding"][0]["system"],
        "http://snomed.info/sct"
    );
    assert_eq!(
        o6["valueCodeableConcept"]["coding"][0]["display"],
        "E. coli"
    );
    assert_eq!(o6["status"], "corrected");
    assert_eq!(
        by_id(&c, "Observation", "FL1-X5")["valueDateTime"],
        "2024-02-29"
    );
    assert_eq!(
        by_id(&c, "Observation", "FL1-X6")["valueDateTime"],
        "2024-03-01T10:15:00+01:00"
    );
    assert_eq!(by_id(&c, "Observation", "FL1-X7")["valueString"], "abc");
    assert!(c.warnings.iter().any(|w| w.contains("not a number")));
    assert_eq!(
        by_id(&c, "Observation", "FL1-X8")["valueString"],
        "line one\nline two"
    );
    let o11 = by_id(&c, "Observation", "FL2-X10");
    assert_eq!(o11["valueQuantity"]["value"], 5.4);
    assert_eq!(o11["referenceRange"][0]["low"]["value"], 3.5);
    assert_eq!(o11["referenceRange"][0]["high"]["value"], 5.0);

    let r1 = by_id(&c, "DiagnosticReport", "FL1");
    assert_eq!(r1["result"].as_array().unwrap().len(), 10);
    assert_eq!(r1["result"][0]["reference"], "Observation/FL1-2093-3");
    assert_eq!(r1["issued"], "2024-03-01T10:10:00-05:00");
    assert_eq!(r1["status"], "final");
    assert_eq!(r1["code"]["coding"][0]["code"], "24331-1");
    let r2 = by_id(&c, "DiagnosticReport", "FL2");
    assert_eq!(r2["result"].as_array().unwrap().len(), 1);
    assert_eq!(c.resources.len(), 1 + 11 + 2);

    // a correction (new control id, OBX-11 C) replaces the result by id
    let corrected = ORU.replace("|L100|", "|L101|").replace(
        "||182|mg/dL^mg/dL^UCUM|<200|N|||F|",
        "||190|mg/dL^mg/dL^UCUM|<200|N|||C|",
    );
    let c2 = convert(&Message::parse(&corrected).unwrap()).unwrap();
    let o = by_id(&c2, "Observation", "FL1-2093-3");
    assert_eq!(o["valueQuantity"]["value"], 190);
    assert_eq!(o["status"], "corrected");
}

fn adt(event: &str, control: &str, extra: &str) -> String {
    format!(
        "MSH|^~\\&|ADT|HOSP|AQ|AQ|20240101||ADT^{event}|{control}|P|2.5\rEVN|{event}\rPID|1||100^^^HOSP^MR||Doe^Jane||19900101|F\r{extra}"
    )
}

#[test]
fn adt_events_map_encounter_status() {
    let pv1 = |end: &str| {
        let mut f = vec![""; 46];
        f[0] = "PV1";
        f[2] = "E";
        f[19] = "V9";
        f[44] = "20240101080000";
        f[45] = end;
        f.join("|") + "\r"
    };
    let status = |event: &str, end: &str| {
        let text = adt(event, "X", &pv1(end));
        let m = Message::parse(&text).unwrap();
        let c = convert(&m).unwrap();
        c.resources
            .iter()
            .find(|r| r.resource_type == "Encounter")
            .map(|r| r.json["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("A01", "").as_deref(), Some("in-progress"));
    assert_eq!(status("A02", "").as_deref(), Some("in-progress"));
    assert_eq!(status("A03", "20240102").as_deref(), Some("finished"));
    assert_eq!(status("A04", "").as_deref(), Some("arrived"));
    assert_eq!(status("A08", "").as_deref(), Some("in-progress"));
    assert_eq!(status("A11", "").as_deref(), Some("cancelled"));
    assert_eq!(status("A13", "").as_deref(), Some("in-progress"));
    assert_eq!(status("A28", ""), None);
    assert_eq!(status("A31", ""), None);
    let text = adt("A03", "X", &pv1("20240102093000"));
    let c = convert(&Message::parse(&text).unwrap()).unwrap();
    let e = &c
        .resources
        .iter()
        .find(|r| r.resource_type == "Encounter")
        .unwrap()
        .json;
    assert_eq!(e["class"]["code"], "EMER");
    assert_eq!(e["period"]["start"], "2024-01-01T08:00:00");
    assert_eq!(e["period"]["end"], "2024-01-02T09:30:00");
    assert_eq!(e["id"], "HOSP-V9");
    // a time without offset takes the sender's offset from MSH-7
    let text = adt("A03", "X", &pv1("20240102093000"))
        .replace("|20240101||ADT", "|20240101120000-0500||ADT");
    let c = convert(&Message::parse(&text).unwrap()).unwrap();
    let e = &c
        .resources
        .iter()
        .find(|r| r.resource_type == "Encounter")
        .unwrap()
        .json;
    assert_eq!(e["period"]["start"], "2024-01-01T08:00:00-05:00");
}

#[test]
fn short_segments_and_odd_values_convert() {
    let text = "MSH|^~\\&|LAB|HOSP|AQ|AQ|2024||ORU^R01|S1|P|2.3\rPID|||9\rOBR\rOBX|1\rOBX|2|NM\rOBX|3|ZZ|C^Code||v\rOBX|4|SN|C||<>^5\r";
    let c = convert(&Message::parse(text).unwrap()).unwrap();
    assert_eq!(
        c.resources
            .iter()
            .filter(|r| r.resource_type == "Observation")
            .count(),
        4
    );
    let o3 = by_id(&c, "Observation", "LAB-S1-3");
    assert_eq!(o3["valueString"], "v");
    let o4 = by_id(&c, "Observation", "LAB-S1-4");
    assert_eq!(o4["valueString"], "<>5");
    assert_eq!(c.resources[0].id, "HOSP-9");
}

#[tokio::test]
async fn a40_merge_links_and_keeps_both() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    let now = chrono::Utc::now();
    // the prior patient is known first
    let prior = "MSH|^~\\&|ADT|HOSP|AQ|AQ|20240101||ADT^A28|M0|P|2.5\rPID|1||200^^^HOSP^MR||Old^Record||19900101|F\r";
    apply(&store, "acme", prior.as_bytes(), now).await.unwrap();
    let merge = adt("A40", "M1", "MRG|200^^^HOSP^MR\r");
    let applied = apply(&store, "acme", merge.as_bytes(), now).await.unwrap();
    assert_eq!(applied.refresh_requests, 2);
    let conn = ConnectionRef::new("acme", "hl7-HOSP");
    let survivor: Value = serde_json::from_slice(
        &store
            .get_resource(&conn, "Patient", "HOSP-100")
            .await
            .unwrap()
            .unwrap()
            .bytes,
    )
    .unwrap();
    assert_eq!(survivor["link"][0]["type"], "replaces");
    assert_eq!(
        survivor["link"][0]["other"]["reference"],
        "Patient/HOSP-200"
    );
    let old = store
        .get_resource(&conn, "Patient", "HOSP-200")
        .await
        .unwrap()
        .unwrap();
    assert!(old.deleted_at.is_none());
    let old: Value = serde_json::from_slice(&old.bytes).unwrap();
    assert_eq!(old["link"][0]["type"], "replaced-by");
    assert_eq!(old["link"][0]["other"]["reference"], "Patient/HOSP-100");
    assert_eq!(old["active"], false);
    assert_eq!(
        old["name"][0]["family"], "Old",
        "the prior record's data is kept"
    );
    // a merge naming an unknown prior record leaves a stub
    let merge = adt("A40", "M2", "MRG|300^^^HOSP^MR\r");
    apply(&store, "acme", merge.as_bytes(), now).await.unwrap();
    let stub: Value = serde_json::from_slice(
        &store
            .get_resource(&conn, "Patient", "HOSP-300")
            .await
            .unwrap()
            .unwrap()
            .bytes,
    )
    .unwrap();
    assert_eq!(stub["identifier"][0]["value"], "300");
    assert_eq!(stub["link"][0]["type"], "replaced-by");
}

#[test]
fn latin1_names_are_decoded() {
    let mut bytes = b"MSH|^~\\&|ADT|H\xd4P|AQ|AQ|20240101||ADT^A08|X|P|2.5||||||8859/1\rPID|1||1^^^H^MR||M\xfcller^J\xf6rg\r".to_vec();
    bytes.extend_from_slice(b"PV1|1|O\r");
    let text = aqueduct_hl7::decode_text(&bytes).unwrap();
    let c = convert(&Message::parse(&text).unwrap()).unwrap();
    assert_eq!(c.connection, "hl7-HÔP");
    let p = &c.resources[0].json;
    assert_eq!(p["name"][0]["family"], "Müller");
    assert_eq!(p["name"][0]["given"][0], "Jörg");
    assert!(c.warnings.iter().any(|w| w.contains("PV1")));
}

#[test]
fn unsupported_and_broken_messages_are_errors_not_panics() {
    for text in [
        "MSH|^~\\&|A|B|C|D|2024||MDM^T02|1|P|2.5\r",
        "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rEVN|A01\r",
        "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1\r",
        "MSH|^~\\&|A|B|C|D|2024||ADT^A40|1|P|2.5\rMRG|1\r",
        "MSH|^~\\&|A|B|C|D|2024||ORU^R01|1|P|2.5\rOBX|1|NM|x||1\r",
        "MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5\rPID|1||1\r",
    ] {
        let m = Message::parse(text).unwrap();
        assert!(convert(&m).is_err(), "{text}");
    }
}

#[test]
fn oru_with_several_patients_attaches_results_to_each() {
    let text = "MSH|^~\\&|LAB|HOSP|AQ|AQ|2024||ORU^R01|MP|P|2.5\r\
PID|1||1^^^HOSP^MR\rOBR|1||F1|A^A^LN\rOBX|1|NM|A^A^LN||1\r\
PID|2||2^^^HOSP^MR\rOBR|1||F2|B^B^LN\rOBX|1|NM|B^B^LN||2\rOBX|2|NM|B^B^LN||3\r";
    let c = convert(&Message::parse(text).unwrap()).unwrap();
    assert_eq!(c.refresh.len(), 2);
    let subject = |id: &str| by_id(&c, "Observation", id)["subject"]["reference"].clone();
    assert_eq!(subject("F1-A"), "Patient/HOSP-1");
    assert_eq!(subject("F2-B"), "Patient/HOSP-2");
    assert_eq!(subject("F2-B-2"), "Patient/HOSP-2");
    let r2 = by_id(&c, "DiagnosticReport", "F2");
    assert_eq!(r2["subject"]["reference"], "Patient/HOSP-2");
    assert_eq!(r2["result"].as_array().unwrap().len(), 2);
    let r1 = c.resources.iter().find(|r| r.id == "F1").unwrap();
    assert_eq!(r1.patient_id.as_deref(), Some("HOSP-1"));
}
