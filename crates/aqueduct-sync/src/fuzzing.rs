//! The functions the fuzz targets in `fuzz/` call, public so that the committed corpus is
//! replayed by an ordinary test (CI builds no fuzzer). Each takes arbitrary bytes, as a server
//! would send them, runs them through the code a sync runs them through, and must never
//! panic; a violated invariant panics, which is how the fuzzer reports it. Each returns what
//! the input exercised, so the replay test can check that the corpus still reaches the paths
//! it was written for.

use std::collections::{BTreeMap, HashSet};

use aqueduct_client::fhir::{Bundle, CapabilityStatement, OperationOutcome};
use chrono::{DateTime, Utc};
use url::Url;

use crate::outcome::{OutcomeMeaning, outcome_meaning};
use crate::page::{NextPage, Page, PageSource, bundle_page, next_page, raw_resource, synthetic_id};
use crate::refs::{Found, MAX_ID_LEN, RefTarget, collect, parse_reference};

/// The server the fuzzed bytes come from.
const BASE: &str = "https://ehr.example/fhir/r4/";
/// The request the fuzzed page answers.
const PAGE_URL: &str = "https://ehr.example/fhir/r4/Observation?patient=p1&_count=50";
/// Pages of the same search already read before this one.
const VISITED: &[&str] = &[
    PAGE_URL,
    "https://ehr.example/fhir/r4/Observation?patient=p1&_count=50&page=1",
];

/// What one input reached (summed over a corpus by the replay test).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exercised {
    /// Inputs that parsed as a Bundle (any JSON object does).
    pub bundles: usize,
    /// Next links that would be followed.
    pub followed: usize,
    /// Next links refused (loop, foreign server, unusable).
    pub refused_next: usize,
    /// Resources kept, duplicates skipped, outcome entries, malformed entries.
    pub resources: usize,
    pub duplicates: u64,
    pub outcomes: usize,
    /// Outcome entries that make the search a gap (error, fatal, suppressed).
    pub gap_outcomes: usize,
    pub malformed: u64,
    /// Resources that got a synthetic id.
    pub synthetic_ids: usize,
    /// Resources stored with their bytes replaced lossily (not UTF-8 on the wire).
    pub lossy: usize,
    /// Parsed references, by kind, and attachment URLs.
    pub local_refs: usize,
    pub versioned_refs: usize,
    pub contained_refs: usize,
    pub urn_refs: usize,
    pub external_refs: usize,
    pub invalid_refs: usize,
    pub attachments: usize,
    /// Whole inputs that parsed as an OperationOutcome / a CapabilityStatement.
    pub operation_outcomes: usize,
    pub capability_statements: usize,
}

impl Exercised {
    /// Adds another input's counts to these.
    pub fn add(&mut self, o: &Exercised) {
        self.bundles += o.bundles;
        self.followed += o.followed;
        self.refused_next += o.refused_next;
        self.resources += o.resources;
        self.duplicates += o.duplicates;
        self.outcomes += o.outcomes;
        self.gap_outcomes += o.gap_outcomes;
        self.malformed += o.malformed;
        self.synthetic_ids += o.synthetic_ids;
        self.lossy += o.lossy;
        self.local_refs += o.local_refs;
        self.versioned_refs += o.versioned_refs;
        self.contained_refs += o.contained_refs;
        self.urn_refs += o.urn_refs;
        self.external_refs += o.external_refs;
        self.invalid_refs += o.invalid_refs;
        self.attachments += o.attachments;
        self.operation_outcomes += o.operation_outcomes;
        self.capability_statements += o.capability_statements;
    }

    fn count_page(&mut self, page: &Page) {
        self.resources += page.resources.len();
        self.duplicates += page.duplicates;
        self.outcomes += page.outcomes.len();
        self.gap_outcomes += page
            .outcomes
            .iter()
            .filter(|o| matches!(o.meaning, OutcomeMeaning::Gap(_)))
            .count();
        self.malformed += page.malformed;
    }

    fn count_target(&mut self, t: &RefTarget) {
        match t {
            RefTarget::Local {
                id,
                resource_type,
                version,
            } => {
                assert!(!id.is_empty() && id.len() <= MAX_ID_LEN, "local id {id:?}");
                assert!(!resource_type.is_empty(), "local reference without a type");
                self.local_refs += 1;
                self.versioned_refs += usize::from(version.is_some());
            }
            RefTarget::Contained(_) => self.contained_refs += 1,
            RefTarget::Urn(_) => self.urn_refs += 1,
            RefTarget::External(_) => self.external_refs += 1,
            RefTarget::Invalid(_) => self.invalid_refs += 1,
        }
    }

    /// Parses every reference and attachment URL found, as reference resolution does.
    fn resolve_found(&mut self, found: &Found, base: &Url) {
        for r in &found.references {
            self.count_target(&parse_reference(r, base));
        }
        for a in &found.attachments {
            self.attachments += 1;
            self.count_target(&parse_reference(a, base));
        }
    }
}

fn base() -> Url {
    match Url::parse(BASE) {
        Ok(u) => u,
        Err(e) => panic!("the fuzzing base {BASE} must parse: {e}"),
    }
}

fn page_url() -> Url {
    match Url::parse(PAGE_URL) {
        Ok(u) => u,
        Err(e) => panic!("the fuzzing page URL {PAGE_URL} must parse: {e}"),
    }
}

/// What `FhirClient::is_same_server` decides for a client of [`BASE`].
fn same_server(base: &Url, url: &Url) -> bool {
    let (path, bp) = (url.path(), base.path());
    url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && path.len() >= bp.len()
        && path.is_char_boundary(bp.len())
        && path[..bp.len()].eq_ignore_ascii_case(bp)
}

fn source(url: &str, collect_refs: bool) -> PageSource<'_> {
    PageSource {
        url,
        patient_id: Some("p1"),
        expected_type: Some("Observation"),
        fetched_at: DateTime::<Utc>::UNIX_EPOCH,
        collect_refs,
    }
}

/// A search page: the Bundle, its next link checked against the page's URL and the pages
/// already read, its entries split into resources (references collected), each reference and
/// attachment parsed; the same bytes also as an OperationOutcome and a CapabilityStatement.
pub fn fhir_page(data: &[u8]) -> Exercised {
    let mut ex = Exercised::default();
    let base = base();
    if let Ok(bundle) = Bundle::parse(data) {
        ex.bundles += 1;
        let _ = (bundle.is_bundle(), bundle.self_link(), bundle.total);
        let current = page_url();
        let visited: HashSet<String> = VISITED.iter().map(|s| s.to_string()).collect();
        match next_page(&current, bundle.next_link(), &visited, |u| {
            same_server(&base, u)
        }) {
            NextPage::End => assert!(bundle.next_link().is_none()),
            NextPage::Follow(u) => {
                assert!(same_server(&base, &u), "followed a foreign next link {u}");
                assert!(u != current && !visited.contains(u.as_str()), "loop {u}");
                ex.followed += 1;
            }
            NextPage::Problem(_) => ex.refused_next += 1,
        }
        let page = bundle_page(bundle, &source(PAGE_URL, true), &mut HashSet::new());
        ex.count_page(&page);
        ex.resolve_found(&page.found, &base);
        for r in &page.resources {
            ex.synthetic_ids += usize::from(r.logical_id == synthetic_id(&r.bytes));
        }
    }
    if let Some(oo) = OperationOutcome::parse(data) {
        ex.operation_outcomes += 1;
        let _ = oo.summary();
        let _ = outcome_meaning(
            oo.issue
                .iter()
                .map(|i| (i.severity.as_deref(), i.code.as_deref())),
        );
    }
    if let Some(cs) = CapabilityStatement::parse(data) {
        ex.capability_statements += 1;
        for t in cs.resource_types() {
            assert!(cs.supports_type(&t));
            let _ = cs.supports_search_param(&t, "patient");
        }
        let _ = (
            cs.supports_operation("Patient", "$everything"),
            cs.supports_batch(),
        );
    }
    ex
}

/// Where `needle` occurs in `hay` at or after `from`.
fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let rest = hay.get(from..)?;
    if needle.is_empty() {
        return Some(from);
    }
    rest.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A batch-response or searchset Bundle, possibly with duplicates: split twice with one
/// shared `seen` set (the second time everything is a duplicate) and once afresh (the same
/// ids again), checking what must hold for any input.
pub fn bundle_handling(data: &[u8]) -> Exercised {
    let mut ex = Exercised::default();
    let base = base();
    let parse = || Bundle::parse(data).ok();
    let (Some(first), Some(second), Some(fresh)) = (parse(), parse(), parse()) else {
        return ex;
    };
    ex.bundles += 1;
    let entries = first.entry.len();
    let src = source(PAGE_URL, true);
    let mut seen = HashSet::new();
    let page = bundle_page(first, &src, &mut seen);
    ex.count_page(&page);
    ex.resolve_found(&page.found, &base);

    let accounted =
        page.resources.len() as u64 + page.duplicates + page.outcomes.len() as u64 + page.malformed;
    assert_eq!(accounted, entries as u64, "entries lost or counted twice");
    assert_eq!(
        page.duplicates_by_type.values().sum::<u64>(),
        page.duplicates,
        "duplicates by type do not add up"
    );
    assert_eq!(seen.len(), page.resources.len(), "seen set out of step");

    let mut keys = HashSet::new();
    let mut recollected = Found::default();
    let mut at = 0;
    for r in &page.resources {
        let text = match std::str::from_utf8(&r.bytes) {
            Ok(t) => t,
            Err(e) => panic!("stored bytes are not UTF-8: {e}"),
        };
        assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
            "stored bytes are not JSON: {text:?}"
        );
        // exactly as received: the text is in the input, in entry order
        match find_from(data, &r.bytes, at) {
            Some(p) => at = p + r.bytes.len(),
            None => panic!("stored bytes are not the input's text: {text:?}"),
        }
        assert!(!r.resource_type.is_empty(), "a resource without a type");
        assert_ne!(
            r.resource_type, "OperationOutcome",
            "an outcome stored as data"
        );
        assert!(!r.logical_id.trim().is_empty(), "a resource without an id");
        assert!(
            keys.insert((r.resource_type.as_str(), r.logical_id.as_str())),
            "({}, {}) stored twice",
            r.resource_type,
            r.logical_id
        );
        if r.logical_id == synthetic_id(&r.bytes) {
            ex.synthetic_ids += 1;
            assert_ne!(
                r.parse_status.code(),
                "ok",
                "a synthetic id on a valid resource"
            );
        }
        assert_eq!(r.source_url, PAGE_URL);
        collect(text, &mut recollected);
    }
    assert_eq!(
        recollected, page.found,
        "references differ from the resources'"
    );

    // the same page again with the same seen set: nothing new, every resource a duplicate
    let again = bundle_page(second, &src, &mut seen);
    assert!(
        again.resources.is_empty(),
        "a resource stored twice across pages"
    );
    assert_eq!(
        again.duplicates,
        page.duplicates + page.resources.len() as u64,
        "duplicates across pages miscounted"
    );
    assert_eq!(again.outcomes, page.outcomes);
    assert_eq!(again.malformed, page.malformed);
    let mut by_type: BTreeMap<String, u64> = page.duplicates_by_type.clone();
    for r in &page.resources {
        *by_type.entry(r.resource_type.clone()).or_default() += 1;
    }
    assert_eq!(again.duplicates_by_type, by_type);

    // afresh: the same resources with the same (synthetic) ids, bytes and statuses
    let fresh = bundle_page(fresh, &src, &mut HashSet::new());
    let ids = |p: &Page| {
        p.resources
            .iter()
            .map(|r| {
                (
                    r.resource_type.clone(),
                    r.logical_id.clone(),
                    r.bytes.clone(),
                    r.parse_status.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&fresh), ids(&page), "ids are not deterministic");
    ex
}

/// A Bulk Data NDJSON file: split on '\n', each line (decoded lossily, as a `String` is what
/// [`raw_resource`] takes) turned into a raw resource and its references collected and parsed.
pub fn ndjson_lines(data: &[u8]) -> Exercised {
    let mut ex = Exercised::default();
    let base = base();
    let url = "https://ehr.example/bulk/job-1/Observation-1.ndjson";
    let src = source(url, true);
    for line in data.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line).into_owned();
        let raw = raw_resource(text.clone(), &src);
        assert_eq!(
            raw.bytes,
            text.as_bytes(),
            "stored bytes differ from the line"
        );
        if std::str::from_utf8(line).is_ok() {
            assert_eq!(raw.bytes, line, "a UTF-8 line not stored exactly");
        } else {
            ex.lossy += 1;
        }
        assert!(!raw.resource_type.is_empty(), "a line without a type");
        assert!(!raw.logical_id.trim().is_empty(), "a line without an id");
        if raw.logical_id == synthetic_id(&raw.bytes) {
            ex.synthetic_ids += 1;
        }
        // deterministic: the same line gives the same resource
        let twice = raw_resource(text.clone(), &src);
        assert_eq!(
            (&twice.resource_type, &twice.logical_id, &twice.parse_status),
            (&raw.resource_type, &raw.logical_id, &raw.parse_status)
        );
        ex.resources += 1;
        let mut found = Found::default();
        collect(&text, &mut found);
        ex.resolve_found(&found, &base);
    }
    ex
}
