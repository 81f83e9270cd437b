//! Retries as a [`tower::retry::Policy`]: transient failures only (see
//! [`FetchError::is_transient`]), with the [`RetryPolicy`]'s exponential backoff and full
//! jitter between attempts, and one extra try at most for a timeout — each timeout is a whole
//! `timeout` of waiting, so a stalled server costs one more try, not one per retry.
//!
//! A `Retry-After` has already paused the host in the limiter layer below; the backoff here
//! comes on top and spreads the retries of many requests out. Each retry carries the next
//! attempt number, so the ledger and the answer say which try it was.

use tower::retry::{Policy, RetryLayer};

use super::Attempt;
use crate::client::FhirResponse;
use crate::error::{FetchError, FetchErrorKind};
use crate::retry::RetryPolicy;

/// The retry layer of a client: tower's retry machinery with [`TransientRetry`].
pub fn retry_layer(policy: RetryPolicy) -> RetryLayer<TransientRetry> {
    RetryLayer::new(TransientRetry::new(policy))
}

/// The decisions of the retry layer. tower clones it for every request, so the counts below
/// are per request.
#[derive(Debug, Clone)]
pub struct TransientRetry {
    policy: RetryPolicy,
    transient_failures: u32,
    timeouts: u32,
}

impl TransientRetry {
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            transient_failures: 0,
            timeouts: 0,
        }
    }
}

impl Policy<Attempt, FhirResponse, FetchError> for TransientRetry {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        attempt: &mut Attempt,
        result: &mut Result<FhirResponse, FetchError>,
    ) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        if !err.is_transient() {
            return None;
        }
        if err.kind == FetchErrorKind::Timeout {
            self.timeouts += 1;
            if self.timeouts > 1 {
                return None;
            }
        }
        self.transient_failures += 1;
        if self.transient_failures >= self.policy.max_attempts {
            return None;
        }
        // From the answer, not `attempt.number + 1`: a layer below may have made tries of
        // its own.
        attempt.number = err.attempts + 1;
        Some(tokio::time::sleep(
            self.policy.backoff(self.transient_failures),
        ))
    }

    fn clone_request(&mut self, attempt: &Attempt) -> Option<Attempt> {
        // Every FHIR read here is safe to repeat (GETs, and batch Bundles of reads).
        Some(attempt.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::client::FhirRequest;

    fn attempt() -> Attempt {
        Attempt::first(
            FhirRequest::new(url::Url::parse("http://h/fhir/Patient").unwrap()),
            None,
        )
    }

    fn failed(kind: FetchErrorKind, attempts: u32) -> Result<FhirResponse, FetchError> {
        let mut e = FetchError::new(kind, "http://h/fhir/Patient", "");
        e.attempts = attempts;
        Err(e)
    }

    #[tokio::test]
    async fn only_transient_failures_are_retried_and_numbered_on() {
        let mut p = TransientRetry::new(RetryPolicy::default());
        let mut a = attempt();
        assert!(
            p.retry(&mut a, &mut failed(FetchErrorKind::Http(404), 1))
                .is_none()
        );
        assert!(
            p.retry(&mut a, &mut failed(FetchErrorKind::Http(503), 1))
                .is_some()
        );
        assert_eq!(a.number, 2);
    }

    #[tokio::test]
    async fn a_second_timeout_ends_the_request() {
        let mut p = TransientRetry::new(RetryPolicy::default());
        let mut a = attempt();
        assert!(
            p.retry(&mut a, &mut failed(FetchErrorKind::Timeout, 1))
                .is_some()
        );
        assert!(
            p.retry(&mut a, &mut failed(FetchErrorKind::Connect, 2))
                .is_some()
        );
        assert!(
            p.retry(&mut a, &mut failed(FetchErrorKind::Timeout, 3))
                .is_none()
        );
    }

    #[tokio::test]
    async fn max_attempts_counts_the_first() {
        let mut p = TransientRetry::new(RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        });
        let mut a = attempt();
        assert!(
            p.retry(&mut a, &mut failed(FetchErrorKind::Http(500), 1))
                .is_some()
        );
        assert!(
            p.retry(&mut a, &mut failed(FetchErrorKind::Http(500), 2))
                .is_none()
        );
    }
}
