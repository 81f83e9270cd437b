//! Test harness: a real simulator on loopback, a real SQLite store in a temp dir, a token from
//! the simulator's token endpoint (client_credentials with its confidential client).

use std::sync::{Arc, Mutex};

use aqueduct_client::{
    AccessTokenSource, AuthError, FhirClient, LimiterRegistry, RetryPolicy, VendorProfile,
};
use aqueduct_sim::{Fault, SimConfig, SimServer, Simulator};
use aqueduct_store::{ConnectionRecord, ConnectionRef, Organization, Store};
use aqueduct_sync::{SyncOptions, Syncer};
use async_trait::async_trait;
use url::Url;

pub const CLIENT_ID: &str = "sim-confidential-app";
pub const CLIENT_SECRET: &str = "sim-confidential-secret";

pub struct Env {
    pub sim: SimServer,
    pub store: Arc<dyn Store>,
    pub conn: ConnectionRef,
    pub dir: tempfile::TempDir,
}

pub fn faults(list: &[&str]) -> Vec<Fault> {
    list.iter().map(|f| f.parse().unwrap()).collect()
}

pub async fn start(
    personality: &str,
    patients: usize,
    per_patient: usize,
    fault_list: &[&str],
) -> Env {
    let sim = Simulator::start(SimConfig {
        personality: personality.into(),
        patients,
        seed: 7,
        resources_per_patient: per_patient,
        faults: faults(fault_list),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = aqueduct_store::open(path.to_str().unwrap()).await.unwrap();
    let conn = ConnectionRef::new("acme", personality);
    store
        .upsert_organization(&Organization {
            name: "acme".into(),
            display_name: None,
        })
        .await
        .unwrap();
    store
        .upsert_connection(&ConnectionRecord {
            organization: "acme".into(),
            name: personality.into(),
            base_url: sim.base_url(),
            profile: personality.into(),
        })
        .await
        .unwrap();
    Env {
        sim,
        store,
        conn,
        dir,
    }
}

/// Fetches a system-level token with client_credentials (endpoint discovered from
/// `.well-known/smart-configuration`).
pub async fn fetch_token(base: &str) -> Result<String, String> {
    let http = reqwest::Client::new();
    let conf: serde_json::Value = http
        .get(format!("{base}/.well-known/smart-configuration"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let token_url = conf["token_endpoint"]
        .as_str()
        .ok_or("no token_endpoint")?
        .to_string();
    let resp: serde_json::Value = http
        .post(token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    resp["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no access_token: {resp}"))
}

/// A token source that gets a fresh client_credentials token on 401, counting refreshes.
pub struct CountingGrant {
    inner: aqueduct_client::ClientSecretGrant,
    pub refreshes: Mutex<u32>,
}

impl CountingGrant {
    pub fn new(base: &str) -> Self {
        let token_url = base.replace("/fhir/r4", "") + "/oauth2/token";
        Self {
            inner: aqueduct_client::ClientSecretGrant::new(
                token_url,
                CLIENT_ID,
                CLIENT_SECRET,
                "system/*.read",
            ),
            refreshes: Mutex::new(0),
        }
    }
}

#[async_trait]
impl AccessTokenSource for CountingGrant {
    async fn token(&self) -> Result<Option<String>, AuthError> {
        self.inner.token().await
    }
    async fn on_unauthorized(&self, rejected: &str) -> Result<Option<String>, AuthError> {
        *self.refreshes.lock().unwrap() += 1;
        self.inner.on_unauthorized(rejected).await
    }
}

/// The types the simulator's clinical personalities serve.
pub fn clinical_types() -> Vec<String> {
    [
        "Patient",
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: std::time::Duration::from_millis(20),
        max_delay: std::time::Duration::from_millis(300),
    }
}

pub fn client(env: &Env, profile: &VendorProfile, auth: Arc<dyn AccessTokenSource>) -> FhirClient {
    FhirClient::builder(Url::parse(&env.sim.base_url()).unwrap(), profile)
        .auth(auth)
        .limiter_registry(Arc::new(LimiterRegistry::new()))
        .retry(fast_retry())
        .build()
        .unwrap()
}

pub fn syncer(
    env: &Env,
    profile: &VendorProfile,
    auth: Arc<dyn AccessTokenSource>,
    options: SyncOptions,
) -> Syncer {
    Syncer::new(
        env.store.clone(),
        client(env, profile, auth),
        env.conn.clone(),
        profile.clone(),
        options,
    )
}

pub fn options(types: Vec<String>) -> SyncOptions {
    SyncOptions {
        resource_types: types,
        ..Default::default()
    }
}

/// Live resources stored for a patient over the given types.
pub async fn stored_for_patient(env: &Env, pid: &str, types: &[String]) -> usize {
    let mut n = 0;
    for t in types {
        n += env
            .store
            .patient_resource_ids(&env.conn, pid, t)
            .await
            .unwrap()
            .len();
    }
    n
}

/// Asserts the store holds exactly the simulator's record of every patient.
pub async fn assert_all_patients_match(env: &Env, types: &[String]) {
    for pid in env.sim.patient_ids() {
        let stored = stored_for_patient(env, &pid, types).await;
        let expected = env.sim.expected_resource_count(&pid);
        assert_eq!(
            stored, expected,
            "patient {pid}: stored {stored}, simulator holds {expected}"
        );
    }
}

/// A profile: a platform plus an institution override in TOML.
pub fn profile(platform: &str, override_toml: &str) -> VendorProfile {
    VendorProfile::resolve_with_toml(platform, override_toml).unwrap()
}
