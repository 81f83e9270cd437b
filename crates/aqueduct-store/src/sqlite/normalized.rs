//! Normalized rows, code mappings and the review queue in SQLite.

use chrono::Utc;
use rusqlite::{Connection, params};

use super::{map_err, ts};
use aqueduct_core::error::{StoreError, StoreResult};
use aqueduct_core::model::*;

pub(super) fn write(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    sources: &[NormalizedSource],
    rules_version: &str,
) -> StoreResult<()> {
    let e = |err| map_err(loc, "write normalized rows", err);
    let tx = c.transaction().map_err(e)?;
    {
        let mut delete = tx
            .prepare_cached(
                "DELETE FROM normalized WHERE organization = ?1 AND connection = ?2
                   AND resource_type = ?3 AND logical_id = ?4",
            )
            .map_err(e)?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO normalized (organization, connection, resource_type, logical_id,
                    content_hash, ordinal, kind, patient_id, effective, code_system, code, display,
                    resolution, source_system, source_code, source_text, rules_version, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )
            .map_err(e)?;
        let mut forget = tx
            .prepare_cached(
                "DELETE FROM resource_identifiers WHERE organization = ?1 AND connection = ?2
                   AND resource_type = ?3 AND logical_id = ?4",
            )
            .map_err(e)?;
        let mut index = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO resource_identifiers
                    (organization, connection, resource_type, logical_id, system, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(e)?;
        for s in sources {
            forget
                .execute(params![
                    conn.organization,
                    conn.connection,
                    s.resource_type,
                    s.logical_id
                ])
                .map_err(e)?;
            for (system, value) in &s.identifiers {
                index
                    .execute(params![
                        conn.organization,
                        conn.connection,
                        s.resource_type,
                        s.logical_id,
                        system,
                        value
                    ])
                    .map_err(e)?;
            }
            delete
                .execute(params![
                    conn.organization,
                    conn.connection,
                    s.resource_type,
                    s.logical_id
                ])
                .map_err(e)?;
            for r in &s.records {
                insert
                    .execute(params![
                        conn.organization,
                        conn.connection,
                        s.resource_type,
                        s.logical_id,
                        s.content_hash,
                        r.ordinal,
                        r.kind,
                        r.patient_id,
                        r.effective,
                        r.code_system,
                        r.code,
                        r.display,
                        r.resolution,
                        r.source_system,
                        r.source_code,
                        r.source_text,
                        rules_version,
                        r.data,
                    ])
                    .map_err(e)?;
            }
        }
    }
    tx.commit().map_err(e)
}

pub(super) fn stamps(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    resource_type: &str,
    ids: &[String],
) -> StoreResult<std::collections::HashMap<String, NormalizedStamp>> {
    let mut out = std::collections::HashMap::with_capacity(ids.len());
    // bounded IN lists: well under SQLite's parameter limit, few statement shapes to cache
    for chunk in ids.chunks(250) {
        let marks = (0..chunk.len())
            .map(|i| format!("?{}", i + 4))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT logical_id, content_hash, rules_version, patient_id FROM normalized
             WHERE organization = ?1 AND connection = ?2 AND resource_type = ?3 AND ordinal = 0
               AND logical_id IN ({marks})"
        );
        let mut values: Vec<&dyn rusqlite::ToSql> =
            vec![&conn.organization, &conn.connection, &resource_type];
        values.extend(chunk.iter().map(|id| id as &dyn rusqlite::ToSql));
        c.prepare_cached(&sql)
            .and_then(|mut st| {
                let rows = st.query_map(values.as_slice(), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        NormalizedStamp {
                            content_hash: r.get(1)?,
                            rules_version: r.get(2)?,
                            patient_id: r.get(3)?,
                        },
                    ))
                })?;
                for row in rows {
                    let (id, stamp) = row?;
                    out.insert(id, stamp);
                }
                Ok(())
            })
            .map_err(|e| map_err(loc, "read normalized stamps", e))?;
    }
    Ok(out)
}

const ROW_COLUMNS: &str = "resource_type, logical_id, content_hash, rules_version, ordinal, kind, \
     patient_id, effective, code_system, code, display, resolution, source_system, source_code, \
     source_text, data";

fn row_to_normalized(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredNormalized> {
    Ok(StoredNormalized {
        resource_type: r.get(0)?,
        logical_id: r.get(1)?,
        content_hash: r.get(2)?,
        rules_version: r.get(3)?,
        record: NormalizedRecord {
            ordinal: r.get(4)?,
            kind: r.get(5)?,
            patient_id: r.get(6)?,
            effective: r.get(7)?,
            code_system: r.get(8)?,
            code: r.get(9)?,
            display: r.get(10)?,
            resolution: r.get(11)?,
            source_system: r.get(12)?,
            source_code: r.get(13)?,
            source_text: r.get(14)?,
            data: r.get(15)?,
        },
    })
}

pub(super) fn list(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    kind: &str,
    patient_id: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<StoredNormalized>> {
    c.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS}
         FROM normalized
         WHERE organization = ?1 AND connection = ?2 AND kind = ?3 AND (?4 IS NULL OR patient_id = ?4)
         ORDER BY effective, resource_type, logical_id, ordinal LIMIT ?5"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![conn.organization, conn.connection, kind, patient_id, limit],
            row_to_normalized,
        )?
        .collect()
    })
    .map_err(|e| map_err(loc, "list normalized rows", e))
}

pub(super) fn of_sources(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    resource_type: &str,
    ids: &[String],
) -> StoreResult<Vec<StoredNormalized>> {
    // the ids go in as one JSON array: one statement shape whatever their number, so it stays
    // in the statement cache (an IN list of n marks is a new statement per n)
    let ids = serde_json::to_string(ids).map_err(|e| StoreError::Query {
        location: loc.to_string(),
        operation: "read normalized rows of sources",
        cause: e.to_string(),
    })?;
    c.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM normalized
         WHERE organization = ?1 AND connection = ?2 AND resource_type = ?3
           AND logical_id IN (SELECT value FROM json_each(?4))
         ORDER BY logical_id, ordinal"
    ))
    .and_then(|mut st| {
        st.query_map(
            params![conn.organization, conn.connection, resource_type, ids],
            row_to_normalized,
        )?
        .collect()
    })
    .map_err(|e| map_err(loc, "read normalized rows of sources", e))
}

pub(super) fn unmapped(
    c: &mut Connection,
    loc: &str,
    org: &str,
    connection: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<UnmappedCode>> {
    c.prepare_cached(
        "SELECT connection, kind, source_system, source_code, source_text, COUNT(*)
         FROM normalized
         WHERE organization = ?1 AND resolution = 'unmapped' AND (?2 IS NULL OR connection = ?2)
         GROUP BY connection, kind, source_system, source_code, source_text
         ORDER BY COUNT(*) DESC, connection, kind, source_code LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(params![org, connection, limit], |r| {
            Ok(UnmappedCode {
                connection: r.get(0)?,
                kind: r.get(1)?,
                source_system: r.get(2)?,
                source_code: r.get(3)?,
                source_text: r.get(4)?,
                count: r.get::<_, i64>(5)? as u64,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "list unmapped codes", e))
}

pub(super) fn put_mapping(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
    m: &CodeMapping,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO code_mappings (organization, connection, source_system, source_code,
            target_system, target_code, target_display, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (organization, connection, source_system, source_code) DO UPDATE SET
            target_system = excluded.target_system, target_code = excluded.target_code,
            target_display = excluded.target_display, updated_at = excluded.updated_at",
        params![
            conn.organization,
            conn.connection,
            m.source_system,
            m.source_code,
            m.target_system,
            m.target_code,
            m.target_display,
            ts(Utc::now())
        ],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "store code mapping", e))
}

pub(super) fn list_mappings(
    c: &mut Connection,
    loc: &str,
    conn: &ConnectionRef,
) -> StoreResult<Vec<CodeMapping>> {
    c.prepare_cached(
        "SELECT source_system, source_code, target_system, target_code, target_display
         FROM code_mappings WHERE organization = ?1 AND connection = ?2
         ORDER BY source_system, source_code",
    )
    .and_then(|mut s| {
        s.query_map(params![conn.organization, conn.connection], |r| {
            Ok(CodeMapping {
                source_system: r.get(0)?,
                source_code: r.get(1)?,
                target_system: r.get(2)?,
                target_code: r.get(3)?,
                target_display: r.get(4)?,
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "list code mappings", e))
}
