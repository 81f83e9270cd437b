//! Re-deriving normalized data from the raw archive, page by page, and the glue to the store.

use aqueduct_core::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};

use aqueduct_core::{
    CodeMapping, ConnectionRef, NormalizedRecord, NormalizedSource, Store, StoredResource,
};
use serde::Serialize;

use crate::error::NormalizeError;
use crate::model::{Detail, Normalized, NormalizedRow, Resolution, SUPPORTED_TYPES};
use crate::normalize::{
    NormalizeContext, RULES_VERSION, derive_bmi, medication_reference, normalize_with_refs,
};
use crate::terminology::{LOINC, LocalMapping, Terminology};

/// Resources read from the store per page (bounds memory).
pub const PAGE_SIZE: u32 = 500;

/// Per resource type counts of one rebuild.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeReport {
    pub resource_type: String,
    /// Live resources normalized.
    pub resources: u64,
    /// Tombstoned resources whose normalized rows were removed.
    pub deleted: u64,
    /// Resources left as they were: raw content and fingerprint unchanged (incremental only).
    pub unchanged: u64,
    pub rows: u64,
    /// Resources that yielded no row (unparseable bytes).
    pub unparseable: u64,
    /// Rows with at least one flag.
    pub flagged_rows: u64,
    /// resolution -> rows
    pub resolution: BTreeMap<String, u64>,
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RebuildReport {
    pub connection: String,
    pub rules_version: String,
    /// The context fingerprint (of every type but medication requests and statements, whose
    /// fingerprint also holds the day).
    pub fingerprint: String,
    /// Only sources whose raw content or fingerprint changed were re-derived.
    pub incremental: bool,
    pub types: Vec<TypeReport>,
    /// resolution -> rows, over all coded rows (patients excluded); every
    /// [`Resolution::ALL`] kind is present (standard, mapped, inferred, mislabelled,
    /// unmapped, none)
    pub resolution: BTreeMap<String, u64>,
    /// BMI rows computed from weight and height.
    pub derived_bmi: u64,
    /// flag code -> occurrences
    pub flags: BTreeMap<String, u64>,
}

impl RebuildReport {
    /// Share (0..=1) of coded rows resolved at each level.
    pub fn resolution_shares(&self) -> Vec<(&'static str, f64)> {
        let total: u64 = self.resolution.values().sum();
        Resolution::ALL
            .iter()
            .map(|r| {
                let n = self.resolution.get(r.as_str()).copied().unwrap_or(0);
                (
                    r.as_str(),
                    if total == 0 {
                        0.0
                    } else {
                        n as f64 / total as f64
                    },
                )
            })
            .collect()
    }

    /// A human-readable summary.
    pub fn render(&self) -> String {
        let mut s = format!(
            "normalized {} (rules {}{})\n",
            self.connection,
            self.fingerprint,
            if self.incremental {
                ", changed sources only"
            } else {
                ""
            }
        );
        s.push_str(
            "  type                  resources  unchanged  deleted     rows  unparseable  flagged\n",
        );
        for t in &self.types {
            s.push_str(&format!(
                "  {:<20} {:>10} {:>10} {:>8} {:>8} {:>12} {:>8}\n",
                t.resource_type,
                t.resources,
                t.unchanged,
                t.deleted,
                t.rows,
                t.unparseable,
                t.flagged_rows
            ));
        }
        let total: u64 = self.resolution.values().sum();
        s.push_str(&format!("  codes resolved ({total} coded rows):\n"));
        for (r, share) in self.resolution_shares() {
            let n = self.resolution.get(r).copied().unwrap_or(0);
            s.push_str(&format!("    {r:<11} {n:>8}  {:>5.1} %\n", share * 100.0));
        }
        if self.derived_bmi > 0 {
            s.push_str(&format!(
                "  BMI derived from weight and height: {}\n",
                self.derived_bmi
            ));
        }
        let mut flags: Vec<(&String, &u64)> = self.flags.iter().collect();
        flags.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if !flags.is_empty() {
            s.push_str("  most frequent flags:\n");
            for (f, n) in flags.into_iter().take(10) {
                s.push_str(&format!("    {f:<28} {n:>8}\n"));
            }
        }
        s
    }
}

impl From<CodeMapping> for LocalMapping {
    fn from(m: CodeMapping) -> Self {
        LocalMapping {
            source_system: m.source_system,
            source_code: m.source_code,
            target_system: m.target_system,
            target_code: m.target_code,
            target_display: m.target_display,
        }
    }
}

impl From<LocalMapping> for CodeMapping {
    fn from(m: LocalMapping) -> Self {
        CodeMapping {
            source_system: m.source_system,
            source_code: m.source_code,
            target_system: m.target_system,
            target_code: m.target_code,
            target_display: m.target_display,
        }
    }
}

/// A context for one connection: the given tables plus the connection's mapping table from
/// the store. The mapping version is a content hash of the mappings, so rows record exactly
/// which mapping table produced them.
pub async fn context_for(
    store: &dyn Store,
    conn: &ConnectionRef,
    terminology: std::sync::Arc<Terminology>,
) -> Result<NormalizeContext, NormalizeError> {
    let mut mappings = store.list_code_mappings(conn).await?;
    mappings.sort_by(|a, b| {
        (&a.source_system, &a.source_code).cmp(&(&b.source_system, &b.source_code))
    });
    let mut text = String::new();
    for m in &mappings {
        text.push_str(&format!(
            "{}|{}|{}|{}|{}\n",
            m.source_system,
            m.source_code,
            m.target_system,
            m.target_code,
            m.target_display.as_deref().unwrap_or("")
        ));
    }
    let version = format!(
        "mappings-{}-{}",
        mappings.len(),
        &aqueduct_core::content_hash(text.as_bytes())[..12]
    );
    let mut ctx = NormalizeContext::new(terminology)
        .with_mappings(mappings.into_iter().map(LocalMapping::from));
    ctx.mapping_version = version;
    Ok(ctx)
}

/// The store record for a normalized row.
pub fn to_record(row: &NormalizedRow) -> NormalizedRecord {
    let code = row.code.as_ref();
    NormalizedRecord {
        ordinal: row.ordinal,
        kind: row.kind.as_str().to_string(),
        patient_id: row.patient_id.clone(),
        effective: row.effective.as_ref().and_then(|w| w.utc.clone()),
        code_system: code.and_then(|c| c.system.clone()),
        code: code.and_then(|c| c.code.clone()),
        display: code.and_then(|c| c.display.clone()),
        resolution: code
            .map(|c| c.resolution)
            .unwrap_or(Resolution::None)
            .as_str()
            .to_string(),
        source_system: code.and_then(|c| c.source_system.clone()),
        source_code: code.and_then(|c| c.source_code.clone()),
        source_text: code.and_then(|c| c.source_text.clone()),
        data: serde_json::to_string(row)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialize row: {e}\"}}")),
    }
}

/// The store source (lineage + records) for a normalization result. Resource-level flags
/// (unparseable...) are not stored: a resource without rows gets an empty record set and is
/// counted in the rebuild report (`unparseable`, `flags`).
pub fn to_source(logical_id: &str, n: &Normalized) -> NormalizedSource {
    NormalizedSource {
        resource_type: n.lineage.resource_type.clone(),
        logical_id: logical_id.to_string(),
        content_hash: n.lineage.content_hash.clone(),
        records: n.rows.iter().map(to_record).collect(),
        identifiers: identifiers(n),
    }
}

/// The business identifiers the store indexes: a Patient's, so that an event naming a patient
/// by MRN finds the connections holding them. Identifiers without a system cannot be told
/// apart across assigning authorities and are not indexed.
fn identifiers(n: &Normalized) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = n
        .rows
        .iter()
        .filter_map(|r| match &r.detail {
            crate::model::Detail::Patient(p) => Some(&p.identifiers),
            _ => None,
        })
        .flatten()
        .filter_map(|i| {
            let value = i.value.trim();
            let system = i.system.as_deref()?.trim();
            (!value.is_empty() && !system.is_empty())
                .then(|| (system.to_string(), value.to_string()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

struct BmiInputs {
    /// patient -> (source id "Observation/<id>", row)
    by_patient: HashMap<String, Vec<(String, NormalizedRow)>>,
}

impl BmiInputs {
    /// Keeps a weight or height row; returns its patient.
    fn add(&mut self, logical_id: &str, row: &NormalizedRow) -> String {
        let p = row.patient_id.clone().unwrap_or_default();
        self.by_patient
            .entry(p.clone())
            .or_default()
            .push((format!("Observation/{logical_id}"), row.clone()));
        p
    }
}

/// A weight row: the source a derived BMI is attached to.
fn is_weight(row: &NormalizedRow) -> bool {
    is_bmi_input(row) && row.code.as_ref().and_then(|c| c.code.as_deref()) == Some("29463-7")
}

fn is_bmi_input(row: &NormalizedRow) -> bool {
    let Some(c) = &row.code else { return false };
    c.system.as_deref() == Some(LOINC)
        && matches!(c.code.as_deref(), Some("29463-7" | "8302-2" | "39156-5"))
        && matches!(row.detail, Detail::Observation(_))
        && row.patient_id.is_some()
}

/// Re-derives normalized rows for `types` (all supported types when empty) from the raw
/// archive, page by page, replacing what was stored. Tombstoned resources lose their rows.
/// Missing BMIs are derived afterwards from weight and height (attached to the weight's
/// source as an extra row).
pub async fn rebuild(
    store: &dyn Store,
    conn: &ConnectionRef,
    ctx: &NormalizeContext,
    types: &[String],
) -> Result<RebuildReport, NormalizeError> {
    let options = RebuildOptions {
        types: types.to_vec(),
        ..Default::default()
    };
    rebuild_with(store, conn, ctx, &options).await
}

/// As [`rebuild`], re-deriving only sources whose raw content or context fingerprint
/// changed since their rows were written; what runs after every sync. Exact, not a
/// heuristic: an unchanged source would normalize to the same rows. Observations are still
/// parsed (derived BMI needs every weight and height) but only changed ones are rewritten;
/// requests that reference a separate Medication resource are always re-derived, since the
/// Medication can change without them.
pub async fn refresh(
    store: &dyn Store,
    conn: &ConnectionRef,
    ctx: &NormalizeContext,
    types: &[String],
) -> Result<RebuildReport, NormalizeError> {
    let options = RebuildOptions {
        types: types.to_vec(),
        incremental: true,
        since: None,
    };
    rebuild_with(store, conn, ctx, &options).await
}

/// What a rebuild covers.
#[derive(Debug, Clone, Default)]
pub struct RebuildOptions {
    /// Resource types (all supported types when empty).
    pub types: Vec<String>,
    /// Skip sources whose raw content and fingerprint are unchanged ([`refresh`]).
    pub incremental: bool,
    /// Only resources fetched (or tombstoned) at or after this instant; older ones keep
    /// their rows, and Observations among them still feed derived BMI.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The general form of [`rebuild`] and [`refresh`].
pub fn rebuild_with<'a>(
    store: &'a dyn Store,
    conn: &'a ConnectionRef,
    ctx: &'a NormalizeContext,
    options: &'a RebuildOptions,
) -> BoxFuture<'a, Result<RebuildReport, NormalizeError>> {
    Box::pin(rebuild_with_unboxed(store, conn, ctx, options))
}

async fn rebuild_with_unboxed(
    store: &dyn Store,
    conn: &ConnectionRef,
    ctx: &NormalizeContext,
    options: &RebuildOptions,
) -> Result<RebuildReport, NormalizeError> {
    let (types, incremental, since) = (&options.types, options.incremental, options.since);
    let selective = incremental || since.is_some();
    let types: Vec<String> = if types.is_empty() {
        SUPPORTED_TYPES.iter().map(|s| s.to_string()).collect()
    } else {
        types.to_vec()
    };
    for t in &types {
        if !SUPPORTED_TYPES.contains(&t.as_str()) {
            return Err(NormalizeError::Invalid(format!(
                "cannot normalize {t}: supported types are {}",
                SUPPORTED_TYPES.join(", ")
            )));
        }
    }
    let fingerprint = ctx.fingerprint();
    let mut report = RebuildReport {
        connection: conn.to_string(),
        rules_version: RULES_VERSION.to_string(),
        fingerprint: fingerprint.clone(),
        incremental,
        // every kind is named in the JSON report, at 0 when no row had it
        resolution: Resolution::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), 0))
            .collect(),
        ..Default::default()
    };
    // patients with a re-derived, moved or removed Observation: their BMI is derived again
    let mut bmi_changed: HashSet<String> = HashSet::new();
    let mut bmi = BmiInputs {
        by_patient: HashMap::new(),
    };
    // Observation sources holding a weight, written after the BMI step together with the
    // BMI derived from them (so a failure in between leaves them stale, and re-derived next
    // time): id -> (normalization, re-derived in this pass)
    let mut weights: BTreeMap<String, (Normalized, bool)> = BTreeMap::new();
    // Medication resources referenced by requests/statements (bounded cache)
    let mut med_cache: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    for t in &types {
        let fingerprint = ctx.fingerprint_for(t);
        let mut tr = TypeReport {
            resource_type: t.clone(),
            ..Default::default()
        };
        let mut after: Option<String> = None;
        loop {
            let page: Vec<StoredResource> = store
                .list_resources(conn, t, after.as_deref(), PAGE_SIZE, true)
                .await?;
            if page.is_empty() {
                break;
            }
            let stamps = if selective {
                let ids: Vec<String> = page.iter().map(|r| r.logical_id.clone()).collect();
                store.normalized_stamps(conn, t, &ids).await?
            } else {
                HashMap::new()
            };
            let mut sources = Vec::with_capacity(page.len());
            for r in &page {
                let stamp = stamps.get(&r.logical_id);
                let before_window = since.is_some_and(|s| r.deleted_at.unwrap_or(r.fetched_at) < s);
                let unchanged = before_window
                    || (incremental
                        && stamp.is_some_and(|s| {
                            s.content_hash == r.content_hash && s.rules_version == fingerprint
                        }));
                if r.deleted_at.is_some() {
                    if before_window || (incremental && stamp.is_none()) {
                        continue; // nothing stored for it, or outside the window
                    }
                    if t == "Observation" {
                        bmi_changed.extend(r.patient_id.iter().cloned());
                        bmi_changed.extend(stamp.and_then(|s| s.patient_id.clone()));
                    }
                    tr.deleted += 1;
                    sources.push(NormalizedSource {
                        resource_type: r.resource_type.clone(),
                        logical_id: r.logical_id.clone(),
                        content_hash: r.content_hash.clone(),
                        records: Vec::new(),
                        identifiers: Vec::new(),
                    });
                    continue;
                }
                let med_ref = if t.starts_with("Medication") {
                    medication_reference(&r.bytes)
                } else {
                    None
                };
                let unchanged = before_window || (unchanged && med_ref.is_none());
                if unchanged && t != "Observation" {
                    tr.unchanged += 1;
                    continue;
                }
                let med_bytes = match med_ref {
                    Some(id) => {
                        if !med_cache.contains_key(&id) {
                            let got = store.get_resource(conn, "Medication", &id).await?;
                            if med_cache.len() > 10_000 {
                                med_cache.clear();
                            }
                            med_cache.insert(id.clone(), got.map(|m| m.bytes));
                        }
                        med_cache.get(&id).and_then(|b| b.as_deref())
                    }
                    None => None,
                };
                let mut n =
                    normalize_with_refs(t, &r.bytes, r.content_hash.clone(), ctx, med_bytes);
                if t == "Observation" {
                    for row in &mut n.rows {
                        if row.patient_id.is_none() {
                            row.patient_id = r.patient_id.clone();
                        }
                        if is_bmi_input(row) {
                            bmi.add(&r.logical_id, row);
                        }
                    }
                    // (a source that had no rows and still has none changes nothing)
                    if !unchanged && (stamp.is_some() || !n.rows.is_empty()) {
                        // its patient now, and where its rows were filed before
                        bmi_changed.extend(n.rows.iter().filter_map(|x| x.patient_id.clone()));
                        bmi_changed.extend(r.patient_id.iter().cloned());
                        bmi_changed.extend(stamp.and_then(|s| s.patient_id.clone()));
                    }
                }
                if unchanged {
                    // an Observation parsed only for the BMI inputs it may hold
                    tr.unchanged += 1;
                    if n.rows.iter().any(is_weight) {
                        weights.insert(r.logical_id.clone(), (n, false));
                    }
                    continue;
                }
                tr.resources += 1;
                if n.rows.is_empty() {
                    tr.unparseable += 1;
                }
                for f in &n.flags {
                    *report.flags.entry(f.code.to_string()).or_default() += 1;
                }
                for row in &mut n.rows {
                    if row.patient_id.is_none() {
                        row.patient_id = r.patient_id.clone();
                    }
                    tr.rows += 1;
                    if !row.flags.is_empty() {
                        tr.flagged_rows += 1;
                    }
                    for f in &row.flags {
                        *report.flags.entry(f.code.to_string()).or_default() += 1;
                    }
                    if let Some(c) = &row.code {
                        *tr.resolution
                            .entry(c.resolution.as_str().to_string())
                            .or_default() += 1;
                        *report
                            .resolution
                            .entry(c.resolution.as_str().to_string())
                            .or_default() += 1;
                    }
                }
                if t == "Observation" && n.rows.iter().any(is_weight) {
                    weights.insert(r.logical_id.clone(), (n, true));
                } else {
                    sources.push(to_source(&r.logical_id, &n));
                }
            }
            if !sources.is_empty() {
                store.write_normalized(conn, &sources, &fingerprint).await?;
            }
            let last = page.last().map(|r| r.logical_id.clone());
            let short = page.len() < PAGE_SIZE as usize;
            after = last;
            if short {
                break;
            }
        }
        tracing::info!(connection = %conn, resource_type = %t, resources = tr.resources, rows = tr.rows, "normalized");
        report.types.push(tr);
    }
    // derived BMI, attached to the weight's source: every weight re-derived in this pass is
    // written now, and every weight of a patient whose inputs changed (a BMI may have appeared
    // or gone); the others keep their rows
    let fingerprint = ctx.fingerprint_for("Observation");
    let mut derived_by_patient: HashMap<String, Vec<NormalizedRow>> = HashMap::new();
    let mut batch: Vec<NormalizedSource> = Vec::new();
    for (id, (mut n, changed)) in weights {
        let patient = n
            .rows
            .iter()
            .find_map(|r| r.patient_id.clone())
            .unwrap_or_default();
        if !changed && selective && !bmi_changed.contains(&patient) {
            continue;
        }
        let derived = derived_by_patient
            .entry(patient.clone())
            .or_insert_with(|| {
                let rows = bmi
                    .by_patient
                    .get(&patient)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let refs: Vec<(String, &NormalizedRow)> =
                    rows.iter().map(|(i, r)| (i.clone(), r)).collect();
                derive_bmi(&refs, 365)
            });
        let source = format!("Observation/{id}");
        for d in derived.iter() {
            let Detail::Observation(o) = &d.detail else {
                continue;
            };
            if o.derived_from.first() != Some(&source) {
                continue;
            }
            let mut row = d.clone();
            row.ordinal = n.rows.len() as u32;
            n.rows.push(row);
            report.derived_bmi += 1;
            *report
                .resolution
                .entry(Resolution::Standard.as_str().to_string())
                .or_default() += 1;
        }
        batch.push(to_source(&id, &n));
        if batch.len() >= PAGE_SIZE as usize {
            store.write_normalized(conn, &batch, &fingerprint).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.write_normalized(conn, &batch, &fingerprint).await?;
    }
    Ok(report)
}
