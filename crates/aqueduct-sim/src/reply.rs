//! One response type for every endpoint, so faults can rewrite any answer before it is sent.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const FHIR_JSON: &str = "application/fhir+json;charset=utf-8";

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Number of resources carried (for statistics).
    pub resources: usize,
}

impl Reply {
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type: content_type.to_string(),
            headers: vec![],
            body,
            resources: 0,
        }
    }

    pub fn fhir(status: u16, body: Vec<u8>) -> Reply {
        Reply::bytes(status, FHIR_JSON, body)
    }

    pub fn json(status: u16, v: &Value) -> Reply {
        Reply::bytes(
            status,
            "application/json",
            serde_json::to_vec(v).unwrap_or_default(),
        )
    }

    pub fn outcome(status: u16, code: &str, diagnostics: &str) -> Reply {
        let severity = if status >= 500 { "fatal" } else { "error" };
        Reply::fhir(status, outcome_json(severity, code, diagnostics))
    }

    pub fn redirect(location: &str) -> Reply {
        Reply::bytes(302, "text/plain", vec![]).header("Location", location)
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Body::from(self.body)).into_response();
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.content_type) {
            h.insert(axum::http::header::CONTENT_TYPE, v);
        }
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_str(&v)) {
                h.append(k, v);
            }
        }
        resp
    }
}

pub fn outcome_json(severity: &str, code: &str, diagnostics: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]
    }))
    .unwrap_or_default()
}
