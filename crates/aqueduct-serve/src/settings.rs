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
    /// Dashboard sign-in with a password besides API keys: one organization, admin scope.
    pub dashboard_admin: Option<DashboardAdmin>,
    /// The address browsers and EHRs reach this server at (behind a proxy it is not `bind`):
    /// SMART launches redirect to `{public_url}/smart/callback`, which is what the EHR has
    /// registered. Default: `http(s)://{bind}`.
    pub public_url: Option<url::Url>,
}

/// `[serve.dashboard_admin]`: who signs in to the dashboard with a password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardAdmin {
    /// The organization the password signs in to (with the admin scope).
    pub organization: String,
    /// At least 12 characters, by reference (`{ env = "VAR" }` or `{ file = "path" }`).
    pub password: aqueduct_config::SecretRef,
}

/// The shortest admin password accepted.
pub const MIN_ADMIN_PASSWORD: usize = 12;

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
            dashboard_admin: None,
            public_url: None,
        }
    }
}

impl ServeSettings {
    /// The config's `[serve]` table, checked: an unknown key or a bad value is an error with
    /// its line.
    pub fn from_config(config: &Config) -> Result<Self, ServeError> {
        let s: ServeSettings = config.typed_table(&["serve"], &config.serve)?;
        s.check()?;
        if let Some(a) = &s.dashboard_admin {
            if a.password.is_inline() && !config.allow_inline_secrets {
                return Err(ServeError::Settings(
                    "[serve.dashboard_admin] password: inline secret values are refused; use { env = \"VAR\" } or { file = \"path\" }, or set allow_inline_secrets = true".into(),
                ));
            }
            if !config.organizations.is_empty()
                && !config.organizations.contains_key(&a.organization)
            {
                return Err(ServeError::Settings(format!(
                    "[serve.dashboard_admin] organization: no organization {:?} in the configuration",
                    a.organization
                )));
            }
            s.admin_password()?;
        }
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

    /// The dashboard's admin password, read now (an env var or a file may change); None
    /// without `[serve.dashboard_admin]`.
    pub fn admin_password(&self) -> Result<Option<String>, ServeError> {
        let Some(a) = &self.dashboard_admin else {
            return Ok(None);
        };
        let p = a.password.resolve("[serve.dashboard_admin] password")?;
        if p.chars().count() < MIN_ADMIN_PASSWORD {
            return Err(ServeError::Settings(format!(
                "[serve.dashboard_admin] password: at least {MIN_ADMIN_PASSWORD} characters"
            )));
        }
        Ok(Some(p))
    }

    pub fn is_tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}
