//! doctor against simulated servers of different personalities, over real HTTP: what it
//! reports must match what each server really does, not what it claims.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;

use aqueduct_client::{ClientSecretGrant, VendorProfile};
use aqueduct_doctor::{DoctorReport, ProbeOptions, probe};
use aqueduct_sim::{SimConfig, Simulator};

async fn doctor(personality: &str, overrides: &str, types: &[&str]) -> DoctorReport {
    doctor_sized(personality, overrides, types, 150).await
}

async fn doctor_sized(
    personality: &str,
    overrides: &str,
    types: &[&str],
    size: usize,
) -> DoctorReport {
    let sim = Simulator::start(SimConfig {
        personality: personality.into(),
        patients: 2,
        resources_per_patient: size,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sim.base_url();
    let auth = ClientSecretGrant::discover(
        &base,
        "sim-confidential-app",
        "sim-confidential-secret",
        "system/*.read",
    )
    .await
    .unwrap();
    let profile = VendorProfile::resolve_with_toml("generic", overrides).unwrap();
    let report = probe(
        &url::Url::parse(&base).unwrap(),
        &profile,
        Arc::new(auth),
        ProbeOptions {
            types: types.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    )
    .await;
    sim.shutdown().await;
    report
}

#[tokio::test]
async fn a_reference_server_is_seen_to_support_everything() {
    let r = doctor("reference", "", &["Condition", "Observation", "Encounter"]).await;
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.everything, Some(true));
    assert_eq!(r.batch, Some(true));
    assert!(
        r.types.iter().all(|t| t.plain_search_works),
        "{:?}",
        r.types
    );
    assert!(
        r.smart
            .as_ref()
            .unwrap()
            .code_challenge_methods
            .contains(&"S256".to_string())
    );
    assert!(r.clock_skew_secs.unwrap().abs() < 5.0);
    assert_eq!(r.paging_style.as_deref(), Some("next-link"));
    assert!(r.claimed_but_failing.is_empty());
}

#[tokio::test]
async fn an_epic_like_server_needs_categories_and_has_no_everything() {
    let r = doctor(
        "epic",
        "[http.extra_headers]\n\"Epic-Client-ID\" = \"doctor\"\n[types.Observation]\nknown_categories = [\"laboratory\", \"vital-signs\", \"bogus\"]\n",
        &["Condition", "Observation"],
    )
    .await;
    let obs = r
        .types
        .iter()
        .find(|t| t.resource_type == "Observation")
        .unwrap();
    assert!(!obs.plain_search_works, "{obs:?}");
    assert_eq!(obs.plain_status, "400");
    assert_eq!(
        obs.working_categories,
        vec!["laboratory".to_string(), "vital-signs".to_string()]
    );
    assert_eq!(r.everything, Some(false));
    assert_eq!(r.paging_style.as_deref(), Some("opaque-cursor"));
    // The observed profile says so, in the profile's own keys, and the client accepts it.
    let observed = toml::to_string(&r.observed_profile()).unwrap();
    assert!(observed.contains("required_categories"), "{observed}");
    VendorProfile::resolve_with_toml("generic", &observed).unwrap();
    let text = r.render();
    assert!(
        text.contains("needs a category (laboratory, vital-signs)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_lying_capability_statement_is_caught() {
    let r = doctor_sized("cerner", "", &["Observation", "CarePlan", "Goal"], 800).await;
    assert!(
        r.claimed_but_failing.contains(&"CarePlan".to_string()),
        "{r:?}"
    );
    let observed = r.observed_profile();
    assert_eq!(
        observed["capabilities"]["trust_capability_statement"].as_bool(),
        Some(false)
    );
    assert_eq!(
        r.max_page_size,
        Some(200),
        "the cerner-like server caps pages at 200"
    );
}
