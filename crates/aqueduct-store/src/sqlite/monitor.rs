//! Aggregates for monitoring, and alert state, in SQLite.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{map_err, parse_ts, ts};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

pub(super) fn run_type_totals(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<Vec<RunTypeTotals>> {
    c.prepare_cached(
        "SELECT COALESCE(resource_type, ''), COUNT(*), COALESCE(SUM(resources), 0),
                COALESCE(SUM(error_kind IS NOT NULL), 0), COALESCE(SUM(page_complete = 0), 0)
         FROM sync_requests WHERE run_id = ?1 AND organization = ?2 AND connection = ?3
         GROUP BY 1 ORDER BY 1",
    )
    .and_then(|mut s| {
        s.query_map(params![run, conn.organization, conn.connection], |r| {
            Ok(RunTypeTotals {
                resource_type: r.get(0)?,
                requests: r.get::<_, i64>(1)? as u64,
                resources: r.get::<_, i64>(2)? as u64,
                errors: r.get::<_, i64>(3)? as u64,
                incomplete_pages: r.get::<_, i64>(4)? as u64,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "run type totals", e))
}

pub(super) fn run_patient_totals(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<Vec<(String, u64)>> {
    c.prepare_cached(
        "SELECT patient_id, COALESCE(SUM(resources), 0) FROM sync_requests
         WHERE run_id = ?1 AND organization = ?2 AND connection = ?3 AND patient_id IS NOT NULL
         GROUP BY 1 ORDER BY 1",
    )
    .and_then(|mut s| {
        s.query_map(params![run, conn.organization, conn.connection], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "run patient totals", e))
}

pub(super) fn requests_since(
    c: &mut Connection,
    loc: &str,
    org: &str,
    since: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<(String, LedgerEntry)>> {
    c.prepare_cached(
        "SELECT connection, at, method, url_template, url, resource_type, patient_id, status,
                duration_ms, bytes, resources, error_kind, page_complete, attempt
         FROM sync_requests WHERE organization = ?1 AND at >= ?2 ORDER BY at, id LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![org, ts(since), limit], |r| {
            Ok((
                r.get(0)?,
                LedgerEntry {
                    at: parse_ts(&r.get::<_, String>(1)?),
                    method: r.get(2)?,
                    url_template: r.get(3)?,
                    url: r.get(4)?,
                    resource_type: r.get(5)?,
                    patient_id: r.get(6)?,
                    status: r.get(7)?,
                    duration_ms: r.get(8)?,
                    bytes: r.get::<_, i64>(9)? as u64,
                    resources: r.get::<_, i64>(10)? as u64,
                    error_kind: r.get(11)?,
                    page_complete: r.get(12)?,
                    attempt: r.get(13)?,
                },
            ))
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "requests since", e))
}

pub(super) fn freshness(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
) -> StoreResult<Vec<TypeFreshness>> {
    c.prepare_cached(
        "SELECT resource_type, MAX(last_updated), MAX(fetched_at) FROM resources
         WHERE organization = ?1 AND connection = ?2 AND deleted_at IS NULL
         GROUP BY resource_type ORDER BY resource_type",
    )
    .and_then(|mut s| {
        s.query_map(params![conn.organization, conn.connection], |r| {
            let fetched: Option<String> = r.get(2)?;
            Ok(TypeFreshness {
                resource_type: r.get(0)?,
                newest_last_updated: r.get(1)?,
                newest_fetched_at: fetched.as_deref().map(parse_ts),
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "freshness", e))
}

pub(super) fn upsert_alert(c: &mut Connection, loc: &str, org: &str, a: &Alert) -> StoreResult<()> {
    c.execute(
        "INSERT INTO alerts (organization, connection, rule, subject, state, severity, detail,
            first_seen, last_seen, resolved_at, notified_state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (organization, connection, rule, subject) DO UPDATE SET
            state = excluded.state, severity = excluded.severity, detail = excluded.detail,
            first_seen = excluded.first_seen, last_seen = excluded.last_seen,
            resolved_at = excluded.resolved_at, notified_state = excluded.notified_state",
        params![
            org,
            a.connection,
            a.rule,
            a.subject,
            a.state,
            a.severity,
            a.detail,
            ts(a.first_seen),
            ts(a.last_seen),
            a.resolved_at.map(ts),
            a.notified_state
        ],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "upsert alert", e))
}

pub(super) fn list_alerts(
    c: &mut Connection,
    loc: &str,
    org: &str,
    only_firing: bool,
) -> StoreResult<Vec<Alert>> {
    c.prepare_cached(
        "SELECT connection, rule, subject, state, severity, detail, first_seen, last_seen,
                resolved_at, notified_state
         FROM alerts WHERE organization = ?1 AND (?2 = 0 OR state = 'firing')
         ORDER BY connection, rule, subject",
    )
    .and_then(|mut s| {
        s.query_map(params![org, only_firing], |r| {
            let resolved: Option<String> = r.get(8)?;
            Ok(Alert {
                connection: r.get(0)?,
                rule: r.get(1)?,
                subject: r.get(2)?,
                state: r.get(3)?,
                severity: r.get(4)?,
                detail: r.get(5)?,
                first_seen: parse_ts(&r.get::<_, String>(6)?),
                last_seen: parse_ts(&r.get::<_, String>(7)?),
                resolved_at: resolved.as_deref().map(parse_ts),
                notified_state: r.get(9)?,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "list alerts", e))
}
