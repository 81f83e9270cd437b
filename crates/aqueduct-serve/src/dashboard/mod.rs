//! The dashboard (`/dashboard/`): server-rendered HTML over the same store and rules as the
//! API, for a person rather than a program. Per organization: connections with status,
//! freshness and completeness; runs and their ledger (every request, failures first);
//! findings (acknowledge) and alerts; patients and their record per source; the terminology
//! review queue (map a code); a sync button; charts as SVG written by the server.
//!
//! Sign-in is with an API key (the organization and scope are the key's, as on the API), or
//! with the admin password of `[serve.dashboard_admin]` (its organization, admin scope); the
//! session is held by the server ([`session`]) behind an HttpOnly, SameSite=Strict cookie, and
//! every POST carries the session's CSRF token, checked before anything is done. There is no
//! script at all: pages send a strict content security policy, and a page waiting for a sync
//! reloads itself with `<meta http-equiv="refresh">`. Every value from outside is escaped
//! ([`html::esc`]); reads of patient data are written to the access log like the API's.
//!
//! It must not know how a sync runs: the sync button raises a refresh request, exactly as
//! `POST /api/v1/connections/{connection}/sync` does.

mod actions;
pub mod chart;
pub mod html;
mod pages;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::AppState;
use crate::api::extract::Caller;
use crate::problem::Problem;
use html::{Page, error_page};
use session::{Session, Sessions};

/// What the dashboard's handlers read: the application's state and the sessions.
pub struct Dash {
    pub app: Arc<AppState>,
    pub sessions: Sessions,
    pub password_failures: session::Throttle,
}

type St = State<Arc<Dash>>;

/// The dashboard's routes, whole paths under `/dashboard/` (merged into the application, not
/// nested: a nested `/` would not answer `/dashboard/`).
pub fn routes(app: Arc<AppState>) -> Router {
    let dash = Arc::new(Dash {
        app,
        sessions: Sessions::default(),
        password_failures: session::Throttle::default(),
    });
    let signed_in = Router::new()
        .route("/dashboard/", get(pages::overview))
        .route("/dashboard/findings", get(pages::findings))
        .route("/dashboard/terminology", get(pages::terminology))
        .route(
            "/dashboard/connections/{connection}",
            get(pages::connection),
        )
        .route(
            "/dashboard/connections/{connection}/sync",
            post(actions::sync),
        )
        .route(
            "/dashboard/connections/{connection}/runs/{run}",
            get(pages::run),
        )
        .route(
            "/dashboard/connections/{connection}/runs/{run}/requests/{n}",
            get(pages::request),
        )
        .route(
            "/dashboard/connections/{connection}/findings/{id}/acknowledge",
            post(actions::acknowledge),
        )
        .route(
            "/dashboard/connections/{connection}/code-mappings",
            post(actions::map_code),
        )
        .route(
            "/dashboard/connections/{connection}/patients",
            get(pages::patients),
        )
        .route(
            "/dashboard/connections/{connection}/patients/{patient}",
            get(pages::patient),
        )
        .route(
            "/dashboard/refresh-requests/{id}",
            get(pages::refresh_request),
        )
        .route("/dashboard/logout", post(actions::logout))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&dash),
            require_session,
        ));
    Router::new()
        .route(
            "/dashboard",
            get(|| async { Redirect::permanent("/dashboard/") }),
        )
        .route(
            "/dashboard/login",
            get(actions::login_form).post(actions::login),
        )
        .route("/dashboard/static/style.css", get(style))
        .merge(signed_in)
        .with_state(dash)
}

async fn style() -> Response {
    let mut r = include_str!("style.css").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r
}

/// The signed-in person of a request, as the API's caller (organization and scope of the key).
#[derive(Clone)]
pub struct Signed {
    pub session: Session,
    pub caller: Caller,
}

impl Signed {
    /// A page of this session (its navigation and logout form).
    pub fn page(&self, title: impl Into<String>, body: String) -> Page {
        let mut p = Page::new(title, body);
        p.signed_in = Some((self.session.csrf.clone(), self.caller.org().to_string()));
        p
    }

    pub fn csrf(&self) -> String {
        html::csrf_field(&self.session.csrf)
    }
}

/// Pages need a live session whose key is still live; without one, GETs go to the login page
/// and anything else is refused.
async fn require_session(State(dash): St, mut req: Request, next: Next) -> Response {
    let session = session::cookie(req.headers(), session::SESSION_COOKIE)
        .and_then(|id| dash.sessions.get(id).map(|s| (id.to_string(), s)));
    let Some((id, session)) = session else {
        return if req.method() == axum::http::Method::GET {
            Redirect::to("/dashboard/login").into_response()
        } else {
            error_page(StatusCode::UNAUTHORIZED, "Sign in first.").into_response()
        };
    };
    if let Some(key_id) = &session.key_id {
        match dash.app.store.get_api_key(key_id).await {
            Ok(Some(k)) if k.revoked_at.is_none() => {}
            Ok(_) => {
                dash.sessions.remove(&id);
                return Redirect::to("/dashboard/login").into_response();
            }
            Err(e) => return DashError::from(Problem::store(e)).into_response(),
        }
    }
    let client_addr = req
        .extensions()
        .get::<ConnectInfo<crate::tls::ClientAddr>>()
        .map(|c| c.0.0.ip().to_string());
    let caller = Caller {
        principal: session.principal.clone(),
        client_addr,
    };
    req.extensions_mut().insert(Signed { session, caller });
    next.run(req).await
}

impl<S: Send + Sync> FromRequestParts<S> for Signed {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, DashError> {
        parts
            .extensions
            .get::<Signed>()
            .cloned()
            .ok_or_else(|| DashError::new(StatusCode::UNAUTHORIZED, "Sign in first."))
    }
}

/// A posted form whose CSRF token matched the session's; anything else is refused with 403
/// before the handler runs.
pub struct Posted {
    pub who: Signed,
    pub fields: HashMap<String, String>,
}

impl Posted {
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map(String::as_str).unwrap_or("")
    }
}

/// The fields of an `application/x-www-form-urlencoded` body (the last of a repeated name).
async fn form_fields<S: Send + Sync>(
    req: Request,
    s: &S,
) -> Result<HashMap<String, String>, DashError> {
    axum::Form::<Vec<(String, String)>>::from_request(req, s)
        .await
        .map(|f| f.0.into_iter().collect())
        .map_err(|e| DashError::new(e.status(), "The form could not be read."))
}

impl<S: Send + Sync> FromRequest<S> for Posted {
    type Rejection = DashError;

    async fn from_request(req: Request, s: &S) -> Result<Self, DashError> {
        let who = req
            .extensions()
            .get::<Signed>()
            .cloned()
            .ok_or_else(|| DashError::new(StatusCode::UNAUTHORIZED, "Sign in first."))?;
        let fields = form_fields(req, s).await.map_err(|_| csrf_refused())?;
        let given = fields.get("csrf").map(String::as_str).unwrap_or("");
        if !session::same(given, &who.session.csrf) {
            return Err(csrf_refused());
        }
        Ok(Posted { who, fields })
    }
}

fn csrf_refused() -> DashError {
    DashError::new(
        StatusCode::FORBIDDEN,
        "The form's security token is missing or does not match this session; reload the page and try again.",
    )
}

/// An error answered as an HTML page.
#[derive(Debug)]
pub struct DashError {
    pub status: StatusCode,
    pub message: String,
}

impl DashError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<Problem> for DashError {
    fn from(p: Problem) -> Self {
        Self::new(p.status, p.detail)
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        error_page(self.status, &self.message).into_response()
    }
}
