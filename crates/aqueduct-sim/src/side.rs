//! The two side listeners every simulator runs beside its FHIR server, each on its own port
//! (so its own origin): the document host of the same organization, which serves document
//! contents and patient photos at `/content/{id}` (`document_host` personalities), and a
//! foreign origin that `redirect-cross-origin` sends searches to and that answers with a
//! bogus Bundle. Both record every request with its headers, so a test can see whether a
//! client sent its token or API key to them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};

use crate::fault::Fault;
use crate::reply::{Reply, StreamKind};
use crate::server::{SimState, megabytes, parse_query};

/// Requests kept per simulator; older ones are dropped first.
const MAX_LOGGED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideHost {
    Documents,
    Foreign,
}

impl SideHost {
    pub fn name(self) -> &'static str {
        match self {
            SideHost::Documents => "documents",
            SideHost::Foreign => "foreign",
        }
    }
}

/// One request a side listener received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideRequest {
    /// `documents` or `foreign`.
    pub host: &'static str,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names in lower case, with their values.
    pub headers: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct SideLog {
    requests: Mutex<Vec<SideRequest>>,
}

impl SideLog {
    fn push(&self, r: SideRequest) {
        let mut v = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= MAX_LOGGED {
            v.remove(0);
        }
        v.push(r);
    }

    pub fn all(&self) -> Vec<SideRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn to_json(&self, host: Option<&str>) -> Value {
        let items: Vec<Value> = self
            .all()
            .into_iter()
            .filter(|r| host.is_none_or(|h| h == r.host))
            .map(|r| {
                json!({"host": r.host, "method": r.method, "path": r.path, "query": r.query, "headers": r.headers})
            })
            .collect();
        json!({"requests": items})
    }
}

pub fn router(state: Arc<SimState>, host: SideHost) -> Router {
    Router::new().fallback(handle).with_state((state, host))
}

async fn handle(State((st, host)): State<(Arc<SimState>, SideHost)>, req: Request) -> Response {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    st.side_log.push(SideRequest {
        host: host.name(),
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        headers,
    });
    let reply = match host {
        SideHost::Documents => document(&st, &path),
        SideHost::Foreign => bogus_bundle(&st, &path, &query),
    };
    reply.into_response()
}

/// `/content/{id}`: a document's or photo's bytes, with or without a token (the log says
/// which), as a document host of the same organization serves them.
fn document(st: &SimState, path: &str) -> Reply {
    let Some(id) = path.strip_prefix("/content/").filter(|i| !i.contains('/')) else {
        return Reply::bytes(404, "text/plain", b"not found".to_vec());
    };
    let Some((b, _)) = st.store.binary(id) else {
        return Reply::bytes(404, "text/plain", b"no such document".to_vec());
    };
    let mut r = Reply::bytes(200, b.content_type, b.data.to_vec());
    if let Some(Fault::HugeBinary { mb, .. }) = st.fire_named("huge-binary") {
        r.stream = Some(st.streamed(StreamKind::HugeRaw {
            bytes: megabytes(mb),
        }));
    }
    st.record(r.status, 1);
    r
}

/// What an attacker's server answers: a searchset whose Observation claims to belong to the
/// patient the redirected search asked for.
fn bogus_bundle(st: &SimState, path: &str, query: &str) -> Reply {
    let patient = parse_query(query)
        .into_iter()
        .find(|(k, _)| k == "patient" || k == "subject")
        .map(|(_, v)| v)
        .unwrap_or_else(|| "unknown".into());
    let patient = patient.rsplit('/').next().unwrap_or("").to_string();
    let origin = &st.foreign_origin;
    let v = json!({
        "resourceType": "Bundle", "type": "searchset", "total": 1,
        "link": [{"relation": "self", "url": format!("{origin}{path}")}],
        "entry": [{
            "fullUrl": format!("{origin}/fhir/r4/Observation/forged-1"),
            "resource": {
                "resourceType": "Observation", "id": "forged-1", "status": "final",
                "meta": {"versionId": "1", "lastUpdated": "2025-06-01T00:00:00.000Z"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "Forged glucose"},
                "subject": {"reference": format!("Patient/{patient}")},
                "valueQuantity": {"value": 999, "unit": "mg/dL"}
            },
            "search": {"mode": "match"}
        }]
    });
    Reply::fhir(200, serde_json::to_vec(&v).unwrap_or_default())
}
