//! Inbound event messages and refresh requests in SQLite.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{map_err, parse_ts, ts};
use crate::error::StoreResult;
use crate::model::*;

pub(super) fn store_messages(
    c: &mut Connection,
    loc: &str,
    org: &str,
    messages: &[InboundMessage],
) -> StoreResult<Vec<InboundReceipt>> {
    let e = |err| map_err(loc, "store inbound messages", err);
    let tx = c.transaction().map_err(e)?;
    let mut receipts = Vec::with_capacity(messages.len());
    {
        let mut find = tx
            .prepare_cached(
                "SELECT id FROM inbound_messages WHERE organization = ?1 AND sender = ?2 AND control_id = ?3",
            )
            .map_err(e)?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO inbound_messages (organization, sender, control_id, message_type, received_at, raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(e)?;
        for m in messages {
            let existing: Option<i64> = find
                .query_row(params![org, m.sender, m.control_id], |r| r.get(0))
                .optional()
                .map_err(e)?;
            match existing {
                Some(id) => receipts.push(InboundReceipt {
                    id,
                    duplicate: true,
                }),
                None => {
                    insert
                        .execute(params![
                            org,
                            m.sender,
                            m.control_id,
                            m.message_type,
                            ts(m.received_at),
                            m.bytes
                        ])
                        .map_err(e)?;
                    receipts.push(InboundReceipt {
                        id: tx.last_insert_rowid(),
                        duplicate: false,
                    });
                }
            }
        }
    }
    tx.commit().map_err(e)?;
    Ok(receipts)
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
    let tx = c.transaction().map_err(e)?;
    {
        let mut enqueue = tx
            .prepare_cached(
                "INSERT INTO refresh_requests (organization, patient_key, connection, reason, source, requested_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(e)?;
        let mut mark = tx
            .prepare_cached(
                "UPDATE inbound_messages SET processed_at = ?3, process_error = ?4
                 WHERE organization = ?1 AND id = ?2 AND processed_at IS NULL",
            )
            .map_err(e)?;
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

pub(super) fn list_messages(
    c: &mut Connection,
    loc: &str,
    org: &str,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<StoredInboundMessage>> {
    c.prepare_cached(
        "SELECT id, sender, control_id, message_type, received_at, raw, processed_at, process_error
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
        "INSERT INTO refresh_requests (organization, patient_key, connection, reason, source, requested_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![org, r.patient_key, r.connection, r.reason, r.source, ts(Utc::now())],
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

pub(super) fn complete_refresh(
    c: &mut Connection,
    loc: &str,
    org: &str,
    id: i64,
) -> StoreResult<()> {
    c.execute(
        "UPDATE refresh_requests SET handled_at = ?3 WHERE organization = ?1 AND id = ?2",
        params![org, id, ts(Utc::now())],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "complete refresh", e))
}
