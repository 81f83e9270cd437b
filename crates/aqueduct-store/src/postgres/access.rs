//! API keys and the data-access log in PostgreSQL.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{PgStore, map_err};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

const KEY_COLUMNS: &str = "id, organization, scope, label, secret_hash, created_at, revoked_at";

fn row_to_key(r: &Row) -> ApiKey {
    let scope: String = r.get(2);
    ApiKey {
        id: r.get(0),
        organization: r.get(1),
        // an unknown scope in the table reads as the narrowest, never as more rights
        scope: ApiScope::parse(&scope).unwrap_or(ApiScope::Read),
        label: r.get(3),
        secret_hash: r.get(4),
        created_at: r.get(5),
        revoked_at: r.get(6),
    }
}

pub(super) async fn create_key(s: &PgStore, key: &ApiKey) -> StoreResult<()> {
    let c = s.client().await?;
    c.execute(
        &format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        &[
            &key.id,
            &key.organization,
            &key.scope.as_str(),
            &key.label,
            &key.secret_hash,
            &key.created_at,
            &key.revoked_at,
        ],
    )
    .await
    .map(|_| ())
    .map_err(|e| map_err(&s.location, "create api key", e))
}

pub(super) async fn get_key(s: &PgStore, id: &str) -> StoreResult<Option<ApiKey>> {
    let c = s.client().await?;
    let row = c
        .query_opt(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(|e| map_err(&s.location, "read api key", e))?;
    Ok(row.as_ref().map(row_to_key))
}

pub(super) async fn list_keys(s: &PgStore, org: &str) -> StoreResult<Vec<ApiKey>> {
    let c = s.client().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE organization = $1
                 ORDER BY created_at DESC, id"
            ),
            &[&org],
        )
        .await
        .map_err(|e| map_err(&s.location, "list api keys", e))?;
    Ok(rows.iter().map(row_to_key).collect())
}

pub(super) async fn revoke_key(
    s: &PgStore,
    org: &str,
    id: &str,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let c = s.client().await?;
    c.execute(
        "UPDATE api_keys SET revoked_at = $3
         WHERE organization = $1 AND id = $2 AND revoked_at IS NULL",
        &[&org, &id, &at],
    )
    .await
    .map(|n| n > 0)
    .map_err(|e| map_err(&s.location, "revoke api key", e))
}

pub(super) async fn record(s: &PgStore, events: &[AccessEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let e = |err| map_err(&s.location, "record access", err);
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(e)?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO access_log (at, organization, principal, action, route, patient,
                 resource_types, count, client_addr)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(e)?;
    for ev in events {
        tx.execute(
            &insert,
            &[
                &ev.at,
                &ev.organization,
                &ev.principal,
                &ev.action,
                &ev.route,
                &ev.patient,
                &ev.resource_types.join(","),
                &(ev.count as i64),
                &ev.client_addr,
            ],
        )
        .await
        .map_err(e)?;
    }
    tx.commit().await.map_err(e)
}

pub(super) async fn list(
    s: &PgStore,
    org: &str,
    patient: Option<&str>,
    before_id: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<StoredAccessEvent>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT id, at, organization, principal, action, route, patient, resource_types,
                    count, client_addr
             FROM access_log
             WHERE organization = $1 AND ($2::text IS NULL OR patient = $2) AND id < $3
             ORDER BY id DESC LIMIT $4",
            &[
                &org,
                &patient,
                &before_id.unwrap_or(i64::MAX),
                &(limit as i64),
            ],
        )
        .await
        .map_err(|e| map_err(&s.location, "list access", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let types: String = r.get(7);
            StoredAccessEvent {
                id: r.get(0),
                event: AccessEvent {
                    at: r.get(1),
                    organization: r.get(2),
                    principal: r.get(3),
                    action: r.get(4),
                    route: r.get(5),
                    patient: r.get(6),
                    resource_types: types
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect(),
                    count: r.get::<_, i64>(8).max(0) as u64,
                    client_addr: r.get(9),
                },
            }
        })
        .collect())
}
