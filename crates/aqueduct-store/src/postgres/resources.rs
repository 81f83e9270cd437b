//! Raw resources, history and tombstones in PostgreSQL, written set-based.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{PgStore, map_err};
use aqueduct_core::error::StoreResult;
use aqueduct_core::hash::content_hash;
use aqueduct_core::model::*;

const INSERT_NEW: &str = "INSERT INTO resources (organization, connection, resource_type, logical_id,
                    version_id, last_updated, fetched_at, content_hash, source_url, patient_id,
                    parse_status, parse_error, version_seq, deleted_at, raw)
                 SELECT $1, $2, u.t, u.i, u.v, u.lu, u.fa, u.h, u.su, u.p, u.ps, u.pe, 1, NULL, u.raw
                 FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                             $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                             $13::bytea[]) AS u(t, i, v, lu, fa, h, su, p, ps, pe, raw)";

const UPSERT: &str = "INSERT INTO resources (organization, connection, resource_type, logical_id,
                    version_id, last_updated, fetched_at, content_hash, source_url, patient_id,
                    parse_status, parse_error, version_seq, deleted_at, raw)
                 SELECT $1, $2, u.t, u.i, u.v, u.lu, u.fa, u.h, u.su, u.p, u.ps, u.pe, 1, NULL, u.raw
                 FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                             $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                             $13::bytea[]) AS u(t, i, v, lu, fa, h, su, p, ps, pe, raw)
                 ON CONFLICT (organization, connection, resource_type, logical_id) DO UPDATE SET
                    version_id = EXCLUDED.version_id, last_updated = EXCLUDED.last_updated,
                    fetched_at = EXCLUDED.fetched_at, content_hash = EXCLUDED.content_hash,
                    source_url = EXCLUDED.source_url,
                    patient_id = COALESCE(EXCLUDED.patient_id, resources.patient_id),
                    parse_status = EXCLUDED.parse_status, parse_error = EXCLUDED.parse_error,
                    version_seq = resources.version_seq + 1, deleted_at = NULL, raw = EXCLUDED.raw";

const COLUMNS: &str = "resource_type, logical_id, version_id, last_updated, source_url, \
     patient_id, parse_status, parse_error, fetched_at, content_hash, version_seq, deleted_at, raw";

fn row_to_resource(conn: &ConnectionRef, r: &Row) -> StoredResource {
    let status: String = r.get(6);
    StoredResource {
        connection: conn.clone(),
        resource_type: r.get(0),
        logical_id: r.get(1),
        version_id: r.get(2),
        last_updated: r.get(3),
        source_url: r.get(4),
        patient_id: r.get(5),
        parse_status: ParseStatus::from_parts(&status, r.get(7)),
        fetched_at: r.get(8),
        content_hash: r.get(9),
        version_seq: r.get(10),
        deleted_at: r.get(11),
        bytes: r.get(12),
    }
}

/// A batch may carry the same key twice (a duplicate across pages). One set-based statement
/// cannot touch a row twice, so the batch is split into rounds in which each key appears once,
/// preserving order: the last copy wins, exactly as with one-by-one writes.
fn rounds(batch: &[RawResource]) -> Vec<Vec<&RawResource>> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.len());
    let mut rounds: Vec<Vec<&RawResource>> = vec![Vec::with_capacity(batch.len())];
    for r in batch {
        let n = seen.entry((&r.resource_type, &r.logical_id)).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(r);
        *n += 1;
    }
    rounds
}

/// Writes a batch. New keys go in with a plain INSERT (ON CONFLICT costs ~40% more per row);
/// if another writer inserted one of them meanwhile, the unique index says so and the whole
/// transaction is redone with upserts, so concurrent workers never lose or duplicate a row.
pub(super) async fn write(
    store: &PgStore,
    conn: &ConnectionRef,
    batch: &[RawResource],
) -> StoreResult<WriteSummary> {
    match write_attempt(store, conn, batch, false).await {
        Err(a) if a.is_unique_violation() => write_attempt(store, conn, batch, true)
            .await
            .map_err(|a| a.into_store(&store.location)),
        other => other.map_err(|a| a.into_store(&store.location)),
    }
}

/// Why a write attempt failed; a unique violation means another writer raced it and the
/// attempt is worth redoing with upserts.
pub(super) enum Attempt {
    Pg(tokio_postgres::Error),
    Store(aqueduct_core::error::StoreError),
}

impl Attempt {
    pub(super) fn is_unique_violation(&self) -> bool {
        matches!(self, Attempt::Pg(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }

    pub(super) fn into_store(self, loc: &str) -> aqueduct_core::error::StoreError {
        match self {
            Attempt::Pg(e) => map_err(loc, "write resources", e),
            Attempt::Store(e) => e,
        }
    }
}

async fn write_attempt(
    store: &PgStore,
    conn: &ConnectionRef,
    batch: &[RawResource],
    upsert_all: bool,
) -> Result<WriteSummary, Attempt> {
    let mut client = store.client().await.map_err(Attempt::Store)?;
    let tx = client.transaction().await.map_err(Attempt::Pg)?;
    let summary = write_in(&tx, conn, batch, upsert_all).await?;
    tx.commit().await.map_err(Attempt::Pg)?;
    Ok(summary)
}

/// Writes a batch inside the caller's transaction (which commits it, or not); `upsert_all`
/// after a race, as [`write`] explains.
pub(super) async fn write_in(
    tx: &deadpool_postgres::Transaction<'_>,
    conn: &ConnectionRef,
    batch: &[RawResource],
    upsert_all: bool,
) -> Result<WriteSummary, Attempt> {
    let e = Attempt::Pg;
    let mut summary = WriteSummary::default();
    let now = Utc::now();
    for round in rounds(batch) {
        let hashes: Vec<String> = round.iter().map(|r| content_hash(&r.bytes)).collect();
        let types: Vec<&str> = round.iter().map(|r| r.resource_type.as_str()).collect();
        let ids: Vec<&str> = round.iter().map(|r| r.logical_id.as_str()).collect();
        // LATERAL forces one index probe per key; a plain join lets the planner choose a
        // scan of the whole connection, which grows with the store.
        let lookup = tx
            .prepare_cached(
                "SELECT r.resource_type, r.logical_id, r.content_hash, r.deleted_at IS NOT NULL
                 FROM UNNEST($3::text[], $4::text[]) AS k(t, i)
                 CROSS JOIN LATERAL (
                    SELECT resource_type, logical_id, content_hash, deleted_at FROM resources
                    WHERE organization = $1 AND connection = $2
                      AND resource_type = k.t AND logical_id = k.i) r",
            )
            .await
            .map_err(e)?;
        let existing: HashMap<(String, String), (String, bool)> = tx
            .query(
                &lookup,
                &[&conn.organization, &conn.connection, &types, &ids],
            )
            .await
            .map_err(e)?
            .into_iter()
            .map(|row| ((row.get(0), row.get(1)), (row.get(2), row.get(3))))
            .collect();

        let mut write_idx = Vec::new();
        let mut changed_idx = Vec::new();
        let mut revive_idx = Vec::new();
        for (i, r) in round.iter().enumerate() {
            match existing.get(&(r.resource_type.clone(), r.logical_id.clone())) {
                None => {
                    summary.inserted += 1;
                    write_idx.push(i);
                }
                Some((h, false)) if *h == hashes[i] => summary.unchanged += 1,
                Some((h, true)) if *h == hashes[i] => {
                    summary.updated += 1;
                    revive_idx.push(i);
                }
                Some(_) => {
                    summary.updated += 1;
                    changed_idx.push(i);
                    write_idx.push(i);
                }
            }
        }

        if !changed_idx.is_empty() {
            let t: Vec<&str> = changed_idx.iter().map(|&i| types[i]).collect();
            let id: Vec<&str> = changed_idx.iter().map(|&i| ids[i]).collect();
            tx.execute(
                &tx.prepare_cached("INSERT INTO resource_history (organization, connection, resource_type, logical_id,
                    version_id, last_updated, fetched_at, content_hash, source_url, patient_id,
                    parse_status, parse_error, version_seq, deleted_at, raw, superseded_at)
                 SELECT r.organization, r.connection, r.resource_type, r.logical_id, r.version_id,
                    r.last_updated, r.fetched_at, r.content_hash, r.source_url, r.patient_id,
                    r.parse_status, r.parse_error, r.version_seq, r.deleted_at, r.raw, $5
                 FROM UNNEST($3::text[], $4::text[]) AS k(t, i)
                 CROSS JOIN LATERAL (
                    SELECT * FROM resources
                    WHERE organization = $1 AND connection = $2
                      AND resource_type = k.t AND logical_id = k.i) r").await.map_err(e)?,
                &[&conn.organization, &conn.connection, &t, &id, &now],
            )
            .await
            .map_err(e)?;
        }

        // Known-new keys: a plain INSERT, unless redoing after a race.
        let (plain_idx, upsert_idx): (Vec<usize>, Vec<usize>) = if upsert_all {
            (Vec::new(), write_idx)
        } else {
            write_idx
                .into_iter()
                .partition(|i| !changed_idx.contains(i))
        };
        for (write_idx, upsert) in [(plain_idx, false), (upsert_idx, true)] {
            if write_idx.is_empty() {
                continue;
            }
            let pick = |f: &dyn Fn(&RawResource) -> Option<&str>| -> Vec<Option<&str>> {
                write_idx.iter().map(|&i| f(round[i])).collect()
            };
            let t: Vec<&str> = write_idx.iter().map(|&i| types[i]).collect();
            let id: Vec<&str> = write_idx.iter().map(|&i| ids[i]).collect();
            let version = pick(&|r| r.version_id.as_deref());
            let last_updated = pick(&|r| r.last_updated.as_deref());
            let fetched: Vec<DateTime<Utc>> =
                write_idx.iter().map(|&i| round[i].fetched_at).collect();
            let hash: Vec<&str> = write_idx.iter().map(|&i| hashes[i].as_str()).collect();
            let source: Vec<&str> = write_idx
                .iter()
                .map(|&i| round[i].source_url.as_str())
                .collect();
            let patient = pick(&|r| r.patient_id.as_deref());
            let status: Vec<&str> = write_idx
                .iter()
                .map(|&i| round[i].parse_status.code())
                .collect();
            let detail = pick(&|r| r.parse_status.detail());
            let raw: Vec<&[u8]> = write_idx
                .iter()
                .map(|&i| round[i].bytes.as_slice())
                .collect();
            tx.execute(
                &tx.prepare_cached(if upsert { UPSERT } else { INSERT_NEW })
                    .await
                    .map_err(e)?,
                &[
                    &conn.organization,
                    &conn.connection,
                    &t,
                    &id,
                    &version,
                    &last_updated,
                    &fetched,
                    &hash,
                    &source,
                    &patient,
                    &status,
                    &detail,
                    &raw,
                ],
            )
            .await
            .map_err(e)?;
        }

        if !revive_idx.is_empty() {
            let t: Vec<&str> = revive_idx.iter().map(|&i| types[i]).collect();
            let id: Vec<&str> = revive_idx.iter().map(|&i| ids[i]).collect();
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE resources r SET deleted_at = NULL, fetched_at = $5
                 FROM UNNEST($3::text[], $4::text[]) AS k(t, i)
                 WHERE r.organization = $1 AND r.connection = $2
                   AND r.resource_type = k.t AND r.logical_id = k.i",
                )
                .await
                .map_err(e)?,
                &[&conn.organization, &conn.connection, &t, &id, &now],
            )
            .await
            .map_err(e)?;
        }
    }
    Ok(summary)
}

pub(super) async fn get(
    store: &PgStore,
    conn: &ConnectionRef,
    resource_type: &str,
    logical_id: &str,
) -> StoreResult<Option<StoredResource>> {
    let c = store.client().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM resources
         WHERE organization = $1 AND connection = $2 AND resource_type = $3 AND logical_id = $4"
    );
    let row = c
        .query_opt(
            &sql,
            &[
                &conn.organization,
                &conn.connection,
                &resource_type,
                &logical_id,
            ],
        )
        .await
        .map_err(|e| map_err(&store.location, "read resource", e))?;
    Ok(row.map(|r| row_to_resource(conn, &r)))
}

pub(super) async fn history(
    store: &PgStore,
    conn: &ConnectionRef,
    resource_type: &str,
    logical_id: &str,
) -> StoreResult<Vec<StoredResource>> {
    let c = store.client().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM resource_history
         WHERE organization = $1 AND connection = $2 AND resource_type = $3 AND logical_id = $4
         ORDER BY version_seq, id"
    );
    let rows = c
        .query(
            &sql,
            &[
                &conn.organization,
                &conn.connection,
                &resource_type,
                &logical_id,
            ],
        )
        .await
        .map_err(|e| map_err(&store.location, "read history", e))?;
    Ok(rows.iter().map(|r| row_to_resource(conn, r)).collect())
}

pub(super) async fn list(
    store: &PgStore,
    conn: &ConnectionRef,
    resource_type: &str,
    after_id: Option<&str>,
    limit: u32,
    include_deleted: bool,
) -> StoreResult<Vec<StoredResource>> {
    let c = store.client().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM resources
         WHERE organization = $1 AND connection = $2 AND resource_type = $3
           AND logical_id COLLATE \"C\" > $4 AND ($5 OR deleted_at IS NULL)
         ORDER BY logical_id COLLATE \"C\" LIMIT $6"
    );
    let rows = c
        .query(
            &sql,
            &[
                &conn.organization,
                &conn.connection,
                &resource_type,
                &after_id.unwrap_or(""),
                &include_deleted,
                &(limit as i64),
            ],
        )
        .await
        .map_err(|e| map_err(&store.location, "list resources", e))?;
    Ok(rows.iter().map(|r| row_to_resource(conn, r)).collect())
}

pub(super) async fn patient_resources(
    store: &PgStore,
    conn: &ConnectionRef,
    patient_id: &str,
    resource_type: Option<&str>,
) -> StoreResult<Vec<StoredResource>> {
    let c = store.client().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM resources
         WHERE organization = $1 AND connection = $2 AND patient_id = $3
           AND ($4::text IS NULL OR resource_type = $4) AND deleted_at IS NULL
         ORDER BY resource_type COLLATE \"C\", logical_id COLLATE \"C\""
    );
    let rows = c
        .query(
            &sql,
            &[
                &conn.organization,
                &conn.connection,
                &patient_id,
                &resource_type,
            ],
        )
        .await
        .map_err(|e| map_err(&store.location, "list patient resources", e))?;
    Ok(rows.iter().map(|r| row_to_resource(conn, r)).collect())
}

pub(super) async fn patient_page(
    store: &PgStore,
    conn: &ConnectionRef,
    patient_id: &str,
    resource_type: &str,
    after_id: Option<&str>,
    limit: u32,
) -> StoreResult<(Vec<StoredResource>, u64)> {
    let c = store.client().await?;
    let e = |err| map_err(&store.location, "page patient resources", err);
    let sql = format!(
        "SELECT {COLUMNS} FROM resources
         WHERE organization = $1 AND connection = $2 AND patient_id = $3 AND resource_type = $4
           AND deleted_at IS NULL AND logical_id COLLATE \"C\" > $5
         ORDER BY logical_id COLLATE \"C\" LIMIT $6"
    );
    let rows = c
        .query(
            &sql,
            &[
                &conn.organization,
                &conn.connection,
                &patient_id,
                &resource_type,
                &after_id.unwrap_or(""),
                &(limit as i64),
            ],
        )
        .await
        .map_err(e)?;
    let total: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM resources
             WHERE organization = $1 AND connection = $2 AND patient_id = $3
               AND resource_type = $4 AND deleted_at IS NULL",
            &[
                &conn.organization,
                &conn.connection,
                &patient_id,
                &resource_type,
            ],
        )
        .await
        .map_err(e)?
        .get(0);
    Ok((
        rows.iter().map(|r| row_to_resource(conn, r)).collect(),
        total.max(0) as u64,
    ))
}

pub(super) async fn patient_ids(
    store: &PgStore,
    conn: &ConnectionRef,
    patient_id: &str,
    resource_type: &str,
) -> StoreResult<Vec<String>> {
    let c = store.client().await?;
    let rows = c
        .query(
            "SELECT logical_id FROM resources
             WHERE organization = $1 AND connection = $2 AND patient_id = $3 AND resource_type = $4
               AND deleted_at IS NULL
             ORDER BY logical_id COLLATE \"C\"",
            &[
                &conn.organization,
                &conn.connection,
                &patient_id,
                &resource_type,
            ],
        )
        .await
        .map_err(|e| map_err(&store.location, "list patient resources", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub(super) async fn tombstone(
    store: &PgStore,
    conn: &ConnectionRef,
    resource_type: &str,
    ids: &[String],
    at: DateTime<Utc>,
) -> StoreResult<u64> {
    let c = store.client().await?;
    c.execute(
        "UPDATE resources SET deleted_at = $5
         WHERE organization = $1 AND connection = $2 AND resource_type = $3
           AND logical_id = ANY($4) AND deleted_at IS NULL",
        &[
            &conn.organization,
            &conn.connection,
            &resource_type,
            &ids,
            &at,
        ],
    )
    .await
    .map_err(|e| map_err(&store.location, "tombstone", e))
}

pub(super) async fn count_by_type(
    store: &PgStore,
    conn: &ConnectionRef,
) -> StoreResult<Vec<TypeCount>> {
    let c = store.client().await?;
    let rows = c
        .query(
            "SELECT resource_type,
                    COUNT(*) FILTER (WHERE deleted_at IS NULL),
                    COUNT(*) FILTER (WHERE deleted_at IS NOT NULL),
                    COUNT(*) FILTER (WHERE parse_status <> 'ok')
             FROM resources WHERE organization = $1 AND connection = $2
             GROUP BY resource_type ORDER BY resource_type COLLATE \"C\"",
            &[&conn.organization, &conn.connection],
        )
        .await
        .map_err(|e| map_err(&store.location, "count resources", e))?;
    Ok(rows
        .iter()
        .map(|r| TypeCount {
            resource_type: r.get(0),
            live: r.get::<_, i64>(1) as u64,
            deleted: r.get::<_, i64>(2) as u64,
            invalid: r.get::<_, i64>(3) as u64,
        })
        .collect())
}
