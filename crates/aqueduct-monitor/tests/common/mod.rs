//! A realistic sync history built through the real store: resources, runs, ledgers.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use aqueduct_store::{
    ConnectionRecord, ConnectionRef, LedgerEntry, ParseStatus, RawResource, RunId, RunOutcome,
    Store,
};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

pub const BASE: &str = "https://fhir.hospital.example/r4";

/// Resources per patient per type in a normal sync.
pub const TYPES: &[(&str, u64)] = &[
    ("Patient", 1),
    ("Observation", 40),
    ("Condition", 6),
    ("MedicationRequest", 5),
    ("Encounter", 8),
];

pub struct Sim {
    pub store: Arc<dyn Store>,
    pub conn: ConnectionRef,
    pub dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

fn pg_url() -> String {
    std::env::var("AQUEDUCT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.pg.take() {
            // best effort: a leftover schema is harmless
            let _ = std::process::Command::new("psql")
                .args([
                    &url,
                    "-q",
                    "-c",
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ])
                .output();
        }
    }
}

pub fn patient_id(p: usize) -> String {
    format!("pat-{p:04}")
}

pub fn resource(
    rtype: &str,
    id: &str,
    patient: &str,
    last_updated: DateTime<Utc>,
) -> serde_json::Value {
    let lu = last_updated.to_rfc3339();
    let subject = json!({"reference": format!("Patient/{patient}")});
    match rtype {
        "Observation" => json!({"resourceType":"Observation","id":id,"meta":{"lastUpdated":lu},
            "status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],
            "code":{"coding":[{"system":"http://loinc.org","code":"2345-7","display":"Glucose"}]},
            "subject":subject,"effectiveDateTime":lu,
            "valueQuantity":{"value":98,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}),
        "Condition" => json!({"resourceType":"Condition","id":id,"meta":{"lastUpdated":lu},
            "clinicalStatus":{"coding":[{"code":"active"}]},
            "code":{"coding":[{"system":"http://snomed.info/sct","code":"44054006"}]},"subject":subject}),
        "MedicationRequest" => {
            json!({"resourceType":"MedicationRequest","id":id,"meta":{"lastUpdated":lu},
            "status":"active","intent":"order",
            "medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"860975"}]},
            "subject":subject})
        }
        "Patient" => {
            json!({"resourceType":"Patient","id":id,"meta":{"lastUpdated":lu},"name":[{"family":"Doe"}]})
        }
        _ => {
            json!({"resourceType":rtype,"id":id,"meta":{"lastUpdated":lu},"status":"finished","subject":subject})
        }
    }
}

impl Sim {
    pub async fn new() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = aqueduct_store::open(path.to_str().unwrap()).await.unwrap();
        Self::setup(store, dir, None).await
    }

    /// A fresh schema in the local PostgreSQL; None when there is none to reach.
    pub async fn postgres() -> Option<Sim> {
        let url = pg_url();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let schema = format!("monitor_{}_{nanos}", std::process::id());
        let out = std::process::Command::new("psql")
            .args([&url, "-q", "-c", &format!("CREATE SCHEMA {schema}")])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        let location = format!("{url}{sep}options=-csearch_path%3D{schema}");
        let store = aqueduct_store::open(&location).await.ok()?;
        Some(Self::setup(store, tempfile::tempdir().unwrap(), Some((url, schema))).await)
    }

    async fn setup(
        store: Arc<dyn Store>,
        dir: tempfile::TempDir,
        pg: Option<(String, String)>,
    ) -> Sim {
        let conn = ConnectionRef::new("acme", "hospital");
        store
            .upsert_connection(&ConnectionRecord {
                organization: "acme".into(),
                name: "hospital".into(),
                base_url: BASE.into(),
                profile: "epic".into(),
            })
            .await
            .unwrap();
        Sim {
            store,
            conn,
            dir,
            pg,
        }
    }

    /// Stores `patients` × `types` resources, last updated `age` ago (bounded batches).
    pub async fn seed(&self, patients: usize, types: &[(&str, u64)], age: Duration) {
        let lu = Utc::now() - age;
        let mut batch = Vec::new();
        for p in 0..patients {
            let pid = patient_id(p);
            for (t, n) in types {
                for i in 0..*n {
                    let id = if *t == "Patient" {
                        pid.clone()
                    } else {
                        format!("{pid}-{t}-{i}")
                    };
                    let body = resource(t, &id, &pid, lu - Duration::minutes(i as i64));
                    batch.push(raw(t, &id, &pid, body));
                }
            }
            if batch.len() >= 2000 {
                self.store
                    .write_resources(&self.conn, &batch)
                    .await
                    .unwrap();
                batch.clear();
            }
        }
        self.store
            .write_resources(&self.conn, &batch)
            .await
            .unwrap();
    }

    pub async fn write(&self, resources: Vec<RawResource>) {
        self.store
            .write_resources(&self.conn, &resources)
            .await
            .unwrap();
    }

    /// A clean sync of `patients` with `types` per patient; `tweak` alters the ledger.
    pub async fn run_with(
        &self,
        kind: &str,
        patients: usize,
        types: &[(&str, u64)],
        outcome: RunOutcome,
        summary: serde_json::Value,
        tweak: impl FnOnce(&mut Vec<LedgerEntry>),
    ) -> RunId {
        let run = self.store.begin_run(&self.conn, kind).await.unwrap();
        let mut entries = ledger(patients, types, run as u64);
        tweak(&mut entries);
        for chunk in entries.chunks(1000) {
            self.store
                .record_requests(&self.conn, run, chunk)
                .await
                .unwrap();
        }
        self.store
            .finish_run(&self.conn, run, outcome, Some(&summary.to_string()), None)
            .await
            .unwrap();
        run
    }

    pub async fn clean_run(&self, patients: usize, types: &[(&str, u64)]) -> RunId {
        self.run_with(
            "full:patients",
            patients,
            types,
            RunOutcome::Complete,
            clean_summary(),
            |_| {},
        )
        .await
    }
}

pub fn clean_summary() -> serde_json::Value {
    json!({"missing": [], "skipped_types": [], "by_type": {}, "requests": 0, "retries": 1,
           "throttled": 1, "notes": []})
}

pub fn raw(t: &str, id: &str, pid: &str, body: serde_json::Value) -> RawResource {
    RawResource {
        resource_type: t.into(),
        logical_id: id.into(),
        version_id: Some("1".into()),
        last_updated: body["meta"]["lastUpdated"].as_str().map(str::to_string),
        source_url: format!("{BASE}/{t}?patient={pid}"),
        patient_id: Some(pid.into()),
        parse_status: ParseStatus::Ok,
        fetched_at: Utc::now(),
        bytes: serde_json::to_vec(&body).unwrap(),
    }
}

pub fn entry(rtype: &str, patient: &str, page: u64, resources: u64, seed: u64) -> LedgerEntry {
    let url = if rtype == "Patient" {
        format!("{BASE}/Patient/{patient}")
    } else {
        format!("{BASE}/{rtype}?patient={patient}&_count=50&_page={page}")
    };
    LedgerEntry {
        at: Utc::now() - Duration::seconds(30) + Duration::milliseconds((seed % 1000) as i64),
        method: "GET".into(),
        url_template: format!("{BASE}/{rtype}?patient={{patient}}"),
        url,
        resource_type: Some(rtype.into()),
        patient_id: Some(patient.into()),
        status: Some(200),
        duration_ms: 80.0 + ((seed * 7919) % 700) as f64,
        bytes: 1200 * resources.max(1),
        resources,
        error_kind: None,
        page_complete: true,
        attempt: 1,
    }
}

/// The ledger of a clean sync: pages of 50, plus one throttled request that succeeded on
/// retry (normal life, not a silent failure).
pub fn ledger(patients: usize, types: &[(&str, u64)], salt: u64) -> Vec<LedgerEntry> {
    ledger_paged(patients, types, salt, 50)
}

pub fn ledger_paged(
    patients: usize,
    types: &[(&str, u64)],
    salt: u64,
    page_size: u64,
) -> Vec<LedgerEntry> {
    let mut out = Vec::new();
    let mut seed = salt;
    for p in 0..patients {
        let pid = patient_id(p);
        for (t, n) in types {
            let mut left = *n;
            let mut page = 0;
            loop {
                let k = left.min(page_size);
                seed += 1;
                out.push(entry(t, &pid, page, k, seed));
                left -= k;
                page += 1;
                if left == 0 {
                    break;
                }
            }
        }
    }
    if let Some(first) = out.first().cloned() {
        let mut throttled = first.clone();
        throttled.status = Some(429);
        throttled.resources = 0;
        throttled.error_kind = Some("http-429".into());
        throttled.page_complete = false;
        let mut retry = first;
        retry.attempt = 2;
        out[0] = throttled;
        out.insert(1, retry);
    }
    out
}
