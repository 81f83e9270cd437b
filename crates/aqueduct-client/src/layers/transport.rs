//! The innermost service: one HTTP exchange with the FHIR server, nothing judged yet.
//!
//! What must hold for every byte that crosses the wire lives here, below every layer a caller
//! may add or reorder: redirects are followed here (not by the HTTP library) and only within
//! the FHIR base's origin, the token and the configured headers go only to origins allowed to
//! receive them, a body is read within its cap ([`crate::body`]), and a UTF-8 byte-order mark
//! before JSON is dropped. Whether the answer is a success is [`super::classify`]'s call: a
//! 500 or an HTML page is still an [`Exchange`] here.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};
use tower::Service;
use url::Url;

use super::{Attempt, BoxFuture, Exchange};
use crate::body::BodyError;
use crate::client::Expect;
use crate::error::{FetchError, FetchErrorKind};

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: u32 = 5;

/// How to reach one FHIR server: the connection pool and the profile's HTTP settings.
pub(crate) struct TransportSettings {
    pub http: reqwest::Client,
    /// The FHIR base, ending with '/'.
    pub base: Url,
    /// Configured headers (API keys): sent to the base's origin only.
    pub headers: HeaderMap,
    pub accept: String,
    pub timeout: Duration,
    pub max_response_bytes: u64,
    pub max_binary_bytes: u64,
    /// Origins besides the base's that may receive the token (document hosts).
    pub document_origins: Vec<String>,
}

/// Sends an [`Attempt`] and reads its answer: the service every layer stack ends in.
/// Cloning is cheap (the settings are shared).
#[derive(Clone)]
pub struct Transport {
    settings: Arc<TransportSettings>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("base", &self.settings.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(settings: TransportSettings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }

    /// The FHIR base URL, always ending with '/'.
    pub fn base(&self) -> &Url {
        &self.settings.base
    }

    /// Same scheme, host and port as the FHIR base.
    pub fn is_same_origin(&self, url: &Url) -> bool {
        let base = &self.settings.base;
        url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default()
    }

    /// The FHIR server's origin, or one of the organization's document hosts.
    pub fn may_receive_token(&self, url: &Url) -> bool {
        self.is_same_origin(url) || self.settings.document_origins.contains(&origin_of(url))
    }

    /// One request on the wire, redirects on the same origin included, its body read.
    ///
    /// A redirect elsewhere is refused: its body could replace a patient's data, and the
    /// token or configured headers would leave the server.
    async fn exchange(&self, attempt: &Attempt) -> Result<Exchange, FetchError> {
        let req = &*attempt.request;
        let url_s = req.url.as_str();
        let mut url = req.url.clone();
        let mut body = req.body.clone();
        let mut hops = 0u32;
        let mut resp = loop {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(FetchError::new(
                    FetchErrorKind::InvalidUrl,
                    url_s,
                    "only http and https URLs are fetched",
                ));
            }
            let resp = self
                .send_once(attempt, &url, body.clone())
                .await
                .map_err(|e| transport_error(url_s, &e))?;
            let status = resp.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                break resp;
            }
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok());
            let Some(next) = location else {
                break resp;
            };
            if origin_of(&next) != origin_of(&url) || !self.may_receive_token(&next) {
                return Err(FetchError::new(
                    FetchErrorKind::RedirectRefused,
                    url_s,
                    format!(
                        "HTTP {status} to another origin ({}); not followed",
                        origin_of(&next)
                    ),
                ));
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(FetchError::new(
                    FetchErrorKind::RedirectRefused,
                    url_s,
                    format!("more than {MAX_REDIRECTS} redirects"),
                ));
            }
            if status == 303 {
                body = None;
            }
            url = next;
        };
        let status = resp.status().as_u16();
        // Taken, not cloned: the body reader needs only the body (its Content-Length comes
        // from the body's size hint).
        let headers = std::mem::take(resp.headers_mut());
        let final_url = resp.url().clone();
        let content_length = resp.content_length();
        let cap = match req.expect {
            Expect::Json => self.settings.max_response_bytes,
            Expect::Any => self.settings.max_binary_bytes,
        };
        let (body, lane) = match crate::body::read_capped(resp, cap).await {
            Ok(b) => b,
            Err(BodyError::TooLarge {
                read,
                cap,
                declared,
            }) => {
                let how = if declared {
                    "its Content-Length is"
                } else {
                    "it grew"
                };
                return Err(FetchError::new(
                    FetchErrorKind::TooLarge,
                    url_s,
                    format!("body aborted: {how} past the cap of {cap} bytes"),
                )
                .with_answer(headers, read));
            }
            Err(BodyError::Transport(e)) => {
                let kind = if e.is_timeout() {
                    FetchErrorKind::Timeout
                } else {
                    FetchErrorKind::Truncated
                };
                return Err(
                    FetchError::new(kind, url_s, format!("reading the body: {e}"))
                        .with_answer(headers, 0),
                );
            }
        };
        let received = body.len() as u64;
        // A UTF-8 byte-order mark before JSON is transport noise some servers add; JSON
        // parsers refuse it, so it is dropped (a Binary's raw content is left as it is).
        let body = if req.expect == Expect::Json && body.starts_with(b"\xEF\xBB\xBF") {
            body.slice(3..)
        } else {
            body
        };
        Ok(Exchange {
            status,
            url: final_url,
            headers,
            body,
            received,
            content_length,
            large_body_lane: lane,
        })
    }

    /// One HTTP exchange. The token and the configured headers go only to the FHIR server's
    /// own origin (the token also to the document hosts), checked again at every hop.
    async fn send_once(
        &self,
        attempt: &Attempt,
        url: &Url,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let s = &*self.settings;
        let rb = match body {
            Some(body) => s
                .http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
                .body(body),
            None => s.http.get(url.clone()),
        };
        let accept = attempt.request.accept.as_deref().unwrap_or(&s.accept);
        let mut rb = rb.timeout(s.timeout).header(ACCEPT, accept);
        if self.is_same_origin(url) {
            rb = rb.headers(s.headers.clone());
        }
        if let Some(t) = attempt
            .token
            .as_deref()
            .filter(|_| self.may_receive_token(url))
        {
            rb = rb.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        rb.send().await
    }
}

impl Service<Attempt> for Transport {
    type Response = Exchange;
    type Error = FetchError;
    type Future = BoxFuture<Result<Exchange, FetchError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        // The pool queues for itself; pacing is the limiter layer's job.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.exchange(&attempt).await })
    }
}

/// "scheme://host:port", for origin checks and messages.
pub(crate) fn origin_of(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

fn transport_error(url: &str, e: &reqwest::Error) -> FetchError {
    let kind = if e.is_timeout() {
        FetchErrorKind::Timeout
    } else if e.is_body() || e.is_decode() {
        FetchErrorKind::Truncated
    } else if e.is_builder() {
        FetchErrorKind::InvalidUrl
    } else {
        FetchErrorKind::Connect
    };
    // The source chain says what really happened (refused, reset, DNS...).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    FetchError::new(kind, url, msg)
}
