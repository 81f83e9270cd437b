//! Persons (one person's records across sources), the match review queue, reviewers'
//! decisions and the evidence of a pair. Records are named by facade id (`{connection}.{id}`
//! of the Patient); a pair is `{a}~{b}`. Reads of a person's data go to the access log first;
//! a decision needs the write scope and is recorded with who decided and when.

use std::collections::BTreeSet;
use std::sync::Arc;

use aqueduct_core::{ApiScope, ConnectionRef};
use aqueduct_engine::EngineError;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Caller, J, P, Q};
use super::records::{PatientSummary, log_read, summary};
use crate::AppState;
use crate::fhir::ids::{facade_id, split};
use crate::problem::Problem;

/// The matcher's record id of a Patient's facade id; anything that is not one names no
/// record (404, as a facade id of another organization would).
fn record_of(facade: &str) -> Result<String, Problem> {
    split(facade)
        .map(|(c, id)| format!("{c}/Patient/{id}"))
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no patient record {facade:?} (a Patient's facade id is {{connection}}.{{id}})"
            ))
        })
}

/// `(connection, Patient id)` of a matcher record id.
fn parts(record: &str) -> Option<(&str, &str)> {
    record.split_once("/Patient/")
}

fn facade_of(record: &str) -> String {
    parts(record).map_or_else(|| record.to_string(), |(c, id)| facade_id(c, id))
}

fn label(person: i64) -> String {
    format!("person-{person:06}")
}

fn engine_problem(e: EngineError) -> Problem {
    match e {
        EngineError::Store(s) => Problem::store(s),
        EngineError::Identity(m) => match *m {
            aqueduct_match::MatchError::UnknownRecord(r) => {
                Problem::not_found(format!("no patient record {}", facade_of(&r)))
            }
            other => {
                tracing::error!(error = %other, "patient identity failed while serving a request");
                Problem::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "identity-unavailable",
                    "patient identity could not answer; try again",
                )
            }
        },
        other => {
            tracing::error!(error = ?other, "patient identity failed while serving a request");
            Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "identity-unavailable",
                "patient identity could not answer; try again",
            )
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PersonsQuery {
    /// Go on after this person id (paging).
    after: Option<i64>,
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct PersonItem {
    id: i64,
    /// `person-000001`.
    label: String,
    /// The facade ids of its Patient records.
    records: Vec<String>,
    /// The connections its records come from.
    sources: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PersonsPage {
    persons: Vec<PersonItem>,
    /// Pass as `after` for the next page; absent on the last.
    next_after: Option<i64>,
}

fn item(person: i64, records: &[String]) -> PersonItem {
    let sources: BTreeSet<String> = records
        .iter()
        .filter_map(|r| parts(r).map(|(c, _)| c.to_string()))
        .collect();
    PersonItem {
        id: person,
        label: label(person),
        records: records.iter().map(|r| facade_of(r)).collect(),
        sources: sources.into_iter().collect(),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/persons",
    tag = "identity",
    params(PersonsQuery),
    responses(
        (status = 200, description = "One page of the organization's persons", body = PersonsPage),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// The organization's persons, each with its records across sources, in id order.
pub async fn persons(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Q(q): Q<PersonsQuery>,
) -> Result<Json<PersonsPage>, Problem> {
    let limit = state.page_size(q.limit);
    let page = state
        .store
        .list_persons(caller.org(), q.after, limit)
        .await
        .map_err(Problem::store)?;
    let next_after = (page.len() as u32 == limit)
        .then(|| page.last().map(|p| p.person))
        .flatten();
    let persons: Vec<PersonItem> = page.iter().map(|p| item(p.person, &p.records)).collect();
    let count = persons.iter().map(|p| p.records.len() as u64).sum();
    log_read(
        &state,
        &caller,
        "api",
        "/api/v1/persons",
        None,
        vec!["Patient".into()],
        count,
    )
    .await?;
    Ok(Json(PersonsPage {
        persons,
        next_after,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct SourcedResource {
    resource_type: String,
    facade_id: String,
    /// The connection it came from.
    source: String,
    /// The resource as the source sent it; absent when its bytes are not JSON.
    #[schema(value_type = Option<Object>)]
    resource: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct PersonSource {
    connection: String,
    patient: PatientSummary,
    resources: Vec<SourcedResource>,
}

#[derive(Serialize, ToSchema)]
pub struct PersonView {
    id: i64,
    label: String,
    /// Its records, one per source Patient, each with what that source holds.
    sources: Vec<PersonSource>,
}

#[utoipa::path(
    get,
    path = "/api/v1/persons/{id}",
    tag = "identity",
    params(("id" = i64, Path, description = "The person id")),
    responses(
        (status = 200, description = "The person's record across sources, each resource with its source", body = PersonView),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// One person: its Patient records across sources, each with every resource that source
/// holds for it.
pub async fn person(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(id): P<i64>,
) -> Result<Json<PersonView>, Problem> {
    let org = caller.org().to_string();
    let p = state
        .store
        .person(&org, id)
        .await
        .map_err(Problem::store)?
        .ok_or_else(|| Problem::not_found(format!("no person {id}")))?;
    let mut sources = Vec::new();
    let mut types = BTreeSet::new();
    let mut count = 0u64;
    for record in &p.records {
        let Some((connection, pid)) = parts(record) else {
            continue;
        };
        let conn = ConnectionRef::new(org.as_str(), connection);
        let Some(patient) = state
            .store
            .get_resource(&conn, "Patient", pid)
            .await
            .map_err(Problem::store)?
            .filter(|r| r.deleted_at.is_none())
        else {
            continue;
        };
        let held = state
            .store
            .list_patient_resources(&conn, pid, None)
            .await
            .map_err(Problem::store)?;
        let resources: Vec<SourcedResource> = held
            .iter()
            .map(|r| {
                types.insert(r.resource_type.clone());
                SourcedResource {
                    resource_type: r.resource_type.clone(),
                    facade_id: facade_id(connection, &r.logical_id),
                    source: connection.to_string(),
                    resource: serde_json::from_slice(&r.bytes).ok(),
                }
            })
            .collect();
        count += resources.len() as u64;
        sources.push(PersonSource {
            connection: connection.to_string(),
            patient: summary(connection, pid, &patient.bytes),
            resources,
        });
    }
    log_read(
        &state,
        &caller,
        "api",
        "/api/v1/persons/{id}",
        Some(label(id)),
        types.into_iter().collect(),
        count,
    )
    .await?;
    Ok(Json(PersonView {
        id,
        label: label(id),
        sources,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ReviewItem {
    /// `{a}~{b}`: what `POST /api/v1/match/review/{pair}/decide` takes.
    pair: String,
    a: String,
    b: String,
    /// The total weight, bits.
    weight: f64,
    /// Each comparison with its level and weight, the prior and the total.
    #[schema(value_type = Object)]
    evidence: serde_json::Value,
    queued_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct ReviewQueue {
    pairs: Vec<ReviewItem>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/match/review",
    tag = "identity",
    params(ReviewQuery),
    responses(
        (status = 200, description = "Pairs between the review and link thresholds, strongest first, with their evidence", body = ReviewQueue),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// The review queue: pairs of records the matcher would neither link nor keep apart.
pub async fn review(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Q(q): Q<ReviewQuery>,
) -> Result<Json<ReviewQueue>, Problem> {
    let limit = state.page_size(q.limit);
    let queue = state
        .store
        .review_queue(caller.org(), limit)
        .await
        .map_err(Problem::store)?;
    let pairs: Vec<ReviewItem> = queue
        .into_iter()
        .map(|p| {
            let (a, b) = (facade_of(&p.a), facade_of(&p.b));
            ReviewItem {
                pair: format!("{a}~{b}"),
                a,
                b,
                weight: p.weight,
                evidence: serde_json::from_str(&p.evidence).unwrap_or_default(),
                queued_at: p.queued_at,
            }
        })
        .collect();
    log_read(
        &state,
        &caller,
        "api",
        "/api/v1/match/review",
        None,
        vec!["Patient".into()],
        pairs.len() as u64 * 2,
    )
    .await?;
    Ok(Json(ReviewQueue { pairs }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// `link` (the same person) or `unlink` (never the same person).
    #[schema(pattern = "^(link|unlink)$")]
    verdict: String,
    /// Why, for the audit.
    note: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Decided {
    pair: String,
    verdict: String,
    /// Who decided (the caller).
    reviewer: String,
    /// The persons of the two records afterwards.
    person_a: Option<i64>,
    person_b: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/api/v1/match/review/{pair}/decide",
    tag = "identity",
    params(("pair" = String, Path, description = "`{a}~{b}`, two Patients' facade ids")),
    request_body = Decide,
    responses(
        (status = 200, description = "Decided, recorded with who and when; re-matching never overturns it", body = Decided),
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
/// A reviewer's decision on a pair: link or unlink, with who and when.
pub async fn decide(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    P(pair): P<String>,
    J(body): J<Decide>,
) -> Result<Json<Decided>, Problem> {
    caller.principal.require(ApiScope::Write)?;
    let (fa, fb) = pair
        .split_once('~')
        .ok_or_else(|| Problem::not_found("no such pair: a pair is {a}~{b}, two facade ids"))?;
    let (a, b) = (record_of(fa)?, record_of(fb)?);
    let link = match body.verdict.as_str() {
        "link" => true,
        "unlink" => false,
        other => {
            return Err(Problem::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!("verdict is link or unlink, not {other:?}"),
            ));
        }
    };
    let reviewer = caller.principal.name.clone();
    let (person_a, person_b) = aqueduct_engine::decide_pair(
        state.store.as_ref(),
        caller.org(),
        &a,
        &b,
        link,
        &reviewer,
        body.note.as_deref(),
    )
    .await
    .map_err(engine_problem)?;
    Ok(Json(Decided {
        pair,
        verdict: body.verdict,
        reviewer,
        person_a,
        person_b,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// A Patient's facade id.
    a: String,
    /// Another Patient's facade id.
    b: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/match/explain",
    tag = "identity",
    params(ExplainQuery),
    responses(
        (status = 200, description = "Each comparison's level and weight, the prior, the total and the decision", body = Object),
        (status = 400, description = "An unknown or malformed query parameter", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such connection (or run, patient...) in the caller's organization", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No credential, or one unknown, revoked, expired or invalid", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not grant the scope this needs", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The store (or a JWT issuer's keys) could not answer; try again", body = crate::openapi::ProblemBody, content_type = "application/problem+json"),
    ),
)]
/// The evidence of two records, with the organization's model.
pub async fn explain(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Q(q): Q<ExplainQuery>,
) -> Result<Json<serde_json::Value>, Problem> {
    let (a, b) = (record_of(&q.a)?, record_of(&q.b)?);
    let e = aqueduct_engine::explain_pair(state.store.as_ref(), caller.org(), &a, &b)
        .await
        .map_err(engine_problem)?;
    log_read(
        &state,
        &caller,
        "api",
        "/api/v1/match/explain",
        None,
        vec!["Patient".into()],
        2,
    )
    .await?;
    Ok(Json(serde_json::to_value(&e).unwrap_or_default()))
}
