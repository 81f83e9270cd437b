//! Ground truth over real HTTP: `/admin/truth/patient/{id}` names every resource of a whole
//! record with the SHA-256 of the bytes the server serves, and those bytes are the same in a
//! read, a search page, `$everything` and a batch response.

mod common;

use std::collections::BTreeSet;

use aqueduct_sim::SimConfig;
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub async fn truth(sim: &aqueduct_sim::SimServer, pid: &str) -> Value {
    let r = http()
        .get(format!("{}/admin/truth/patient/{pid}", origin(sim)))
        .send()
        .await
        .expect("truth");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

async fn raw(sim: &aqueduct_sim::SimServer, token: &str, url: &str) -> (u16, Vec<u8>) {
    let r = get(sim, token, url).await;
    let s = r.status().as_u16();
    (s, r.bytes().await.expect("body").to_vec())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn truth_hashes_match_reads_searches_everything_and_batch() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let t = truth(&sim, &pid).await;
    assert_eq!(t["patient"], pid.as_str());
    let entries = t["resources"].as_array().expect("resources").clone();
    assert_eq!(t["count"].as_u64(), Some(entries.len() as u64));
    let binaries = entries
        .iter()
        .filter(|e| e["resourceType"] == "Binary")
        .count();
    let shared = entries
        .iter()
        .filter(|e| {
            matches!(
                e["resourceType"].as_str(),
                Some("Practitioner" | "Organization" | "Location" | "PractitionerRole")
            )
        })
        .count();
    assert!(binaries > 0 && shared > 0, "{binaries} {shared}");
    assert_eq!(
        entries.len(),
        sim.expected_resource_count(&pid) + binaries + shared
    );

    let (_, everything) = raw(
        &sim,
        &token,
        &format!("Patient/{pid}/$everything?_count=1000"),
    )
    .await;
    let (_, obs_page) = raw(
        &sim,
        &token,
        &format!("Observation?patient={pid}&_count=1000"),
    )
    .await;
    let mut batch_entries = vec![];
    for e in &entries {
        let (rt, id) = (
            e["resourceType"].as_str().expect("type"),
            e["id"].as_str().expect("id"),
        );
        let (status, bytes) = raw(&sim, &token, &format!("{rt}/{id}")).await;
        assert_eq!(status, 200, "{rt}/{id}");
        assert_eq!(sha(&bytes), e["sha256"].as_str().expect("sha"), "{rt}/{id}");
        if rt == "Binary" {
            let r = http()
                .get(format!("{}/Binary/{id}", sim.base_url()))
                .bearer_auth(&token)
                .header("accept", "application/fhir+json")
                .send()
                .await
                .expect("binary json");
            let b = r.bytes().await.expect("bytes");
            assert_eq!(sha(&b), e["json_sha256"].as_str().expect("json sha"));
            continue;
        }
        if !matches!(
            rt,
            "Practitioner" | "Organization" | "Location" | "PractitionerRole"
        ) {
            assert!(
                contains(&everything, &bytes),
                "$everything bytes of {rt}/{id}"
            );
        }
        if rt == "Observation" {
            assert!(contains(&obs_page, &bytes), "search bytes of {rt}/{id}");
        }
        if batch_entries.len() < 20 {
            batch_entries.push((format!("{rt}/{id}"), bytes));
        }
    }
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": batch_entries.iter().map(|(u, _)| json!({"request": {"method": "GET", "url": u}})).collect::<Vec<_>>()});
    let r = http()
        .post(sim.base_url())
        .bearer_auth(&token)
        .json(&bundle)
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("batch body");
    for (u, bytes) in &batch_entries {
        assert!(contains(&body, bytes), "batch bytes of {u}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn population_truth_lists_every_patient() {
    let sim = start(small("reference")).await;
    let r = http()
        .get(format!("{}/admin/truth", origin(&sim)))
        .send()
        .await
        .expect("truth");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let ids: Vec<String> = v["patient_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, sim.patient_ids());
    let patients = v["patients"].as_array().expect("patients");
    assert_eq!(patients.len(), ids.len());
    let mut distinct = BTreeSet::new();
    for (p, id) in patients.iter().zip(&ids) {
        assert_eq!(p["patient"], id.as_str());
        assert_eq!(p, &truth(&sim, id).await);
        for e in p["resources"].as_array().expect("resources") {
            distinct.insert(format!("{}/{}", e["resourceType"], e["id"]));
        }
    }
    assert_eq!(
        v["distinct_resources"].as_u64(),
        Some(distinct.len() as u64)
    );
    assert_eq!(v, sim.population_truth());
    let unknown = http()
        .get(format!("{}/admin/truth/patient/nobody", origin(&sim)))
        .send()
        .await
        .expect("truth");
    assert_eq!(unknown.status(), 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn truth_reflects_deletions_and_updates() {
    let sim = start(SimConfig {
        patients: 1,
        resources_per_patient: 60,
        ..SimConfig::default()
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let before = truth(&sim, &pid).await;
    sim.evolve(1);
    let after = truth(&sim, &pid).await;
    assert_ne!(before["resources"], after["resources"]);
    for e in after["resources"].as_array().expect("resources") {
        let url = format!(
            "{}/{}",
            e["resourceType"].as_str().expect("t"),
            e["id"].as_str().expect("id")
        );
        let (status, bytes) = raw(&sim, &token, &url).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(sha(&bytes), e["sha256"].as_str().expect("sha"));
    }
    sim.shutdown().await;
}
