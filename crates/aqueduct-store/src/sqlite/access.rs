//! API keys and the data-access log in SQLite.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{map_err, parse_ts, ts};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

const KEY_COLUMNS: &str = "id, organization, scope, label, secret_hash, created_at, revoked_at";

fn row_to_key(r: &Row) -> rusqlite::Result<ApiKey> {
    let scope: String = r.get(2)?;
    Ok(ApiKey {
        id: r.get(0)?,
        organization: r.get(1)?,
        // an unknown scope in the table reads as the narrowest, never as more rights
        scope: ApiScope::parse(&scope).unwrap_or(ApiScope::Read),
        label: r.get(3)?,
        secret_hash: r.get(4)?,
        created_at: parse_ts(&r.get::<_, String>(5)?),
        revoked_at: r.get::<_, Option<String>>(6)?.map(|s| parse_ts(&s)),
    })
}

pub(super) fn create_key(c: &mut Connection, loc: &str, key: &ApiKey) -> StoreResult<()> {
    c.execute(
        &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            key.id,
            key.organization,
            key.scope.as_str(),
            key.label,
            key.secret_hash,
            ts(key.created_at),
            key.revoked_at.map(ts)
        ],
    )
    .map(|_| ())
    .map_err(|e| map_err(loc, "create api key", e))
}

pub(super) fn get_key(c: &mut Connection, loc: &str, id: &str) -> StoreResult<Option<ApiKey>> {
    c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"))
        .and_then(|mut s| s.query_row(params![id], row_to_key).optional())
        .map_err(|e| map_err(loc, "read api key", e))
}

pub(super) fn list_keys(c: &mut Connection, loc: &str, org: &str) -> StoreResult<Vec<ApiKey>> {
    c.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE organization = ?1
         ORDER BY created_at DESC, id"
    ))
    .and_then(|mut s| s.query_map(params![org], row_to_key)?.collect())
    .map_err(|e| map_err(loc, "list api keys", e))
}

pub(super) fn revoke_key(
    c: &mut Connection,
    loc: &str,
    org: &str,
    id: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> StoreResult<bool> {
    c.execute(
        "UPDATE api_keys SET revoked_at = ?3
         WHERE organization = ?1 AND id = ?2 AND revoked_at IS NULL",
        params![org, id, ts(at)],
    )
    .map(|n| n > 0)
    .map_err(|e| map_err(loc, "revoke api key", e))
}

pub(super) fn record(c: &mut Connection, loc: &str, events: &[AccessEvent]) -> StoreResult<()> {
    let e = |err| map_err(loc, "record access", err);
    let tx = c.transaction().map_err(e)?;
    {
        let mut s = tx
            .prepare_cached(
                "INSERT INTO access_log (at, organization, principal, action, route, patient,
                     resource_types, count, client_addr)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(e)?;
        for ev in events {
            s.execute(params![
                ts(ev.at),
                ev.organization,
                ev.principal,
                ev.action,
                ev.route,
                ev.patient,
                ev.resource_types.join(","),
                ev.count as i64,
                ev.client_addr
            ])
            .map_err(e)?;
        }
    }
    tx.commit().map_err(e)
}

pub(super) fn list(
    c: &mut Connection,
    loc: &str,
    org: &str,
    patient: Option<&str>,
    before_id: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<StoredAccessEvent>> {
    c.prepare_cached(
        "SELECT id, at, organization, principal, action, route, patient, resource_types, count,
                client_addr
         FROM access_log
         WHERE organization = ?1 AND (?2 IS NULL OR patient = ?2) AND id < ?3
         ORDER BY id DESC LIMIT ?4",
    )
    .and_then(|mut s| {
        s.query_map(
            params![org, patient, before_id.unwrap_or(i64::MAX), limit],
            |r| {
                let types: String = r.get(7)?;
                Ok(StoredAccessEvent {
                    id: r.get(0)?,
                    event: AccessEvent {
                        at: parse_ts(&r.get::<_, String>(1)?),
                        organization: r.get(2)?,
                        principal: r.get(3)?,
                        action: r.get(4)?,
                        route: r.get(5)?,
                        patient: r.get(6)?,
                        resource_types: split_types(&types),
                        count: r.get::<_, i64>(8)?.max(0) as u64,
                        client_addr: r.get(9)?,
                    },
                })
            },
        )?
        .collect()
    })
    .map_err(|e| map_err(loc, "list access", e))
}

pub(crate) fn split_types(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}
