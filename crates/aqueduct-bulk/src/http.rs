//! The requests of a Bulk job, on the client crate's layers: the connection's per-host
//! [limiter](aqueduct_client::HostLimiter) (a permit per request, held while a file streams in;
//! `Retry-After` pauses the whole host), its [`RetryPolicy`] backoff, its token source (refreshed
//! once on 401) and its origin rule (the token goes to the FHIR server's origin and the
//! configured document hosts only), and one [`LedgerEntry`] per attempt to the run's ledger.
//! What the plain [`aqueduct_client::FhirClient::get`] cannot do for Bulk Data is done here:
//! `Prefer: respond-async`, response headers (`Content-Location`, `Retry-After`,
//! `X-Progress`), DELETE, ranges, gzip and bodies streamed instead of buffered.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aqueduct_client::headers::parse_retry_after;
use aqueduct_client::limiter::Permit;
use aqueduct_client::{
    AccessTokenSource, AuthError, FhirClient, RequestObserver, RetryPolicy, Signal,
};
use aqueduct_core::LedgerEntry;
use aqueduct_sync::RunLedger;
use chrono::Utc;
use reqwest::header::HeaderMap;
use url::Url;

use crate::error::BulkError;

/// Cap on the bodies read whole (kick-off, status, manifest, DELETE answers).
pub const MAX_SMALL_BODY: usize = 32 * 1024 * 1024;

#[derive(Clone)]
pub(crate) struct Http {
    pub client: FhirClient,
    pub http: reqwest::Client,
    pub auth: Arc<dyn AccessTokenSource>,
    pub ledger: Arc<RunLedger>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Req<'a> {
    pub method: reqwest::Method,
    pub url: &'a Url,
    pub headers: Vec<(&'static str, String)>,
    /// The request may carry the token (still only to an origin allowed to receive it).
    pub token: bool,
    pub resource_type: Option<&'a str>,
    pub template: &'a str,
}

/// A response whose body has been read.
#[derive(Debug)]
pub(crate) struct Small {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A response whose body is still to be read; the host permit is held until it is dropped,
/// and the ledger entry is written by [`Streaming::finish`].
pub(crate) struct Streaming {
    pub status: u16,
    pub headers: HeaderMap,
    pub resp: reqwest::Response,
    entry: LedgerEntry,
    started: Instant,
    ledger: Arc<RunLedger>,
    _permit: Permit,
}

impl Streaming {
    /// Records the download in the ledger: bytes received, resources stored, and whether it
    /// was read to its end (a kind when not).
    pub fn finish(mut self, bytes: u64, resources: u64, error_kind: Option<String>) {
        self.entry.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.entry.bytes = bytes;
        self.entry.resources = resources;
        self.entry.page_complete = error_kind.is_none();
        self.entry.error_kind = error_kind;
        self.ledger.on_attempt(&self.entry);
    }
}

fn transient_outcome(body: &[u8]) -> bool {
    aqueduct_client::fhir::OperationOutcome::parse(body).is_some_and(|o| {
        o.issue.iter().any(|i| {
            i.code
                .as_deref()
                .is_some_and(|c| matches!(c, "transient" | "timeout" | "throttled" | "lock-error"))
        })
    })
}

impl Http {
    async fn token(&self) -> Result<Option<String>, BulkError> {
        self.auth.token().await.map_err(BulkError::Auth)
    }

    fn entry(&self, req: &Req<'_>, attempt: u32) -> LedgerEntry {
        LedgerEntry {
            at: Utc::now(),
            method: req.method.to_string(),
            url_template: req.template.to_string(),
            url: req.url.to_string(),
            resource_type: req.resource_type.map(str::to_string),
            patient_id: None,
            status: None,
            duration_ms: 0.0,
            bytes: 0,
            resources: 0,
            error_kind: None,
            page_complete: false,
            attempt,
        }
    }

    /// Sends with retries; answers the first response that is not to be retried (any status:
    /// callers judge it), its body unread, the permit held.
    /// `whole`: the timeout covers the body too (small answers); else only the wait for the
    /// response head, and the caller watches the body for stalls (a large file may take
    /// longer than any fixed timeout).
    async fn send(&self, req: &Req<'_>, whole: bool) -> Result<Streaming, BulkError> {
        let mut token = if req.token { self.token().await? } else { None };
        let mut refreshed = false;
        let mut attempt = 0u32;
        let limiter = self.client.limiter().clone();
        loop {
            attempt += 1;
            let permit = limiter.acquire().await;
            let started = Instant::now();
            let mut entry = self.entry(req, attempt);
            let mut rb = self.http.request(req.method.clone(), req.url.clone());
            if whole {
                rb = rb.timeout(self.timeout);
            }
            for (k, v) in &req.headers {
                rb = rb.header(*k, v);
            }
            let sent_token = match token.as_deref() {
                Some(t) if self.client.may_receive_token(req.url) => {
                    rb = rb.bearer_auth(t);
                    true
                }
                _ => false,
            };
            let result = match tokio::time::timeout(self.timeout, rb.send()).await {
                Ok(r) => r,
                Err(_) => {
                    entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                    entry.error_kind = Some("timeout".into());
                    self.ledger.on_attempt(&entry);
                    limiter.observe(Signal::Neutral);
                    if attempt >= self.retry.max_attempts {
                        return Err(BulkError::Body {
                            url: req.url.to_string(),
                            message: format!("no response within {:?}", self.timeout),
                        });
                    }
                    drop(permit);
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                    continue;
                }
            };
            let retry_in = match result {
                Err(e) => {
                    entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                    entry.error_kind =
                        Some(if e.is_timeout() { "timeout" } else { "connect" }.into());
                    self.ledger.on_attempt(&entry);
                    limiter.observe(Signal::Neutral);
                    if attempt >= self.retry.max_attempts {
                        return Err(BulkError::Transport {
                            url: req.url.to_string(),
                            attempts: attempt,
                            source: e,
                        });
                    }
                    self.retry.backoff(attempt)
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    entry.status = Some(status);
                    let headers = resp.headers().clone();
                    let wait = headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let retriable = match status {
                        429 | 503 => true,
                        408 | 502 | 504 => true,
                        401 if sent_token && !refreshed => true,
                        _ => false,
                    };
                    if !retriable && status != 500 || attempt >= self.retry.max_attempts {
                        limiter.observe(if matches!(status, 429 | 503) {
                            Signal::Throttled
                        } else {
                            Signal::Success
                        });
                        return Ok(Streaming {
                            status,
                            headers,
                            resp,
                            entry,
                            started,
                            ledger: self.ledger.clone(),
                            _permit: permit,
                        });
                    }
                    // the body of an answer retried is small (an OperationOutcome): read it for
                    // the ledger and to tell a transient 500 from a failed job
                    let body = read_small(resp).await.unwrap_or_default();
                    entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                    entry.bytes = body.len() as u64;
                    if status == 500
                        && !transient_outcome(&body)
                        && aqueduct_client::fhir::OperationOutcome::parse(&body).is_some()
                    {
                        // an error the server says is final: the caller reads it again below
                        entry.error_kind = Some(format!("http-{status}"));
                        self.ledger.on_attempt(&entry);
                        limiter.observe(Signal::Neutral);
                        return Err(BulkError::ServerError {
                            url: req.url.to_string(),
                            status,
                            outcome: outcome_text(&body),
                        });
                    }
                    entry.error_kind = Some(format!("http-{status}"));
                    self.ledger.on_attempt(&entry);
                    if status == 401 {
                        refreshed = true;
                        let rejected = token.clone().unwrap_or_default();
                        token = match self.auth.on_unauthorized(&rejected).await {
                            Ok(Some(t)) => Some(t),
                            Ok(None) => {
                                return Err(BulkError::Auth(AuthError::ReauthorizationNeeded(
                                    "the server refused the token and no new one could be had"
                                        .into(),
                                )));
                            }
                            Err(e) => return Err(BulkError::Auth(e)),
                        };
                        Duration::ZERO
                    } else if matches!(status, 429 | 503) {
                        limiter.observe(Signal::Throttled);
                        match wait {
                            Some(d) => {
                                limiter.pause_for(d);
                                d.max(self.retry.backoff(attempt) / 4)
                            }
                            None => self.retry.backoff(attempt),
                        }
                    } else {
                        limiter.observe(Signal::Neutral);
                        self.retry.backoff(attempt)
                    }
                }
            };
            drop(permit);
            tokio::time::sleep(retry_in).await;
        }
    }

    /// A request whose answer is read whole (capped) and written to the ledger.
    pub async fn small(&self, req: &Req<'_>) -> Result<Small, BulkError> {
        let s = self.send(req, true).await?;
        let status = s.status;
        let headers = s.headers.clone();
        let started = s.started;
        let mut entry = s.entry.clone();
        let ledger = s.ledger.clone();
        let body = read_small(s.resp).await;
        entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        match body {
            Ok(body) => {
                entry.bytes = body.len() as u64;
                entry.page_complete = (200..300).contains(&status);
                if !entry.page_complete {
                    entry.error_kind = Some(format!("http-{status}"));
                }
                ledger.on_attempt(&entry);
                Ok(Small {
                    status,
                    headers,
                    body,
                })
            }
            Err(e) => {
                entry.error_kind = Some("truncated".into());
                ledger.on_attempt(&entry);
                Err(BulkError::Body {
                    url: req.url.to_string(),
                    message: e,
                })
            }
        }
    }

    /// A request whose body the caller streams (see [`Streaming::finish`]).
    pub async fn stream(&self, req: &Req<'_>) -> Result<Streaming, BulkError> {
        self.send(req, false).await
    }
}

async fn read_small(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > MAX_SMALL_BODY {
            return Err(format!("body past the cap of {MAX_SMALL_BODY} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An OperationOutcome body in words, or the start of whatever the body is.
pub(crate) fn outcome_text(body: &[u8]) -> String {
    match aqueduct_client::fhir::OperationOutcome::parse(body) {
        Some(o) => o.summary(),
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            if text.trim().is_empty() {
                "no OperationOutcome".into()
            } else {
                text
            }
        }
    }
}
