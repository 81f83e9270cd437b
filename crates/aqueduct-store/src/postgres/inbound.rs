//! Inbound event messages and refresh requests in PostgreSQL.

use chrono::{DateTime, Utc};

use super::resources::Attempt;
use super::{PgStore, map_err};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

pub(super) async fn store_messages(
    s: &PgStore,
    org: &str,
    messages: &[InboundMessage],
) -> StoreResult<Vec<InboundReceipt>> {
    let e = |err| map_err(&s.location, "store inbound messages", err);
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(e)?;
    // every earlier message with this (sender, control id); the bytes only of those stored
    // before schema 9, which have no hash
    let find = tx
        .prepare_cached(
            "SELECT id, content_hash, CASE WHEN content_hash IS NULL THEN raw END, received_at
             FROM inbound_messages WHERE organization = $1 AND sender = $2 AND control_id = $3
             ORDER BY id",
        )
        .await
        .map_err(e)?;
    // a concurrent listener may insert the same message first: the key settles it
    let insert = tx
        .prepare_cached(
            "INSERT INTO inbound_messages (organization, sender, control_id, content_hash, message_type, received_at, raw)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (organization, sender, control_id, content_hash) DO NOTHING RETURNING id",
        )
        .await
        .map_err(e)?;
    let by_hash = tx
        .prepare_cached(
            "SELECT id FROM inbound_messages
             WHERE organization = $1 AND sender = $2 AND control_id = $3 AND content_hash = $4",
        )
        .await
        .map_err(e)?;
    let finding = tx
        .prepare_cached(
            "INSERT INTO findings (organization, connection, run_id, at, kind, severity, resource_type, detail)
             VALUES ($1, $2, NULL, now(), $3, 'warning', NULL, $4)",
        )
        .await
        .map_err(e)?;
    let mut receipts = Vec::with_capacity(messages.len());
    for m in messages {
        let earlier = tx
            .query(&find, &[&org, &m.sender, &m.control_id])
            .await
            .map_err(e)?;
        let same = earlier
            .iter()
            .find(|r| match r.get::<_, Option<String>>(1) {
                Some(h) => h == m.content_hash,
                None => r.get::<_, Option<Vec<u8>>>(2).as_deref() == Some(m.bytes.as_slice()),
            });
        if let Some(row) = same {
            receipts.push(InboundReceipt {
                id: row.get(0),
                duplicate: true,
                reuses_control_id_of: None,
            });
            continue;
        }
        let inserted = tx
            .query_opt(
                &insert,
                &[
                    &org,
                    &m.sender,
                    &m.control_id,
                    &m.content_hash,
                    &m.message_type,
                    &m.received_at,
                    &m.bytes,
                ],
            )
            .await
            .map_err(e)?;
        let Some(row) = inserted else {
            let row = tx
                .query_one(&by_hash, &[&org, &m.sender, &m.control_id, &m.content_hash])
                .await
                .map_err(e)?;
            receipts.push(InboundReceipt {
                id: row.get(0),
                duplicate: true,
                reuses_control_id_of: None,
            });
            continue;
        };
        let id: i64 = row.get(0);
        let reused = earlier.last().map(|r| {
            let at: DateTime<Utc> = r.get(3);
            (r.get::<_, i64>(0), at)
        });
        if let Some((prev, at)) = &reused {
            let detail = control_id_reused_detail(m, id, *prev, &at.to_rfc3339());
            tx.execute(
                &finding,
                &[&org, &m.connection, &FINDING_CONTROL_ID_REUSED, &detail],
            )
            .await
            .map_err(e)?;
        }
        receipts.push(InboundReceipt {
            id,
            duplicate: false,
            reuses_control_id_of: reused.map(|r| r.0),
        });
    }
    tx.commit().await.map_err(e)?;
    Ok(receipts)
}

pub(super) async fn counts(s: &PgStore, org: &str) -> StoreResult<InboundCounts> {
    let c = s.client().await?;
    let row = c
        .query_one(
            "SELECT COUNT(*),
                    COUNT(*) FILTER (WHERE processed_at IS NULL),
                    COUNT(*) FILTER (WHERE processed_at IS NOT NULL AND process_error IS NULL),
                    COUNT(*) FILTER (WHERE processed_at IS NOT NULL AND process_error IS NOT NULL)
             FROM inbound_messages WHERE organization = $1",
            &[&org],
        )
        .await
        .map_err(|e| map_err(&s.location, "count inbound messages", e))?;
    let n = |i: usize| row.get::<_, i64>(i) as u64;
    Ok(InboundCounts {
        total: n(0),
        pending: n(1),
        converted: n(2),
        unconverted: n(3),
    })
}

pub(super) async fn mark_processed(
    s: &PgStore,
    org: &str,
    id: i64,
    error: Option<&str>,
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "UPDATE inbound_messages SET processed_at = now(), process_error = $3 WHERE organization = $1 AND id = $2",
        &[&org, &id, &error],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "mark inbound message processed", e))
}

pub(super) async fn complete(
    s: &PgStore,
    org: &str,
    outcomes: &[InboundOutcome],
) -> StoreResult<()> {
    let e = |err| map_err(&s.location, "complete inbound messages", err);
    let ids: Vec<i64> = outcomes.iter().map(|o| o.id).collect();
    let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.error.as_deref()).collect();
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(e)?;
    // only messages not completed before: a message converted twice queues nothing again
    let marked: std::collections::HashSet<i64> = tx
        .query(
            "UPDATE inbound_messages m SET processed_at = now(), process_error = u.err
             FROM UNNEST($2::bigint[], $3::text[]) AS u(id, err)
             WHERE m.organization = $1 AND m.id = u.id AND m.processed_at IS NULL
             RETURNING m.id",
            &[&org, &ids, &errors],
        )
        .await
        .map_err(e)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let requests: Vec<&RefreshRequest> = outcomes
        .iter()
        .filter(|o| marked.contains(&o.id))
        .flat_map(|o| &o.refresh)
        .collect();
    enqueue_in(&tx, org, &requests).await.map_err(e)?;
    tx.commit().await.map_err(e)
}

/// Queues refresh requests inside the caller's transaction, in the order given.
async fn enqueue_in(
    tx: &deadpool_postgres::Transaction<'_>,
    org: &str,
    requests: &[&RefreshRequest],
) -> Result<(), tokio_postgres::Error> {
    if !requests.is_empty() {
        let keys: Vec<Option<&str>> = requests.iter().map(|r| r.patient_key.as_deref()).collect();
        let connections: Vec<Option<&str>> =
            requests.iter().map(|r| r.connection.as_deref()).collect();
        let reasons: Vec<&str> = requests.iter().map(|r| r.reason.as_str()).collect();
        let sources: Vec<&str> = requests.iter().map(|r| r.source.as_str()).collect();
        // WITH ORDINALITY keeps the queue in conversion order
        tx.execute(
            "INSERT INTO refresh_requests (organization, patient_key, connection, reason, source, requested_at)
             SELECT $1, k, c, r, s, now()
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(k, c, r, s, n)
             ORDER BY n",
            &[&org, &keys, &connections, &reasons, &sources],
        )
        .await?;
    }
    Ok(())
}

/// Records converted messages in one transaction (see `Inbox::complete_conversions`); redone
/// with upserts when another writer inserted one of the resources meanwhile, as
/// `resources::write` is.
pub(super) async fn complete_conversions(
    s: &PgStore,
    org: &str,
    conversions: &[InboundConversion],
) -> StoreResult<WriteSummary> {
    match conversions_attempt(s, org, conversions, false).await {
        Err(a) if a.is_unique_violation() => conversions_attempt(s, org, conversions, true)
            .await
            .map_err(|a| a.into_store(&s.location)),
        other => other.map_err(|a| a.into_store(&s.location)),
    }
}

async fn conversions_attempt(
    s: &PgStore,
    org: &str,
    conversions: &[InboundConversion],
    upsert_all: bool,
) -> Result<WriteSummary, Attempt> {
    let e = Attempt::Pg;
    // a message listed twice counts once, as its first entry (as one by one: the second
    // finds it processed)
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<&InboundConversion> = conversions
        .iter()
        .filter(|c| seen.insert(c.outcome.id))
        .collect();
    let ids: Vec<i64> = firsts.iter().map(|c| c.outcome.id).collect();
    let errors: Vec<Option<&str>> = firsts.iter().map(|c| c.outcome.error.as_deref()).collect();
    let mut c = s.client().await.map_err(Attempt::Store)?;
    let tx = c.transaction().await.map_err(e)?;
    // only messages not completed before: one converted twice writes and queues nothing again
    let marked: std::collections::HashSet<i64> = tx
        .query(
            "UPDATE inbound_messages m SET processed_at = now(), process_error = u.err
             FROM UNNEST($2::bigint[], $3::text[]) AS u(id, err)
             WHERE m.organization = $1 AND m.id = u.id AND m.processed_at IS NULL
             RETURNING m.id",
            &[&org, &ids, &errors],
        )
        .await
        .map_err(e)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let todo: Vec<&InboundConversion> = firsts
        .into_iter()
        .filter(|c| marked.contains(&c.outcome.id))
        .collect();
    // one set-based write per connection, each in message order (a key written twice keeps
    // every version, the last one current)
    let mut by_connection: std::collections::BTreeMap<&str, Vec<RawResource>> =
        std::collections::BTreeMap::new();
    for conv in &todo {
        if !conv.resources.is_empty() {
            by_connection
                .entry(conv.connection.as_str())
                .or_default()
                .extend(conv.resources.iter().cloned());
        }
    }
    let mut summary = WriteSummary::default();
    for (connection, batch) in by_connection {
        let conn = ConnectionRef::new(org, connection);
        summary.add(super::resources::write_in(&tx, &conn, &batch, upsert_all).await?);
    }
    let requests: Vec<&RefreshRequest> = todo.iter().flat_map(|c| &c.outcome.refresh).collect();
    enqueue_in(&tx, org, &requests).await.map_err(e)?;
    tx.commit().await.map_err(e)?;
    Ok(summary)
}

pub(super) async fn list_messages(
    s: &PgStore,
    org: &str,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<StoredInboundMessage>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT id, sender, control_id, message_type, received_at, raw, processed_at, process_error, content_hash
             FROM inbound_messages WHERE organization = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&org, &after, &(limit as i64)],
        )
        .await
        .map_err(|e| map_err(&s.location, "list inbound messages", e))?;
    Ok(rows
        .iter()
        .map(|r| StoredInboundMessage {
            id: r.get(0),
            sender: r.get(1),
            control_id: r.get(2),
            message_type: r.get(3),
            received_at: r.get(4),
            bytes: r.get(5),
            processed_at: r.get(6),
            process_error: r.get(7),
            content_hash: r.get(8),
        })
        .collect())
}

pub(super) async fn enqueue_refresh(
    s: &PgStore,
    org: &str,
    r: &RefreshRequest,
) -> StoreResult<i64> {
    let c = s.client().await?;
    let row = c
        .query_one(
            "INSERT INTO refresh_requests (organization, patient_key, connection, reason, source, requested_at)
             VALUES ($1, $2, $3, $4, $5, now()) RETURNING id",
            &[&org, &r.patient_key, &r.connection, &r.reason, &r.source],
        )
        .await
        .map_err(|e| map_err(&s.location, "enqueue refresh", e))?;
    Ok(row.get(0))
}

pub(super) async fn list_refresh(
    s: &PgStore,
    org: &str,
    limit: u32,
) -> StoreResult<Vec<(i64, RefreshRequest, DateTime<Utc>)>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT id, patient_key, connection, reason, source, requested_at FROM refresh_requests
             WHERE organization = $1 AND handled_at IS NULL ORDER BY id LIMIT $2",
            &[&org, &(limit as i64)],
        )
        .await
        .map_err(|e| map_err(&s.location, "list refresh requests", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                RefreshRequest {
                    patient_key: r.get(1),
                    connection: r.get(2),
                    reason: r.get(3),
                    source: r.get(4),
                },
                r.get(5),
            )
        })
        .collect())
}
