//! The refresh-request work queue, schedule slots and identifier lookup in SQLite. Claims run
//! in IMMEDIATE transactions: the write lock is taken before the read, so two processes never
//! claim the same request.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{map_err, parse_ts, ts};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

fn later(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn run_ids_text(ids: &[RunId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn parse_run_ids(s: Option<&str>) -> Vec<RunId> {
    s.unwrap_or_default()
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect()
}

/// Requests a holder may take now: not closed, not held under a live lease, not waiting.
const CLAIMABLE: &str = "organization = ?1 AND handled_at IS NULL
    AND (claimed_by IS NULL OR lease_until < ?2)
    AND (not_before IS NULL OR not_before <= ?2)";

pub(super) fn claim(
    c: &mut Connection,
    loc: &str,
    org: &str,
    holder: &str,
    ttl: std::time::Duration,
) -> StoreResult<Option<ClaimedRefresh>> {
    let e = |err| map_err(loc, "claim refresh request", err);
    let now = Utc::now();
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(e)?;
    let first = tx
        .query_row(
            &format!(
                "SELECT id, patient_key, connection, reason, source, requested_at, attempts
                 FROM refresh_requests WHERE {CLAIMABLE} ORDER BY id LIMIT 1"
            ),
            params![org, ts(now)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    RefreshRequest {
                        patient_key: r.get(1)?,
                        connection: r.get(2)?,
                        reason: r.get(3)?,
                        source: r.get(4)?,
                    },
                    parse_ts(&r.get::<_, String>(5)?),
                    r.get::<_, u32>(6)?,
                ))
            },
        )
        .optional()
        .map_err(e)?;
    let Some((id, request, requested_at, attempts)) = first else {
        return Ok(None);
    };
    // the others for the same patient and connection (IS: NULL equals NULL) ride along
    let ids: Vec<i64> = {
        let mut s = tx
            .prepare_cached(&format!(
                "SELECT id FROM refresh_requests WHERE {CLAIMABLE}
                   AND patient_key IS ?3 AND connection IS ?4 ORDER BY id"
            ))
            .map_err(e)?;
        s.query_map(
            params![org, ts(now), request.patient_key, request.connection],
            |r| r.get(0),
        )
        .and_then(|rows| rows.collect::<Result<Vec<i64>, _>>())
        .map_err(e)?
    };
    {
        let mut mark = tx
            .prepare_cached(
                "UPDATE refresh_requests SET claimed_by = ?3, lease_until = ?4,
                    coalesced_into = CASE WHEN id = ?5 THEN NULL ELSE ?5 END
                 WHERE organization = ?1 AND id = ?2",
            )
            .map_err(e)?;
        for i in &ids {
            mark.execute(params![org, i, holder, ts(later(now, ttl)), id])
                .map_err(e)?;
        }
    }
    tx.commit().map_err(e)?;
    Ok(Some(ClaimedRefresh {
        ids,
        request,
        requested_at,
        attempts,
    }))
}

pub(super) fn renew(
    c: &mut Connection,
    loc: &str,
    org: &str,
    ids: &[i64],
    holder: &str,
    ttl: std::time::Duration,
) -> StoreResult<bool> {
    let e = |err| map_err(loc, "renew refresh claim", err);
    let until = ts(later(Utc::now(), ttl));
    let tx = c.transaction().map_err(e)?;
    let mut held = true;
    {
        let mut s = tx
            .prepare_cached(
                "UPDATE refresh_requests SET lease_until = ?4
                 WHERE organization = ?1 AND id = ?2 AND claimed_by = ?3 AND handled_at IS NULL",
            )
            .map_err(e)?;
        for i in ids {
            held &= s.execute(params![org, i, holder, until]).map_err(e)? == 1;
        }
    }
    tx.commit().map_err(e)?;
    Ok(held)
}

pub(super) fn release(
    c: &mut Connection,
    loc: &str,
    org: &str,
    ids: &[i64],
    holder: &str,
    retry_in: std::time::Duration,
    failed_attempt: bool,
) -> StoreResult<()> {
    let e = |err| map_err(loc, "release refresh claim", err);
    let not_before = ts(later(Utc::now(), retry_in));
    let tx = c.transaction().map_err(e)?;
    {
        let mut s = tx
            .prepare_cached(
                "UPDATE refresh_requests SET claimed_by = NULL, lease_until = NULL,
                    coalesced_into = NULL, not_before = ?4, attempts = attempts + ?5
                 WHERE organization = ?1 AND id = ?2 AND claimed_by = ?3 AND handled_at IS NULL",
            )
            .map_err(e)?;
        for i in ids {
            s.execute(params![
                org,
                i,
                holder,
                not_before,
                i64::from(failed_attempt)
            ])
            .map_err(e)?;
        }
    }
    tx.commit().map_err(e)
}

pub(super) fn finish(
    c: &mut Connection,
    loc: &str,
    org: &str,
    ids: &[i64],
    holder: &str,
    result: &RefreshResult,
) -> StoreResult<bool> {
    let e = |err| map_err(loc, "finish refresh request", err);
    let now = ts(Utc::now());
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(e)?;
    // all or nothing: a holder whose claim on any of them lapsed closes none
    let held: i64 = {
        let mut s = tx
            .prepare_cached(
                "SELECT count(*) FROM refresh_requests
                 WHERE organization = ?1 AND id = ?2 AND claimed_by = ?3 AND handled_at IS NULL",
            )
            .map_err(e)?;
        let mut n = 0;
        for i in ids {
            n += s
                .query_row(params![org, i, holder], |r| r.get::<_, i64>(0))
                .map_err(e)?;
        }
        n
    };
    if held != ids.len() as i64 {
        return Ok(false);
    }
    {
        let mut s = tx
            .prepare_cached(
                "UPDATE refresh_requests SET handled_at = ?3, outcome = ?4, detail = ?5,
                    run_ids = ?6, lease_until = NULL
                 WHERE organization = ?1 AND id = ?2",
            )
            .map_err(e)?;
        for i in ids {
            s.execute(params![
                org,
                i,
                now,
                result.outcome.as_str(),
                result.detail,
                run_ids_text(&result.run_ids)
            ])
            .map_err(e)?;
        }
    }
    tx.commit().map_err(e)?;
    Ok(true)
}

/// The newest requests of `org` first; only request `id` when one is given.
pub(super) fn recent(
    c: &mut Connection,
    loc: &str,
    org: &str,
    id: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<RefreshRecord>> {
    let now = Utc::now();
    c.prepare_cached(
        "SELECT id, patient_key, connection, reason, source, requested_at, claimed_by,
            lease_until, attempts, handled_at, outcome, detail, run_ids, coalesced_into
         FROM refresh_requests WHERE organization = ?1 AND (?3 IS NULL OR id = ?3)
         ORDER BY id DESC LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![org, limit, id], |r| {
            let claimed_by: Option<String> = r.get(6)?;
            let lease: Option<String> = r.get(7)?;
            let handled: Option<String> = r.get(9)?;
            let outcome: Option<String> = r.get(10)?;
            let run_ids: Option<String> = r.get(12)?;
            let live_claim = lease.as_deref().map(parse_ts).is_some_and(|l| l >= now);
            Ok(RefreshRecord {
                id: r.get(0)?,
                request: RefreshRequest {
                    patient_key: r.get(1)?,
                    connection: r.get(2)?,
                    reason: r.get(3)?,
                    source: r.get(4)?,
                },
                requested_at: parse_ts(&r.get::<_, String>(5)?),
                state: if handled.is_some() {
                    "done"
                } else if claimed_by.is_some() && live_claim {
                    "claimed"
                } else {
                    "pending"
                }
                .to_string(),
                claimed_by,
                attempts: r.get(8)?,
                handled_at: handled.as_deref().map(parse_ts),
                outcome: outcome.as_deref().and_then(RefreshOutcome::parse),
                detail: r.get(11)?,
                run_ids: parse_run_ids(run_ids.as_deref()),
                coalesced_into: r.get(13)?,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "list refresh requests", e))
}

pub(super) fn schedule_last_due(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
) -> StoreResult<Option<DateTime<Utc>>> {
    c.query_row(
        "SELECT last_due FROM schedules WHERE organization = ?1 AND connection = ?2",
        params![conn.organization, conn.connection],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .map(|v| v.as_deref().map(parse_ts))
    .map_err(|e| map_err(loc, "read schedule", e))
}

pub(super) fn fire_schedule(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    previous: Option<DateTime<Utc>>,
    due: DateTime<Utc>,
    request: &RefreshRequest,
) -> StoreResult<Option<i64>> {
    let e = |err| map_err(loc, "fire schedule", err);
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(e)?;
    let n = match previous {
        None => tx.execute(
            "INSERT INTO schedules (organization, connection, last_due) VALUES (?1, ?2, ?3)
             ON CONFLICT (organization, connection) DO NOTHING",
            params![conn.organization, conn.connection, ts(due)],
        ),
        Some(p) => tx.execute(
            "UPDATE schedules SET last_due = ?4
             WHERE organization = ?1 AND connection = ?2 AND last_due = ?3",
            params![conn.organization, conn.connection, ts(p), ts(due)],
        ),
    }
    .map_err(e)?;
    if n != 1 {
        return Ok(None);
    }
    tx.execute(
        super::inbound::ENQUEUE_REFRESH,
        params![
            conn.organization,
            request.patient_key,
            request.connection,
            request.reason,
            request.source,
            ts(Utc::now())
        ],
    )
    .map_err(e)?;
    let id = tx.last_insert_rowid();
    tx.commit().map_err(e)?;
    Ok(Some(id))
}

pub(super) fn find_by_identifier(
    c: &mut Connection,
    loc: &str,
    org: &str,
    resource_type: &str,
    system: &str,
    value: &str,
) -> StoreResult<Vec<IdentifiedResource>> {
    c.prepare_cached(
        "SELECT DISTINCT connection, logical_id FROM resource_identifiers
         WHERE organization = ?1 AND resource_type = ?2 AND system = ?3 AND value = ?4
         ORDER BY connection, logical_id",
    )
    .and_then(|mut s| {
        s.query_map(params![org, resource_type, system, value], |r| {
            Ok(IdentifiedResource {
                connection: r.get(0)?,
                logical_id: r.get(1)?,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "find by identifier", e))
}
