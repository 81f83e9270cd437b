//! Raw resources, history and tombstones in SQLite.

use chrono::{DateTime, Utc};
use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::{map_err, parse_ts, ts};
use aqueduct_core::error::StoreResult;
use aqueduct_core::hash::content_hash;
use aqueduct_core::model::*;

const COLUMNS: &str = "resource_type, logical_id, version_id, last_updated, source_url, \
     patient_id, parse_status, parse_error, fetched_at, content_hash, version_seq, deleted_at, raw";

fn row_to_resource(conn: &ConnectionRef, r: &Row<'_>) -> rusqlite::Result<StoredResource> {
    let status: String = r.get(6)?;
    let deleted: Option<String> = r.get(11)?;
    Ok(StoredResource {
        connection: conn.clone(),
        resource_type: r.get(0)?,
        logical_id: r.get(1)?,
        version_id: r.get(2)?,
        last_updated: r.get(3)?,
        source_url: r.get(4)?,
        patient_id: r.get(5)?,
        parse_status: ParseStatus::from_parts(&status, r.get(7)?),
        fetched_at: parse_ts(&r.get::<_, String>(8)?),
        content_hash: r.get(9)?,
        version_seq: r.get(10)?,
        deleted_at: deleted.as_deref().map(parse_ts),
        bytes: r.get(12)?,
    })
}

pub(super) fn write(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    batch: &[RawResource],
) -> StoreResult<WriteSummary> {
    let e = |err| map_err(loc, "write resources", err);
    let tx = c.transaction().map_err(e)?;
    let summary = write_in(&tx, loc, conn, batch)?;
    tx.commit().map_err(e)?;
    Ok(summary)
}

/// Writes a batch inside the caller's transaction (which commits it, or not).
pub(super) fn write_in(
    tx: &Transaction<'_>,
    loc: &str,
    conn: &ConnectionRef,
    batch: &[RawResource],
) -> StoreResult<WriteSummary> {
    let e = |err| map_err(loc, "write resources", err);
    let mut summary = WriteSummary::default();
    {
        let mut lookup = tx
            .prepare_cached(
                "SELECT id, content_hash, deleted_at, patient_id FROM resources
                 WHERE organization = ?1 AND connection = ?2 AND resource_type = ?3 AND logical_id = ?4",
            )
            .map_err(e)?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO resources (organization, connection, resource_type, logical_id,
                    version_id, last_updated, fetched_at, content_hash, source_url, patient_id,
                    parse_status, parse_error, version_seq, deleted_at, raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 1, NULL, ?13)",
            )
            .map_err(e)?;
        // The stored copy goes to history as a read and a single-row INSERT rather than one
        // INSERT ... SELECT: SQLite gives a statement that may write several rows a statement
        // journal, a temporary file that copied every page the statement touched (16 KiB each)
        // and was truncated again after it, for every changed resource.
        let mut stored = tx
            .prepare_cached(
                "SELECT version_id, last_updated, fetched_at, content_hash, source_url, patient_id,
                    parse_status, parse_error, version_seq, deleted_at, raw
                 FROM resources WHERE id = ?1",
            )
            .map_err(e)?;
        let mut to_history = tx
            .prepare_cached(
                "INSERT INTO resource_history (organization, connection, resource_type, logical_id,
                    version_id, last_updated, fetched_at, content_hash, source_url, patient_id,
                    parse_status, parse_error, version_seq, deleted_at, raw, superseded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .map_err(e)?;
        let mut update = tx
            .prepare_cached(
                "UPDATE resources SET version_id = ?2, last_updated = ?3, fetched_at = ?4,
                    content_hash = ?5, source_url = ?6, patient_id = COALESCE(?7, patient_id),
                    parse_status = ?8, parse_error = ?9, version_seq = version_seq + 1,
                    deleted_at = NULL, raw = ?10
                 WHERE id = ?1",
            )
            .map_err(e)?;
        // The same update when the resource stays live with the same patient: a column that
        // is assigned makes SQLite rewrite every index holding it, so leaving patient_id and
        // deleted_at out spares the patient index an entry deleted and put back as it was.
        let mut update_content = tx
            .prepare_cached(
                "UPDATE resources SET version_id = ?2, last_updated = ?3, fetched_at = ?4,
                    content_hash = ?5, source_url = ?6, parse_status = ?7, parse_error = ?8,
                    version_seq = version_seq + 1, raw = ?9
                 WHERE id = ?1",
            )
            .map_err(e)?;
        let mut revive = tx
            .prepare_cached("UPDATE resources SET deleted_at = NULL, fetched_at = ?2 WHERE id = ?1")
            .map_err(e)?;

        for r in batch {
            let hash = content_hash(&r.bytes);
            let existing: Option<(i64, String, Option<String>, Option<String>)> = lookup
                .query_row(
                    params![
                        conn.organization,
                        conn.connection,
                        r.resource_type,
                        r.logical_id
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .optional()
                .map_err(e)?;
            let fetched = ts(r.fetched_at);
            match existing {
                None => {
                    insert
                        .execute(params![
                            conn.organization,
                            conn.connection,
                            r.resource_type,
                            r.logical_id,
                            r.version_id,
                            r.last_updated,
                            fetched,
                            hash,
                            r.source_url,
                            r.patient_id,
                            r.parse_status.code(),
                            r.parse_status.detail(),
                            r.bytes,
                        ])
                        .map_err(e)?;
                    summary.inserted += 1;
                }
                Some((_, old_hash, None, _)) if old_hash == hash => summary.unchanged += 1,
                Some((id, old_hash, Some(_), _)) if old_hash == hash => {
                    revive.execute(params![id, fetched]).map_err(e)?;
                    summary.updated += 1;
                }
                Some((id, _, deleted, old_patient)) => {
                    stored
                        .query_row(params![id], |old| {
                            let col = |i| old.get_ref(i).map(ToSqlOutput::Borrowed);
                            to_history.execute(params![
                                conn.organization,
                                conn.connection,
                                r.resource_type,
                                r.logical_id,
                                col(0)?,
                                col(1)?,
                                col(2)?,
                                col(3)?,
                                col(4)?,
                                col(5)?,
                                col(6)?,
                                col(7)?,
                                col(8)?,
                                col(9)?,
                                col(10)?,
                                fetched,
                            ])
                        })
                        .map_err(e)?;
                    let same_patient = r.patient_id.is_none() || r.patient_id == old_patient;
                    if deleted.is_none() && same_patient {
                        update_content
                            .execute(params![
                                id,
                                r.version_id,
                                r.last_updated,
                                fetched,
                                hash,
                                r.source_url,
                                r.parse_status.code(),
                                r.parse_status.detail(),
                                r.bytes,
                            ])
                            .map_err(e)?;
                    } else {
                        update
                            .execute(params![
                                id,
                                r.version_id,
                                r.last_updated,
                                fetched,
                                hash,
                                r.source_url,
                                r.patient_id,
                                r.parse_status.code(),
                                r.parse_status.detail(),
                                r.bytes,
                            ])
                            .map_err(e)?;
                    }
                    summary.updated += 1;
                }
            }
        }
    }
    Ok(summary)
}

pub(super) fn get(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    resource_type: &str,
    logical_id: &str,
) -> StoreResult<Option<StoredResource>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM resources
         WHERE organization = ?1 AND connection = ?2 AND resource_type = ?3 AND logical_id = ?4"
    );
    c.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(
                params![
                    conn.organization,
                    conn.connection,
                    resource_type,
                    logical_id
                ],
                |r| row_to_resource(conn, r),
            )
            .optional()
        })
        .map_err(|e| map_err(loc, "read resource", e))
}

pub(super) fn history(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    resource_type: &str,
    logical_id: &str,
) -> StoreResult<Vec<StoredResource>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM resource_history
         WHERE organization = ?1 AND connection = ?2 AND resource_type = ?3 AND logical_id = ?4
         ORDER BY version_seq, id"
    );
    c.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(
                params![
                    conn.organization,
                    conn.connection,
                    resource_type,
                    logical_id
                ],
                |r| row_to_resource(conn, r),
            )?
            .collect()
        })
        .map_err(|e| map_err(loc, "read history", e))
}

pub(super) fn list(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    resource_type: &str,
    after_id: Option<&str>,
    limit: u32,
    include_deleted: bool,
) -> StoreResult<Vec<StoredResource>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM resources
         WHERE organization = ?1 AND connection = ?2 AND resource_type = ?3
           AND logical_id > ?4 AND (?5 OR deleted_at IS NULL)
         ORDER BY logical_id LIMIT ?6"
    );
    c.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(
                params![
                    conn.organization,
                    conn.connection,
                    resource_type,
                    after_id.unwrap_or(""),
                    include_deleted,
                    limit
                ],
                |r| row_to_resource(conn, r),
            )?
            .collect()
        })
        .map_err(|e| map_err(loc, "list resources", e))
}

pub(super) fn patient_ids(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    patient_id: &str,
    resource_type: &str,
) -> StoreResult<Vec<String>> {
    c.prepare_cached(
        "SELECT logical_id FROM resources
         WHERE organization = ?1 AND connection = ?2 AND patient_id = ?3 AND resource_type = ?4
           AND deleted_at IS NULL
         ORDER BY logical_id",
    )
    .and_then(|mut s| {
        s.query_map(
            params![
                conn.organization,
                conn.connection,
                patient_id,
                resource_type
            ],
            |r| r.get(0),
        )?
        .collect()
    })
    .map_err(|e| map_err(loc, "list patient resources", e))
}

pub(super) fn patient_resources(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    patient_id: &str,
    resource_type: Option<&str>,
) -> StoreResult<Vec<StoredResource>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM resources
         WHERE organization = ?1 AND connection = ?2 AND patient_id = ?3
           AND (?4 IS NULL OR resource_type = ?4) AND deleted_at IS NULL
         ORDER BY resource_type, logical_id"
    );
    c.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(
                params![
                    conn.organization,
                    conn.connection,
                    patient_id,
                    resource_type
                ],
                |r| row_to_resource(conn, r),
            )?
            .collect()
        })
        .map_err(|e| map_err(loc, "list patient resources", e))
}

pub(super) fn patient_page(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    patient_id: &str,
    resource_type: &str,
    after_id: Option<&str>,
    limit: u32,
) -> StoreResult<(Vec<StoredResource>, u64)> {
    let e = |err| map_err(loc, "page patient resources", err);
    let sql = format!(
        "SELECT {COLUMNS} FROM resources
         WHERE organization = ?1 AND connection = ?2 AND patient_id = ?3 AND resource_type = ?4
           AND deleted_at IS NULL AND logical_id > ?5
         ORDER BY logical_id LIMIT ?6"
    );
    let page = c
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(
                params![
                    conn.organization,
                    conn.connection,
                    patient_id,
                    resource_type,
                    after_id.unwrap_or(""),
                    limit
                ],
                |r| row_to_resource(conn, r),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(e)?;
    let total: i64 = c
        .prepare_cached(
            "SELECT COUNT(*) FROM resources
             WHERE organization = ?1 AND connection = ?2 AND patient_id = ?3
               AND resource_type = ?4 AND deleted_at IS NULL",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    conn.organization,
                    conn.connection,
                    patient_id,
                    resource_type
                ],
                |r| r.get(0),
            )
        })
        .map_err(e)?;
    Ok((page, total.max(0) as u64))
}

pub(super) fn tombstone(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    resource_type: &str,
    ids: &[String],
    at: DateTime<Utc>,
) -> StoreResult<u64> {
    let e = |err| map_err(loc, "tombstone", err);
    let tx = c.transaction().map_err(e)?;
    let mut n = 0;
    {
        let mut stmt = tx
            .prepare_cached(
                "UPDATE resources SET deleted_at = ?5
                 WHERE organization = ?1 AND connection = ?2 AND resource_type = ?3
                   AND logical_id = ?4 AND deleted_at IS NULL",
            )
            .map_err(e)?;
        let at = ts(at);
        for id in ids {
            n += stmt
                .execute(params![
                    conn.organization,
                    conn.connection,
                    resource_type,
                    id,
                    at
                ])
                .map_err(e)? as u64;
        }
    }
    tx.commit().map_err(e)?;
    Ok(n)
}

pub(super) fn count_by_type(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
) -> StoreResult<Vec<TypeCount>> {
    c.prepare_cached(
        "SELECT resource_type,
                SUM(deleted_at IS NULL),
                SUM(deleted_at IS NOT NULL),
                SUM(parse_status <> 'ok')
         FROM resources WHERE organization = ?1 AND connection = ?2
         GROUP BY resource_type ORDER BY resource_type",
    )
    .and_then(|mut s| {
        s.query_map(params![conn.organization, conn.connection], |r| {
            Ok(TypeCount {
                resource_type: r.get(0)?,
                live: r.get::<_, i64>(1)? as u64,
                deleted: r.get::<_, i64>(2)? as u64,
                invalid: r.get::<_, i64>(3)? as u64,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "count resources", e))
}
