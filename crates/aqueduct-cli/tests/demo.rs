//! README command (1): `aqueduct demo` runs on a fresh directory with no external service,
//! exits 0, and tells the truth per source.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

fn demo(dir: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(["demo", "--patients", "4", "--json"])
        .current_dir(dir)
        .env_remove("AQUEDUCT_VAULT_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn source<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["connection"] == name)
        .unwrap()
}

#[test]
fn the_demo_syncs_every_source_honestly_and_repeats_without_false_alarms() {
    let dir = tempfile::tempdir().unwrap();
    // Ten consecutive syncs of the demo population: the clean sources never raise a finding.
    for round in 0..10 {
        let v = demo(dir.path());
        let epic = source(&v, "epic-main");
        // every source's Patients are in the organization's identity, each once
        let identity = &v["identity"];
        assert!(identity["records"].as_u64().unwrap() >= 4, "{identity}");
        assert!(
            identity["persons"].as_u64().unwrap() <= identity["records"].as_u64().unwrap(),
            "{identity}"
        );
        if round > 0 {
            assert_eq!(
                identity["matched"], 0,
                "round {round}: nothing new to compare: {identity}"
            );
        }
        assert_eq!(
            epic["report"]["outcome"], "complete",
            "round {round}: {epic}"
        );
        assert!(
            epic["report"]["by_type"]["Observation"]["fetched"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert!(
            epic["granted_scopes"].as_str().unwrap().contains("system/"),
            "authorized with SMART backend services"
        );
        let payer = source(&v, "payer-bluebird");
        assert_eq!(payer["report"]["outcome"], "complete");
        assert!(
            payer["report"]["by_type"]["ExplanationOfBenefit"]["fetched"]
                .as_u64()
                .unwrap()
                > 0
        );
        // The Oracle-like source claims CarePlan but rejects it: partial, and said so.
        let cerner = source(&v, "cerner-north");
        assert_eq!(cerner["report"]["outcome"], "partial");
        assert!(
            cerner["report"]["partial"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["resource_type"] == "CarePlan" && p["reason"] == "not-supported"),
            "{cerner}"
        );
        // Its only findings are the types it claims and rejects: attachments it serves
        // one by one (it refuses batch) are all fetched.
        assert!(
            cerner["findings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["kind"] == "partial-run" || f["kind"] == "type-not-supported"),
            "round {round}: {}",
            cerner["findings"]
        );
        for clean in [epic, payer] {
            assert_eq!(
                clean["findings"].as_array().unwrap().len(),
                0,
                "round {round}: no false alarm: {clean}"
            );
            if round == 0 {
                assert!(
                    clean["normalized"]["resolution"]["standard"]
                        .as_u64()
                        .unwrap()
                        > 0
                );
            } else {
                // Normalization after a sync re-derives only what changed: an identical
                // re-fetch re-derives no Observation.
                let obs = clean["normalized"]["types"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["resource_type"] == "Observation")
                    .unwrap()
                    .clone();
                assert!(obs["unchanged"].as_u64().unwrap() > 0, "{obs}");
                assert_eq!(obs["resources"], 0, "{obs}");
            }
        }
        if round > 0 {
            // The second run re-fetched the same data: nothing was rewritten.
            assert_eq!(
                payer["report"]["by_type"]["Observation"]["inserted"], 0,
                "{payer}"
            );
        }
    }
    let status = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(["status", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["organizations"][0]["organization"], "demo");
    assert_eq!(
        s["organizations"][0]["connections"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// README: `aqueduct demo --serve` leaves the API and the dashboard running on the demo store,
/// prints the URL and a key, and its engine can sync a demo source again when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_leaves_the_dashboard_running_and_its_sync_button_works() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = aqueduct_testkit::process::Killed(
        Command::new(env!("CARGO_BIN_EXE_aqueduct"))
            .args(["demo", "--patients", "2", "--serve", "--bind"])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir.path())
            .env_remove("AQUEDUCT_VAULT_KEY")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let (mut dashboard, mut key) = (None, None);
    while key.is_none() {
        let line = lines.next().expect("demo --serve exited").unwrap();
        if let Some(u) = line.trim().strip_prefix("dashboard") {
            dashboard = Some(u.trim().to_string());
        }
        if let Some(k) = line.trim().strip_prefix("sign in with the API key ") {
            key = Some(k.trim().to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let dashboard = dashboard.unwrap();
    let key = key.unwrap();
    assert_eq!(dashboard, format!("http://127.0.0.1:{port}/dashboard/"));
    let http = reqwest::Client::new();
    let login = http.get(format!("{dashboard}login")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let origin = format!("http://127.0.0.1:{port}");
    let raised: serde_json::Value = http
        .post(format!("{origin}/api/v1/connections/payer-bluebird/sync"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{origin}{}", raised["status_url"].as_str().unwrap());
    let started = std::time::Instant::now();
    let done = loop {
        let r: serde_json::Value = http
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["state"] == "done" {
            break r;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(done["outcome"], "complete", "{done}");
}
