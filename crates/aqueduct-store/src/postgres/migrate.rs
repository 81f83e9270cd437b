//! Versioned migrations for PostgreSQL. An advisory lock serializes concurrent workers that
//! start at the same time against a fresh database.

use aqueduct_core::error::{StoreError, StoreResult};

#[rustfmt::skip]
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_inbound_events.sql")),
    (3, include_str!("../../migrations/postgres/0003_normalized.sql")),
    (4, include_str!("../../migrations/postgres/0004_alerts.sql")),
    (5, include_str!("../../migrations/postgres/0005_patient_index.sql")),
    (6, include_str!("../../migrations/postgres/0006_lz4.sql")),
    (7, include_str!("../../migrations/postgres/0007_run_heartbeat.sql")),
    (8, include_str!("../../migrations/postgres/0008_leases.sql")),
    (9, include_str!("../../migrations/postgres/0009_inbound_content_key.sql")),
    (10, include_str!("../../migrations/postgres/0010_work_queue.sql")),
    (11, include_str!("../../migrations/postgres/0011_access.sql")),
    (12, include_str!("../../migrations/postgres/0012_live_patient_index.sql")),
    (13, include_str!("../../migrations/postgres/0013_finding_acknowledgement.sql")),
    (14, include_str!("../../migrations/postgres/0014_identity.sql")),
];

/// Arbitrary constant shared by every Aqueduct process: "aqueduct" in ASCII, truncated.
const LOCK_KEY: i64 = 0x6171_7565_6475_6374;

pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    location: &str,
) -> StoreResult<i64> {
    let q = |e: tokio_postgres::Error| super::map_err(location, "migrate", e);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(q)?;
    let result = run(client, location).await;
    // Unlock even when a migration failed, so another process can report its own error.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn run(client: &mut tokio_postgres::Client, location: &str) -> StoreResult<i64> {
    let q = |e: tokio_postgres::Error| super::map_err(location, "read schema version", e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS aqueduct_schema (
                version     BIGINT PRIMARY KEY,
                applied_at  TIMESTAMPTZ NOT NULL
            )",
        )
        .await
        .map_err(q)?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM aqueduct_schema",
            &[],
        )
        .await
        .map_err(q)?
        .get(0);
    let supported = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > supported {
        return Err(StoreError::NewerSchema {
            location: location.to_string(),
            found: current,
            supported,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let fail = |e: tokio_postgres::Error| StoreError::Migration {
            location: location.to_string(),
            version: *version,
            cause: super::describe(&e),
        };
        let tx = client.transaction().await.map_err(fail)?;
        tx.batch_execute(sql).await.map_err(fail)?;
        tx.execute(
            "INSERT INTO aqueduct_schema (version, applied_at) VALUES ($1, now())",
            &[version],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
    }
    Ok(supported.max(current))
}
