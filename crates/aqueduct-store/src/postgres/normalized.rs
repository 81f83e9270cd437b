//! Normalized rows, code mappings and the review queue in PostgreSQL.

use super::{PgStore, map_err};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

pub(super) async fn write(
    s: &PgStore,
    conn: &ConnectionRef,
    sources: &[NormalizedSource],
    rules_version: &str,
) -> StoreResult<()> {
    let e = |err| map_err(&s.location, "write normalized rows", err);
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(e)?;
    let types: Vec<&str> = sources.iter().map(|x| x.resource_type.as_str()).collect();
    let ids: Vec<&str> = sources.iter().map(|x| x.logical_id.as_str()).collect();
    let delete = tx
        .prepare_cached(
            "DELETE FROM normalized n USING UNNEST($3::text[], $4::text[]) AS k(t, i)
             WHERE n.organization = $1 AND n.connection = $2
               AND n.resource_type = k.t AND n.logical_id = k.i",
        )
        .await
        .map_err(e)?;
    tx.execute(
        &delete,
        &[&conn.organization, &conn.connection, &types, &ids],
    )
    .await
    .map_err(e)?;
    tx.execute(
        "DELETE FROM resource_identifiers r USING UNNEST($3::text[], $4::text[]) AS k(t, i)
         WHERE r.organization = $1 AND r.connection = $2
           AND r.resource_type = k.t AND r.logical_id = k.i",
        &[&conn.organization, &conn.connection, &types, &ids],
    )
    .await
    .map_err(e)?;
    let idents: Vec<(&NormalizedSource, &(String, String))> = sources
        .iter()
        .flat_map(|src| src.identifiers.iter().map(move |i| (src, i)))
        .collect();
    if !idents.is_empty() {
        let it: Vec<&str> = idents
            .iter()
            .map(|(s, _)| s.resource_type.as_str())
            .collect();
        let ii: Vec<&str> = idents.iter().map(|(s, _)| s.logical_id.as_str()).collect();
        let is: Vec<&str> = idents.iter().map(|(_, i)| i.0.as_str()).collect();
        let iv: Vec<&str> = idents.iter().map(|(_, i)| i.1.as_str()).collect();
        tx.execute(
            "INSERT INTO resource_identifiers
                (organization, connection, resource_type, logical_id, system, value)
             SELECT $1, $2, u.t, u.i, u.s, u.v
             FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[]) AS u(t, i, s, v)
             ON CONFLICT DO NOTHING",
            &[&conn.organization, &conn.connection, &it, &ii, &is, &iv],
        )
        .await
        .map_err(e)?;
    }
    let rows: Vec<(&NormalizedSource, &NormalizedRecord)> = sources
        .iter()
        .flat_map(|src| src.records.iter().map(move |r| (src, r)))
        .collect();
    if !rows.is_empty() {
        let col = |f: &dyn Fn(&NormalizedSource, &NormalizedRecord) -> Option<String>| -> Vec<Option<String>> {
            rows.iter().map(|(s, r)| f(s, r)).collect()
        };
        let rt = col(&|s, _| Some(s.resource_type.clone()));
        let id = col(&|s, _| Some(s.logical_id.clone()));
        let hash = col(&|s, _| Some(s.content_hash.clone()));
        let ordinal: Vec<i32> = rows.iter().map(|(_, r)| r.ordinal as i32).collect();
        let kind = col(&|_, r| Some(r.kind.clone()));
        let patient = col(&|_, r| r.patient_id.clone());
        let effective = col(&|_, r| r.effective.clone());
        let system = col(&|_, r| r.code_system.clone());
        let code = col(&|_, r| r.code.clone());
        let display = col(&|_, r| r.display.clone());
        let resolution = col(&|_, r| Some(r.resolution.clone()));
        let ssys = col(&|_, r| r.source_system.clone());
        let scode = col(&|_, r| r.source_code.clone());
        let stext = col(&|_, r| r.source_text.clone());
        let data = col(&|_, r| Some(r.data.clone()));
        let insert = tx
            .prepare_cached(
                "INSERT INTO normalized (organization, connection, resource_type, logical_id,
                    content_hash, ordinal, kind, patient_id, effective, code_system, code, display,
                    resolution, source_system, source_code, source_text, rules_version, data)
                 SELECT $1, $2, u.rt, u.id, u.h, u.o, u.k, u.p, u.ef, u.cs, u.c, u.d, u.res, u.ss,
                        u.sc, u.st, $3, u.data
                 FROM UNNEST($4::text[], $5::text[], $6::text[], $7::int[], $8::text[], $9::text[],
                             $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                             $15::text[], $16::text[], $17::text[], $18::text[])
                   AS u(rt, id, h, o, k, p, ef, cs, c, d, res, ss, sc, st, data)",
            )
            .await
            .map_err(e)?;
        tx.execute(
            &insert,
            &[
                &conn.organization,
                &conn.connection,
                &rules_version,
                &rt,
                &id,
                &hash,
                &ordinal,
                &kind,
                &patient,
                &effective,
                &system,
                &code,
                &display,
                &resolution,
                &ssys,
                &scode,
                &stext,
                &data,
            ],
        )
        .await
        .map_err(e)?;
    }
    tx.commit().await.map_err(e)
}

pub(super) async fn stamps(
    s: &PgStore,
    conn: &ConnectionRef,
    resource_type: &str,
    ids: &[String],
) -> StoreResult<std::collections::HashMap<String, NormalizedStamp>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT logical_id, content_hash, rules_version, patient_id FROM normalized
             WHERE organization = $1 AND connection = $2 AND resource_type = $3 AND ordinal = 0
               AND logical_id = ANY($4)",
            &[&conn.organization, &conn.connection, &resource_type, &ids],
        )
        .await
        .map_err(|e| map_err(&s.location, "read normalized stamps", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                NormalizedStamp {
                    content_hash: r.get(1),
                    rules_version: r.get(2),
                    patient_id: r.get(3),
                },
            )
        })
        .collect())
}

const ROW_COLUMNS: &str = "resource_type, logical_id, content_hash, rules_version, ordinal, kind, \
     patient_id, effective, code_system, code, display, resolution, source_system, source_code, \
     source_text, data";

fn row_to_normalized(r: &tokio_postgres::Row) -> StoredNormalized {
    StoredNormalized {
        resource_type: r.get(0),
        logical_id: r.get(1),
        content_hash: r.get(2),
        rules_version: r.get(3),
        record: NormalizedRecord {
            ordinal: r.get::<_, i32>(4) as u32,
            kind: r.get(5),
            patient_id: r.get(6),
            effective: r.get(7),
            code_system: r.get(8),
            code: r.get(9),
            display: r.get(10),
            resolution: r.get(11),
            source_system: r.get(12),
            source_code: r.get(13),
            source_text: r.get(14),
            data: r.get(15),
        },
    }
}

pub(super) async fn list(
    s: &PgStore,
    conn: &ConnectionRef,
    kind: &str,
    patient_id: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<StoredNormalized>> {
    let c = s.client().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {ROW_COLUMNS}
                 FROM normalized
                 WHERE organization = $1 AND connection = $2 AND kind = $3
                   AND ($4::text IS NULL OR patient_id = $4)
                 ORDER BY effective COLLATE \"C\" NULLS FIRST, resource_type COLLATE \"C\",
                          logical_id COLLATE \"C\", ordinal
                 LIMIT $5"
            ),
            &[
                &conn.organization,
                &conn.connection,
                &kind,
                &patient_id,
                &(limit as i64),
            ],
        )
        .await
        .map_err(|e| map_err(&s.location, "list normalized rows", e))?;
    Ok(rows.iter().map(row_to_normalized).collect())
}

pub(super) async fn of_sources(
    s: &PgStore,
    conn: &ConnectionRef,
    resource_type: &str,
    ids: &[String],
) -> StoreResult<Vec<StoredNormalized>> {
    let c = s.client().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {ROW_COLUMNS} FROM normalized
                 WHERE organization = $1 AND connection = $2 AND resource_type = $3
                   AND logical_id = ANY($4)
                 ORDER BY logical_id COLLATE \"C\", ordinal"
            ),
            &[&conn.organization, &conn.connection, &resource_type, &ids],
        )
        .await
        .map_err(|e| map_err(&s.location, "read normalized rows of sources", e))?;
    Ok(rows.iter().map(row_to_normalized).collect())
}

pub(super) async fn unmapped(
    s: &PgStore,
    org: &str,
    connection: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<UnmappedCode>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT connection, kind, source_system, source_code, source_text, COUNT(*)
             FROM normalized
             WHERE organization = $1 AND resolution = 'unmapped'
               AND ($2::text IS NULL OR connection = $2)
             GROUP BY connection, kind, source_system, source_code, source_text
             ORDER BY COUNT(*) DESC, connection COLLATE \"C\", kind COLLATE \"C\", source_code COLLATE \"C\"
             LIMIT $3",
            &[&org, &connection, &(limit as i64)],
        )
        .await
        .map_err(|e| map_err(&s.location, "list unmapped codes", e))?;
    Ok(rows
        .iter()
        .map(|r| UnmappedCode {
            connection: r.get(0),
            kind: r.get(1),
            source_system: r.get(2),
            source_code: r.get(3),
            source_text: r.get(4),
            count: r.get::<_, i64>(5) as u64,
        })
        .collect())
}

pub(super) async fn put_mapping(
    s: &PgStore,
    conn: &ConnectionRef,
    m: &CodeMapping,
) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        "INSERT INTO code_mappings (organization, connection, source_system, source_code,
            target_system, target_code, target_display, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now())
         ON CONFLICT (organization, connection, source_system, source_code) DO UPDATE SET
            target_system = EXCLUDED.target_system, target_code = EXCLUDED.target_code,
            target_display = EXCLUDED.target_display, updated_at = now()",
        &[
            &conn.organization,
            &conn.connection,
            &m.source_system,
            &m.source_code,
            &m.target_system,
            &m.target_code,
            &m.target_display,
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "store code mapping", e))
}

pub(super) async fn list_mappings(
    s: &PgStore,
    conn: &ConnectionRef,
) -> StoreResult<Vec<CodeMapping>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT source_system, source_code, target_system, target_code, target_display
             FROM code_mappings WHERE organization = $1 AND connection = $2
             ORDER BY source_system COLLATE \"C\", source_code COLLATE \"C\"",
            &[&conn.organization, &conn.connection],
        )
        .await
        .map_err(|e| map_err(&s.location, "list code mappings", e))?;
    Ok(rows
        .iter()
        .map(|r| CodeMapping {
            source_system: r.get(0),
            source_code: r.get(1),
            target_system: r.get(2),
            target_code: r.get(3),
            target_display: r.get(4),
        })
        .collect())
}
