//! The REST API (`/api/v1`, JSON): the caller's organization, its connections with status and
//! completeness, sync runs and their ledger, findings, alerts, the terminology review queue,
//! patients and their records per source, persons across sources and the match review
//! queue, actions (start a sync, raise a refresh request,
//! map a code) and the audit log. Every route is bound to the caller's organization.

pub(crate) mod admin;
pub(crate) mod connections;

pub use connections::ConnectionView;
pub mod extract;
pub(crate) mod identity;
pub(crate) mod records;

pub(crate) use records::log_read as records_log;

use std::sync::Arc;

use aqueduct_core::ConnectionRef;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::AppState;
use crate::problem::Problem;
use extract::Caller;

pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/organization", get(connections::organization))
        .route("/connections", get(connections::list))
        .route("/connections/{connection}", get(connections::one))
        .route("/connections/{connection}/runs", get(connections::runs))
        .route(
            "/connections/{connection}/runs/{run}",
            get(connections::run),
        )
        .route(
            "/connections/{connection}/runs/{run}/requests",
            get(connections::run_requests),
        )
        .route(
            "/connections/{connection}/findings",
            get(connections::findings),
        )
        .route(
            "/connections/{connection}/findings/{id}/acknowledge",
            post(connections::acknowledge_finding),
        )
        .route("/connections/{connection}/sync", post(admin::start_sync))
        .route(
            "/connections/{connection}/code-mappings",
            get(records::code_mappings).put(records::map_code),
        )
        .route("/connections/{connection}/patients", get(records::patients))
        .route(
            "/connections/{connection}/patients/{patient}",
            get(records::patient_record),
        )
        .route("/persons", get(identity::persons))
        .route("/persons/{id}", get(identity::person))
        .route("/match/review", get(identity::review))
        .route("/match/review/{pair}/decide", post(identity::decide))
        .route("/match/explain", get(identity::explain))
        .route("/alerts", get(connections::alerts))
        .route("/terminology/unmapped", get(records::unmapped))
        .route(
            "/refresh-requests",
            get(admin::refresh_requests).post(admin::raise_refresh),
        )
        .route("/refresh-requests/{id}", get(admin::refresh_request))
        .route("/audit", get(admin::audit))
        .route("/api-keys", get(admin::keys).post(admin::create_key))
        .route("/api-keys/{id}", delete(admin::revoke_key))
        .fallback(|| async { Problem::not_found("no such API route") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ))
        .with_state(state)
}

/// Every API request authenticates; the principal rides in the request's extensions.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    match state.auth.authenticate(req.headers()).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(problem) => problem.into_response(),
    }
}

/// The caller's connection `name`: known to the configuration or to the store for the
/// caller's organization, else 404 (another organization's connection included).
pub(crate) async fn connection(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<ConnectionRef, Problem> {
    let org = caller.org();
    let configured = state
        .config
        .organizations
        .get(org)
        .is_some_and(|o| o.connections.contains_key(name));
    if configured
        || store_connections(state, org)
            .await?
            .iter()
            .any(|(c, _)| c == name)
    {
        Ok(ConnectionRef::new(org, name))
    } else {
        Err(Problem::not_found(format!("no connection {name:?}")))
    }
}

/// The connections the store knows for `org` (HL7 feeds, connections no longer configured)
/// with their source base URLs, at most `overview_cache_ms` old.
pub(crate) async fn store_connections(
    state: &AppState,
    org: &str,
) -> Result<Arc<Vec<(String, String)>>, Problem> {
    if let Some(c) = state.store_connections.get(&org.to_string()) {
        return Ok(c);
    }
    let names: Vec<(String, String)> = state
        .store
        .list_connections(org)
        .await
        .map_err(Problem::store)?
        .into_iter()
        .map(|c| (c.name, c.base_url))
        .collect();
    let names = Arc::new(names);
    state
        .store_connections
        .put(org.to_string(), Arc::clone(&names));
    Ok(names)
}
