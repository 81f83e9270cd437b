//! FHIR REST behaviour of the reference personality over real HTTP.

mod common;

use std::collections::HashSet;

use aqueduct_sim::SimConfig;
use common::*;
use serde_json::{Value, json};

const TYPES: &[&str] = &[
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "AllergyIntolerance",
    "Immunization",
    "Procedure",
    "DiagnosticReport",
    "DocumentReference",
    "CarePlan",
    "CareTeam",
    "Goal",
];

#[tokio::test]
async fn metadata_and_smart_configuration_need_no_token() {
    let sim = start(small("reference")).await;
    let (s, cs) = get_json(&sim, "none", "metadata").await;
    assert_eq!(s, 200);
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let ext = &cs["rest"][0]["security"]["extension"][0];
    assert_eq!(
        ext["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    let (s, wk) = get_json(&sim, "none", ".well-known/smart-configuration").await;
    assert_eq!(s, 200);
    assert_eq!(wk["code_challenge_methods_supported"], json!(["S256"]));
    for cap in [
        "launch-standalone",
        "launch-ehr",
        "client-confidential-asymmetric",
        "permission-v2",
        "permission-offline",
    ] {
        assert!(
            wk["capabilities"]
                .as_array()
                .expect("caps")
                .contains(&json!(cap)),
            "{cap}"
        );
    }
}

#[tokio::test]
async fn fhir_requests_without_a_token_get_401_with_www_authenticate() {
    let sim = start(small("reference")).await;
    let r = http()
        .get(format!("{}/Patient", sim.base_url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .expect("h")
            .starts_with("Bearer")
    );
    let r = http()
        .get(format!("{}/Patient", sim.base_url()))
        .bearer_auth("forged")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn paging_returns_every_resource_of_the_compartment_exactly_once() {
    let sim = start(SimConfig {
        patients: 2,
        resources_per_patient: 150,
        ..SimConfig::default()
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    for pid in sim.patient_ids() {
        let mut all = vec![];
        all.extend(fetch_all(&sim, &token, &format!("Patient?_id={pid}")).await);
        for t in TYPES {
            all.extend(fetch_all(&sim, &token, &format!("{t}?patient={pid}&_count=7")).await);
        }
        let ids = ids(&all);
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "no duplicates");
        assert_eq!(ids.len(), sim.expected_resource_count(&pid));
        let everything = fetch_all(
            &sim,
            &token,
            &format!("Patient/{pid}/$everything?_count=25"),
        )
        .await;
        assert_eq!(everything.len(), sim.expected_resource_count(&pid));
    }
}

#[tokio::test]
async fn read_vread_etag_and_not_found() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let r = get(&sim, &token, &format!("Patient/{pid}")).await;
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    assert_eq!(etag, "W/\"1\"");
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["id"], pid.as_str());
    assert!(p["identifier"][0]["system"].is_string());
    let r = http()
        .get(format!("{}/Patient/{pid}", sim.base_url()))
        .bearer_auth(&token)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 304);
    let (s, _) = get_json(&sim, &token, &format!("Patient/{pid}/_history/1")).await;
    assert_eq!(s, 200);
    let (s, oo) = get_json(&sim, &token, "Patient/does-not-exist").await;
    assert_eq!(s, 404);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let (s, _) = get_json(&sim, &token, "Medication/x").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn search_filters_category_code_id_and_last_updated() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let vitals = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&category=vital-signs"),
    )
    .await;
    assert!(!vitals.is_empty());
    assert!(
        vitals
            .iter()
            .all(|o| o["category"][0]["coding"][0]["code"] == "vital-signs")
    );
    let bp = fetch_all(
        &sim,
        &token,
        &format!("Observation?subject=Patient/{pid}&code=http://loinc.org|85354-9"),
    )
    .await;
    for o in &bp {
        assert_eq!(o["component"][0]["code"]["coding"][0]["code"], "8480-6");
    }
    let some: Vec<String> = vitals
        .iter()
        .take(2)
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect();
    let by_id = fetch_all(&sim, &token, &format!("Observation?_id={}", some.join(","))).await;
    assert_eq!(by_id.len(), 2);
    let future = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&_lastUpdated=gt2030-01-01"),
    )
    .await;
    assert!(future.is_empty());
    let past = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&_lastUpdated=ge2000-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(past.len(), sim.expected_count_of_type(&pid, "Observation"));
    let (s, _) = get_json(&sim, &token, "Observation?_lastUpdated=gtnot-a-date").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn evolve_creates_updates_and_deletes_visible_through_last_updated() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let before_count = sim.expected_resource_count(&pid);
    let before = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&_count=500"),
    )
    .await;
    let cutoff = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    sim.evolve(1);
    let mut changed = vec![];
    for t in TYPES {
        changed.extend(
            fetch_all(
                &sim,
                &token,
                &format!("{t}?patient={pid}&_lastUpdated=gt{cutoff}"),
            )
            .await,
        );
    }
    assert!(!changed.is_empty(), "changes visible via _lastUpdated");
    assert!(
        changed.iter().any(|r| r["meta"]["versionId"] != "1"),
        "an update has a new versionId"
    );
    assert!(
        changed.iter().any(|r| r["meta"]["versionId"] == "1"),
        "a creation"
    );
    assert_ne!(sim.expected_resource_count(&pid), before_count);
    let old_ids: HashSet<String> = before
        .iter()
        .map(|o| o["id"].as_str().unwrap_or("").to_string())
        .collect();
    let after = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&_count=500"),
    )
    .await;
    let after_ids: HashSet<String> = after
        .iter()
        .map(|o| o["id"].as_str().unwrap_or("").to_string())
        .collect();
    let mut saw_gone = false;
    for gone in old_ids.difference(&after_ids) {
        let (s, _) = get_json(&sim, &token, &format!("Observation/{gone}")).await;
        assert_eq!(s, 410);
        saw_gone = true;
    }
    let _ = saw_gone;
}

#[tokio::test]
async fn same_seed_gives_the_same_bytes() {
    let a = start(small("epic")).await;
    let b = start(small("epic")).await;
    let ta = system_token(&a, "system/*.read").await;
    let tb = system_token(&b, "system/*.read").await;
    assert_eq!(a.patient_ids(), b.patient_ids());
    let pid = a.patient_ids()[1].clone();
    let ra = get(
        &a,
        &ta,
        &format!("Observation?patient={pid}&category=laboratory&_count=1000"),
    )
    .await
    .text()
    .await
    .expect("a");
    let rb = get(
        &b,
        &tb,
        &format!("Observation?patient={pid}&category=laboratory&_count=1000"),
    )
    .await
    .text()
    .await
    .expect("b");
    assert_eq!(
        ra.replace(&a.base_url(), "BASE"),
        rb.replace(&b.base_url(), "BASE")
    );
    let other_seed = start(SimConfig {
        seed: 2,
        ..small("epic")
    })
    .await;
    assert_ne!(a.patient_ids(), other_seed.patient_ids());
}

#[tokio::test]
async fn the_same_people_exist_at_every_source_with_different_ids() {
    let epic = start(small("epic")).await;
    let cerner = start(small("cerner")).await;
    let te = system_token(&epic, "system/*.read").await;
    let tc = system_token(&cerner, "system/*.read").await;
    let (_, pe) = get_json(&epic, &te, &format!("Patient/{}", epic.patient_ids()[0])).await;
    let (_, pc) = get_json(
        &cerner,
        &tc,
        &format!("Patient/{}", cerner.patient_ids()[0]),
    )
    .await;
    assert_ne!(pe["id"], pc["id"]);
    assert_eq!(pe["birthDate"], pc["birthDate"]);
    assert_ne!(pe["identifier"][0]["system"], pc["identifier"][0]["system"]);
}

#[tokio::test]
async fn include_and_revinclude() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let (_, b) = get_json(&sim, &token, &format!("MedicationRequest?patient={pid}&_include=MedicationRequest:patient&_include=MedicationRequest:requester")).await;
    let entries = b["entry"].as_array().expect("entries");
    let included: Vec<&Value> = entries
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert!(
        included
            .iter()
            .any(|e| e["resource"]["resourceType"] == "Patient")
    );
    assert!(
        included
            .iter()
            .any(|e| e["resource"]["resourceType"] == "Practitioner")
    );
    let (_, b) = get_json(
        &sim,
        &token,
        &format!("Patient?_id={pid}&_revinclude=Condition:patient"),
    )
    .await;
    let entries = b["entry"].as_array().expect("entries");
    let conds = entries
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Condition")
        .count();
    assert_eq!(conds, sim.expected_count_of_type(&pid, "Condition"));
}

#[tokio::test]
async fn batch_of_gets() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{pid}")}},
        {"request": {"method": "GET", "url": format!("Condition?patient={pid}")}},
        {"request": {"method": "GET", "url": "Patient/nope"}}
    ]});
    let r = http()
        .post(sim.base_url())
        .bearer_auth(&token)
        .json(&bundle)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["type"], "batch-response");
    assert_eq!(b["entry"][0]["response"]["status"], "200");
    assert_eq!(b["entry"][1]["resource"]["type"], "searchset");
    assert_eq!(b["entry"][2]["response"]["status"], "404");
    assert!(
        b["entry"][0]["fullUrl"]
            .as_str()
            .expect("fullUrl")
            .starts_with("urn:uuid:")
    );
}

#[tokio::test]
async fn document_reference_attachments_resolve_to_binary() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let docs = fetch_all(&sim, &token, &format!("DocumentReference?patient={pid}")).await;
    assert!(!docs.is_empty());
    for d in docs.iter().take(3) {
        let att = &d["content"][0]["attachment"];
        let url = att["url"].as_str().expect("url");
        assert!(url.starts_with(&sim.base_url()), "absolute Binary URL");
        let r = get(&sim, &token, url).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().expect("ct"),
            att["contentType"].as_str().expect("ct")
        );
    }
}

#[tokio::test]
async fn patient_scopes_limit_to_the_compartment_and_types() {
    let sim = start(small("reference")).await;
    let tok = patient_login(
        &sim,
        "openid fhirUser launch/patient patient/Observation.rs",
    )
    .await;
    let token = tok["access_token"].as_str().expect("at");
    let me = tok["patient"].as_str().expect("patient");
    assert_eq!(me, sim.patient_ids()[0]);
    let mine = fetch_all(&sim, token, "Observation").await;
    assert_eq!(mine.len(), sim.expected_count_of_type(me, "Observation"));
    let other = &sim.patient_ids()[1];
    let (s, _) = get_json(&sim, token, &format!("Observation?patient={other}")).await;
    assert_eq!(s, 403);
    let (s, _) = get_json(&sim, token, &format!("Condition?patient={me}")).await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn a_thousand_patients_start_fast() {
    let t = std::time::Instant::now();
    let sim = start(SimConfig {
        patients: 1000,
        ..SimConfig::default()
    })
    .await;
    assert_eq!(sim.patient_ids().len(), 1000);
    assert!(t.elapsed().as_secs_f64() < 2.0, "{:?}", t.elapsed());
}

#[tokio::test]
async fn large_patients_have_long_histories() {
    let sim = start(SimConfig {
        patients: 1,
        resources_per_patient: 10,
        large_patients: vec![3000],
        ..SimConfig::default()
    })
    .await;
    let big = sim.patient_ids()[1].clone();
    let n = sim.expected_resource_count(&big);
    assert!((2900..3100).contains(&n), "{n}");
}

#[tokio::test]
async fn patient_tokens_cannot_read_another_patients_binary_or_search_identifiers_elsewhere() {
    let sim = start(small("reference")).await;
    let system = system_token(&sim, "system/*.read").await;
    let other = sim.patient_ids()[1].clone();
    let docs = fetch_all(&sim, &system, &format!("DocumentReference?patient={other}")).await;
    let url = docs[0]["content"][0]["attachment"]["url"]
        .as_str()
        .expect("url")
        .to_string();
    let t = patient_login(&sim, "launch/patient patient/*.read").await;
    let r = get(&sim, t["access_token"].as_str().expect("at"), &url).await;
    assert_eq!(r.status(), 403);

    let (_, p) = get_json(&sim, &system, &format!("Patient/{other}")).await;
    let system_uri = p["identifier"][0]["system"].as_str().expect("system");
    let value = p["identifier"][0]["value"].as_str().expect("value");
    let found = fetch_all(
        &sim,
        &system,
        &format!("Patient?identifier={system_uri}|{value}"),
    )
    .await;
    assert_eq!(ids(&found), vec![format!("Patient/{other}")]);
}

#[tokio::test]
async fn unknown_personality_and_bad_faults_are_errors() {
    let err = aqueduct_sim::Simulator::start(SimConfig {
        personality: "meditech-unknown".into(),
        ..SimConfig::default()
    })
    .await;
    assert!(matches!(
        err,
        Err(aqueduct_sim::SimError::UnknownPersonality(_))
    ));
    assert!("timeout:nan".parse::<aqueduct_sim::Fault>().is_err());
    assert!(
        "server-error-500@1.5"
            .parse::<aqueduct_sim::Fault>()
            .is_err()
    );
}

#[tokio::test]
async fn summary_count_returns_only_the_total() {
    let sim = start(small("cerner")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let (s, b) = get_json(
        &sim,
        &token,
        &format!("Condition?patient={pid}&_summary=count"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        b["total"].as_u64().expect("total") as usize,
        sim.expected_count_of_type(&pid, "Condition")
    );
    assert!(b["entry"].as_array().is_none_or(|e| e.is_empty()));
}
