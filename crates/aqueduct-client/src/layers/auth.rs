//! Authorization: the layer that puts the connection's token on a request and, when the
//! server answers 401, asks the [`AccessTokenSource`] for a new one and tries once more.
//!
//! It is the outermost layer, outside retry, because its work is per request, not per
//! attempt: the token is fetched once (a token source that fails is not retried, and no
//! attempt is made, so nothing reaches the ledger), and the token is refreshed at most once
//! per request. A second 401 — or a source that cannot refresh — ends the request as
//! [`FetchErrorKind::ReauthorizationNeeded`]: someone must authorize again. The try after a
//! refresh goes down through the retry layer again, numbered on from the 401, with a retry
//! budget of its own (the chain before the layers shared one budget across the refresh).
//! The token rides in the [`Attempt`]; the transport presents it only to origins allowed to
//! receive it.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service, ServiceExt};

use super::{Attempt, BoxFuture};
use crate::auth::{AccessTokenSource, AuthError};
use crate::client::FhirResponse;
use crate::error::{FetchError, FetchErrorKind};

/// Adds [`Authorized`] with one token source.
#[derive(Clone)]
pub struct AuthLayer {
    source: Arc<dyn AccessTokenSource>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive()
    }
}

impl AuthLayer {
    pub fn new(source: Arc<dyn AccessTokenSource>) -> Self {
        Self { source }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized {
            inner,
            source: Arc::clone(&self.source),
        }
    }
}

/// See the [module](self) documentation.
#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    source: Arc<dyn AccessTokenSource>,
}

impl<S> Service<Attempt> for Authorized<S>
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

    fn call(&mut self, mut attempt: Attempt) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = Arc::clone(&self.source);
        Box::pin(async move {
            let token = source.token().await.map_err(|e| auth_error(&attempt, e))?;
            attempt.token = token.map(Arc::from);
            let mut err = match inner.call(attempt.clone()).await {
                Err(err) if err.kind == FetchErrorKind::Http(401) => err,
                done => return done,
            };
            let rejected = attempt.token.as_deref().unwrap_or_default();
            match source.on_unauthorized(rejected).await {
                Ok(Some(fresh)) => {
                    attempt.token = Some(Arc::from(fresh));
                    attempt.number = err.attempts + 1;
                    match inner.ready().await?.call(attempt).await {
                        Err(mut again) if again.kind == FetchErrorKind::Http(401) => {
                            again.kind = FetchErrorKind::ReauthorizationNeeded;
                            Err(again)
                        }
                        done => done,
                    }
                }
                Ok(None) => {
                    err.kind = FetchErrorKind::ReauthorizationNeeded;
                    Err(err)
                }
                Err(e) => {
                    err.kind = FetchErrorKind::Auth(e);
                    Err(err)
                }
            }
        })
    }
}

/// The token source failed before any attempt: zero attempts made.
fn auth_error(attempt: &Attempt, e: AuthError) -> FetchError {
    let mut err = FetchError::new(
        FetchErrorKind::Auth(e.clone()),
        attempt.request.url.as_str(),
        e.to_string(),
    );
    err.attempts = 0;
    err
}
