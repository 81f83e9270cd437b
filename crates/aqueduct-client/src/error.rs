//! What can go wrong fetching from a FHIR server, classified for retry decisions and the ledger.

use std::time::Duration;

use reqwest::header::HeaderMap;
use thiserror::Error;

use crate::auth::AuthError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchErrorKind {
    /// No answer in time.
    Timeout,
    /// The connection could not be made or broke before a status line.
    Connect,
    /// A non-success HTTP status.
    Http(u16),
    /// 200 with an HTML page (an error page or a login form) instead of FHIR.
    Html200,
    /// A success status whose body is not JSON.
    InvalidJson,
    /// The body ended before its Content-Length (or the connection broke mid-body).
    Truncated,
    /// 401 even after refreshing the token once, or a token source that cannot refresh.
    ReauthorizationNeeded,
    /// The token source failed.
    Auth(AuthError),
    /// The URL could not be built or points at an unsupported scheme.
    InvalidUrl,
    /// A redirect to another origin (or too many redirects): not followed, so neither the
    /// token nor configured headers leave the server, and nothing from elsewhere is stored.
    RedirectRefused,
    /// The body is larger than the configured cap: aborted, and never retried (the same
    /// body would come again).
    TooLarge,
}

/// A failed fetch: what, where, and what the server said.
#[derive(Debug, Clone, Error)]
#[error("GET {url} failed ({code}){status_text}{outcome_text}", code = self.kind_code(), status_text = self.status.map(|s| format!(", HTTP {s}")).unwrap_or_default(), outcome_text = self.detail_text())]
pub struct FetchError {
    pub kind: FetchErrorKind,
    pub url: Box<str>,
    pub status: Option<u16>,
    /// Low-level cause (transport error text...).
    pub message: Box<str>,
    /// The server's OperationOutcome, summarized, when it sent one.
    pub outcome: Option<Box<str>>,
    /// How long the server asked us to wait, when it said.
    pub retry_after: Option<Duration>,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// What the server sent before the attempt failed, when it answered at all. Boxed: the
    /// error type is in every `Result` of a sync, and most of them hold no error.
    pub answer: Option<Box<Answer>>,
}

/// What a failed attempt received, beyond its status: read by the layers above
/// classification (the limiter, the ledger) and by callers that study the server.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The response headers (throttling signals, the software the server names).
    pub headers: HeaderMap,
    /// Body bytes received, for the ledger entry.
    pub bytes: u64,
    /// The issue codes of the server's OperationOutcome (`suppressed`, `not-supported`...).
    pub outcome_codes: Box<[String]>,
}

impl FetchError {
    pub fn new(kind: FetchErrorKind, url: impl Into<String>, message: impl Into<String>) -> Self {
        let status = match &kind {
            FetchErrorKind::Http(s) => Some(*s),
            FetchErrorKind::Html200 => Some(200),
            _ => None,
        };
        Self {
            kind,
            url: url.into().into_boxed_str(),
            status,
            message: message.into().into_boxed_str(),
            outcome: None,
            retry_after: None,
            attempts: 1,
            answer: None,
        }
    }

    /// Body bytes received before the failure (0 when the server sent none).
    pub fn bytes(&self) -> u64 {
        self.answer.as_ref().map_or(0, |a| a.bytes)
    }

    /// The issue codes of the server's OperationOutcome, empty when it sent none.
    pub fn outcome_codes(&self) -> &[String] {
        self.answer.as_ref().map_or(&[], |a| &a.outcome_codes)
    }

    /// Keeps what the server sent, for the layers above classification.
    pub(crate) fn with_answer(mut self, headers: HeaderMap, bytes: u64) -> Self {
        self.answer = Some(Box::new(Answer {
            headers,
            bytes,
            outcome_codes: Box::default(),
        }));
        self
    }

    fn detail_text(&self) -> String {
        let mut s = String::new();
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.message);
        }
        if let Some(o) = &self.outcome {
            s.push_str("; OperationOutcome: ");
            s.push_str(o);
        }
        s
    }

    /// Short machine-readable cause, as the ledger records it.
    pub fn kind_code(&self) -> String {
        match &self.kind {
            FetchErrorKind::Timeout => "timeout".into(),
            FetchErrorKind::Connect => "connect".into(),
            FetchErrorKind::Http(s) => format!("http-{s}"),
            FetchErrorKind::Html200 => "html-200".into(),
            FetchErrorKind::InvalidJson => "invalid-json".into(),
            FetchErrorKind::Truncated => "truncated".into(),
            FetchErrorKind::ReauthorizationNeeded => "reauthorization-needed".into(),
            FetchErrorKind::Auth(AuthError::ReauthorizationNeeded(_)) => {
                "reauthorization-needed".into()
            }
            FetchErrorKind::Auth(_) => "auth-failed".into(),
            FetchErrorKind::InvalidUrl => "invalid-url".into(),
            FetchErrorKind::RedirectRefused => "redirect-refused".into(),
            FetchErrorKind::TooLarge => "too-large".into(),
        }
    }

    /// Worth retrying: timeouts, connection errors, 408/429/5xx gateway errors, bad bodies.
    /// Never other 4xx.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            FetchErrorKind::Timeout
            | FetchErrorKind::Connect
            | FetchErrorKind::Html200
            | FetchErrorKind::InvalidJson
            | FetchErrorKind::Truncated
            | FetchErrorKind::Auth(AuthError::Transient(_)) => true,
            FetchErrorKind::Http(s) => matches!(s, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// The server signalled overload (429 or 503).
    pub fn is_throttled(&self) -> bool {
        matches!(self.kind, FetchErrorKind::Http(429 | 503))
    }

    /// Someone must authorize again before this connection can be used.
    pub fn needs_reauthorization(&self) -> bool {
        matches!(
            self.kind,
            FetchErrorKind::ReauthorizationNeeded
                | FetchErrorKind::Auth(AuthError::ReauthorizationNeeded(_))
        )
    }

    /// The server's OperationOutcome carries an issue with this code.
    pub fn has_outcome_code(&self, code: &str) -> bool {
        self.outcome_codes()
            .iter()
            .any(|c| c.eq_ignore_ascii_case(code))
    }

    /// 403: outside the granted scopes or forbidden for this client.
    pub fn is_forbidden(&self) -> bool {
        self.kind == FetchErrorKind::Http(403)
    }

    /// 400/404/405/501 and friends: the server does not do what was asked.
    pub fn is_rejected_query(&self) -> bool {
        matches!(
            self.kind,
            FetchErrorKind::Http(400 | 404 | 405 | 410 | 422 | 501)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `Result` of a sync carries this type: what a failed attempt received is boxed
    /// (`answer`) so that the error stays small (clippy's `result_large_err` draws the line
    /// at 128 bytes, in every crate that returns it).
    #[test]
    fn the_error_stays_small() {
        assert!(std::mem::size_of::<FetchError>() < 128);
    }
}
