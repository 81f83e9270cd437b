//! Bulk Data $export over real HTTP.

mod common;

use common::*;
use serde_json::Value;

async fn kick_off(sim: &aqueduct_sim::SimServer, token: &str, path: &str) -> String {
    let r = http()
        .get(format!("{}/{path}", sim.base_url()))
        .bearer_auth(token)
        .headers(vendor_headers(sim))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .await
        .expect("kick-off");
    assert_eq!(r.status(), 202);
    r.headers()["content-location"]
        .to_str()
        .expect("loc")
        .to_string()
}

async fn wait_manifest(sim: &aqueduct_sim::SimServer, token: &str, status_url: &str) -> Value {
    for _ in 0..10 {
        let r = get(sim, token, status_url).await;
        match r.status().as_u16() {
            202 => {
                assert!(r.headers().contains_key("retry-after"));
                assert!(r.headers().contains_key("x-progress"));
            }
            200 => return r.json().await.expect("manifest"),
            s => panic!("status {s}"),
        }
    }
    panic!("export never completed");
}

#[tokio::test]
async fn system_export_kick_off_poll_manifest_and_download() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let loc = kick_off(&sim, &token, "$export").await;
    let m = wait_manifest(&sim, &token, &loc).await;
    assert_eq!(m["requiresAccessToken"], true);
    assert!(m["error"].as_array().expect("error").is_empty());
    let outputs = m["output"].as_array().expect("output");
    let patients = outputs
        .iter()
        .find(|o| o["type"] == "Patient")
        .expect("Patient file");
    assert_eq!(patients["count"], 3);
    let url = patients["url"].as_str().expect("url");
    let unauth = http().get(url).send().await.expect("get");
    assert_eq!(unauth.status(), 401, "files need the token");
    let r = get(&sim, &token, url).await;
    assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
    let body = r.text().await.expect("ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(outputs.iter().any(|o| o["type"] == "Practitioner"));
}

#[tokio::test]
async fn export_type_since_group_and_cancel() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let loc = kick_off(
        &sim,
        &token,
        &format!("Group/{}/$export?_type=Condition,Patient", sim.group_id()),
    )
    .await;
    let m = wait_manifest(&sim, &token, &loc).await;
    let types: Vec<&str> = m["output"]
        .as_array()
        .expect("o")
        .iter()
        .filter_map(|o| o["type"].as_str())
        .collect();
    assert!(
        types.iter().all(|t| *t == "Condition" || *t == "Patient"),
        "{types:?}"
    );
    let total: u64 = m["output"]
        .as_array()
        .expect("o")
        .iter()
        .filter(|o| o["type"] == "Condition")
        .map(|o| o["count"].as_u64().unwrap_or(0))
        .sum();
    let expected: usize = sim
        .patient_ids()
        .iter()
        .map(|p| sim.expected_count_of_type(p, "Condition"))
        .sum();
    assert_eq!(total as usize, expected);

    let loc = kick_off(&sim, &token, "Patient/$export?_since=2099-01-01T00:00:00Z").await;
    let m = wait_manifest(&sim, &token, &loc).await;
    assert!(m["output"].as_array().expect("o").is_empty());

    let loc = kick_off(&sim, &token, "Patient/$export").await;
    let r = http()
        .delete(&loc)
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 202);
    let r = get(&sim, &token, &loc).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn export_needs_prefer_respond_async_and_system_scopes() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let r = get(&sim, &token, "$export").await;
    assert_eq!(r.status(), 400);
    let t = patient_login(&sim, "launch/patient patient/*.read").await;
    let r = http()
        .get(format!("{}/$export", sim.base_url()))
        .bearer_auth(t["access_token"].as_str().expect("at"))
        .header("Prefer", "respond-async")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let athena = start(small("athena")).await;
    let token = system_token(&athena, "system/*.read").await;
    let r = http()
        .get(format!("{}/$export", athena.base_url()))
        .bearer_auth(&token)
        .header("Prefer", "respond-async")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404, "athena-like: no bulk export");
}

#[tokio::test]
async fn manifest_reports_errors_under_the_outcome_fault() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let loc = kick_off(&sim, &token, "Patient/$export?_type=Patient").await;
    sim.set_faults(vec!["outcome-in-bundle".parse().expect("fault")]);
    let m = wait_manifest(&sim, &token, &loc).await;
    let err = &m["error"][0];
    assert_eq!(err["type"], "OperationOutcome");
    let body = get(&sim, &token, err["url"].as_str().expect("url"))
        .await
        .text()
        .await
        .expect("ndjson");
    let oo: Value = serde_json::from_str(body.trim()).expect("json");
    assert_eq!(oo["resourceType"], "OperationOutcome");
}
