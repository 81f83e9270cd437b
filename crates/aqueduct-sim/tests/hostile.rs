//! Hostile-server faults (issue 13), each observed over real HTTP.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aqueduct_sim::{Fault, SimConfig, SimServer};
use common::*;
use serde_json::Value;

async fn with_fault(personality: &str, fault: &str) -> (SimServer, String, String) {
    let sim = start(SimConfig {
        patients: 2,
        resources_per_patient: 80,
        ..small(personality)
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    sim.set_faults(vec![fault.parse::<Fault>().expect("fault")]);
    let pid = sim.patient_ids()[0].clone();
    (sim, token, pid)
}

fn match_ids(b: &Value) -> Vec<String> {
    b["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn redirect_to_another_origin_records_what_leaked() {
    let (sim, token, pid) = with_fault("reference", "redirect-cross-origin").await;
    let r = get(&sim, &token, &format!("Observation?patient={pid}")).await;
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().expect("loc").to_string();
    assert!(location.starts_with(&sim.foreign_origin()), "{location}");
    assert!(!location.starts_with(&origin(&sim)));
    // A client that follows the redirect with its credentials:
    let r = http()
        .get(&location)
        .bearer_auth(&token)
        .header("x-api-key", "secret-key-1")
        .send()
        .await
        .expect("follow");
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["entry"][0]["resource"]["id"], "forged-1");
    assert_eq!(
        b["entry"][0]["resource"]["subject"]["reference"],
        format!("Patient/{pid}")
    );
    let seen = sim.side_requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].host, "foreign");
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {token}"));
    assert_eq!(seen[0].headers["x-api-key"], "secret-key-1");
    assert!(seen[0].query.contains("patient="));
    // Reads are not redirected; the admin view shows the same request.
    assert_eq!(
        get(&sim, &token, &format!("Patient/{pid}")).await.status(),
        200
    );
    let v: Value = http()
        .get(format!("{}/admin/side-requests?host=foreign", origin(&sim)))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(v["requests"][0]["headers"]["x-api-key"], "secret-key-1");
    let r = http()
        .delete(format!("{}/admin/side-requests", origin(&sim)))
        .send()
        .await
        .expect("clear");
    assert_eq!(r.status(), 204);
    assert!(sim.side_requests().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn huge_body_is_streamed_not_buffered() {
    let (sim, token, pid) = with_fault("reference", "huge-body").await;
    let started = Instant::now();
    let mut r = get(&sim, &token, &format!("Observation?patient={pid}")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.content_length().is_none(),
        "a streamed body has no length"
    );
    let mut read = 0usize;
    let mut head = Vec::new();
    while read < 4 << 20 {
        let c = r.chunk().await.expect("chunk").expect("more");
        if head.len() < 64 {
            head.extend_from_slice(&c[..c.len().min(64)]);
        }
        read += c.len();
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(head.starts_with(b"{\"resourceType\":\"Bundle\""));
    drop(r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = sim.stats().bytes_streamed;
    assert!(sent >= 4 << 20, "{sent}");
    assert!(sent < 128 << 20, "the server generates as it sends: {sent}");
    sim.shutdown().await;
}

#[tokio::test]
async fn huge_body_with_a_size_is_a_valid_bundle_of_that_size() {
    let (sim, token, pid) = with_fault("reference", "huge-body:3").await;
    let r = get(&sim, &token, &format!("Condition?patient={pid}")).await;
    let bytes = r.bytes().await.expect("body");
    assert!(
        bytes.len() >= 3 << 20 && bytes.len() < 5 << 20,
        "{}",
        bytes.len()
    );
    let b: Value = serde_json::from_slice(&bytes).expect("valid JSON");
    assert_eq!(b["type"], "searchset");
    assert!(b["entry"].as_array().expect("entries").len() > 1000);
    // Reads are not affected.
    let (s, _) = get_json(&sim, &token, &format!("Patient/{pid}")).await;
    assert_eq!(s, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn huge_binary_streams_the_requested_size() {
    let (sim, token, pid) = with_fault("reference", "huge-binary:2").await;
    sim.set_faults(vec![]);
    let docs = fetch_all(&sim, &token, &format!("DocumentReference?patient={pid}")).await;
    let url = docs[0]["content"][0]["attachment"]["url"]
        .as_str()
        .expect("url")
        .to_string();
    sim.set_faults(vec!["huge-binary:2".parse().expect("f")]);
    let r = get(&sim, &token, &url).await;
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.expect("body");
    assert_eq!(bytes.len(), 2 << 20);
    // Searches are not affected.
    let (s, _) = get_json(&sim, &token, &format!("Condition?patient={pid}")).await;
    assert_eq!(s, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn huge_binary_on_the_document_host() {
    let (sim, token, pid) = with_fault("hospital", "huge-binary:1").await;
    sim.set_faults(vec![]);
    let docs = fetch_all(&sim, &token, &format!("DocumentReference?patient={pid}")).await;
    let url = docs[0]["content"][0]["attachment"]["url"]
        .as_str()
        .expect("url")
        .to_string();
    sim.set_faults(vec!["huge-binary:1".parse().expect("f")]);
    let r = http().get(&url).send().await.expect("doc");
    assert_eq!(r.bytes().await.expect("body").len(), 1 << 20);
    sim.shutdown().await;
}

#[tokio::test]
async fn endless_empty_pages_with_fresh_cursors_end_at_the_bound() {
    let (sim, token, pid) = with_fault("epic", "endless-empty-pages").await;
    let mut url = format!("Observation?patient={pid}&category=laboratory");
    let mut seen = BTreeSet::new();
    for _ in 0..50 {
        let (s, b) = get_json(&sim, &token, &url).await;
        assert_eq!(s, 200);
        assert!(b["entry"].as_array().expect("entries").is_empty());
        url = next_link(&b).expect("always a next link");
        assert!(seen.insert(url.clone()), "every cursor is new");
    }
    let (_, last) = get_json(&sim, &token, "Observation?_endless=99999").await;
    assert!(next_link(&last).is_none(), "bounded server-side");
    let (s, _) = get_json(&sim, &token, "Observation?_endless=18446744073709551615").await;
    assert_eq!(s, 200, "a hostile cursor value is not a crash");
    sim.shutdown().await;
}

#[tokio::test]
async fn cursor_repeat_changes_the_cursor_but_not_the_entries() {
    for personality in ["reference", "epic"] {
        let (sim, token, pid) = with_fault(personality, "cursor-repeat").await;
        let mut url = format!("Observation?patient={pid}&category=laboratory&_count=5");
        let mut pages = vec![];
        let mut links = BTreeSet::new();
        for _ in 0..5 {
            let (s, b) = get_json(&sim, &token, &url).await;
            assert_eq!(s, 200, "{personality}: {b}");
            pages.push(match_ids(&b));
            url = next_link(&b).expect("next");
            assert!(links.insert(url.clone()));
        }
        assert_eq!(pages[0].len(), 5);
        assert!(
            pages.iter().all(|p| p == &pages[0]),
            "{personality}: {pages:?}"
        );
        let far =
            format!("Observation?patient={pid}&category=laboratory&_repeat=18446744073709551615");
        let (s, last) = get_json(&sim, &token, &far).await;
        assert_eq!(s, 200);
        assert!(next_link(&last).is_none(), "bounded server-side");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn stalled_page_sends_headers_then_trickles() {
    let (sim, token, pid) = with_fault("reference", "stall-page:3").await;
    let started = Instant::now();
    let mut r = get(&sim, &token, &format!("Observation?patient={pid}")).await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "headers arrive at once"
    );
    let waited = tokio::time::timeout(Duration::from_secs(1), r.chunk()).await;
    assert!(waited.is_err(), "the body stalls");
    let first = r.chunk().await.expect("chunk").expect("a byte");
    assert_eq!(first.len(), 1);
    assert_eq!(&first[..], b"{");
    drop(r);
    // Reads are not stalled.
    let (s, _) = get_json(&sim, &token, &format!("Patient/{pid}")).await;
    assert_eq!(s, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn stalled_headers_never_answer() {
    let (sim, token, pid) = with_fault("reference", "stall-headers:30").await;
    let r = http()
        .get(format!("{}/Observation?patient={pid}", sim.base_url()))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    sim.set_faults(vec![]);
    drop(sim);
}

#[tokio::test]
async fn error_outcome_in_bundle_truncates_the_results() {
    let (sim, token, pid) = with_fault("reference", "error-outcome-in-bundle").await;
    let (s, b) = get_json(&sim, &token, &format!("Observation?patient={pid}")).await;
    assert_eq!(s, 200);
    assert_eq!(match_ids(&b).len(), 1);
    assert!(sim.expected_count_of_type(&pid, "Observation") > 1);
    assert!(next_link(&b).is_none());
    let outcomes: Vec<&Value> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "outcome")
        .collect();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0]["resource"]["issue"][0]["severity"], "error");
    assert_eq!(
        outcomes[0]["resource"]["issue"][0]["diagnostics"],
        "results truncated"
    );
    sim.shutdown().await;
}

#[test]
fn new_fault_names_parse_with_parameters() {
    for (s, shown) in [
        ("huge-body", "huge-body:1024"),
        ("huge-body:8", "huge-body:8"),
        ("huge-binary:16@0.5", "huge-binary:16@0.5"),
        ("stall-page:2", "stall-page:2"),
        ("stall-headers", "stall-headers:600"),
        ("redirect-cross-origin", "redirect-cross-origin"),
        ("endless-empty-pages", "endless-empty-pages"),
        ("cursor-repeat", "cursor-repeat"),
        ("error-outcome-in-bundle", "error-outcome-in-bundle"),
        ("metadata-500", "metadata-500"),
        ("metadata-404", "metadata-404"),
    ] {
        let f: Fault = s.parse().expect(s);
        assert_eq!(f.to_string(), shown);
    }
}
