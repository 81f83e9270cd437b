//! A token source for OAuth 2.0 `client_credentials` with a client secret. The trait every
//! token source implements ([`AccessTokenSource`]) lives in `aqueduct-core`, so SMART can
//! implement it without depending on this crate.

use async_trait::async_trait;

pub use aqueduct_core::token::{AccessTokenSource, AuthError, NoAuth, StaticBearer};

/// OAuth 2.0 `client_credentials` with a client secret (client_secret_post): the simplest
/// system-level grant, used by confidential payer and EHR clients and by tests and demos
/// against the simulator. The token is cached and renewed shortly before it expires and when
/// the server rejects it. (Backend services with a signed JWT live in the SMART crate.)
pub struct ClientSecretGrant {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    scope: String,
    current: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
    granted: std::sync::Mutex<Option<Vec<String>>>,
}

impl std::fmt::Debug for ClientSecretGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecretGrant")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(serde::Deserialize)]
struct SmartConfiguration {
    token_endpoint: String,
}

impl ClientSecretGrant {
    pub fn new(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        scope: impl Into<String>,
    ) -> Self {
        Self {
            http: crate::client::shared_http(),
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: scope.into(),
            current: tokio::sync::Mutex::new(None),
            granted: std::sync::Mutex::new(None),
        }
    }

    /// Discovers the token endpoint from `{fhir_base}/.well-known/smart-configuration`.
    pub async fn discover(
        fhir_base: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        scope: impl Into<String>,
    ) -> Result<Self, AuthError> {
        let url = format!(
            "{}/.well-known/smart-configuration",
            fhir_base.trim_end_matches('/')
        );
        let conf: SmartConfiguration = crate::client::shared_http()
            .get(&url)
            .send()
            .await
            .map_err(|e| AuthError::Transient(format!("GET {url}: {e}")))?
            .json()
            .await
            .map_err(|e| AuthError::Other(format!("{url} is not a SMART configuration: {e}")))?;
        Ok(Self::new(
            conf.token_endpoint,
            client_id,
            client_secret,
            scope,
        ))
    }

    async fn fetch(&self) -> Result<(String, std::time::Instant), AuthError> {
        let resp = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("scope", self.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| AuthError::Transient(format!("token endpoint {}: {e}", self.token_url)))?;
        let status = resp.status();
        if status.is_client_error() {
            return Err(AuthError::ReauthorizationNeeded(format!(
                "token endpoint {} refused the client credentials (HTTP {status})",
                self.token_url
            )));
        }
        if !status.is_success() {
            return Err(AuthError::Transient(format!(
                "token endpoint {}: HTTP {status}",
                self.token_url
            )));
        }
        let t: TokenResponse = resp.json().await.map_err(|e| {
            AuthError::Other(format!("token response from {}: {e}", self.token_url))
        })?;
        if let Some(scope) = &t.scope {
            *self.granted.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(scope.split_whitespace().map(str::to_string).collect());
        }
        // Renew at 90 % of the lifetime.
        let life = std::time::Duration::from_secs(t.expires_in.unwrap_or(300) * 9 / 10);
        Ok((t.access_token, std::time::Instant::now() + life))
    }
}

#[async_trait]
impl AccessTokenSource for ClientSecretGrant {
    async fn token(&self) -> Result<Option<String>, AuthError> {
        let mut cur = self.current.lock().await;
        if let Some((t, exp)) = cur.as_ref() {
            if *exp > std::time::Instant::now() {
                return Ok(Some(t.clone()));
            }
        }
        let fresh = self.fetch().await?;
        let t = fresh.0.clone();
        *cur = Some(fresh);
        Ok(Some(t))
    }

    async fn on_unauthorized(&self, rejected: &str) -> Result<Option<String>, AuthError> {
        let mut cur = self.current.lock().await;
        // Another request may already have renewed it.
        if let Some((t, _)) = cur.as_ref() {
            if t != rejected {
                return Ok(Some(t.clone()));
            }
        }
        let fresh = self.fetch().await?;
        let t = fresh.0.clone();
        *cur = Some(fresh);
        Ok(Some(t))
    }

    fn granted_scopes(&self) -> Option<Vec<String>> {
        self.granted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
