//! Inbound event messages and refresh requests in SQLite.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior, params};

use super::{map_err, parse_ts, ts};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

/// An earlier message with the same (sender, control id): id, content hash, bytes (only when
/// it has no hash), received at.
type Earlier = (i64, Option<String>, Option<Vec<u8>>, String);

/// Queues one refresh request: the same row whatever raised it.
pub(super) const ENQUEUE_REFRESH: &str = "INSERT INTO refresh_requests
     (organization, patient_key, connection, reason, source, requested_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Marks a stored message processed, with its error if any; a message already processed is
/// left alone (0 rows), so a second conversion queues nothing again.
const MARK_PROCESSED: &str = "UPDATE inbound_messages SET processed_at = ?3, process_error = ?4
     WHERE organization = ?1 AND id = ?2 AND processed_at IS NULL";

pub(super) fn store_messages(
    c: &mut Connection,
    loc: &str,
    org: &str,
    messages: &[InboundMessage],
) -> StoreResult<Vec<InboundReceipt>> {
    let e = |err| map_err(loc, "store inbound messages", err);
    // IMMEDIATE: take the write lock first, so that a writer in another process makes this
    // wait (busy timeout) instead of failing the read-then-write upgrade at once
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(e)?;
    let mut receipts = Vec::with_capacity(messages.len());
    {
        // every earlier message with this (sender, control id); the bytes only of those stored
        // before schema 9, which have no hash
        let mut find = tx
            .prepare_cached(
                "SELECT id, content_hash, CASE WHEN content_hash IS NULL THEN raw END, received_at
                 FROM inbound_messages WHERE organization = ?1 AND sender = ?2 AND control_id = ?3
                 ORDER BY id",
            )
            .map_err(e)?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO inbound_messages (organization, sender, control_id, content_hash, message_type, received_at, raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(e)?;
        let mut finding = tx
            .prepare_cached(
                "INSERT INTO findings (organization, connection, run_id, at, kind, severity, resource_type, detail)
                 VALUES (?1, ?2, NULL, ?3, ?4, 'warning', NULL, ?5)",
            )
            .map_err(e)?;
        for m in messages {
            let earlier: Vec<Earlier> = find
                .query_map(params![org, m.sender, m.control_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .and_then(|rows| rows.collect())
                .map_err(e)?;
            let same = earlier.iter().find(|(_, hash, raw, _)| match hash {
                Some(h) => *h == m.content_hash,
                None => raw.as_deref() == Some(m.bytes.as_slice()),
            });
            if let Some((id, ..)) = same {
                receipts.push(InboundReceipt {
                    id: *id,
                    duplicate: true,
                    reuses_control_id_of: None,
                });
                continue;
            }
            insert
                .execute(params![
                    org,
                    m.sender,
                    m.control_id,
                    m.content_hash,
                    m.message_type,
                    ts(m.received_at),
                    m.bytes
                ])
                .map_err(e)?;
            let id = tx.last_insert_rowid();
            let reused = earlier.last().map(|(prev, _, _, at)| (*prev, at.clone()));
            if let Some((prev, at)) = &reused {
                finding
                    .execute(params![
                        org,
                        m.connection,
                        ts(Utc::now()),
                        FINDING_CONTROL_ID_REUSED,
                        control_id_reused_detail(m, id, *prev, at),
                    ])
                    .map_err(e)?;
            }
            receipts.push(InboundReceipt {
                id,
                duplicate: false,
                reuses_control_id_of: reused.map(|r| r.0),
            });
        }
    }
    tx.commit().map_err(e)?;
    Ok(receipts)
}

pub(super) fn counts(c: &mut Connection, loc: &str, org: &str) -> StoreResult<InboundCounts> {
    c.query_row(
        "SELECT COUNT(*),
                COALESCE(SUM(processed_at IS NULL), 0),
                COALESCE(SUM(processed_at IS NOT NULL AND process_error IS NULL), 0),
                COALESCE(SUM(processed_at IS NOT NULL AND process_error IS NOT NULL), 0)
         FROM inbound_messages WHERE organization = ?1",
        params![org],
        |r| {
            Ok(InboundCounts {
                total: r.get::<_, i64>(0)? as u64,
                pending: r.get::<_, i64>(1)? as u64,
                converted: r.get::<_, i64>(2)? as u64,
                unconverted: r.get::<_, i64>(3)? as u64,
            })
        },
    )
    .map_err(|e| map_err(loc, "count inbound messages", e))
}

pub(super) fn mark_processed(
    c: &mut Connection,
    loc: &str,
    org: &str,
    id: i64,
    error: Option<&str>,
) -> StoreResult<()> {
    c.execute(
        "UPDATE inbound_messages SET processed_at = ?3, process_error = ?4 WHERE organization = ?1 AND id = ?2",
        params![org, id, ts(Utc::now()), error],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "mark inbound message processed", e))
}

pub(super) fn complete(
    c: &mut Connection,
    loc: &str,
    org: &str,
    outcomes: &[InboundOutcome],
) -> StoreResult<()> {
    let e = |err| map_err(loc, "complete inbound messages", err);
    let now = ts(Utc::now());
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(e)?;
    {
        let mut enqueue = tx.prepare_cached(ENQUEUE_REFRESH).map_err(e)?;
        let mut mark = tx.prepare_cached(MARK_PROCESSED).map_err(e)?;
        for o in outcomes {
            // a message already completed (converted twice) queues nothing again
            if mark.execute(params![org, o.id, now, o.error]).map_err(e)? == 0 {
                continue;
            }
            for r in &o.refresh {
                enqueue
                    .execute(params![
                        org,
                        r.patient_key,
                        r.connection,
                        r.reason,
                        r.source,
                        now
                    ])
                    .map_err(e)?;
            }
        }
    }
    tx.commit().map_err(e)
}

pub(super) fn complete_conversions(
    c: &mut Connection,
    loc: &str,
    org: &str,
    conversions: &[InboundConversion],
) -> StoreResult<WriteSummary> {
    let e = |err| map_err(loc, "complete converted messages", err);
    let now = ts(Utc::now());
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(e)?;
    let mut summary = WriteSummary::default();
    {
        let mut enqueue = tx.prepare_cached(ENQUEUE_REFRESH).map_err(e)?;
        let mut mark = tx.prepare_cached(MARK_PROCESSED).map_err(e)?;
        for conv in conversions {
            let o = &conv.outcome;
            // a message already completed (converted twice) writes and queues nothing again
            if mark.execute(params![org, o.id, now, o.error]).map_err(e)? == 0 {
                continue;
            }
            if !conv.resources.is_empty() {
                let conn = ConnectionRef::new(org, conv.connection.clone());
                summary.add(super::resources::write_in(
                    &tx,
                    loc,
                    &conn,
                    &conv.resources,
                )?);
            }
            for r in &o.refresh {
                enqueue
                    .execute(params![
                        org,
                        r.patient_key,
                        r.connection,
                        r.reason,
                        r.source,
                        now
                    ])
                    .map_err(e)?;
            }
        }
    }
    tx.commit().map_err(e)?;
    Ok(summary)
}

pub(super) fn list_messages(
    c: &mut Connection,
    loc: &str,
    org: &str,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<StoredInboundMessage>> {
    c.prepare_cached(
        "SELECT id, sender, control_id, message_type, received_at, raw, processed_at, process_error, content_hash
         FROM inbound_messages WHERE organization = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![org, after, limit], |r| {
            let processed: Option<String> = r.get(6)?;
            Ok(StoredInboundMessage {
                id: r.get(0)?,
                sender: r.get(1)?,
                control_id: r.get(2)?,
                message_type: r.get(3)?,
                received_at: parse_ts(&r.get::<_, String>(4)?),
                bytes: r.get(5)?,
                processed_at: processed.as_deref().map(parse_ts),
                process_error: r.get(7)?,
                content_hash: r.get(8)?,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "list inbound messages", e))
}

pub(super) fn enqueue_refresh(
    c: &mut Connection,
    loc: &str,
    org: &str,
    r: &RefreshRequest,
) -> StoreResult<i64> {
    c.execute(
        ENQUEUE_REFRESH,
        params![
            org,
            r.patient_key,
            r.connection,
            r.reason,
            r.source,
            ts(Utc::now())
        ],
    )
    .map(|_| c.last_insert_rowid())
    .map_err(|e| map_err(loc, "enqueue refresh", e))
}

pub(super) fn list_refresh(
    c: &mut Connection,
    loc: &str,
    org: &str,
    limit: u32,
) -> StoreResult<Vec<(i64, RefreshRequest, DateTime<Utc>)>> {
    c.prepare_cached(
        "SELECT id, patient_key, connection, reason, source, requested_at FROM refresh_requests
         WHERE organization = ?1 AND handled_at IS NULL ORDER BY id LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![org, limit], |r| {
            Ok((
                r.get(0)?,
                RefreshRequest {
                    patient_key: r.get(1)?,
                    connection: r.get(2)?,
                    reason: r.get(3)?,
                    source: r.get(4)?,
                },
                parse_ts(&r.get::<_, String>(5)?),
            ))
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "list refresh requests", e))
}
