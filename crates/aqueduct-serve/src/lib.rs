//! `aqueduct serve`: the REST API (`/api/v1`) and the read-only FHIR R4 facade
//! (`/fhir/{org}/`) over the store, so the application above reads one clean record without
//! knowing which EHR it came from.
//!
//! It owns: authentication (API keys bound to one organization, [`auth`]), the audit log of
//! every read of patient data ([`access_log`], committed before the answer leaves), the error
//! shapes ([`problem`]: RFC 9457 for the API, OperationOutcome for the facade), security
//! headers and CORS ([`security`]), and the two route trees ([`api`], [`fhir`]).
//!
//! It must not know: a database driver (it speaks `aqueduct_core::Store`), how a sync runs
//! (actions raise refresh requests, which the engine consumes), or any vendor. Raw bytes are
//! never rewritten in the store: the facade's clean view is computed per answer.
//!
//! Isolation: every route is bound to the caller's organization; another organization's ids
//! answer 404, exactly like ids that do not exist.

pub mod access_log;
pub mod api;
pub mod auth;
pub mod cache;
pub mod dashboard;
pub mod fhir;
pub mod jwt;
pub mod openapi;
pub mod problem;
pub mod security;
pub mod settings;
pub mod smart;
pub mod tls;

use aqueduct_core::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aqueduct_config::Config;
use aqueduct_core::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;

pub use access_log::AccessLog;
pub use auth::{Authenticator, Principal, generate_key};
pub use problem::{Outcome, Problem};
pub use settings::ServeSettings;

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `[serve]` has an unknown key or a value of the wrong type (with its line).
    #[error(transparent)]
    Config(#[from] aqueduct_config::ConfigError),
    #[error("{0}")]
    Settings(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server stopped")]
    Io(#[source] std::io::Error),
}

/// What every handler reads.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub settings: ServeSettings,
    pub auth: Authenticator,
    pub access: AccessLog,
    /// Connection overviews per organization (`/api/v1/connections`), `overview_cache_ms` old
    /// at most.
    pub overviews: cache::TtlCache<String, Arc<Vec<api::ConnectionView>>>,
    /// The connections the store knows per organization (every request checks one).
    /// The connections the store knows per organization: (name, source base URL).
    pub store_connections: cache::TtlCache<String, Arc<Vec<(String, String)>>>,
    /// Freshness of each source as the facade's Bundles carry it.
    pub freshness: cache::TtlCache<aqueduct_core::ConnectionRef, serde_json::Value>,
    /// The SMART client of `/smart/launch` and `/smart/callback`, and the published keys.
    pub smart: smart::SmartEndpoints,
}

impl AppState {
    /// Starts the access-log writer on the current runtime.
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>, settings: ServeSettings) -> Arc<Self> {
        Arc::new(Self {
            auth: Authenticator::new(
                Arc::clone(&store),
                Duration::from_secs(settings.key_cache_secs),
                jwt::JwtVerifier::new(settings.jwt_issuers.clone()),
            ),
            access: AccessLog::start(Arc::clone(&store)),
            overviews: cache::TtlCache::new(Duration::from_millis(settings.overview_cache_ms)),
            freshness: cache::TtlCache::new(Duration::from_millis(settings.overview_cache_ms)),
            smart: smart::SmartEndpoints::default(),
            store_connections: cache::TtlCache::new(Duration::from_millis(
                settings.overview_cache_ms,
            )),
            store,
            config,
            settings,
        })
    }

    /// The page size for a requested `limit`/`_count`: the default when absent, never above
    /// the maximum.
    pub fn page_size(&self, asked: Option<u32>) -> u32 {
        asked
            .unwrap_or(self.settings.default_page_size)
            .clamp(1, self.settings.max_page_size)
    }
}

/// The whole application: API, facade, security headers, body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.settings.max_body_bytes;
    Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(ready).with_state(Arc::clone(&state)),
        )
        .route("/api/openapi.json", axum::routing::get(openapi::document))
        .nest("/api/v1", api::routes(Arc::clone(&state)))
        .merge(fhir::routes(Arc::clone(&state)))
        .merge(dashboard::routes(Arc::clone(&state)))
        .merge(smart::routes(Arc::clone(&state)))
        .fallback(|| async { Problem::not_found("no such route") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            security::headers,
        ))
}

/// Ready when the store answers: a load balancer stops sending traffic to a server whose
/// store is gone. Unauthenticated, and it names no data.
async fn ready(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.store.schema_version().await {
        Ok(v) => {
            axum::Json(serde_json::json!({"status": "ready", "schema_version": v})).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                "the store does not answer",
            )
            .into_response()
        }
    }
}

/// Serves `router(state)` on `listener` until `shutdown` completes, then lets the requests in
/// flight finish. With `[serve] tls_cert` and `tls_key`, HTTPS only.
pub fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> BoxFuture<'static, Result<(), ServeError>> {
    Box::pin(serve_unboxed(listener, state, Box::pin(shutdown)))
}

async fn serve_unboxed(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: BoxFuture<'static, ()>,
) -> Result<(), ServeError> {
    let tls = state.settings.tls_files()?;
    let app = router(state).into_make_service_with_connect_info::<tls::ClientAddr>();
    match tls {
        Some((cert, key)) => {
            let listener = tls::TlsListener::new(listener, tls::server_config(&cert, &key)?)
                .map_err(ServeError::Io)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(ServeError::Io)
        }
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Io),
    }
}
