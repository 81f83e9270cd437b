//! Patients and their records per source, and the terminology review queue. Every answer
//! that carries patient data is written to the access log first.

use std::collections::BTreeMap;
use std::sync::Arc;

use aqueduct_core::{AccessEvent, ApiScope, CodeMapping, UnmappedCode};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Caller, J, P, Q};
use crate::AppState;
use crate::fhir::ids::facade_id;
use crate::problem::Problem;

pub(crate) async fn log_read(
    state: &AppState,
    caller: &Caller,
    action: &str,
    route: &str,
    patient: Option<String>,
    resource_types: Vec<String>,
    count: u64,
) -> Result<(), Problem> {
    state
        .access
        .record(AccessEvent {
            at: chrono::Utc::now(),
            organization: caller.org().to_string(),
            principal: caller.principal.name.clone(),
            action: action.to_string(),
            route: route.to_string(),
            patient,
            resource_types,
            count,
            client_addr: caller.client_addr.clone(),
        })
        .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PatientsQuery {
    /// Go on after this source id (paging).
    after: Option<String>,
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    // a u32, not int32
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct PatientSummary {
    /// The id at the source.
    id: String,
    /// The id in the FHIR facade.
    facade_id: String,
    name: Option<String>,
    birth_date: Option<String>,
    gender: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PatientsPage {
    patients: Vec<PatientSummary>,
    /// Pass as `after` for the next page; absent on the last.
    next_after: Option<String>,
}

pub(crate) fn summary(conn: &str, id: &str, bytes: &[u8]) -> PatientSummary {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let name = v["name"].get(0).map(|n| {
        let given: Vec<&str> = n["given"]
            .as_array()
            .map(|g| g.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let family = n["family"].as_str().unwrap_or("");
        n["text"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{} {family}", given.join(" ")).trim().to_string())
    });
    PatientSummary {
        id: id.to_string(),
        facade_id: facade_id(conn, id),
        name,
        birth_date: v["birthDate"].as_str().map(str::to_string),
        gender: v["gender"].as_str().map(str::to_string),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{connection}/patients",
    tag = "records",
    params(
        ("connection" = String, Path, description = "The connection's name"),
        PatientsQuery,
    ),
    responses(
        (status = 200, description = "One page of the connection's patients", body = PatientsPage),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn patients(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(name): P<String>,
    Q(q): Q<PatientsQuery>,
) -> Result<Json<PatientsPage>, Problem> {
    let conn = super::connection(&state, &caller, &name).await?;
    let limit = state.page_size(q.limit);
    let page = state
        .store
        .list_resources(&conn, "Patient", q.after.as_deref(), limit, false)
        .await
        .map_err(Problem::store)?;
    let next_after = (page.len() as u32 == limit)
        .then(|| page.last().map(|r| r.logical_id.clone()))
        .flatten();
    let patients: Vec<_> = page
        .iter()
        .map(|r| summary(&name, &r.logical_id, &r.bytes))
        .collect();
    log_read(
        &state,
        &caller,
        "api",
        "/api/v1/connections/{connection}/patients",
        None,
        vec!["Patient".into()],
        patients.len() as u64,
    )
    .await?;
    Ok(Json(PatientsPage {
        patients,
        next_after,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct RecordEntry {
    resource_type: String,
    id: String,
    facade_id: String,
    last_updated: Option<String>,
    fetched_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct PatientRecord {
    connection: String,
    patient: PatientSummary,
    /// When this source's last complete sync finished: how fresh the record is.
    last_complete_sync: Option<chrono::DateTime<chrono::Utc>>,
    counts: BTreeMap<String, usize>,
    resources: Vec<RecordEntry>,
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{connection}/patients/{patient}",
    tag = "records",
    params(
        ("connection" = String, Path, description = "The connection's name"),
        ("patient" = String, Path, description = "The patient's id at the source"),
    ),
    responses(
        (status = 200, description = "What is held for the patient, by type", body = PatientRecord),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// One patient's record at one source: what is held, by type, and how fresh it is.
pub async fn patient_record(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P((name, pid)): P<(String, String)>,
) -> Result<Json<PatientRecord>, Problem> {
    let conn = super::connection(&state, &caller, &name).await?;
    let store = &state.store;
    let patient = store
        .get_resource(&conn, "Patient", &pid)
        .await
        .map_err(Problem::store)?
        .filter(|p| p.deleted_at.is_none())
        .ok_or_else(|| Problem::not_found(format!("no patient {pid:?} at {name}")))?;
    let held = store
        .list_patient_resources(&conn, &pid, None)
        .await
        .map_err(Problem::store)?;
    let mut counts = BTreeMap::new();
    for r in &held {
        *counts.entry(r.resource_type.clone()).or_insert(0) += 1;
    }
    let last_complete_sync = store
        .list_runs(&conn, 50)
        .await
        .map_err(Problem::store)?
        .into_iter()
        .find(|r| r.outcome == aqueduct_core::RunOutcome::Complete)
        .and_then(|r| r.finished_at);
    log_read(
        &state,
        &caller,
        "api",
        "/api/v1/connections/{connection}/patients/{patient}",
        Some(facade_id(&name, &pid)),
        counts.keys().cloned().collect(),
        held.len() as u64,
    )
    .await?;
    Ok(Json(PatientRecord {
        patient: summary(&name, &pid, &patient.bytes),
        connection: name.clone(),
        last_complete_sync,
        counts,
        resources: held
            .into_iter()
            .map(|r| RecordEntry {
                facade_id: facade_id(&name, &r.logical_id),
                resource_type: r.resource_type,
                id: r.logical_id,
                last_updated: r.last_updated,
                fetched_at: r.fetched_at,
            })
            .collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UnmappedQuery {
    connection: Option<String>,
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    // a u32, not int32
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/terminology/unmapped",
    tag = "records",
    params(
        UnmappedQuery,
    ),
    responses(
        (status = 200, description = "Unmapped codes, most frequent first", body = Vec<crate::openapi::UnmappedCode>),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// The terminology review queue: codes no rule could resolve, most frequent first.
pub async fn unmapped(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Q(q): Q<UnmappedQuery>,
) -> Result<Json<Vec<UnmappedCode>>, Problem> {
    if let Some(c) = &q.connection {
        super::connection(&state, &caller, c).await?;
    }
    Ok(Json(
        state
            .store
            .unmapped_codes(
                caller.org(),
                q.connection.as_deref(),
                state.page_size(q.limit),
            )
            .await
            .map_err(Problem::store)?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/connections/{connection}/code-mappings",
    tag = "records",
    params(
        ("connection" = String, Path, description = "The connection's name"),
    ),
    responses(
        (status = 200, description = "The connection's code mappings", body = Vec<crate::openapi::CodeMapping>),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn code_mappings(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(name): P<String>,
) -> Result<Json<Vec<CodeMapping>>, Problem> {
    let conn = super::connection(&state, &caller, &name).await?;
    Ok(Json(
        state
            .store
            .list_code_mappings(&conn)
            .await
            .map_err(Problem::store)?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MapCode {
    source_system: String,
    source_code: String,
    /// A standard system by URI or name (`LOINC`, `http://loinc.org`).
    target_system: String,
    target_code: String,
    display: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/v1/connections/{connection}/code-mappings",
    tag = "records",
    params(
        ("connection" = String, Path, description = "The connection's name"),
    ),
    request_body = MapCode,
    responses(
        (status = 200, description = "The mapping as stored", body = crate::openapi::CodeMapping),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 400, description = "A malformed JSON body", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as application/json", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "The body is JSON of the wrong shape, or the mapping is invalid (unknown target system...)", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// Maps a local code to a standard one (checked as the CLI checks it). The next
/// normalization re-derives the rows it touches.
pub async fn map_code(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(name): P<String>,
    J(body): J<MapCode>,
) -> Result<Json<CodeMapping>, Problem> {
    caller.principal.require(ApiScope::Write)?;
    let conn = super::connection(&state, &caller, &name).await?;
    let mapping = aqueduct_normalize::validate_mapping(&aqueduct_normalize::MappingRequest {
        source_system: body.source_system,
        source_code: body.source_code,
        target_system: body.target_system,
        target_code: body.target_code,
        display: body.display,
    })
    .map_err(|e| {
        Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-mapping",
            e.to_string(),
        )
    })?;
    state
        .store
        .put_code_mapping(&conn, &mapping)
        .await
        .map_err(Problem::store)?;
    Ok(Json(mapping))
}
