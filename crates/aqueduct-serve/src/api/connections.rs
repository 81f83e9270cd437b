//! Connections, their runs and ledger, findings and alerts.

use std::sync::Arc;

use aqueduct_core::{
    Acknowledgement, AuthEvent, ConnectionStatus, FindingRecord, LedgerEntry, RunId, RunOutcome,
    RunRequestStats, SyncRun, TypeCount,
};
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Caller, J, P, Q};
use crate::AppState;
use crate::problem::Problem;

#[derive(Serialize, ToSchema)]
pub struct OrganizationView {
    name: String,
    display_name: Option<String>,
    connections: usize,
}

#[utoipa::path(
    get,
    path = "/api/v1/organization",
    tag = "connections",
    responses(
        (status = 200, description = "The caller's organization", body = OrganizationView),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn organization(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<OrganizationView>, Problem> {
    let org = caller.org();
    let configured = state.config.organizations.get(org);
    Ok(Json(OrganizationView {
        name: org.to_string(),
        display_name: configured.and_then(|o| o.display_name.clone()),
        connections: names(&state, org).await?.len(),
    }))
}

/// The organization's connections: the configured ones and any the store knows (HL7 feeds).
async fn names(state: &AppState, org: &str) -> Result<Vec<String>, Problem> {
    let mut names: Vec<String> = state
        .config
        .organizations
        .get(org)
        .map(|o| o.connections.keys().cloned().collect())
        .unwrap_or_default();
    for c in state
        .store
        .list_connections(org)
        .await
        .map_err(Problem::store)?
    {
        if !names.contains(&c.name) {
            names.push(c.name);
        }
    }
    names.sort();
    Ok(names)
}

#[derive(Clone, Serialize, ToSchema)]
pub struct ConnectionView {
    name: String,
    base_url: Option<String>,
    profile: Option<String>,
    schedule: Option<String>,
    /// `complete`, `partial`, `failed`, `running` (the last run's outcome) or `never-synced`.
    state: &'static str,
    /// When the last complete run finished: how fresh a complete record is.
    last_complete_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<crate::openapi::SyncRun>)]
    last_run: Option<SyncRun>,
    #[schema(value_type = Option<crate::openapi::RunRequestStats>)]
    last_run_stats: Option<RunRequestStats>,
    #[schema(value_type = Vec<crate::openapi::TypeCount>)]
    resources: Vec<TypeCount>,
    failed_requests: u64,
    findings: u64,
    token: TokenState,
}

#[derive(Clone, Serialize, ToSchema)]
pub struct TokenState {
    /// Names of the credentials held in the vault (never their values).
    stored_credentials: Vec<String>,
    #[schema(value_type = Option<crate::openapi::AuthEvent>)]
    last_auth_event: Option<AuthEvent>,
}

async fn view(state: &AppState, caller: &Caller, name: &str) -> Result<ConnectionView, Problem> {
    let conn = super::connection(state, caller, name).await?;
    let org = caller.org();
    let store = &state.store;
    let status: Option<ConnectionStatus> = store
        .status(org)
        .await
        .map_err(Problem::store)?
        .into_iter()
        .find(|s| s.connection.connection == name);
    let runs = store.list_runs(&conn, 50).await.map_err(Problem::store)?;
    let last_complete_at = runs
        .iter()
        .find(|r| r.outcome == RunOutcome::Complete)
        .and_then(|r| r.finished_at);
    let configured = state
        .config
        .organizations
        .get(org)
        .and_then(|o| o.connections.get(name));
    let stored_credentials = store
        .list_secrets(org)
        .await
        .map_err(Problem::store)?
        .into_iter()
        .filter(|(c, _, _)| c == name)
        .map(|(_, n, _)| n)
        .collect();
    let last_auth_event = store
        .list_auth_events(&conn, 1)
        .await
        .map_err(Problem::store)?
        .into_iter()
        .next();
    let last_run = status.as_ref().and_then(|s| s.last_run.clone());
    Ok(ConnectionView {
        name: name.to_string(),
        base_url: configured
            .map(|c| c.base_url.to_string())
            .or_else(|| status.as_ref().and_then(|s| s.base_url.clone())),
        profile: configured
            .map(|c| c.profile.clone())
            .or_else(|| status.as_ref().and_then(|s| s.profile.clone())),
        schedule: configured.and_then(|c| c.schedule.as_ref().map(|s| s.to_string())),
        state: last_run
            .as_ref()
            .map(|r| r.outcome.as_str())
            .unwrap_or("never-synced"),
        last_complete_at,
        last_run_stats: status.as_ref().and_then(|s| s.last_run_stats.clone()),
        last_run,
        resources: status.as_ref().map(|s| s.types.clone()).unwrap_or_default(),
        failed_requests: status.as_ref().map(|s| s.error_count).unwrap_or(0),
        findings: status.as_ref().map(|s| s.findings).unwrap_or(0),
        token: TokenState {
            stored_credentials,
            last_auth_event,
        },
    })
}

/// Every connection's overview, computed at most once per `overview_cache_ms`.
async fn overviews(state: &AppState, caller: &Caller) -> Result<Arc<Vec<ConnectionView>>, Problem> {
    let org = caller.org().to_string();
    if let Some(v) = state.overviews.get(&org) {
        return Ok(v);
    }
    let mut out = Vec::new();
    for n in names(state, &org).await? {
        out.push(view(state, caller, &n).await?);
    }
    let out = Arc::new(out);
    state.overviews.put(org, Arc::clone(&out));
    Ok(out)
}

#[utoipa::path(
    get,
    path = "/api/v1/connections",
    tag = "connections",
    responses(
        (status = 200, description = "Every connection with its status and completeness", body = Vec<ConnectionView>),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<ConnectionView>>, Problem> {
    Ok(Json(overviews(&state, &caller).await?.as_ref().clone()))
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{connection}",
    tag = "connections",
    params(
        ("connection" = String, Path, description = "The connection's name"),
    ),
    responses(
        (status = 200, description = "The connection's status and completeness", body = ConnectionView),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(name): P<String>,
) -> Result<Json<ConnectionView>, Problem> {
    super::connection(&state, &caller, &name).await?;
    overviews(&state, &caller)
        .await?
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no connection {name:?}")))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    // a u32, not int32
    limit: Option<u32>,
    /// Only runs with this outcome.
    #[param(value_type = Option<crate::openapi::RunOutcome>)]
    status: Option<RunOutcome>,
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{connection}/runs",
    tag = "connections",
    params(
        ("connection" = String, Path, description = "The connection's name"),
        RunsQuery,
    ),
    responses(
        (status = 200, description = "The newest runs first", body = Vec<crate::openapi::SyncRun>),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn runs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(name): P<String>,
    Q(q): Q<RunsQuery>,
) -> Result<Json<Vec<SyncRun>>, Problem> {
    let conn = super::connection(&state, &caller, &name).await?;
    let limit = state.page_size(q.limit);
    // a status filter looks further back than one page
    let fetch = if q.status.is_some() {
        limit.saturating_mul(10).min(10_000)
    } else {
        limit
    };
    let mut runs = state
        .store
        .list_runs(&conn, fetch)
        .await
        .map_err(Problem::store)?;
    if let Some(s) = q.status {
        runs.retain(|r| r.outcome == s);
    }
    runs.truncate(limit as usize);
    Ok(Json(runs))
}

#[derive(Serialize, ToSchema)]
pub struct RunView {
    #[schema(value_type = crate::openapi::SyncRun)]
    run: SyncRun,
    #[schema(value_type = crate::openapi::RunRequestStats)]
    stats: RunRequestStats,
}

async fn get_run(
    state: &AppState,
    caller: &Caller,
    name: &str,
    run: RunId,
) -> Result<(aqueduct_core::ConnectionRef, SyncRun), Problem> {
    let conn = super::connection(state, caller, name).await?;
    let found = state
        .store
        .get_run(&conn, run)
        .await
        .map_err(Problem::store)?
        .ok_or_else(|| Problem::not_found(format!("no run {run} on {name}")))?;
    Ok((conn, found))
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{connection}/runs/{run}",
    tag = "connections",
    params(
        ("connection" = String, Path, description = "The connection's name"),
        ("run" = i64, Path, description = "The run's id"),
    ),
    responses(
        (status = 200, description = "The run and its request counts", body = RunView),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P((name, run)): P<(String, RunId)>,
) -> Result<Json<RunView>, Problem> {
    let (conn, found) = get_run(&state, &caller, &name, run).await?;
    let stats = state
        .store
        .run_request_stats(&conn, run)
        .await
        .map_err(Problem::store)?;
    Ok(Json(RunView { run: found, stats }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RequestsQuery {
    /// `failed` or `ok`.
    #[param(pattern = "^(failed|ok)$")]
    status: Option<String>,
    #[serde(rename = "type")]
    resource_type: Option<String>,
    patient: Option<String>,
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    // a u32, not int32
    offset: Option<u32>,
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    // a u32, not int32
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct RequestsPage {
    total: usize,
    offset: u32,
    #[schema(value_type = Vec<crate::openapi::LedgerEntry>)]
    requests: Vec<LedgerEntry>,
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{connection}/runs/{run}/requests",
    tag = "connections",
    params(
        ("connection" = String, Path, description = "The connection's name"),
        ("run" = i64, Path, description = "The run's id"),
        RequestsQuery,
    ),
    responses(
        (status = 200, description = "One page of the run's ledger", body = RequestsPage),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// A run's ledger, failures first, then in the order they were made.
pub async fn run_requests(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P((name, run)): P<(String, RunId)>,
    Q(q): Q<RequestsQuery>,
) -> Result<Json<RequestsPage>, Problem> {
    let failed_only = match q.status.as_deref() {
        None => None,
        Some("failed") => Some(true),
        Some("ok") => Some(false),
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "status={other:?}: use failed or ok"
            )));
        }
    };
    let (conn, _) = get_run(&state, &caller, &name, run).await?;
    let mut all = state
        .store
        .run_requests(&conn, run)
        .await
        .map_err(Problem::store)?;
    all.retain(|e| {
        failed_only.is_none_or(|f| e.error_kind.is_some() == f)
            && q.resource_type
                .as_ref()
                .is_none_or(|t| e.resource_type.as_ref() == Some(t))
            && q.patient
                .as_ref()
                .is_none_or(|p| e.patient_id.as_ref() == Some(p))
    });
    all.sort_by_key(|e| (e.error_kind.is_none(), e.at));
    let offset = q.offset.unwrap_or(0);
    let limit = state.page_size(q.limit) as usize;
    let total = all.len();
    let requests = all.into_iter().skip(offset as usize).take(limit).collect();
    Ok(Json(RequestsPage {
        total,
        offset,
        requests,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FindingsQuery {
    /// At most this many (the server's default page size when absent).
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    limit: Option<u32>,
    /// Only the acknowledged findings (`true`) or the open ones (`false`); all when absent.
    acknowledged: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{connection}/findings",
    tag = "connections",
    params(
        ("connection" = String, Path, description = "The connection's name"),
        FindingsQuery,
    ),
    responses(
        (status = 200, description = "The connection's findings, newest first", body = Vec<crate::openapi::FindingRecord>),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn findings(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(name): P<String>,
    Q(q): Q<FindingsQuery>,
) -> Result<Json<Vec<FindingRecord>>, Problem> {
    let conn = super::connection(&state, &caller, &name).await?;
    Ok(Json(
        state
            .store
            .list_finding_records(&conn, q.acknowledged, state.page_size(q.limit))
            .await
            .map_err(Problem::store)?,
    ))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeBody {
    /// Why, in the acknowledger's words (at most 1,000 characters).
    #[schema(max_length = 1000)]
    note: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/connections/{connection}/findings/{id}/acknowledge",
    tag = "actions",
    params(
        ("connection" = String, Path, description = "The connection's name"),
        ("id" = i64, Path, description = "The finding's id"),
    ),
    request_body(content = AcknowledgeBody, description = "An optional note", content_type = "application/json"),
    responses(
        (status = 200, description = "The finding, acknowledged (the first acknowledgement stands: a repeat returns it unchanged)", body = crate::openapi::FindingRecord),
        (status = 400, description = "A malformed body, or a note over 1,000 characters", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as application/json", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "The body is JSON of the wrong shape", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such finding of this connection in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// Acknowledges a finding: someone has looked at it. It stays listed, no longer counts as
/// open, and keeps who acknowledged it, when and why.
pub async fn acknowledge_finding(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P((name, id)): P<(String, i64)>,
    J(body): J<AcknowledgeBody>,
) -> Result<Json<FindingRecord>, Problem> {
    caller.principal.require(aqueduct_core::ApiScope::Write)?;
    let conn = super::connection(&state, &caller, &name).await?;
    if body.note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return Err(Problem::bad_request("note: at most 1,000 characters"));
    }
    let ack = Acknowledgement {
        by: caller.principal.name.clone(),
        at: chrono::Utc::now(),
        note: body.note,
    };
    state
        .store
        .acknowledge_finding(&conn, id, &ack)
        .await
        .map_err(Problem::store)?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no finding {id} of connection {name:?}")))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    firing: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "connections",
    params(
        AlertsQuery,
    ),
    responses(
        (status = 200, description = "The organization's alerts", body = Vec<crate::openapi::Alert>),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn alerts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Q(q): Q<AlertsQuery>,
) -> Result<Json<Vec<aqueduct_core::Alert>>, Problem> {
    Ok(Json(
        state
            .store
            .list_alerts(caller.org(), q.firing.unwrap_or(false))
            .await
            .map_err(Problem::store)?,
    ))
}
