//! What a person does: sign in and out, start a sync, acknowledge a finding, map a code. Every
//! POST but the login is a [`Posted`] form (its CSRF token checked first); the login form has
//! a double-submit token of its own, since there is no session yet. Sign-in is with an API key
//! or with the admin password of `[serve.dashboard_admin]`.

use std::sync::Arc;

use aqueduct_core::{Acknowledgement, ApiScope, RefreshRequest};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::html::{Page, esc, seg};
use super::session::{self, LOGIN_COOKIE, SESSION_COOKIE, random_token, set_cookie};
use super::{Dash, DashError, Posted};
use crate::api::extract::P;

fn secure(dash: &Dash) -> bool {
    dash.app.settings.is_tls()
}

fn no_randomness() -> DashError {
    DashError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "The system's random source failed.",
    )
}

/// The login page, with a fresh double-submit token in a cookie and in the form.
fn login_page(dash: &Dash, status: StatusCode, message: Option<&str>) -> Response {
    let Some(token) = random_token() else {
        return no_randomness().into_response();
    };
    let mut body = String::new();
    if let Some(m) = message {
        body.push_str(&format!(
            "<p class=\"error\" id=\"login-error\">{}</p>",
            esc(m)
        ));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/dashboard/login\" class=\"login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"api_key\">API key</label>\
         <input type=\"password\" id=\"api_key\" name=\"api_key\" autocomplete=\"off\" required \
          placeholder=\"aqk_…\">\
         <button type=\"submit\" id=\"sign-in-key\">Sign in</button></form>\
         <p class=\"muted\">The key's organization and scope are the session's: a read key \
          shows, a write key also starts syncs, maps codes and acknowledges findings. Create \
          one with <code>aqueduct api-keys create --org ORG --scope write</code>.</p>",
        esc(&token)
    ));
    if let Some(a) = &dash.app.settings.dashboard_admin {
        body.push_str(&format!(
            "<h2>Or as the administrator of {}</h2>\
             <form method=\"post\" action=\"/dashboard/login\" class=\"login\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label for=\"password\">Admin password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\" id=\"sign-in-password\">Sign in</button></form>",
            esc(&a.organization),
            esc(&token)
        ));
    }
    let mut p = Page::new("Sign in", body);
    p.status = status;
    let mut r = p.into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        LOGIN_COOKIE,
        &token,
        std::time::Duration::from_secs(600),
        secure(dash),
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub async fn login_form(State(dash): State<Arc<Dash>>) -> Response {
    login_page(&dash, StatusCode::OK, None)
}

/// Signs in with an API key: the form's token must match its cookie (else 403), the key must
/// verify (else 401 and the form again).
pub async fn login(State(dash): State<Arc<Dash>>, req: Request) -> Response {
    let cookie_token = session::cookie(req.headers(), LOGIN_COOKIE).map(str::to_string);
    let fields = match super::form_fields(req, &()).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let given = fields.get("csrf").map(String::as_str).unwrap_or("");
    if given.is_empty() || !cookie_token.is_some_and(|c| session::same(&c, given)) {
        return DashError::new(
            StatusCode::FORBIDDEN,
            "The sign-in form's security token is missing or does not match; open the sign-in page again.",
        )
        .into_response();
    }
    if let Some(password) = fields.get("password") {
        return password_login(&dash, password).await;
    }
    let key = fields.get("api_key").map(|k| k.trim()).unwrap_or_default();
    let refused = |dash: &Dash| {
        login_page(
            dash,
            StatusCode::UNAUTHORIZED,
            Some("That API key is unknown or revoked."),
        )
    };
    // only API keys: a session must end when its credential is revoked, which the store says
    let Some(key_id) = key
        .strip_prefix("aqk_")
        .and_then(|r| r.split_once('_'))
        .map(|(id, _)| id.to_string())
    else {
        return refused(&dash);
    };
    let mut headers = HeaderMap::new();
    let Ok(v) = HeaderValue::from_str(&format!("Bearer {key}")) else {
        return refused(&dash);
    };
    headers.insert(header::AUTHORIZATION, v);
    let principal = match dash.app.auth.authenticate(&headers).await {
        Ok(p) => p,
        Err(p) if p.status == StatusCode::UNAUTHORIZED => return refused(&dash),
        Err(p) => return DashError::from(p).into_response(),
    };
    signed_in(&dash, principal, Some(key_id))
}

/// Signs in with the admin password: its organization, admin scope. Wrong passwords are
/// throttled (429 once there were too many in the last minute, whoever sent them).
async fn password_login(dash: &Dash, given: &str) -> Response {
    let admin = match (
        &dash.app.settings.dashboard_admin,
        dash.app.settings.admin_password(),
    ) {
        (Some(a), Ok(Some(p))) => (a.organization.clone(), p),
        (None, _) | (_, Ok(None)) => {
            return login_page(
                dash,
                StatusCode::UNAUTHORIZED,
                Some("Password sign-in is not configured here; use an API key."),
            );
        }
        (_, Err(e)) => {
            tracing::error!(error = %e, "the dashboard's admin password cannot be read");
            return DashError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The admin password cannot be read on the server; use an API key.",
            )
            .into_response();
        }
    };
    if !dash.password_failures.open() {
        return login_page(
            dash,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many wrong passwords in the last minute; wait a minute, or use an API key."),
        );
    }
    // hashed first so the comparison takes the same time whatever the lengths
    use sha2::Digest as _;
    let (a, b) = (sha2::Sha256::digest(given), sha2::Sha256::digest(&admin.1));
    if aws_lc_rs::constant_time::verify_slices_are_equal(&a, &b).is_err() {
        dash.password_failures.failed();
        tracing::warn!("a wrong admin password for the dashboard");
        return login_page(
            dash,
            StatusCode::UNAUTHORIZED,
            Some("That password is wrong."),
        );
    }
    signed_in(
        dash,
        crate::auth::Principal {
            organization: admin.0,
            scope: ApiScope::Admin,
            name: "dashboard-admin".into(),
        },
        None,
    )
}

/// A new session: its cookie set, the login cookie cleared, on to the overview.
fn signed_in(dash: &Dash, principal: crate::auth::Principal, key_id: Option<String>) -> Response {
    let Some((id, _)) = dash.sessions.create(principal, key_id) else {
        return no_randomness().into_response();
    };
    let mut r = Redirect::to("/dashboard/").into_response();
    let h = r.headers_mut();
    for c in [
        set_cookie(SESSION_COOKIE, &id, session::LIFETIME, secure(dash)),
        set_cookie(LOGIN_COOKIE, "", std::time::Duration::ZERO, secure(dash)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

/// Ends the session on the server and clears its cookie (a POST with the CSRF token, so no
/// other site can sign a person out).
pub async fn logout(
    State(dash): State<Arc<Dash>>,
    headers: HeaderMap,
    _checked: Posted,
) -> Response {
    if let Some(id) = session::cookie(&headers, SESSION_COOKIE) {
        dash.sessions.remove(id);
    }
    let mut r = Redirect::to("/dashboard/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        SESSION_COOKIE,
        "",
        std::time::Duration::ZERO,
        secure(&dash),
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Starts a sync of the whole connection: a refresh request, as the API raises it; the page
/// of that request follows it until it is done.
pub async fn sync(
    State(dash): State<Arc<Dash>>,
    P(name): P<String>,
    form: Posted,
) -> Result<Response, DashError> {
    let caller = &form.who.caller;
    caller.principal.require(ApiScope::Write)?;
    crate::api::connection(&dash.app, caller, &name).await?;
    let id = dash
        .app
        .store
        .enqueue_refresh(
            caller.org(),
            &RefreshRequest {
                patient_key: None,
                connection: Some(name),
                reason: "dashboard:sync".into(),
                source: caller.principal.name.clone(),
            },
        )
        .await
        .map_err(crate::problem::Problem::store)?;
    dash.app.overviews.clear();
    Ok(Redirect::to(&format!("/dashboard/refresh-requests/{id}")).into_response())
}

pub async fn acknowledge(
    State(dash): State<Arc<Dash>>,
    P((name, id)): P<(String, i64)>,
    form: Posted,
) -> Result<Response, DashError> {
    let caller = &form.who.caller;
    caller.principal.require(ApiScope::Write)?;
    let conn = crate::api::connection(&dash.app, caller, &name).await?;
    let note = form.field("note").trim();
    if note.chars().count() > 1000 {
        return Err(DashError::new(
            StatusCode::BAD_REQUEST,
            "The note is longer than 1,000 characters.",
        ));
    }
    let ack = Acknowledgement {
        by: caller.principal.name.clone(),
        at: chrono::Utc::now(),
        note: (!note.is_empty()).then(|| note.to_string()),
    };
    dash.app
        .store
        .acknowledge_finding(&conn, id, &ack)
        .await
        .map_err(crate::problem::Problem::store)?
        .ok_or_else(|| {
            DashError::new(
                StatusCode::NOT_FOUND,
                format!("There is no finding {id} of connection {name}."),
            )
        })?;
    Ok(Redirect::to(&format!("/dashboard/connections/{}#findings", seg(&name))).into_response())
}

/// Maps a local code to a standard one, checked as the API and the CLI check it; the next
/// normalization (after the next sync) re-derives the rows it touches.
pub async fn map_code(
    State(dash): State<Arc<Dash>>,
    P(name): P<String>,
    form: Posted,
) -> Result<Response, DashError> {
    let caller = &form.who.caller;
    caller.principal.require(ApiScope::Write)?;
    let conn = crate::api::connection(&dash.app, caller, &name).await?;
    let display = form.field("display").trim();
    let mapping = aqueduct_normalize::validate_mapping(&aqueduct_normalize::MappingRequest {
        source_system: form.field("source_system").to_string(),
        source_code: form.field("source_code").to_string(),
        target_system: form.field("target_system").to_string(),
        target_code: form.field("target_code").to_string(),
        display: (!display.is_empty()).then(|| display.to_string()),
    })
    .map_err(|e| DashError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    dash.app
        .store
        .put_code_mapping(&conn, &mapping)
        .await
        .map_err(crate::problem::Problem::store)?;
    Ok(Redirect::to(&format!(
        "/dashboard/terminology?mapped={}",
        seg(&format!(
            "{}|{}",
            mapping.source_system, mapping.source_code
        ))
    ))
    .into_response())
}
