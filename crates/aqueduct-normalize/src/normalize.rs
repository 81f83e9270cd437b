//! The pure normalization core: raw bytes of one resource in, normalized rows and flags out.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::code_format::{self, NdcForm};
use crate::dates::{When, parse_fhir_datetime, parse_utc};
use crate::fhir::{self, CodeableConcept, HasHead, LStr, Lax, Many, Num};
use crate::model::*;
use crate::terminology::{
    Domain, LOINC, LocalMapping, LoincEntry, LoincKind, RXNORM, SNOMED, StdSystem, Terminology,
    UCUM, is_npi_system, recognise_system,
};
use crate::units;

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

/// The reference a MedicationRequest/MedicationStatement makes to a separate Medication
/// resource (`Medication/<id>`, relative or absolute), if any: the caller can fetch it and
/// pass its bytes to [`normalize_with_refs`].
pub fn medication_reference(raw: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Peek<'a> {
        #[serde(borrow, rename = "medicationReference")]
        r: Lax<fhir::Reference<'a>>,
    }
    let p: Peek = serde_json::from_slice(raw).ok()?;
    let s = p.r.get()?.reference.get()?;
    if s.starts_with('#') {
        return None;
    }
    let mut parts = s.split(['?', '#']).next().unwrap_or(s).rsplit('/');
    let id = parts.next()?;
    (parts.next() == Some("Medication") && !id.is_empty()).then(|| id.to_string())
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

    // ---------------------------------------------------------------- Observation

    fn loinc_entry(&self, code: &ResolvedCode) -> Option<&LoincEntry> {
        if code.system.as_deref() != Some(LOINC) {
            return None;
        }
        self.ctx.terminology.loinc.get(code.code.as_deref()?)
    }

    fn observation(&mut self, o: fhir::Observation) -> Vec<NormalizedRow> {
        let patient_id = patient_ref(&o.subject);
        self.lax(&o.subject, "subject");
        self.lax(&o.code, "code");
        self.many(&o.category, "category");
        let status = self.lstr(&o.status, "status").map(str::to_string);
        if status.as_deref() == Some("entered-in-error") {
            self.flag("entered-in-error", "status", "");
        }
        let effective = if o.effectiveDateTime.get().is_some() {
            self.when(&o.effectiveDateTime, "effectiveDateTime")
        } else if o.effectiveInstant.get().is_some() {
            self.when(&o.effectiveInstant, "effectiveInstant")
        } else if o.effectivePeriod.get().is_some() {
            self.period_start(&o.effectivePeriod, "effectivePeriod")
        } else if o.issued.get().is_some() {
            self.flag("effective-from-issued", "issued", "");
            self.when(&o.issued, "issued")
        } else {
            self.flag("no-effective-time", "effective", "");
            None
        };
        let categories = codes_of(&o.category);
        let code = self.resolve(o.code.get(), Domain::Observation, "code");
        let common_flags = self.take_flags();
        let has_value = o.valueQuantity.get().is_some()
            || o.valueString.get().is_some()
            || o.valueCodeableConcept.get().is_some()
            || o.valueInteger != Num::Missing
            || o.valueBoolean.get().is_some();
        let mut rows = Vec::new();
        if !has_value && !o.component.items.is_empty() {
            let panel_code = code.code.clone();
            for c in &o.component.items {
                self.lax(&c.code, "component.code");
                let ccode = self.resolve(c.code.get(), Domain::Observation, "component.code");
                let entry = self.loinc_entry(&ccode).cloned();
                let value = self.value(
                    &c.valueQuantity,
                    &c.valueString,
                    &c.valueCodeableConcept,
                    &c.valueInteger,
                    None,
                    entry.as_ref(),
                );
                if value.is_none() && c.dataAbsentReason.get().is_some() {
                    self.flag(
                        "data-absent",
                        "component.value",
                        first_code(&c.dataAbsentReason).unwrap_or_default(),
                    );
                }
                let rr = self.range(&c.referenceRange, value.as_ref(), entry.as_ref());
                let interp = interpretations(&c.interpretation);
                let mut flags = common_flags.clone();
                flags.extend(self.take_flags());
                rows.push(NormalizedRow {
                    ordinal: 0,
                    kind: Kind::Observation,
                    patient_id: patient_id.clone(),
                    status: status.clone(),
                    effective: effective.clone(),
                    detail: Detail::Observation(ObservationDetail {
                        class: obs_class(entry.as_ref(), &categories),
                        categories: categories.clone(),
                        value,
                        reference_range: rr,
                        interpretation: interp,
                        panel_code: panel_code.clone(),
                        derived_from: Vec::new(),
                    }),
                    code: Some(ccode),
                    flags,
                });
            }
            return rows;
        }
        if has_value && !o.component.items.is_empty() {
            self.flag(
                "components-not-split",
                "component",
                "observation has both a value and components; components kept in raw only",
            );
        }
        let entry = self.loinc_entry(&code).cloned();
        if entry.as_ref().is_some_and(|e| e.kind == LoincKind::Panel) && !has_value {
            self.flag(
                "empty-panel",
                "component",
                "panel without components or value",
            );
        }
        let value = self.value(
            &o.valueQuantity,
            &o.valueString,
            &o.valueCodeableConcept,
            &o.valueInteger,
            o.valueBoolean.get().copied(),
            entry.as_ref(),
        );
        self.lax(&o.valueBoolean, "valueBoolean");
        if value.is_none() {
            match first_code(&o.dataAbsentReason) {
                Some(r) => self.flag("data-absent", "value", r),
                None => self.flag("no-value", "value", ""),
            }
        }
        let rr = self.range(&o.referenceRange, value.as_ref(), entry.as_ref());
        let mut flags = common_flags;
        flags.extend(self.take_flags());
        rows.push(NormalizedRow {
            ordinal: 0,
            kind: Kind::Observation,
            patient_id,
            status,
            effective,
            detail: Detail::Observation(ObservationDetail {
                class: obs_class(entry.as_ref(), &categories),
                categories,
                value,
                reference_range: rr,
                interpretation: interpretations(&o.interpretation),
                panel_code: None,
                derived_from: Vec::new(),
            }),
            code: Some(code),
            flags,
        });
        rows
    }

    /// The unit of a quantity as UCUM, flagging what was repaired or guessed from text.
    fn quantity_unit(
        &mut self,
        q: &fhir::Quantity,
        field: &'static str,
    ) -> (Option<String>, Option<String>) {
        let text = q.unit.get().map(str::to_string);
        let ucum_code = match (q.system.get(), q.code.get()) {
            (Some(s), Some(c)) if s.trim_end_matches('/') == UCUM => Some(c),
            (None, Some(c)) => Some(c),
            _ => None,
        };
        if let Some(c) = ucum_code
            && let Some(u) = units::to_ucum(c)
        {
            if u != c {
                self.flag("unit-not-ucum", field, c);
            }
            return (text, Some(u));
        }
        if let Some(tx) = text.as_deref() {
            if let Some(u) = units::to_ucum(tx) {
                if u != tx {
                    self.flag("unit-from-text", field, tx);
                }
                return (text, Some(u));
            }
            self.flag("unknown-unit", field, tx);
        } else if let Some(c) = q.code.get() {
            self.flag("unknown-unit", field, c);
        }
        (text, None)
    }

    fn value(
        &mut self,
        vq: &Lax<fhir::Quantity>,
        vs: &LStr,
        vc: &Lax<CodeableConcept>,
        vi: &Num,
        vb: Option<bool>,
        entry: Option<&LoincEntry>,
    ) -> Option<ValueOut> {
        self.lax(vq, "valueQuantity");
        self.lax(vc, "valueCodeableConcept");
        if let Some(q) = vq.get() {
            let num = match &q.value {
                Num::Number(v) => Some(*v),
                Num::FromString(v) => {
                    self.flag("number-as-string", "valueQuantity.value", v.to_string());
                    Some(*v)
                }
                Num::NotNumber(s) => {
                    self.flag("not-a-number", "valueQuantity.value", s.clone());
                    None
                }
                Num::Missing => {
                    self.flag("no-value", "valueQuantity.value", "");
                    None
                }
            };
            let (unit_text, ucum) = self.quantity_unit(q, "valueQuantity.unit");
            let mut v = ValueOut {
                kind: "quantity",
                value: num,
                comparator: q.comparator.owned(),
                unit_text,
                ucum,
                ..Default::default()
            };
            self.canonicalize(&mut v, entry);
            return Some(v);
        }
        if let Some(s) = vs.get() {
            // a plain number in a string: read it, never guess its unit
            if let Ok(x) = s.parse::<f64>()
                && x.is_finite()
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
            {
                self.flag("number-as-string", "valueString", s);
                let mut v = ValueOut {
                    kind: "quantity",
                    value: Some(x),
                    text: Some(s.to_string()),
                    ..Default::default()
                };
                self.canonicalize(&mut v, entry);
                return Some(v);
            }
            return Some(ValueOut {
                kind: "string",
                text: Some(s.to_string()),
                ..Default::default()
            });
        }
        if vs.is_invalid() {
            self.flag("malformed-field", "valueString", "expected a string");
        }
        if let Some(cc) = vc.get() {
            let c = cc.coding.items.first();
            return Some(ValueOut {
                kind: "coded",
                text: concept_text(cc).map(str::to_string),
                coded: c.map(|c| CodingOut {
                    system: c.system.owned(),
                    code: c.code.owned(),
                    display: c.display.owned(),
                }),
                ..Default::default()
            });
        }
        match vi {
            Num::Number(x) | Num::FromString(x) => {
                if matches!(vi, Num::FromString(_)) {
                    self.flag("number-as-string", "valueInteger", x.to_string());
                }
                let mut v = ValueOut {
                    kind: "integer",
                    value: Some(*x),
                    ..Default::default()
                };
                self.canonicalize(&mut v, entry);
                return Some(v);
            }
            Num::NotNumber(s) => self.flag("not-a-number", "valueInteger", s.clone()),
            Num::Missing => {}
        }
        vb.map(|b| ValueOut {
            kind: "boolean",
            boolean: Some(b),
            ..Default::default()
        })
    }

    fn canonicalize(&mut self, v: &mut ValueOut, entry: Option<&LoincEntry>) {
        let Some(x) = v.value else { return };
        let canonical = entry.and_then(|e| e.canonical_unit.as_deref());
        match (v.ucum.as_deref(), canonical) {
            (None, Some(_)) if v.unit_text.is_some() => {
                // a unit was given but is not recognised (already flagged unknown-unit)
                v.conversion = Some("not-convertible");
            }
            (None, Some(c)) => {
                // dimensionless canonical units need no unit; others are never assumed
                if units::analyze(c).is_ok_and(|d| d.unitless) {
                    v.canonical_value = Some(x);
                    v.canonical_unit = Some(c.to_string());
                    v.conversion = Some("identity");
                } else {
                    self.flag("missing-unit", "value.unit", format!("expected {c}"));
                    v.conversion = Some("missing-unit");
                }
            }
            (None, None) => {
                v.conversion = Some("missing-unit");
            }
            (Some(u), None) => {
                v.canonical_value = Some(x);
                v.canonical_unit = Some(u.to_string());
                v.conversion = Some("no-canonical");
            }
            (Some(u), Some(c)) => {
                let mm = entry.and_then(|e| e.molar_mass);
                match units::convert_detailed(x, u, c, mm) {
                    Ok((y, method)) => {
                        v.canonical_value = Some(round_sig(y));
                        v.canonical_unit = Some(c.to_string());
                        v.conversion = Some(match method {
                            units::Method::Identity => "identity",
                            units::Method::Scaled => "converted",
                            units::Method::MolarMass => "molar-mass",
                        });
                    }
                    Err(e) => {
                        self.flag("unit-not-convertible", "value.unit", e.to_string());
                        v.conversion = Some("not-convertible");
                    }
                }
            }
        }
        if let (Some(cv), Some((lo, hi))) = (v.canonical_value, entry.and_then(|e| e.plausible))
            && (cv < lo || cv > hi)
        {
            self.flag(
                "implausible-value",
                "value",
                format!(
                    "{cv} {} outside {lo}..{hi}",
                    v.canonical_unit.as_deref().unwrap_or("")
                ),
            );
        }
    }

    fn range(
        &mut self,
        rr: &Many<fhir::ReferenceRange>,
        value: Option<&ValueOut>,
        entry: Option<&LoincEntry>,
    ) -> Option<RangeOut> {
        self.many(rr, "referenceRange");
        let r = rr.items.first()?;
        let mut out = RangeOut {
            text: r.text.owned(),
            ..Default::default()
        };
        let value_unit = value.and_then(|v| v.ucum.clone());
        let conv = |q: &Lax<fhir::Quantity>,
                    this: &mut Self,
                    field: &'static str|
         -> (Option<f64>, Option<String>) {
            let Some(q) = q.get() else {
                return (None, None);
            };
            let x = q.value.value();
            let (_, u) = this.quantity_unit(q, field);
            (x, u.or_else(|| value_unit.clone()))
        };
        let (low, lu) = conv(&r.low, self, "referenceRange.low");
        let (high, hu) = conv(&r.high, self, "referenceRange.high");
        out.low = low;
        out.high = high;
        out.unit = lu.clone().or(hu.clone());
        if let Some(c) = entry.and_then(|e| e.canonical_unit.as_deref()) {
            let mm = entry.and_then(|e| e.molar_mass);
            let cv = |x: Option<f64>, u: &Option<String>| match (x, u) {
                (Some(x), Some(u)) => units::convert_with_molar_mass(x, u, c, mm)
                    .ok()
                    .map(round_sig),
                _ => None,
            };
            out.canonical_low = cv(low, &lu);
            out.canonical_high = cv(high, &hu);
        }
        Some(out)
    }

    // ---------------------------------------------------------------- Patient

    fn patient(&mut self, p: fhir::Patient) -> NormalizedRow {
        self.many(&p.name, "name");
        self.many(&p.identifier, "identifier");
        self.many(&p.telecom, "telecom");
        self.many(&p.address, "address");
        let mut d = PatientDetail::default();
        for n in &p.name.items {
            let given: Vec<String> = n.given.items.iter().filter_map(LStr::owned).collect();
            d.names.push(NameOut {
                use_: n.use_.owned(),
                family: n.family.owned(),
                given,
                text: n.text.owned(),
            });
        }
        // official name first
        d.names.sort_by_key(|n| match n.use_.as_deref() {
            Some("official") => 0,
            Some("usual") | None => 1,
            _ => 2,
        });
        if d.names.is_empty() {
            self.flag("no-name", "name", "");
        }
        d.birth_date = self.when(&p.birthDate, "birthDate");
        if d.birth_date.as_ref().is_some_and(|w| w.utc.is_none()) {
            // flagged already as invalid-date
        }
        d.gender = match self.lstr(&p.gender, "gender") {
            None => None,
            Some(g) => {
                let l = g.to_ascii_lowercase();
                let n = match l.as_str() {
                    "male" | "female" | "other" | "unknown" => l.clone(),
                    "m" => "male".to_string(),
                    "f" => "female".to_string(),
                    "u" | "unk" => "unknown".to_string(),
                    _ => {
                        self.flag("unknown-gender-code", "gender", g);
                        "unknown".to_string()
                    }
                };
                if n != g {
                    self.flag("gender-normalized", "gender", g);
                }
                Some(n)
            }
        };
        d.deceased = p
            .deceasedBoolean
            .get()
            .copied()
            .or_else(|| p.deceasedDateTime.get().map(|_| true));
        for a in &p.address.items {
            d.addresses.push(AddressOut {
                use_: a.use_.owned(),
                lines: a.line.items.iter().filter_map(LStr::owned).collect(),
                city: a.city.owned(),
                state: a.state.owned(),
                postal_code: a.postalCode.owned(),
                country: a.country.owned(),
                text: a.text.owned(),
            });
        }
        for t in &p.telecom.items {
            match t.value.owned() {
                Some(v) => d.telecom.push(TelecomOut {
                    system: t.system.owned(),
                    value: v,
                    use_: t.use_.owned(),
                }),
                None => self.flag("empty-telecom", "telecom", ""),
            }
        }
        for i in &p.identifier.items {
            let Some(v) = i.value.owned() else {
                self.flag("empty-identifier", "identifier", "");
                continue;
            };
            let system = i.system.owned();
            match system.as_deref() {
                None => self.flag("identifier-without-system", "identifier", v.clone()),
                Some(s) if is_npi_system(s) => {
                    if let Err(why) = code_format::npi(v.trim()) {
                        self.flag("invalid-npi", "identifier", format!("{v}: {why}"));
                    }
                }
                Some(_) => {}
            }
            d.identifiers.push(IdentifierOut {
                system,
                value: v,
                type_code: i
                    .type_
                    .get()
                    .and_then(|cc| cc.coding.items.iter().find_map(|c| c.code.owned())),
            });
        }
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Patient,
            patient_id: p.id.owned(),
            status: None,
            effective: None,
            code: None,
            detail: Detail::Patient(d),
            flags: self.take_flags(),
        }
    }

    // ---------------------------------------------------------------- Condition

    fn condition(&mut self, c: fhir::Condition) -> NormalizedRow {
        self.lax(&c.code, "code");
        self.lax(&c.subject, "subject");
        self.lax(&c.clinicalStatus, "clinicalStatus");
        self.lax(&c.verificationStatus, "verificationStatus");
        self.many(&c.category, "category");
        let code = self.resolve(c.code.get(), Domain::Condition, "code");
        let t = &*self.ctx.terminology;
        let mut groups: Vec<String> = Vec::new();
        let mut chapter: Option<ChapterOut> = None;
        let chapter_of = |k: &str, chapter: &mut Option<ChapterOut>| {
            if chapter.is_none() {
                *chapter = t.icd10_chapter(k).map(|g| ChapterOut {
                    number: g.group.clone(),
                    title: g.display.clone(),
                });
            }
        };
        let mut codings = Vec::new();
        if let Some(cc) = c.code.get() {
            for cd in &cc.coding.items {
                codings.push(CodingOut {
                    system: cd.system.owned(),
                    code: cd.code.owned(),
                    display: cd.display.owned(),
                });
                let (Some(s), Some(k)) = (cd.system.get(), cd.code.get()) else {
                    continue;
                };
                match recognise_system(s).map(|x| x.0) {
                    Some(StdSystem::Icd10Cm) if StdSystem::Icd10Cm.valid_code(k) => {
                        groups.extend(t.icd10_groups(k).into_iter().map(str::to_string));
                        chapter_of(k, &mut chapter);
                    }
                    Some(StdSystem::Snomed) if StdSystem::Snomed.valid_code(k) => {
                        groups.extend(t.snomed_group(k).map(str::to_string))
                    }
                    _ => {}
                }
            }
        }
        // the resolved code counts too (mapped or inferred)
        if let (Some(s), Some(k)) = (code.system.as_deref(), code.code.as_deref()) {
            if s == SNOMED {
                groups.extend(t.snomed_group(k).map(str::to_string));
            } else if recognise_system(s).map(|x| x.0) == Some(StdSystem::Icd10Cm) {
                groups.extend(t.icd10_groups(k).into_iter().map(str::to_string));
                chapter_of(k, &mut chapter);
            }
        }
        groups.sort();
        groups.dedup();
        let clinical_status = first_code(&c.clinicalStatus).map(|s| norm_clinical_status(&s));
        let verification_status = first_code(&c.verificationStatus);
        let category = c.category.items.iter().find_map(|cc| {
            cc.coding
                .items
                .iter()
                .find_map(|x| x.code.get())
                .or_else(|| concept_text(cc))
                .map(norm_condition_category)
        });
        let onset = if c.onsetDateTime.get().is_some() {
            self.when(&c.onsetDateTime, "onsetDateTime")
        } else if c.onsetPeriod.get().is_some() {
            self.period_start(&c.onsetPeriod, "onsetPeriod")
        } else if let Some(s) = c.onsetString.get() {
            self.flag("onset-as-text", "onsetString", s);
            None
        } else {
            None
        };
        let abatement = if c.abatementDateTime.get().is_some() {
            self.when(&c.abatementDateTime, "abatementDateTime")
        } else if c.abatementPeriod.get().is_some() {
            self.period_start(&c.abatementPeriod, "abatementPeriod")
        } else {
            None
        };
        let abated = c
            .abatementBoolean
            .get()
            .copied()
            .or((abatement.is_some() || c.abatementString.get().is_some()).then_some(true));
        if clinical_status.as_deref() == Some("active") && abated == Some(true) {
            self.flag("active-but-abated", "clinicalStatus", "");
        }
        if clinical_status.is_none() {
            self.flag("no-clinical-status", "clinicalStatus", "");
        }
        let recorded = self.when(&c.recordedDate, "recordedDate");
        let effective = onset.clone().or_else(|| recorded.clone());
        let status = clinical_status.clone();
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Condition,
            patient_id: patient_ref(&c.subject),
            status,
            effective,
            code: Some(code),
            detail: Detail::Condition(ConditionDetail {
                clinical_status,
                verification_status,
                category,
                onset,
                abatement,
                abated,
                recorded,
                groups,
                chapter,
                codings,
            }),
            flags: self.take_flags(),
        }
    }

    // ---------------------------------------------------------------- Medication

    fn medication(&mut self, resource_type: &str, m: fhir::MedicationRequest) -> NormalizedRow {
        self.lax(&m.subject, "subject");
        self.lax(&m.medicationCodeableConcept, "medicationCodeableConcept");
        self.lax(&m.medicationReference, "medicationReference");
        self.lax(&m.dispenseRequest, "dispenseRequest");
        let mut source = "missing";
        let mut concept: Option<&CodeableConcept> = None;
        let mut referenced = fhir::Contained::default();
        if let Some(cc) = m.medicationCodeableConcept.get() {
            source = "codeable-concept";
            concept = Some(cc);
        } else if let Some(r) = m.medicationReference.get() {
            source = "reference-only";
            if let Some(local) = r.reference.get().and_then(|s| s.strip_prefix('#')) {
                if let Some(c) = m.contained.items.iter().find(|c| {
                    c.id.get() == Some(local) && c.resourceType.get() == Some("Medication")
                }) {
                    concept = c.code.get();
                    source = "contained";
                }
            } else if let Some(Ok(med)) = self
                .referenced_medication
                .map(serde_json::from_slice::<fhir::Contained>)
            {
                referenced = med;
                if referenced.resourceType.get() == Some("Medication") {
                    source = "referenced";
                } else {
                    self.flag(
                        "medication-by-reference",
                        "medicationReference",
                        "referenced resource is not a Medication",
                    );
                }
            } else {
                self.flag(
                    "medication-by-reference",
                    "medicationReference",
                    r.reference.owned().unwrap_or_default(),
                );
            }
        }
        if source == "referenced" {
            concept = referenced.code.get();
        }
        let code = match concept {
            Some(cc) => self.resolve(Some(cc), Domain::Medication, "medication"),
            None => {
                // a reference display is still text worth matching
                let disp = m.medicationReference.get().and_then(|r| r.display.owned());
                match disp {
                    Some(d) => {
                        let cc = CodeableConcept {
                            coding: Many::default(),
                            text: LStr::Str(d.into()),
                        };
                        self.resolve(Some(&cc), Domain::Medication, "medication")
                    }
                    None => self.resolve(None, Domain::Medication, "medication"),
                }
            }
        };
        let status = self
            .lstr(&m.status, "status")
            .map(|s| s.to_ascii_lowercase());
        let authored_field = if resource_type == "MedicationStatement" {
            "dateAsserted"
        } else {
            "authoredOn"
        };
        let authored = if resource_type == "MedicationStatement" {
            if m.effectiveDateTime.get().is_some() {
                self.when(&m.effectiveDateTime, "effectiveDateTime")
            } else if m.effectivePeriod.get().is_some() {
                self.period_start(&m.effectivePeriod, "effectivePeriod")
            } else {
                self.when(&m.dateAsserted, "dateAsserted")
            }
        } else {
            self.when(&m.authoredOn, authored_field)
        };
        let dr = m.dispenseRequest.get();
        let validity_end = match dr.and_then(|d| d.validityPeriod.get()) {
            Some(p) => self.when(&p.end, "dispenseRequest.validityPeriod.end"),
            None => None,
        };
        let repeats = dr.and_then(|d| d.numberOfRepeatsAllowed.value());
        let dosage_text = m
            .dosageInstruction
            .items
            .iter()
            .chain(m.dosage.items.iter())
            .find_map(|d| d.text.owned());
        let t = &*self.ctx.terminology;
        let ingredient_rxcui = match (code.system.as_deref(), code.code.as_deref()) {
            (Some(RXNORM), Some(k)) => t
                .rxnorm
                .get(k)
                .map(|e| {
                    if e.tty == "IN" {
                        k.to_string()
                    } else {
                        e.ingredient.clone().unwrap_or_default()
                    }
                })
                .filter(|s| !s.is_empty()),
            _ => None,
        };
        // stale: active, old, nothing showing it is still meant to be dispensed
        let mut probably_stale = false;
        let mut stale_reason = None;
        if status.as_deref() == Some("active") {
            let now = self.ctx.now;
            let authored_at = authored
                .as_ref()
                .and_then(|w| w.utc.as_deref())
                .and_then(parse_utc);
            let validity_at = validity_end
                .as_ref()
                .and_then(|w| w.utc.as_deref())
                .and_then(parse_utc);
            match authored_at {
                None => self.flag(
                    "active-without-date",
                    authored_field,
                    "cannot judge staleness",
                ),
                Some(a) if now - a > Duration::days(self.ctx.stale_after_days) => {
                    let validity_current = validity_at.is_some_and(|v| v > now);
                    let has_repeats = repeats.is_some_and(|r| r > 0.0) && validity_at.is_none();
                    if !validity_current && !has_repeats {
                        probably_stale = true;
                        let days = (now - a).num_days();
                        let why = match validity_at {
                            Some(_) => {
                                format!("active, authored {days} days ago, validity period ended")
                            }
                            None => format!(
                                "active, authored {days} days ago, no validity period or refills"
                            ),
                        };
                        self.flag("probably-stale", "status", why.clone());
                        stale_reason = Some(why);
                    }
                }
                Some(_) => {}
            }
        }
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Medication,
            patient_id: patient_ref(&m.subject),
            status,
            effective: authored.clone(),
            code: Some(code),
            detail: Detail::Medication(MedicationDetail {
                resource_type: resource_type.to_string(),
                intent: m.intent.owned(),
                authored,
                dosage_text,
                validity_end,
                repeats_allowed: repeats,
                ingredient_rxcui,
                medication_source: source,
                probably_stale,
                stale_reason,
            }),
            flags: self.take_flags(),
        }
    }

    // ---------------------------------------------------------------- Allergy

    fn allergy(&mut self, a: fhir::AllergyIntolerance) -> NormalizedRow {
        self.lax(&a.code, "code");
        self.lax(&a.patient, "patient");
        self.many(&a.reaction, "reaction");
        let code = self.resolve(a.code.get(), Domain::Allergy, "code");
        let criticality = match self.lstr(&a.criticality, "criticality") {
            None => None,
            Some(c) => {
                let l = c.to_ascii_lowercase();
                match l.as_str() {
                    "low" | "high" | "unable-to-assess" => Some(l),
                    _ => {
                        self.flag("unknown-criticality", "criticality", c);
                        None
                    }
                }
            }
        };
        let reactions = a
            .reaction
            .items
            .iter()
            .map(|r| ReactionOut {
                substance: r.substance.get().and_then(concept_text).map(str::to_string),
                manifestations: r
                    .manifestation
                    .items
                    .iter()
                    .filter_map(|m| {
                        concept_text(m)
                            .map(str::to_string)
                            .or_else(|| m.coding.items.iter().find_map(|c| c.code.owned()))
                    })
                    .collect(),
                severity: r.severity.owned().map(|s| s.to_ascii_lowercase()),
            })
            .collect();
        let onset = self.when(&a.onsetDateTime, "onsetDateTime");
        let recorded = self.when(&a.recordedDate, "recordedDate");
        let clinical_status = first_code(&a.clinicalStatus);
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Allergy,
            patient_id: patient_ref(&a.patient),
            status: clinical_status.clone(),
            effective: onset.or(recorded),
            code: Some(code),
            detail: Detail::Allergy(AllergyDetail {
                clinical_status,
                verification_status: first_code(&a.verificationStatus),
                type_: a.type_.owned(),
                categories: a.category.items.iter().filter_map(LStr::owned).collect(),
                criticality,
                reactions,
            }),
            flags: self.take_flags(),
        }
    }

    // ---------------------------------------------------------------- Immunization

    fn immunization(&mut self, i: fhir::Immunization) -> NormalizedRow {
        self.lax(&i.vaccineCode, "vaccineCode");
        self.lax(&i.patient, "patient");
        let code = self.resolve(i.vaccineCode.get(), Domain::Immunization, "vaccineCode");
        let effective = self.when(&i.occurrenceDateTime, "occurrenceDateTime");
        let occurrence_text = i.occurrenceString.owned();
        if effective.is_none() {
            match &occurrence_text {
                Some(s) => self.flag("occurrence-as-text", "occurrenceString", s.clone()),
                None => self.flag("no-effective-time", "occurrence", ""),
            }
        }
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Immunization,
            patient_id: patient_ref(&i.patient),
            status: i.status.owned(),
            effective,
            code: Some(code),
            detail: Detail::Immunization(ImmunizationDetail {
                lot_number: i.lotNumber.owned(),
                primary_source: i.primarySource.get().copied(),
                occurrence_text,
            }),
            flags: self.take_flags(),
        }
    }

    // ---------------------------------------------------------------- Procedure

    fn procedure(&mut self, p: fhir::Procedure) -> NormalizedRow {
        self.lax(&p.code, "code");
        self.lax(&p.subject, "subject");
        let code = self.resolve(p.code.get(), Domain::Procedure, "code");
        let (effective, end) = if p.performedDateTime.get().is_some() {
            (self.when(&p.performedDateTime, "performedDateTime"), None)
        } else {
            let s = self.period_start(&p.performedPeriod, "performedPeriod");
            let e = match p.performedPeriod.get() {
                Some(pp) => self.when(&pp.end, "performedPeriod.end"),
                None => None,
            };
            (s, e)
        };
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Procedure,
            patient_id: patient_ref(&p.subject),
            status: p.status.owned(),
            effective,
            code: Some(code),
            detail: Detail::Procedure(ProcedureDetail { performed_end: end }),
            flags: self.take_flags(),
        }
    }

    // ---------------------------------------------------------------- Encounter

    fn encounter(&mut self, e: fhir::Encounter) -> NormalizedRow {
        self.lax(&e.subject, "subject");
        self.lax(&e.period, "period");
        self.lax(&e.serviceType, "serviceType");
        self.many(&e.type_, "type");
        // class: R4 Coding, or R5 / vendor array of CodeableConcept, or a CodeableConcept
        let mut class_codings: Vec<(Option<String>, Option<String>, Option<String>)> = Vec::new();
        if let Some(raw) = e.class {
            let s = raw.get();
            if s.starts_with('"') {
                if let Ok(LStr::Str(c)) = serde_json::from_str::<LStr>(s) {
                    self.flag("malformed-field", "class", "class given as a bare string");
                    class_codings.push((None, Some(c.into_owned()), None));
                }
            } else if let Ok(c) = serde_json::from_str::<fhir::Coding>(s)
                && (c.code.get().is_some() || c.display.get().is_some())
            {
                class_codings.push((c.system.owned(), c.code.owned(), c.display.owned()));
            } else if let Ok(m) = serde_json::from_str::<Many<CodeableConcept>>(s) {
                for cc in &m.items {
                    for c in &cc.coding.items {
                        class_codings.push((c.system.owned(), c.code.owned(), c.display.owned()));
                    }
                    if let Some(t) = cc.text.owned() {
                        class_codings.push((None, None, Some(t)));
                    }
                }
            } else if s != "null" {
                self.flag("malformed-field", "class", "unreadable class");
            }
        }
        let mut types: Vec<String> = Vec::new();
        for cc in &e.type_.items {
            if let Some(t) = concept_text(cc) {
                types.push(t.to_string());
            }
            for c in &cc.coding.items {
                if let Some(k) = c.code.get() {
                    types.push(k.to_string());
                }
            }
        }
        let service_type = e.serviceType.get().and_then(|cc| {
            concept_text(cc)
                .map(str::to_string)
                .or_else(|| cc.coding.items.iter().find_map(|c| c.code.owned()))
        });
        // the connection's own mapping of a class or type code to a v3 ActCode wins
        let mut local_hit: Option<(&'static str, String)> = None;
        let type_codings = e
            .type_
            .items
            .iter()
            .flat_map(|cc| cc.coding.items.iter())
            .map(|c| (c.system.owned(), c.code.owned()));
        let class_keys = class_codings.iter().map(|c| (c.0.clone(), c.1.clone()));
        for (sys, code) in class_keys.chain(type_codings) {
            let Some(code) = code else { continue };
            if let Some(m) = self.ctx.local_mapping(sys.as_deref().unwrap_or(""), &code)
                && m.target_system == ACT_CODE
            {
                local_hit = Some((
                    act_code_class(&m.target_code),
                    format!("local-mapping:{code}"),
                ));
                break;
            }
        }
        let (class, rule, resolution) = match local_hit {
            Some((c, r)) => (c, r, Resolution::Mapped),
            None => classify_encounter(&class_codings, &types, service_type.as_deref()),
        };
        if class == "other" && class_codings.is_empty() {
            self.flag("no-encounter-class", "class", "");
        }
        let raw_class = class_codings
            .first()
            .and_then(|c| c.1.clone().or_else(|| c.2.clone()));
        let start = self.period_start(&e.period, "period");
        let end = match e.period.get() {
            Some(p) => self.when(&p.end, "period.end"),
            None => None,
        };
        let code = ResolvedCode {
            resolution,
            system: Some("urn:aqueduct:encounter-class".to_string()),
            code: Some(class.to_string()),
            display: Some(class.to_string()),
            source_system: class_codings.first().and_then(|c| c.0.clone()),
            source_code: raw_class.clone(),
            source_text: types.first().cloned(),
            rule: "encounter-class",
            table_version: Some(RULES_VERSION.to_string()),
            confidence: None,
            candidate: None,
        };
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Encounter,
            patient_id: patient_ref(&e.subject),
            status: e.status.owned(),
            effective: start,
            code: Some(code),
            detail: Detail::Encounter(EncounterDetail {
                class,
                class_rule: rule,
                raw_class,
                types,
                service_type,
                period_end: end,
            }),
            flags: self.take_flags(),
        }
    }

    // ---------------------------------------------------------------- DiagnosticReport

    fn diagnostic_report(&mut self, r: fhir::DiagnosticReport) -> NormalizedRow {
        self.lax(&r.code, "code");
        self.lax(&r.subject, "subject");
        self.many(&r.result, "result");
        self.many(&r.presentedForm, "presentedForm");
        let code = self.resolve(r.code.get(), Domain::Observation, "code");
        let effective = if r.effectiveDateTime.get().is_some() {
            self.when(&r.effectiveDateTime, "effectiveDateTime")
        } else if r.effectivePeriod.get().is_some() {
            self.period_start(&r.effectivePeriod, "effectivePeriod")
        } else {
            self.when(&r.issued, "issued")
        };
        let forms: Vec<AttachmentOut> = r.presentedForm.items.iter().map(attachment).collect();
        let conclusion = r.conclusion.owned();
        let result_count = r.result.items.len();
        let form = if result_count > 0 {
            "structured"
        } else if !forms.is_empty() || conclusion.is_some() {
            self.flag("narrative-only", "result", "no structured results");
            "narrative-only"
        } else {
            self.flag("empty-report", "result", "");
            "empty"
        };
        NormalizedRow {
            ordinal: 0,
            kind: Kind::DiagnosticReport,
            patient_id: patient_ref(&r.subject),
            status: r.status.owned(),
            effective,
            code: Some(code),
            detail: Detail::DiagnosticReport(DiagnosticReportDetail {
                categories: codes_of(&r.category),
                result_count,
                form,
                conclusion,
                presented_forms: forms,
            }),
            flags: self.take_flags(),
        }
    }

    // ---------------------------------------------------------------- DocumentReference

    fn document(&mut self, d: fhir::DocumentReference) -> NormalizedRow {
        self.lax(&d.type_, "type");
        self.lax(&d.subject, "subject");
        self.many(&d.content, "content");
        let code = self.resolve(d.type_.get(), Domain::Document, "type");
        let effective = self.when(&d.date, "date");
        let contents: Vec<AttachmentOut> = d
            .content
            .items
            .iter()
            .filter_map(|c| c.attachment.get())
            .map(attachment)
            .collect();
        if contents.is_empty() {
            self.flag("no-content", "content", "");
        }
        let machine_readable = contents.iter().any(|c| c.machine_readable);
        if !contents.is_empty() && !machine_readable {
            self.flag("not-machine-readable", "content", "");
        }
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Document,
            patient_id: patient_ref(&d.subject),
            status: d.status.owned(),
            effective,
            code: Some(code),
            detail: Detail::Document(DocumentDetail {
                categories: codes_of(&d.category),
                contents,
                machine_readable,
            }),
            flags: self.take_flags(),
        }
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

/// Rounds to 12 significant digits: removes binary noise (5.550999999999999) without
/// changing any clinically meaningful digit.
pub fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mag = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(11 - mag);
    if !scale.is_finite() || scale == 0.0 {
        return x;
    }
    let r = (x * scale).round() / scale;
    if r.is_finite() { r } else { x }
}

fn obs_class(entry: Option<&LoincEntry>, categories: &[String]) -> String {
    match entry.map(|e| e.kind) {
        Some(LoincKind::Vital) => return "vital-sign".into(),
        Some(LoincKind::Lab) => return "laboratory".into(),
        _ => {}
    }
    for c in categories {
        match c.as_str() {
            "vital-signs" | "vital signs" | "vitals" => return "vital-sign".into(),
            "laboratory" | "lab" => return "laboratory".into(),
            _ => {}
        }
    }
    categories
        .first()
        .cloned()
        .unwrap_or_else(|| "other".into())
}

fn interpretations(v: &Many<CodeableConcept>) -> Vec<String> {
    let mut out = Vec::new();
    for cc in &v.items {
        let code = cc
            .coding
            .items
            .iter()
            .find_map(|c| c.code.get())
            .map(|c| c.to_ascii_uppercase())
            .or_else(|| {
                concept_text(cc).map(|t| {
                    match t.to_ascii_lowercase().as_str() {
                        "high" | "h" | "above high normal" => "H",
                        "low" | "l" | "below low normal" => "L",
                        "normal" | "n" => "N",
                        "abnormal" | "a" => "A",
                        "critical high" | "critically high" | "hh" => "HH",
                        "critical low" | "critically low" | "ll" => "LL",
                        "positive" | "pos" => "POS",
                        "negative" | "neg" => "NEG",
                        _ => "?",
                    }
                    .to_string()
                })
            });
        if let Some(c) = code {
            out.push(c);
        }
    }
    out
}

fn norm_clinical_status(s: &str) -> String {
    match s {
        "active" | "recurrence" | "relapse" | "inactive" | "remission" | "resolved" => {
            s.to_string()
        }
        "a" => "active".into(),
        "i" => "inactive".into(),
        "r" => "resolved".into(),
        other => other.to_string(),
    }
}

fn norm_condition_category(s: &str) -> String {
    let l = s.to_ascii_lowercase();
    if l == "problem-list-item" || l.contains("problem") {
        "problem-list-item".into()
    } else if l == "encounter-diagnosis" || l.contains("diagnosis") || l.contains("encounter") {
        "encounter-diagnosis".into()
    } else if l == "health-concern" || l.contains("concern") {
        "health-concern".into()
    } else {
        "other".into()
    }
}

const TELEHEALTH_PHRASES: &[&str] = &[
    "telehealth",
    "tele-health",
    "telemedicine",
    "tele-medicine",
    "telehealth visit",
    "video visit",
    "virtual visit",
    "virtual care",
    "virtual encounter",
    "e-visit",
    "evisit",
    "telephone visit",
    "phone visit",
    "video consult",
];

fn mentions_telehealth(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    TELEHEALTH_PHRASES.iter().any(|p| l.contains(p)) || l == "448337001"
}

/// The v3 ActCode system encounter classes are coded in.
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// The normalized class of a v3 ActCode encounter code.
pub fn act_code_class(code: &str) -> &'static str {
    match code.to_ascii_uppercase().as_str() {
        "VR" => "telehealth",
        "IMP" | "ACUTE" | "NONAC" => "inpatient",
        "EMER" => "emergency",
        "AMB" => "outpatient",
        _ => "other",
    }
}

/// Encounter class from the several ways vendors code it: (class, rule, resolution).
fn classify_encounter(
    class: &[(Option<String>, Option<String>, Option<String>)],
    types: &[String],
    service_type: Option<&str>,
) -> (&'static str, String, Resolution) {
    for (sys, code, disp) in class {
        for s in [code.as_deref(), disp.as_deref()].into_iter().flatten() {
            if s.eq_ignore_ascii_case("vr")
                || s.eq_ignore_ascii_case("virtual")
                || mentions_telehealth(s)
            {
                let res = if sys.as_deref() == Some(ACT_CODE) {
                    Resolution::Standard
                } else {
                    Resolution::Mapped
                };
                return ("telehealth", format!("class:{s}"), res);
            }
        }
    }
    for t in types.iter().map(String::as_str).chain(service_type) {
        if mentions_telehealth(t) {
            return ("telehealth", format!("type-text:{t}"), Resolution::Inferred);
        }
    }
    for (sys, code, disp) in class {
        for s in [code.as_deref(), disp.as_deref()].into_iter().flatten() {
            let l = s.to_ascii_lowercase();
            let c = match l.as_str() {
                "imp"
                | "acute"
                | "nonac"
                | "inpatient"
                | "inpatient encounter"
                | "ip"
                | "hospital" => "inpatient",
                "emer" | "emergency" | "ed" | "er" | "emergency department" => "emergency",
                "amb" | "ambulatory" | "outpatient" | "op" | "office" | "office visit"
                | "clinic" => "outpatient",
                _ => continue,
            };
            let res = if sys.as_deref() == Some(ACT_CODE) && code.as_deref() == Some(s) {
                Resolution::Standard
            } else {
                Resolution::Mapped
            };
            return (c, format!("class:{s}"), res);
        }
    }
    for t in types.iter().map(String::as_str).chain(service_type) {
        let l = t.to_ascii_lowercase();
        if l.contains("emergency") {
            return ("emergency", format!("type-text:{t}"), Resolution::Inferred);
        }
        if l.contains("inpatient") || l.contains("admission") {
            return ("inpatient", format!("type-text:{t}"), Resolution::Inferred);
        }
        if l.contains("office") || l.contains("outpatient") || l.contains("clinic") {
            return ("outpatient", format!("type-text:{t}"), Resolution::Inferred);
        }
    }
    if class.is_empty() && types.is_empty() && service_type.is_none() {
        ("other", "no-signal".to_string(), Resolution::None)
    } else {
        ("other", "unrecognised".to_string(), Resolution::Unmapped)
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

/// BMI rows for a patient's weights that have a height but no BMI the same day.
///
/// Inputs: the patient's normalized observation rows with lineage `(resource_type,
/// logical_id)`. A height is used if measured within `max_height_age_days` before (or on
/// the same day as) the weight; BMI = kg / m^2, rounded to one decimal.
pub fn derive_bmi(
    rows: &[(String, &NormalizedRow)],
    max_height_age_days: i64,
) -> Vec<NormalizedRow> {
    let vital = |r: &NormalizedRow, code: &str| -> Option<(DateTime<Utc>, f64)> {
        let c = r.code.as_ref()?;
        if c.system.as_deref() != Some(LOINC) || c.code.as_deref() != Some(code) {
            return None;
        }
        let Detail::Observation(d) = &r.detail else {
            return None;
        };
        let v = d.value.as_ref()?;
        let at = parse_utc(r.effective.as_ref()?.utc.as_deref()?)?;
        Some((at, v.canonical_value?))
    };
    let bmi_days: Vec<chrono::NaiveDate> = rows
        .iter()
        .filter_map(|(_, r)| vital(r, "39156-5").map(|(t, _)| t.date_naive()))
        .collect();
    let heights: Vec<(DateTime<Utc>, f64, &String)> = rows
        .iter()
        .filter_map(|(id, r)| vital(r, "8302-2").map(|(t, v)| (t, v, id)))
        .collect();
    let mut out = Vec::new();
    for (wid, r) in rows {
        let Some((wt, kg)) = vital(r, "29463-7") else {
            continue;
        };
        if bmi_days.contains(&wt.date_naive()) {
            continue;
        }
        let h = heights
            .iter()
            .filter(|(ht, _, _)| {
                *ht <= wt + Duration::days(1) && wt - *ht <= Duration::days(max_height_age_days)
            })
            .max_by_key(|(ht, _, _)| *ht);
        let Some((_, cm, hid)) = h else { continue };
        if *cm <= 0.0 || kg <= 0.0 {
            continue;
        }
        let m = cm / 100.0;
        let bmi = ((kg / (m * m)) * 10.0).round() / 10.0;
        let mut flags = vec![Flag::new(
            "derived",
            "value",
            "BMI computed from weight and height",
        )];
        if !(5.0..=150.0).contains(&bmi) {
            flags.push(Flag::new(
                "implausible-value",
                "value",
                format!("{bmi} kg/m2"),
            ));
        }
        out.push(NormalizedRow {
            ordinal: 0,
            kind: Kind::Observation,
            patient_id: r.patient_id.clone(),
            status: Some("final".into()),
            effective: r.effective.clone(),
            code: Some(ResolvedCode {
                resolution: Resolution::Standard,
                system: Some(LOINC.into()),
                code: Some("39156-5".into()),
                display: Some("Body mass index (BMI) [Ratio]".into()),
                source_system: None,
                source_code: None,
                source_text: None,
                rule: "derived-bmi",
                table_version: Some(RULES_VERSION.into()),
                confidence: None,
                candidate: None,
            }),
            detail: Detail::Observation(ObservationDetail {
                class: "vital-sign".into(),
                categories: vec!["vital-signs".into()],
                value: Some(ValueOut {
                    kind: "quantity",
                    value: Some(bmi),
                    ucum: Some("kg/m2".into()),
                    canonical_value: Some(bmi),
                    canonical_unit: Some("kg/m2".into()),
                    conversion: Some("identity"),
                    ..Default::default()
                }),
                reference_range: None,
                interpretation: Vec::new(),
                panel_code: None,
                derived_from: vec![wid.clone(), (*hid).clone()],
            }),
            flags,
        });
    }
    out
}
