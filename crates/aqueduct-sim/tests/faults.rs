//! Every injected fault, observed over real HTTP.

mod common;

use std::collections::HashSet;

use aqueduct_sim::{Fault, SimConfig, SimServer};
use common::*;
use serde_json::Value;

async fn with_fault(fault: &str) -> (SimServer, String, String) {
    let sim = start(SimConfig {
        patients: 2,
        resources_per_patient: 80,
        ..SimConfig::default()
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    sim.set_faults(vec![fault.parse::<Fault>().expect("fault")]);
    let pid = sim.patient_ids()[0].clone();
    (sim, token, pid)
}

#[tokio::test]
async fn rate_limit_429_with_retry_after() {
    let (sim, token, _) = with_fault("rate-limit-429").await;
    let r = get(&sim, &token, "Patient").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(sim.stats().rate_limited, 1);
}

#[tokio::test]
async fn rate_limit_with_x_ratelimit_headers() {
    let (sim, token, _) = with_fault("rate-limit-headers").await;
    let r = get(&sim, &token, "Patient").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(r.headers().contains_key("x-ratelimit-reset"));
}

#[tokio::test]
async fn unavailable_503_and_server_error_500() {
    let (sim, token, _) = with_fault("unavailable-503").await;
    let r = get(&sim, &token, "Patient").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    sim.set_faults(vec!["server-error-500".parse().expect("f")]);
    let (s, oo) = get_json(&sim, &token, "Patient").await;
    assert_eq!(s, 500);
    assert_eq!(oo["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn fault_rates_are_deterministic_under_the_seed() {
    let mut runs = vec![];
    for _ in 0..2 {
        let (sim, token, _) = with_fault("server-error-500@0.3").await;
        let mut statuses = vec![];
        for _ in 0..40 {
            statuses.push(get(&sim, &token, "Patient").await.status().as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let errors = runs[0].iter().filter(|s| **s == 500).count();
    assert!((4..=24).contains(&errors), "{errors}");
}

#[tokio::test]
async fn drop_connection_gives_the_client_an_error() {
    let (sim, token, _) = with_fault("drop-connection").await;
    let result = async {
        let r = http()
            .get(format!("{}/Patient", sim.base_url()))
            .bearer_auth(&token)
            .send()
            .await?;
        r.bytes().await
    }
    .await;
    assert!(result.is_err(), "transport error expected");
}

#[tokio::test]
async fn timeout_delays_the_answer() {
    let (sim, token, _) = with_fault("timeout:3").await;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .expect("client");
    let r = client
        .get(format!("{}/Patient", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
}

#[tokio::test]
async fn truncated_body_and_invalid_json() {
    let (sim, token, _) = with_fault("truncated-body").await;
    let body = get(&sim, &token, "Patient")
        .await
        .text()
        .await
        .expect("body");
    assert!(body.starts_with("{\"resourceType\":\"Bundle\""));
    assert!(serde_json::from_str::<Value>(&body).is_err());
    sim.set_faults(vec!["invalid-json".parse().expect("f")]);
    let r = get(&sim, &token, "Patient").await;
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.expect("body")).is_err());
}

#[tokio::test]
async fn empty_bundle_for_a_type_that_has_data() {
    let (sim, token, pid) = with_fault("empty-bundle").await;
    assert!(sim.expected_count_of_type(&pid, "Observation") > 0);
    let (s, b) = get_json(&sim, &token, &format!("Observation?patient={pid}")).await;
    assert_eq!(s, 200);
    assert!(b["entry"].as_array().expect("entry").is_empty());
}

#[tokio::test]
async fn operation_outcome_inside_a_bundle() {
    let (sim, token, pid) = with_fault("outcome-in-bundle").await;
    let (_, b) = get_json(&sim, &token, &format!("Condition?patient={pid}")).await;
    let outcome = b["entry"]
        .as_array()
        .expect("e")
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("outcome entry");
    assert_eq!(outcome["resource"]["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn broken_and_looping_next_links() {
    let (sim, token, pid) = with_fault("broken-next-link").await;
    let (_, b) = get_json(&sim, &token, &format!("Observation?patient={pid}&_count=5")).await;
    let next = next_link(&b).expect("next");
    sim.set_faults(vec![]);
    let (s, _) = get_json(&sim, &token, &next).await;
    assert_eq!(s, 404);
    sim.set_faults(vec!["looping-next-link".parse().expect("f")]);
    let (_, b) = get_json(&sim, &token, &format!("Observation?patient={pid}&_count=5")).await;
    let self_link = b["link"][0]["url"].as_str().expect("self").to_string();
    assert_eq!(next_link(&b).expect("next"), self_link);
}

#[tokio::test]
async fn error_in_the_middle_of_paging() {
    let (sim, token, pid) = with_fault("error-mid-paging").await;
    let (s, b) = get_json(&sim, &token, &format!("Observation?patient={pid}&_count=5")).await;
    assert_eq!(s, 200, "first page works");
    let (s, _) = get_json(&sim, &token, &next_link(&b).expect("next")).await;
    assert_eq!(s, 500);
}

#[tokio::test]
async fn duplicate_entries_across_pages() {
    let (sim, token, pid) = with_fault("duplicate-entries").await;
    let all = fetch_all(&sim, &token, &format!("Observation?patient={pid}&_count=5")).await;
    let unique: HashSet<_> = ids(&all).into_iter().collect();
    assert!(unique.len() < all.len());
    assert_eq!(
        unique.len(),
        sim.expected_count_of_type(&pid, "Observation")
    );
}

#[tokio::test]
async fn resources_without_ids() {
    let (sim, token, pid) = with_fault("missing-ids").await;
    let (_, b) = get_json(&sim, &token, &format!("Condition?patient={pid}")).await;
    let e = &b["entry"][0];
    assert!(e["resource"].get("id").is_none());
    assert!(e.get("fullUrl").is_none());
}

#[tokio::test]
async fn token_expires_mid_sync() {
    let (sim, token, pid) = with_fault("token-expires-mid-sync:3").await;
    let mut statuses = vec![];
    for _ in 0..5 {
        statuses.push(
            get(&sim, &token, &format!("Condition?patient={pid}"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![200, 200, 200, 401, 401]);
}

#[tokio::test]
async fn lying_capability_statement() {
    let (sim, token, pid) = with_fault("lying-capability").await;
    let (_, cs) = get_json(&sim, &token, "metadata").await;
    let types: Vec<&str> = cs["rest"][0]["resource"]
        .as_array()
        .expect("r")
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert!(types.contains(&"Provenance"));
    let (s, _) = get_json(&sim, &token, &format!("Provenance?patient={pid}")).await;
    assert_eq!(s, 404);
    let (s, _) = get_json(
        &sim,
        &token,
        &format!("Observation?patient={pid}&value-quantity=gt5"),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn stale_data_hides_changes() {
    let (sim, token, pid) = with_fault("stale-data").await;
    let before = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&_count=500"),
    )
    .await;
    sim.evolve(1);
    let after = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&_count=500"),
    )
    .await;
    assert_eq!(ids(&before), ids(&after));
    assert!(after.iter().all(|o| o["meta"]["versionId"] == "1"));
    sim.set_faults(vec![]);
    let fresh = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&_count=500"),
    )
    .await;
    assert_ne!(ids(&before), ids(&fresh));
}

#[tokio::test]
async fn html_error_page_with_status_200() {
    let (sim, token, _) = with_fault("html-error-200").await;
    let r = get(&sim, &token, "Patient").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert!(r.text().await.expect("b").contains("<html>"));
}
