//! The refresh-request work queue, schedule slots and identifier lookup in PostgreSQL. A claim
//! locks the oldest claimable request with `FOR UPDATE SKIP LOCKED`, so concurrent workers
//! never wait on, or take, each other's work.

use chrono::{DateTime, Utc};

use super::{PgStore, map_err};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

fn secs(d: std::time::Duration) -> f64 {
    // a lease beyond a year is as good as forever and keeps the interval arithmetic finite
    d.as_secs_f64().min(365.0 * 86_400.0)
}

fn run_ids_text(ids: &[RunId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_run_ids(s: Option<&str>) -> Vec<RunId> {
    s.unwrap_or_default()
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect()
}

const CLAIMABLE: &str = "organization = $1 AND handled_at IS NULL
    AND (claimed_by IS NULL OR lease_until < now())
    AND (not_before IS NULL OR not_before <= now())";

pub(super) async fn claim(
    s: &PgStore,
    org: &str,
    holder: &str,
    ttl: std::time::Duration,
) -> StoreResult<Option<ClaimedRefresh>> {
    let e = |err| map_err(&s.location, "claim refresh request", err);
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(e)?;
    let first = tx
        .query_opt(
            &format!(
                "SELECT id, patient_key, connection, reason, source, requested_at, attempts
                 FROM refresh_requests WHERE {CLAIMABLE} ORDER BY id LIMIT 1
                 FOR UPDATE SKIP LOCKED"
            ),
            &[&org],
        )
        .await
        .map_err(e)?;
    let Some(first) = first else {
        return Ok(None);
    };
    let id: i64 = first.get(0);
    let request = RefreshRequest {
        patient_key: first.get(1),
        connection: first.get(2),
        reason: first.get(3),
        source: first.get(4),
    };
    let requested_at: DateTime<Utc> = first.get(5);
    let attempts: i32 = first.get(6);
    let rows = tx
        .query(
            &format!(
                "SELECT id FROM refresh_requests WHERE {CLAIMABLE}
                   AND patient_key IS NOT DISTINCT FROM $2 AND connection IS NOT DISTINCT FROM $3
                 ORDER BY id FOR UPDATE SKIP LOCKED"
            ),
            &[&org, &request.patient_key, &request.connection],
        )
        .await
        .map_err(e)?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    if !ids.contains(&id) {
        ids.insert(0, id);
    }
    tx.execute(
        "UPDATE refresh_requests SET claimed_by = $3,
            lease_until = now() + make_interval(secs => $4),
            coalesced_into = CASE WHEN id = $5 THEN NULL ELSE $5 END
         WHERE organization = $1 AND id = ANY($2)",
        &[&org, &ids, &holder, &secs(ttl), &id],
    )
    .await
    .map_err(e)?;
    tx.commit().await.map_err(e)?;
    Ok(Some(ClaimedRefresh {
        ids,
        request,
        requested_at,
        attempts: attempts.max(0) as u32,
    }))
}

pub(super) async fn renew(
    s: &PgStore,
    org: &str,
    ids: &[i64],
    holder: &str,
    ttl: std::time::Duration,
) -> StoreResult<bool> {
    let c = s.client().await?;
    let n = c
        .execute(
            "UPDATE refresh_requests SET lease_until = now() + make_interval(secs => $4)
             WHERE organization = $1 AND id = ANY($2) AND claimed_by = $3 AND handled_at IS NULL",
            &[&org, &ids, &holder, &secs(ttl)],
        )
        .await
        .map_err(|e| map_err(&s.location, "renew refresh claim", e))?;
    Ok(n as usize == ids.len())
}

pub(super) async fn release(
    s: &PgStore,
    org: &str,
    ids: &[i64],
    holder: &str,
    retry_in: std::time::Duration,
    failed_attempt: bool,
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "UPDATE refresh_requests SET claimed_by = NULL, lease_until = NULL, coalesced_into = NULL,
            not_before = now() + make_interval(secs => $4), attempts = attempts + $5
         WHERE organization = $1 AND id = ANY($2) AND claimed_by = $3 AND handled_at IS NULL",
        &[
            &org,
            &ids,
            &holder,
            &secs(retry_in),
            &i32::from(failed_attempt),
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "release refresh claim", e))
}

pub(super) async fn finish(
    s: &PgStore,
    org: &str,
    ids: &[i64],
    holder: &str,
    result: &RefreshResult,
) -> StoreResult<bool> {
    let e = |err| map_err(&s.location, "finish refresh request", err);
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(e)?;
    let held = tx
        .query(
            "SELECT id FROM refresh_requests
             WHERE organization = $1 AND id = ANY($2) AND claimed_by = $3 AND handled_at IS NULL
             FOR UPDATE",
            &[&org, &ids, &holder],
        )
        .await
        .map_err(e)?;
    if held.len() != ids.len() {
        return Ok(false);
    }
    tx.execute(
        "UPDATE refresh_requests SET handled_at = now(), outcome = $3, detail = $4, run_ids = $5,
            lease_until = NULL
         WHERE organization = $1 AND id = ANY($2)",
        &[
            &org,
            &ids,
            &result.outcome.as_str(),
            &result.detail,
            &run_ids_text(&result.run_ids),
        ],
    )
    .await
    .map_err(e)?;
    tx.commit().await.map_err(e)?;
    Ok(true)
}

/// The newest requests of `org` first; only request `id` when one is given.
pub(super) async fn recent(
    s: &PgStore,
    org: &str,
    id: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<RefreshRecord>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT id, patient_key, connection, reason, source, requested_at, claimed_by,
                lease_until >= now(), attempts, handled_at, outcome, detail, run_ids, coalesced_into
             FROM refresh_requests WHERE organization = $1 AND ($3::BIGINT IS NULL OR id = $3)
             ORDER BY id DESC LIMIT $2",
            &[&org, &(limit as i64), &id],
        )
        .await
        .map_err(|e| map_err(&s.location, "list refresh requests", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let claimed_by: Option<String> = r.get(6);
            let live: Option<bool> = r.get(7);
            let handled: Option<DateTime<Utc>> = r.get(9);
            let outcome: Option<String> = r.get(10);
            let run_ids: Option<String> = r.get(12);
            let attempts: i32 = r.get(8);
            RefreshRecord {
                id: r.get(0),
                request: RefreshRequest {
                    patient_key: r.get(1),
                    connection: r.get(2),
                    reason: r.get(3),
                    source: r.get(4),
                },
                requested_at: r.get(5),
                state: if handled.is_some() {
                    "done"
                } else if claimed_by.is_some() && live == Some(true) {
                    "claimed"
                } else {
                    "pending"
                }
                .to_string(),
                claimed_by,
                attempts: attempts.max(0) as u32,
                handled_at: handled,
                outcome: outcome.as_deref().and_then(RefreshOutcome::parse),
                detail: r.get(11),
                run_ids: parse_run_ids(run_ids.as_deref()),
                coalesced_into: r.get(13),
            }
        })
        .collect())
}

pub(super) async fn schedule_last_due(
    s: &PgStore,
    conn: &ConnectionRef,
) -> StoreResult<Option<DateTime<Utc>>> {
    let c = s.client().await?;
    let row = c
        .query_opt(
            "SELECT last_due FROM schedules WHERE organization = $1 AND connection = $2",
            &[&conn.organization, &conn.connection],
        )
        .await
        .map_err(|e| map_err(&s.location, "read schedule", e))?;
    Ok(row.map(|r| r.get(0)))
}

pub(super) async fn fire_schedule(
    s: &PgStore,
    conn: &ConnectionRef,
    previous: Option<DateTime<Utc>>,
    due: DateTime<Utc>,
    request: &RefreshRequest,
) -> StoreResult<Option<i64>> {
    let e = |err| map_err(&s.location, "fire schedule", err);
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(e)?;
    let n = match previous {
        None => {
            tx.execute(
                "INSERT INTO schedules (organization, connection, last_due) VALUES ($1, $2, $3)
                 ON CONFLICT (organization, connection) DO NOTHING",
                &[&conn.organization, &conn.connection, &due],
            )
            .await
        }
        Some(p) => {
            tx.execute(
                "UPDATE schedules SET last_due = $4
                 WHERE organization = $1 AND connection = $2 AND last_due = $3",
                &[&conn.organization, &conn.connection, &p, &due],
            )
            .await
        }
    }
    .map_err(e)?;
    if n != 1 {
        return Ok(None);
    }
    let row = tx
        .query_one(
            "INSERT INTO refresh_requests (organization, patient_key, connection, reason, source, requested_at)
             VALUES ($1, $2, $3, $4, $5, now()) RETURNING id",
            &[
                &conn.organization,
                &request.patient_key,
                &request.connection,
                &request.reason,
                &request.source,
            ],
        )
        .await
        .map_err(e)?;
    tx.commit().await.map_err(e)?;
    Ok(Some(row.get(0)))
}

pub(super) async fn find_by_identifier(
    s: &PgStore,
    org: &str,
    resource_type: &str,
    system: &str,
    value: &str,
) -> StoreResult<Vec<IdentifiedResource>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT DISTINCT connection, logical_id FROM resource_identifiers
             WHERE organization = $1 AND resource_type = $2 AND system = $3 AND value = $4
             ORDER BY connection, logical_id",
            &[&org, &resource_type, &system, &value],
        )
        .await
        .map_err(|e| map_err(&s.location, "find by identifier", e))?;
    Ok(rows
        .iter()
        .map(|r| IdentifiedResource {
            connection: r.get(0),
            logical_id: r.get(1),
        })
        .collect())
}
