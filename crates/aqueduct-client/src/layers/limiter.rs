//! The host's limiter around each attempt: a [permit](crate::limiter::Permit) of the per-host
//! [`HostLimiter`] is held while the attempt is on the wire, and what the answer says about
//! the host's load is fed back before the permit is released.
//!
//! Feedback is of two kinds: the signal for the adaptive concurrency limit (success, throttled
//! on 429/503, neutral otherwise), and pauses the server asked for (`Retry-After` on 429/503,
//! `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` on any answer). Both are applied while
//! the permit is still held, so a request woken by its release already sees the pause.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use reqwest::header::HeaderMap;
use tower::{Layer, Service};

use super::{Attempt, BoxFuture};
use crate::client::FhirResponse;
use crate::error::FetchError;
use crate::headers::{parse_rate_limit_reset, parse_retry_after};
use crate::limiter::{HostLimiter, Signal};

/// Adds [`Limited`] with one host's limiter.
#[derive(Debug, Clone)]
pub struct LimiterLayer {
    limiter: Arc<HostLimiter>,
}

impl LimiterLayer {
    pub fn new(limiter: Arc<HostLimiter>) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for LimiterLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

/// See the [module](self) documentation.
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
    limiter: Arc<HostLimiter>,
}

impl<S> Service<Attempt> for Limited<S>
where
    S: Service<Attempt, Response = FhirResponse, Error = FetchError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = FhirResponse;
    type Error = FetchError;
    type Future = BoxFuture<Result<FhirResponse, FetchError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        // The inner service was made ready by `poll_ready`; take that one into the future and
        // leave a clone behind (tower's usual way to call a service after an await).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = Arc::clone(&self.limiter);
        Box::pin(async move {
            let permit = limiter.acquire().await;
            let result = inner.call(attempt).await;
            feed_back(&limiter, &result);
            drop(permit);
            result
        })
    }
}

/// Tells the limiter what the answer says about the host's load.
fn feed_back(limiter: &HostLimiter, result: &Result<FhirResponse, FetchError>) {
    let (status, headers, signal) = match result {
        Ok(resp) => (Some(resp.status), Some(&resp.headers), Signal::Success),
        Err(err) => (
            err.status,
            err.answer.as_ref().map(|a| &a.headers),
            if err.is_throttled() {
                Signal::Throttled
            } else {
                Signal::Neutral
            },
        ),
    };
    if let Some(headers) = headers {
        apply_throttle_headers(limiter, status, headers);
    }
    limiter.observe(signal);
}

/// Pauses the host on `Retry-After` (429/503) or `X-RateLimit-Remaining: 0`.
fn apply_throttle_headers(limiter: &HostLimiter, status: Option<u16>, headers: &HeaderMap) {
    let now = SystemTime::now();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if matches!(status, Some(429 | 503)) {
        if let Some(d) = header("retry-after").and_then(|v| parse_retry_after(v, now)) {
            limiter.pause_for(d);
            return;
        }
    }
    if header("x-ratelimit-remaining").map(str::trim) == Some("0") {
        if let Some(d) = header("x-ratelimit-reset").and_then(|v| parse_rate_limit_reset(v, now)) {
            limiter.pause_for(d);
        }
    }
}
