//! The facade's CapabilityStatement: exactly what it serves — read and search of each type in
//! [`super::TYPES`], the search parameters of [`super::params::SUPPORTED`], `_include` and
//! `_revinclude` by reference parameter, and `Patient/$everything`. Public, like a FHIR
//! server's metadata: it names no organization's data.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::params::SUPPORTED;
use super::{TYPES, fhir_json};

pub async fn metadata() -> Response {
    let params: Vec<Value> = SUPPORTED
        .iter()
        .map(|(name, kind)| json!({"name": name, "type": kind}))
        .collect();
    let resources: Vec<Value> = TYPES
        .iter()
        .map(|t| {
            let mut r = json!({
                "type": t,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": params,
                "searchInclude": [
                    format!("{t}:patient"), format!("{t}:subject"), format!("{t}:encounter"),
                    format!("{t}:medication"), format!("{t}:performer"), format!("{t}:requester"),
                    format!("{t}:practitioner"), format!("{t}:author"), format!("{t}:organization"),
                    format!("{t}:location"),
                ],
                "searchRevInclude": ["Provenance:target"],
            });
            if *t == "Patient" {
                r["operation"] = json!([{
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"
                }]);
            }
            r
        })
        .collect();
    let mut resources = resources;
    resources.push(json!({
        "type": "AuditEvent",
        "documentation": "Every read of patient data through the API and this facade (admin API keys only)",
        "interaction": [{"code": "search-type"}],
        "searchParam": [{"name": "patient", "type": "reference"}],
    }));
    let body = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-01",
        "kind": "instance",
        "software": {"name": "Aqueduct", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Aqueduct FHIR facade (read-only): every connection of the organization, ids namespaced per source"},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "description": "Authorization: Bearer with an Aqueduct API key of the organization",
            },
            "resource": resources,
        }]
    });
    fhir_json(StatusCode::OK, body.to_string())
}
