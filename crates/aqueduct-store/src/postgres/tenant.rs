//! Organizations, connections, ledger, checkpoints, credentials, audit and findings in
//! PostgreSQL. Every query names the organization.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{PgStore, map_err};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

pub(super) async fn upsert_organization(s: &PgStore, org: &Organization) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "INSERT INTO organizations (name, display_name, created_at) VALUES ($1, $2, now())
         ON CONFLICT (name) DO UPDATE SET display_name = EXCLUDED.display_name",
        &[&org.name, &org.display_name],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "upsert organization", e))
}

pub(super) async fn list_organizations(s: &PgStore) -> StoreResult<Vec<Organization>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT name, display_name FROM organizations ORDER BY name COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(|e| map_err(&s.location, "list organizations", e))?;
    Ok(rows
        .iter()
        .map(|r| Organization {
            name: r.get(0),
            display_name: r.get(1),
        })
        .collect())
}

pub(super) async fn upsert_connection(s: &PgStore, rec: &ConnectionRecord) -> StoreResult<()> {
    let e = |err| map_err(&s.location, "upsert connection", err);
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(e)?;
    tx.execute(
        "INSERT INTO organizations (name, display_name, created_at) VALUES ($1, NULL, now())
         ON CONFLICT (name) DO NOTHING",
        &[&rec.organization],
    )
    .await
    .map_err(e)?;
    tx.execute(
        "INSERT INTO connections (organization, name, base_url, profile, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (organization, name) DO UPDATE
           SET base_url = EXCLUDED.base_url, profile = EXCLUDED.profile, updated_at = now()",
        &[&rec.organization, &rec.name, &rec.base_url, &rec.profile],
    )
    .await
    .map_err(e)?;
    tx.commit().await.map_err(e)
}

pub(super) async fn list_connections(s: &PgStore, org: &str) -> StoreResult<Vec<ConnectionRecord>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT organization, name, base_url, profile FROM connections
             WHERE organization = $1 ORDER BY name COLLATE \"C\"",
            &[&org],
        )
        .await
        .map_err(|e| map_err(&s.location, "list connections", e))?;
    Ok(rows
        .iter()
        .map(|r| ConnectionRecord {
            organization: r.get(0),
            name: r.get(1),
            base_url: r.get(2),
            profile: r.get(3),
        })
        .collect())
}

pub(super) async fn begin_run(s: &PgStore, conn: &ConnectionRef, kind: &str) -> StoreResult<RunId> {
    let c = s.client().await?;
    let row = c
        .query_one(
            "INSERT INTO sync_runs (organization, connection, kind, started_at, outcome)
             VALUES ($1, $2, $3, now(), 'running') RETURNING id",
            &[&conn.organization, &conn.connection, &kind],
        )
        .await
        .map_err(|e| map_err(&s.location, "begin run", e))?;
    Ok(row.get(0))
}

pub(super) async fn record_requests(
    s: &PgStore,
    conn: &ConnectionRef,
    run: RunId,
    entries: &[LedgerEntry],
) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let c = s.client().await?;
    let at: Vec<_> = entries.iter().map(|e| e.at).collect();
    let method: Vec<&str> = entries.iter().map(|e| e.method.as_str()).collect();
    let template: Vec<&str> = entries.iter().map(|e| e.url_template.as_str()).collect();
    let url: Vec<&str> = entries.iter().map(|e| e.url.as_str()).collect();
    let rtype: Vec<Option<&str>> = entries.iter().map(|e| e.resource_type.as_deref()).collect();
    let patient: Vec<Option<&str>> = entries.iter().map(|e| e.patient_id.as_deref()).collect();
    let status: Vec<Option<i32>> = entries.iter().map(|e| e.status.map(i32::from)).collect();
    let duration: Vec<f64> = entries
        .iter()
        .map(|e| aqueduct_core::model::finite(e.duration_ms))
        .collect();
    let bytes: Vec<i64> = entries.iter().map(|e| e.bytes as i64).collect();
    let resources: Vec<i64> = entries.iter().map(|e| e.resources as i64).collect();
    let kind: Vec<Option<&str>> = entries.iter().map(|e| e.error_kind.as_deref()).collect();
    let complete: Vec<bool> = entries.iter().map(|e| e.page_complete).collect();
    let attempt: Vec<i32> = entries.iter().map(|e| e.attempt as i32).collect();
    c.execute(
        "INSERT INTO sync_requests (run_id, organization, connection, at, method, url_template,
            url, resource_type, patient_id, status, duration_ms, bytes, resources, error_kind,
            page_complete, attempt)
         SELECT $1, $2, $3, u.* FROM UNNEST($4::timestamptz[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::int[], $11::float8[], $12::bigint[], $13::bigint[],
            $14::text[], $15::bool[], $16::int[]) AS u
         WHERE EXISTS (SELECT 1 FROM sync_runs WHERE id = $1 AND organization = $2 AND connection = $3)",
        &[
            &run, &conn.organization, &conn.connection, &at, &method, &template, &url, &rtype,
            &patient, &status, &duration, &bytes, &resources, &kind, &complete, &attempt,
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "record requests", e))
}

pub(super) async fn acquire_lease(
    s: &PgStore,
    conn: &ConnectionRef,
    name: &str,
    holder: &str,
    ttl: std::time::Duration,
) -> StoreResult<bool> {
    let c = s.client().await?;
    // the server's clock decides expiry: every process sharing the store agrees on it
    c.execute(
        "INSERT INTO leases (organization, connection, name, holder, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
         ON CONFLICT (organization, connection, name) DO UPDATE
           SET holder = excluded.holder, expires_at = excluded.expires_at
           WHERE leases.expires_at < now() OR leases.holder = excluded.holder",
        &[
            &conn.organization,
            &conn.connection,
            &name,
            &holder,
            &ttl.as_secs_f64(),
        ],
    )
    .await
    .map(|n| n == 1)
    .map_err(|e| map_err(&s.location, "acquire lease", e))
}

pub(super) async fn release_lease(
    s: &PgStore,
    conn: &ConnectionRef,
    name: &str,
    holder: &str,
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "DELETE FROM leases
         WHERE organization = $1 AND connection = $2 AND name = $3 AND holder = $4",
        &[&conn.organization, &conn.connection, &name, &holder],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "release lease", e))
}

pub(super) async fn heartbeat_run(
    s: &PgStore,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "UPDATE sync_runs SET heartbeat_at = now()
         WHERE id = $1 AND organization = $2 AND connection = $3 AND outcome = 'running'",
        &[&run, &conn.organization, &conn.connection],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "record run heartbeat", e))
}

pub(super) async fn close_stale_runs(
    s: &PgStore,
    conn: &ConnectionRef,
    stale_before: DateTime<Utc>,
    error: &str,
) -> StoreResult<Vec<RunId>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "UPDATE sync_runs SET outcome = 'failed', finished_at = now(), error = $4
             WHERE organization = $1 AND connection = $2 AND outcome = 'running'
               AND COALESCE(heartbeat_at, started_at) < $3
             RETURNING id",
            &[&conn.organization, &conn.connection, &stale_before, &error],
        )
        .await
        .map_err(|e| map_err(&s.location, "close stale runs", e))?;
    let mut ids: Vec<RunId> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    Ok(ids)
}

pub(super) async fn finish_run(
    s: &PgStore,
    conn: &ConnectionRef,
    run: RunId,
    outcome: RunOutcome,
    summary: Option<&str>,
    error: Option<&str>,
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "UPDATE sync_runs SET finished_at = now(), outcome = $4, summary = $5, error = $6
         WHERE id = $1 AND organization = $2 AND connection = $3",
        &[
            &run,
            &conn.organization,
            &conn.connection,
            &outcome.as_str(),
            &summary,
            &error,
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "finish run", e))
}

const RUN_COLUMNS: &str =
    "id, kind, started_at, finished_at, outcome, summary, error, heartbeat_at";

fn row_to_run(conn: &ConnectionRef, r: &Row) -> SyncRun {
    let outcome: String = r.get(4);
    SyncRun {
        id: r.get(0),
        connection: conn.clone(),
        kind: r.get(1),
        started_at: r.get(2),
        finished_at: r.get(3),
        outcome: RunOutcome::parse(&outcome).unwrap_or(RunOutcome::Failed),
        summary: r.get(5),
        error: r.get(6),
        heartbeat_at: r.get(7),
    }
}

pub(super) async fn get_run(
    s: &PgStore,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<Option<SyncRun>> {
    let c = s.client().await?;
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = $1 AND organization = $2 AND connection = $3"
    );
    let row = c
        .query_opt(&sql, &[&run, &conn.organization, &conn.connection])
        .await
        .map_err(|e| map_err(&s.location, "read run", e))?;
    Ok(row.map(|r| row_to_run(conn, &r)))
}

pub(super) async fn list_runs(
    s: &PgStore,
    conn: &ConnectionRef,
    limit: u32,
) -> StoreResult<Vec<SyncRun>> {
    let c = s.client().await?;
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM sync_runs WHERE organization = $1 AND connection = $2
         ORDER BY id DESC LIMIT $3"
    );
    let rows = c
        .query(
            &sql,
            &[&conn.organization, &conn.connection, &(limit as i64)],
        )
        .await
        .map_err(|e| map_err(&s.location, "list runs", e))?;
    Ok(rows.iter().map(|r| row_to_run(conn, r)).collect())
}

pub(super) async fn run_requests(
    s: &PgStore,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<Vec<LedgerEntry>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT at, method, url_template, url, resource_type, patient_id, status, duration_ms,
                    bytes, resources, error_kind, page_complete, attempt
             FROM sync_requests WHERE run_id = $1 AND organization = $2 AND connection = $3
             ORDER BY id",
            &[&run, &conn.organization, &conn.connection],
        )
        .await
        .map_err(|e| map_err(&s.location, "read run requests", e))?;
    Ok(rows
        .iter()
        .map(|r| LedgerEntry {
            at: r.get(0),
            method: r.get(1),
            url_template: r.get(2),
            url: r.get(3),
            resource_type: r.get(4),
            patient_id: r.get(5),
            status: r
                .get::<_, Option<i32>>(6)
                .and_then(|v| u16::try_from(v).ok()),
            duration_ms: r.get(7),
            bytes: r.get::<_, i64>(8) as u64,
            resources: r.get::<_, i64>(9) as u64,
            error_kind: r.get(10),
            page_complete: r.get(11),
            attempt: r.get::<_, i32>(12) as u32,
        })
        .collect())
}

pub(super) async fn run_request_stats(
    s: &PgStore,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<RunRequestStats> {
    let c = s.client().await?;
    let r = c
        .query_one(
            "SELECT COUNT(*),
                    COUNT(*) FILTER (WHERE error_kind IS NOT NULL),
                    COUNT(*) FILTER (WHERE status IN (429, 503)),
                    COUNT(*) FILTER (WHERE attempt > 1),
                    COALESCE(SUM(bytes), 0)::BIGINT,
                    COALESCE(SUM(resources), 0)::BIGINT
             FROM sync_requests WHERE run_id = $1 AND organization = $2 AND connection = $3",
            &[&run, &conn.organization, &conn.connection],
        )
        .await
        .map_err(|e| map_err(&s.location, "run request stats", e))?;
    Ok(RunRequestStats {
        requests: r.get::<_, i64>(0) as u64,
        errors: r.get::<_, i64>(1) as u64,
        throttled: r.get::<_, i64>(2) as u64,
        retries: r.get::<_, i64>(3) as u64,
        bytes: r.get::<_, i64>(4) as u64,
        resources: r.get::<_, i64>(5) as u64,
    })
}

pub(super) async fn save_checkpoint(
    s: &PgStore,
    conn: &ConnectionRef,
    key: &str,
    value: &str,
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "INSERT INTO checkpoints (organization, connection, key, value, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (organization, connection, key) DO UPDATE
           SET value = EXCLUDED.value, updated_at = now()",
        &[&conn.organization, &conn.connection, &key, &value],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "save checkpoint", e))
}

pub(super) async fn load_checkpoint(
    s: &PgStore,
    conn: &ConnectionRef,
    key: &str,
) -> StoreResult<Option<String>> {
    let c = s.client().await?;
    let row = c
        .query_opt(
            "SELECT value FROM checkpoints WHERE organization = $1 AND connection = $2 AND key = $3",
            &[&conn.organization, &conn.connection, &key],
        )
        .await
        .map_err(|e| map_err(&s.location, "load checkpoint", e))?;
    Ok(row.map(|r| r.get(0)))
}

pub(super) async fn list_checkpoints(
    s: &PgStore,
    conn: &ConnectionRef,
    prefix: &str,
) -> StoreResult<Vec<(String, String)>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT key, value FROM checkpoints
             WHERE organization = $1 AND connection = $2 AND starts_with(key, $3)
             ORDER BY key COLLATE \"C\"",
            &[&conn.organization, &conn.connection, &prefix],
        )
        .await
        .map_err(|e| map_err(&s.location, "list checkpoints", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(super) async fn clear_checkpoints(
    s: &PgStore,
    conn: &ConnectionRef,
    prefix: &str,
) -> StoreResult<u64> {
    let c = s.client().await?;
    c.execute(
        "DELETE FROM checkpoints WHERE organization = $1 AND connection = $2 AND starts_with(key, $3)",
        &[&conn.organization, &conn.connection, &prefix],
    )
    .await
    .map_err(|e| map_err(&s.location, "clear checkpoints", e))
}

pub(super) async fn put_secret(
    s: &PgStore,
    conn: &ConnectionRef,
    name: &str,
    ct: &[u8],
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "INSERT INTO credentials (organization, connection, name, ciphertext, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (organization, connection, name) DO UPDATE
           SET ciphertext = EXCLUDED.ciphertext, updated_at = now()",
        &[&conn.organization, &conn.connection, &name, &ct],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "store secret", e))
}

pub(super) async fn get_secret(
    s: &PgStore,
    conn: &ConnectionRef,
    name: &str,
) -> StoreResult<Option<Vec<u8>>> {
    let c = s.client().await?;
    let row = c
        .query_opt(
            "SELECT ciphertext FROM credentials WHERE organization = $1 AND connection = $2 AND name = $3",
            &[&conn.organization, &conn.connection, &name],
        )
        .await
        .map_err(|e| map_err(&s.location, "read secret", e))?;
    Ok(row.map(|r| r.get(0)))
}

pub(super) async fn delete_secret(
    s: &PgStore,
    conn: &ConnectionRef,
    name: &str,
) -> StoreResult<bool> {
    let c = s.client().await?;
    c.execute(
        "DELETE FROM credentials WHERE organization = $1 AND connection = $2 AND name = $3",
        &[&conn.organization, &conn.connection, &name],
    )
    .await
    .map(|n| n > 0)
    .map_err(|e| map_err(&s.location, "delete secret", e))
}

pub(super) async fn list_secrets(
    s: &PgStore,
    org: &str,
) -> StoreResult<Vec<(String, String, Vec<u8>)>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT connection, name, ciphertext FROM credentials WHERE organization = $1
             ORDER BY connection COLLATE \"C\", name COLLATE \"C\"",
            &[&org],
        )
        .await
        .map_err(|e| map_err(&s.location, "list secrets", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

pub(super) async fn record_auth_event(
    s: &PgStore,
    conn: &ConnectionRef,
    ev: &AuthEvent,
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "INSERT INTO auth_events (organization, connection, at, event, outcome, reason)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &conn.organization,
            &conn.connection,
            &ev.at,
            &ev.event,
            &ev.outcome,
            &ev.reason,
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "record auth event", e))
}

pub(super) async fn list_auth_events(
    s: &PgStore,
    conn: &ConnectionRef,
    limit: u32,
) -> StoreResult<Vec<AuthEvent>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT at, event, outcome, reason FROM auth_events
             WHERE organization = $1 AND connection = $2 ORDER BY id DESC LIMIT $3",
            &[&conn.organization, &conn.connection, &(limit as i64)],
        )
        .await
        .map_err(|e| map_err(&s.location, "list auth events", e))?;
    Ok(rows
        .iter()
        .map(|r| AuthEvent {
            at: r.get(0),
            event: r.get(1),
            outcome: r.get(2),
            reason: r.get(3),
        })
        .collect())
}

pub(super) async fn record_finding(
    s: &PgStore,
    conn: &ConnectionRef,
    f: &Finding,
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "INSERT INTO findings (organization, connection, run_id, at, kind, severity, resource_type, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&conn.organization, &conn.connection, &f.run_id, &f.at, &f.kind, &f.severity, &f.resource_type, &f.detail],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "record finding", e))
}

pub(super) async fn list_findings(
    s: &PgStore,
    conn: &ConnectionRef,
    limit: u32,
) -> StoreResult<Vec<Finding>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT at, run_id, kind, severity, resource_type, detail FROM findings
             WHERE organization = $1 AND connection = $2 ORDER BY id DESC LIMIT $3",
            &[&conn.organization, &conn.connection, &(limit as i64)],
        )
        .await
        .map_err(|e| map_err(&s.location, "list findings", e))?;
    Ok(rows
        .iter()
        .map(|r| Finding {
            at: r.get(0),
            run_id: r.get(1),
            kind: r.get(2),
            severity: r.get(3),
            resource_type: r.get(4),
            detail: r.get(5),
        })
        .collect())
}

const FINDING_RECORD_COLUMNS: &str = "id, at, run_id, kind, severity, resource_type, detail,
    acknowledged_at, acknowledged_by, acknowledgement_note";

fn row_to_finding_record(r: &tokio_postgres::Row) -> FindingRecord {
    let acknowledged_at: Option<DateTime<Utc>> = r.get(7);
    FindingRecord {
        id: r.get(0),
        finding: Finding {
            at: r.get(1),
            run_id: r.get(2),
            kind: r.get(3),
            severity: r.get(4),
            resource_type: r.get(5),
            detail: r.get(6),
        },
        acknowledged: acknowledged_at.map(|at| Acknowledgement {
            at,
            by: r.get::<_, Option<String>>(8).unwrap_or_default(),
            note: r.get(9),
        }),
    }
}

pub(super) async fn list_finding_records(
    s: &PgStore,
    conn: &ConnectionRef,
    acknowledged: Option<bool>,
    limit: u32,
) -> StoreResult<Vec<FindingRecord>> {
    let c = s.client().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {FINDING_RECORD_COLUMNS} FROM findings
                 WHERE organization = $1 AND connection = $2
                   AND ($3::BOOLEAN IS NULL OR (acknowledged_at IS NOT NULL) = $3)
                 ORDER BY id DESC LIMIT $4"
            ),
            &[
                &conn.organization,
                &conn.connection,
                &acknowledged,
                &(limit as i64),
            ],
        )
        .await
        .map_err(|e| map_err(&s.location, "list findings", e))?;
    Ok(rows.iter().map(row_to_finding_record).collect())
}

pub(super) async fn acknowledge_finding(
    s: &PgStore,
    conn: &ConnectionRef,
    id: i64,
    ack: &Acknowledgement,
) -> StoreResult<Option<FindingRecord>> {
    let c = s.client().await?;
    let e = |err| map_err(&s.location, "acknowledge finding", err);
    // only an open finding takes the acknowledgement: the first one stands
    c.execute(
        "UPDATE findings SET acknowledged_at = $4, acknowledged_by = $5, acknowledgement_note = $6
         WHERE organization = $1 AND connection = $2 AND id = $3 AND acknowledged_at IS NULL",
        &[
            &conn.organization,
            &conn.connection,
            &id,
            &ack.at,
            &ack.by,
            &ack.note,
        ],
    )
    .await
    .map_err(e)?;
    let row = c
        .query_opt(
            &format!(
                "SELECT {FINDING_RECORD_COLUMNS} FROM findings
                 WHERE organization = $1 AND connection = $2 AND id = $3"
            ),
            &[&conn.organization, &conn.connection, &id],
        )
        .await
        .map_err(e)?;
    Ok(row.as_ref().map(row_to_finding_record))
}

pub(super) async fn status(s: &PgStore, org: &str) -> StoreResult<Vec<ConnectionStatus>> {
    let names: Vec<(String, Option<String>, Option<String>)> = {
        let c = s.client().await?;
        c.query(
            "SELECT name, base_url, profile FROM connections WHERE organization = $1
             UNION
             SELECT DISTINCT connection, NULL, NULL FROM sync_runs
             WHERE organization = $1
               AND connection NOT IN (SELECT name FROM connections WHERE organization = $1)
             ORDER BY 1",
            &[&org],
        )
        .await
        .map_err(|e| map_err(&s.location, "status", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let mut out = Vec::with_capacity(names.len());
    for (name, base_url, profile) in names {
        let conn = ConnectionRef::new(org, name);
        let types = super::resources::count_by_type(s, &conn).await?;
        let last_run = list_runs(s, &conn, 1).await?.into_iter().next();
        let last_run_stats = match &last_run {
            Some(r) => Some(run_request_stats(s, &conn, r.id).await?),
            None => None,
        };
        let c = s.client().await?;
        let counts = c
            .query_one(
                "SELECT (SELECT COUNT(*) FROM sync_requests
                          WHERE organization = $1 AND connection = $2 AND error_kind IS NOT NULL),
                        (SELECT COUNT(*) FROM findings WHERE organization = $1 AND connection = $2 AND acknowledged_at IS NULL)",
                &[&conn.organization, &conn.connection],
            )
            .await
            .map_err(|e| map_err(&s.location, "status", e))?;
        out.push(ConnectionStatus {
            connection: conn,
            base_url,
            profile,
            types,
            last_run,
            last_run_stats,
            error_count: counts.get::<_, i64>(0) as u64,
            findings: counts.get::<_, i64>(1) as u64,
        });
    }
    Ok(out)
}
