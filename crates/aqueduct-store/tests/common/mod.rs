//! Opens real stores for tests: a SQLite file in a temp dir, or a fresh schema in the local
//! PostgreSQL (so tests run in parallel without seeing each other's tables).
#![allow(dead_code)]

use std::sync::Arc;

use aqueduct_store::{ConnectionRef, ParseStatus, RawResource, Store};
use chrono::Utc;

pub fn pg_url() -> String {
    std::env::var("AQUEDUCT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub location: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TestStore {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let location = path.display().to_string();
        let store = aqueduct_store::open(&location).await.unwrap();
        Self {
            store,
            location,
            _dir: Some(dir),
            schema: None,
        }
    }

    pub async fn postgres() -> Self {
        let schema = format!("t_{}", uuid_like());
        let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
            .await
            .expect("the PostgreSQL tests need the local server (see .ci/run)");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let location = with_search_path(&pg_url(), &schema);
        let store = aqueduct_store::open(&location).await.unwrap();
        Self {
            store,
            location,
            _dir: None,
            schema: Some(schema),
        }
    }

    /// Reopens the same store (a second process, or the same one after a restart).
    pub async fn reopen(&self) -> Result<Arc<dyn Store>, aqueduct_store::StoreError> {
        aqueduct_store::open(&self.location).await
    }

    /// Runs raw SQL against the store's own database, bypassing the API.
    pub async fn raw_sql(&self, sql: &str) {
        if self.schema.is_some() {
            let (client, conn) = tokio_postgres::connect(&self.location, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.batch_execute(sql).await.unwrap();
        } else {
            let c = rusqlite::Connection::open(&self.location).unwrap();
            c.execute_batch(sql).unwrap();
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            // Best effort: a leftover schema is harmless, each test uses a new name.
            let _ = std::process::Command::new("psql")
                .args([
                    &pg_url(),
                    "-q",
                    "-c",
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ])
                .output();
        }
    }
}

pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn conn(org: &str, name: &str) -> ConnectionRef {
    ConnectionRef::new(org, name)
}

pub fn resource(rtype: &str, id: &str, body: &str) -> RawResource {
    RawResource {
        resource_type: rtype.to_string(),
        logical_id: id.to_string(),
        version_id: Some("1".to_string()),
        last_updated: Some("2026-01-02T03:04:05Z".to_string()),
        source_url: format!("https://ehr.example/fhir/{rtype}?_id={id}"),
        patient_id: Some("p1".to_string()),
        parse_status: ParseStatus::Ok,
        fetched_at: Utc::now(),
        bytes: body.as_bytes().to_vec(),
    }
}

pub fn observation(id: &str, value: f64) -> RawResource {
    resource(
        "Observation",
        id,
        &format!(
            r#"{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"2339-0"}}]}},"valueQuantity":{{"value":{value},"unit":"mg/dL"}}}}"#
        ),
    )
}
