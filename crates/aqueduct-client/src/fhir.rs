//! A thin typed FHIR layer: just enough structure to page, classify and route, never a full
//! model. Every resource stays as its raw bytes (`Box<RawValue>`), exactly as received.
//!
//! All structs are lenient (Postel): every field is optional, a field of the wrong shape is
//! dropped rather than failing the whole document, unknown fields are ignored.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::value::RawValue;

/// Deserializes a field as `Some(T)` when it has the expected shape, `None` otherwise.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let raw = Box::<RawValue>::deserialize(d)?;
    Ok(serde_json::from_str(raw.get()).ok())
}

/// Like [`lenient`] for lists: each element that does not parse is dropped.
fn lenient_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let raw = Box::<RawValue>::deserialize(d)?;
    let items: Vec<Box<RawValue>> = match serde_json::from_str(raw.get()) {
        Ok(v) => v,
        Err(_) => return Ok(Vec::new()),
    };
    Ok(items
        .iter()
        .filter_map(|i| serde_json::from_str(i.get()).ok())
        .collect())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Meta {
    #[serde(rename = "versionId", deserialize_with = "lenient")]
    pub version_id: Option<String>,
    #[serde(rename = "lastUpdated", deserialize_with = "lenient")]
    pub last_updated: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BundleLink {
    #[serde(deserialize_with = "lenient")]
    pub relation: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EntrySearch {
    #[serde(deserialize_with = "lenient")]
    pub mode: Option<String>,
}

/// One `Bundle.entry`. `resource` holds the raw bytes of the resource.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BundleEntry {
    #[serde(rename = "fullUrl", deserialize_with = "lenient")]
    pub full_url: Option<String>,
    pub resource: Option<Box<RawValue>>,
    #[serde(deserialize_with = "lenient")]
    pub search: Option<EntrySearch>,
    #[serde(deserialize_with = "lenient")]
    pub response: Option<EntryResponse>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EntryResponse {
    #[serde(deserialize_with = "lenient")]
    pub status: Option<String>,
}

/// An entry that parses as a [`BundleEntry`], or the raw text of one that does not.
#[derive(Debug)]
pub enum Entry {
    Ok(BundleEntry),
    Malformed(Box<RawValue>),
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(match serde_json::from_str::<BundleEntry>(raw.get()) {
            Ok(e) => Entry::Ok(e),
            Err(_) => Entry::Malformed(raw),
        })
    }
}

/// A FHIR Bundle (searchset, history, batch-response...).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Bundle {
    #[serde(rename = "resourceType", deserialize_with = "lenient")]
    pub resource_type: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient")]
    pub bundle_type: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub total: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub meta: Option<Meta>,
    #[serde(deserialize_with = "lenient_vec")]
    pub link: Vec<BundleLink>,
    #[serde(deserialize_with = "lenient_vec_entries")]
    pub entry: Vec<Entry>,
}

fn lenient_vec_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Entry>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    Ok(serde_json::from_str(raw.get()).unwrap_or_default())
}

impl Bundle {
    /// Parses a Bundle from bytes. Errors only when the bytes are not a JSON object.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn is_bundle(&self) -> bool {
        self.resource_type.as_deref() == Some("Bundle")
    }

    /// The URL of the link with this relation (`next`, `self`, `previous`).
    pub fn link_url(&self, relation: &str) -> Option<&str> {
        self.link
            .iter()
            .find(|l| l.relation.as_deref() == Some(relation))
            .and_then(|l| l.url.as_deref())
            .filter(|u| !u.trim().is_empty())
    }

    pub fn next_link(&self) -> Option<&str> {
        self.link_url("next")
    }

    pub fn self_link(&self) -> Option<&str> {
        self.link_url("self")
    }
}

/// The head of any resource: what routing and storage need, nothing more.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ResourceHead {
    #[serde(rename = "resourceType", deserialize_with = "lenient")]
    pub resource_type: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub meta: Option<Meta>,
}

impl ResourceHead {
    /// Reads the head of a resource; None when the text is not a JSON object.
    pub fn parse(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CodeableText {
    #[serde(deserialize_with = "lenient")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OutcomeIssue {
    #[serde(deserialize_with = "lenient")]
    pub severity: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub code: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub diagnostics: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub details: Option<CodeableText>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OperationOutcome {
    #[serde(rename = "resourceType", deserialize_with = "lenient")]
    pub resource_type: Option<String>,
    #[serde(deserialize_with = "lenient_vec")]
    pub issue: Vec<OutcomeIssue>,
}

impl OperationOutcome {
    /// Parses an OperationOutcome; None when the bytes are not one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let oo: OperationOutcome = serde_json::from_slice(bytes).ok()?;
        (oo.resource_type.as_deref() == Some("OperationOutcome")).then_some(oo)
    }

    /// One line: "error/not-supported: diagnostics; ...".
    pub fn summary(&self) -> String {
        self.issue
            .iter()
            .map(|i| {
                let text = i
                    .diagnostics
                    .clone()
                    .or_else(|| i.details.as_ref().and_then(|d| d.text.clone()))
                    .unwrap_or_default();
                format!(
                    "{}/{}: {}",
                    i.severity.as_deref().unwrap_or("?"),
                    i.code.as_deref().unwrap_or("?"),
                    text
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NamedItem {
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub code: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub definition: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CapabilityResource {
    #[serde(rename = "type", deserialize_with = "lenient")]
    pub resource_type: Option<String>,
    #[serde(deserialize_with = "lenient_vec")]
    pub interaction: Vec<NamedItem>,
    #[serde(rename = "searchParam", deserialize_with = "lenient_vec")]
    pub search_param: Vec<NamedItem>,
    #[serde(deserialize_with = "lenient_vec")]
    pub operation: Vec<NamedItem>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CapabilityRest {
    #[serde(deserialize_with = "lenient")]
    pub mode: Option<String>,
    #[serde(deserialize_with = "lenient_vec")]
    pub resource: Vec<CapabilityResource>,
    #[serde(deserialize_with = "lenient_vec")]
    pub interaction: Vec<NamedItem>,
    #[serde(deserialize_with = "lenient_vec")]
    pub operation: Vec<NamedItem>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CapabilityStatement {
    #[serde(rename = "resourceType", deserialize_with = "lenient")]
    pub resource_type: Option<String>,
    #[serde(rename = "fhirVersion", deserialize_with = "lenient")]
    pub fhir_version: Option<String>,
    #[serde(deserialize_with = "lenient_vec")]
    pub rest: Vec<CapabilityRest>,
}

impl CapabilityStatement {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let cs: CapabilityStatement = serde_json::from_slice(bytes).ok()?;
        (cs.resource_type.as_deref() == Some("CapabilityStatement")).then_some(cs)
    }

    fn server_rest(&self) -> impl Iterator<Item = &CapabilityRest> {
        self.rest
            .iter()
            .filter(|r| r.mode.as_deref().is_none_or(|m| m == "server"))
    }

    pub fn resource(&self, resource_type: &str) -> Option<&CapabilityResource> {
        self.server_rest()
            .flat_map(|r| r.resource.iter())
            .find(|r| r.resource_type.as_deref() == Some(resource_type))
    }

    /// The statement lists this type.
    pub fn supports_type(&self, resource_type: &str) -> bool {
        self.resource(resource_type).is_some()
    }

    /// The statement declares this search parameter for this type.
    pub fn supports_search_param(&self, resource_type: &str, param: &str) -> bool {
        self.resource(resource_type).is_some_and(|r| {
            r.search_param
                .iter()
                .any(|p| p.name.as_deref() == Some(param))
        })
    }

    /// The statement declares an operation (e.g. "everything") on a type or system-wide.
    pub fn supports_operation(&self, resource_type: &str, operation: &str) -> bool {
        let op = operation.trim_start_matches('$');
        let matches = |i: &NamedItem| {
            i.name.as_deref().map(|n| n.trim_start_matches('$')) == Some(op)
                || i.definition
                    .as_deref()
                    .is_some_and(|d| d.ends_with(&format!("-{op}")))
        };
        self.resource(resource_type)
            .is_some_and(|r| r.operation.iter().any(matches))
            || self.server_rest().any(|r| r.operation.iter().any(matches))
    }

    /// The statement lists `batch` as a system interaction.
    pub fn supports_batch(&self) -> bool {
        self.server_rest().any(|r| {
            r.interaction
                .iter()
                .any(|i| i.code.as_deref() == Some("batch"))
        })
    }

    pub fn resource_types(&self) -> Vec<String> {
        self.server_rest()
            .flat_map(|r| r.resource.iter())
            .filter_map(|r| r.resource_type.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bundle_is_lenient_and_keeps_raw_entries() {
        let b = Bundle::parse(
            br#"{"resourceType":"Bundle","total":"many","link":[{"relation":"self","url":"a"},{"relation":"next","url":"b"},3],
            "entry":[{"resource":{"resourceType":"Patient","id":"1", "x" : [1,2]}},"junk"]}"#,
        );
        let b = b.unwrap_or_default();
        assert!(b.is_bundle());
        assert_eq!(b.total, None);
        assert_eq!(b.next_link(), Some("b"));
        assert_eq!(b.self_link(), Some("a"));
        assert_eq!(b.entry.len(), 2);
        match &b.entry[0] {
            Entry::Ok(e) => assert_eq!(
                e.resource.as_ref().map(|r| r.get()),
                Some(r#"{"resourceType":"Patient","id":"1", "x" : [1,2]}"#)
            ),
            Entry::Malformed(_) => panic!("entry 0 is fine"),
        }
        assert!(matches!(b.entry[1], Entry::Malformed(_)));
    }

    #[test]
    fn capability_statement_queries() {
        let cs = CapabilityStatement::parse(
            br#"{"resourceType":"CapabilityStatement","rest":[{"mode":"server","interaction":[{"code":"batch"}],
            "resource":[{"type":"Patient","operation":[{"name":"everything","definition":"http://hl7.org/fhir/OperationDefinition/Patient-everything"}],
            "searchParam":[{"name":"_id","type":"token"}]},{"type":"Observation","searchParam":[{"name":"category"}]}]}]}"#,
        )
        .unwrap_or_default();
        assert!(cs.supports_type("Observation"));
        assert!(!cs.supports_type("Goal"));
        assert!(cs.supports_operation("Patient", "$everything"));
        assert!(cs.supports_search_param("Observation", "category"));
        assert!(cs.supports_batch());
        assert_eq!(cs.resource_types(), vec!["Patient", "Observation"]);
    }

    #[test]
    fn operation_outcome_summary() {
        let oo = OperationOutcome::parse(
            br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"category required"}]}"#,
        );
        assert_eq!(
            oo.map(|o| o.summary()).as_deref(),
            Some("error/not-supported: category required")
        );
        assert!(OperationOutcome::parse(b"<html>").is_none());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".*") {
            let _ = Bundle::parse(s.as_bytes()).map(|b| (b.next_link().map(str::len), b.entry.len()));
            let _ = OperationOutcome::parse(s.as_bytes()).map(|o| o.summary());
            let _ = CapabilityStatement::parse(s.as_bytes()).map(|c| c.supports_operation("Patient", "everything"));
            let _ = ResourceHead::parse(&s);
        }

        #[test]
        fn parsers_never_panic_on_json_like_input(s in r#"[\{\}\[\]":,a-zA-Z0-9 ]{0,300}"#) {
            let wrapped = format!(r#"{{"resourceType":"Bundle","link":{s},"entry":[{s}]}}"#);
            let _ = Bundle::parse(wrapped.as_bytes()).map(|b| b.next_link().map(str::len));
            let _ = CapabilityStatement::parse(format!(r#"{{"resourceType":"CapabilityStatement","rest":[{s}]}}"#).as_bytes());
        }
    }
}
