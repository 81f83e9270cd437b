//! Memory stays bounded whatever a server sends: 8 requests in flight against a server that
//! answers every search with a 512 MB body. Its own test binary (one process, one test), so
//! the peak resident size it reads from /proc is this test's alone.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aqueduct_client::{
    FetchErrorKind, FhirClient, FhirRequest, LimiterRegistry, StaticBearer, VendorProfile,
};
use aqueduct_sim::{Fault, SimConfig, Simulator};
use url::Url;

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_huge_answers_in_flight_stay_under_200_mb() {
    let sim = Simulator::start(SimConfig {
        personality: "reference".into(),
        patients: 8,
        resources_per_patient: 10,
        faults: vec!["huge-body:512".parse::<Fault>().unwrap()],
        ..Default::default()
    })
    .await
    .unwrap();
    // the default caps (64 MiB per response)
    let profile = VendorProfile::resolve("generic", None).unwrap();
    let token: serde_json::Value = reqwest::Client::new()
        .post(sim.base_url().replace("/fhir/r4", "") + "/oauth2/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-confidential-app"),
            ("client_secret", "sim-confidential-secret"),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = StaticBearer::new(token["access_token"].as_str().unwrap().to_string());
    let client = FhirClient::builder(Url::parse(&sim.base_url()).unwrap(), &profile)
        .auth(Arc::new(bearer))
        .limiter_registry(Arc::new(LimiterRegistry::new()))
        .build()
        .unwrap();
    let before = peak_rss_mib();
    let tasks: Vec<_> = sim
        .patient_ids()
        .into_iter()
        .map(|pid| {
            let client = client.clone();
            tokio::spawn(async move {
                let url = client
                    .url("Observation", &[("patient", pid.as_str())])
                    .unwrap();
                client.get(FhirRequest::new(url)).await
            })
        })
        .collect();
    let mut too_large = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(e) if e.kind == FetchErrorKind::TooLarge => too_large += 1,
            other => panic!("expected a too-large refusal, got {other:?}"),
        }
    }
    assert_eq!(too_large, 8);
    let peak = peak_rss_mib().unwrap_or(0);
    eprintln!("peak RSS with 8 huge answers in flight: {peak} MiB");
    assert!(
        peak < 200,
        "peak RSS {peak} MiB (before the requests: {before:?} MiB)"
    );
    // and the server was cut off: far less than 8 × 512 MB went over the wire
    let streamed = sim.stats().bytes_streamed;
    assert!(
        streamed < 8 * 128 * 1024 * 1024,
        "{streamed} bytes streamed"
    );
}
