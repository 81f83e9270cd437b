//! The REST API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and served (without authentication: it holds no data) at `/api/openapi.json`.
//!
//! Types that `aqueduct-core` owns (runs, ledger entries, findings, alerts, keys...) are
//! mirrored here field for field, so the core does not depend on utoipa; a test keeps each
//! mirror's fields equal to what the core type writes.

use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::api;

/// An error (RFC 9457), `application/problem+json`.
#[derive(Serialize, ToSchema)]
pub struct ProblemBody {
    /// `https://aqueduct.dev/problems/{kind}`: `bad-request`, `not-found`, `unauthorized`,
    /// `forbidden`, `too-large`, `invalid-mapping`, `store-unavailable`...
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    pub detail: String,
}

/// How a sync run ended (`aqueduct_core::RunOutcome`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    Running,
    Complete,
    Partial,
    Failed,
}

/// What an API key may do (`aqueduct_core::ApiScope`): `admin` may do what `write` may,
/// `write` what `read` may.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiScope {
    Read,
    Write,
    Admin,
}

// Mirrors of `aqueduct-core`'s types, field for field as serde writes them (an `Option` is
// written as `null`, never left out). A field added there and not here is still valid JSON
// for these schemas; a field renamed or retyped there fails the schemathesis test.

/// `aqueduct_core::ConnectionRef`.
#[derive(ToSchema)]
pub struct ConnectionRef {
    pub organization: String,
    pub connection: String,
}

/// One sync run as the ledger holds it (`aqueduct_core::SyncRun`).
#[derive(ToSchema)]
pub struct SyncRun {
    pub id: i64,
    pub connection: ConnectionRef,
    /// What was asked for, e.g. `full`, `incremental`, `patient:123`.
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: RunOutcome,
    /// Free-form JSON text written by the sync engine at the end.
    pub summary: Option<String>,
    pub error: Option<String>,
    pub heartbeat_at: Option<DateTime<Utc>>,
}

/// Aggregates over a run's requests (`aqueduct_core::RunRequestStats`).
#[derive(ToSchema)]
pub struct RunRequestStats {
    pub requests: u64,
    pub errors: u64,
    pub throttled: u64,
    pub retries: u64,
    pub bytes: u64,
    pub resources: u64,
}

/// Resources of one type held for a connection (`aqueduct_core::TypeCount`).
#[derive(ToSchema)]
pub struct TypeCount {
    pub resource_type: String,
    pub live: u64,
    pub deleted: u64,
    pub invalid: u64,
}

/// An authorization event, without secrets (`aqueduct_core::AuthEvent`).
#[derive(ToSchema)]
pub struct AuthEvent {
    pub at: DateTime<Utc>,
    /// `authorize`, `token-exchange`, `refresh`, `revoke`, `backend-token`, `ehr-launch`...
    pub event: String,
    /// `success` or `failure`.
    pub outcome: String,
    pub reason: Option<String>,
}

/// A code no terminology rule resolved, with how often it occurs
/// (`aqueduct_core::UnmappedCode`).
#[derive(ToSchema)]
pub struct UnmappedCode {
    pub connection: String,
    pub kind: String,
    pub source_system: Option<String>,
    pub source_code: Option<String>,
    pub source_text: Option<String>,
    pub count: u64,
}

/// A local code mapped to a standard one (`aqueduct_core::CodeMapping`).
#[derive(ToSchema)]
pub struct CodeMapping {
    pub source_system: String,
    pub source_code: String,
    pub target_system: String,
    pub target_code: String,
    pub target_display: Option<String>,
}

/// What a refresh request asked for (`aqueduct_core::RefreshRequest`).
#[derive(ToSchema)]
pub struct RefreshRequest {
    /// `system|value` of an identifier, or `Patient/{id}`; `null` refreshes a connection.
    pub patient_key: Option<String>,
    pub connection: Option<String>,
    pub reason: String,
    pub source: String,
}

/// How a refresh request ended (`aqueduct_core::RefreshOutcome`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RefreshOutcome {
    Complete,
    Partial,
    Failed,
    Unmatched,
}

/// A refresh request and what became of it (`aqueduct_core::RefreshRecord`).
#[derive(ToSchema)]
pub struct RefreshRecord {
    pub id: i64,
    pub request: RefreshRequest,
    pub requested_at: DateTime<Utc>,
    /// `pending`, `claimed` or `done`.
    pub state: String,
    pub claimed_by: Option<String>,
    pub attempts: u32,
    pub handled_at: Option<DateTime<Utc>>,
    pub outcome: Option<RefreshOutcome>,
    pub detail: Option<String>,
    pub run_ids: Vec<i64>,
    pub coalesced_into: Option<i64>,
}

/// One HTTP request made during a sync (`aqueduct_core::LedgerEntry`).
#[derive(ToSchema)]
pub struct LedgerEntry {
    pub at: DateTime<Utc>,
    pub method: String,
    /// The request with patient and cursor values replaced by placeholders.
    pub url_template: String,
    /// The request URL as sent.
    pub url: String,
    pub resource_type: Option<String>,
    pub patient_id: Option<String>,
    /// HTTP status, or `null` when no response came (connection error, timeout).
    pub status: Option<u16>,
    pub duration_ms: f64,
    pub bytes: u64,
    pub resources: u64,
    /// Why the request did not succeed (`timeout`, `http-429`, `invalid-json`...).
    pub error_kind: Option<String>,
    /// False when a page came back short of what it should hold.
    pub page_complete: bool,
    /// 1 for the first try, 2 for the first retry...
    pub attempt: u32,
}

/// Who acknowledged a finding, when and why (`aqueduct_core::Acknowledgement`).
#[derive(ToSchema)]
pub struct Acknowledgement {
    /// `api-key:{id}`, `jwt:{issuer}#{subject}`, or the CLI user.
    pub by: String,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
}

/// Something the monitoring layer should look at, with its id and acknowledgement
/// (`aqueduct_core::FindingRecord`, its `Finding` flattened).
#[derive(ToSchema)]
pub struct FindingRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub run_id: Option<i64>,
    /// e.g. `scope-narrowed`, `empty-type`.
    pub kind: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    pub resource_type: Option<String>,
    pub detail: String,
    /// None while the finding is open; the first acknowledgement stands.
    pub acknowledged: Option<Acknowledgement>,
}

/// An alert raised by a monitoring rule (`aqueduct_core::Alert`).
#[derive(ToSchema)]
pub struct Alert {
    pub connection: String,
    /// The rule that raised it (`error-rate`, `p95-latency`, `type-dropped-to-zero`...).
    pub rule: String,
    /// What it is about within the connection (a resource type, a host, `""` for the whole).
    pub subject: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub severity: String,
    pub detail: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub notified_state: Option<String>,
}

/// One read of patient data, as the access log holds it (`aqueduct_core::StoredAccessEvent`,
/// its `AccessEvent` flattened).
#[derive(ToSchema)]
pub struct StoredAccessEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub organization: String,
    /// Who: `api-key:{id}` or `jwt:{issuer}#{subject}`.
    pub principal: String,
    /// `read`, `search`, `everything`, `api`...
    pub action: String,
    /// The route as matched, not the URL with its values.
    pub route: String,
    /// The patient whose data was read (a facade id), when the read names one.
    pub patient: Option<String>,
    pub resource_types: Vec<String>,
    pub count: u64,
    pub client_addr: Option<String>,
}

/// An API key's record, never the key or its hash (`aqueduct_core::ApiKey`).
#[derive(ToSchema)]
pub struct ApiKey {
    /// The public half of the key (`aqk_{id}_{secret}`).
    pub id: String,
    pub organization: String,
    pub scope: ApiScope,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The longest `patient` a refresh request takes, in characters (after trimming).
pub const MAX_PATIENT_CHARS: usize = 512;

/// `POST /refresh-requests`' body: `patient` is `system|value` (both parts non-empty), or
/// `Patient/{id}` together with a `connection`; surrounding whitespace is trimmed.
pub struct RaiseRefreshBody;

impl utoipa::PartialSchema for RaiseRefreshBody {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, SchemaType, Type};
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let form = |patient: ObjectBuilder, connection_required: bool| {
            let connection = if connection_required {
                string()
            } else {
                ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            };
            let o = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("patient", patient.max_length(Some(MAX_PATIENT_CHARS)))
                .required("patient")
                .property(
                    "connection",
                    connection.description(Some(
                        "The connection to refresh; absent: every connection holding the patient",
                    )),
                )
                .property(
                    "reason",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::String, Type::Null])),
                )
                .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
            if connection_required {
                o.required("connection")
            } else {
                o
            }
        };
        AnyOfBuilder::new()
            .item(form(
                string()
                    .description(Some("An identifier (an MRN): `system|value`"))
                    .pattern(Some(r"^\s*[^|\s][^|]*\|[\s\S]*\S\s*$")),
                false,
            ))
            .item(form(
                string()
                    .description(Some("`Patient/{id}` at `connection`"))
                    .pattern(Some(r"^\s*Patient/[\s\S]*\S\s*$")),
                true,
            ))
            .description(Some(
                "A refresh request for one patient: by identifier, or by id at one connection",
            ))
            .into()
    }
}

impl ToSchema for RaiseRefreshBody {}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "An Aqueduct API key (`aqk_...`, also accepted as `X-API-Key`), or a JWT of a \
             configured issuer"
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aqueduct REST API",
        description = "The caller's organization, its connections, sync runs and their ledger, \
                       findings, alerts, the terminology review queue, patients and their \
                       records, actions and the audit log. Errors are RFC 9457 problems.",
    ),
    paths(
        api::connections::organization,
        api::connections::list,
        api::connections::one,
        api::connections::runs,
        api::connections::run,
        api::connections::run_requests,
        api::connections::findings,
        api::connections::acknowledge_finding,
        api::admin::start_sync,
        api::records::code_mappings,
        api::records::map_code,
        api::records::patients,
        api::records::patient_record,
        api::identity::persons,
        api::identity::person,
        api::identity::review,
        api::identity::decide,
        api::identity::explain,
        api::connections::alerts,
        api::records::unmapped,
        api::admin::refresh_requests,
        api::admin::raise_refresh,
        api::admin::refresh_request,
        api::admin::audit,
        api::admin::keys,
        api::admin::create_key,
        api::admin::revoke_key,
    ),
    components(schemas(ProblemBody, RunOutcome, ApiScope)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, /api/v1 path)` of every route `api::routes` registers, read from its source:
    /// each `.route("path", get(..).post(..))` call up to the next one.
    fn registered() -> BTreeSet<(String, String)> {
        let src = include_str!("api/mod.rs");
        let body = &src[src.find("pub fn routes(").unwrap()..src.find(".fallback(").unwrap()];
        let mut out = BTreeSet::new();
        for call in body.split(".route(").skip(1) {
            let path = call.split('"').nth(1).unwrap();
            for m in ["get", "post", "put", "delete", "patch"] {
                if call.contains(&format!("{m}(")) {
                    out.insert((m.to_uppercase(), format!("/api/v1{path}")));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_lists_every_api_route_and_nothing_else() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for m in item.as_object().unwrap().keys() {
                documented.insert((m.to_uppercase(), path.clone()));
            }
        }
        let registered = registered();
        assert!(registered.len() >= 22, "{registered:?}");
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&registered).collect();
        assert!(
            undocumented.is_empty() && stale.is_empty(),
            "routes without #[utoipa::path] in ApiDoc: {undocumented:?}; documented but not \
             routed: {stale:?}"
        );
    }

    /// The property names the document gives schema `name`.
    fn properties(doc: &serde_json::Value, name: &str) -> BTreeSet<String> {
        doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {name}"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys(v: impl serde::Serialize) -> BTreeSet<String> {
        serde_json::to_value(v)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// A field added to, renamed in or dropped from a core type must be mirrored here.
    #[test]
    fn the_mirrors_have_exactly_the_fields_the_core_types_write() {
        use aqueduct_core as core;
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let now = chrono::Utc::now();
        let conn = core::ConnectionRef::new("demo", "epic-main");
        let run = core::SyncRun {
            id: 1,
            connection: conn.clone(),
            kind: "full".into(),
            started_at: now,
            finished_at: None,
            outcome: core::RunOutcome::Complete,
            summary: None,
            error: None,
            heartbeat_at: None,
        };
        let request = core::RefreshRequest {
            patient_key: None,
            connection: None,
            reason: "api:sync".into(),
            source: "api-key:x".into(),
        };
        let cases = [
            ("ConnectionRef", keys(&conn)),
            ("SyncRun", keys(&run)),
            ("RunRequestStats", keys(core::RunRequestStats::default())),
            (
                "TypeCount",
                keys(core::TypeCount {
                    resource_type: "Patient".into(),
                    live: 1,
                    deleted: 0,
                    invalid: 0,
                }),
            ),
            (
                "AuthEvent",
                keys(core::AuthEvent {
                    at: now,
                    event: "refresh".into(),
                    outcome: "success".into(),
                    reason: None,
                }),
            ),
            (
                "UnmappedCode",
                keys(core::UnmappedCode {
                    connection: "epic-main".into(),
                    kind: "observation".into(),
                    source_system: None,
                    source_code: None,
                    source_text: None,
                    count: 1,
                }),
            ),
            (
                "CodeMapping",
                keys(core::CodeMapping {
                    source_system: "s".into(),
                    source_code: "c".into(),
                    target_system: "http://loinc.org".into(),
                    target_code: "2345-7".into(),
                    target_display: None,
                }),
            ),
            ("RefreshRequest", keys(&request)),
            (
                "RefreshRecord",
                keys(core::RefreshRecord {
                    id: 1,
                    request: request.clone(),
                    requested_at: now,
                    state: "pending".into(),
                    claimed_by: None,
                    attempts: 0,
                    handled_at: None,
                    outcome: None,
                    detail: None,
                    run_ids: vec![],
                    coalesced_into: None,
                }),
            ),
            (
                "ApiKey",
                keys(core::ApiKey {
                    id: "1ad07a262930de1a".into(),
                    organization: "demo".into(),
                    scope: core::ApiScope::Admin,
                    label: None,
                    secret_hash: "00".into(),
                    created_at: now,
                    revoked_at: None,
                }),
            ),
        ];
        let cases = cases.into_iter().chain([
            (
                "LedgerEntry",
                keys(core::LedgerEntry {
                    at: now,
                    method: "GET".into(),
                    url_template: "/Patient/{id}".into(),
                    url: "/Patient/1".into(),
                    resource_type: None,
                    patient_id: None,
                    status: Some(200),
                    duration_ms: 1.5,
                    bytes: 10,
                    resources: 1,
                    error_kind: None,
                    page_complete: true,
                    attempt: 1,
                }),
            ),
            (
                "FindingRecord",
                keys(core::FindingRecord {
                    id: 1,
                    finding: core::Finding {
                        at: now,
                        run_id: None,
                        kind: "empty-type".into(),
                        severity: "warning".into(),
                        resource_type: None,
                        detail: "d".into(),
                    },
                    acknowledged: None,
                }),
            ),
            (
                "Acknowledgement",
                keys(core::Acknowledgement {
                    by: "api-key:x".into(),
                    at: now,
                    note: None,
                }),
            ),
            (
                "Alert",
                keys(core::Alert {
                    connection: "epic-main".into(),
                    rule: "error-rate".into(),
                    subject: String::new(),
                    state: "firing".into(),
                    severity: "warning".into(),
                    detail: "d".into(),
                    first_seen: now,
                    last_seen: now,
                    resolved_at: None,
                    notified_state: None,
                }),
            ),
            (
                "StoredAccessEvent",
                keys(core::StoredAccessEvent {
                    id: 1,
                    event: core::AccessEvent {
                        at: now,
                        organization: "demo".into(),
                        principal: "api-key:x".into(),
                        action: "api".into(),
                        route: "/api/v1/audit".into(),
                        patient: None,
                        resource_types: vec![],
                        count: 0,
                        client_addr: None,
                    },
                }),
            ),
        ]);
        for (name, written) in cases {
            assert_eq!(properties(&doc, name), written, "schema {name}");
        }
    }

    #[test]
    fn every_operation_needs_the_bearer_scheme_and_answers_problems() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let unauthorized = &op["responses"]["401"]["content"]["application/problem+json"];
                assert_eq!(
                    unauthorized["schema"]["$ref"], "#/components/schemas/ProblemBody",
                    "{method} {path}: 401 as a problem"
                );
            }
        }
    }
}
