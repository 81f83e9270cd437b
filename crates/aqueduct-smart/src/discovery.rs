//! SMART discovery: `{base}/.well-known/smart-configuration`, falling back to the
//! CapabilityStatement `oauth-uris` security extension, cached for a short time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SmartError;

const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// What the server says about its authorization endpoints and abilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartConfiguration {
    pub issuer: Option<String>,
    pub jwks_uri: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: String,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub registration_endpoint: Option<String>,
    pub scopes_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub capabilities: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub revocation_endpoint: Option<String>,
    pub introspection_endpoint: Option<String>,
    pub management_endpoint: Option<String>,
    /// RFC 9207: the server puts `iss` on every authorization response, so one without it
    /// is refused.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// True when this came from the CapabilityStatement fallback (capabilities unknown).
    pub from_capability_statement: bool,
    /// What discovery noticed that is allowed but worth a finding (endpoints on another
    /// origin than the FHIR server). Filled by [`SmartConfiguration::check_endpoints`];
    /// the caller records them (see [`DiscoveryNotice::to_finding`]).
    #[serde(default)]
    pub notices: Vec<DiscoveryNotice>,
}

/// Something discovery noticed that does not stop authorization but that a person should
/// see: the sync layer stores each as a finding of its run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryNotice {
    /// The finding kind, e.g. `auth-endpoint-other-origin`.
    pub kind: String,
    /// `warning` or `info`.
    pub severity: String,
    /// Which field of the discovery document (e.g. `token_endpoint`).
    pub endpoint: String,
    pub url: String,
    pub detail: String,
}

/// The finding kind of an authorization endpoint on another origin than the FHIR server.
pub const OTHER_ORIGIN_NOTICE: &str = "auth-endpoint-other-origin";

impl DiscoveryNotice {
    /// As a store finding of `run_id` (None outside a run).
    pub fn to_finding(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        run_id: Option<i64>,
    ) -> aqueduct_core::Finding {
        aqueduct_core::Finding {
            at,
            run_id,
            kind: self.kind.clone(),
            severity: self.severity.clone(),
            resource_type: None,
            detail: self.detail.clone(),
        }
    }
}

/// Whether a URL's host is this machine (where plain http cannot be intercepted on a wire).
fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Refuses an endpoint that is not an absolute https URL (plain http only on loopback):
/// tokens, codes and client assertions must never cross a network in clear.
pub(crate) fn require_secure(
    base_url: &str,
    endpoint: &str,
    url: &str,
) -> Result<url::Url, SmartError> {
    let shown = || url.chars().take(300).collect::<String>();
    let u = url::Url::parse(url).map_err(|e| SmartError::Discovery {
        base_url: base_url.to_string(),
        reason: format!("{endpoint} {:?} is not an absolute URL: {e}", shown()),
    })?;
    match u.scheme() {
        "https" => Ok(u),
        "http" if is_loopback(&u) => Ok(u),
        _ => Err(SmartError::InsecureEndpoint {
            base_url: base_url.to_string(),
            endpoint: endpoint.to_string(),
            url: shown(),
        }),
    }
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn str_list(v: &Value, key: &str) -> Vec<String> {
    match v.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        // Some servers send a space-separated string instead of an array.
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

impl SmartConfiguration {
    /// Parses a `.well-known/smart-configuration` document. Lenient about shapes (a field of the
    /// wrong type is ignored) but a document without a token endpoint is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if !v.is_object() {
            return Err("not a JSON object".into());
        }
        let token_endpoint = opt_str(&v, "token_endpoint").ok_or("no token_endpoint")?;
        Ok(SmartConfiguration {
            issuer: opt_str(&v, "issuer"),
            jwks_uri: opt_str(&v, "jwks_uri"),
            authorization_endpoint: opt_str(&v, "authorization_endpoint"),
            token_endpoint,
            token_endpoint_auth_methods_supported: str_list(
                &v,
                "token_endpoint_auth_methods_supported",
            ),
            grant_types_supported: str_list(&v, "grant_types_supported"),
            registration_endpoint: opt_str(&v, "registration_endpoint"),
            scopes_supported: str_list(&v, "scopes_supported"),
            response_types_supported: str_list(&v, "response_types_supported"),
            capabilities: str_list(&v, "capabilities"),
            code_challenge_methods_supported: str_list(&v, "code_challenge_methods_supported"),
            revocation_endpoint: opt_str(&v, "revocation_endpoint"),
            introspection_endpoint: opt_str(&v, "introspection_endpoint"),
            management_endpoint: opt_str(&v, "management_endpoint"),
            authorization_response_iss_parameter_supported: v
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            from_capability_statement: false,
            notices: Vec::new(),
        })
    }

    /// Extracts the endpoints from a CapabilityStatement's `rest.security` `oauth-uris`
    /// extension.
    pub fn parse_capability_statement(bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let rests = v.get("rest").and_then(Value::as_array).ok_or("no rest")?;
        for rest in rests {
            let Some(exts) = rest
                .get("security")
                .and_then(|s| s.get("extension"))
                .and_then(Value::as_array)
            else {
                continue;
            };
            for ext in exts {
                if ext.get("url").and_then(Value::as_str) != Some(OAUTH_URIS) {
                    continue;
                }
                let mut found: HashMap<String, String> = HashMap::new();
                for inner in ext
                    .get("extension")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let (Some(url), Some(val)) = (
                        inner.get("url").and_then(Value::as_str),
                        inner.get("valueUri").and_then(Value::as_str),
                    ) {
                        found.insert(url.to_string(), val.to_string());
                    }
                }
                let Some(token) = found.get("token").cloned() else {
                    return Err("oauth-uris extension without a token URI".into());
                };
                return Ok(SmartConfiguration {
                    authorization_endpoint: found.get("authorize").cloned(),
                    token_endpoint: token,
                    registration_endpoint: found.get("register").cloned(),
                    revocation_endpoint: found.get("revoke").cloned(),
                    introspection_endpoint: found.get("introspect").cloned(),
                    management_endpoint: found.get("manage").cloned(),
                    from_capability_statement: true,
                    ..Default::default()
                });
            }
        }
        Err("no oauth-uris security extension".into())
    }

    /// Every endpoint the document names, by field name.
    pub fn endpoints(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![("token_endpoint", self.token_endpoint.as_str())];
        for (name, v) in [
            ("issuer", &self.issuer),
            ("jwks_uri", &self.jwks_uri),
            ("authorization_endpoint", &self.authorization_endpoint),
            ("registration_endpoint", &self.registration_endpoint),
            ("revocation_endpoint", &self.revocation_endpoint),
            ("introspection_endpoint", &self.introspection_endpoint),
            ("management_endpoint", &self.management_endpoint),
        ] {
            if let Some(u) = v {
                out.push((name, u.as_str()));
            }
        }
        out
    }

    /// Checks the endpoints against the FHIR base URL they were discovered from: each must be
    /// https (plain http only on a loopback host), else `InsecureEndpoint`; each on another
    /// origin than the FHIR server becomes a notice (replacing earlier notices).
    pub fn check_endpoints(&mut self, base_url: &str) -> Result<(), SmartError> {
        let base = url::Url::parse(base_url.trim()).map_err(|e| SmartError::Discovery {
            base_url: base_url.to_string(),
            reason: format!("the FHIR base URL is not a URL: {e}"),
        })?;
        let mut notices = Vec::new();
        for (endpoint, url) in self.endpoints() {
            let u = require_secure(base_url, endpoint, url)?;
            if u.origin() != base.origin() {
                let shown: String = url.chars().take(300).collect();
                notices.push(DiscoveryNotice {
                    kind: OTHER_ORIGIN_NOTICE.into(),
                    severity: "warning".into(),
                    endpoint: endpoint.to_string(),
                    url: shown.clone(),
                    detail: format!(
                        "the {endpoint} {shown} is on another origin than the FHIR server {}; tokens and credentials go there",
                        base.origin().ascii_serialization()
                    ),
                });
            }
        }
        self.notices = notices;
        Ok(())
    }

    pub fn has_capability(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }

    /// True when the server advertises SMART v2 scopes (`permission-v2`).
    pub fn supports_v2_scopes(&self) -> bool {
        self.has_capability("permission-v2")
    }

    /// Whether PKCE S256 may be used: required by SMART 2; refused only when the server lists
    /// its methods and S256 is not among them.
    pub fn supports_s256(&self) -> bool {
        self.code_challenge_methods_supported.is_empty()
            || self
                .code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256")
    }

    /// Whether a grant type is allowed (unknown when the server does not list them).
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types_supported.is_empty()
            || self.grant_types_supported.iter().any(|g| g == grant)
    }

    /// Whether a token endpoint auth method is allowed (unknown when not listed).
    pub fn allows_auth_method(&self, method: &str) -> bool {
        self.token_endpoint_auth_methods_supported.is_empty()
            || self
                .token_endpoint_auth_methods_supported
                .iter()
                .any(|m| m == method)
    }
}

/// Trims a FHIR base URL of its trailing slashes.
pub(crate) fn trim_base(base: &str) -> &str {
    base.trim_end_matches('/')
}

/// Discovery with a small per-base-URL cache.
pub struct Discovery {
    http: reqwest::Client,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Arc<SmartConfiguration>)>>,
}

impl Discovery {
    pub fn new(http: reqwest::Client, ttl: Duration) -> Self {
        Discovery {
            http,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every cached configuration.
    pub fn clear(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// The server's configuration: from the cache when younger than the TTL, else fetched.
    pub async fn get(&self, base_url: &str) -> Result<Arc<SmartConfiguration>, SmartError> {
        let key = trim_base(base_url).to_string();
        if let Ok(c) = self.cache.lock()
            && let Some((at, cfg)) = c.get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(cfg.clone());
        }
        let cfg = Arc::new(self.fetch(&key).await?);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, (Instant::now(), cfg.clone()));
        }
        Ok(cfg)
    }

    /// Fetches the configuration and checks its endpoints (https, other origins).
    async fn fetch(&self, base: &str) -> Result<SmartConfiguration, SmartError> {
        let mut cfg = self.fetch_document(base).await?;
        cfg.check_endpoints(base)?;
        for n in &cfg.notices {
            tracing::warn!(base, endpoint = %n.endpoint, url = %n.url, "SMART endpoint on another origin than the FHIR server");
        }
        Ok(cfg)
    }

    async fn fetch_document(&self, base: &str) -> Result<SmartConfiguration, SmartError> {
        let well_known = format!("{base}/.well-known/smart-configuration");
        let first = match self.get_bytes(&well_known, "application/json").await {
            Ok(bytes) => match SmartConfiguration::parse(&bytes) {
                Ok(cfg) => return Ok(cfg),
                Err(e) => format!("{well_known}: {e}"),
            },
            Err(e) => format!("{well_known}: {e}"),
        };
        tracing::debug!(base, reason = %first, "smart-configuration unusable, trying CapabilityStatement");
        let metadata = format!("{base}/metadata");
        let second = match self.get_bytes(&metadata, "application/fhir+json").await {
            Ok(bytes) => match SmartConfiguration::parse_capability_statement(&bytes) {
                Ok(cfg) => return Ok(cfg),
                Err(e) => format!("{metadata}: {e}"),
            },
            Err(e) => format!("{metadata}: {e}"),
        };
        Err(SmartError::Discovery {
            base_url: base.to_string(),
            reason: format!("{first}; {second}"),
        })
    }

    async fn get_bytes(&self, url: &str, accept: &str) -> Result<Vec<u8>, String> {
        let resp = self
            .http
            .get(url)
            .header("Accept", accept)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
    }
}
