//! Where access tokens come from. The FHIR client asks [`AccessTokenSource::token`] before each
//! request and, on a 401, [`AccessTokenSource::on_unauthorized`] once with the rejected token.
//! Implementations: [`NoAuth`], [`StaticBearer`], the client-secret grant in `aqueduct-client`
//! and the SMART token manager in `aqueduct-smart`; none of them knows the others.

use async_trait::async_trait;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AuthError {
    /// The grant is gone (refresh token expired or revoked, consent withdrawn): a person or an
    /// administrator must authorize again. Syncs stop cleanly and can resume afterwards.
    #[error("re-authorization needed: {0}")]
    ReauthorizationNeeded(String),
    /// The token endpoint could not be reached or answered an error that may pass.
    #[error("token endpoint failure: {0}")]
    Transient(String),
    #[error("authorization failed: {0}")]
    Other(String),
}

#[async_trait]
pub trait AccessTokenSource: Send + Sync + 'static {
    /// The bearer token to send, or None for servers without authorization.
    async fn token(&self) -> Result<Option<String>, AuthError>;
    /// The server rejected `rejected` with 401: refresh and return a new token, or None when
    /// no better token can be had (the request then fails as re-authorization needed).
    async fn on_unauthorized(&self, rejected: &str) -> Result<Option<String>, AuthError>;
    /// The scopes the server actually granted with the current token, when known: a grant
    /// narrower than asked hides data behind empty answers, so callers check it.
    fn granted_scopes(&self) -> Option<Vec<String>> {
        None
    }
}

/// No authorization (open test servers).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

#[async_trait]
impl AccessTokenSource for NoAuth {
    async fn token(&self) -> Result<Option<String>, AuthError> {
        Ok(None)
    }
    async fn on_unauthorized(&self, _rejected: &str) -> Result<Option<String>, AuthError> {
        Ok(None)
    }
}

/// A fixed bearer token; it cannot be refreshed.
#[derive(Clone)]
pub struct StaticBearer(String);

impl StaticBearer {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for StaticBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticBearer(<redacted>)")
    }
}

#[async_trait]
impl AccessTokenSource for StaticBearer {
    async fn token(&self) -> Result<Option<String>, AuthError> {
        Ok(Some(self.0.clone()))
    }
    async fn on_unauthorized(&self, _rejected: &str) -> Result<Option<String>, AuthError> {
        Ok(None)
    }
}
