//! The pure normalization core: raw bytes of one resource in, normalized rows and flags out.
//!
//! This module holds what every resource kind shares: the [`NormalizeContext`], the
//! [`RULES_VERSION`], the dispatch by resource type, the flag helpers and the terminology
//! strategy (`Norm::resolve`). Each resource kind is mapped in its own submodule.

mod allergy;
mod bmi;
mod condition;
mod diagnostic_report;
mod document;
mod encounter;
mod immunization;
mod medication;
mod observation;
mod patient;
mod procedure;

pub use bmi::derive_bmi;
pub use encounter::{ACT_CODE, act_code_class};
pub use medication::medication_reference;
pub use observation::round_sig;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::code_format::{self, NdcForm};
use crate::dates::{When, parse_fhir_datetime};
use crate::fhir::{self, CodeableConcept, HasHead, LStr, Lax, Many, Num};
use crate::model::*;
use crate::terminology::{
    Domain, LOINC, LocalMapping, RXNORM, SNOMED, StdSystem, Terminology, recognise_system,
};

/// Version of the normalization rules; recorded with every write so a rebuild can be told
/// from an older derivation.
/// 3: codes whose system label fails that system's format check are `mislabelled`.
/// 4: Patient identifiers are indexed for lookup (an event naming a patient by MRN).
pub const RULES_VERSION: &str = "aqueduct-normalize-4";

/// Everything normalization needs besides the resource: tables, the connection's mappings,
/// thresholds and the clock (explicit, so results are reproducible).
#[derive(Debug, Clone)]
pub struct NormalizeContext {
    pub terminology: Arc<Terminology>,
    /// system -> code -> mapping (the connection's table).
    local: HashMap<String, HashMap<String, LocalMapping>>,
    /// Version label of the connection's mapping table (e.g. a hash or timestamp).
    pub mapping_version: String,
    pub now: DateTime<Utc>,
    /// An active MedicationRequest authored longer ago than this, without a validity period
    /// reaching today or repeats, is flagged "probably stale".
    pub stale_after_days: i64,
    /// Minimum text-match score to apply an inferred code.
    pub infer_threshold: f64,
    /// Offset applied to times that carry none (flagged).
    pub assumed_offset_minutes: i32,
}

impl NormalizeContext {
    pub fn new(terminology: Arc<Terminology>) -> Self {
        NormalizeContext {
            terminology,
            local: HashMap::new(),
            mapping_version: "none".to_string(),
            now: Utc::now(),
            stale_after_days: 548,
            infer_threshold: 0.9,
            assumed_offset_minutes: 0,
        }
    }

    /// Replaces the connection's local mappings.
    pub fn with_mappings(mut self, mappings: impl IntoIterator<Item = LocalMapping>) -> Self {
        self.local.clear();
        let mut n = 0usize;
        for m in mappings {
            n += 1;
            self.local
                .entry(m.source_system.trim().to_string())
                .or_default()
                .insert(m.source_code.trim().to_string(), m);
        }
        self.mapping_version = format!("local-{n}");
        self
    }

    /// Everything a normalized row depends on besides its raw bytes: the rules, every table
    /// version, the mapping table and the thresholds. Stored with each row; a rebuild skips
    /// a source whose raw content and fingerprint are both unchanged. See
    /// [`Self::fingerprint_for`] for the types that also depend on the date.
    pub fn fingerprint(&self) -> String {
        self.fingerprint_with(None)
    }

    /// The fingerprint of one resource type's rows. Medication requests and statements are
    /// judged "probably stale" against today, so theirs includes the day: they are derived
    /// again once a day. Every other type's rows do not depend on the date.
    pub fn fingerprint_for(&self, resource_type: &str) -> String {
        match resource_type {
            "MedicationRequest" | "MedicationStatement" => {
                self.fingerprint_with(Some(self.now.date_naive()))
            }
            _ => self.fingerprint_with(None),
        }
    }

    fn fingerprint_with(&self, day: Option<chrono::NaiveDate>) -> String {
        let mut text = String::new();
        for (k, v) in &self.terminology.versions {
            text.push_str(&format!("{k}={v};"));
        }
        text.push_str(&format!(
            "mappings={};stale={};infer={};offset={}",
            self.mapping_version,
            self.stale_after_days,
            self.infer_threshold,
            self.assumed_offset_minutes
        ));
        if let Some(d) = day {
            text.push_str(&format!(";day={d}"));
        }
        format!(
            "{RULES_VERSION}+{}",
            &aqueduct_core::content_hash(text.as_bytes())[..12]
        )
    }

    pub fn with_now(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    pub fn local_mapping(&self, system: &str, code: &str) -> Option<&LocalMapping> {
        self.local.get(system.trim())?.get(code.trim())
    }

    pub fn local_mapping_count(&self) -> usize {
        self.local.values().map(HashMap::len).sum()
    }
}

/// Normalizes one raw resource. Never panics; whatever cannot be read is flagged.
pub fn normalize(resource_type: &str, raw: &[u8], ctx: &NormalizeContext) -> Normalized {
    let hash = aqueduct_core::content_hash(raw);
    normalize_with_hash(resource_type, raw, hash, ctx)
}

/// As [`normalize`], with the content hash already known (the store has it).
pub fn normalize_with_hash(
    resource_type: &str,
    raw: &[u8],
    content_hash: String,
    ctx: &NormalizeContext,
) -> Normalized {
    normalize_with_refs(resource_type, raw, content_hash, ctx, None)
}

/// As [`normalize_with_hash`], with the bytes of the Medication resource a medication
/// request/statement references (fetched by the caller), so its code can be used.
pub fn normalize_with_refs(
    resource_type: &str,
    raw: &[u8],
    content_hash: String,
    ctx: &NormalizeContext,
    referenced_medication: Option<&[u8]>,
) -> Normalized {
    let mut out = Normalized {
        lineage: Lineage {
            resource_type: resource_type.to_string(),
            logical_id: None,
            content_hash,
        },
        rows: Vec::new(),
        flags: Vec::new(),
    };
    let mut n = Norm {
        ctx,
        flags: Vec::new(),
        referenced_medication,
    };
    fn run<'a, T: serde::Deserialize<'a> + HasHead>(
        raw: &'a [u8],
        out: &mut Normalized,
        f: impl FnOnce(T) -> Vec<NormalizedRow>,
    ) {
        match serde_json::from_slice::<T>(raw) {
            Ok(r) => {
                let (rt, id) = r.head();
                out.lineage.logical_id = id.owned();
                if out.lineage.logical_id.is_none() {
                    out.flags.push(Flag::new("missing-id", "id", ""));
                }
                match rt.get() {
                    Some(t) if t == out.lineage.resource_type => {}
                    Some(t) => out.flags.push(Flag::new(
                        "resource-type-mismatch",
                        "resourceType",
                        format!("stored as {}, body says {t}", out.lineage.resource_type),
                    )),
                    None => out
                        .flags
                        .push(Flag::new("missing-resource-type", "resourceType", "")),
                }
                out.rows = f(r);
            }
            Err(e) => out.flags.push(Flag::new("unparseable", "", e.to_string())),
        }
    }
    match resource_type {
        "Observation" => run(raw, &mut out, |r| n.observation(r)),
        "Patient" => run(raw, &mut out, |r| vec![n.patient(r)]),
        "Condition" => run(raw, &mut out, |r| vec![n.condition(r)]),
        "MedicationRequest" | "MedicationStatement" => {
            run(raw, &mut out, |r| vec![n.medication(resource_type, r)])
        }
        "AllergyIntolerance" => run(raw, &mut out, |r| vec![n.allergy(r)]),
        "Immunization" => run(raw, &mut out, |r| vec![n.immunization(r)]),
        "Procedure" => run(raw, &mut out, |r| vec![n.procedure(r)]),
        "Encounter" => run(raw, &mut out, |r| vec![n.encounter(r)]),
        "DiagnosticReport" => run(raw, &mut out, |r| vec![n.diagnostic_report(r)]),
        "DocumentReference" => run(raw, &mut out, |r| vec![n.document(r)]),
        other => {
            match serde_json::from_slice::<fhir::Head>(raw) {
                Ok(h) => out.lineage.logical_id = h.id.owned(),
                Err(e) => out.flags.push(Flag::new("unparseable", "", e.to_string())),
            }
            out.flags.push(Flag::new("unsupported-type", "", other));
            return out;
        }
    }
    for (i, r) in out.rows.iter_mut().enumerate() {
        r.ordinal = i as u32;
    }
    out
}

struct Norm<'c> {
    ctx: &'c NormalizeContext,
    /// flags of the row being built
    flags: Vec<Flag>,
    referenced_medication: Option<&'c [u8]>,
}

fn patient_ref(r: &Lax<fhir::Reference>) -> Option<String> {
    let s = r.get()?.reference.get()?;
    if let Some(rest) = s.strip_prefix("urn:uuid:") {
        return Some(format!("urn:uuid:{rest}"));
    }
    let s = s.split(['?', '#']).next().unwrap_or(s);
    let mut parts = s.rsplit('/');
    let last = parts.next()?;
    let prev = parts.next();
    // ".../Patient/123" or "Patient/123" (also ".../Patient/123/_history/2")
    match prev {
        Some("Patient") => Some(last.to_string()),
        Some("_history") => {
            let id = parts.next()?;
            (parts.next() == Some("Patient")).then(|| id.to_string())
        }
        _ => None,
    }
}

fn codes_of(ccs: &Many<CodeableConcept>) -> Vec<String> {
    let mut v = Vec::new();
    for cc in &ccs.items {
        let mut any = false;
        for c in &cc.coding.items {
            if let Some(code) = c.code.get() {
                v.push(code.to_string());
                any = true;
            }
        }
        if !any && let Some(t) = cc.text.get() {
            v.push(t.to_lowercase());
        }
    }
    v
}

fn first_code(cc: &Lax<CodeableConcept>) -> Option<String> {
    let cc = cc.get()?;
    cc.coding
        .items
        .iter()
        .find_map(|c| c.code.get())
        .or_else(|| cc.coding.items.iter().find_map(|c| c.display.get()))
        .or_else(|| cc.text.get())
        .map(|s| s.to_lowercase())
}

fn concept_text<'a>(cc: &'a CodeableConcept) -> Option<&'a str> {
    cc.text
        .get()
        .or_else(|| cc.coding.items.iter().find_map(|c| c.display.get()))
}

impl Norm<'_> {
    fn flag(&mut self, code: &'static str, field: &'static str, detail: impl Into<String>) {
        self.flags.push(Flag::new(code, field, detail));
    }

    fn take_flags(&mut self) -> Vec<Flag> {
        std::mem::take(&mut self.flags)
    }

    fn lax<T>(&mut self, v: &Lax<T>, field: &'static str) {
        if v.malformed {
            self.flag("malformed-field", field, "wrong JSON shape; ignored");
        }
    }

    fn many<T>(&mut self, v: &Many<T>, field: &'static str) {
        if v.malformed {
            self.flag(
                "malformed-field",
                field,
                "wrong JSON shape (or a single value for an array); partly ignored",
            );
        }
    }

    fn lstr<'s>(&mut self, v: &'s LStr, field: &'static str) -> Option<&'s str> {
        if v.is_invalid() {
            self.flag("malformed-field", field, "expected a string");
        }
        v.get()
    }

    fn when(&mut self, v: &LStr, field: &'static str) -> Option<When> {
        let s = self.lstr(v, field)?;
        let (w, issues) = parse_fhir_datetime(s, self.ctx.assumed_offset_minutes);
        for i in issues {
            self.flag(i.code(), field, s);
        }
        Some(w)
    }

    fn period_start(&mut self, p: &Lax<fhir::Period>, field: &'static str) -> Option<When> {
        self.lax(p, field);
        let start = &p.get()?.start;
        self.when(start, field)
    }

    /// The terminology strategy: standard, mapped, inferred (or mislabelled), unmapped, none.
    /// A coding whose code fails its system's format check is not trusted: it is flagged
    /// `code-mislabelled`, kept as the source code, and resolved like a local code.
    fn resolve(
        &mut self,
        cc: Option<&CodeableConcept>,
        domain: Domain,
        field: &'static str,
    ) -> ResolvedCode {
        let t = &*self.ctx.terminology;
        let none = ResolvedCode {
            resolution: Resolution::None,
            system: None,
            code: None,
            display: None,
            source_system: None,
            source_code: None,
            source_text: None,
            rule: "no-code",
            table_version: None,
            confidence: None,
            candidate: None,
        };
        let Some(cc) = cc else {
            self.flag("no-code", field, "");
            return none;
        };
        if cc.coding.malformed {
            self.flag("malformed-field", field, "coding has a wrong shape");
        }
        let text = concept_text(cc).map(str::to_string);
        let codings = &cc.coding.items;
        // the first coding whose code fails its system label's format: a local code
        let mut mislabelled: Option<&fhir::Coding> = None;
        // 1. a standard code for this domain
        for &sys in domain.standard_systems() {
            for c in codings {
                let (Some(system), Some(code)) = (c.system.get(), c.code.get()) else {
                    continue;
                };
                let Some((s, alias)) = recognise_system(system) else {
                    continue;
                };
                if s != sys {
                    continue;
                }
                if let Err(why) = s.check(code) {
                    self.flag("code-mislabelled", field, format!("{system}|{code}: {why}"));
                    mislabelled.get_or_insert(c);
                    continue;
                }
                if alias {
                    self.flag("system-alias", field, system);
                }
                let code_n = if s == StdSystem::Icd10Cm {
                    code.to_ascii_uppercase()
                } else {
                    code.to_string()
                };
                let (display, table) = match s {
                    StdSystem::Loinc => (t.loinc.get(code).map(|e| e.name.clone()), "loinc"),
                    StdSystem::Snomed => (t.snomed.get(code).map(|e| e.display.clone()), "snomed"),
                    StdSystem::Icd10Cm => (
                        t.icd10cm
                            .get(&crate::terminology::compact_icd10(code))
                            .cloned(),
                        "icd10cm",
                    ),
                    StdSystem::RxNorm => (t.rxnorm.get(code).map(|e| e.name.clone()), "rxnorm"),
                    StdSystem::Cvx => (t.cvx.get(code).cloned(), "cvx"),
                    StdSystem::Cpt => (None, "cpt"),
                    StdSystem::Ndc => (None, "ndc"),
                };
                let display = display
                    .or_else(|| c.display.owned())
                    .or_else(|| text.clone());
                return ResolvedCode {
                    resolution: Resolution::Standard,
                    system: Some(s.uri().to_string()),
                    code: Some(code_n),
                    display,
                    source_system: Some(system.to_string()),
                    source_code: Some(code.to_string()),
                    source_text: text,
                    rule: "standard-code",
                    table_version: Some(t.version(table)),
                    confidence: None,
                    candidate: None,
                };
            }
        }
        // 2a. NDC -> RxNorm through the NDC table
        if matches!(domain, Domain::Medication | Domain::Allergy) {
            for c in codings {
                let (Some(system), Some(code)) = (c.system.get(), c.code.get()) else {
                    continue;
                };
                if recognise_system(system).map(|x| x.0) != Some(StdSystem::Ndc) {
                    continue;
                }
                let ndc = match code_format::ndc(code.trim()) {
                    Ok(NdcForm::Eleven(ndc)) => ndc,
                    Ok(NdcForm::TenUnsegmented) => {
                        self.flag(
                            "ndc-ambiguous",
                            field,
                            format!("{code}: 10 digits without hyphens fit 4-4-2, 5-3-2 and 5-4-1"),
                        );
                        continue;
                    }
                    Err(why) => {
                        self.flag("code-mislabelled", field, format!("{system}|{code}: {why}"));
                        mislabelled.get_or_insert(c);
                        continue;
                    }
                };
                if let Some(rxcui) = t.ndc.get(&ndc) {
                    return ResolvedCode {
                        resolution: Resolution::Mapped,
                        system: Some(RXNORM.to_string()),
                        code: Some(rxcui.clone()),
                        display: t
                            .rxnorm
                            .get(rxcui)
                            .map(|e| e.name.clone())
                            .or_else(|| text.clone()),
                        source_system: Some(system.to_string()),
                        source_code: Some(code.to_string()),
                        source_text: text,
                        rule: "ndc-rxnorm-table",
                        table_version: Some(t.version("ndc")),
                        confidence: None,
                        candidate: None,
                    };
                }
            }
        }
        // 2b. the connection's local mapping table
        for c in codings {
            let Some(code) = c.code.get() else { continue };
            let system = c.system.get().unwrap_or("");
            if let Some(m) = self.ctx.local_mapping(system, code) {
                return ResolvedCode {
                    resolution: Resolution::Mapped,
                    system: Some(m.target_system.clone()),
                    code: Some(m.target_code.clone()),
                    display: m.target_display.clone().or_else(|| text.clone()),
                    source_system: c.system.owned(),
                    source_code: Some(code.to_string()),
                    source_text: text,
                    rule: "local-mapping",
                    table_version: Some(self.ctx.mapping_version.clone()),
                    confidence: None,
                    candidate: None,
                };
            }
        }
        // a mislabelled coding is the source code: it is what the source meant to send
        let first = mislabelled.or_else(|| codings.iter().find(|c| c.code.get().is_some()));
        let (src_sys, src_code) = match first {
            Some(c) => (c.system.owned(), c.code.owned()),
            None => (None, None),
        };
        if first.is_some_and(|c| c.system.get().is_none()) {
            self.flag(
                "code-without-system",
                field,
                src_code.clone().unwrap_or_default(),
            );
        }
        // 3. text
        if let Some(txt) = text.as_deref() {
            let m = t.match_text(domain, txt);
            let base = ResolvedCode {
                resolution: Resolution::Unmapped,
                system: None,
                code: None,
                display: None,
                source_system: src_sys.clone(),
                source_code: src_code.clone(),
                source_text: Some(txt.to_string()),
                rule: "text-below-threshold",
                table_version: None,
                confidence: None,
                candidate: None,
            };
            return match m {
                Some(m) if m.score >= self.ctx.infer_threshold && !m.ambiguous => {
                    self.flag(
                        "code-inferred",
                        field,
                        format!("{txt:?} -> {} ({:.2})", m.code, m.score),
                    );
                    let table = table_for(m.system);
                    ResolvedCode {
                        resolution: if mislabelled.is_some() {
                            Resolution::Mislabelled
                        } else {
                            Resolution::Inferred
                        },
                        system: Some(m.system.to_string()),
                        code: Some(m.code),
                        display: Some(m.display),
                        rule: "text-match",
                        table_version: Some(t.version(table)),
                        confidence: Some(m.score),
                        ..base
                    }
                }
                Some(m) => {
                    self.flag("code-unmapped", field, txt);
                    let table = table_for(m.system);
                    ResolvedCode {
                        rule: if m.ambiguous {
                            "text-ambiguous"
                        } else {
                            "text-below-threshold"
                        },
                        table_version: Some(t.version(table)),
                        confidence: Some(m.score),
                        candidate: Some(Candidate {
                            system: m.system.to_string(),
                            code: m.code,
                            display: m.display,
                            score: m.score,
                        }),
                        ..base
                    }
                }
                None => {
                    self.flag("code-unmapped", field, txt);
                    base
                }
            };
        }
        if src_code.is_some() {
            self.flag("code-unmapped", field, src_code.clone().unwrap_or_default());
            return ResolvedCode {
                resolution: Resolution::Unmapped,
                source_system: src_sys,
                source_code: src_code,
                rule: "unmapped-code",
                ..none
            };
        }
        self.flag("no-code", field, "");
        none
    }
}

fn table_for(system: &str) -> &'static str {
    match system {
        LOINC => "loinc",
        SNOMED => "snomed",
        RXNORM => "rxnorm",
        crate::terminology::CVX => "cvx",
        crate::terminology::ICD10CM => "icd10cm",
        _ => "unknown",
    }
}

fn attachment(a: &fhir::Attachment) -> AttachmentOut {
    let ct = a.contentType.get().map(|s| s.to_ascii_lowercase());
    let base = ct
        .as_deref()
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string());
    let format_class = match base.as_deref() {
        None => "unknown",
        Some(b)
            if b.contains("json")
                || b.contains("xml")
                || b == "application/hl7-v2"
                || b == "x-application/hl7-v2+er7" =>
        {
            "structured"
        }
        Some(b) if b.starts_with("text/") => "text",
        Some(b)
            if b.starts_with("image/")
                || b == "application/pdf"
                || b.starts_with("video/")
                || b.starts_with("audio/")
                || b == "application/octet-stream"
                || b.contains("msword")
                || b.contains("officedocument") =>
        {
            "binary"
        }
        Some(_) => "unknown",
    };
    AttachmentOut {
        content_type: a.contentType.owned(),
        size: match a.size {
            Num::Number(x) | Num::FromString(x) if x >= 0.0 && x.fract() == 0.0 => Some(x as u64),
            _ => None,
        },
        has_data: a.data.is_some_and(|d| d.get() != "null"),
        url: a.url.owned(),
        format_class,
        machine_readable: matches!(format_class, "structured" | "text"),
    }
}
