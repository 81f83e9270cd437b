//! Errors as the client sees them: one JSON problem shape (RFC 9457) for the API, and
//! OperationOutcome for the FHIR facade. A store failure is logged with its cause chain and
//! answered without internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error: `application/problem+json`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    /// A short slug, the last segment of the problem's `type` URI.
    pub kind: &'static str,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// Also what another organization's ids get: their existence is not revealed.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// The store failed: the cause is logged, the client learns only that it was ours.
    pub fn store(e: aqueduct_core::StoreError) -> Self {
        tracing::error!(error = %e, "store failure while serving a request");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "the store could not answer; try again",
        )
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("https://aqueduct.dev/problems/{}", self.kind),
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"aqueduct\""),
            );
        }
        r
    }
}

/// A facade error: an OperationOutcome, as FHIR clients expect.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: StatusCode,
    /// The issue type (`not-found`, `invalid`, `not-supported`, `too-costly`, `security`...).
    pub code: &'static str,
    pub diagnostics: String,
}

impl Outcome {
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            code,
            diagnostics: diagnostics.into(),
        }
    }

    pub fn invalid(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", d)
    }

    pub fn not_found(d: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", d)
    }

    pub fn not_supported(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "not-supported", d)
    }
}

impl From<Problem> for Outcome {
    fn from(p: Problem) -> Self {
        let code = match p.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "security",
            StatusCode::NOT_FOUND => "not-found",
            s if s.is_server_error() => "transient",
            _ => "invalid",
        };
        Outcome::new(p.status, code, p.detail)
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let body = json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "error",
                "code": self.code,
                "diagnostics": self.diagnostics,
            }]
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"aqueduct\""),
            );
        }
        r
    }
}
