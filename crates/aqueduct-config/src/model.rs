//! The shape of `aqueduct.toml`. Every table denies unknown keys so that a typo is an error
//! with its path, not a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, SecretRef};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub vault: VaultConfig,
    /// Opt-in for `{ value = "..." }` secrets; off by default so production files stay clean.
    #[serde(default)]
    pub allow_inline_secrets: bool,
    /// Organizations (tenants) by name.
    #[serde(default)]
    pub organizations: BTreeMap<String, OrganizationConfig>,
    /// Silent-failure detection thresholds (keys of the monitor's `MonitorConfig`).
    #[serde(default)]
    pub monitor: toml::Table,
    /// Alert rules (keys of the monitor's `AlertRules`).
    #[serde(default)]
    pub alerts: toml::Table,
    /// How `aqueduct run` works through schedules and refresh requests (keys of the engine's
    /// `EngineSettings`: poll interval, claim lease, retries).
    #[serde(default)]
    pub engine: toml::Table,
    /// How `aqueduct serve` listens and answers (keys of the serve layer's `ServeSettings`:
    /// bind address, page sizes, body limit, CORS origins).
    #[serde(default)]
    pub serve: toml::Table,
    /// Where alerts are posted, signed with HMAC-SHA256 when a secret is given.
    pub alert_webhook: Option<WebhookConfig>,
    /// Official terminology release files, used by every normalization (after each sync and
    /// by `aqueduct normalize`).
    #[serde(default)]
    pub terminology: TerminologyConfig,
    /// Where this configuration was read from, for errors found after parsing.
    #[serde(skip)]
    pub source: ConfigSource,
}

/// The file a configuration came from and the line of each of its keys.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The file name (or the origin given to [`crate::parse`]).
    pub origin: String,
    pub lines: crate::KeyLines,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TerminologyConfig {
    /// A directory holding any of Loinc.csv, RXNCONSO.RRF, RXNSAT.RRF, SNOMED CT RF2
    /// snapshots, icd10cm_order_*.txt and cvx.txt; loaded on top of the embedded tables.
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub secret: Option<SecretRef>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A SQLite file path (the default) or a `postgres://` URL.
    #[serde(default = "default_store")]
    pub location: String,
}

pub const DEFAULT_STORE: &str = "aqueduct-data/aqueduct.db";

fn default_store() -> String {
    DEFAULT_STORE.to_string()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            location: default_store(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// The 32-byte key (base64) that encrypts credentials at rest.
    pub key: Option<SecretRef>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationConfig {
    pub display_name: Option<String>,
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// The FHIR base URL.
    pub base_url: url::Url,
    /// The vendor profile ("generic", "epic", "cerner", ...).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Resource types this connection must retrieve (the workflow contract); empty = the
    /// profile's defaults.
    #[serde(default)]
    pub resource_types: Vec<String>,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Institution overrides of the vendor profile (same keys as a profile file).
    #[serde(default)]
    pub overrides: toml::Table,
    /// Refresh schedule, e.g. "every 6h", "daily 02:00"; none = on demand only.
    pub schedule: Option<Schedule>,
    /// HL7 v2 assigning authorities (the namespace in PID-3's CX.4, e.g. "HOSP") whose MRNs
    /// are this connection's patient identifiers, with the identifier system they have here
    /// (e.g. `HOSP = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"`): how an HL7 event that
    /// names a patient by a local MRN finds the patient at this connection.
    #[serde(default)]
    pub hl7_assigning_authorities: BTreeMap<String, String>,
}

fn default_profile() -> String {
    "generic".to_string()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthConfig {
    /// An open server (HAPI test servers...).
    #[default]
    None,
    /// A static bearer token.
    Bearer { token: SecretRef },
    /// SMART standalone patient launch (authorization code + PKCE).
    SmartStandalone {
        client_id: String,
        client_secret: Option<SecretRef>,
        scopes: Option<String>,
        /// Loopback port for the redirect listener (0 = any free port).
        #[serde(default)]
        redirect_port: u16,
    },
    /// SMART EHR launch (the EHR calls us with `iss` + `launch`).
    SmartEhr {
        client_id: String,
        client_secret: Option<SecretRef>,
        scopes: Option<String>,
    },
    /// SMART backend services (client_credentials + private_key_jwt).
    SmartBackend {
        client_id: String,
        /// PKCS#8 PEM private key.
        private_key: SecretRef,
        /// "RS384" or "ES384".
        #[serde(default = "default_alg")]
        algorithm: String,
        key_id: Option<String>,
        scopes: Option<String>,
        /// Keys replaced by a rotation: `/.well-known/jwks.json` on `aqueduct serve` keeps
        /// publishing each until its `published_until`, so assertions signed with it just
        /// before the rotation still verify at the EHR.
        #[serde(default)]
        retired_keys: Vec<RetiredKey>,
    },
    /// A confidential client with a shared secret, client_credentials grant.
    ClientCredentials {
        client_id: String,
        client_secret: SecretRef,
        scopes: Option<String>,
    },
}

/// A backend-services key replaced by a rotation, still published for a while.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredKey {
    /// PKCS#8 PEM private key (only its public half is published).
    pub private_key: SecretRef,
    /// "RS384" or "ES384".
    #[serde(default = "default_alg")]
    pub algorithm: String,
    pub key_id: Option<String>,
    /// RFC 3339 time after which the key is no longer published.
    pub published_until: chrono::DateTime<chrono::Utc>,
}

/// The algorithms a backend-services assertion may be signed with (SMART requires an
/// asymmetric key; HS256 and friends are refused).
pub const SIGNING_ALGORITHMS: &[&str] = &["RS384", "ES384"];

fn default_alg() -> String {
    "ES384".to_string()
}

/// A refresh schedule: `every <n><s|m|h|d>` or `daily HH:MM` (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Schedule {
    Every(std::time::Duration),
    DailyAt { hour: u8, minute: u8 },
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad =
            || format!("invalid schedule {s:?}: use \"every 6h\" (s, m, h, d) or \"daily 02:00\"");
        if let Some(rest) = s.strip_prefix("every ") {
            let rest = rest.trim();
            let (num, unit) =
                rest.split_at(rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
            let n: u64 = num.parse().map_err(|_| bad())?;
            let secs = match unit {
                "s" => n,
                "m" => n * 60,
                "h" => n * 3600,
                "d" => n * 86_400,
                _ => return Err(bad()),
            };
            if secs == 0 {
                return Err(bad());
            }
            return Ok(Schedule::Every(std::time::Duration::from_secs(secs)));
        }
        if let Some(rest) = s.strip_prefix("daily ") {
            let (h, m) = rest.trim().split_once(':').ok_or_else(bad)?;
            let hour: u8 = h.parse().map_err(|_| bad())?;
            let minute: u8 = m.parse().map_err(|_| bad())?;
            if hour > 23 || minute > 59 {
                return Err(bad());
            }
            return Ok(Schedule::DailyAt { hour, minute });
        }
        Err(bad())
    }
}

impl std::fmt::Display for Schedule {
    /// The form it is written in: `every 6h`, `daily 02:00`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(d) => {
                let s = d.as_secs();
                let (n, unit) = if s % 86_400 == 0 {
                    (s / 86_400, "d")
                } else if s % 3600 == 0 {
                    (s / 3600, "h")
                } else if s % 60 == 0 {
                    (s / 60, "m")
                } else {
                    (s, "s")
                };
                write!(f, "every {n}{unit}")
            }
            Schedule::DailyAt { hour, minute } => write!(f, "daily {hour:02}:{minute:02}"),
        }
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A connection found by name, with its organization.
pub struct FoundConnection<'a> {
    pub organization: &'a str,
    pub name: &'a str,
    pub config: &'a ConnectionConfig,
}

impl Config {
    /// A problem with the value at `path`, located at its line (or its table's). The message
    /// is kept on one line, so each problem is one line of output.
    pub fn problem(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.source.origin.clone(),
            line: self.source.lines.line(path),
            key: Some(path.join(".")),
            message: message
                .into()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// Checks what serde cannot: names, inline secrets, base URL schemes, key algorithms.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(s) = self.alert_webhook.as_ref().and_then(|w| w.secret.as_ref()) {
            if s.is_inline() && !self.allow_inline_secrets {
                return Err(self.problem(&["alert_webhook", "secret"], inline_msg()));
            }
        }
        if let Some(k) = &self.vault.key {
            if k.is_inline() && !self.allow_inline_secrets {
                return Err(self.problem(&["vault", "key"], inline_msg()));
            }
        }
        for (org, oc) in &self.organizations {
            check_name(org).map_err(|m| self.problem(&["organizations", org], m))?;
            for (name, cc) in &oc.connections {
                let path = ["organizations", org.as_str(), "connections", name.as_str()];
                let at = |field: &[&'static str]| -> Vec<&str> {
                    path.iter().chain(field).copied().collect()
                };
                check_name(name).map_err(|m| self.problem(&path, m))?;
                if !matches!(cc.base_url.scheme(), "http" | "https") {
                    return Err(self.problem(&at(&["base_url"]), "must be an http(s) URL"));
                }
                for (field, secret) in cc.auth.secrets() {
                    if secret.is_inline() && !self.allow_inline_secrets {
                        return Err(self.problem(&at(&["auth", field]), inline_msg()));
                    }
                }
                if let AuthConfig::SmartBackend { algorithm, .. } = &cc.auth {
                    let upper = algorithm.trim().to_ascii_uppercase();
                    if !SIGNING_ALGORITHMS.contains(&upper.as_str()) {
                        return Err(self.problem(
                            &at(&["auth", "algorithm"]),
                            format!(
                                "unsupported algorithm {algorithm:?}: backend services sign their assertion with an asymmetric key, {}",
                                SIGNING_ALGORITHMS.join(" or ")
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every secret reference of the file with its key path.
    pub fn secret_refs(&self) -> Vec<(Vec<String>, &SecretRef)> {
        let mut out = Vec::new();
        if let Some(k) = &self.vault.key {
            out.push((vec!["vault".to_string(), "key".to_string()], k));
        }
        if let Some(s) = self.alert_webhook.as_ref().and_then(|w| w.secret.as_ref()) {
            out.push((vec!["alert_webhook".to_string(), "secret".to_string()], s));
        }
        for (org, oc) in &self.organizations {
            for (name, cc) in &oc.connections {
                for (field, secret) in cc.auth.secrets() {
                    let path = ["organizations", org, "connections", name, "auth", field];
                    out.push((path.iter().map(|s| s.to_string()).collect(), secret));
                }
            }
        }
        out
    }

    /// What only the environment can answer: every secret reference must be readable now
    /// (its variable set and not empty, its file readable). Returns every problem, each with
    /// its key path and line; never a secret's value.
    pub fn check_environment(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        for (path, secret) in self.secret_refs() {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            match secret {
                SecretRef::Env(var) => match std::env::var_os(var) {
                    Some(v) if !v.is_empty() => {}
                    Some(_) => problems
                        .push(self.problem(&path, format!("environment variable {var} is empty"))),
                    None => problems.push(
                        self.problem(&path, format!("environment variable {var} is not set")),
                    ),
                },
                SecretRef::File(file) => {
                    if let Err(e) = std::fs::File::open(file) {
                        problems.push(self.problem(&path, format!("cannot read file {file}: {e}")));
                    }
                }
                SecretRef::Inline(_) => {}
            }
        }
        problems
    }

    /// Deserializes a free-form table of the file (`[monitor]`, `[alerts]`, whose keys belong
    /// to another crate) into that crate's type, with the key path and line of any unknown
    /// key or wrong type. `path` is where the table sits in the file.
    pub fn typed_table<T: serde::de::DeserializeOwned>(
        &self,
        path: &[&str],
        table: &toml::Table,
    ) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                use serde_path_to_error::Segment;
                let mut full: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                for seg in e.path().iter() {
                    match seg {
                        Segment::Seq { index } => full.push(index.to_string()),
                        Segment::Map { key } => full.push(key.clone()),
                        Segment::Enum { variant } => full.push(variant.clone()),
                        Segment::Unknown => {}
                    }
                }
                let full: Vec<&str> = full.iter().map(String::as_str).collect();
                self.problem(&full, e.inner().message().trim().to_string())
            },
        )
    }

    /// Finds a connection by `org/name`, or by bare name when it is unique.
    pub fn find_connection(&self, spec: &str) -> Result<FoundConnection<'_>, ConfigError> {
        let unknown = || ConfigError::UnknownConnection(spec.to_string());
        if let Some((org, name)) = spec.split_once('/') {
            let (org_key, oc) = self.organizations.get_key_value(org).ok_or_else(unknown)?;
            let (name_key, cc) = oc.connections.get_key_value(name).ok_or_else(unknown)?;
            return Ok(FoundConnection {
                organization: org_key,
                name: name_key,
                config: cc,
            });
        }
        let mut found = self.organizations.iter().flat_map(|(o, oc)| {
            oc.connections
                .get_key_value(spec)
                .map(|(n, cc)| FoundConnection {
                    organization: o,
                    name: n,
                    config: cc,
                })
        });
        match (found.next(), found.next()) {
            (Some(f), None) => Ok(f),
            _ => Err(unknown()),
        }
    }
}

fn inline_msg() -> String {
    "inline secret values are refused; use { env = \"VAR\" } or { file = \"path\" }, or set allow_inline_secrets = true".into()
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        ))
    }
}

impl AuthConfig {
    /// The secret references this auth method holds, by field name.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        match self {
            AuthConfig::None => vec![],
            AuthConfig::Bearer { token } => vec![("token", token)],
            AuthConfig::SmartStandalone { client_secret, .. }
            | AuthConfig::SmartEhr { client_secret, .. } => {
                client_secret.iter().map(|s| ("client_secret", s)).collect()
            }
            AuthConfig::SmartBackend {
                private_key,
                retired_keys,
                ..
            } => std::iter::once(("private_key", private_key))
                .chain(
                    retired_keys
                        .iter()
                        .map(|r| ("retired_keys.private_key", &r.private_key)),
                )
                .collect(),
            AuthConfig::ClientCredentials { client_secret, .. } => {
                vec![("client_secret", client_secret)]
            }
        }
    }
}
