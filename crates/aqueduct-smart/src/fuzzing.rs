//! The functions the fuzz targets in `fuzz/` call, public so that the committed corpus is
//! replayed by an ordinary test (CI builds no fuzzer). Each takes arbitrary bytes, as they
//! would arrive from a server, and must never panic.

use std::sync::OnceLock;

use crate::discovery::SmartConfiguration;
use crate::idtoken::{Jwks, verify_id_token};
use crate::keys::{KeyAlgorithm, generate_key, jwks};

/// Bases a discovered document is checked against: one remote, one loopback.
const BASES: &[&str] = &["https://ehr.example/fhir/r4", "http://127.0.0.1:8080/fhir"];

/// A `.well-known/smart-configuration` document or a CapabilityStatement: parsing, the
/// endpoint checks and every predicate the flows ask.
pub fn smart_configuration(data: &[u8]) {
    for parsed in [
        SmartConfiguration::parse(data),
        SmartConfiguration::parse_capability_statement(data),
    ] {
        let Ok(cfg) = parsed else { continue };
        for base in BASES {
            let mut c = cfg.clone();
            if c.check_endpoints(base).is_ok() {
                assert!(c.notices.len() <= c.endpoints().len());
            }
        }
        let _ = (
            cfg.supports_s256(),
            cfg.supports_v2_scopes(),
            cfg.allows_grant("authorization_code"),
            cfg.allows_auth_method("private_key_jwt"),
        );
        // what is cached and compared must survive a round trip
        if let Ok(bytes) = serde_json::to_vec(&cfg) {
            let back: Result<SmartConfiguration, _> = serde_json::from_slice(&bytes);
            assert_eq!(back.ok().as_ref(), Some(&cfg));
        }
    }
}

fn fixed_jwks() -> &'static Option<Jwks> {
    static KEYS: OnceLock<Option<Jwks>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = [KeyAlgorithm::RS384, KeyAlgorithm::ES384]
            .into_iter()
            .map(generate_key)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Jwks::parse(jwks(&keys).to_string().as_bytes()).ok()
    })
}

/// A JWKS document and an id_token, separated by the first newline (either may be empty or
/// garbage): the JWKS is parsed, and the token verified against it and against fixed keys.
pub fn id_token_and_jwks(data: &[u8]) {
    let (doc, token) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let token = String::from_utf8_lossy(token);
    let token = token.trim();
    let issuers = ["https://ehr.example/fhir".to_string()];
    if let Ok(set) = Jwks::parse(doc) {
        let _ = verify_id_token(token, &set, &issuers, "client", Some("n"), 60);
    }
    if let Some(set) = fixed_jwks() {
        let _ = verify_id_token(token, set, &issuers, "client", None, 60);
    }
}
