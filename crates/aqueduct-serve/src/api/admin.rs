//! Actions and administration: start a sync and raise refresh requests (202, then poll the
//! request), the audit log, and the organization's API keys.

use std::sync::Arc;

use aqueduct_core::{ApiKey, ApiScope, RefreshRecord, RefreshRequest, StoredAccessEvent};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Caller, J, LimitQuery, P, Q};
use crate::AppState;
use crate::problem::Problem;

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    refresh_request: i64,
    /// Poll this for the outcome and the runs it caused.
    status_url: String,
}

fn accepted(id: i64) -> Response {
    let url = format!("/api/v1/refresh-requests/{id}");
    let mut r = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            refresh_request: id,
            status_url: url.clone(),
        }),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[utoipa::path(
    post,
    path = "/api/v1/connections/{connection}/sync",
    tag = "actions",
    params(
        ("connection" = String, Path, description = "The connection's name"),
    ),
    responses(
        (status = 202, description = "Enqueued; poll `status_url` (also in `Location`)", body = Accepted),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// Starts a sync of the whole connection: a refresh request the engine runs.
pub async fn start_sync(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(name): P<String>,
) -> Result<Response, Problem> {
    caller.principal.require(ApiScope::Write)?;
    super::connection(&state, &caller, &name).await?;
    let id = state
        .store
        .enqueue_refresh(
            caller.org(),
            &RefreshRequest {
                patient_key: None,
                connection: Some(name),
                reason: "api:sync".into(),
                source: caller.principal.name.clone(),
            },
        )
        .await
        .map_err(Problem::store)?;
    Ok(accepted(id))
}

/// Its schema (`crate::openapi::raise_refresh_schema`) says which `patient` values pass the
/// check in [`raise_refresh`]: the rule spans two fields, beyond what a derive can say.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaiseRefresh {
    /// `system|value` of an identifier (an MRN), or `Patient/{id}` at `connection`.
    patient: String,
    /// The connection to refresh; absent: every connection holding the patient.
    connection: Option<String>,
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/refresh-requests",
    tag = "actions",
    request_body = crate::openapi::RaiseRefreshBody,
    responses(
        (status = 202, description = "Enqueued; poll `status_url` (also in `Location`)", body = Accepted),
        (status = 400, description = "A malformed JSON body", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as application/json", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "The body is JSON of the wrong shape", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// Raises a refresh request for one patient.
pub async fn raise_refresh(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    J(body): J<RaiseRefresh>,
) -> Result<Response, Problem> {
    caller.principal.require(ApiScope::Write)?;
    let patient = body.patient.trim();
    let by_id = patient.strip_prefix("Patient/");
    let valid = match by_id {
        Some(id) => !id.is_empty() && body.connection.is_some(),
        None => patient
            .split_once('|')
            .is_some_and(|(s, v)| !s.is_empty() && !v.is_empty()),
    };
    if !valid || patient.chars().count() > crate::openapi::MAX_PATIENT_CHARS {
        return Err(Problem::bad_request(
            "patient must be system|value (an identifier), or Patient/{id} with a connection",
        ));
    }
    if let Some(c) = &body.connection {
        super::connection(&state, &caller, c).await?;
    }
    let id = state
        .store
        .enqueue_refresh(
            caller.org(),
            &RefreshRequest {
                patient_key: Some(patient.to_string()),
                connection: body.connection,
                reason: body
                    .reason
                    .map(|r| format!("api:{}", r.chars().take(200).collect::<String>()))
                    .unwrap_or_else(|| "api:refresh".into()),
                source: caller.principal.name.clone(),
            },
        )
        .await
        .map_err(Problem::store)?;
    Ok(accepted(id))
}

#[utoipa::path(
    get,
    path = "/api/v1/refresh-requests",
    tag = "actions",
    params(
        LimitQuery,
    ),
    responses(
        (status = 200, description = "The newest refresh requests first", body = Vec<crate::openapi::RefreshRecord>),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn refresh_requests(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Q(q): Q<LimitQuery>,
) -> Result<Json<Vec<RefreshRecord>>, Problem> {
    Ok(Json(
        state
            .store
            .recent_refreshes(caller.org(), state.page_size(q.limit))
            .await
            .map_err(Problem::store)?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/refresh-requests/{id}",
    tag = "actions",
    params(
        ("id" = i64, Path, description = "The refresh request's id"),
    ),
    responses(
        (status = 200, description = "The refresh request and what became of it", body = crate::openapi::RefreshRecord),
        (status = 404, description = "No such refresh request in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn refresh_request(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(id): P<i64>,
) -> Result<Json<RefreshRecord>, Problem> {
    state
        .store
        .get_refresh(caller.org(), id)
        .await
        .map_err(Problem::store)?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no refresh request {id}")))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only reads of this patient (facade id).
    patient: Option<String>,
    /// Older than this event id (paging).
    before: Option<i64>,
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    // a u32, not int32
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "admin",
    params(
        AuditQuery,
    ),
    responses(
        (status = 200, description = "The access log, newest first (admin scope)", body = Vec<crate::openapi::StoredAccessEvent>),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// Who read what: the organization's access log, newest first. Admin scope.
pub async fn audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Q(q): Q<AuditQuery>,
) -> Result<Json<Vec<StoredAccessEvent>>, Problem> {
    caller.principal.require(ApiScope::Admin)?;
    Ok(Json(
        state
            .store
            .list_access(
                caller.org(),
                q.patient.as_deref(),
                q.before,
                state.page_size(q.limit),
            )
            .await
            .map_err(Problem::store)?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/api-keys",
    tag = "admin",
    responses(
        (status = 200, description = "The organization's API keys (admin scope)", body = Vec<crate::openapi::ApiKey>),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<ApiKey>>, Problem> {
    caller.principal.require(ApiScope::Admin)?;
    Ok(Json(
        state
            .store
            .list_api_keys(caller.org())
            .await
            .map_err(Problem::store)?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(value_type = crate::openapi::ApiScope)]
    scope: ApiScope,
    label: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    #[schema(value_type = crate::openapi::ApiKey)]
    record: ApiKey,
    /// The whole key. Shown once: only its hash is kept.
    key: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/api-keys",
    tag = "admin",
    request_body = CreateKey,
    responses(
        (status = 201, description = "The new key, shown once", body = CreatedKey),
        (status = 400, description = "A malformed JSON body", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as application/json", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "The body is JSON of the wrong shape", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 500, description = "The system's random source failed", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    J(body): J<CreateKey>,
) -> Result<Response, Problem> {
    caller.principal.require(ApiScope::Admin)?;
    let label = body.label.map(|l| l.chars().take(200).collect());
    let (record, key) =
        crate::auth::generate_key(caller.org(), body.scope, label).map_err(|_| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no-randomness",
                "the system's random source failed",
            )
        })?;
    state
        .store
        .create_api_key(&record)
        .await
        .map_err(Problem::store)?;
    Ok((StatusCode::CREATED, Json(CreatedKey { record, key })).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/api-keys/{id}",
    tag = "admin",
    params(
        ("id" = String, Path, description = "The API key's id"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No live API key with that id in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(id): P<String>,
) -> Result<StatusCode, Problem> {
    caller.principal.require(ApiScope::Admin)?;
    let revoked = state
        .store
        .revoke_api_key(caller.org(), &id, chrono::Utc::now())
        .await
        .map_err(Problem::store)?;
    state.auth.forget(&id);
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no live API key {id:?}")))
    }
}
