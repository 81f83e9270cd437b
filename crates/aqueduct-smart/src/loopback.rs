//! A loopback redirect listener for command-line standalone launches. The browser is answered
//! only once the launch is over, with what became of it: complete, denied by the server (with
//! its error), or failed.

use aqueduct_core::BoxFuture;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use tokio::sync::{mpsc, oneshot};

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

/// One redirect, and where to send what became of it (the page the browser is shown).
type Received = (RedirectParams, oneshot::Sender<String>);

#[derive(Clone)]
struct ListenerState {
    expected_state: String,
    tx: mpsc::Sender<Received>,
}

/// How long the browser waits for the code exchange before it is shown a neutral page.
const OUTCOME_WAIT: Duration = Duration::from_secs(60);

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, detail: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{d}</p></body></html>",
        t = escape(title),
        d = escape(detail)
    ))
}

/// What the browser is told once the launch is over: the server's own error when it denied
/// the authorization, the failure when the exchange failed.
fn outcome_page(result: &Result<Authorized, SmartError>) -> String {
    let (title, detail) = match result {
        Ok(_) => (
            "Authorization complete",
            "Aqueduct is authorized. You can close this window.".to_string(),
        ),
        Err(SmartError::AuthorizationDenied { error, description }) => (
            "Authorization denied",
            match description {
                Some(d) => format!("The server answered {error}: {d}"),
                None => format!("The server answered {error}."),
            },
        ),
        Err(e) => ("Authorization failed", e.to_string()),
    };
    page(title, &detail).0
}

async fn callback(
    State(st): State<ListenerState>,
    RawQuery(query): RawQuery,
) -> (StatusCode, Html<String>) {
    let params = RedirectParams::from_query(query.as_deref().unwrap_or_default());
    if params.state.as_deref() != Some(st.expected_state.as_str()) {
        tracing::warn!("loopback redirect with an unexpected state ignored");
        return (
            StatusCode::BAD_REQUEST,
            page(
                "Unexpected authorization response",
                "This response does not belong to the authorization in progress; it was ignored.",
            ),
        );
    }
    let denied = params.error.is_some();
    let (done_tx, done_rx) = oneshot::channel();
    // never wait here: a second response (a reload) while the first is handled is answered
    // at once, so the listener can always shut down
    if st.tx.try_send((params, done_tx)).is_err() {
        return (
            StatusCode::GONE,
            page(
                "Authorization already handled",
                "The authorization in progress has already ended.",
            ),
        );
    }
    let status = if denied {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    match tokio::time::timeout(OUTCOME_WAIT, done_rx).await {
        Ok(Ok(html)) => (status, Html(html)),
        _ => (
            status,
            page(
                "Authorization received",
                "Aqueduct received the response; see its output for the result.",
            ),
        ),
    }
}

/// Runs a standalone launch through a loopback listener on 127.0.0.1: binds, builds the
/// authorization URL and hands it to `on_url` (print it, open a browser, or GET it in a
/// test), waits for the redirect carrying our `state`, completes the exchange and stores the
/// tokens in the vault. Requests with another state are answered 400 and ignored.
pub fn run_standalone_launch<'a, F>(
    client: &'a SmartClient,
    connection: &'a SmartConnection,
    options: LoopbackOptions,
    on_url: F,
) -> BoxFuture<'a, Result<Authorized, SmartError>>
where
    F: FnOnce(&str) + Send + 'a,
{
    Box::pin(run_standalone_launch_unboxed(
        client,
        connection,
        options,
        Box::new(on_url),
    ))
}

async fn run_standalone_launch_unboxed(
    client: &SmartClient,
    connection: &SmartConnection,
    options: LoopbackOptions,
    on_url: Box<dyn FnOnce(&str) + Send + '_>,
) -> Result<Authorized, SmartError> {
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
    let (tx, mut rx) = mpsc::channel::<Received>(1);
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
    let (params, done) = match received {
        Ok(Some(p)) => p,
        Ok(None) => {
            let _ = stop_tx.send(());
            let _ = server.await;
            return Err(SmartError::Listener("the redirect listener stopped".into()));
        }
        Err(_) => {
            let _ = stop_tx.send(());
            let _ = server.await;
            let e = SmartError::Listener(format!(
                "no redirect received within {} s",
                options.timeout.as_secs()
            ));
            client.audit(&connection.conn, "authorize", &Err(&e)).await;
            return Err(e);
        }
    };
    let result = client.complete(connection, &params).await;
    // the browser's page says what happened; then the listener stops
    let _ = done.send(outcome_page(&result));
    let _ = stop_tx.send(());
    let _ = server.await;
    result
}
