//! Signing id_tokens and verifying `private_key_jwt` client assertions.
//!
//! The id_token key is a fixed 2048-bit RSA test key embedded in the crate (RS256, kid
//! `sim-id-token-1`): generating RSA keys at start-up is slow in debug builds and a fixed key
//! keeps runs reproducible. It is a simulator key and must never protect anything real.

use std::collections::HashSet;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use serde::{Deserialize, Serialize};

const ID_TOKEN_KEY_PEM: &[u8] = include_bytes!("../keys/id_token_rsa.pem");
pub const ID_TOKEN_JWKS: &str = include_str!("../keys/id_token_jwks.json");
const ID_TOKEN_KID: &str = "sim-id-token-1";

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    fhir_user: Option<&'a str>,
}

pub struct IdTokenInput<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub client_id: &'a str,
    pub nonce: Option<&'a str>,
    pub fhir_user: Option<&'a str>,
    pub now: i64,
    pub lifetime: i64,
}

pub fn sign_id_token(i: &IdTokenInput<'_>) -> Result<String, String> {
    let key = EncodingKey::from_rsa_pem(ID_TOKEN_KEY_PEM).map_err(|e| e.to_string())?;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(ID_TOKEN_KID.to_string());
    let claims = IdClaims {
        iss: i.iss,
        sub: i.sub,
        aud: i.client_id,
        exp: i.now + i.lifetime,
        iat: i.now,
        nonce: i.nonce,
        fhir_user: i.fhir_user,
    };
    encode(&header, &claims, &key).map_err(|e| e.to_string())
}

#[derive(Deserialize)]
struct AssertionClaims {
    sub: String,
    jti: Option<String>,
    exp: i64,
}

/// Check a client assertion as SMART Backend Services requires: RS384 or ES384 signature by a
/// key in the client's JWKS, iss = sub = client_id, aud = token endpoint, unexpired, exp at
/// most five minutes ahead, jti never seen before.
pub fn verify_client_assertion(
    jwks: &JwkSet,
    assertion: &str,
    client_id: &str,
    token_url: &str,
    seen_jti: &mut HashSet<String>,
    now: i64,
) -> Result<(), String> {
    let header =
        decode_header(assertion).map_err(|e| format!("malformed client_assertion: {e}"))?;
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(format!(
            "client_assertion alg {:?} not accepted (RS384 or ES384)",
            header.alg
        ));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid),
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    }
    .ok_or("no key in the registered JWKS matches the assertion's kid")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWK: {e}"))?;
    let mut v = Validation::new(header.alg);
    v.set_audience(&[token_url]);
    v.set_issuer(&[client_id]);
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    v.leeway = 5;
    let data = decode::<AssertionClaims>(assertion, &key, &v)
        .map_err(|e| format!("client_assertion rejected: {e}"))?;
    if data.claims.sub != client_id {
        return Err("client_assertion sub must equal client_id".into());
    }
    if data.claims.exp > now + 300 {
        return Err("client_assertion exp more than five minutes ahead".into());
    }
    let jti = data.claims.jti.ok_or("client_assertion without jti")?;
    if !seen_jti.insert(format!("{client_id}\u{0}{jti}")) {
        return Err("client_assertion jti replayed".into());
    }
    Ok(())
}
