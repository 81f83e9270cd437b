//! The SMART client: the three launch flows, refresh, revocation, the audit and the scope check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aqueduct_core::{AuthEvent, ConnectionRef, Finding, Store};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::discovery::{Discovery, SmartConfiguration, trim_base};
use crate::error::{DecryptCause, IdTokenProblem, SmartError};
use crate::idtoken::{DEFAULT_LEEWAY_SECS, IdTokenClaims, fetch_jwks, verify_id_token};
use crate::scopes::{Flow, GrantedScopes, ScopeContext, ScopeVersion, compute_scopes};
use crate::secret::SecretString;
use crate::token::{
    ClientAuth, ClientCredentials, LaunchContext, RedirectParams, TokenAuthMethod, TokenResponse,
    choose_auth_method, revoke_request, token_request,
};
use crate::vault::{Vault, VaultKey, names};

/// How the `aud` parameter of the authorization request is built (a vendor quirk).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AudRule {
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

impl AudRule {
    pub fn value(&self, base_url: &str) -> Option<String> {
        match self {
            AudRule::BaseUrl => Some(trim_base(base_url).to_string()),
            AudRule::BaseUrlTrailingSlash => Some(format!("{}/", trim_base(base_url))),
            AudRule::Omit => None,
            AudRule::Custom(s) => Some(s.clone()),
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
    pub aud: AudRule,
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
            aud: AudRule::BaseUrl,
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

/// Tokens of one connection as the vault holds them (JSON, encrypted). `Debug` redacts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub requested_scopes: Vec<String>,
    pub granted_scopes: GrantedScopes,
    pub context: LaunchContext,
    pub flow: Flow,
}

impl TokenSet {
    /// True when less than max(60 s, 10 % of the lifetime) is left.
    pub fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        let lifetime = (self.expires_at - self.issued_at).num_seconds().max(0);
        let margin = (lifetime / 10).max(60).min(lifetime / 2).max(1);
        (self.expires_at - now).num_seconds() < margin
    }
}

/// The authorization URL to send the user to, and its state.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub url: String,
    pub state: String,
    pub connection: ConnectionRef,
    pub redirect_uri: String,
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

/// What a pending authorization needs at the callback. Kept in the vault (encrypted, under
/// the connection) so that any process sharing the store can complete the launch.
#[derive(Serialize, Deserialize)]
struct Pending {
    base_url: String,
    verifier: SecretString,
    nonce: Option<String>,
    redirect_uri: String,
    created_at: DateTime<Utc>,
    requested_scopes: Vec<String>,
    flow: Flow,
}

/// Vault names of pending authorizations start with this.
pub const PENDING_PREFIX: &str = "pending-auth:";

fn pending_name(state: &str) -> String {
    let digest = Sha256::digest(state.as_bytes());
    format!("{PENDING_PREFIX}{}", &hex::encode(digest)[..32])
}

fn random_token(bytes: usize) -> Result<String, SmartError> {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf)
        .map_err(|_| SmartError::Crypto("random generator failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
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

/// RFC 9207 mix-up protection: an authorization response that names its issuer must name
/// this server's (the advertised `issuer`, else the FHIR base URL); one without `iss` is
/// refused when the server advertises that it always sends it. Checked before the code is
/// used and before an error response is believed.
fn check_response_issuer(
    cfg: &SmartConfiguration,
    base_url: &str,
    params: &RedirectParams,
) -> Result<(), SmartError> {
    match params.iss.as_deref() {
        Some(received) => {
            let ok = match &cfg.issuer {
                Some(issuer) => received == issuer,
                None => same_base(received, base_url),
            };
            if ok {
                Ok(())
            } else {
                Err(SmartError::IssuerMismatch {
                    expected: cfg
                        .issuer
                        .clone()
                        .unwrap_or_else(|| trim_base(base_url).to_string()),
                    received: received.chars().take(300).collect(),
                })
            }
        }
        None if cfg.authorization_response_iss_parameter_supported => {
            Err(SmartError::IssuerMissing {
                base_url: trim_base(base_url).to_string(),
            })
        }
        None => Ok(()),
    }
}

/// PKCE S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
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

    // --- audit -----------------------------------------------------------------------------

    /// Records an auth event; a store failure here is logged, not raised.
    pub async fn audit(&self, conn: &ConnectionRef, event: &str, result: &Result<(), &SmartError>) {
        let (outcome, reason) = match result {
            Ok(()) => ("success", None),
            Err(e) => ("failure", Some(format!("{}: {}", e.kind(), e))),
        };
        self.audit_raw(conn, event, outcome, reason).await;
    }

    async fn audit_raw(
        &self,
        conn: &ConnectionRef,
        event: &str,
        outcome: &str,
        reason: Option<String>,
    ) {
        let ev = AuthEvent {
            at: Utc::now(),
            event: event.to_string(),
            outcome: outcome.to_string(),
            reason,
        };
        if let Err(e) = self.store().record_auth_event(conn, &ev).await {
            tracing::warn!(connection = %conn, event, error = %e, "could not record auth event");
        }
    }

    async fn audited<T>(
        &self,
        conn: &ConnectionRef,
        event: &str,
        r: Result<T, SmartError>,
    ) -> Result<T, SmartError> {
        match &r {
            Ok(_) => self.audit(conn, event, &Ok(())).await,
            Err(e) => self.audit(conn, event, &Err(e)).await,
        }
        r
    }

    /// Audits a flow outcome; a success records the flow, granted scopes and uncovered types
    /// (never a token).
    async fn audited_auth(
        &self,
        conn: &ConnectionRef,
        event: &str,
        r: Result<Authorized, SmartError>,
    ) -> Result<Authorized, SmartError> {
        match &r {
            Ok(a) => {
                let mut reason = format!(
                    "{}; granted: {}",
                    a.flow.as_str(),
                    a.granted_scopes.to_scope_string()
                );
                if !a.uncovered_types.is_empty() {
                    reason.push_str(&format!("; not covered: {}", a.uncovered_types.join(", ")));
                }
                self.audit_raw(conn, event, "success", Some(reason)).await;
            }
            Err(e) => self.audit(conn, event, &Err(e)).await,
        }
        r
    }

    // --- stored tokens -----------------------------------------------------------------------

    pub async fn load_tokens(&self, conn: &ConnectionRef) -> Result<Option<TokenSet>, SmartError> {
        match self.vault.get(conn, names::TOKENS).await? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|_| SmartError::VaultDecrypt {
                        connection: conn.to_string(),
                        secret: names::TOKENS.into(),
                        cause: DecryptCause::Unreadable,
                    })
            }
        }
    }

    async fn save_tokens(&self, conn: &ConnectionRef, set: &TokenSet) -> Result<(), SmartError> {
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec(set).map_err(|e| SmartError::Crypto(e.to_string()))?,
        );
        self.vault.put(conn, names::TOKENS, &bytes).await
    }

    /// Deletes the stored tokens of a connection (no server call).
    pub async fn forget(&self, conn: &ConnectionRef) -> Result<bool, SmartError> {
        self.vault.delete(conn, names::TOKENS).await
    }

    /// The connection's private signing key from the vault, generated and stored on first
    /// use. Publish `jwks(&[key])` (or register it) with the server.
    pub async fn ensure_signing_key(
        &self,
        conn: &ConnectionRef,
        alg: crate::keys::KeyAlgorithm,
    ) -> Result<crate::keys::SigningKey, SmartError> {
        if let Some(k) = self.vault.get_private_key(conn).await? {
            return Ok(k);
        }
        let k = crate::keys::generate_key(alg)?;
        self.vault.put_private_key(conn, &k).await?;
        self.audit_raw(
            conn,
            "key-generated",
            "success",
            Some(format!("{} key {}", alg.as_str(), k.kid())),
        )
        .await;
        Ok(k)
    }

    // --- user-facing flows -------------------------------------------------------------------

    /// Starts a standalone patient launch: discovery, PKCE S256, state, nonce; returns the
    /// authorization URL.
    pub async fn begin_standalone(
        &self,
        c: &SmartConnection,
        redirect_uri: &str,
    ) -> Result<AuthorizationRequest, SmartError> {
        let r = self.begin(c, redirect_uri, None).await;
        self.audited(&c.conn, "authorize", r).await
    }

    /// Starts an EHR launch: `iss` must be the base URL of one of `connections` of
    /// `organization`, otherwise the launch is refused.
    pub async fn begin_ehr_launch(
        &self,
        organization: &str,
        connections: &[SmartConnection],
        iss: &str,
        launch: &str,
        redirect_uri: &str,
    ) -> Result<AuthorizationRequest, SmartError> {
        let Some(c) = connections
            .iter()
            .find(|c| c.conn.organization == organization && same_base(&c.base_url, iss))
        else {
            tracing::warn!(organization, iss = %iss.chars().take(200).collect::<String>(), "EHR launch from unknown issuer refused");
            return Err(SmartError::UnknownIssuer {
                organization: organization.to_string(),
                iss: iss.chars().take(200).collect(),
            });
        };
        if launch.is_empty() {
            let r = Err(SmartError::InvalidRedirect("empty launch parameter".into()));
            return self.audited(&c.conn, "ehr-launch", r).await;
        }
        let r = self.begin(c, redirect_uri, Some(launch)).await;
        self.audited(&c.conn, "ehr-launch", r).await
    }

    async fn begin(
        &self,
        c: &SmartConnection,
        redirect_uri: &str,
        launch: Option<&str>,
    ) -> Result<AuthorizationRequest, SmartError> {
        let cfg = self.discovery.get(&c.base_url).await?;
        let flow = if launch.is_some() {
            Flow::EhrLaunch
        } else {
            Flow::Standalone
        };
        let unsupported = |what: &str| SmartError::Unsupported {
            base_url: c.base_url.clone(),
            what: what.to_string(),
        };
        let authorize = cfg
            .authorization_endpoint
            .clone()
            .ok_or_else(|| unsupported("an authorization endpoint"))?;
        if !cfg.supports_s256() {
            return Err(unsupported("PKCE S256"));
        }
        if !cfg.allows_grant("authorization_code") {
            return Err(unsupported("the authorization_code grant"));
        }
        let cap = match flow {
            Flow::EhrLaunch => "launch-ehr",
            _ => "launch-standalone",
        };
        if !cfg.capabilities.is_empty() && !cfg.has_capability(cap) {
            return Err(unsupported(cap));
        }
        if !cfg.capabilities.is_empty() {
            let client_cap = match c.credentials {
                ClientCredentials::Public => "client-public",
                ClientCredentials::Secret(_) => "client-confidential-symmetric",
                ClientCredentials::PrivateKey(_) => "client-confidential-asymmetric",
            };
            // Advisory only: servers list capabilities incompletely.
            if !cfg.has_capability(client_cap) {
                tracing::warn!(connection = %c.conn, capability = client_cap, "server does not advertise this client type");
            }
            if flow == Flow::Standalone
                && !c.user_scopes
                && !cfg.has_capability("context-standalone-patient")
            {
                tracing::warn!(connection = %c.conn, "server does not advertise context-standalone-patient");
            }
        }
        let scopes = c.scopes_for(flow, &cfg);
        let state = random_token(32)?;
        let verifier = SecretString::new(random_token(48)?);
        let nonce = if scopes.iter().any(|s| s == "openid") {
            Some(random_token(24)?)
        } else {
            None
        };
        let mut url = url::Url::parse(&authorize).map_err(|e| SmartError::Discovery {
            base_url: c.base_url.clone(),
            reason: format!("authorization endpoint is not a URL: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &c.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &scopes.join(" "))
                .append_pair("state", &state)
                .append_pair("code_challenge", &pkce_challenge(verifier.expose()))
                .append_pair("code_challenge_method", "S256");
            if let Some(aud) = c.aud.value(&c.base_url) {
                q.append_pair("aud", &aud);
            }
            if let Some(l) = launch {
                q.append_pair("launch", l);
            }
            if let Some(n) = &nonce {
                q.append_pair("nonce", n);
            }
        }
        self.purge_expired_pending(&c.conn.organization).await;
        let record = Pending {
            base_url: c.base_url.clone(),
            verifier,
            nonce,
            redirect_uri: redirect_uri.to_string(),
            created_at: Utc::now(),
            requested_scopes: scopes,
            flow,
        };
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec(&record).map_err(|e| SmartError::Crypto(e.to_string()))?,
        );
        self.vault
            .put(&c.conn, &pending_name(&state), &bytes)
            .await?;
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|_, (_, at)| at.elapsed() < self.state_ttl);
            pending.insert(state.clone(), (c.conn.clone(), Instant::now()));
        }
        Ok(AuthorizationRequest {
            url: url.to_string(),
            state,
            connection: c.conn.clone(),
            redirect_uri: redirect_uri.to_string(),
        })
    }

    /// Deletes pending authorizations of an organization older than the state lifetime.
    async fn purge_expired_pending(&self, organization: &str) {
        let Ok(all) = self.store().list_secrets(organization).await else {
            return;
        };
        for (connection, name, _) in all {
            if !name.starts_with(PENDING_PREFIX) {
                continue;
            }
            let conn = ConnectionRef::new(organization, connection);
            let expired = match self.vault.get(&conn, &name).await {
                Ok(Some(b)) => serde_json::from_slice::<Pending>(&b)
                    .map(|p| {
                        (Utc::now() - p.created_at).to_std().unwrap_or_default() >= self.state_ttl
                    })
                    .unwrap_or(true),
                Ok(None) => false,
                // another key's leftovers: not ours to judge
                Err(_) => false,
            };
            if expired {
                let _ = self.vault.delete(&conn, &name).await;
            }
        }
    }

    /// The connection a pending `state` was issued for (to route a shared redirect URI).
    pub fn pending_connection(&self, state: &str) -> Option<ConnectionRef> {
        self.pending
            .lock()
            .ok()
            .and_then(|p| p.get(state).map(|(conn, _)| conn.clone()))
    }

    /// Completes a standalone or EHR launch from the redirect parameters: checks the state
    /// (single use, unexpired, bound to this connection), exchanges the code with the PKCE
    /// verifier, verifies the id_token, records granted scopes and stores the tokens.
    pub async fn complete(
        &self,
        c: &SmartConnection,
        params: &RedirectParams,
    ) -> Result<Authorized, SmartError> {
        let r = self.complete_inner(c, params).await;
        self.audited_auth(&c.conn, "token-exchange", r).await
    }

    async fn complete_inner(
        &self,
        c: &SmartConnection,
        params: &RedirectParams,
    ) -> Result<Authorized, SmartError> {
        let state = params
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SmartError::InvalidRedirect("no state".into()))?;
        let name = pending_name(state);
        let issued_for = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(state))
            .map(|(conn, _)| conn);
        if let Some(expected) = issued_for
            && expected != c.conn
        {
            // consume it: a state is good for one attempt only
            let _ = self.vault.delete(&expected, &name).await;
            return Err(SmartError::StateMismatch {
                expected_connection: expected.to_string(),
                actual_connection: c.conn.to_string(),
            });
        }
        let bytes = self
            .vault
            .get(&c.conn, &name)
            .await?
            .ok_or(SmartError::UnknownState)?;
        // Single use across processes: only the caller whose delete removed it goes on.
        if !self.vault.delete(&c.conn, &name).await? {
            return Err(SmartError::UnknownState);
        }
        let p: Pending = serde_json::from_slice(&bytes).map_err(|_| SmartError::VaultDecrypt {
            connection: c.conn.to_string(),
            secret: name.clone(),
            cause: DecryptCause::Unreadable,
        })?;
        let age = (Utc::now() - p.created_at).to_std().unwrap_or_default();
        if age >= self.state_ttl {
            return Err(SmartError::StateExpired {
                max_age_secs: self.state_ttl.as_secs(),
            });
        }
        if trim_base(&p.base_url) != trim_base(&c.base_url) {
            return Err(SmartError::StateMismatch {
                expected_connection: format!("{} at {}", c.conn, p.base_url),
                actual_connection: format!("{} at {}", c.conn, c.base_url),
            });
        }
        let cfg = self.discovery.get(&c.base_url).await?;
        check_response_issuer(&cfg, &c.base_url, params)?;
        let (code, _) = params.code_and_state()?;
        let method = choose_auth_method(&c.credentials, c.auth_method, &cfg)?;
        let form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", p.redirect_uri.clone()),
            ("code_verifier", p.verifier.expose().to_string()),
        ];
        let auth = ClientAuth {
            client_id: &c.client_id,
            creds: &c.credentials,
            method,
        };
        let resp = token_request(&self.http, &cfg, &auth, form).await?;
        if p.flow == Flow::Standalone
            && c.require_patient
            && p.requested_scopes.iter().any(|s| s == "launch/patient")
            && resp.context.patient.is_none()
        {
            return Err(SmartError::MissingField("patient"));
        }
        let claims = if p.requested_scopes.iter().any(|s| s == "openid") {
            let id_token = resp
                .id_token
                .as_ref()
                .ok_or(SmartError::IdToken(IdTokenProblem::Missing))?;
            Some(
                self.verify_id(&cfg, c, id_token, p.nonce.as_deref())
                    .await?,
            )
        } else {
            None
        };
        let mut resp = resp;
        if resp.context.fhir_user.is_none() {
            resp.context.fhir_user = claims.as_ref().and_then(|c| c.fhir_user.clone());
        }
        self.finish(c, p.flow, p.requested_scopes, resp, claims, None)
            .await
    }

    async fn verify_id(
        &self,
        cfg: &SmartConfiguration,
        c: &SmartConnection,
        id_token: &SecretString,
        nonce: Option<&str>,
    ) -> Result<IdTokenClaims, SmartError> {
        let base = trim_base(&c.base_url).to_string();
        let jwks_uri = match cfg.jwks_uri.clone() {
            Some(u) => u,
            None => {
                self.openid_jwks_uri(cfg.issuer.as_deref().unwrap_or(&base))
                    .await?
            }
        };
        let jwks = fetch_jwks(&self.http, &jwks_uri).await?;
        let issuers = match &cfg.issuer {
            Some(i) => vec![i.clone()],
            None => vec![base.clone(), format!("{base}/")],
        };
        verify_id_token(
            id_token.expose(),
            &jwks,
            &issuers,
            &c.client_id,
            nonce,
            self.leeway_secs,
        )
    }

    /// The `jwks_uri` of the issuer's OpenID configuration, when smart-configuration has none.
    async fn openid_jwks_uri(&self, issuer: &str) -> Result<String, SmartError> {
        let url = format!("{}/.well-known/openid-configuration", trim_base(issuer));
        let fail = |reason: String| SmartError::JwksFetch {
            url: url.clone(),
            reason,
        };
        let resp = self
            .http
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| fail(format!("no jwks_uri advertised; {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(fail(format!(
                "no jwks_uri advertised; openid-configuration answered HTTP {}",
                resp.status().as_u16()
            )));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("jwks_uri")
                    .and_then(|u| u.as_str())
                    .map(str::to_string)
            })
            .ok_or_else(|| {
                fail("no jwks_uri in smart-configuration nor openid-configuration".into())
            })
            .and_then(|u| {
                crate::discovery::require_secure(issuer, "openid-configuration jwks_uri", &u)?;
                Ok(u)
            })
    }

    /// Stores a token response, records granted scopes and scope-narrowed findings.
    async fn finish(
        &self,
        c: &SmartConnection,
        flow: Flow,
        requested: Vec<String>,
        resp: TokenResponse,
        claims: Option<IdTokenClaims>,
        previous: Option<&TokenSet>,
    ) -> Result<Authorized, SmartError> {
        let now = Utc::now();
        let granted = match &resp.scope {
            Some(s) => GrantedScopes::parse(s),
            None => match previous {
                Some(p) => p.granted_scopes.clone(),
                // RFC 6749 5.1: no scope in the response means the requested scope.
                None => GrantedScopes::from_list(&requested),
            },
        };
        let requested_types: Vec<String> = if c.scope_override.is_some() {
            Vec::new()
        } else {
            c.resource_types.clone()
        };
        let uncovered = granted.uncovered(&requested_types);
        let mut context = resp.context.clone();
        if let Some(prev) = previous {
            // A refresh response usually omits the launch context: keep what we had.
            let pc = &prev.context;
            context.patient = context.patient.or_else(|| pc.patient.clone());
            context.encounter = context.encounter.or_else(|| pc.encounter.clone());
            context.fhir_user = context.fhir_user.or_else(|| pc.fhir_user.clone());
            context.need_patient_banner = context.need_patient_banner.or(pc.need_patient_banner);
            context.smart_style_url = context
                .smart_style_url
                .or_else(|| pc.smart_style_url.clone());
            context.intent = context.intent.or_else(|| pc.intent.clone());
            context.tenant = context.tenant.or_else(|| pc.tenant.clone());
        }
        let set = TokenSet {
            access_token: resp.access_token,
            refresh_token: resp
                .refresh_token
                .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            id_token: resp
                .id_token
                .or_else(|| previous.and_then(|p| p.id_token.clone())),
            issued_at: now,
            expires_at: now + chrono::Duration::seconds(resp.expires_in.min(10 * 365 * 86400)),
            requested_scopes: requested.clone(),
            granted_scopes: granted.clone(),
            context: context.clone(),
            flow,
        };
        self.save_tokens(&c.conn, &set).await?;
        let previously_uncovered: Vec<String> = previous
            .map(|p| p.granted_scopes.uncovered(&requested_types))
            .unwrap_or_default();
        for t in &uncovered {
            if previously_uncovered.contains(t) {
                continue;
            }
            let finding = Finding {
                at: now,
                run_id: None,
                kind: "scope-narrowed".into(),
                severity: "warning".into(),
                resource_type: Some(t.clone()),
                detail: format!(
                    "{} access to {t} was requested but the granted scopes do not cover it (granted: {})",
                    flow.as_str(),
                    granted.to_scope_string()
                ),
            };
            if let Err(e) = self.store().record_finding(&c.conn, &finding).await {
                tracing::warn!(connection = %c.conn, error = %e, "could not record scope finding");
            }
        }
        Ok(Authorized {
            connection: c.conn.clone(),
            flow,
            context,
            requested_scopes: requested,
            granted_scopes: granted,
            uncovered_types: uncovered,
            expires_at: set.expires_at,
            id_token: claims,
            has_refresh_token: set.refresh_token.is_some(),
        })
    }

    // --- backend services --------------------------------------------------------------------

    /// Backend services: a client_credentials grant with a `private_key_jwt` assertion (or a
    /// client secret when so configured); stores the token.
    pub async fn backend_token(&self, c: &SmartConnection) -> Result<Authorized, SmartError> {
        let r = self.backend_inner(c, None).await;
        self.audited_auth(&c.conn, "backend-token", r).await
    }

    async fn backend_inner(
        &self,
        c: &SmartConnection,
        previous: Option<&TokenSet>,
    ) -> Result<Authorized, SmartError> {
        let cfg = self.discovery.get(&c.base_url).await?;
        if !cfg.allows_grant("client_credentials") {
            return Err(SmartError::Unsupported {
                base_url: c.base_url.clone(),
                what: "the client_credentials grant".into(),
            });
        }
        if matches!(c.credentials, ClientCredentials::Public) {
            return Err(SmartError::Config(
                "backend services need a private key or a client secret".into(),
            ));
        }
        let method = choose_auth_method(&c.credentials, c.auth_method, &cfg)?;
        let scopes = c.scopes_for(Flow::Backend, &cfg);
        let form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("scope", scopes.join(" ")),
        ];
        let auth = ClientAuth {
            client_id: &c.client_id,
            creds: &c.credentials,
            method,
        };
        let resp = token_request(&self.http, &cfg, &auth, form).await?;
        self.finish(c, Flow::Backend, scopes, resp, None, previous)
            .await
    }

    // --- refresh and revocation --------------------------------------------------------------

    /// Refreshes the tokens of a connection (refresh_token grant with rotation, or a new
    /// client_credentials token for backend services). Failures are audited; a rejected
    /// refresh becomes `ReauthorizationNeeded`. Stored tokens are only replaced on success.
    pub async fn refresh(
        &self,
        c: &SmartConnection,
        current: &TokenSet,
    ) -> Result<TokenSet, SmartError> {
        let event = if current.flow == Flow::Backend {
            "backend-token"
        } else {
            "refresh"
        };
        let r = self.refresh_inner(c, current).await;
        let r = self.audited_auth(&c.conn, event, r).await;
        match r {
            Ok(_) => self
                .load_tokens(&c.conn)
                .await?
                .ok_or_else(|| SmartError::NotAuthorized {
                    connection: c.conn.to_string(),
                }),
            Err(
                e @ (SmartError::ReauthorizationNeeded { .. }
                | SmartError::Http { .. }
                | SmartError::TokenServerError { .. }
                | SmartError::Discovery { .. }
                | SmartError::Store(_)
                | SmartError::VaultDecrypt { .. }
                | SmartError::InsecureEndpoint { .. }),
            ) => Err(e),
            Err(e) => Err(SmartError::ReauthorizationNeeded {
                connection: c.conn.to_string(),
                reason: format!("{}: {e}", e.kind()),
            }),
        }
    }

    async fn refresh_inner(
        &self,
        c: &SmartConnection,
        current: &TokenSet,
    ) -> Result<Authorized, SmartError> {
        if current.flow == Flow::Backend {
            return self.backend_inner(c, Some(current)).await;
        }
        let refresh_token =
            current
                .refresh_token
                .as_ref()
                .ok_or_else(|| SmartError::ReauthorizationNeeded {
                    connection: c.conn.to_string(),
                    reason: "the access token is expiring and no refresh token was granted".into(),
                })?;
        let cfg = self.discovery.get(&c.base_url).await?;
        let method = choose_auth_method(&c.credentials, c.auth_method, &cfg)?;
        let form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token.expose().to_string()),
        ];
        let auth = ClientAuth {
            client_id: &c.client_id,
            creds: &c.credentials,
            method,
        };
        let resp = token_request(&self.http, &cfg, &auth, form).await?;
        self.finish(
            c,
            current.flow,
            current.requested_scopes.clone(),
            resp,
            None,
            Some(current),
        )
        .await
    }

    /// Revokes the stored tokens at the server (RFC 7009; refresh token first) and deletes
    /// them locally. Returns whether the server revoked anything (false when it has no
    /// revocation endpoint). If the server refuses, the stored tokens are kept.
    pub async fn revoke(&self, c: &SmartConnection) -> Result<bool, SmartError> {
        let r = self.revoke_inner(c).await;
        self.audited(&c.conn, "revoke", r).await
    }

    async fn revoke_inner(&self, c: &SmartConnection) -> Result<bool, SmartError> {
        let Some(set) = self.load_tokens(&c.conn).await? else {
            return Err(SmartError::NotAuthorized {
                connection: c.conn.to_string(),
            });
        };
        let cfg = self.discovery.get(&c.base_url).await?;
        let mut server = false;
        if let Some(endpoint) = cfg.revocation_endpoint.clone() {
            let auth = ClientAuth {
                client_id: &c.client_id,
                creds: &c.credentials,
                method: choose_auth_method(&c.credentials, c.auth_method, &cfg)?,
            };
            if let Some(rt) = &set.refresh_token {
                revoke_request(&self.http, &endpoint, &cfg, &auth, rt, "refresh_token").await?;
            }
            revoke_request(
                &self.http,
                &endpoint,
                &cfg,
                &auth,
                &set.access_token,
                "access_token",
            )
            .await?;
            server = true;
        }
        self.forget(&c.conn).await?;
        Ok(server)
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

    #[test]
    fn refresh_margin() {
        let now = Utc::now();
        let set = |life: i64| TokenSet {
            access_token: SecretString::new("a"),
            refresh_token: None,
            id_token: None,
            issued_at: now,
            expires_at: now + chrono::Duration::seconds(life),
            requested_scopes: vec![],
            granted_scopes: GrantedScopes::default(),
            context: LaunchContext::default(),
            flow: Flow::Standalone,
        };
        let hour = set(3600);
        assert!(!hour.needs_refresh(now + chrono::Duration::seconds(3200)));
        assert!(hour.needs_refresh(now + chrono::Duration::seconds(3250)));
        let ten = set(600);
        assert!(!ten.needs_refresh(now + chrono::Duration::seconds(530)));
        assert!(ten.needs_refresh(now + chrono::Duration::seconds(545)));
        assert!(set(1).needs_refresh(now + chrono::Duration::seconds(1)));
    }
}
