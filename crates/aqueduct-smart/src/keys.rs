//! Our own signing keys for `private_key_jwt` (backend services and asymmetric confidential
//! clients): generation with aws-lc-rs, PKCS#8 PEM serialization for the vault, the public JWKS,
//! and the signed client assertion.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::SmartError;

/// The signature algorithms SMART backend services allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    RS384,
    ES384,
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = SmartError;
    fn from_str(s: &str) -> Result<Self, SmartError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "RS384" => Ok(KeyAlgorithm::RS384),
            "ES384" => Ok(KeyAlgorithm::ES384),
            other => Err(SmartError::Config(format!(
                "signing algorithm {other:?} not supported (RS384 or ES384)"
            ))),
        }
    }
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::RS384 => "RS384",
            KeyAlgorithm::ES384 => "ES384",
        }
    }

    fn jwt_alg(self) -> Algorithm {
        match self {
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::ES384 => Algorithm::ES384,
        }
    }
}

/// A private signing key with its key id. `Debug` never shows the key material.
#[derive(Clone)]
pub struct SigningKey {
    alg: KeyAlgorithm,
    kid: String,
    pem: Zeroizing<String>,
    public_jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("pem", &"<redacted>")
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    alg: KeyAlgorithm,
    kid: String,
    pem: String,
}

fn crypto(e: impl std::fmt::Display) -> SmartError {
    SmartError::Crypto(e.to_string())
}

fn pem_from_der(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// RFC 7638 thumbprint of a public JWK.
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => json!({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}),
        _ => json!({"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Generates a new key: RSA 2048 for RS384, P-384 for ES384. The kid is the JWK thumbprint.
pub fn generate_key(alg: KeyAlgorithm) -> Result<SigningKey, SmartError> {
    let der: Zeroizing<Vec<u8>> = match alg {
        KeyAlgorithm::RS384 => {
            use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
            let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(crypto)?;
            let der: Pkcs8V1Der<'static> = kp.as_der().map_err(crypto)?;
            Zeroizing::new(der.as_ref().to_vec())
        }
        KeyAlgorithm::ES384 => {
            let kp = aws_lc_rs::signature::EcdsaKeyPair::generate(
                &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            )
            .map_err(crypto)?;
            Zeroizing::new(kp.to_pkcs8v1().map_err(crypto)?.as_ref().to_vec())
        }
    };
    SigningKey::from_pkcs8_pem(alg, None, &pem_from_der(&der))
}

impl SigningKey {
    /// Loads a PKCS#8 PEM private key. Without a kid, the JWK thumbprint is used.
    pub fn from_pkcs8_pem(
        alg: KeyAlgorithm,
        kid: Option<String>,
        pem: &str,
    ) -> Result<SigningKey, SmartError> {
        let enc = Self::encoding_key_for(alg, pem)?;
        let jwk = Jwk::from_encoding_key(&enc, alg.jwt_alg()).map_err(crypto)?;
        let mut public_jwk = serde_json::to_value(&jwk).map_err(crypto)?;
        let kid = kid.unwrap_or_else(|| thumbprint(&public_jwk));
        if let Some(obj) = public_jwk.as_object_mut() {
            obj.insert("kid".into(), Value::String(kid.clone()));
            obj.insert("alg".into(), Value::String(alg.as_str().into()));
            obj.insert("use".into(), Value::String("sig".into()));
        }
        Ok(SigningKey {
            alg,
            kid,
            pem: Zeroizing::new(pem.to_string()),
            public_jwk,
        })
    }

    fn encoding_key_for(alg: KeyAlgorithm, pem: &str) -> Result<EncodingKey, SmartError> {
        match alg {
            KeyAlgorithm::RS384 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            KeyAlgorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
        }
        .map_err(|e| SmartError::Crypto(format!("unusable {} private key: {e}", alg.as_str())))
    }

    pub fn alg(&self) -> KeyAlgorithm {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 PEM (secret: store it only through the vault).
    pub fn to_pkcs8_pem(&self) -> &str {
        &self.pem
    }

    /// The public half as a JWK (with kid, alg and use).
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// Serialized form for the vault (JSON with alg, kid and PEM).
    pub fn to_vault_bytes(&self) -> Zeroizing<Vec<u8>> {
        let stored = StoredKey {
            alg: self.alg,
            kid: self.kid.clone(),
            pem: self.pem.to_string(),
        };
        Zeroizing::new(serde_json::to_vec(&stored).unwrap_or_default())
    }

    pub fn from_vault_bytes(bytes: &[u8]) -> Result<SigningKey, SmartError> {
        let stored: StoredKey = serde_json::from_slice(bytes)
            .map_err(|e| SmartError::Crypto(format!("stored key unreadable: {e}")))?;
        let pem = Zeroizing::new(stored.pem);
        SigningKey::from_pkcs8_pem(stored.alg, Some(stored.kid), &pem)
    }

    /// A `private_key_jwt` client assertion: iss = sub = client_id, aud = the token endpoint,
    /// a fresh random jti and an expiry `lifetime_secs` ahead (capped at 300).
    pub fn client_assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        lifetime_secs: i64,
    ) -> Result<String, SmartError> {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": token_endpoint,
            "exp": now + lifetime_secs.clamp(1, 300),
            "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let mut header = Header::new(self.alg.jwt_alg());
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let key = Self::encoding_key_for(self.alg, &self.pem)?;
        jsonwebtoken::encode(&header, &claims, &key).map_err(crypto)
    }
}

/// The public JWKS for a set of keys, as served at our `jwks_uri` or registered with a server.
pub fn jwks(keys: &[SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_sign_verify_both_algs() {
        for alg in [KeyAlgorithm::RS384, KeyAlgorithm::ES384] {
            let k = generate_key(alg).expect("generate");
            assert!(k.to_pkcs8_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
            let set = jwks(std::slice::from_ref(&k));
            let jwk: Jwk = serde_json::from_value(set["keys"][0].clone()).expect("jwk");
            let jwt = k
                .client_assertion("client-1", "https://as.example/token", 300)
                .expect("sign");
            let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("dk");
            let mut val = jsonwebtoken::Validation::new(alg.jwt_alg());
            val.set_audience(&["https://as.example/token"]);
            let data = jsonwebtoken::decode::<Value>(&jwt, &dk, &val).expect("verify");
            assert_eq!(data.claims["iss"], "client-1");
            assert_eq!(data.header.kid.as_deref(), Some(k.kid()));
            let back = SigningKey::from_vault_bytes(&k.to_vault_bytes()).expect("reload");
            assert_eq!(back.kid(), k.kid());
            assert!(!format!("{k:?}").contains("PRIVATE"));
        }
    }
}
