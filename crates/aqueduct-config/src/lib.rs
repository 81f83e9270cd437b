//! Aqueduct configuration: one TOML file (`aqueduct.toml`) naming the store, the vault key,
//! and the organizations (tenants) with their connections — a FHIR base URL, a vendor profile
//! name, institution overrides, auth settings and a refresh schedule.
//!
//! This crate owns parsing and validating that file, with errors that name the key path and the
//! line. Secrets are references (`{ env = "NAME" }` or `{ file = "path" }`), never inline unless
//! the file opts in with `allow_inline_secrets = true`. It must not know what a profile contains
//! (overrides are carried as a raw TOML table and validated by the client crate), nor HTTP, nor
//! the store. Problems found after parsing (names, algorithms, unset secret variables, and the
//! tables other crates validate through [`Config::typed_table`] or [`Config::problem`]) carry
//! the key path and line too.

mod error;
#[doc(hidden)]
pub mod fuzzing;
mod model;
mod secret;
mod source;

pub use error::ConfigError;
pub use model::*;
pub use secret::SecretRef;
pub use source::KeyLines;

use std::path::{Path, PathBuf};

/// The environment variable that overrides the config file path.
pub const CONFIG_ENV: &str = "AQUEDUCT_CONFIG";
/// The default config file name, looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "aqueduct.toml";

/// Which file to read: an explicit flag wins, then `AQUEDUCT_CONFIG`, then `./aqueduct.toml`.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_CONFIG_FILE),
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        cause: e.to_string(),
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(origin, text, &e, None))?;
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        syntax_error(origin, text, e.inner(), Some(path))
    })?;
    config.source = ConfigSource {
        origin: origin.to_string(),
        lines: KeyLines::index(text),
    };
    config.validate()?;
    Ok(config)
}

fn syntax_error(
    origin: &str,
    text: &str,
    e: &toml::de::Error,
    path: Option<String>,
) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start));
    ConfigError::Invalid {
        origin: origin.to_string(),
        line,
        key: path.filter(|p| p != "."),
        message: e.message().trim().to_string(),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
