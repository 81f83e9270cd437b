//! OAuth 2 bearer JWTs from configured issuers (`[serve] jwt_issuers`), verified against each
//! issuer's JWKS: signature (RS256/384/512, PS256/384, ES256/384), `iss`, `aud`, `exp` and `nbf`.
//! The organization comes from a claim of the token (`org` by default) and the scope from
//! `scope`/`scp` (`aqueduct/read`, `aqueduct/write`, `aqueduct/admin`, the highest wins). The
//! JWKS is cached for five minutes and fetched again, at most every `jwks_refetch_secs`, when a token names
//! a key id it does not hold (a key rotation).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aqueduct_core::ApiScope;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Principal;
use crate::problem::Problem;

/// One trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Where its public keys are published.
    pub jwks_url: url::Url,
    /// The `aud` a token must carry to be accepted here.
    pub audience: String,
    /// The claim that names the one organization the token may reach.
    #[serde(default = "default_org_claim")]
    pub organization_claim: String,
    /// The least time between two fetches of the JWKS for an unknown key id (a token naming
    /// a key that does not exist cannot make the server hammer the issuer).
    #[serde(default = "default_refetch")]
    pub jwks_refetch_secs: u64,
}

fn default_refetch() -> u64 {
    30
}

fn default_org_claim() -> String {
    "org".into()
}

const JWKS_TTL: Duration = Duration::from_secs(300);

pub struct JwtVerifier {
    issuers: Vec<JwtIssuer>,
    http: reqwest::Client,
    jwks: Mutex<HashMap<String, (Instant, JwkSet)>>,
}

fn refused(why: impl Into<String>) -> Problem {
    Problem::unauthorized(why)
}

impl JwtVerifier {
    pub fn new(issuers: Vec<JwtIssuer>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            issuers,
            http,
            jwks: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_configured(&self) -> bool {
        !self.issuers.is_empty()
    }

    async fn fetch(&self, issuer: &JwtIssuer) -> Result<JwkSet, Problem> {
        let unavailable = |e: String| {
            tracing::warn!(issuer = %issuer.issuer, error = %e, "JWKS could not be fetched");
            Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "jwks-unavailable",
                "the token issuer's keys could not be fetched; try again",
            )
        };
        let resp = self
            .http
            .get(issuer.jwks_url.clone())
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("HTTP {}", resp.status())));
        }
        let bytes = resp.bytes().await.map_err(|e| unavailable(e.to_string()))?;
        if bytes.len() > 1024 * 1024 {
            return Err(unavailable("JWKS larger than 1 MiB".into()));
        }
        serde_json::from_slice(&bytes).map_err(|e| unavailable(e.to_string()))
    }

    /// The issuer's keys, fetched again when `kid` is unknown (at most every 30 s).
    async fn keys(&self, issuer: &JwtIssuer, kid: Option<&str>) -> Result<JwkSet, Problem> {
        let cached = {
            let map = self.jwks.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&issuer.issuer).cloned()
        };
        if let Some((at, set)) = &cached {
            let knows = kid.is_none_or(|k| set.find(k).is_some());
            let refetch_min = Duration::from_secs(issuer.jwks_refetch_secs);
            if at.elapsed() < JWKS_TTL && (knows || at.elapsed() < refetch_min) {
                return Ok(set.clone());
            }
        }
        let set = self.fetch(issuer).await?;
        self.jwks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(issuer.issuer.clone(), (Instant::now(), set.clone()));
        Ok(set)
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, Problem> {
        let header =
            decode_header(token).map_err(|_| refused("the bearer token is not a valid JWT"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::ES256
                | Algorithm::ES384
        ) {
            return Err(refused(format!(
                "JWT algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let mut last = refused("no configured issuer accepts this token");
        for issuer in &self.issuers {
            let set = self.keys(issuer, header.kid.as_deref()).await?;
            let jwk = match header.kid.as_deref() {
                Some(k) => set.find(k),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            };
            let Some(jwk) = jwk else {
                last = refused("the token's signing key is not in the issuer's JWKS");
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                last = refused("the issuer's key cannot verify this token");
                continue;
            };
            let mut v = Validation::new(header.alg);
            v.set_issuer(&[&issuer.issuer]);
            v.set_audience(&[&issuer.audience]);
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            let claims = match decode::<Value>(token, &key, &v) {
                Ok(d) => d.claims,
                Err(e) => {
                    last = refused(format!("the token was refused: {e}"));
                    continue;
                }
            };
            return principal(issuer, &claims);
        }
        Err(last)
    }
}

fn principal(issuer: &JwtIssuer, claims: &Value) -> Result<Principal, Problem> {
    let org = claims[&issuer.organization_claim]
        .as_str()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| {
            Problem::forbidden(format!(
                "the token names no organization (claim {:?})",
                issuer.organization_claim
            ))
        })?;
    let scopes: Vec<String> = match (&claims["scope"], &claims["scp"]) {
        (Value::String(s), _) => s.split_whitespace().map(str::to_string).collect(),
        (_, Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        (_, Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let scope = scopes
        .iter()
        .filter_map(|s| s.strip_prefix("aqueduct/").and_then(ApiScope::parse))
        .max()
        .ok_or_else(|| {
            Problem::forbidden("the token grants no Aqueduct scope (aqueduct/read, write or admin)")
        })?;
    let sub = claims["sub"].as_str().unwrap_or("");
    Ok(Principal {
        organization: org.to_string(),
        scope,
        name: format!("jwt:{}#{sub}", issuer.issuer),
    })
}
