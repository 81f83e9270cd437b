//! Vendor personalities: quirks as data. Each built-in personality is a TOML file embedded in
//! the crate; a custom one can be loaded from disk. Server code reads these fields and never
//! branches on a personality's name.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::SimError;

const BUILT_IN: &[(&str, &str)] = &[
    ("reference", include_str!("../personalities/reference.toml")),
    ("epic", include_str!("../personalities/epic.toml")),
    ("cerner", include_str!("../personalities/cerner.toml")),
    ("athena", include_str!("../personalities/athena.toml")),
    ("payer", include_str!("../personalities/payer.toml")),
];

/// A built-in personality by name, or a personality TOML file by path.
pub fn load(name_or_path: &str) -> Result<Personality, SimError> {
    if BUILT_IN.iter().any(|(n, _)| *n == name_or_path) {
        return Personality::built_in(name_or_path);
    }
    if name_or_path.ends_with(".toml") || std::path::Path::new(name_or_path).is_file() {
        let text =
            std::fs::read_to_string(name_or_path).map_err(|source| SimError::PersonalityFile {
                path: name_or_path.to_string(),
                source,
            })?;
        return Personality::from_toml(&text);
    }
    Err(SimError::UnknownPersonality(name_or_path.to_string()))
}

/// Names of the personalities embedded in the crate.
pub fn built_in_names() -> Vec<&'static str> {
    BUILT_IN.iter().map(|(n, _)| *n).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdStyle {
    /// `pat-000001`, `obs-000001-0003`
    Readable,
    /// long base32-ish strings, like Epic FHIR ids
    Opaque,
    /// decimal numbers, like Cerner Millennium ids
    Numeric,
    /// `a-1234.E-5678` style, practice-prefixed
    Prefixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PagingStyle {
    /// Opaque session cursors held by the server (Epic-like).
    Cursor,
    /// Stateless offsets in the next link (HAPI / Cerner-like).
    Offset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AudRule {
    Exact,
    TrailingSlash,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RateSignal {
    RetryAfter,
    XRatelimit,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownParams {
    Reject,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnauthorizedType {
    /// 403 with an OperationOutcome.
    Forbidden,
    /// 200 with an empty searchset: the silent failure.
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScopeStyle {
    V1,
    V2,
    Both,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TypeRule {
    /// Search parameters that work (besides the common `_count`, `_lastUpdated`, `_id`, ...).
    #[serde(default)]
    pub search: Vec<String>,
    /// A search must carry at least one of these, else 400.
    #[serde(default)]
    pub required_any: Vec<String>,
    /// When set, a `category` outside this list is rejected with 400.
    #[serde(default)]
    pub allowed_categories: Option<Vec<String>>,
    /// A filter silently applied when the parameter is absent (athena's `intent`).
    #[serde(default)]
    pub default_filter: Option<(String, String)>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Personality {
    pub name: String,
    pub description: String,
    pub id_style: IdStyle,
    pub mrn_system: String,
    pub paging: PagingStyle,
    pub default_page_size: usize,
    pub max_page_size: usize,
    pub include_total: bool,
    pub aud: AudRule,
    pub token_lifetime_secs: u64,
    #[serde(default)]
    pub rate_limit_per_sec: Option<f64>,
    pub rate_limit_signal: RateSignal,
    pub required_headers: Vec<String>,
    pub unknown_params: UnknownParams,
    pub unauthorized_type: UnauthorizedType,
    pub everything: bool,
    pub batch: bool,
    pub bulk_export: bool,
    pub scope_style: ScopeStyle,
    /// Resource types whose scopes are never granted even when asked for.
    pub drop_scope_types: Vec<String>,
    /// Generate Coverage and ExplanationOfBenefit (payer APIs).
    pub payer_data: bool,
    /// Types listed in the CapabilityStatement that answer 400.
    pub claimed_unsupported_types: Vec<String>,
    pub bulk_polls_before_ready: u32,
    pub bulk_retry_after_secs: u64,
    pub bulk_file_max_resources: usize,
    /// Resource types served, with their search rules.
    pub types: BTreeMap<String, TypeRule>,
}

impl Personality {
    pub fn built_in(name: &str) -> Result<Self, SimError> {
        let text = BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| SimError::UnknownPersonality(name.to_string()))?;
        Self::from_toml(text)
    }

    pub fn from_toml(text: &str) -> Result<Self, SimError> {
        let p: Personality =
            toml::from_str(text).map_err(|e| SimError::Personality(e.to_string()))?;
        if p.max_page_size == 0 || p.default_page_size == 0 {
            return Err(SimError::Personality("page sizes must be > 0".into()));
        }
        if !p.types.contains_key("Patient") {
            return Err(SimError::Personality(
                "a personality must serve Patient".into(),
            ));
        }
        Ok(p)
    }

    pub fn serves(&self, rtype: &str) -> bool {
        self.types.contains_key(rtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_personality_parses() {
        for name in built_in_names() {
            let p = Personality::built_in(name).expect(name);
            assert_eq!(p.name, name);
        }
    }
}
