//! The authorization code flow the two user-facing launches share: the authorization URL
//! (PKCE S256, state, nonce, `aud`), the pending authorization kept in the vault so that any
//! process sharing the store can complete it, and the callback — state checked (single use,
//! unexpired, bound to the connection), RFC 9207 `iss` checked, code exchanged with the PKCE
//! verifier, id_token verified. A standalone launch starts here; an EHR launch starts in
//! `ehr_launch` once its issuer is known.

use std::time::Instant;

use aqueduct_core::ConnectionRef;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Authorized, SmartClient, SmartConnection, same_base};
use crate::discovery::{SmartConfiguration, trim_base};
use crate::error::{DecryptCause, IdTokenProblem, SmartError};
use crate::idtoken::{IdTokenClaims, fetch_jwks, verify_id_token};
use crate::scopes::Flow;
use crate::secret::SecretString;
use crate::token::{
    ClientAuth, ClientCredentials, RedirectParams, choose_auth_method, token_request,
};

/// The authorization URL to send the user to, and its state.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub url: String,
    pub state: String,
    pub connection: ConnectionRef,
    pub redirect_uri: String,
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

impl SmartClient {
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

    pub(super) async fn begin(
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
}
