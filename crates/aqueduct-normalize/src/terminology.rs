//! Terminology tables (curated embedded starters plus loaders for official release files),
//! code-system recognition, the per-connection mapping table and text matching.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use serde::Serialize;

use crate::code_format::{self, FormatError};
use crate::csv::read_record;
use crate::error::NormalizeError;

pub const LOINC: &str = "http://loinc.org";
pub const SNOMED: &str = "http://snomed.info/sct";
pub const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub const NDC: &str = "http://hl7.org/fhir/sid/ndc";
pub const CVX: &str = "http://hl7.org/fhir/sid/cvx";
pub const CPT: &str = "http://www.ama-assn.org/go/cpt";
pub const UCUM: &str = "http://unitsofmeasure.org";
/// The NPI identifier system (identifiers, not codes: checked, never resolved).
pub const NPI: &str = "http://hl7.org/fhir/sid/us-npi";

/// The standard code systems this crate recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StdSystem {
    Loinc,
    Snomed,
    Icd10Cm,
    RxNorm,
    Ndc,
    Cvx,
    Cpt,
}

impl StdSystem {
    pub fn uri(self) -> &'static str {
        match self {
            StdSystem::Loinc => LOINC,
            StdSystem::Snomed => SNOMED,
            StdSystem::Icd10Cm => ICD10CM,
            StdSystem::RxNorm => RXNORM,
            StdSystem::Ndc => NDC,
            StdSystem::Cvx => CVX,
            StdSystem::Cpt => CPT,
        }
    }

    /// Whether `code` has the shape of a code of this system (see [`Self::check`]).
    pub fn valid_code(self, code: &str) -> bool {
        self.check(code).is_ok()
    }

    /// Checks that `code` (surrounding spaces ignored) could be a code of this system:
    /// LOINC mod-10 and SNOMED CT Verhoeff check digits, SNOMED CT concept-id structure,
    /// the ICD-10-CM pattern, RxNorm and CVX numbers, NDC segments, CPT. A code that fails
    /// was labelled with a system it does not belong to.
    pub fn check(self, code: &str) -> Result<(), FormatError> {
        let c = code.trim();
        match self {
            StdSystem::Loinc => code_format::loinc(c),
            StdSystem::Snomed => code_format::snomed_concept(c),
            StdSystem::Icd10Cm => code_format::icd10cm(c),
            StdSystem::RxNorm => code_format::rxnorm(c),
            StdSystem::Ndc => code_format::ndc(c).map(|_| ()),
            StdSystem::Cvx => code_format::cvx(c),
            StdSystem::Cpt => code_format::cpt(c),
        }
    }
}

/// Recognises a system URI. The second value is true when the URI is a known variant
/// (OID, missing `http://`, trailing slash, a bare name) rather than the canonical one.
pub fn recognise_system(system: &str) -> Option<(StdSystem, bool)> {
    let s = system.trim();
    let exact = match s {
        LOINC => Some(StdSystem::Loinc),
        SNOMED => Some(StdSystem::Snomed),
        ICD10CM => Some(StdSystem::Icd10Cm),
        RXNORM => Some(StdSystem::RxNorm),
        NDC => Some(StdSystem::Ndc),
        CVX => Some(StdSystem::Cvx),
        CPT => Some(StdSystem::Cpt),
        _ => None,
    };
    if let Some(e) = exact {
        return Some((e, false));
    }
    let l = s.trim_end_matches('/').to_ascii_lowercase();
    let l = l
        .strip_prefix("https://")
        .or_else(|| l.strip_prefix("http://"))
        .unwrap_or(&l);
    let v = match l {
        "loinc.org" | "loinc" | "urn:oid:2.16.840.1.113883.6.1" | "lnc" => StdSystem::Loinc,
        "snomed.info/sct"
        | "snomed"
        | "snomed ct"
        | "snomedct"
        | "sct"
        | "urn:oid:2.16.840.1.113883.6.96" => StdSystem::Snomed,
        "hl7.org/fhir/sid/icd-10-cm"
        | "icd-10-cm"
        | "icd10cm"
        | "icd10"
        | "icd-10"
        | "urn:oid:2.16.840.1.113883.6.90"
        | "hl7.org/fhir/sid/icd-10" => StdSystem::Icd10Cm,
        "www.nlm.nih.gov/research/umls/rxnorm" | "rxnorm" | "urn:oid:2.16.840.1.113883.6.88" => {
            StdSystem::RxNorm
        }
        "hl7.org/fhir/sid/ndc" | "ndc" | "urn:oid:2.16.840.1.113883.6.69" => StdSystem::Ndc,
        "hl7.org/fhir/sid/cvx" | "cvx" | "urn:oid:2.16.840.1.113883.12.292" => StdSystem::Cvx,
        "www.ama-assn.org/go/cpt" | "cpt" | "cpt-4" | "urn:oid:2.16.840.1.113883.6.12" => {
            StdSystem::Cpt
        }
        _ => return None,
    };
    Some((v, true))
}

/// LOINC "mod 10" check digit (the Luhn algorithm over the part before the hyphen).
pub fn loinc_check_digit_ok(code: &str) -> bool {
    code_format::loinc(code).is_ok()
}

/// SNOMED CT identifier check: 6 to 18 digits, no leading zero, valid Verhoeff check digit
/// (any component; a coding's code must also be a concept id: [`code_format::snomed_concept`]).
pub fn snomed_check_digit_ok(code: &str) -> bool {
    code_format::snomed_id(code).is_ok()
}

fn icd10_shape_ok(c: &str) -> bool {
    code_format::icd10cm(c).is_ok()
}

/// An ICD-10-CM code without the dot, upper case ("e11.9" -> "E119").
pub fn compact_icd10(code: &str) -> String {
    code.trim()
        .chars()
        .filter(|&c| c != '.')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// NDC to the 11-digit 5-4-2 form used by RxNorm: hyphenated 4-4-2, 5-3-2, 5-4-1 are padded;
/// a bare 11-digit string is kept; a bare 10-digit string is ambiguous and refused.
pub fn normalize_ndc(code: &str) -> Option<String> {
    code_format::ndc_11(code.trim())
}

/// Whether an identifier system is the US National Provider Identifier.
pub fn is_npi_system(system: &str) -> bool {
    let s = system.trim().trim_end_matches('/');
    s == NPI || s.eq_ignore_ascii_case("urn:oid:2.16.840.1.113883.4.6")
}

/// What a LOINC code measures, for routing (vital vs lab vs panel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoincKind {
    Vital,
    Lab,
    Panel,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoincEntry {
    pub code: String,
    pub name: String,
    pub kind: LoincKind,
    pub canonical_unit: Option<String>,
    pub molar_mass: Option<f64>,
    pub plausible: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnomedEntry {
    pub display: String,
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRange {
    pub group: String,
    pub from: String,
    pub to: String,
    pub display: String,
}

impl GroupRange {
    /// Whether a compacted code (no dot) falls in the range; codes are compared truncated to
    /// each bound's length, so `I16` covers `I16.0`.
    fn covers(&self, compact: &str) -> bool {
        if !compact.is_ascii() || compact.is_empty() {
            return false;
        }
        let lo = &compact[..compact.len().min(self.from.len())];
        let hi = &compact[..compact.len().min(self.to.len())];
        lo >= self.from.as_str() && hi <= self.to.as_str()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RxEntry {
    pub name: String,
    pub tty: String,
    pub ingredient: Option<String>,
}

/// Which terminology a text is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Domain {
    Observation,
    Condition,
    Medication,
    Immunization,
    Allergy,
    Procedure,
    Document,
}

impl Domain {
    /// Standard systems accepted directly, in order of preference.
    pub fn standard_systems(self) -> &'static [StdSystem] {
        match self {
            Domain::Observation | Domain::Document => &[StdSystem::Loinc, StdSystem::Snomed],
            Domain::Condition => &[StdSystem::Icd10Cm, StdSystem::Snomed],
            Domain::Medication => &[StdSystem::RxNorm],
            Domain::Immunization => &[StdSystem::Cvx],
            Domain::Allergy => &[StdSystem::RxNorm, StdSystem::Snomed],
            Domain::Procedure => &[StdSystem::Cpt, StdSystem::Snomed],
        }
    }
}

/// One mapping a user maintains for a connection: a local code to a standard one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LocalMapping {
    pub source_system: String,
    pub source_code: String,
    pub target_system: String,
    pub target_code: String,
    pub target_display: Option<String>,
}

/// A candidate found by text matching.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextMatch {
    pub system: &'static str,
    pub code: String,
    pub display: String,
    pub score: f64,
    /// Another code scored within 0.02 of this one: the match is ambiguous.
    pub ambiguous: bool,
}

#[derive(Debug, Clone)]
struct IndexEntry {
    norm: String,
    tokens: Vec<String>,
    system: &'static str,
    code: String,
    display: String,
}

#[derive(Debug, Clone, Default)]
struct TextIndex {
    entries: Vec<IndexEntry>,
    exact: HashMap<String, Vec<usize>>,
    by_token: HashMap<String, Vec<usize>>,
}

impl TextIndex {
    fn add(&mut self, text: &str, system: &'static str, code: &str, display: &str) {
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return;
        }
        let norm = tokens.join(" ");
        let id = self.entries.len();
        self.exact.entry(norm.clone()).or_default().push(id);
        for t in &tokens {
            let ids = self.by_token.entry(t.clone()).or_default();
            if ids.last() != Some(&id) {
                ids.push(id);
            }
        }
        self.entries.push(IndexEntry {
            norm,
            tokens,
            system,
            code: code.to_string(),
            display: display.to_string(),
        });
    }

    fn best(&self, text: &str) -> Option<TextMatch> {
        let q = tokenize(text);
        if q.is_empty() {
            return None;
        }
        let norm = q.join(" ");
        let mut scored: Vec<(f64, usize)> = Vec::new();
        if let Some(ids) = self.exact.get(&norm) {
            scored.extend(ids.iter().map(|&i| (1.0, i)));
        } else {
            // candidates from the rarest query tokens first, capped: with a full LOINC table
            // loaded, tokens such as "serum" are in tens of thousands of names
            const MAX_CANDIDATES: usize = 5000;
            let mut postings: Vec<&Vec<usize>> =
                q.iter().filter_map(|t| self.by_token.get(t)).collect();
            postings.sort_by_key(|p| p.len());
            let mut cands: Vec<usize> = Vec::new();
            for p in postings {
                if !cands.is_empty() && cands.len() + p.len() > MAX_CANDIDATES {
                    break;
                }
                cands.extend(p.iter().take(MAX_CANDIDATES));
            }
            // also consider near-miss tokens (typos) when no token matched exactly
            if cands.is_empty() {
                // cheap prefilter: typo candidates share the first two characters and have
                // a similar length (Jaro-Winkler >= 0.92 rarely holds otherwise)
                let near = |a: &str, b: &str| {
                    a.len() >= 5
                        && b.len() >= 5
                        && a.as_bytes()[..2] == b.as_bytes()[..2]
                        && a.len().abs_diff(b.len()) <= 2
                };
                for (tok, ids) in &self.by_token {
                    if q.iter().any(|t| near(t, tok) && token_sim(t, tok) > 0.0) {
                        cands.extend(ids);
                    }
                }
            }
            cands.sort_unstable();
            cands.dedup();
            for i in cands {
                let e = &self.entries[i];
                let s = soft_token_score(&q, &e.tokens);
                scored.push((s, i));
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let &(best_score, best_id) = scored.first()?;
        let best = &self.entries[best_id];
        let ambiguous = scored.iter().skip(1).any(|&(s, i)| {
            best_score - s < 0.02
                && (self.entries[i].code != best.code || self.entries[i].system != best.system)
        });
        let _ = &best.norm;
        Some(TextMatch {
            system: best.system,
            code: best.code.clone(),
            display: best.display.clone(),
            score: best_score,
            ambiguous,
        })
    }
}

const STOPWORDS: &[&str] = &[
    "in", "of", "the", "by", "and", "or", "with", "a", "an", "for",
];

/// Lower-case alphanumeric tokens without stop words.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .collect()
}

fn token_sim(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    // short tokens (abbreviations, "hdl"/"ldl") must match exactly
    if a.chars().count() < 5 || b.chars().count() < 5 {
        return 0.0;
    }
    let s = strsim::jaro_winkler(a, b);
    if s >= 0.92 { s } else { 0.0 }
}

/// Symmetric soft token overlap in [0, 1]: every token of each side is matched with its most
/// similar token on the other side (Jaro-Winkler >= 0.92 for tokens of 5+ characters, exact
/// otherwise).
pub fn soft_token_score(q: &[String], c: &[String]) -> f64 {
    if q.is_empty() || c.is_empty() {
        return 0.0;
    }
    let side = |a: &[String], b: &[String]| -> f64 {
        a.iter()
            .map(|x| b.iter().map(|y| token_sim(x, y)).fold(0.0, f64::max))
            .sum()
    };
    (side(q, c) + side(c, q)) / (q.len() + c.len()) as f64
}

/// All terminology the normalizer uses. Build with [`Terminology::embedded`] and extend with
/// the loaders for official release files.
#[derive(Debug, Clone, Default)]
pub struct Terminology {
    pub loinc: HashMap<String, LoincEntry>,
    pub snomed: HashMap<String, SnomedEntry>,
    pub icd10cm: HashMap<String, String>,
    pub groups: Vec<GroupRange>,
    /// ICD-10-CM chapters (`group` holds the chapter number, `display` its title).
    pub chapters: Vec<GroupRange>,
    pub rxnorm: HashMap<String, RxEntry>,
    pub ndc: HashMap<String, String>,
    pub cvx: HashMap<String, String>,
    /// table name -> version, recorded on every code the table produced.
    pub versions: BTreeMap<String, String>,
    synonyms: Vec<(Domain, &'static str, String, String)>,
    indexes: HashMap<Domain, TextIndex>,
}

const EMB_LOINC: &str = include_str!("../terminology/loinc.csv");
const EMB_GROUPS: &str = include_str!("../terminology/condition_groups.csv");
const EMB_CHAPTERS: &str = include_str!("../terminology/icd10cm_chapters.csv");
const EMB_SNOMED: &str = include_str!("../terminology/snomed.csv");
const EMB_CVX: &str = include_str!("../terminology/cvx.csv");
const EMB_RXNORM: &str = include_str!("../terminology/rxnorm.csv");
const EMB_NDC: &str = include_str!("../terminology/ndc_rxnorm.csv");

fn version_of(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .find_map(|l| l.split("Version:").nth(1))
        .map(|v| v.split_whitespace().next().unwrap_or("unknown").to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

fn rows(text: &str) -> impl Iterator<Item = Vec<String>> + '_ {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| crate::csv::split(l, b','))
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

impl Terminology {
    /// The curated tables shipped with the crate.
    pub fn embedded() -> Self {
        let mut t = Terminology::default();
        t.load_loinc_curated(EMB_LOINC, &version_of(EMB_LOINC));
        for r in rows(EMB_GROUPS) {
            if r.len() >= 4 {
                t.groups.push(GroupRange {
                    group: r[0].trim().to_string(),
                    from: compact_icd10(&r[1]),
                    to: compact_icd10(&r[2]),
                    display: r[3].trim().to_string(),
                });
            }
        }
        t.versions
            .insert("condition-groups".into(), version_of(EMB_GROUPS));
        for r in rows(EMB_CHAPTERS) {
            if r.len() >= 4 {
                t.chapters.push(GroupRange {
                    group: r[0].trim().to_string(),
                    from: compact_icd10(&r[1]),
                    to: compact_icd10(&r[2]),
                    display: r[3].trim().to_string(),
                });
            }
        }
        t.versions
            .insert("icd10cm-chapters".into(), version_of(EMB_CHAPTERS));
        for r in rows(EMB_SNOMED) {
            if r.len() >= 3 {
                let code = r[0].trim().to_string();
                let display = r[2].trim().to_string();
                if let Some(syn) = r.get(3) {
                    for s in syn.split(';').filter(|s| !s.trim().is_empty()) {
                        t.synonyms.push((
                            Domain::Condition,
                            SNOMED,
                            code.clone(),
                            s.trim().to_string(),
                        ));
                    }
                }
                t.snomed.insert(
                    code,
                    SnomedEntry {
                        display,
                        group: opt(&r[1]),
                    },
                );
            }
        }
        t.versions.insert("snomed".into(), version_of(EMB_SNOMED));
        for r in rows(EMB_CVX) {
            if r.len() >= 2 {
                t.cvx
                    .insert(r[0].trim().to_string(), r[1].trim().to_string());
            }
        }
        t.versions.insert("cvx".into(), version_of(EMB_CVX));
        for r in rows(EMB_RXNORM) {
            if r.len() >= 3 {
                t.rxnorm.insert(
                    r[0].trim().to_string(),
                    RxEntry {
                        tty: r[1].trim().to_string(),
                        name: r[2].trim().to_string(),
                        ingredient: r.get(3).and_then(|s| opt(s)),
                    },
                );
            }
        }
        t.versions.insert("rxnorm".into(), version_of(EMB_RXNORM));
        for r in rows(EMB_NDC) {
            if r.len() >= 2
                && let Some(n) = normalize_ndc(&r[0])
            {
                t.ndc.insert(n, r[1].trim().to_string());
            }
        }
        t.versions.insert("ndc".into(), version_of(EMB_NDC));
        t.versions.insert("icd10cm".into(), "shape-only".into());
        t.versions.insert("ucum".into(), crate::units::version());
        t.rebuild_indexes();
        t
    }

    fn load_loinc_curated(&mut self, text: &str, version: &str) {
        for r in rows(text) {
            if r.len() < 4 {
                continue;
            }
            let code = r[0].trim().to_string();
            let kind = match r[1].trim() {
                "vital" => LoincKind::Vital,
                "lab" => LoincKind::Lab,
                "panel" => LoincKind::Panel,
                _ => LoincKind::Other,
            };
            let num = |i: usize| r.get(i).and_then(|s| s.trim().parse::<f64>().ok());
            let plausible = match (num(5), num(6)) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => None,
            };
            if let Some(syn) = r.get(7) {
                for s in syn.split(';').filter(|s| !s.trim().is_empty()) {
                    self.synonyms.push((
                        Domain::Observation,
                        LOINC,
                        code.clone(),
                        s.trim().to_string(),
                    ));
                }
            }
            self.loinc.insert(
                code.clone(),
                LoincEntry {
                    code,
                    name: r[2].trim().to_string(),
                    kind,
                    canonical_unit: opt(&r[3]),
                    molar_mass: num(4),
                    plausible,
                },
            );
        }
        self.versions.insert("loinc".into(), version.to_string());
    }

    /// Rebuilds the text-matching indexes (the loaders call it; call it after editing the
    /// public maps by hand).
    pub fn rebuild_indexes(&mut self) {
        let mut idx: HashMap<Domain, TextIndex> = HashMap::new();
        {
            let obs = idx.entry(Domain::Observation).or_default();
            let mut codes: Vec<&LoincEntry> = self.loinc.values().collect();
            codes.sort_by(|a, b| a.code.cmp(&b.code));
            for e in codes {
                obs.add(&e.name, LOINC, &e.code, &e.name);
            }
        }
        {
            let cond = idx.entry(Domain::Condition).or_default();
            let mut codes: Vec<(&String, &SnomedEntry)> = self.snomed.iter().collect();
            codes.sort_by(|a, b| a.0.cmp(b.0));
            for (c, e) in codes {
                cond.add(&strip_semantic_tag(&e.display), SNOMED, c, &e.display);
            }
            let mut icd: Vec<(&String, &String)> = self.icd10cm.iter().collect();
            icd.sort();
            for (c, d) in icd {
                cond.add(d, ICD10CM, c, d);
            }
        }
        {
            let mut codes: Vec<(&String, &RxEntry)> = self.rxnorm.iter().collect();
            codes.sort_by(|a, b| a.0.cmp(b.0));
            for dom in [Domain::Medication, Domain::Allergy] {
                let m = idx.entry(dom).or_default();
                for (c, e) in &codes {
                    m.add(&e.name, RXNORM, c, &e.name);
                }
            }
        }
        {
            let imm = idx.entry(Domain::Immunization).or_default();
            let mut codes: Vec<(&String, &String)> = self.cvx.iter().collect();
            codes.sort();
            for (c, n) in codes {
                imm.add(n, CVX, c, n);
            }
        }
        for (dom, sys, code, syn) in &self.synonyms {
            let display = match *sys {
                LOINC => self.loinc.get(code).map(|e| e.name.clone()),
                SNOMED => self.snomed.get(code).map(|e| e.display.clone()),
                _ => None,
            }
            .unwrap_or_else(|| syn.clone());
            idx.entry(*dom).or_default().add(syn, sys, code, &display);
        }
        self.indexes = idx;
    }

    /// The best text match in a domain, if any token overlaps.
    pub fn match_text(&self, domain: Domain, text: &str) -> Option<TextMatch> {
        let d = match domain {
            Domain::Document => Domain::Observation,
            d => d,
        };
        self.indexes.get(&d)?.best(text)
    }

    /// Condition groups of an ICD-10-CM code (by range) — may be several.
    pub fn icd10_groups(&self, code: &str) -> Vec<&str> {
        let c = compact_icd10(code);
        self.groups
            .iter()
            .filter(|g| g.covers(&c))
            .map(|g| g.group.as_str())
            .collect()
    }

    /// The ICD-10-CM chapter of a code (`I50.22` -> 9, Diseases of the circulatory system).
    pub fn icd10_chapter(&self, code: &str) -> Option<&GroupRange> {
        let c = compact_icd10(code);
        self.chapters.iter().find(|g| g.covers(&c))
    }

    /// Condition group of a SNOMED CT concept, from the curated concept table.
    pub fn snomed_group(&self, code: &str) -> Option<&str> {
        self.snomed.get(code.trim())?.group.as_deref()
    }

    pub fn version(&self, table: &str) -> String {
        self.versions
            .get(table)
            .cloned()
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// Adds condition-group ranges from a CSV with the columns of the embedded table.
    pub fn load_condition_groups<R: BufRead>(
        &mut self,
        mut r: R,
        version: &str,
    ) -> Result<usize, NormalizeError> {
        let mut text = String::new();
        r.read_to_string(&mut text)
            .map_err(|e| NormalizeError::load("condition groups", 0, e))?;
        let mut n = 0;
        for (i, rec) in rows(&text).enumerate() {
            if rec.len() < 3 {
                return Err(NormalizeError::load(
                    "condition groups",
                    i as u64 + 1,
                    "expected group,from,to[,display]",
                ));
            }
            self.groups.push(GroupRange {
                group: rec[0].trim().to_string(),
                from: compact_icd10(&rec[1]),
                to: compact_icd10(&rec[2]),
                display: rec.get(3).map(|s| s.trim().to_string()).unwrap_or_default(),
            });
            n += 1;
        }
        self.versions
            .insert("condition-groups".into(), version.to_string());
        Ok(n)
    }

    /// Adds SNOMED CT concepts with their condition group (CSV with the columns of the
    /// embedded `snomed.csv`: concept_id,group,display,synonyms). SNOMED CT has no ranges:
    /// list every concept (descendants included) that belongs to a group.
    pub fn load_snomed_groups<R: BufRead>(
        &mut self,
        mut r: R,
        version: &str,
    ) -> Result<usize, NormalizeError> {
        let mut text = String::new();
        r.read_to_string(&mut text)
            .map_err(|e| NormalizeError::load("snomed groups", 0, e))?;
        let mut n = 0;
        for (i, rec) in rows(&text).enumerate() {
            if rec.len() < 3 || code_format::snomed_concept(rec[0].trim()).is_err() {
                return Err(NormalizeError::load(
                    "snomed groups",
                    i as u64 + 1,
                    "expected concept_id,group,display[,synonyms] with a valid SNOMED CT concept id",
                ));
            }
            let code = rec[0].trim().to_string();
            if let Some(syn) = rec.get(3) {
                for s in syn.split(';').filter(|s| !s.trim().is_empty()) {
                    self.synonyms.push((
                        Domain::Condition,
                        SNOMED,
                        code.clone(),
                        s.trim().to_string(),
                    ));
                }
            }
            self.snomed.insert(
                code,
                SnomedEntry {
                    display: rec[2].trim().to_string(),
                    group: opt(&rec[1]),
                },
            );
            n += 1;
        }
        self.versions.insert("snomed".into(), version.to_string());
        self.rebuild_indexes();
        Ok(n)
    }

    /// Loads the official LOINC table (`LoincTableCore.csv` or `Loinc.csv`): header row,
    /// quoted comma-separated fields. Uses LOINC_NUM, LONG_COMMON_NAME (or COMPONENT),
    /// EXAMPLE_UCUM_UNITS, CLASSTYPE, STATUS; DEPRECATED codes are skipped. Curated entries
    /// keep their canonical unit and synonyms.
    pub fn load_loinc_csv<R: BufRead>(
        &mut self,
        mut r: R,
        version: &str,
    ) -> Result<usize, NormalizeError> {
        let file = "Loinc.csv";
        let mut buf = String::new();
        let mut line = 0u64;
        let header = read_record(&mut r, b',', &mut buf, &mut line)
            .map_err(|e| NormalizeError::load(file, line, e))?
            .ok_or_else(|| NormalizeError::load(file, 0, "empty file"))?;
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().trim_start_matches('\u{feff}') == name)
        };
        let num =
            col("LOINC_NUM").ok_or_else(|| NormalizeError::load(file, 1, "no LOINC_NUM column"))?;
        let long = col("LONG_COMMON_NAME");
        let component = col("COMPONENT");
        let units = col("EXAMPLE_UCUM_UNITS");
        let status = col("STATUS");
        let class_type = col("CLASSTYPE");
        let class = col("CLASS");
        let mut n = 0;
        while let Some(rec) = read_record(&mut r, b',', &mut buf, &mut line)
            .map_err(|e| NormalizeError::load(file, line, e))?
        {
            if rec.len() == 1 && rec[0].trim().is_empty() {
                continue;
            }
            let get = |i: Option<usize>| i.and_then(|i| rec.get(i)).map(|s| s.trim()).unwrap_or("");
            let code = get(Some(num));
            if code.is_empty() {
                return Err(NormalizeError::load(file, line, "missing LOINC_NUM"));
            }
            if get(status).eq_ignore_ascii_case("DEPRECATED") {
                continue;
            }
            let name = if get(long).is_empty() {
                get(component)
            } else {
                get(long)
            };
            let unit = get(units)
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let kind = if get(class).starts_with("PANEL") {
                LoincKind::Panel
            } else if get(class_type) == "1" {
                LoincKind::Lab
            } else if [
                "BDYWGT", "BDYHGT", "BP", "BDYTMP", "HRTRATE", "RESP", "BDYSURF", "PULSE",
            ]
            .iter()
            .any(|p| get(class).split('.').next() == Some(p))
            {
                LoincKind::Vital
            } else {
                LoincKind::Other
            };
            match self.loinc.get_mut(code) {
                Some(existing) => {
                    existing.name = name.to_string();
                }
                None => {
                    self.loinc.insert(
                        code.to_string(),
                        LoincEntry {
                            code: code.to_string(),
                            name: name.to_string(),
                            kind,
                            canonical_unit: (!unit.is_empty()).then_some(unit),
                            molar_mass: None,
                            plausible: None,
                        },
                    );
                }
            }
            n += 1;
        }
        self.versions.insert("loinc".into(), version.to_string());
        self.rebuild_indexes();
        Ok(n)
    }

    /// Loads RxNorm concept names from `RXNCONSO.RRF` (pipe-delimited, 18 fields + trailing
    /// pipe): rows with SAB=RXNORM, LAT=ENG, SUPPRESS=N and TTY in IN/PIN/MIN/SCD/SBD/BN/GPCK/BPCK.
    pub fn load_rxnconso<R: BufRead>(
        &mut self,
        r: R,
        version: &str,
    ) -> Result<usize, NormalizeError> {
        let file = "RXNCONSO.RRF";
        let mut n = 0;
        for (i, l) in r.lines().enumerate() {
            let l = l.map_err(|e| NormalizeError::load(file, i as u64 + 1, e))?;
            if l.is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split('|').collect();
            if f.len() < 18 {
                return Err(NormalizeError::load(
                    file,
                    i as u64 + 1,
                    format!("expected 18 fields, found {}", f.len()),
                ));
            }
            let (rxcui, lat, sab, tty, s, suppress) = (f[0], f[1], f[11], f[12], f[14], f[16]);
            if lat != "ENG" || sab != "RXNORM" || suppress != "N" {
                continue;
            }
            if !matches!(
                tty,
                "IN" | "PIN" | "MIN" | "SCD" | "SBD" | "BN" | "GPCK" | "BPCK"
            ) {
                continue;
            }
            // keep the ingredient-level name when a concept has several rows
            if self.rxnorm.get(rxcui).is_some_and(|e| e.tty == "IN") {
                continue;
            }
            self.rxnorm.insert(
                rxcui.to_string(),
                RxEntry {
                    name: s.to_string(),
                    tty: tty.to_string(),
                    ingredient: None,
                },
            );
            n += 1;
        }
        self.versions.insert("rxnorm".into(), version.to_string());
        self.rebuild_indexes();
        Ok(n)
    }

    /// Loads the NDC -> RxCUI map from `RXNSAT.RRF`: ATN=NDC with SAB=RXNORM (RxNorm's own
    /// normalized 11-digit NDCs), SUPPRESS=N. A release that has NDC rows REPLACES the
    /// embedded starter map: NDCs are reused, and a pair the release no longer carries must
    /// not survive from an older table.
    pub fn load_rxnsat<R: BufRead>(
        &mut self,
        r: R,
        version: &str,
    ) -> Result<usize, NormalizeError> {
        let file = "RXNSAT.RRF";
        let mut n = 0;
        let mut loaded = HashMap::new();
        for (i, l) in r.lines().enumerate() {
            let l = l.map_err(|e| NormalizeError::load(file, i as u64 + 1, e))?;
            if l.is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split('|').collect();
            if f.len() < 13 {
                return Err(NormalizeError::load(
                    file,
                    i as u64 + 1,
                    format!("expected 13 fields, found {}", f.len()),
                ));
            }
            let (rxcui, atn, sab, atv, suppress) = (f[0], f[8], f[9], f[10], f[11]);
            if atn != "NDC" || sab != "RXNORM" || suppress != "N" {
                continue;
            }
            if let Some(ndc) = normalize_ndc(atv) {
                loaded.insert(ndc, rxcui.to_string());
                n += 1;
            }
        }
        if !loaded.is_empty() {
            self.ndc = loaded;
            self.versions.insert("ndc".into(), version.to_string());
        }
        Ok(n)
    }

    /// Loads SNOMED CT RF2 snapshot files (tab-separated, header row): active concepts from
    /// `sct2_Concept_Snapshot`, their active fully specified names (semantic tag kept in the
    /// display, stripped for matching) and synonyms from `sct2_Description_Snapshot-en`.
    pub fn load_snomed_rf2<C: BufRead, D: BufRead>(
        &mut self,
        concepts: C,
        descriptions: D,
        version: &str,
    ) -> Result<usize, NormalizeError> {
        const FSN: &str = "900000000000003001";
        const SYN: &str = "900000000000013009";
        let mut active: HashMap<String, bool> = HashMap::new();
        for (i, l) in concepts.lines().enumerate() {
            let l =
                l.map_err(|e| NormalizeError::load("sct2_Concept_Snapshot", i as u64 + 1, e))?;
            if i == 0 || l.is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 5 {
                return Err(NormalizeError::load(
                    "sct2_Concept_Snapshot",
                    i as u64 + 1,
                    "expected 5 tab-separated fields",
                ));
            }
            active.insert(f[0].to_string(), f[2] == "1");
        }
        let mut n = 0;
        for (i, l) in descriptions.lines().enumerate() {
            let l =
                l.map_err(|e| NormalizeError::load("sct2_Description_Snapshot", i as u64 + 1, e))?;
            if i == 0 || l.is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 9 {
                return Err(NormalizeError::load(
                    "sct2_Description_Snapshot",
                    i as u64 + 1,
                    "expected 9 tab-separated fields",
                ));
            }
            let (is_active, concept, type_id, term) = (f[2] == "1", f[4], f[6], f[7]);
            if !is_active || active.get(concept) != Some(&true) {
                continue;
            }
            if type_id == FSN {
                let group = self.snomed.get(concept).and_then(|e| e.group.clone());
                self.snomed.insert(
                    concept.to_string(),
                    SnomedEntry {
                        display: term.to_string(),
                        group,
                    },
                );
                n += 1;
            } else if type_id == SYN {
                self.synonyms.push((
                    Domain::Condition,
                    SNOMED,
                    concept.to_string(),
                    term.to_string(),
                ));
            }
        }
        self.versions.insert("snomed".into(), version.to_string());
        self.rebuild_indexes();
        Ok(n)
    }

    /// Loads the ICD-10-CM order file (`icd10cm_order_YYYY.txt`, fixed width: order number
    /// 1-5, code 7-13, header flag 15, short description 17-76, long description 78-).
    /// Only billable codes (flag 1) and headers both feed the text index; all are kept.
    pub fn load_icd10cm_order<R: BufRead>(
        &mut self,
        r: R,
        version: &str,
    ) -> Result<usize, NormalizeError> {
        let file = "icd10cm_order";
        let mut n = 0;
        for (i, l) in r.lines().enumerate() {
            let l = l.map_err(|e| NormalizeError::load(file, i as u64 + 1, e))?;
            if l.trim().is_empty() {
                continue;
            }
            if l.len() < 78
                || !l.is_char_boundary(6)
                || !l.is_char_boundary(13)
                || !l.is_char_boundary(77)
            {
                return Err(NormalizeError::load(
                    file,
                    i as u64 + 1,
                    "line shorter than the fixed-width layout",
                ));
            }
            let code = l[6..13].trim();
            let long = l[77..].trim();
            if !icd10_shape_ok(code) {
                return Err(NormalizeError::load(
                    file,
                    i as u64 + 1,
                    format!("not an ICD-10-CM code: {code:?}"),
                ));
            }
            self.icd10cm.insert(code.to_string(), long.to_string());
            n += 1;
        }
        self.versions.insert("icd10cm".into(), version.to_string());
        self.rebuild_indexes();
        Ok(n)
    }

    /// Loads the CDC CVX table (`cvx.txt`, pipe-delimited: code|short description|full
    /// name|notes|status|internal id|nonvaccine|update date). Non-vaccines are skipped.
    pub fn load_cvx<R: BufRead>(&mut self, r: R, version: &str) -> Result<usize, NormalizeError> {
        let file = "cvx.txt";
        let mut n = 0;
        for (i, l) in r.lines().enumerate() {
            let l = l.map_err(|e| NormalizeError::load(file, i as u64 + 1, e))?;
            if l.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            if f.len() < 3 {
                return Err(NormalizeError::load(
                    file,
                    i as u64 + 1,
                    "expected code|short|full|...",
                ));
            }
            if !f[0].bytes().all(|b| b.is_ascii_digit()) {
                if i == 0 {
                    continue; // header row
                }
                return Err(NormalizeError::load(
                    file,
                    i as u64 + 1,
                    format!("not a CVX code: {:?}", f[0]),
                ));
            }
            if f.get(6).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                continue;
            }
            self.cvx.insert(f[0].to_string(), f[1].to_string());
            n += 1;
        }
        self.versions.insert("cvx".into(), version.to_string());
        self.rebuild_indexes();
        Ok(n)
    }
}

impl Terminology {
    /// The embedded tables extended with whatever official release files are found in `dir`
    /// (not recursive): `Loinc.csv` or `LoincTableCore.csv`, `RXNCONSO.RRF`, `RXNSAT.RRF`,
    /// `sct2_Concept_Snapshot*.txt` with `sct2_Description_Snapshot*.txt`,
    /// `icd10cm_order_*.txt`, `cvx*.txt`. Each table's version is the file name. Returns the
    /// tables and what was loaded (file, entries).
    pub fn embedded_with_dir(
        dir: &std::path::Path,
    ) -> Result<(Self, Vec<(String, usize)>), NormalizeError> {
        let mut t = Terminology::embedded();
        let mut loaded = Vec::new();
        let rd = std::fs::read_dir(dir)
            .map_err(|e| NormalizeError::load(&dir.display().to_string(), 0, e))?;
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        // a release replaced under the same file name must change the recorded version (and
        // so the fingerprint that decides what a rebuild re-derives)
        let stamp = |name: &str| -> String {
            let meta = std::fs::metadata(dir.join(name)).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            format!("{name}@{len}-{modified}")
        };
        let open = |name: &str| -> Result<std::io::BufReader<std::fs::File>, NormalizeError> {
            std::fs::File::open(dir.join(name))
                .map(std::io::BufReader::new)
                .map_err(|e| NormalizeError::load(name, 0, e))
        };
        let find = |pred: &dyn Fn(&str) -> bool| names.iter().find(|n| pred(n)).cloned();
        if let Some(n) = find(&|n| n == "Loinc.csv" || n == "LoincTableCore.csv") {
            loaded.push((n.clone(), t.load_loinc_csv(open(&n)?, &stamp(&n))?));
        }
        if let Some(n) = find(&|n| n == "RXNCONSO.RRF") {
            loaded.push((n.clone(), t.load_rxnconso(open(&n)?, &stamp(&n))?));
        }
        if let Some(n) = find(&|n| n == "RXNSAT.RRF") {
            loaded.push((n.clone(), t.load_rxnsat(open(&n)?, &stamp(&n))?));
        }
        if let (Some(c), Some(d)) = (
            find(&|n| n.starts_with("sct2_Concept_Snapshot")),
            find(&|n| n.starts_with("sct2_Description_Snapshot")),
        ) {
            loaded.push((
                d.clone(),
                t.load_snomed_rf2(open(&c)?, open(&d)?, &stamp(&d))?,
            ));
        }
        if let Some(n) = find(&|n| n.starts_with("icd10cm_order_") && n.ends_with(".txt")) {
            loaded.push((n.clone(), t.load_icd10cm_order(open(&n)?, &stamp(&n))?));
        }
        if let Some(n) = find(&|n| n.starts_with("cvx") && n.ends_with(".txt")) {
            loaded.push((n.clone(), t.load_cvx(open(&n)?, &stamp(&n))?));
        }
        Ok((t, loaded))
    }
}

fn strip_semantic_tag(s: &str) -> String {
    match s.rfind(" (") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s.to_string(),
    }
}
