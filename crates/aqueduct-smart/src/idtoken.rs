//! OpenID Connect id_token verification against the server's JWKS: signature, iss, aud, exp
//! (with a small leeway) and nonce.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::error::{IdTokenProblem, SmartError};

/// Clock skew allowed on exp/iat/nbf.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// A server's public keys, parsed leniently: keys of unknown type are skipped.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    pub fn parse(bytes: &[u8]) -> Result<Jwks, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no keys array")?;
        Ok(Jwks {
            keys: keys
                .iter()
                .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                .collect(),
        })
    }

    fn find(&self, kid: Option<&str>) -> Option<&Jwk> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

/// Fetches a JWKS.
pub(crate) async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<Jwks, SmartError> {
    let fail = |reason: String| SmartError::JwksFetch {
        url: url.to_string(),
        reason,
    };
    let resp = http
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(format!("HTTP {}", status.as_u16())));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    Jwks::parse(&body).map_err(fail)
}

/// The claims of a verified id_token that we keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: Option<String>,
    pub fhir_user: Option<String>,
    pub exp: i64,
}

/// Verifies an id_token. `issuers` are the accepted `iss` values; `audience` is our client_id.
pub fn verify_id_token(
    id_token: &str,
    jwks: &Jwks,
    issuers: &[String],
    audience: &str,
    nonce: Option<&str>,
    leeway_secs: u64,
) -> Result<IdTokenClaims, SmartError> {
    let bad = |p: IdTokenProblem| SmartError::IdToken(p);
    let header = jsonwebtoken::decode_header(id_token)
        .map_err(|e| bad(IdTokenProblem::Malformed(e.to_string())))?;
    let alg = header.alg;
    if !matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    ) {
        return Err(bad(IdTokenProblem::Algorithm(format!("{alg:?}"))));
    }
    let jwk = jwks
        .find(header.kid.as_deref())
        .ok_or_else(|| bad(IdTokenProblem::UnknownKey(header.kid.clone())))?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| bad(IdTokenProblem::Malformed(format!("unusable JWK: {e}"))))?;
    let mut validation = Validation::new(alg);
    validation.leeway = leeway_secs;
    validation.set_audience(&[audience]);
    validation.set_issuer(issuers);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Value>(id_token, &key, &validation).map_err(|e| {
        bad(match e.kind() {
            ErrorKind::InvalidSignature => IdTokenProblem::Signature,
            ErrorKind::ExpiredSignature => IdTokenProblem::Expired,
            ErrorKind::InvalidAudience => IdTokenProblem::Audience,
            ErrorKind::InvalidIssuer => IdTokenProblem::Issuer,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => IdTokenProblem::Audience,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => IdTokenProblem::Issuer,
            ErrorKind::MissingRequiredClaim(c) if c == "exp" => IdTokenProblem::Expired,
            ErrorKind::InvalidAlgorithm => IdTokenProblem::Algorithm(format!("{alg:?}")),
            other => IdTokenProblem::Malformed(format!("{other:?}")),
        })
    })?;
    let claims = data.claims;
    if let Some(expected) = nonce
        && claims.get("nonce").and_then(Value::as_str) != Some(expected)
    {
        return Err(bad(IdTokenProblem::Nonce));
    }
    Ok(IdTokenClaims {
        iss: claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        sub: claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string),
        fhir_user: claims
            .get("fhirUser")
            .or_else(|| claims.get("profile"))
            .and_then(Value::as_str)
            .map(str::to_string),
        exp: claims
            .get("exp")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
    })
}
