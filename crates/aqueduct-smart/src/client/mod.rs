//! The SMART client: the three launch flows, refresh, revocation, the audit and the scope check.
//!
//! This module holds what the flows share: the [`SmartClient`] itself, a connection's settings
//! ([`SmartConnection`], with the `aud` it sends and the scopes it asks for), the outcome of a
//! flow ([`Authorized`]) and the base URL comparison. Each flow, the token lifecycle and the
//! audit live in their own submodule.

mod audit;
mod authorization_code;
mod backend;
mod ehr_launch;
mod tokens;

pub use authorization_code::{AuthorizationRequest, PENDING_PREFIX, pkce_challenge};
pub use tokens::TokenSet;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aqueduct_core::{ConnectionRef, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::discovery::{Discovery, SmartConfiguration, trim_base};
use crate::error::SmartError;
use crate::idtoken::{DEFAULT_LEEWAY_SECS, IdTokenClaims};
use crate::scopes::{Flow, GrantedScopes, ScopeContext, ScopeVersion, compute_scopes};
use crate::token::{ClientCredentials, LaunchContext, TokenAuthMethod};
use crate::vault::{Vault, VaultKey};

/// How the `aud` parameter of the authorization request is built (a vendor quirk).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AudienceParam {
    /// The FHIR base URL without a trailing slash (the default).
    #[default]
    BaseUrl,
    /// The FHIR base URL with a trailing slash.
    BaseUrlTrailingSlash,
    /// Do not send `aud` at all.
    Omit,
    /// Exactly this value.
    Custom(String),
}

impl AudienceParam {
    pub fn value(&self, base_url: &str) -> Option<String> {
        match self {
            AudienceParam::BaseUrl => Some(trim_base(base_url).to_string()),
            AudienceParam::BaseUrlTrailingSlash => Some(format!("{}/", trim_base(base_url))),
            AudienceParam::Omit => None,
            AudienceParam::Custom(s) => Some(s.clone()),
        }
    }
}

/// One connection's SMART settings. Vendor quirks arrive here as values.
#[derive(Debug, Clone)]
pub struct SmartConnection {
    pub conn: ConnectionRef,
    /// The FHIR base URL (also the expected EHR-launch `iss`).
    pub base_url: String,
    pub client_id: String,
    pub credentials: ClientCredentials,
    /// Force a token endpoint auth method; by default chosen from the server's list.
    pub auth_method: Option<TokenAuthMethod>,
    pub aud: AudienceParam,
    /// The resource types the connection needs to read (drives the scopes).
    pub resource_types: Vec<String>,
    /// Force v1 or v2 scope syntax; by default v2 when the server advertises `permission-v2`.
    pub scope_version: Option<ScopeVersion>,
    /// Use `user/` rather than `patient/` scopes for user-facing flows.
    pub user_scopes: bool,
    /// Ask for `openid fhirUser` (and verify the id_token).
    pub openid: bool,
    /// Ask for `offline_access` (a refresh token).
    pub offline_access: bool,
    /// Scopes added to the computed ones.
    pub extra_scopes: Vec<String>,
    /// Replace the computed scopes entirely.
    pub scope_override: Option<Vec<String>>,
    /// This connection uses backend services (client_credentials) rather than a user launch.
    pub backend_services: bool,
    /// A standalone launch that asked for `launch/patient` fails when no `patient` comes back.
    pub require_patient: bool,
}

impl SmartConnection {
    /// A public standalone-launch client with the defaults: aud = base URL, openid,
    /// offline_access, patient required.
    pub fn new(
        conn: ConnectionRef,
        base_url: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        SmartConnection {
            conn,
            base_url: base_url.into(),
            client_id: client_id.into(),
            credentials: ClientCredentials::Public,
            auth_method: None,
            aud: AudienceParam::BaseUrl,
            resource_types: Vec::new(),
            scope_version: None,
            user_scopes: false,
            openid: true,
            offline_access: true,
            extra_scopes: Vec::new(),
            scope_override: None,
            backend_services: false,
            require_patient: true,
        }
    }

    /// The scopes this connection asks for in `flow` against a server with `cfg`.
    pub fn scopes_for(&self, flow: Flow, cfg: &SmartConfiguration) -> Vec<String> {
        if let Some(s) = &self.scope_override {
            return s.clone();
        }
        let version = self.scope_version.unwrap_or(if cfg.supports_v2_scopes() {
            ScopeVersion::V2
        } else {
            ScopeVersion::V1
        });
        let context = match flow {
            Flow::Backend => ScopeContext::System,
            _ if self.user_scopes => ScopeContext::User,
            _ => ScopeContext::Patient,
        };
        let mut out = compute_scopes(
            &self.resource_types,
            context,
            version,
            flow,
            self.openid,
            self.offline_access,
        );
        for s in &self.extra_scopes {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }
}

/// The outcome of a successful flow.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub connection: ConnectionRef,
    pub flow: Flow,
    pub context: LaunchContext,
    pub requested_scopes: Vec<String>,
    pub granted_scopes: GrantedScopes,
    /// Requested resource types no granted scope covers (a "scope-narrowed" finding each).
    pub uncovered_types: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub id_token: Option<IdTokenClaims>,
    pub has_refresh_token: bool,
}

/// Whether two FHIR base URLs name the same endpoint: scheme and host compared without case,
/// default ports made explicit, trailing slashes ignored; the path compared exactly.
pub fn same_base(a: &str, b: &str) -> bool {
    match (url::Url::parse(a.trim()), url::Url::parse(b.trim())) {
        (Ok(x), Ok(y)) => {
            x.scheme() == y.scheme()
                && x.host_str().map(str::to_ascii_lowercase)
                    == y.host_str().map(str::to_ascii_lowercase)
                && x.port_or_known_default() == y.port_or_known_default()
                && x.path().trim_end_matches('/') == y.path().trim_end_matches('/')
                && x.query() == y.query()
                && x.username().is_empty()
                && y.username().is_empty()
        }
        _ => false,
    }
}

/// The SMART client shared by all connections of a process.
pub struct SmartClient {
    http: reqwest::Client,
    vault: Vault,
    discovery: Discovery,
    /// state -> (connection, issued at): routing and mismatch detection in this process.
    pending: Mutex<HashMap<String, (ConnectionRef, Instant)>>,
    state_ttl: Duration,
    leeway_secs: u64,
}

impl std::fmt::Debug for SmartClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartClient")
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

impl SmartClient {
    /// With a default HTTP client, 5-minute discovery cache and 10-minute state lifetime.
    pub fn new(store: Arc<dyn Store>, key: VaultKey) -> Result<SmartClient, SmartError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SmartError::Config(format!("HTTP client: {e}")))?;
        Ok(Self::with_parts(
            http,
            Vault::new(store, key),
            Duration::from_secs(300),
        ))
    }

    pub fn with_parts(http: reqwest::Client, vault: Vault, discovery_ttl: Duration) -> SmartClient {
        SmartClient {
            discovery: Discovery::new(http.clone(), discovery_ttl),
            http,
            vault,
            pending: Mutex::new(HashMap::new()),
            state_ttl: Duration::from_secs(600),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    /// How long an authorization `state` stays valid.
    pub fn set_state_ttl(&mut self, ttl: Duration) {
        self.state_ttl = ttl;
    }

    /// Clock skew allowed when checking id_token times.
    pub fn set_leeway_secs(&mut self, secs: u64) {
        self.leeway_secs = secs;
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.vault.store()
    }

    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A token manager for one connection over this client.
    pub fn token_manager(self: &Arc<Self>, connection: SmartConnection) -> crate::TokenManager {
        crate::TokenManager::new(self.clone(), connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_comparison() {
        assert!(same_base(
            "https://EHR.example/fhir/r4",
            "https://ehr.example:443/fhir/r4/"
        ));
        assert!(!same_base(
            "https://ehr.example/fhir/r4",
            "http://ehr.example/fhir/r4"
        ));
        assert!(!same_base(
            "https://ehr.example/fhir/r4",
            "https://ehr.example.evil/fhir/r4"
        ));
        assert!(!same_base(
            "https://ehr.example/fhir/r4",
            "https://ehr.example/fhir/R4"
        ));
        assert!(!same_base(
            "https://ehr.example/fhir",
            "https://user@ehr.example/fhir"
        ));
        assert!(!same_base("https://ehr.example/fhir", "not a url"));
    }
}
