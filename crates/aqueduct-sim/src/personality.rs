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
    (
        "payer-everything",
        include_str!("../personalities/payer-everything.toml"),
    ),
    (
        "payer-linked",
        include_str!("../personalities/payer-linked.toml"),
    ),
    (
        "epic-suppressed",
        include_str!("../personalities/epic-suppressed.toml"),
    ),
    ("nextgen", include_str!("../personalities/nextgen.toml")),
    (
        "athena-records",
        include_str!("../personalities/athena-records.toml"),
    ),
    ("hospital", include_str!("../personalities/hospital.toml")),
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
pub enum AudienceCheck {
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
    /// The issue code of the 400 answered for a category outside `allowed_categories`
    /// (default `not-supported`; Epic answers `suppressed` for CarePlan categories).
    #[serde(default)]
    pub category_refusal_code: Option<String>,
    /// Categories the client is not authorized for: their resources are left out of every
    /// search and each search answer carries one OperationOutcome entry (search.mode =
    /// outcome, issue code `suppressed`) per hidden category (Epic's Encounter Diagnosis).
    #[serde(default)]
    pub suppressed_categories: Vec<String>,
    /// Resources with these statuses are never returned by a search, even when asked for
    /// by `status` (athena leaves out cancelled and entered-in-error Encounters), but they
    /// stay readable and referenced.
    #[serde(default)]
    pub excluded_statuses: Vec<String>,
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
    pub aud: AudienceCheck,
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
    /// The manifest's `requiresAccessToken`: when false the files are served at
    /// `{origin}/bulk-open/...` without a token (and a request that sends one is refused, so a
    /// client that leaks it is caught).
    #[serde(default = "yes")]
    pub bulk_requires_token: bool,
    /// NDJSON files are sent gzip-encoded (`Content-Encoding: gzip`) to clients that accept it.
    #[serde(default = "yes")]
    pub bulk_gzip: bool,
    /// Files answer `Range: bytes=N-` with 206 (identity encoding only).
    #[serde(default = "yes")]
    pub bulk_ranges: bool,
    /// Polls answer `Retry-After` as an HTTP date instead of seconds.
    #[serde(default)]
    pub bulk_retry_after_http_date: bool,
    /// Types generated and returned only by `Patient/$everything`: not searchable, not
    /// readable, not in the CapabilityStatement (a network's Provenance).
    #[serde(default)]
    pub everything_only_types: Vec<String>,
    /// Served types the CapabilityStatement does not list.
    #[serde(default)]
    pub capability_omits: Vec<String>,
    /// Every type-level search answers 400; only reads and `$everything` work (a payer).
    #[serde(default)]
    pub search_disabled: bool,
    /// `Patient/{id}` answers a Patient whose id is an alias that only this server uses;
    /// every resource of the record references the alias.
    #[serde(default)]
    pub patient_alias: bool,
    /// `$everything` also returns the Practitioners, Organizations, Locations and Medications
    /// the record references.
    #[serde(default)]
    pub everything_includes_references: bool,
    /// The member Patient holds no clinical data; it links (`Patient.link`, type seealso) to
    /// this many other Patients that do.
    #[serde(default)]
    pub linked_patients: usize,
    /// Answer every search page with an informational OperationOutcome entry ("This response
    /// includes information available to the authorized user at the time of the request").
    #[serde(default)]
    pub informational_outcome: bool,
    /// Reads of these types (also `_id` searches of them and batch entries reading them)
    /// answer 500 while `$everything` still returns them.
    #[serde(default)]
    pub referenced_read_errors: Vec<String>,
    /// Next links and document URLs use this path (e.g. `/fhir/R4`) instead of `/fhir/r4`;
    /// the server answers both.
    #[serde(default)]
    pub link_base_path: Option<String>,
    /// Types whose ids are 70+ characters long (every tenth up to 200).
    #[serde(default)]
    pub long_ids: Vec<String>,
    /// Document contents and patient photos are served by a second listener (another origin
    /// of the same organization) at `{documents origin}/content/{id}`.
    #[serde(default)]
    pub document_host: bool,
    /// Attachment URLs on the FHIR host are `{base}/documents/{id}`, not `Binary/{id}`.
    #[serde(default)]
    pub document_paths: bool,
    /// Some Encounters are cancelled or entered-in-error; Conditions and DocumentReferences
    /// still reference them.
    #[serde(default)]
    pub cancelled_encounters: bool,
    /// Some local lab codes carry the LOINC system URI but fail LOINC's check digit.
    #[serde(default)]
    pub mislabelled_loinc: bool,
    /// Every reference carries `/_history/1`.
    #[serde(default)]
    pub versioned_references: bool,
    /// Medication requests, administrations and statements reference shared Medication
    /// resources instead of coding the drug inline.
    #[serde(default)]
    pub medication_references: bool,
    /// CarePlan categories to draw from (numeric codes are SNOMED CT, others US Core's
    /// careplan-category); empty keeps assess-plan / longitudinal.
    #[serde(default)]
    pub careplan_categories: Vec<String>,
    /// Resource types served, with their search rules.
    pub types: BTreeMap<String, TypeRule>,
}

fn yes() -> bool {
    true
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

    /// Does the generator produce this type (searchable or only through `$everything`)?
    pub fn generates(&self, rtype: &str) -> bool {
        self.serves(rtype) || self.everything_only_types.iter().any(|t| t == rtype)
    }

    pub fn has_long_ids(&self, rtype: &str) -> bool {
        self.long_ids.iter().any(|t| t == rtype)
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
