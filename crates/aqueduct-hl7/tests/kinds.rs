#![allow(clippy::unwrap_used)]
//! Every message kind of the fixture set is converted to the FHIR resources the v2-to-FHIR
//! mapping gives it; the raw message is not touched by conversion.

use std::collections::BTreeMap;
use std::path::Path;

use aqueduct_hl7::fhir::{Converted, convert_bytes};
use serde_json::Value;

fn fixture(name: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap();
    aqueduct_hl7::split_messages(&bytes)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

fn convert(name: &str, n: usize) -> Converted {
    let msgs = fixture(name);
    match convert_bytes(&msgs[n]) {
        Ok(c) => c,
        Err(e) => panic!("{name}#{}: {e}", n + 1),
    }
}

fn only<'a>(c: &'a Converted, ty: &str) -> &'a Value {
    let all: Vec<_> = c
        .resources
        .iter()
        .filter(|r| r.resource_type == ty)
        .collect();
    assert_eq!(all.len(), 1, "one {ty} in {:?}", types(c));
    &all[0].json
}

fn types(c: &Converted) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in &c.resources {
        *m.entry(r.resource_type).or_default() += 1;
    }
    m
}

#[test]
fn every_fixture_message_converts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut n = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_none_or(|x| x != "hl7") {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        for (i, m) in aqueduct_hl7::split_messages(&bytes).into_iter().enumerate() {
            n += 1;
            let c = convert_bytes(m).unwrap_or_else(|e| panic!("{}#{}: {e}", p.display(), i + 1));
            assert!(!c.resources.is_empty(), "{}#{}", p.display(), i + 1);
            for r in &c.resources {
                assert_eq!(r.json["resourceType"], r.resource_type);
                assert_eq!(r.json["id"], r.id.as_str());
                assert!(
                    r.id.len() <= 64
                        && r.id
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
                    "{}",
                    r.id
                );
            }
        }
    }
    assert!(n >= 45);
}

#[test]
fn adt_events_cancellations_and_identity_events() {
    let discharge = convert("adt_events.hl7", 2);
    assert_eq!(discharge.message_type, "ADT^A03");
    assert_eq!(only(&discharge, "Encounter")["status"], "finished");
    let cancel_admit = convert("adt_events.hl7", 7);
    assert_eq!(cancel_admit.message_type, "ADT^A11");
    assert_eq!(only(&cancel_admit, "Encounter")["status"], "cancelled");
    let cancel_discharge = convert("adt_events.hl7", 9);
    assert_eq!(cancel_discharge.message_type, "ADT^A13");
    assert_eq!(
        only(&cancel_discharge, "Encounter")["status"],
        "in-progress"
    );
    let update = convert("adt_events.hl7", 6);
    assert_eq!(update.message_type, "ADT^A08");
    assert_eq!(only(&update, "Patient")["name"][0]["family"], "Doe");

    for (i, event, kind) in [
        (0, "A18", "merge"),
        (1, "A34", "merge"),
        (2, "A40", "merge"),
        (3, "A24", "link"),
        (4, "A37", "unlink"),
    ] {
        let c = convert("adt_identity.hl7", i);
        assert_eq!(c.identity_events.len(), 1, "{event}");
        assert_eq!(c.identity_events[0].kind, kind, "{event}");
        assert_eq!(c.identity_events[0].event, event);
        let l = only(&c, "Linkage");
        assert_eq!(l["active"], kind != "unlink", "{event}");
        assert_eq!(l["item"].as_array().unwrap().len(), 2);
    }
    // the link and the unlink are the same Linkage
    assert_eq!(
        only(&convert("adt_identity.hl7", 3), "Linkage")["id"],
        only(&convert("adt_identity.hl7", 4), "Linkage")["id"]
    );
    assert_eq!(convert("adt_identity.hl7", 2).merges.len(), 1);
}

#[test]
fn results_with_every_obx_value_type_and_specimens() {
    let c = convert("oru_r01_lf.hl7", 0);
    let obs: Vec<&Value> = c
        .resources
        .iter()
        .filter(|r| r.resource_type == "Observation")
        .map(|r| &r.json)
        .collect();
    let by_code = |code: &str| {
        *obs.iter()
            .find(|o| o["code"]["coding"][0]["code"] == code)
            .unwrap()
    };
    assert_eq!(by_code("2345-7")["valueQuantity"]["value"], 105);
    assert_eq!(by_code("2345-7")["valueQuantity"]["code"], "mg/dL");
    assert_eq!(by_code("8247-9")["valueString"], "Hemolyzed specimen");
    assert_eq!(by_code("11529-5")["valueString"], "Line one\nLine two");
    assert_eq!(
        by_code("18842-5")["valueString"],
        "Bold text and\nsecond line"
    );
    assert_eq!(
        by_code("883-9")["valueCodeableConcept"]["coding"][0]["code"],
        "A"
    );
    assert_eq!(
        by_code("10331-7")["valueCodeableConcept"]["coding"][0]["system"],
        "http://snomed.info/sct"
    );
    assert_eq!(by_code("5196-1")["valueQuantity"]["comparator"], "<");
    assert_eq!(by_code("5909-7")["valueRatio"]["denominator"]["value"], 128);
    assert_eq!(by_code("21112-8")["valueDateTime"], "1980-01-01");
    assert_eq!(
        by_code("68963-8")["valueDateTime"],
        "2024-02-01T07:55:00-05:00"
    );
    assert_eq!(
        obs.len(),
        10,
        "the ED value is an attachment, not an Observation"
    );
    let report = only(&c, "DiagnosticReport");
    assert_eq!(report["presentedForm"][0]["contentType"], "application/pdf");
    assert_eq!(report["presentedForm"][0]["data"], "JVBERi0xLjQKJcfsj6IK");
    assert_eq!(report["result"].as_array().unwrap().len(), 10);
    let spm = only(&c, "Specimen");
    assert_eq!(spm["type"]["coding"][0]["code"], "BLD");
    assert_eq!(
        report["specimen"][0]["reference"],
        format!("Specimen/{}", spm["id"].as_str().unwrap())
    );

    let oul = convert("oul_r22.hl7", 0);
    assert_eq!(oul.message_type, "OUL^R22");
    assert_eq!(only(&oul, "Specimen")["type"]["coding"][0]["code"], "UR");
    assert_eq!(only(&oul, "Observation")["valueQuantity"]["value"], 1.02);
}

#[test]
fn orders_referrals_and_problems() {
    let new = convert("orders.hl7", 0);
    let sr = only(&new, "ServiceRequest");
    assert_eq!(sr["status"], "active");
    assert_eq!(sr["intent"], "order");
    assert_eq!(sr["code"]["coding"][0]["code"], "80048");
    let cancel = convert("orders.hl7", 1);
    let sr2 = only(&cancel, "ServiceRequest");
    assert_eq!(sr2["status"], "revoked");
    assert_eq!(sr2["id"], sr["id"], "the cancel names the same order");
    let oml = convert("orders.hl7", 2);
    let sr = only(&oml, "ServiceRequest");
    assert_eq!(
        sr["specimen"][0]["reference"],
        format!(
            "Specimen/{}",
            only(&oml, "Specimen")["id"].as_str().unwrap()
        )
    );
    let omg = convert("orders.hl7", 3);
    assert_eq!(
        only(&omg, "ServiceRequest")["extension"][0]["valueCode"],
        "XO"
    );

    let referral = convert("ref_ppr.hl7", 0);
    let r = only(&referral, "ServiceRequest");
    assert_eq!(r["category"][0]["coding"][0]["code"], "3457005");
    assert_eq!(r["priority"], "routine");
    assert_eq!(r["requester"]["display"], "Robert Jones");
    let problem = convert("ref_ppr.hl7", 1);
    let cond = only(&problem, "Condition");
    assert_eq!(cond["code"]["coding"][0]["code"], "M17.11");
    assert_eq!(
        cond["code"]["coding"][0]["system"],
        "http://hl7.org/fhir/sid/icd-10-cm"
    );
    assert_eq!(cond["clinicalStatus"]["coding"][0]["code"], "active");
}

#[test]
fn documents_appointments_immunizations_medications_and_accounts() {
    let doc = convert("mdm.hl7", 0);
    let d = only(&doc, "DocumentReference");
    assert_eq!(d["status"], "current");
    assert_eq!(d["docStatus"], "final");
    assert_eq!(d["masterIdentifier"]["value"], "DOC6001");
    assert_eq!(d["type"]["coding"][0]["code"], "DS");
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD
        .decode(d["content"][0]["attachment"]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(text).unwrap(),
        "Patient discharged home.\nFollow up in 2 weeks."
    );
    let cancelled = convert("mdm.hl7", 1);
    let d2 = only(&cancelled, "DocumentReference");
    assert_eq!(d2["status"], "entered-in-error");
    assert_eq!(d2["id"], d["id"]);

    let statuses: Vec<Value> = (0..4)
        .map(|i| only(&convert("siu.hl7", i), "Appointment")["status"].clone())
        .collect();
    assert_eq!(statuses, ["booked", "booked", "cancelled", "noshow"]);
    let booked = convert("siu.hl7", 0);
    let a = only(&booked, "Appointment");
    assert_eq!(a["participant"].as_array().unwrap().len(), 3);
    assert_eq!(a["minutesDuration"], Value::Null);

    let given = convert("vxu.hl7", 0);
    let im = only(&given, "Immunization");
    assert_eq!(im["status"], "completed");
    assert_eq!(
        im["vaccineCode"]["coding"][0]["system"],
        "http://hl7.org/fhir/sid/cvx"
    );
    assert_eq!(im["vaccineCode"]["coding"][0]["code"], "208");
    assert_eq!(im["lotNumber"], "EW0150");
    assert_eq!(im["route"]["coding"][0]["code"], "IM");
    assert_eq!(im["site"]["coding"][0]["code"], "LD");
    let refused = convert("vxu.hl7", 1);
    let im = only(&refused, "Immunization");
    assert_eq!(im["status"], "not-done");
    assert_eq!(im["statusReason"]["coding"][0]["code"], "00");
    assert!(im.get("doseQuantity").is_none(), "999 is an unknown amount");

    let rde = convert("pharmacy.hl7", 0);
    let mr = only(&rde, "MedicationRequest");
    assert_eq!(mr["status"], "active");
    assert_eq!(
        mr["medicationCodeableConcept"]["coding"][0]["system"],
        "http://www.nlm.nih.gov/research/umls/rxnorm"
    );
    assert_eq!(
        mr["dosageInstruction"][0]["timing"]["code"]["coding"][0]["code"],
        "BID"
    );
    assert_eq!(mr["dispenseRequest"]["quantity"]["value"], 30);
    let rds = convert("pharmacy.hl7", 1);
    let md = only(&rds, "MedicationDispense");
    assert_eq!(
        md["authorizingPrescription"][0]["reference"],
        format!("MedicationRequest/{}", mr["id"].as_str().unwrap())
    );

    let dft = convert("financial.hl7", 0);
    let charge = only(&dft, "ChargeItem");
    assert_eq!(charge["code"]["coding"][0]["code"], "99213");
    assert_eq!(charge["priceOverride"]["value"], 125.0);
    assert_eq!(
        charge["account"][0]["reference"],
        format!("Account/{}", only(&dft, "Account")["id"].as_str().unwrap())
    );
    assert!(dft.resources.iter().any(|r| r.resource_type == "Encounter"));
    let bar = convert("financial.hl7", 1);
    let cov = only(&bar, "Coverage");
    assert_eq!(cov["payor"][0]["display"], "BLUE CROSS BLUE SHIELD");
    assert_eq!(cov["relationship"]["coding"][0]["code"], "self");
    assert_eq!(cov["subscriberId"], "POL778899");
}

#[test]
fn character_sets_escapes_and_repetitions() {
    let utf8 = convert("utf8_bom.hl7", 0);
    assert_eq!(only(&utf8, "Patient")["name"][0]["family"], "Müller");
    let latin1 = convert("latin1.hl7", 0);
    assert_eq!(only(&latin1, "Patient")["name"][0]["family"], "Ibáñez");
    assert_eq!(only(&latin1, "Patient")["name"][0]["given"][0], "José");
    let esc = convert("escapes.hl7", 0);
    let p = only(&esc, "Patient");
    assert_eq!(p["name"][0]["family"], "O&Brien");
    assert_eq!(p["name"][0]["given"][0], "Mary | Ann");
    assert_eq!(p["name"][0]["given"][1], "A");
    assert_eq!(p["identifier"].as_array().unwrap().len(), 2);
    assert_eq!(p["address"].as_array().unwrap().len(), 2);
    assert_eq!(p["address"][0]["line"][0], "1 Pipe ^ Lane~Unit 2");
    assert_eq!(p["telecom"].as_array().unwrap().len(), 2);
}

#[test]
fn an_unsupported_kind_is_an_error_naming_it() {
    let m = b"MSH|^~\\&|A|B|||20240101||QBP^Q22|1|P|2.5\rQPD|x\r";
    let e = convert_bytes(m).unwrap_err().to_string();
    assert!(e.contains("QBP^Q22"), "{e}");
}
