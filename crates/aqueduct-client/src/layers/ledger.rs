//! Every attempt reaches the ledger: the layer that reports one [`LedgerEntry`] per attempt to
//! the attempt's [`RequestObserver`], failed attempts included, with the attempt number.
//!
//! It sits inside the limiter (the time spent waiting for the host is not the server's) and
//! outside classification (the entry says what the answer really was: `html-200`, not 200).
//! The observer travels with the [`Attempt`], not in the layer, so that
//! [`FhirClient::with_observer`](crate::FhirClient::with_observer) costs a pointer copy and
//! the stack is built once per client.

use std::task::{Context, Poll};
use std::time::Instant;

use aqueduct_core::LedgerEntry;
use chrono::Utc;
use tower::{Layer, Service};

use super::{Attempt, BoxFuture};
use crate::client::{FhirResponse, RequestObserver};
use crate::error::FetchError;

/// Adds [`Ledger`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LedgerLayer;

impl<S> Layer<S> for LedgerLayer {
    type Service = Ledger<S>;

    fn layer(&self, inner: S) -> Ledger<S> {
        Ledger { inner }
    }
}

/// See the [module](self) documentation.
#[derive(Debug, Clone)]
pub struct Ledger<S> {
    inner: S,
}

impl<S> Service<Attempt> for Ledger<S>
where
    S: Service<Attempt, Response = FhirResponse, Error = FetchError>,
    S::Future: Send + 'static,
{
    type Response = FhirResponse;
    type Error = FetchError;
    type Future = BoxFuture<Result<FhirResponse, FetchError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let Some(observer) = attempt.observer.clone() else {
            // Nobody listens: no entry to build.
            return Box::pin(self.inner.call(attempt));
        };
        let mut entry = entry_for(&attempt);
        let started = Instant::now();
        let answer = self.inner.call(attempt);
        Box::pin(async move {
            let result = answer.await;
            record(&mut entry, started, &result, &*observer);
            result
        })
    }
}

/// The entry of an attempt about to be sent; the outcome is filled in by [`record`].
fn entry_for(attempt: &Attempt) -> LedgerEntry {
    let req = &*attempt.request;
    LedgerEntry {
        at: Utc::now(),
        method: if req.body.is_some() { "POST" } else { "GET" }.into(),
        url_template: req.derived_template(),
        url: req.url.to_string(),
        resource_type: req.resource_type.clone(),
        patient_id: req.patient_id.clone(),
        status: None,
        duration_ms: 0.0,
        bytes: 0,
        resources: 0,
        error_kind: None,
        page_complete: false,
        attempt: attempt.number,
    }
}

fn record(
    entry: &mut LedgerEntry,
    started: Instant,
    result: &Result<FhirResponse, FetchError>,
    observer: &dyn RequestObserver,
) {
    entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(resp) => {
            entry.status = Some(resp.status);
            entry.bytes = resp.body.len() as u64;
            entry.resources = resp.resources;
            entry.page_complete = true;
        }
        Err(err) => {
            entry.status = err.status;
            entry.bytes = err.bytes();
            entry.error_kind = Some(err.kind_code());
        }
    }
    observer.on_attempt(entry);
}
