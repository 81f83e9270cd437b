//! Turning one page (a searchset Bundle, or a single resource) into raw resources to store,
//! liberally: whatever parses as JSON is kept, with its parse status; a resource without an id
//! gets a deterministic synthetic id.

use std::collections::HashSet;

use aqueduct_client::fhir::{Bundle, Entry, ResourceHead};
use aqueduct_core::{ParseStatus, RawResource};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::outcome::{OutcomeMeaning, outcome_meaning};
use crate::refs::{Found, collect};

/// Prefix of synthetic ids given to resources that arrive without one.
pub const SYNTHETIC_ID_PREFIX: &str = "aqueduct-sha256-";

/// A deterministic id for a resource without one: the same bytes always get the same id.
pub fn synthetic_id(bytes: &[u8]) -> String {
    let h = hex::encode(Sha256::digest(bytes));
    format!("{SYNTHETIC_ID_PREFIX}{}", &h[..32])
}

/// What one page held.
#[derive(Debug, Default)]
pub struct Page {
    /// New resources of the page, in order, each (type, id) once.
    pub resources: Vec<RawResource>,
    /// Entries whose (type, id) was already seen (in this page or an earlier one).
    pub duplicates: u64,
    /// The same, per resource type.
    pub duplicates_by_type: std::collections::BTreeMap<String, u64>,
    /// OperationOutcome entries (search.mode = outcome, or any entry that is an
    /// OperationOutcome: it is never stored as data), summarized with what they mean.
    pub outcomes: Vec<PageOutcome>,
    /// Entries that were not even an object, or had no resource.
    pub malformed: u64,
    /// References and attachment URLs found in the page's resources.
    pub found: Found,
}

/// An OperationOutcome found among a page's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageOutcome {
    pub summary: String,
    pub meaning: OutcomeMeaning,
}

impl PageOutcome {
    fn parse(json: &str) -> Self {
        match aqueduct_client::fhir::OperationOutcome::parse(json.as_bytes()) {
            Some(o) => PageOutcome {
                summary: o.summary(),
                meaning: outcome_meaning(
                    o.issue
                        .iter()
                        .map(|i| (i.severity.as_deref(), i.code.as_deref())),
                ),
            },
            None => PageOutcome {
                summary: "an outcome entry that is not an OperationOutcome".into(),
                meaning: OutcomeMeaning::Note,
            },
        }
    }
}

/// Context of the request a page answered.
pub struct PageSource<'a> {
    pub url: &'a str,
    pub patient_id: Option<&'a str>,
    /// The type asked for, used when a resource does not say its own.
    pub expected_type: Option<&'a str>,
    pub fetched_at: DateTime<Utc>,
    /// Collect references and attachments.
    pub collect_refs: bool,
}

/// Converts one raw resource (its JSON text) into a [`RawResource`].
pub fn raw_resource(json: String, src: &PageSource<'_>) -> RawResource {
    let head = ResourceHead::parse(&json);
    let (rtype, id, meta, status) = match head {
        None => (
            src.expected_type.unwrap_or("Unknown").to_string(),
            None,
            None,
            ParseStatus::InvalidFhir("not a JSON object".into()),
        ),
        Some(h) => {
            let mut problems = Vec::new();
            let rtype = match h.resource_type.filter(|t| !t.is_empty()) {
                Some(t) => t,
                None => {
                    problems.push("missing resourceType");
                    src.expected_type.unwrap_or("Unknown").to_string()
                }
            };
            let id = h.id.filter(|i| !i.trim().is_empty());
            if id.is_none() {
                problems.push("missing id: synthetic id assigned");
            }
            let status = if problems.is_empty() {
                ParseStatus::Ok
            } else {
                ParseStatus::InvalidFhir(problems.join("; "))
            };
            (rtype, id, h.meta, status)
        }
    };
    let bytes = json.into_bytes();
    let logical_id = id.unwrap_or_else(|| synthetic_id(&bytes));
    RawResource {
        resource_type: rtype,
        logical_id,
        version_id: meta.as_ref().and_then(|m| m.version_id.clone()),
        last_updated: meta.and_then(|m| m.last_updated),
        source_url: src.url.to_string(),
        patient_id: src.patient_id.map(str::to_string),
        parse_status: status,
        fetched_at: src.fetched_at,
        bytes,
    }
}

/// Splits a Bundle into resources, skipping (and counting) those already in `seen`.
pub fn bundle_page(
    bundle: Bundle,
    src: &PageSource<'_>,
    seen: &mut HashSet<(String, String)>,
) -> Page {
    let mut page = Page::default();
    for entry in bundle.entry {
        let e = match entry {
            Entry::Ok(e) => e,
            Entry::Malformed(_) => {
                page.malformed += 1;
                continue;
            }
        };
        let Some(resource) = e.resource else {
            page.malformed += 1;
            continue;
        };
        let is_outcome = e.search.as_ref().and_then(|s| s.mode.as_deref()) == Some("outcome");
        let json: String = String::from(Box::<str>::from(resource));
        if is_outcome {
            page.outcomes.push(PageOutcome::parse(&json));
            continue;
        }
        let raw = raw_resource(json, src);
        if raw.resource_type == "OperationOutcome" {
            // an outcome without search.mode: still the server talking, not patient data
            if let Ok(text) = std::str::from_utf8(&raw.bytes) {
                page.outcomes.push(PageOutcome::parse(text));
            }
            continue;
        }
        if !seen.insert((raw.resource_type.clone(), raw.logical_id.clone())) {
            page.duplicates += 1;
            *page
                .duplicates_by_type
                .entry(raw.resource_type.clone())
                .or_default() += 1;
            continue;
        }
        if src.collect_refs {
            if let Ok(text) = std::str::from_utf8(&raw.bytes) {
                collect(text, &mut page.found);
            }
        }
        page.resources.push(raw);
    }
    page
}

/// What to do after a page, from its `next` link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPage {
    /// No next link: the search is complete.
    End,
    /// Follow this URL.
    Follow(url::Url),
    /// The next link cannot be followed safely: the search is incomplete.
    Problem(String),
}

/// Resolves a page's `next` link (relative links resolve against the page's URL) and checks
/// it: a link back to a page already read (including `next == self`) is a loop; a link to
/// another server is not followed (the token must not leave its server).
pub fn next_page(
    current: &url::Url,
    next: Option<&str>,
    visited: &HashSet<String>,
    same_server: impl Fn(&url::Url) -> bool,
) -> NextPage {
    let Some(n) = next else {
        return NextPage::End;
    };
    let url = match current.join(n.trim()) {
        Ok(u) => u,
        Err(e) => return NextPage::Problem(format!("unusable next link {n:?}: {e}")),
    };
    if url == *current || visited.contains(url.as_str()) {
        return NextPage::Problem(format!(
            "the next link loops back to a page already read ({url})"
        ));
    }
    if !same_server(&url) {
        return NextPage::Problem(format!(
            "the next link points to another server ({url}); not followed"
        ));
    }
    NextPage::Follow(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn src() -> PageSource<'static> {
        PageSource {
            url: "http://x/fhir/Observation?patient=1",
            patient_id: Some("1"),
            expected_type: Some("Observation"),
            fetched_at: Utc::now(),
            collect_refs: true,
        }
    }

    #[test]
    fn keeps_bytes_exactly_and_counts_duplicates() {
        let body = br#"{"resourceType":"Bundle","type":"searchset","entry":[
          {"resource":{"resourceType":"Observation","id":"a","meta":{"versionId":"2"},"subject":{"reference":"Patient/1"}}},
          {"resource":{"resourceType":"Observation","id":"a","meta":{"versionId":"2"},"subject":{"reference":"Patient/1"}}},
          {"resource":{"resourceType":"Observation",  "status" : "final"}},
          {"resource":{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"informational","diagnostics":"x"}]},"search":{"mode":"outcome"}},
          {"fullUrl":"x"}, 7
        ]}"#;
        let bundle = Bundle::parse(body).unwrap_or_default();
        let mut seen = HashSet::new();
        let page = bundle_page(bundle, &src(), &mut seen);
        assert_eq!(page.resources.len(), 2);
        assert_eq!(page.duplicates, 1);
        assert_eq!(page.outcomes.len(), 1);
        assert_eq!(page.malformed, 2);
        assert_eq!(page.resources[0].version_id.as_deref(), Some("2"));
        let no_id = &page.resources[1];
        assert!(no_id.logical_id.starts_with(SYNTHETIC_ID_PREFIX));
        assert_eq!(
            no_id.bytes,
            br#"{"resourceType":"Observation",  "status" : "final"}"#
        );
        assert_eq!(no_id.parse_status.code(), "invalid-fhir");
        assert_eq!(page.found.references, vec!["Patient/1"]);
        // The synthetic id is deterministic.
        let again = bundle_page(
            Bundle::parse(body).unwrap_or_default(),
            &src(),
            &mut HashSet::new(),
        );
        assert_eq!(again.resources[1].logical_id, no_id.logical_id);
    }

    #[test]
    fn next_links_are_resolved_and_checked() {
        let cur = url::Url::parse("http://h/fhir/Observation?patient=1")
            .unwrap_or_else(|_| unreachable!());
        let same = |u: &url::Url| u.host_str() == Some("h");
        let mut visited = HashSet::new();
        visited.insert(cur.to_string());
        assert_eq!(next_page(&cur, None, &visited, same), NextPage::End);
        assert!(matches!(
            next_page(&cur, Some("Observation?patient=1&page=2"), &visited, same),
            NextPage::Follow(u) if u.as_str() == "http://h/fhir/Observation?patient=1&page=2"
        ));
        assert!(matches!(
            next_page(&cur, Some(cur.as_str()), &visited, same),
            NextPage::Problem(_)
        ));
        assert!(matches!(
            next_page(&cur, Some("http://evil/fhir/x"), &visited, same),
            NextPage::Problem(_)
        ));
    }

    proptest! {
        #[test]
        fn link_handling_never_panics(cur in "http://h/[a-z/?=&]{0,30}", next in ".*") {
            if let Ok(c) = url::Url::parse(&cur) {
                let _ = next_page(&c, Some(&next), &HashSet::new(), |_| true);
            }
        }

        #[test]
        fn bundle_parsing_never_panics(s in ".*") {
            if let Ok(b) = Bundle::parse(s.as_bytes()) {
                let _ = b.next_link();
                let _ = bundle_page(b, &src(), &mut HashSet::new());
            }
        }

        #[test]
        fn bundle_parsing_of_bundle_like_input_never_panics(
            s in r#"\{"resourceType":"Bundle","link":[\{"relation":"next","url":[a-z":/0-9\{\}\[\],]{0,40}\}],"entry":[\{"resource":[a-zA-Z":/0-9\{\}\[\],]{0,80}\}]\}"#
        ) {
            if let Ok(b) = Bundle::parse(s.as_bytes()) {
                let _ = b.next_link();
                let _ = bundle_page(b, &src(), &mut HashSet::new());
            }
        }
    }
}
