//! The SMART endpoints an EHR and a person's browser reach on `aqueduct serve`:
//! - `GET /smart/launch?iss=…&launch=…[&org=…]`: an EHR launch. `iss` is followed only when it
//!   is the base URL of a connection configured for EHR launches (`auth.type = "smart-ehr"`);
//!   the organization's connections are its allow-list. An unknown `iss` is refused before any
//!   request leaves Aqueduct.
//! - `GET /smart/callback`: the redirect of every launch this server starts, EHR or
//!   standalone; the `state` names the connection.
//! - `GET /.well-known/jwks.json`: the public keys of the backend-services connections, and
//!   retired keys until their `published_until`, so assertions signed just before a rotation
//!   still verify.
//!
//! State (single use, bound to its connection), PKCE S256, the nonce and the id_token are
//! checked by `aqueduct-smart`; the tokens and the launch context (patient, encounter,
//! fhirUser) are stored in the vault and every step is an auth event. This module only routes.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use aqueduct_config::{AuthConfig, Config};
use aqueduct_smart::{RedirectParams, SmartClient, SmartConnection, SmartError, same_base};
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::problem::Problem;

/// A public JWK and, for a retired key, when it stops being published.
type PublishedKey = (Value, Option<chrono::DateTime<Utc>>);

/// What the SMART endpoints keep between requests.
#[derive(Default)]
pub struct SmartEndpoints {
    /// Made on first use: it needs the vault key, which a server without SMART connections
    /// does not have to configure.
    client: tokio::sync::OnceCell<Arc<SmartClient>>,
    /// The keys from the config file, read once: `(jwk, published until)`.
    keys: OnceLock<Result<Vec<PublishedKey>, String>>,
}

pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/smart/launch", get(launch))
        .route("/smart/callback", get(callback))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

/// The redirect URI this server registers at the EHR: `[serve] public_url` + `/smart/callback`.
pub fn redirect_uri(state: &AppState) -> String {
    let base = match &state.settings.public_url {
        Some(u) => u.as_str().trim_end_matches('/').to_string(),
        None => {
            let scheme = if state.settings.is_tls() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", state.settings.bind)
        }
    };
    format!("{base}/smart/callback")
}

#[derive(Deserialize)]
struct LaunchQuery {
    iss: Option<String>,
    launch: Option<String>,
    /// Needed only when two organizations have a connection to the same `iss`.
    org: Option<String>,
}

async fn launch(State(state): State<Arc<AppState>>, Query(q): Query<LaunchQuery>) -> Response {
    let (Some(iss), Some(launch)) = (q.iss.filter(|s| !s.is_empty()), q.launch) else {
        return Problem::bad_request("an EHR launch needs `iss` and `launch`").into_response();
    };
    let connections = match launch_connections(&state.config) {
        Ok(c) => c,
        Err(e) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "config", e).into_response();
        }
    };
    let matching: Vec<SmartConnection> = connections
        .into_iter()
        .filter(|c| same_base(&c.base_url, &iss))
        .filter(|c| q.org.as_deref().is_none_or(|o| c.conn.organization == o))
        .collect();
    let organizations: BTreeSet<&str> = matching
        .iter()
        .map(|c| c.conn.organization.as_str())
        .collect();
    let organization = match organizations.len() {
        0 => {
            // nothing is sent to an issuer nobody configured
            tracing::warn!("EHR launch from an unknown issuer refused");
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "unknown-issuer",
                "`iss` is not the base URL of a connection configured for an EHR launch",
            )
            .into_response();
        }
        1 => organizations
            .into_iter()
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => {
            return Problem::bad_request(
                "several organizations have a connection to this `iss`: add `org`",
            )
            .into_response();
        }
    };
    let client = match smart_client(&state).await {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    match client
        .begin_ehr_launch(
            &organization,
            &matching,
            &iss,
            &launch,
            &redirect_uri(&state),
        )
        .await
    {
        Ok(request) => redirect(&request.url),
        Err(e) => smart_problem(&e).into_response(),
    }
}

async fn callback(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    let params = RedirectParams::from_query(query.as_deref().unwrap_or(""));
    let client = match smart_client(&state).await {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    let Some(conn) = params
        .state
        .as_deref()
        .and_then(|s| client.pending_connection(s))
    else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization not completed",
            "This redirect does not belong to a launch this server started, or it was already used or has expired. Start the launch again.",
        );
    };
    let connection = match launch_connections(&state.config) {
        Ok(all) => all.into_iter().find(|c| c.conn == conn),
        Err(e) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "config", e).into_response();
        }
    };
    let Some(connection) = connection else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization not completed",
            "The connection this launch was started for is no longer configured.",
        );
    };
    match client.complete(&connection, &params).await {
        Ok(done) => {
            tracing::info!(connection = %done.connection, flow = done.flow.as_str(), "SMART launch completed");
            page(
                StatusCode::OK,
                "Connected",
                &format!(
                    "Aqueduct is authorized for {} ({}). You can close this window.",
                    done.connection,
                    done.flow.as_str()
                ),
            )
        }
        Err(e) => page(
            StatusCode::BAD_REQUEST,
            "Authorization not completed",
            &format!("The authorization server's answer was refused: {e}"),
        ),
    }
}

async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let keys = state
        .smart
        .keys
        .get_or_init(|| published_keys(&state.config));
    match keys {
        Ok(keys) => {
            let now = Utc::now();
            let keys: Vec<&Value> = keys
                .iter()
                .filter(|(_, until)| until.is_none_or(|u| u > now))
                .map(|(k, _)| k)
                .collect();
            let mut r = Json(json!({ "keys": keys })).into_response();
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            r
        }
        Err(e) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "config", e.clone()).into_response()
        }
    }
}

/// The public JWK of every backend-services key in the config, current and retired.
fn published_keys(config: &Config) -> Result<Vec<PublishedKey>, String> {
    let mut out = Vec::new();
    for (org, o) in &config.organizations {
        for (name, c) in &o.connections {
            let AuthConfig::SmartBackend {
                private_key,
                algorithm,
                key_id,
                retired_keys,
                ..
            } = &c.auth
            else {
                continue;
            };
            let what = format!("private_key of connection {org}/{name}");
            out.push((public_jwk(private_key, algorithm, key_id, &what)?, None));
            for (i, r) in retired_keys.iter().enumerate() {
                let what = format!("retired_keys[{i}] of connection {org}/{name}");
                let jwk = public_jwk(&r.private_key, &r.algorithm, &r.key_id, &what)?;
                out.push((jwk, Some(r.published_until)));
            }
        }
    }
    Ok(out)
}

fn public_jwk(
    key: &aqueduct_config::SecretRef,
    algorithm: &str,
    key_id: &Option<String>,
    what: &str,
) -> Result<Value, String> {
    let alg = algorithm
        .parse()
        .map_err(|_| format!("{what}: algorithm must be RS384 or ES384"))?;
    let pem = key.resolve(what).map_err(|e| e.to_string())?;
    let key = aqueduct_smart::SigningKey::from_pkcs8_pem(alg, key_id.clone(), &pem)
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(key.public_jwk().clone())
}

/// Every connection a browser launch can complete for: EHR and standalone launches.
fn launch_connections(config: &Config) -> Result<Vec<SmartConnection>, String> {
    let mut out = Vec::new();
    for (org, o) in &config.organizations {
        for (name, c) in &o.connections {
            if !matches!(
                c.auth,
                AuthConfig::SmartEhr { .. } | AuthConfig::SmartStandalone { .. }
            ) {
                continue;
            }
            let resolved =
                aqueduct_engine::ResolvedConnection::from_config(config, &format!("{org}/{name}"))
                    .map_err(|e| e.to_string())?;
            if let Some(sc) = resolved.smart_connection().map_err(|e| e.to_string())? {
                out.push(sc);
            }
        }
    }
    Ok(out)
}

async fn smart_client(state: &AppState) -> Result<Arc<SmartClient>, Problem> {
    state
        .smart
        .client
        .get_or_try_init(|| async {
            let key = aqueduct_engine::vault_key(&state.config).map_err(|e| {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no-vault-key",
                    e.to_string(),
                )
            })?;
            SmartClient::new(Arc::clone(&state.store), key)
                .map(Arc::new)
                .map_err(|e| smart_problem(&e))
        })
        .await
        .cloned()
}

fn smart_problem(e: &SmartError) -> Problem {
    match e {
        SmartError::UnknownIssuer { .. } => Problem::new(
            StatusCode::BAD_REQUEST,
            "unknown-issuer",
            "`iss` is not the base URL of a connection configured for an EHR launch",
        ),
        SmartError::InvalidRedirect(d) => Problem::bad_request(d.clone()),
        other => Problem::new(StatusCode::BAD_GATEWAY, "smart", other.to_string()),
    }
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, v),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => Problem::new(
            StatusCode::BAD_GATEWAY,
            "smart",
            "the authorization URL is not a valid header value",
        )
        .into_response(),
    }
}

/// A minimal page for the person whose browser lands here; the text is escaped.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{x}</p></body></html>",
        t = crate::dashboard::html::esc(title),
        x = crate::dashboard::html::esc(text)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
