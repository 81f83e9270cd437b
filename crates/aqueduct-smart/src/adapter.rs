//! A [`TokenManager`] as an `AccessTokenSource` (the trait of `aqueduct-core`), so the FHIR
//! client can use it without either crate knowing the other.

use std::sync::Arc;

use aqueduct_core::{AccessTokenSource, AuthError};
use async_trait::async_trait;

use crate::error::SmartError;
use crate::manager::TokenManager;

/// A TokenManager seen as the FHIR client's token source.
#[derive(Debug, Clone)]
pub struct SmartTokenSource(pub Arc<TokenManager>);

/// How a SMART failure is reported to the FHIR client. A fatal failure (stored tokens the
/// vault cannot open, an insecure or mixed-up authorization server) is reported as
/// re-authorization needed, with its own message: no request of the run can succeed, so the
/// run stops and fails instead of collecting a partial record one refused request at a time.
pub fn to_auth_error(e: SmartError) -> AuthError {
    if e.needs_reauthorization() || e.is_fatal() {
        AuthError::ReauthorizationNeeded(e.to_string())
    } else if e.is_transient() {
        AuthError::Transient(e.to_string())
    } else {
        AuthError::Other(e.to_string())
    }
}

#[async_trait]
impl AccessTokenSource for SmartTokenSource {
    async fn token(&self) -> Result<Option<String>, AuthError> {
        self.0.access_token().await.map(Some).map_err(to_auth_error)
    }

    async fn on_unauthorized(&self, rejected: &str) -> Result<Option<String>, AuthError> {
        self.0
            .refresh_after_unauthorized(rejected)
            .await
            .map(Some)
            .map_err(to_auth_error)
    }
}
