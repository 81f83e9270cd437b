//! Each vendor personality, observed over real HTTP.

mod common;

use std::collections::HashSet;

use aqueduct_sim::SimConfig;
use common::*;
use serde_json::Value;

#[tokio::test]
async fn epic_pages_with_opaque_cursors_and_requires_a_category() {
    let sim = start(SimConfig {
        resources_per_patient: 300,
        ..small("epic")
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();

    let r = http()
        .get(format!("{}/Patient/{pid}", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400, "Epic-Client-ID header required");

    let (s, oo) = get_json(&sim, &token, &format!("Observation?patient={pid}")).await;
    assert_eq!(s, 400);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let (s, _) = get_json(
        &sim,
        &token,
        &format!("Observation?patient={pid}&category=imaging"),
    )
    .await;
    assert_eq!(s, 400, "category outside the installation's list");
    let (s, _) = get_json(&sim, &token, &format!("CarePlan?patient={pid}")).await;
    assert_eq!(s, 400);

    let (s, first) = get_json(
        &sim,
        &token,
        &format!("Observation?patient={pid}&category=laboratory&_count=10"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(first.get("total").is_none(), "Epic-like: no total");
    let next = next_link(&first).expect("next");
    assert!(next.contains("_cursor="), "{next}");
    assert!(!next.contains("patient="), "cursor links are opaque");

    let mut all = vec![];
    for cat in ["vital-signs", "laboratory", "social-history"] {
        all.extend(
            fetch_all(
                &sim,
                &token,
                &format!("Observation?patient={pid}&category={cat}&_count=20"),
            )
            .await,
        );
    }
    let unique: HashSet<_> = ids(&all).into_iter().collect();
    assert_eq!(unique.len(), all.len());
    assert_eq!(all.len(), sim.expected_count_of_type(&pid, "Observation"));

    let (s, _) = get_json(&sim, &token, &format!("Patient/{pid}/$everything")).await;
    assert_eq!(s, 400, "no $everything");
    let (s, _) = get_json(&sim, &token, &format!("Condition?patient={pid}&bogus=1")).await;
    assert_eq!(s, 400, "unknown parameters rejected");
    let (s, b) = get_json(
        &sim,
        &token,
        &format!("Observation?patient={pid}&category=laboratory&_count=5000"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(b["entry"].as_array().expect("entries").len() <= sim.personality().max_page_size);
}

#[tokio::test]
async fn cerner_has_ten_minute_tokens_offset_paging_and_claims_it_cannot_keep() {
    let sim = start(small("cerner")).await;
    let t = patient_login(&sim, "launch/patient patient/*.read").await;
    assert_eq!(t["expires_in"], 600);
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let (_, cs) = get_json(&sim, &token, "metadata").await;
    let claimed: Vec<&str> = cs["rest"][0]["resource"]
        .as_array()
        .expect("res")
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert!(claimed.contains(&"CarePlan"));
    let (s, _) = get_json(&sim, &token, &format!("CarePlan?patient={pid}")).await;
    assert_eq!(s, 400, "claimed but unsupported");
    let (_, b) = get_json(&sim, &token, &format!("Observation?patient={pid}&_count=5")).await;
    let next = next_link(&b).expect("next");
    assert!(next.contains("_getpagesoffset=5"), "{next}");
    let all = fetch_all(
        &sim,
        &token,
        &format!("Observation?patient={pid}&_count=500"),
    )
    .await;
    assert_eq!(all.len(), sim.expected_count_of_type(&pid, "Observation"));
    assert!(!all.is_empty());
}

#[tokio::test]
async fn athena_hides_plans_without_intent_narrows_scopes_and_rate_limits() {
    let sim = start(small("athena")).await;
    let t = patient_login(&sim, "launch/patient patient/*.read").await;
    let scope = t["scope"].as_str().expect("scope");
    assert!(
        !scope.contains("patient/*.read"),
        "wildcard expanded: {scope}"
    );
    assert!(
        !scope.contains("DocumentReference"),
        "DocumentReference silently not granted"
    );
    let at = t["access_token"].as_str().expect("at");
    let me = t["patient"].as_str().expect("patient").to_string();
    let (s, b) = get_json(&sim, at, "DocumentReference").await;
    assert_eq!(s, 200, "silent: empty 200 instead of 403");
    assert!(b["entry"].as_array().is_none_or(|e| e.is_empty()));

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let default = fetch_all(
        &sim,
        at,
        &format!("MedicationRequest?patient={me}&_count=100"),
    )
    .await;
    let all = fetch_all(
        &sim,
        at,
        &format!("MedicationRequest?patient={me}&intent=order,plan&_count=100"),
    )
    .await;
    assert_eq!(
        all.len(),
        sim.expected_count_of_type(&me, "MedicationRequest")
    );
    assert!(default.iter().all(|m| m["intent"] == "order"));
    assert!(default.len() <= all.len());

    let ok = get(&sim, at, "Patient").await;
    assert!(
        ok.headers().contains_key("x-ratelimit-remaining"),
        "budget advertised on success"
    );
    let mut statuses = vec![];
    for _ in 0..25 {
        let r = get(&sim, at, "Patient").await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
            assert!(r.headers().contains_key("x-ratelimit-remaining"));
            break;
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(sim.stats().rate_limited >= 1);
}

#[tokio::test]
async fn payer_serves_claims_and_everything() {
    let sim = start(small("payer")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let eobs = fetch_all(&sim, &token, &format!("ExplanationOfBenefit?patient={pid}")).await;
    assert!(!eobs.is_empty());
    assert!(
        eobs[0]["insurance"][0]["coverage"]["reference"]
            .as_str()
            .expect("cov")
            .starts_with("Coverage/")
    );
    let cov = fetch_all(&sim, &token, &format!("Coverage?beneficiary=Patient/{pid}")).await;
    assert!(!cov.is_empty());
    let everything = fetch_all(&sim, &token, &format!("Patient/{pid}/$everything")).await;
    assert_eq!(everything.len(), sim.expected_resource_count(&pid));
    let (s, _) = get_json(&sim, &token, &format!("DocumentReference?patient={pid}")).await;
    assert_eq!(s, 404, "payer does not serve clinical notes");
}

#[tokio::test]
async fn reference_supports_everything_batch_and_totals() {
    let sim = start(small("reference")).await;
    let token = system_token(&sim, "system/*.read").await;
    let pid = sim.patient_ids()[0].clone();
    let (s, b) = get_json(&sim, &token, &format!("Condition?patient={pid}&_count=2")).await;
    assert_eq!(s, 200);
    assert_eq!(
        b["total"].as_u64().expect("total") as usize,
        sim.expected_count_of_type(&pid, "Condition")
    );
    let (_, cs) = get_json(&sim, &token, "metadata").await;
    assert_eq!(cs["rest"][0]["interaction"][0]["code"], "batch");
    let (s, _) = get_json(
        &sim,
        &token,
        &format!("Condition?patient={pid}&unknown-param=1"),
    )
    .await;
    assert_eq!(s, 200, "lenient: unknown parameters ignored");
}

#[tokio::test]
async fn personality_from_a_toml_file() {
    let dir = std::env::temp_dir().join(format!("aqueduct-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("custom.toml");
    let text = include_str!("../personalities/reference.toml")
        .replace("name = \"reference\"", "name = \"custom\"")
        .replace("max_page_size = 1000", "max_page_size = 3");
    std::fs::write(&path, text).expect("write");
    let sim = start(SimConfig::default().personality_file(&path).expect("load")).await;
    assert_eq!(sim.personality().name, "custom");
    let token = system_token(&sim, "system/*.read").await;
    let (_, b) = get_json(&sim, &token, "Observation?_count=50").await;
    assert_eq!(b["entry"].as_array().expect("e").len(), 3);
    let _: Value = b;
}
