//! Versioned migrations for the SQLite backend. Each file runs once, in order, inside a
//! transaction together with the bump of `aqueduct_schema`.

use rusqlite::Connection;

use aqueduct_core::error::{StoreError, StoreResult};

#[rustfmt::skip]
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_inbound_events.sql")),
    (3, include_str!("../../migrations/sqlite/0003_normalized.sql")),
    (4, include_str!("../../migrations/sqlite/0004_alerts.sql")),
    (5, include_str!("../../migrations/sqlite/0005_patient_index.sql")),
    (6, include_str!("../../migrations/sqlite/0006_lz4.sql")),
    (7, include_str!("../../migrations/sqlite/0007_run_heartbeat.sql")),
    (8, include_str!("../../migrations/sqlite/0008_leases.sql")),
    (9, include_str!("../../migrations/sqlite/0009_inbound_content_key.sql")),
    (10, include_str!("../../migrations/sqlite/0010_work_queue.sql")),
    (11, include_str!("../../migrations/sqlite/0011_access.sql")),
    (12, include_str!("../../migrations/sqlite/0012_live_patient_index.sql")),
    (13, include_str!("../../migrations/sqlite/0013_finding_acknowledgement.sql")),
    (14, include_str!("../../migrations/sqlite/0014_identity.sql")),
];

pub(crate) fn migrate(conn: &mut Connection, location: &str) -> StoreResult<i64> {
    let query_err = |cause: rusqlite::Error| super::map_err(location, "read schema version", cause);
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS aqueduct_schema (
            version     INTEGER PRIMARY KEY,
            applied_at  TEXT NOT NULL
        );",
    )
    .map_err(query_err)?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM aqueduct_schema",
            [],
            |r| r.get(0),
        )
        .map_err(query_err)?;
    let supported = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > supported {
        return Err(StoreError::NewerSchema {
            location: location.to_string(),
            found: current,
            supported,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let fail = |cause: rusqlite::Error| match super::map_err(location, "migrate", cause) {
            e @ (StoreError::DiskFull { .. } | StoreError::ReadOnly { .. }) => e,
            other => StoreError::Migration {
                location: location.to_string(),
                version: *version,
                cause: other.to_string(),
            },
        };
        // IMMEDIATE: the write lock first, then the check — two processes opening a fresh
        // store at once must not both apply a migration (the second waits, then skips it)
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        let applied: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM aqueduct_schema WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(fail)?;
        if applied {
            continue;
        }
        tx.execute_batch(sql).map_err(fail)?;
        tx.execute(
            "INSERT INTO aqueduct_schema (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, super::ts(chrono::Utc::now())],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(supported.max(current))
}
