//! The access log as FHIR AuditEvent (`GET /fhir/{org}/AuditEvent[?patient=][&_count=]`),
//! for the organization's admins: every read of patient data through the API and the facade,
//! newest first, one AuditEvent per read.

use std::sync::Arc;

use aqueduct_core::{ApiScope, StoredAccessEvent};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Ctx, Outcome, Seg, View, fhir_json, link, pairs, store_outcome};
use crate::AppState;
use crate::api::extract::Caller;

pub(super) fn to_audit_event(e: &StoredAccessEvent) -> Value {
    let ev = &e.event;
    let (subtype, action) = match ev.action.as_str() {
        "read" => ("read", "R"),
        "search" => ("search-type", "E"),
        "everything" => ("operation", "E"),
        _ => ("read", "R"),
    };
    let mut agent = json!({
        "who": {"display": ev.principal},
        "requestor": true,
    });
    if let Some(addr) = &ev.client_addr {
        agent["network"] = json!({"address": addr, "type": "2"});
    }
    let mut entities = Vec::new();
    if let Some(p) = &ev.patient {
        entities.push(json!({
            "what": {"reference": format!("Patient/{p}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        }));
    }
    entities.push(json!({
        "name": ev.route,
        "description": format!("{} resource(s): {}", ev.count, ev.resource_types.join(", ")),
    }));
    json!({
        "resourceType": "AuditEvent",
        "id": format!("access-{}", e.id),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": subtype}],
        "action": action,
        "recorded": ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "outcome": "0",
        "agent": [agent],
        "source": {"observer": {"display": "Aqueduct"}},
        "entity": entities,
    })
}

pub(super) async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Seg(org): Seg<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, Outcome> {
    let ctx = Ctx::new(state, caller, org, View::Clean, &headers)?;
    ctx.caller
        .principal
        .require(ApiScope::Admin)
        .map_err(Outcome::from)?;
    let mut patient = None;
    let mut count = None;
    let mut before = None;
    let mut used = Vec::new();
    for (k, v) in pairs(q)? {
        match k.as_str() {
            "patient" => {
                patient = Some(v.strip_prefix("Patient/").unwrap_or(&v).to_string());
                used.push((k, v));
            }
            "_count" => {
                count = Some(
                    v.parse::<u32>()
                        .map_err(|_| Outcome::invalid("_count: not a number"))?,
                );
                used.push((k, v));
            }
            "_page" => {
                before = Some(
                    v.strip_prefix('b')
                        .and_then(|n| n.parse::<i64>().ok())
                        .ok_or_else(|| Outcome::invalid("_page: not a page of this search"))?,
                )
            }
            _ if ctx.strict => {
                return Err(Outcome::not_supported(format!(
                    "search parameter {k:?} is not supported on AuditEvent"
                )));
            }
            _ => {}
        }
    }
    let limit = ctx.state.page_size(count);
    let events = ctx
        .state
        .store
        .list_access(&ctx.org, patient.as_deref(), before, limit)
        .await
        .map_err(store_outcome)?;
    let next = (events.len() as u32 == limit)
        .then(|| events.last().map(|e| format!("b{}", e.id)))
        .flatten();
    let mut links =
        vec![json!({"relation": "self", "url": link(&ctx.base, "AuditEvent", &used, None)})];
    if let Some(n) = next {
        links.push(
            json!({"relation": "next", "url": link(&ctx.base, "AuditEvent", &used, Some(&n))}),
        );
    }
    let entries: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "fullUrl": format!("{}/AuditEvent/access-{}", ctx.base, e.id),
                "resource": to_audit_event(e),
                "search": {"mode": "match"},
            })
        })
        .collect();
    let body = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    Ok(fhir_json(StatusCode::OK, body.to_string()))
}
