//! A simulator with a Bulk-test personality, a real SQLite file, and the exporter wired the
//! way the CLI wires it.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aqueduct_bulk::{BulkExporter, BulkOptions, Level};
use aqueduct_client::{
    AccessTokenSource, ClientSecretGrant, FhirClient, LimiterRegistry, RetryPolicy, VendorProfile,
};
use aqueduct_sim::{Fault, SimConfig, SimServer, Simulator};
use aqueduct_store::{ConnectionRecord, ConnectionRef, Organization, Store};
use sha2::{Digest, Sha256};

const REFERENCE: &str = include_str!("../../../aqueduct-sim/personalities/reference.toml");

/// The reference personality with Bulk settings for tests: jobs ready after 2 polls,
/// `Retry-After: 0`, files of at most 40 resources, plus `extra` top-level keys.
pub fn personality(extra: &str) -> String {
    let mut out = String::new();
    for line in REFERENCE.lines() {
        let key = line.split(" =").next().unwrap_or("");
        let overridden =
            !key.is_empty() && extra.lines().any(|l| l.starts_with(&format!("{key} =")));
        if key == "bulk_file_max_resources" {
            if !overridden {
                out.push_str("bulk_file_max_resources = 40\n");
            }
            out.push_str(extra);
            out.push('\n');
            continue;
        }
        if overridden {
            continue;
        }
        let line = match key {
            "name" => "name = \"bulk-test\"".to_string(),
            "bulk_polls_before_ready" => "bulk_polls_before_ready = 2".into(),
            "bulk_retry_after_secs" => "bulk_retry_after_secs = 0".into(),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub struct Env {
    pub sim: SimServer,
    pub store: Arc<dyn Store>,
    pub conn: ConnectionRef,
    pub client: FhirClient,
    pub auth: Arc<dyn AccessTokenSource>,
    pub dir: tempfile::TempDir,
}

pub async fn env(extra: &str, faults: &[&str]) -> Env {
    env_with(extra, faults, 4, 40).await
}

pub async fn env_with(extra: &str, faults: &[&str], patients: usize, per_patient: usize) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ppath = dir.path().join("bulk-test.toml");
    std::fs::write(&ppath, personality(extra)).unwrap();
    let faults: Vec<Fault> = faults.iter().map(|f| f.parse().unwrap()).collect();
    let sim = Simulator::start(
        SimConfig {
            patients,
            seed: 7,
            resources_per_patient: per_patient,
            faults,
            ..Default::default()
        }
        .personality_file(&ppath)
        .unwrap(),
    )
    .await
    .unwrap();
    let store = aqueduct_store::open(dir.path().join("store.db").to_str().unwrap())
        .await
        .unwrap();
    let conn = ConnectionRef::new("org", "bulk");
    store
        .upsert_organization(&Organization {
            name: "org".into(),
            display_name: None,
        })
        .await
        .unwrap();
    store
        .upsert_connection(&ConnectionRecord {
            organization: "org".into(),
            name: "bulk".into(),
            base_url: sim.base_url(),
            profile: "generic".into(),
        })
        .await
        .unwrap();
    let (client, auth) = client_for(&sim.base_url()).await;
    Env {
        sim,
        store,
        conn,
        client,
        auth,
        dir,
    }
}

pub async fn client_for(base: &str) -> (FhirClient, Arc<dyn AccessTokenSource>) {
    let profile = VendorProfile::resolve_with_toml(
        "generic",
        "[rate_limit]\nrequests_per_sec = 0.0\nmax_concurrency = 8\n",
    )
    .unwrap();
    let auth: Arc<dyn AccessTokenSource> = Arc::new(
        ClientSecretGrant::discover(
            base,
            "sim-confidential-app",
            "sim-confidential-secret",
            "system/*.read",
        )
        .await
        .unwrap(),
    );
    let client = FhirClient::builder(url::Url::parse(base).unwrap(), &profile)
        .auth(auth.clone())
        .limiter_registry(Arc::new(LimiterRegistry::new()))
        .build()
        .unwrap();
    (client, auth)
}

pub fn options(level: Level) -> BulkOptions {
    BulkOptions {
        level,
        concurrency: 3,
        batch_lines: 25,
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        ..Default::default()
    }
}

impl Env {
    pub fn exporter(&self, options: BulkOptions) -> BulkExporter {
        BulkExporter::new(
            self.store.clone(),
            self.client.clone(),
            self.auth.clone(),
            self.conn.clone(),
            options,
        )
    }

    /// (type, id) → SHA-256 of the bytes the simulator serves, for every live resource of the
    /// exported (compartment) types.
    pub fn truth(&self) -> BTreeMap<(String, String), String> {
        let types: BTreeSet<&String> = self.sim.personality().types.keys().collect();
        let mut out = BTreeMap::new();
        for p in self.sim.population_truth()["patients"].as_array().unwrap() {
            for r in p["resources"].as_array().unwrap() {
                let t = r["resourceType"].as_str().unwrap().to_string();
                if !types.contains(&t) {
                    continue;
                }
                let id = r["id"].as_str().unwrap().to_string();
                out.insert((t, id), r["sha256"].as_str().unwrap().to_string());
            }
        }
        out
    }

    /// Every live resource in the store of the compartment types: (type, id) → SHA-256.
    pub async fn stored(&self) -> BTreeMap<(String, String), String> {
        let mut out = BTreeMap::new();
        for t in self.sim.personality().types.keys() {
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .list_resources(&self.conn, t, after.as_deref(), 500, false)
                    .await
                    .unwrap();
                if page.is_empty() {
                    break;
                }
                for r in &page {
                    out.insert(
                        (r.resource_type.clone(), r.logical_id.clone()),
                        hex::encode(Sha256::digest(&r.bytes)),
                    );
                }
                after = page.last().map(|r| r.logical_id.clone());
            }
        }
        out
    }

    /// Resources stored per type, live and flagged (from the store's own counts).
    pub async fn live(&self) -> u64 {
        self.store
            .count_by_type(&self.conn)
            .await
            .unwrap()
            .iter()
            .map(|c| c.live)
            .sum()
    }
}
