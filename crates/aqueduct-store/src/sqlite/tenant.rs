//! Organizations, connections, the sync ledger, checkpoints, credentials, the auth audit log
//! and findings in SQLite. Every query names the organization.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{map_err, parse_ts, ts};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

pub(super) fn upsert_organization(
    c: &mut Connection,
    loc: &str,
    org: &Organization,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO organizations (name, display_name, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET display_name = excluded.display_name",
        params![org.name, org.display_name, ts(Utc::now())],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "upsert organization", e))
}

pub(super) fn list_organizations(c: &mut Connection, loc: &str) -> StoreResult<Vec<Organization>> {
    c.prepare_cached("SELECT name, display_name FROM organizations ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(Organization {
                    name: r.get(0)?,
                    display_name: r.get(1)?,
                })
            })?
            .collect()
        })
        .map_err(|e| map_err(loc, "list organizations", e))
}

pub(super) fn upsert_connection(
    c: &mut Connection,
    loc: &str,
    rec: &ConnectionRecord,
) -> StoreResult<()> {
    let e = |err| map_err(loc, "upsert connection", err);
    let tx = c.transaction().map_err(e)?;
    tx.execute(
        "INSERT INTO organizations (name, display_name, created_at) VALUES (?1, NULL, ?2)
         ON CONFLICT (name) DO NOTHING",
        params![rec.organization, ts(Utc::now())],
    )
    .map_err(e)?;
    tx.execute(
        "INSERT INTO connections (organization, name, base_url, profile, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (organization, name) DO UPDATE
           SET base_url = excluded.base_url, profile = excluded.profile, updated_at = excluded.updated_at",
        params![rec.organization, rec.name, rec.base_url, rec.profile, ts(Utc::now())],
    )
    .map_err(e)?;
    tx.commit().map_err(e)
}

pub(super) fn list_connections(
    c: &mut Connection,
    loc: &str,
    org: &str,
) -> StoreResult<Vec<ConnectionRecord>> {
    c.prepare_cached(
        "SELECT organization, name, base_url, profile FROM connections
         WHERE organization = ?1 ORDER BY name",
    )
    .and_then(|mut s| {
        s.query_map(params![org], |r| {
            Ok(ConnectionRecord {
                organization: r.get(0)?,
                name: r.get(1)?,
                base_url: r.get(2)?,
                profile: r.get(3)?,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "list connections", e))
}

pub(super) fn begin_run(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    kind: &str,
) -> StoreResult<RunId> {
    c.execute(
        "INSERT INTO sync_runs (organization, connection, kind, started_at, outcome)
         VALUES (?1, ?2, ?3, ?4, 'running')",
        params![conn.organization, conn.connection, kind, ts(Utc::now())],
    )
    .map(|_| c.last_insert_rowid())
    .map_err(|e| map_err(loc, "begin run", e))
}

pub(super) fn record_requests(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    run: RunId,
    entries: &[LedgerEntry],
) -> StoreResult<()> {
    let e = |err| map_err(loc, "record requests", err);
    let tx = c.transaction().map_err(e)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO sync_requests (run_id, organization, connection, at, method,
                    url_template, url, resource_type, patient_id, status, duration_ms, bytes,
                    resources, error_kind, page_complete, attempt)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16
                 WHERE EXISTS (SELECT 1 FROM sync_runs WHERE id = ?1 AND organization = ?2 AND connection = ?3)",
            )
            .map_err(e)?;
        for en in entries {
            stmt.execute(params![
                run,
                conn.organization,
                conn.connection,
                ts(en.at),
                en.method,
                en.url_template,
                en.url,
                en.resource_type,
                en.patient_id,
                en.status,
                finite(en.duration_ms),
                en.bytes as i64,
                en.resources as i64,
                en.error_kind,
                en.page_complete,
                en.attempt,
            ])
            .map_err(e)?;
        }
    }
    tx.commit().map_err(e)
}

pub(super) fn finish_run(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    run: RunId,
    outcome: RunOutcome,
    summary: Option<&str>,
    error: Option<&str>,
) -> StoreResult<()> {
    c.execute(
        "UPDATE sync_runs SET finished_at = ?4, outcome = ?5, summary = ?6, error = ?7
         WHERE id = ?1 AND organization = ?2 AND connection = ?3",
        params![
            run,
            conn.organization,
            conn.connection,
            ts(Utc::now()),
            outcome.as_str(),
            summary,
            error
        ],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "finish run", e))
}

pub(super) fn acquire_lease(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    name: &str,
    holder: &str,
    ttl: std::time::Duration,
) -> StoreResult<bool> {
    let now = Utc::now();
    let until = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    c.execute(
        "INSERT INTO leases (organization, connection, name, holder, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (organization, connection, name) DO UPDATE
           SET holder = excluded.holder, expires_at = excluded.expires_at
           WHERE leases.expires_at < ?6 OR leases.holder = excluded.holder",
        params![
            conn.organization,
            conn.connection,
            name,
            holder,
            ts(until),
            ts(now)
        ],
    )
    .map(|n| n == 1)
    .map_err(|e| map_err(loc, "acquire lease", e))
}

pub(super) fn release_lease(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    name: &str,
    holder: &str,
) -> StoreResult<()> {
    c.execute(
        "DELETE FROM leases
         WHERE organization = ?1 AND connection = ?2 AND name = ?3 AND holder = ?4",
        params![conn.organization, conn.connection, name, holder],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "release lease", e))
}

pub(super) fn heartbeat_run(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<()> {
    c.execute(
        "UPDATE sync_runs SET heartbeat_at = ?4
         WHERE id = ?1 AND organization = ?2 AND connection = ?3 AND outcome = 'running'",
        params![run, conn.organization, conn.connection, ts(Utc::now())],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "record run heartbeat", e))
}

pub(super) fn close_stale_runs(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    stale_before: DateTime<Utc>,
    error: &str,
) -> StoreResult<Vec<RunId>> {
    let e = |err| map_err(loc, "close stale runs", err);
    let tx = c.transaction().map_err(e)?;
    let ids: Vec<RunId> = {
        let mut st = tx
            .prepare_cached(
                "SELECT id FROM sync_runs
                 WHERE organization = ?1 AND connection = ?2 AND outcome = 'running'
                   AND COALESCE(heartbeat_at, started_at) < ?3
                 ORDER BY id",
            )
            .map_err(e)?;
        st.query_map(
            params![conn.organization, conn.connection, ts(stale_before)],
            |r| r.get(0),
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<RunId>>>())
        .map_err(e)?
    };
    for id in &ids {
        tx.execute(
            "UPDATE sync_runs SET outcome = 'failed', finished_at = ?2, error = ?3 WHERE id = ?1",
            params![id, ts(Utc::now()), error],
        )
        .map_err(e)?;
    }
    tx.commit().map_err(e)?;
    Ok(ids)
}

const RUN_COLUMNS: &str =
    "id, kind, started_at, finished_at, outcome, summary, error, heartbeat_at";

fn row_to_run(conn: &ConnectionRef, r: &Row<'_>) -> rusqlite::Result<SyncRun> {
    let finished: Option<String> = r.get(3)?;
    let outcome: String = r.get(4)?;
    Ok(SyncRun {
        id: r.get(0)?,
        connection: conn.clone(),
        kind: r.get(1)?,
        started_at: parse_ts(&r.get::<_, String>(2)?),
        finished_at: finished.as_deref().map(parse_ts),
        outcome: RunOutcome::parse(&outcome).unwrap_or(RunOutcome::Failed),
        summary: r.get(5)?,
        error: r.get(6)?,
        heartbeat_at: r.get::<_, Option<String>>(7)?.as_deref().map(parse_ts),
    })
}

pub(super) fn get_run(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<Option<SyncRun>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = ?1 AND organization = ?2 AND connection = ?3"
    );
    c.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(params![run, conn.organization, conn.connection], |r| {
                row_to_run(conn, r)
            })
            .optional()
        })
        .map_err(|e| map_err(loc, "read run", e))
}

pub(super) fn list_runs(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    limit: u32,
) -> StoreResult<Vec<SyncRun>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs WHERE organization = ?1 AND connection = ?2
         ORDER BY id DESC LIMIT ?3"
    );
    c.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params![conn.organization, conn.connection, limit], |r| {
                row_to_run(conn, r)
            })?
            .collect()
        })
        .map_err(|e| map_err(loc, "list runs", e))
}

pub(super) fn run_requests(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<Vec<LedgerEntry>> {
    c.prepare_cached(
        "SELECT at, method, url_template, url, resource_type, patient_id, status, duration_ms,
                bytes, resources, error_kind, page_complete, attempt
         FROM sync_requests WHERE run_id = ?1 AND organization = ?2 AND connection = ?3 ORDER BY id",
    )
    .and_then(|mut s| {
        s.query_map(params![run, conn.organization, conn.connection], |r| {
            Ok(LedgerEntry {
                at: parse_ts(&r.get::<_, String>(0)?),
                method: r.get(1)?,
                url_template: r.get(2)?,
                url: r.get(3)?,
                resource_type: r.get(4)?,
                patient_id: r.get(5)?,
                status: r.get(6)?,
                duration_ms: r.get(7)?,
                bytes: r.get::<_, i64>(8)? as u64,
                resources: r.get::<_, i64>(9)? as u64,
                error_kind: r.get(10)?,
                page_complete: r.get(11)?,
                attempt: r.get(12)?,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "read run requests", e))
}

pub(super) fn run_request_stats(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<RunRequestStats> {
    c.prepare_cached(
        "SELECT COUNT(*),
                COALESCE(SUM(error_kind IS NOT NULL), 0),
                COALESCE(SUM(status IN (429, 503)), 0),
                COALESCE(SUM(attempt > 1), 0),
                COALESCE(SUM(bytes), 0),
                COALESCE(SUM(resources), 0)
         FROM sync_requests WHERE run_id = ?1 AND organization = ?2 AND connection = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![run, conn.organization, conn.connection], |r| {
            Ok(RunRequestStats {
                requests: r.get::<_, i64>(0)? as u64,
                errors: r.get::<_, i64>(1)? as u64,
                throttled: r.get::<_, i64>(2)? as u64,
                retries: r.get::<_, i64>(3)? as u64,
                bytes: r.get::<_, i64>(4)? as u64,
                resources: r.get::<_, i64>(5)? as u64,
            })
        })
    })
    .map_err(|e| map_err(loc, "run request stats", e))
}

pub(super) fn save_checkpoint(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    key: &str,
    value: &str,
) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO checkpoints (organization, connection, key, value, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (organization, connection, key) DO UPDATE
           SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            conn.organization,
            conn.connection,
            key,
            value,
            ts(Utc::now())
        ])
    })
    .map(|_| ())
    .map_err(|e| map_err(loc, "save checkpoint", e))
}

pub(super) fn load_checkpoint(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    key: &str,
) -> StoreResult<Option<String>> {
    c.prepare_cached(
        "SELECT value FROM checkpoints WHERE organization = ?1 AND connection = ?2 AND key = ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![conn.organization, conn.connection, key], |r| {
            r.get(0)
        })
        .optional()
    })
    .map_err(|e| map_err(loc, "load checkpoint", e))
}

/// `LIKE` would treat `%` and `_` in keys as wildcards; a range on the key is exact.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

pub(super) fn list_checkpoints(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    prefix: &str,
) -> StoreResult<Vec<(String, String)>> {
    c.prepare_cached(
        "SELECT key, value FROM checkpoints
         WHERE organization = ?1 AND connection = ?2 AND key >= ?3 AND key < ?4 ORDER BY key",
    )
    .and_then(|mut s| {
        s.query_map(
            params![
                conn.organization,
                conn.connection,
                prefix,
                prefix_end(prefix)
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect()
    })
    .map_err(|e| map_err(loc, "list checkpoints", e))
}

pub(super) fn clear_checkpoints(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    prefix: &str,
) -> StoreResult<u64> {
    c.execute(
        "DELETE FROM checkpoints
         WHERE organization = ?1 AND connection = ?2 AND key >= ?3 AND key < ?4",
        params![
            conn.organization,
            conn.connection,
            prefix,
            prefix_end(prefix)
        ],
    )
    .map(|n| n as u64)
    .map_err(|e| map_err(loc, "clear checkpoints", e))
}

pub(super) fn put_secret(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    name: &str,
    ct: &[u8],
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO credentials (organization, connection, name, ciphertext, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (organization, connection, name) DO UPDATE
           SET ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        params![conn.organization, conn.connection, name, ct, ts(Utc::now())],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "store secret", e))
}

pub(super) fn get_secret(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    name: &str,
) -> StoreResult<Option<Vec<u8>>> {
    c.query_row(
        "SELECT ciphertext FROM credentials WHERE organization = ?1 AND connection = ?2 AND name = ?3",
        params![conn.organization, conn.connection, name],
        |r| r.get(0),
    )
    .optional()
    .map_err(|e| map_err(loc, "read secret", e))
}

pub(super) fn delete_secret(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    name: &str,
) -> StoreResult<bool> {
    c.execute(
        "DELETE FROM credentials WHERE organization = ?1 AND connection = ?2 AND name = ?3",
        params![conn.organization, conn.connection, name],
    )
    .map(|n| n > 0)
    .map_err(|e| map_err(loc, "delete secret", e))
}

pub(super) fn list_secrets(
    c: &mut Connection,
    loc: &str,
    org: &str,
) -> StoreResult<Vec<(String, String, Vec<u8>)>> {
    c.prepare_cached(
        "SELECT connection, name, ciphertext FROM credentials WHERE organization = ?1
         ORDER BY connection, name",
    )
    .and_then(|mut s| {
        s.query_map(params![org], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
    })
    .map_err(|e| map_err(loc, "list secrets", e))
}

pub(super) fn record_auth_event(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    ev: &AuthEvent,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO auth_events (organization, connection, at, event, outcome, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            conn.organization,
            conn.connection,
            ts(ev.at),
            ev.event,
            ev.outcome,
            ev.reason
        ],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "record auth event", e))
}

pub(super) fn list_auth_events(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    limit: u32,
) -> StoreResult<Vec<AuthEvent>> {
    c.prepare_cached(
        "SELECT at, event, outcome, reason FROM auth_events
         WHERE organization = ?1 AND connection = ?2 ORDER BY id DESC LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![conn.organization, conn.connection, limit], |r| {
            Ok(AuthEvent {
                at: parse_ts(&r.get::<_, String>(0)?),
                event: r.get(1)?,
                outcome: r.get(2)?,
                reason: r.get(3)?,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "list auth events", e))
}

pub(super) fn record_finding(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    f: &Finding,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO findings (organization, connection, run_id, at, kind, severity, resource_type, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![conn.organization, conn.connection, f.run_id, ts(f.at), f.kind, f.severity, f.resource_type, f.detail],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "record finding", e))
}

pub(super) fn list_findings(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    limit: u32,
) -> StoreResult<Vec<Finding>> {
    c.prepare_cached(
        "SELECT at, run_id, kind, severity, resource_type, detail FROM findings
         WHERE organization = ?1 AND connection = ?2 ORDER BY id DESC LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![conn.organization, conn.connection, limit], |r| {
            Ok(Finding {
                at: parse_ts(&r.get::<_, String>(0)?),
                run_id: r.get(1)?,
                kind: r.get(2)?,
                severity: r.get(3)?,
                resource_type: r.get(4)?,
                detail: r.get(5)?,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "list findings", e))
}

const FINDING_RECORD_COLUMNS: &str = "id, at, run_id, kind, severity, resource_type, detail,
    acknowledged_at, acknowledged_by, acknowledgement_note";

fn row_to_finding_record(r: &rusqlite::Row) -> rusqlite::Result<FindingRecord> {
    let acknowledged_at: Option<String> = r.get(7)?;
    Ok(FindingRecord {
        id: r.get(0)?,
        finding: Finding {
            at: parse_ts(&r.get::<_, String>(1)?),
            run_id: r.get(2)?,
            kind: r.get(3)?,
            severity: r.get(4)?,
            resource_type: r.get(5)?,
            detail: r.get(6)?,
        },
        acknowledged: match acknowledged_at {
            Some(at) => Some(Acknowledgement {
                at: parse_ts(&at),
                by: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                note: r.get(9)?,
            }),
            None => None,
        },
    })
}

pub(super) fn list_finding_records(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    acknowledged: Option<bool>,
    limit: u32,
) -> StoreResult<Vec<FindingRecord>> {
    c.prepare_cached(&format!(
        "SELECT {FINDING_RECORD_COLUMNS} FROM findings
         WHERE organization = ?1 AND connection = ?2
           AND (?3 IS NULL OR (acknowledged_at IS NOT NULL) = ?3)
         ORDER BY id DESC LIMIT ?4"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![conn.organization, conn.connection, acknowledged, limit],
            row_to_finding_record,
        )?
        .collect()
    })
    .map_err(|e| map_err(loc, "list findings", e))
}

pub(super) fn acknowledge_finding(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    id: i64,
    ack: &Acknowledgement,
) -> StoreResult<Option<FindingRecord>> {
    let e = |err| map_err(loc, "acknowledge finding", err);
    let tx = c.transaction().map_err(e)?;
    // only an open finding takes the acknowledgement: the first one stands
    tx.execute(
        "UPDATE findings SET acknowledged_at = ?4, acknowledged_by = ?5, acknowledgement_note = ?6
         WHERE organization = ?1 AND connection = ?2 AND id = ?3 AND acknowledged_at IS NULL",
        params![
            conn.organization,
            conn.connection,
            id,
            ts(ack.at),
            ack.by,
            ack.note
        ],
    )
    .map_err(e)?;
    let record = tx
        .query_row(
            &format!(
                "SELECT {FINDING_RECORD_COLUMNS} FROM findings
                 WHERE organization = ?1 AND connection = ?2 AND id = ?3"
            ),
            params![conn.organization, conn.connection, id],
            row_to_finding_record,
        )
        .optional()
        .map_err(e)?;
    tx.commit().map_err(e)?;
    Ok(record)
}

pub(super) fn status(
    c: &mut Connection,
    loc: &str,
    org: &str,
) -> StoreResult<Vec<ConnectionStatus>> {
    let e = |err| map_err(loc, "status", err);
    // Connections registered in the store plus any that only have data (registered elsewhere).
    let names: Vec<(String, Option<String>, Option<String>)> = c
        .prepare_cached(
            "SELECT name, base_url, profile FROM connections WHERE organization = ?1
             UNION
             SELECT DISTINCT connection, NULL, NULL FROM sync_runs
             WHERE organization = ?1 AND connection NOT IN (SELECT name FROM connections WHERE organization = ?1)
             ORDER BY 1",
        )
        .and_then(|mut s| s.query_map(params![org], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .map_err(e)?;
    let mut out = Vec::with_capacity(names.len());
    for (name, base_url, profile) in names {
        let conn = ConnectionRef::new(org, name);
        let types = super::resources::count_by_type(c, loc, &conn)?;
        let last_run = list_runs(c, loc, &conn, 1)?.into_iter().next();
        let last_run_stats = match &last_run {
            Some(r) => Some(run_request_stats(c, loc, &conn, r.id)?),
            None => None,
        };
        let error_count: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sync_requests
                 WHERE organization = ?1 AND connection = ?2 AND error_kind IS NOT NULL",
                params![conn.organization, conn.connection],
                |r| r.get(0),
            )
            .map_err(e)?;
        let findings: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM findings
                 WHERE organization = ?1 AND connection = ?2 AND acknowledged_at IS NULL",
                params![conn.organization, conn.connection],
                |r| r.get(0),
            )
            .map_err(e)?;
        out.push(ConnectionStatus {
            connection: conn,
            base_url,
            profile,
            types,
            last_run,
            last_run_stats,
            error_count: error_count as u64,
            findings: findings as u64,
        });
    }
    Ok(out)
}
