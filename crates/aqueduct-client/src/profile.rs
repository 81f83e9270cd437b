//! Vendor and institution profiles: every quirk of a FHIR server, as data.
//!
//! A profile is resolved from layers, each a TOML table with the same keys: the embedded
//! `generic` defaults, then a platform profile (`epic`, `cerner`, ... — one embedded file each),
//! then an institution override from the connection's configuration. Layers merge field by
//! field: a table merges key by key, any other value replaces the one below. Unknown keys are
//! rejected with their full path so a typo never silently does nothing.
//!
//! Adding a vendor is adding a file under `profiles/` and a line in [`EMBEDDED`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The embedded platform profiles: (name, TOML source).
pub const EMBEDDED: &[(&str, &str)] = &[
    ("generic", include_str!("../profiles/generic.toml")),
    ("epic", include_str!("../profiles/epic.toml")),
    ("cerner", include_str!("../profiles/cerner.toml")),
    ("athena", include_str!("../profiles/athena.toml")),
    ("ecw", include_str!("../profiles/ecw.toml")),
    ("nextgen", include_str!("../profiles/nextgen.toml")),
    ("meditech", include_str!("../profiles/meditech.toml")),
    ("cms-payer", include_str!("../profiles/cms-payer.toml")),
    ("medplum", include_str!("../profiles/medplum.toml")),
    ("hapi", include_str!("../profiles/hapi.toml")),
];

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProfileError {
    #[error("unknown vendor profile {name:?}; known profiles: {known}")]
    UnknownProfile { name: String, known: String },
    #[error("profile {layer}: unknown key `{path}`")]
    UnknownKey { layer: String, path: String },
    #[error("profile {layer}: invalid TOML: {cause}")]
    Toml { layer: String, cause: String },
    #[error("profile {layer}: invalid value: {cause}")]
    Invalid { layer: String, cause: String },
}

/// How the `aud` parameter is sent in authorization requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AudienceStyle {
    /// The FHIR base URL exactly as configured.
    #[default]
    Exact,
    /// The base URL with any trailing slash removed.
    NoTrailingSlash,
    /// No `aud` at all.
    Omit,
}

/// SMART scope syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScopeStyle {
    /// `patient/Observation.read`
    V1,
    /// `patient/Observation.rs`
    #[default]
    V2,
}

/// How a server pages search results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PagingStyle {
    /// Next links that can be re-followed later (offsets, stable ids).
    #[default]
    NextLink,
    /// Next links holding a server-side session cursor that may expire: a stale cursor means
    /// restarting the search.
    OpaqueCursor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Non-standard headers the server requires, sent with every request.
    pub extra_headers: BTreeMap<String, String>,
    pub accept: String,
    /// The whole request, body included: a server that trickles a body is cut off here.
    pub timeout_secs: u64,
    /// Largest FHIR JSON response read (MiB); a larger one is aborted, never retried.
    pub max_response_mb: u64,
    /// Largest attachment (Binary content) read (MiB).
    pub max_binary_mb: u64,
    /// Other origins of the same organization that serve attachments (documents, photos),
    /// e.g. "https://docs.hospital.org": attachments there are fetched, with the token. Any
    /// other origin never gets the token, and its attachments are not fetched.
    pub document_hosts: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            extra_headers: BTreeMap::new(),
            accept: "application/fhir+json".into(),
            timeout_secs: 60,
            max_response_mb: 64,
            max_binary_mb: 64,
            document_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    pub aud: AudienceStyle,
    pub scope_style: ScopeStyle,
    /// What the server usually grants, to plan refreshes before expiry.
    pub token_lifetime_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            aud: AudienceStyle::Exact,
            scope_style: ScopeStyle::V2,
            token_lifetime_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PagingSettings {
    pub default_page_size: u32,
    /// The largest `_count` the server honours; searches ask for this.
    pub max_page_size: u32,
    pub style: PagingStyle,
    /// Pages followed per search before it is ended as partial (a server that pages forever).
    pub max_pages: u32,
    /// Consecutive pages that add no new resource (empty, or only entries already seen)
    /// before a search is ended as partial (a cursor that changes but repeats itself).
    pub max_fruitless_pages: u32,
}

impl Default for PagingSettings {
    fn default() -> Self {
        Self {
            default_page_size: 50,
            max_page_size: 200,
            max_pages: 10_000,
            max_fruitless_pages: 5,
            style: PagingStyle::NextLink,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// `Patient/$everything` works.
    pub everything: bool,
    /// Some servers cap `$everything`; 0 = no known cap. A result at the cap is not trusted
    /// as complete.
    pub everything_max_resources: u64,
    /// Batch bundles of reads/searches are accepted.
    pub batch: bool,
    /// `_id=a,b,c` searches work.
    pub multi_id: bool,
    pub multi_id_max: u32,
    /// Skip types the CapabilityStatement omits (unless listed in `try_types`).
    pub trust_capability_statement: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            everything: false,
            everything_max_resources: 0,
            batch: false,
            multi_id: true,
            multi_id_max: 50,
            trust_capability_statement: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitSettings {
    /// Sustained pace; 0 = unlimited.
    pub requests_per_sec: f64,
    /// Requests that may go back to back before pacing applies.
    pub burst: u32,
    /// Ceiling of the adaptive concurrency limit.
    pub max_concurrency: u32,
    /// Floor of the adaptive concurrency limit.
    pub min_concurrency: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            requests_per_sec: 50.0,
            burst: 10,
            max_concurrency: 8,
            min_concurrency: 1,
        }
    }
}

/// What is known about searching one resource type on this server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TypeSettings {
    /// The search parameter naming the patient ("patient", "subject", "beneficiary", "_id").
    pub patient_param: Option<String>,
    /// Search parameters known to work.
    pub search_params: Vec<String>,
    /// The server refuses a search without one of these categories: query each.
    pub required_categories: Vec<String>,
    /// Categories to try when a search without category is rejected.
    pub known_categories: Vec<String>,
    /// Parameters added to every search of this type (athena: `intent=order,plan`).
    pub extra_params: BTreeMap<String, String>,
}

/// A resolved vendor/institution profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VendorProfile {
    pub name: String,
    pub display_name: String,
    /// Resource types fetched when the connection does not list its own.
    pub default_types: Vec<String>,
    /// Types to try even when the CapabilityStatement omits them.
    pub try_types: Vec<String>,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub paging: PagingSettings,
    pub capabilities: Capabilities,
    pub rate_limit: RateLimitSettings,
    pub types: BTreeMap<String, TypeSettings>,
}

impl Default for VendorProfile {
    fn default() -> Self {
        Self {
            name: "generic".into(),
            display_name: "Generic FHIR R4 server".into(),
            default_types: Vec::new(),
            try_types: Vec::new(),
            http: HttpSettings::default(),
            auth: AuthSettings::default(),
            paging: PagingSettings::default(),
            capabilities: Capabilities::default(),
            rate_limit: RateLimitSettings::default(),
            types: BTreeMap::new(),
        }
    }
}

// The key schema, for rejecting unknown keys with their path. `None` = a leaf value; `Some` =
// a table with these known keys; `MAP` = a table whose keys are free (headers, types...).
enum Shape {
    Leaf,
    Table(&'static [(&'static str, Shape)]),
    /// Free keys, each holding the inner shape.
    Map(&'static Shape),
}

const TYPE_SHAPE: Shape = Shape::Table(&[
    ("patient_param", Shape::Leaf),
    ("search_params", Shape::Leaf),
    ("required_categories", Shape::Leaf),
    ("known_categories", Shape::Leaf),
    ("extra_params", Shape::Map(&Shape::Leaf)),
]);

const PROFILE_SHAPE: Shape = Shape::Table(&[
    ("name", Shape::Leaf),
    ("display_name", Shape::Leaf),
    ("default_types", Shape::Leaf),
    ("try_types", Shape::Leaf),
    (
        "http",
        Shape::Table(&[
            ("extra_headers", Shape::Map(&Shape::Leaf)),
            ("accept", Shape::Leaf),
            ("timeout_secs", Shape::Leaf),
            ("max_response_mb", Shape::Leaf),
            ("max_binary_mb", Shape::Leaf),
            ("document_hosts", Shape::Leaf),
        ]),
    ),
    (
        "auth",
        Shape::Table(&[
            ("aud", Shape::Leaf),
            ("scope_style", Shape::Leaf),
            ("token_lifetime_secs", Shape::Leaf),
        ]),
    ),
    (
        "paging",
        Shape::Table(&[
            ("default_page_size", Shape::Leaf),
            ("max_page_size", Shape::Leaf),
            ("style", Shape::Leaf),
            ("max_pages", Shape::Leaf),
            ("max_fruitless_pages", Shape::Leaf),
        ]),
    ),
    (
        "capabilities",
        Shape::Table(&[
            ("everything", Shape::Leaf),
            ("everything_max_resources", Shape::Leaf),
            ("batch", Shape::Leaf),
            ("multi_id", Shape::Leaf),
            ("multi_id_max", Shape::Leaf),
            ("trust_capability_statement", Shape::Leaf),
        ]),
    ),
    (
        "rate_limit",
        Shape::Table(&[
            ("requests_per_sec", Shape::Leaf),
            ("burst", Shape::Leaf),
            ("max_concurrency", Shape::Leaf),
            ("min_concurrency", Shape::Leaf),
        ]),
    ),
    ("types", Shape::Map(&TYPE_SHAPE)),
]);

fn check_keys(
    value: &toml::Value,
    shape: &Shape,
    path: &str,
    layer: &str,
) -> Result<(), ProfileError> {
    match (shape, value) {
        (Shape::Leaf, _) => Ok(()),
        (Shape::Table(fields), toml::Value::Table(t)) => {
            for (k, v) in t {
                let p = join(path, k);
                match fields.iter().find(|(name, _)| name == k) {
                    Some((_, inner)) => check_keys(v, inner, &p, layer)?,
                    None => {
                        return Err(ProfileError::UnknownKey {
                            layer: layer.into(),
                            path: p,
                        });
                    }
                }
            }
            Ok(())
        }
        (Shape::Map(inner), toml::Value::Table(t)) => {
            for (k, v) in t {
                check_keys(v, inner, &join(path, k), layer)?;
            }
            Ok(())
        }
        (_, _) => Err(ProfileError::Invalid {
            layer: layer.into(),
            cause: format!("`{path}` must be a table"),
        }),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Merges `over` into `base`, field by field: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Parses one layer and checks its keys.
pub fn parse_layer(layer: &str, source: &str) -> Result<toml::Table, ProfileError> {
    let table: toml::Table = toml::from_str(source).map_err(|e| ProfileError::Toml {
        layer: layer.into(),
        cause: e.to_string(),
    })?;
    check_layer(layer, &table)?;
    Ok(table)
}

/// Checks the keys of an already-parsed layer (e.g. an override table from a config file).
pub fn check_layer(layer: &str, table: &toml::Table) -> Result<(), ProfileError> {
    check_keys(
        &toml::Value::Table(table.clone()),
        &PROFILE_SHAPE,
        "",
        layer,
    )
}

fn embedded(name: &str) -> Result<&'static str, ProfileError> {
    EMBEDDED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, src)| *src)
        .ok_or_else(|| ProfileError::UnknownProfile {
            name: name.into(),
            known: EMBEDDED
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl VendorProfile {
    /// Names of the embedded platform profiles.
    pub fn known() -> Vec<&'static str> {
        EMBEDDED.iter().map(|(n, _)| *n).collect()
    }

    /// Resolves `generic` <- `platform` <- `institution` (an override table, same keys).
    pub fn resolve(
        platform: &str,
        institution: Option<&toml::Table>,
    ) -> Result<Self, ProfileError> {
        let mut merged = parse_layer("generic", embedded("generic")?)?;
        if platform != "generic" {
            let layer = parse_layer(platform, embedded(platform)?)?;
            merge(&mut merged, &layer);
        }
        if let Some(over) = institution {
            check_layer("institution override", over)?;
            merge(&mut merged, over);
        }
        Self::from_table(platform, merged)
    }

    /// Resolves with the institution override given as TOML text.
    pub fn resolve_with_toml(platform: &str, institution_toml: &str) -> Result<Self, ProfileError> {
        let over = parse_layer("institution override", institution_toml)?;
        Self::resolve(platform, Some(&over))
    }

    /// Resolves `generic` <- a profile given as TOML text (a profile not embedded in the binary).
    pub fn from_toml(layer: &str, source: &str) -> Result<Self, ProfileError> {
        let mut merged = parse_layer("generic", embedded("generic")?)?;
        merge(&mut merged, &parse_layer(layer, source)?);
        Self::from_table(layer, merged)
    }

    fn from_table(layer: &str, table: toml::Table) -> Result<Self, ProfileError> {
        let profile: VendorProfile =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ProfileError::Invalid {
                    layer: layer.into(),
                    cause: e.to_string(),
                })?;
        if profile.paging.max_page_size == 0 || profile.rate_limit.max_concurrency == 0 {
            return Err(ProfileError::Invalid {
                layer: layer.into(),
                cause: "paging.max_page_size and rate_limit.max_concurrency must be > 0".into(),
            });
        }
        Ok(profile)
    }

    /// Settings for one type (defaults when the profile says nothing).
    pub fn type_settings(&self, resource_type: &str) -> TypeSettings {
        self.types.get(resource_type).cloned().unwrap_or_default()
    }

    /// The search parameter naming the patient for this type.
    pub fn patient_param(&self, resource_type: &str) -> String {
        self.types
            .get(resource_type)
            .and_then(|t| t.patient_param.clone())
            .unwrap_or_else(|| "patient".to_string())
    }

    /// The `aud` value to send for a base URL, or None when it must be omitted.
    pub fn aud_for(&self, base_url: &str) -> Option<String> {
        match self.auth.aud {
            AudienceStyle::Exact => Some(base_url.to_string()),
            AudienceStyle::NoTrailingSlash => Some(base_url.trim_end_matches('/').to_string()),
            AudienceStyle::Omit => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_profile_resolves() {
        for name in VendorProfile::known() {
            let p = VendorProfile::resolve(name, None);
            assert!(p.is_ok(), "{name}: {p:?}");
        }
    }

    #[test]
    fn platform_overrides_generic_field_by_field() {
        let generic = VendorProfile::resolve("generic", None).unwrap_or_default();
        let epic = VendorProfile::resolve("epic", None).unwrap_or_default();
        assert_eq!(epic.name, "epic");
        assert_eq!(epic.paging.max_page_size, 1000);
        // Not set by epic: inherited from generic.
        assert_eq!(epic.http.accept, generic.http.accept);
        assert_eq!(epic.default_types, generic.default_types);
        assert!(
            epic.type_settings("Observation")
                .required_categories
                .contains(&"laboratory".to_string())
        );
        // A type table merges key by key: epic's Observation keeps generic's known categories.
        assert!(
            !epic
                .type_settings("Observation")
                .known_categories
                .is_empty()
        );
        assert_eq!(epic.patient_param("Patient"), "_id");
        let ecw = VendorProfile::resolve("ecw", None).unwrap_or_default();
        assert!((ecw.rate_limit.requests_per_sec * 60.0 - 246.0).abs() < 10.0);
        let athena = VendorProfile::resolve("athena", None).unwrap_or_default();
        assert_eq!(
            athena
                .type_settings("MedicationRequest")
                .extra_params
                .get("intent")
                .map(String::as_str),
            Some("order,plan")
        );
    }

    #[test]
    fn institution_override_wins_and_keeps_the_rest() {
        let p = VendorProfile::resolve_with_toml(
            "epic",
            r#"
            [http.extra_headers]
            "Epic-Client-ID" = "abc"
            [paging]
            max_page_size = 200
            [types.Observation]
            required_categories = ["laboratory"]
            "#,
        )
        .unwrap_or_default();
        assert_eq!(
            p.http
                .extra_headers
                .get("Epic-Client-ID")
                .map(String::as_str),
            Some("abc")
        );
        assert_eq!(p.paging.max_page_size, 200);
        assert_eq!(p.paging.style, PagingStyle::OpaqueCursor);
        assert_eq!(
            p.type_settings("Observation").required_categories,
            vec!["laboratory"]
        );
        assert!(!p.type_settings("CarePlan").required_categories.is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let e = VendorProfile::resolve_with_toml("epic", "[paging]\nmax_page_sise = 3\n");
        assert_eq!(
            e,
            Err(ProfileError::UnknownKey {
                layer: "institution override".into(),
                path: "paging.max_page_sise".into()
            })
        );
        let e = VendorProfile::from_toml("custom", "[types.Observation]\ncategories = []\n");
        assert!(
            matches!(&e, Err(ProfileError::UnknownKey { path, .. }) if path == "types.Observation.categories"),
            "{e:?}"
        );
        let e = VendorProfile::from_toml("custom", "colour = 1\n");
        assert!(matches!(&e, Err(ProfileError::UnknownKey { path, .. }) if path == "colour"));
        // Free-form maps accept any key.
        assert!(
            VendorProfile::from_toml("custom", "[http.extra_headers]\nX-Any = \"1\"\n").is_ok()
        );
    }

    #[test]
    fn wrong_types_and_unknown_profiles_are_errors() {
        assert!(matches!(
            VendorProfile::resolve_with_toml("generic", "[paging]\nmax_page_size = \"big\"\n"),
            Err(ProfileError::Invalid { .. })
        ));
        assert!(matches!(
            VendorProfile::resolve_with_toml("generic", "[auth]\naud = \"sometimes\"\n"),
            Err(ProfileError::Invalid { .. })
        ));
        assert!(matches!(
            VendorProfile::resolve("allscripts", None),
            Err(ProfileError::UnknownProfile { .. })
        ));
    }

    #[test]
    fn aud_rules() {
        let mut p = VendorProfile::default();
        assert_eq!(
            p.aud_for("https://x/fhir/").as_deref(),
            Some("https://x/fhir/")
        );
        p.auth.aud = AudienceStyle::NoTrailingSlash;
        assert_eq!(
            p.aud_for("https://x/fhir/").as_deref(),
            Some("https://x/fhir")
        );
        p.auth.aud = AudienceStyle::Omit;
        assert_eq!(p.aud_for("https://x/fhir/"), None);
    }
}
