//! Who is asking: API keys (`aqk_{id}_{secret}`), each bound to exactly one organization, or
//! bearer JWTs of configured issuers ([`crate::jwt`]).
//!
//! A key is 64 random bits of public id and 256 random bits of secret. The store keeps only the
//! SHA-256 of the secret (a fast hash is enough for a secret that cannot be guessed, and keeps
//! every request cheap); the whole key is shown once, when it is created. Verified keys are
//! cached for `key_cache_secs`, so a revocation takes effect within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aqueduct_core::{ApiKey, ApiScope, Store};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::problem::Problem;

const PREFIX: &str = "aqk_";

/// The caller of a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The one organization the caller may reach.
    pub organization: String,
    pub scope: ApiScope,
    /// For the audit log: `api-key:{id}`.
    pub name: String,
}

impl Principal {
    /// Refuses a caller whose scope is below `needed`.
    pub fn require(&self, needed: ApiScope) -> Result<(), Problem> {
        if self.scope >= needed {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this needs the {} scope; the key has {}",
                needed.as_str(),
                self.scope.as_str()
            )))
        }
    }
}

/// A new key for `organization`: the record to store and the whole key to show once.
pub fn generate_key(
    organization: &str,
    scope: ApiScope,
    label: Option<String>,
) -> Result<(ApiKey, String), aws_lc_rs::error::Unspecified> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut id)?;
    aws_lc_rs::rand::fill(&mut secret)?;
    let id = hex::encode(id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let key = ApiKey {
        id: id.clone(),
        organization: organization.to_string(),
        scope,
        label,
        secret_hash: hash_secret(&secret),
        created_at: chrono::Utc::now(),
        revoked_at: None,
    };
    Ok((key, format!("{PREFIX}{id}_{secret}")))
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits `aqk_{id}_{secret}`; None for anything else.
fn parse_key(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let valid = |p: &str, max: usize| {
        !p.is_empty()
            && p.len() <= max
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (valid(id, 32) && valid(secret, 128)).then_some((id, secret))
}

/// Verifies the credentials of requests against the store's keys.
pub struct Authenticator {
    store: Arc<dyn Store>,
    jwt: crate::jwt::JwtVerifier,
    ttl: Duration,
    cache: Mutex<HashMap<String, (ApiKey, Instant)>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, ttl: Duration, jwt: crate::jwt::JwtVerifier) -> Self {
        Self {
            store,
            jwt,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The key from `Authorization: Bearer aqk_…` or `X-API-Key: aqk_…`.
    fn presented(headers: &HeaderMap) -> Option<&str> {
        if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let v = v.trim();
            let scheme_len = "bearer ".len();
            if v.len() > scheme_len && v[..scheme_len].eq_ignore_ascii_case("bearer ") {
                return Some(v[scheme_len..].trim());
            }
            return None;
        }
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Problem> {
        let presented = Self::presented(headers).ok_or_else(|| {
            Problem::unauthorized("send an API key: Authorization: Bearer aqk_… (or X-API-Key)")
        })?;
        if !presented.starts_with(PREFIX) && self.jwt.is_configured() {
            return self.jwt.verify(presented).await;
        }
        let (id, secret) = parse_key(presented)
            .ok_or_else(|| Problem::unauthorized("the credential is not an Aqueduct API key"))?;
        let key = self.key(id).await?;
        let refused = || Problem::unauthorized("the API key is unknown or revoked");
        let key = key.ok_or_else(refused)?;
        let given = hash_secret(secret);
        if key.revoked_at.is_some()
            || aws_lc_rs::constant_time::verify_slices_are_equal(
                given.as_bytes(),
                key.secret_hash.as_bytes(),
            )
            .is_err()
        {
            return Err(refused());
        }
        Ok(Principal {
            organization: key.organization,
            scope: key.scope,
            name: format!("api-key:{}", key.id),
        })
    }

    async fn key(&self, id: &str) -> Result<Option<ApiKey>, Problem> {
        let now = Instant::now();
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, at)) = cache.get(id) {
                if now.duration_since(*at) < self.ttl {
                    return Ok(Some(k.clone()));
                }
            }
        }
        let key = self.store.get_api_key(id).await.map_err(Problem::store)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // unknown ids are not cached: a flood of made-up ids cannot grow the map
        match &key {
            Some(k) => {
                if cache.len() > 10_000 {
                    cache.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
                }
                cache.insert(id.to_string(), (k.clone(), now));
            }
            None => {
                cache.remove(id);
            }
        }
        Ok(key)
    }

    /// Forgets a key at once (after it was revoked through this server).
    pub fn forget(&self, id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_to_what_is_stored() {
        let (rec, whole) = generate_key("acme", ApiScope::Read, None).unwrap();
        let (id, secret) = parse_key(&whole).unwrap();
        assert_eq!(id, rec.id);
        assert_eq!(hash_secret(secret), rec.secret_hash);
        assert!(!rec.secret_hash.contains(secret));
    }

    #[test]
    fn anything_else_is_not_a_key() {
        for s in [
            "",
            "aqk_",
            "aqk__x",
            "aqk_abc",
            "Bearer x",
            "aqk_ab_c d",
            "aqk_ab_c/../",
        ] {
            assert!(parse_key(s).is_none(), "{s:?}");
        }
    }
}
