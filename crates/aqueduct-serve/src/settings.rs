//! `[serve]` in aqueduct.toml: where `aqueduct serve` listens and the limits it answers within.

use std::net::SocketAddr;
use std::path::PathBuf;

use aqueduct_config::Config;
use serde::Deserialize;

use crate::ServeError;

/// A certificate chain and its private key, as PEM bytes.
pub type TlsFiles = (Vec<u8>, Vec<u8>);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSettings {
    /// Where to listen. Loopback by default: patient data is not offered to the network
    /// unless someone asks for it.
    pub bind: SocketAddr,
    /// HTTPS: the certificate chain (PEM). With `tls_key`, plain HTTP is not served.
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP on a non-loopback address (behind a proxy that terminates TLS). Off by
    /// default: without it such a bind is refused.
    pub allow_plain_http: bool,
    /// Origins a browser may call the API from (CORS). Empty: no cross-origin access.
    pub cors_origins: Vec<String>,
    /// Request bodies above this are refused with 413.
    pub max_body_bytes: usize,
    /// `_count` (facade) and `limit` (API) above this are lowered to it.
    pub max_page_size: u32,
    /// The page size when none is asked for.
    pub default_page_size: u32,
    /// How long a verified API key is trusted before the store is asked again (a revoked
    /// key stops working within this time).
    pub key_cache_secs: u64,
    /// How old a connection overview or a source's freshness may be when served (they cost
    /// several store queries each); 0 computes them for every request.
    pub overview_cache_ms: u64,
    /// OAuth 2 issuers whose bearer JWTs are accepted besides API keys.
    pub jwt_issuers: Vec<crate::jwt::JwtIssuer>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_page_size: 1000,
            default_page_size: 50,
            key_cache_secs: 30,
            overview_cache_ms: 2000,
            jwt_issuers: Vec::new(),
        }
    }
}

impl ServeSettings {
    /// The config's `[serve]` table, checked: an unknown key or a bad value is an error with
    /// its line.
    pub fn from_config(config: &Config) -> Result<Self, ServeError> {
        let s: ServeSettings = config.typed_table(&["serve"], &config.serve)?;
        s.check()?;
        Ok(s)
    }

    pub fn check(&self) -> Result<(), ServeError> {
        if self.max_page_size == 0 || self.default_page_size == 0 {
            return Err(ServeError::Settings(
                "[serve] max_page_size and default_page_size must be at least 1".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ServeError::Settings(
                "[serve] tls_cert and tls_key go together: set both for HTTPS, or neither".into(),
            ));
        }
        if !self.bind.ip().is_loopback() && !self.allow_plain_http && self.tls_cert.is_none() {
            return Err(ServeError::Settings(format!(
                "[serve] bind = {} is not a loopback address: patient data would travel in plain HTTP; \
                 set tls_cert and tls_key, or put a TLS-terminating proxy in front and set allow_plain_http = true, or bind to 127.0.0.1",
                self.bind
            )));
        }
        for o in &self.cors_origins {
            if url::Url::parse(o).map(|u| u.origin().is_tuple()) != Ok(true) {
                return Err(ServeError::Settings(format!(
                    "[serve] cors_origins: {o:?} is not an origin like https://app.example.com"
                )));
            }
        }
        Ok(())
    }

    /// The certificate chain and key (PEM), read; None without TLS.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, ServeError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p)
                .map_err(|e| ServeError::Settings(format!("[serve] {what} = {}: {e}", p.display())))
        };
        Ok(Some((read(cert, "tls_cert")?, read(key, "tls_key")?)))
    }

    pub fn is_tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}
