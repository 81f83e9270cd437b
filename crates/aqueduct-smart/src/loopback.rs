//! A loopback redirect listener for command-line standalone launches.

use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use tokio::sync::mpsc;

use crate::client::{Authorized, SmartClient, SmartConnection};
use crate::error::SmartError;
use crate::token::RedirectParams;

/// Where the listener binds and how long it waits.
#[derive(Debug, Clone)]
pub struct LoopbackOptions {
    /// 0 picks a free port.
    pub port: u16,
    /// The redirect path, e.g. "/callback".
    pub path: String,
    /// How long to wait for the browser to come back.
    pub timeout: Duration,
}

impl Default for LoopbackOptions {
    fn default() -> Self {
        LoopbackOptions {
            port: 0,
            path: "/callback".into(),
            timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Clone)]
struct ListenerState {
    expected_state: String,
    tx: mpsc::Sender<RedirectParams>,
}

async fn callback(
    State(st): State<ListenerState>,
    RawQuery(query): RawQuery,
) -> (StatusCode, Html<&'static str>) {
    let params = RedirectParams::from_query(query.as_deref().unwrap_or_default());
    if params.state.as_deref() != Some(st.expected_state.as_str()) {
        tracing::warn!("loopback redirect with an unexpected state ignored");
        return (
            StatusCode::BAD_REQUEST,
            Html("<html><body>Unexpected authorization response.</body></html>"),
        );
    }
    let _ = st.tx.send(params).await;
    (
        StatusCode::OK,
        Html("<html><body>Authorization received. You can close this window.</body></html>"),
    )
}

/// Runs a standalone launch through a loopback listener on 127.0.0.1: binds, builds the
/// authorization URL and hands it to `on_url` (print it, open a browser, or GET it in a
/// test), waits for the redirect carrying our `state`, completes the exchange and stores the
/// tokens in the vault. Requests with another state are answered 400 and ignored.
pub async fn run_standalone_launch<F>(
    client: &SmartClient,
    connection: &SmartConnection,
    options: LoopbackOptions,
    on_url: F,
) -> Result<Authorized, SmartError>
where
    F: FnOnce(&str),
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
        .await
        .map_err(|e| {
            SmartError::Listener(format!("cannot bind 127.0.0.1:{}: {e}", options.port))
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| SmartError::Listener(e.to_string()))?
        .port();
    let path = if options.path.starts_with('/') {
        options.path.clone()
    } else {
        format!("/{}", options.path)
    };
    let redirect_uri = format!("http://127.0.0.1:{port}{path}");
    let request = client.begin_standalone(connection, &redirect_uri).await?;
    let (tx, mut rx) = mpsc::channel(1);
    let app = Router::new()
        .route(&path, get(callback))
        .with_state(ListenerState {
            expected_state: request.state.clone(),
            tx,
        });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    on_url(&request.url);
    let received = tokio::time::timeout(options.timeout, rx.recv()).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    let params = match received {
        Ok(Some(p)) => p,
        Ok(None) => return Err(SmartError::Listener("the redirect listener stopped".into())),
        Err(_) => {
            let e = SmartError::Listener(format!(
                "no redirect received within {} s",
                options.timeout.as_secs()
            ));
            client.audit(&connection.conn, "authorize", &Err(&e)).await;
            return Err(e);
        }
    };
    client.complete(connection, &params).await
}
