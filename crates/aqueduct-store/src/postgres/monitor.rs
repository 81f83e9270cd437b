//! Aggregates for monitoring, and alert state, in PostgreSQL.

use chrono::{DateTime, Utc};

use super::{PgStore, map_err};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

pub(super) async fn run_type_totals(
    s: &PgStore,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<Vec<RunTypeTotals>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT COALESCE(resource_type, ''), COUNT(*), COALESCE(SUM(resources), 0)::BIGINT,
                    COUNT(*) FILTER (WHERE error_kind IS NOT NULL),
                    COUNT(*) FILTER (WHERE NOT page_complete)
             FROM sync_requests WHERE run_id = $1 AND organization = $2 AND connection = $3
             GROUP BY 1 ORDER BY COALESCE(resource_type, '') COLLATE \"C\"",
            &[&run, &conn.organization, &conn.connection],
        )
        .await
        .map_err(|e| map_err(&s.location, "run type totals", e))?;
    Ok(rows
        .iter()
        .map(|r| RunTypeTotals {
            resource_type: r.get(0),
            requests: r.get::<_, i64>(1) as u64,
            resources: r.get::<_, i64>(2) as u64,
            errors: r.get::<_, i64>(3) as u64,
            incomplete_pages: r.get::<_, i64>(4) as u64,
        })
        .collect())
}

pub(super) async fn run_patient_totals(
    s: &PgStore,
    conn: &ConnectionRef,
    run: RunId,
) -> StoreResult<Vec<(String, u64)>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT patient_id, COALESCE(SUM(resources), 0)::BIGINT FROM sync_requests
             WHERE run_id = $1 AND organization = $2 AND connection = $3 AND patient_id IS NOT NULL
             GROUP BY 1 ORDER BY patient_id COLLATE \"C\"",
            &[&run, &conn.organization, &conn.connection],
        )
        .await
        .map_err(|e| map_err(&s.location, "run patient totals", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect())
}

pub(super) async fn requests_since(
    s: &PgStore,
    org: &str,
    since: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<(String, LedgerEntry)>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT connection, at, method, url_template, url, resource_type, patient_id, status,
                    duration_ms, bytes, resources, error_kind, page_complete, attempt
             FROM sync_requests WHERE organization = $1 AND at >= $2 ORDER BY at, id LIMIT $3",
            &[&org, &since, &(limit as i64)],
        )
        .await
        .map_err(|e| map_err(&s.location, "requests since", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                LedgerEntry {
                    at: r.get(1),
                    method: r.get(2),
                    url_template: r.get(3),
                    url: r.get(4),
                    resource_type: r.get(5),
                    patient_id: r.get(6),
                    status: r
                        .get::<_, Option<i32>>(7)
                        .and_then(|v| u16::try_from(v).ok()),
                    duration_ms: r.get(8),
                    bytes: r.get::<_, i64>(9) as u64,
                    resources: r.get::<_, i64>(10) as u64,
                    error_kind: r.get(11),
                    page_complete: r.get(12),
                    attempt: r.get::<_, i32>(13) as u32,
                },
            )
        })
        .collect())
}

pub(super) async fn freshness(
    s: &PgStore,
    conn: &ConnectionRef,
) -> StoreResult<Vec<TypeFreshness>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT resource_type, MAX(last_updated COLLATE \"C\"), MAX(fetched_at) FROM resources
             WHERE organization = $1 AND connection = $2 AND deleted_at IS NULL
             GROUP BY resource_type ORDER BY resource_type COLLATE \"C\"",
            &[&conn.organization, &conn.connection],
        )
        .await
        .map_err(|e| map_err(&s.location, "freshness", e))?;
    Ok(rows
        .iter()
        .map(|r| TypeFreshness {
            resource_type: r.get(0),
            newest_last_updated: r.get(1),
            newest_fetched_at: r.get(2),
        })
        .collect())
}

pub(super) async fn upsert_alert(s: &PgStore, org: &str, a: &Alert) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "INSERT INTO alerts (organization, connection, rule, subject, state, severity, detail,
            first_seen, last_seen, resolved_at, notified_state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (organization, connection, rule, subject) DO UPDATE SET
            state = EXCLUDED.state, severity = EXCLUDED.severity, detail = EXCLUDED.detail,
            first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
            resolved_at = EXCLUDED.resolved_at, notified_state = EXCLUDED.notified_state",
        &[
            &org,
            &a.connection,
            &a.rule,
            &a.subject,
            &a.state,
            &a.severity,
            &a.detail,
            &a.first_seen,
            &a.last_seen,
            &a.resolved_at,
            &a.notified_state,
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "upsert alert", e))
}

pub(super) async fn list_alerts(
    s: &PgStore,
    org: &str,
    only_firing: bool,
) -> StoreResult<Vec<Alert>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT connection, rule, subject, state, severity, detail, first_seen, last_seen,
                    resolved_at, notified_state
             FROM alerts WHERE organization = $1 AND (NOT $2 OR state = 'firing')
             ORDER BY connection COLLATE \"C\", rule COLLATE \"C\", subject COLLATE \"C\"",
            &[&org, &only_firing],
        )
        .await
        .map_err(|e| map_err(&s.location, "list alerts", e))?;
    Ok(rows
        .iter()
        .map(|r| Alert {
            connection: r.get(0),
            rule: r.get(1),
            subject: r.get(2),
            state: r.get(3),
            severity: r.get(4),
            detail: r.get(5),
            first_seen: r.get(6),
            last_seen: r.get(7),
            resolved_at: r.get(8),
            notified_state: r.get(9),
        })
        .collect())
}
