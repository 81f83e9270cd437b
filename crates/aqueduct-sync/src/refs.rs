//! References: extracting them from raw resources without building a JSON tree, and parsing
//! them into what the sync can do with them.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use url::Url;

/// What a reference string points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RefTarget {
    /// A resource on the same server: `Type/id`, `Type/id/_history/v`, or an absolute URL
    /// under the base.
    Local {
        resource_type: String,
        id: String,
        version: Option<String>,
    },
    /// `#id`: inside the same resource, nothing to fetch.
    Contained(String),
    /// `urn:uuid:...` / `urn:oid:...`: only meaningful inside a transaction bundle.
    Urn(String),
    /// A resource on another server: recorded, not followed.
    External(String),
    /// Not a reference we understand.
    Invalid(String),
}

fn valid_type(t: &str) -> bool {
    let mut chars = t.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && t.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// Ids as real servers use them: the specification allows 64 characters of `[A-Za-z0-9.-]`,
/// servers send longer ones (Epic Medication ids of 66) — any URL-safe id up to 256 is taken.
pub const MAX_ID_LEN: usize = 256;

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
}

fn parse_relative(path: &str) -> Option<RefTarget> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (t, id, version) = match parts.as_slice() {
        [t, id] => (*t, *id, None),
        [t, id, "_history", v] => (*t, *id, Some((*v).to_string())),
        _ => return None,
    };
    (valid_type(t) && valid_id(id)).then(|| RefTarget::Local {
        resource_type: t.to_string(),
        id: id.to_string(),
        version,
    })
}

/// Parses a reference relative to the server's base URL (which ends with '/').
pub fn parse_reference(reference: &str, base: &Url) -> RefTarget {
    let r = reference.trim();
    if let Some(c) = r.strip_prefix('#') {
        return RefTarget::Contained(c.to_string());
    }
    if r.starts_with("urn:") {
        return RefTarget::Urn(r.to_string());
    }
    if r.contains("://") {
        let Ok(u) = Url::parse(r) else {
            return RefTarget::Invalid(r.to_string());
        };
        let same = u.scheme() == base.scheme()
            && u.host_str() == base.host_str()
            && u.port_or_known_default() == base.port_or_known_default();
        // the base path compared without regard to letter case (`/fhir/R4` links under a
        // `/fhir/r4` base are the same server)
        let (path, bp) = (u.path(), base.path());
        if same
            && path.len() >= bp.len()
            && path.is_char_boundary(bp.len())
            && path[..bp.len()].eq_ignore_ascii_case(bp)
        {
            if let Some(t) = parse_relative(&path[bp.len()..]) {
                return t;
            }
        }
        return RefTarget::External(r.to_string());
    }
    parse_relative(r).unwrap_or_else(|| RefTarget::Invalid(r.to_string()))
}

/// Reference strings and attachment URLs found in one resource.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    pub references: Vec<String>,
    pub attachments: Vec<String>,
    /// `Attachment.size` where an attachment declares it: (url, bytes). A body of another
    /// length was cut short (a truncated body under a correct Content-Length is otherwise
    /// undetectable for raw content).
    pub attachment_sizes: Vec<(String, u64)>,
}

/// Walks the JSON of a resource and collects every `reference` string and every
/// `attachment.url`. Invalid JSON yields what was found before the error.
pub fn collect(json: &str, out: &mut Found) {
    let mut de = serde_json::Deserializer::from_str(json);
    let _ = Walk {
        out,
        key: Key::Other,
    }
    .deserialize(&mut de);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Reference,
    Attachment,
    Other,
}

struct Walk<'a> {
    out: &'a mut Found,
    key: Key,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if self.key == Key::Reference {
            self.out.references.push(v.to_string());
        }
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Lists keep the key's meaning: `attachment: [...]` is rare but harmless.
        let key = self.key;
        while seq
            .next_element_seed(Walk {
                out: &mut *self.out,
                key,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let in_attachment = self.key == Key::Attachment;
        let (mut url, mut size): (Option<String>, Option<u64>) = (None, None);
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if in_attachment && (k == "url" || k == "size") {
                // siblings of one Attachment: kept together (a size may be sent as text)
                let v: serde_json::Value = map.next_value()?;
                if k == "url" {
                    url = v.as_str().map(str::to_string);
                } else {
                    size = v
                        .as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
                }
                continue;
            }
            let key = match k.as_ref() {
                "reference" => Key::Reference,
                // every element of type Attachment that R4 resources carry
                "attachment" | "presentedForm" | "photo" | "valueAttachment"
                | "contentAttachment" | "sourceAttachment" => Key::Attachment,
                // Contained resources hold their own references; they are followed too.
                "div" => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                _ => Key::Other,
            };
            map.next_value_seed(Walk {
                out: &mut *self.out,
                key,
            })?;
        }
        if let Some(u) = url {
            if let Some(n) = size {
                self.out.attachment_sizes.push((u.clone(), n));
            }
            self.out.attachments.push(u);
        }
        Ok(())
    }
}

/// Types that records commonly point to and that reference resolution fetches: a connection's
/// scopes must cover them, or every record comes back with dangling references.
pub const REFERENCE_TARGET_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Medication",
    "Binary",
    "Device",
    "Specimen",
    "RelatedPerson",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> Url {
        Url::parse("https://ehr.example/fhir/r4/").unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn reference_kinds() {
        let b = base();
        assert_eq!(
            parse_reference("Practitioner/p1", &b),
            RefTarget::Local {
                resource_type: "Practitioner".into(),
                id: "p1".into(),
                version: None
            }
        );
        assert_eq!(
            parse_reference("Observation/o-1/_history/3", &b),
            RefTarget::Local {
                resource_type: "Observation".into(),
                id: "o-1".into(),
                version: Some("3".into())
            }
        );
        assert_eq!(
            parse_reference("https://ehr.example/fhir/r4/Organization/x", &b),
            RefTarget::Local {
                resource_type: "Organization".into(),
                id: "x".into(),
                version: None
            }
        );
        assert!(matches!(
            parse_reference("https://other.example/fhir/Organization/x", &b),
            RefTarget::External(_)
        ));
        assert_eq!(
            parse_reference("#med1", &b),
            RefTarget::Contained("med1".into())
        );
        assert!(matches!(
            parse_reference("urn:uuid:1234", &b),
            RefTarget::Urn(_)
        ));
        assert!(matches!(
            parse_reference("not a ref", &b),
            RefTarget::Invalid(_)
        ));
        assert!(matches!(
            parse_reference("patient/1", &b),
            RefTarget::Invalid(_)
        ));
    }

    #[test]
    fn collects_references_and_attachment_urls() {
        let json = r#"{"resourceType":"DocumentReference","id":"d","subject":{"reference":"Patient/1"},
            "author":[{"reference":"Practitioner/2","display":"x"}],
            "text":{"div":"<div>reference</div>"},
            "content":[{"attachment":{"contentType":"text/plain","url":"https://ehr.example/fhir/r4/Binary/b1"}}],
            "url":"ignored"}"#;
        let mut f = Found::default();
        collect(json, &mut f);
        assert_eq!(f.references, vec!["Patient/1", "Practitioner/2"]);
        assert_eq!(f.attachments, vec!["https://ehr.example/fhir/r4/Binary/b1"]);
    }

    proptest! {
        #[test]
        fn reference_parsing_never_panics(s in ".*") {
            let _ = parse_reference(&s, &base());
        }

        #[test]
        fn collecting_never_panics(s in ".*") {
            let mut f = Found::default();
            collect(&s, &mut f);
        }

        #[test]
        fn collecting_from_json_like_input_never_panics(s in r#"[\{\}\[\]":,a-z0-9 ]{0,200}"#) {
            let mut f = Found::default();
            collect(&s, &mut f);
            let wrapped = format!("{{\"reference\":{s}}}");
            collect(&wrapped, &mut f);
        }
    }
}
