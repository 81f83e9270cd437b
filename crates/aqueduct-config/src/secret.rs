//! Secrets are referenced, not written into the config file.

use serde::{Deserialize, Deserializer, Serialize};

use crate::ConfigError;

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    Env(String),
    File(String),
    /// Only accepted when the file sets `allow_inline_secrets = true` (demos, tests).
    Inline(String),
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env:{v}"),
            SecretRef::File(p) => write!(f, "file:{p}"),
            SecretRef::Inline(_) => f.write_str("inline:<redacted>"),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            env: Option<String>,
            file: Option<String>,
            value: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Table(Table),
            Plain(serde::de::IgnoredAny),
        }
        match Form::deserialize(d)? {
            Form::Plain(_) => Err(serde::de::Error::custom(
                "a secret must be a reference: { env = \"VAR\" } or { file = \"path\" } (inline values need { value = \"...\" } and allow_inline_secrets = true)",
            )),
            Form::Table(Table {
                env: Some(v),
                file: None,
                value: None,
            }) => Ok(SecretRef::Env(v)),
            Form::Table(Table {
                env: None,
                file: Some(p),
                value: None,
            }) => Ok(SecretRef::File(p)),
            Form::Table(Table {
                env: None,
                file: None,
                value: Some(v),
            }) => Ok(SecretRef::Inline(v)),
            Form::Table(_) => Err(serde::de::Error::custom(
                "a secret takes exactly one of `env`, `file` or `value`",
            )),
        }
    }
}

impl SecretRef {
    /// Reads the secret's value now. `what` names it in errors (never the value).
    pub fn resolve(&self, what: &str) -> Result<String, ConfigError> {
        match self {
            SecretRef::Env(var) => std::env::var(var).map_err(|_| ConfigError::SecretEnvMissing {
                what: what.to_string(),
                var: var.clone(),
            }),
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| ConfigError::SecretFile {
                    what: what.to_string(),
                    path: path.clone(),
                    cause: e.to_string(),
                }),
            SecretRef::Inline(v) => Ok(v.clone()),
        }
    }

    pub fn is_inline(&self) -> bool {
        matches!(self, SecretRef::Inline(_))
    }
}
