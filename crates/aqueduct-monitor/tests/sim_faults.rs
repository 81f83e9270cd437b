//! End to end: the simulator's silent-failure faults, synced by the real sync engine, must each
//! produce the right finding — and clean runs none.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;

use aqueduct_client::{ClientSecretGrant, FhirClient, VendorProfile};
use aqueduct_monitor::{MonitorConfig, assess_run};
use aqueduct_sim::{Fault, SimConfig, SimServer, Simulator};
use aqueduct_store::{ConnectionRef, Store};
use aqueduct_sync::{SyncMode, SyncOptions, Syncer};

struct Env {
    sim: SimServer,
    store: Arc<dyn Store>,
    conn: ConnectionRef,
    syncer: Syncer,
    _dir: tempfile::TempDir,
}

const TYPES: &[&str] = &[
    "Patient",
    "Condition",
    "Observation",
    "Encounter",
    "MedicationRequest",
    "CarePlan",
];

async fn env(personality: &str, profile: &str) -> Env {
    env_with(personality, profile, TYPES).await
}

async fn env_with(personality: &str, profile: &str, types: &[&str]) -> Env {
    let sim = Simulator::start(SimConfig {
        personality: personality.into(),
        patients: 3,
        resources_per_patient: 60,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = aqueduct_store::open(&dir.path().join("s.db").display().to_string())
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
    let profile = VendorProfile::resolve(profile, None).unwrap();
    let client =
        FhirClient::new(url::Url::parse(&base).unwrap(), &profile, Arc::new(auth)).unwrap();
    let conn = ConnectionRef::new("acme", "src");
    let options = SyncOptions {
        resource_types: types.iter().map(|t| t.to_string()).collect(),
        // This client's grant does not cover Practitioner/Location: keep references out of it.
        reference_depth: 0,
        fetch_binaries: false,
        page_retries: 0,
        ..SyncOptions::default()
    };
    let syncer = Syncer::new(store.clone(), client, conn.clone(), profile, options);
    Env {
        sim,
        store,
        conn,
        syncer,
        _dir: dir,
    }
}

impl Env {
    async fn run(&self) -> Vec<String> {
        let ids = self.sim.patient_ids();
        let report = self
            .syncer
            .sync_patients(&ids, SyncMode::Full)
            .await
            .unwrap();
        let found = assess_run(
            self.store.as_ref(),
            &self.conn,
            report.run_id,
            &MonitorConfig::default(),
        )
        .await
        .unwrap();
        found
            .into_iter()
            .map(|f| format!("{} {}", f.kind, f.resource_type.unwrap_or_default()))
            .collect()
    }

    fn fault(&self, name: &str) {
        self.sim.set_faults(vec![name.parse::<Fault>().unwrap()]);
    }
}

#[tokio::test]
async fn clean_runs_raise_nothing() {
    let e = env("reference", "hapi").await;
    for _ in 0..4 {
        assert_eq!(e.run().await, Vec::<String>::new());
    }
}

#[tokio::test]
async fn an_empty_200_for_a_type_that_had_data_is_critical() {
    let e = env("reference", "hapi").await;
    assert!(e.run().await.is_empty());
    e.fault("empty-bundle");
    let f = e.run().await;
    // The sync itself recognises an empty page where data was before and marks the type
    // partial; the monitor adds that patients' records shrank. Either way it is not silent.
    assert!(
        f.iter()
            .any(|k| k.starts_with("type-dropped-to-zero Observation")
                || k.starts_with("partial-run Observation")),
        "{f:?}"
    );
    assert!(
        f.iter().any(|k| k.starts_with("patient-count-drop")),
        "{f:?}"
    );
}

#[tokio::test]
async fn an_operation_outcome_inside_a_200_bundle_is_reported() {
    let e = env("reference", "hapi").await;
    assert!(e.run().await.is_empty());
    e.fault("outcome-in-bundle");
    let f = e.run().await;
    assert!(f.iter().any(|k| k.starts_with("in-band-error")), "{f:?}");
}

#[tokio::test]
async fn truncated_pages_that_persist_are_reported() {
    let e = env("reference", "hapi").await;
    assert!(e.run().await.is_empty());
    e.fault("truncated-body");
    let f = e.run().await;
    assert!(
        f.iter().any(|k| k.starts_with("in-band-error")
            || k.starts_with("partial-run")
            || k.starts_with("run-failed")),
        "{f:?}"
    );
}

#[tokio::test]
async fn a_lying_capability_statement_makes_the_run_partial_and_says_why() {
    // The Oracle-like server lists CarePlan, then rejects its searches.
    let e = env("cerner", "cerner").await;
    let f = e.run().await;
    assert!(
        f.iter().any(|k| k.starts_with("partial-run CarePlan")),
        "{f:?}"
    );
}

#[tokio::test]
async fn narrowed_scopes_are_reported_not_silent() {
    // The athena-like server never grants DocumentReference and answers its searches with an
    // empty 200: the run must call that "scope not granted", not "no data".
    let e = env_with(
        "athena",
        "athena",
        &["Patient", "Condition", "DocumentReference"],
    )
    .await;
    let f = e.run().await;
    assert!(
        f.iter()
            .any(|k| k.starts_with("partial-run DocumentReference")),
        "{f:?}"
    );
}
