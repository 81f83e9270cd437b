//! What the vault holds for a connection and its lifecycle: the token set (stored encrypted,
//! `Debug` redacted) and when it needs refreshing, the signing key (generated on first use),
//! storing a token response with its granted scopes and scope-narrowed findings, refresh
//! (rotation, or a new client_credentials token for backend services) and RFC 7009
//! revocation.

use aqueduct_core::{ConnectionRef, Finding};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Authorized, SmartClient, SmartConnection};
use crate::error::{DecryptCause, SmartError};
use crate::idtoken::IdTokenClaims;
use crate::scopes::{Flow, GrantedScopes};
use crate::secret::SecretString;
use crate::token::{
    ClientAuth, LaunchContext, TokenResponse, choose_auth_method, revoke_request, token_request,
};
use crate::vault::names;

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

impl SmartClient {
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

    pub(super) async fn save_tokens(
        &self,
        conn: &ConnectionRef,
        set: &TokenSet,
    ) -> Result<(), SmartError> {
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

    /// Stores a token response, records granted scopes and scope-narrowed findings.
    pub(super) async fn finish(
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
