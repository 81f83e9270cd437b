//! Judging one sync run: does the data that came back look complete and fresh, compared with
//! the past (previous runs of the same kind), with the ledger's in-band evidence, with the
//! run's own summary and with what US Core says a resource must carry?

use aqueduct_core::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};

use aqueduct_core::{
    ConnectionRef, Finding, LedgerEntry, RunId, RunOutcome, RunTypeTotals, Store, SyncRun,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::util::{median, parse_fhir_time, pct};
use crate::{CRITICAL, INFO, MonitorError, WARNING};

/// Thresholds for [`assess_run`]. Deserializable (e.g. from an `[monitor]` table); every field
/// has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// How many previous runs of the same kind (complete or partial) form the baseline.
    pub baseline_runs: u32,
    /// A type whose resource count falls by more than this share of its baseline (median of
    /// the baseline runs) raises "type-count-drop".
    pub count_drop_share: f64,
    /// Drops smaller than this many resources are ignored (small numbers are noisy).
    pub count_drop_min: u64,
    /// A patient whose total falls by more than this share of the previous run raises
    /// "patient-count-drop"...
    pub patient_drop_share: f64,
    /// ...when it falls by at least this many resources.
    pub patient_drop_min: u64,
    /// At most this many per-patient findings per run; the rest are summed up in one.
    pub max_patient_findings: usize,
    /// Newest `meta.lastUpdated` of a checked type older than this many days, while the run
    /// fetched that type, raises "stale-data". 0 (the default) turns the absolute check off:
    /// how old is too old depends on the source (a busy hospital versus a payer that posts
    /// claims monthly), so it is set per installation; "not advancing across runs" is always on.
    pub max_data_age_days: u64,
    /// The types whose freshness is checked (types that change with any active care).
    pub freshness_types: Vec<String>,
    /// When > 0: an incremental run fetches only what changed, so the newest `meta.lastUpdated`
    /// of a checked type should advance whenever one fetches that type; unchanged over this
    /// many consecutive incremental runs that fetched it raises "stale-data" (the source is
    /// likely serving cached data). Full runs re-fetch everything and are not counted.
    /// 0 disables the check.
    pub stale_unchanged_runs: u32,
    /// How many stored resources per type are sampled for must-support elements.
    pub must_support_sample: u32,
    /// A share of sampled resources missing an element above this raises
    /// "must-support-missing".
    pub must_support_max_share: f64,
    /// A rise of the missing share by more than this since the previous assessment raises it too.
    pub must_support_jump: f64,
    /// Must-support checks need at least this many sampled resources.
    pub must_support_min_sample: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            baseline_runs: 5,
            count_drop_share: 0.5,
            count_drop_min: 5,
            patient_drop_share: 0.2,
            patient_drop_min: 2,
            max_patient_findings: 10,
            max_data_age_days: 0,
            freshness_types: vec![
                "Observation".into(),
                "Encounter".into(),
                "MedicationRequest".into(),
                "DiagnosticReport".into(),
            ],
            stale_unchanged_runs: 3,
            must_support_sample: 200,
            must_support_max_share: 0.2,
            must_support_jump: 0.1,
            must_support_min_sample: 10,
        }
    }
}

/// Error kinds that mean "the server said 200 but the content is not what it claims".
const IN_BAND_KINDS: &[(&str, &str)] = &[
    (
        "html-200",
        "an HTML page came back with status 200 instead of FHIR JSON (often a login or maintenance page)",
    ),
    (
        "invalid-json",
        "the body was not valid JSON, so its resources could not be read",
    ),
    (
        "truncated",
        "the body was cut off before its end, so resources in it were lost",
    ),
    (
        "outcome-in-bundle",
        "the Bundle carried an OperationOutcome instead of (or beside) the data",
    ),
    (
        "empty-bundle",
        "an empty Bundle came back where data was expected",
    ),
];

const CHECKPOINT_PREFIX: &str = "aqueduct-monitor/";

/// The kinds of finding [`assess_run`] records.
pub const FINDING_KINDS: &[&str] = &[
    "unresolved-references",
    "run-failed",
    "type-dropped-to-zero",
    "type-count-drop",
    "patient-count-drop",
    "in-band-error",
    "partial-run",
    "stale-data",
    "must-support-missing",
];

/// Assesses one finished run of `conn`: records every finding through
/// [`Store::record_finding`] and returns them. A clean run yields no findings. A run already
/// assessed (it has findings of [`FINDING_KINDS`]) is not assessed again: its recorded
/// findings are returned.
///
/// Volume comparisons (types dropping to zero or falling, patients' totals falling) use
/// previous complete or partial runs of the same `kind`; they are skipped for failed runs
/// (a "run-failed" finding says it) and for incremental runs (which fetch only changes).
pub fn assess_run<'a>(
    store: &'a dyn Store,
    conn: &'a ConnectionRef,
    run: RunId,
    cfg: &'a MonitorConfig,
) -> BoxFuture<'a, Result<Vec<Finding>, MonitorError>> {
    Box::pin(assess_run_unboxed(store, conn, run, cfg))
}

async fn assess_run_unboxed(
    store: &dyn Store,
    conn: &ConnectionRef,
    run: RunId,
    cfg: &MonitorConfig,
) -> Result<Vec<Finding>, MonitorError> {
    let now = Utc::now();
    let this = store
        .get_run(conn, run)
        .await?
        .ok_or_else(|| MonitorError::UnknownRun {
            connection: conn.to_string(),
            run,
        })?;
    // Assessing the same run twice returns what was recorded the first time.
    let recorded: Vec<Finding> = store
        .list_findings(conn, 1000)
        .await?
        .into_iter()
        .filter(|f| f.run_id == Some(run) && FINDING_KINDS.contains(&f.kind.as_str()))
        .collect();
    if !recorded.is_empty() {
        return Ok(recorded);
    }
    let mut out = Findings {
        now,
        run,
        list: Vec::new(),
    };
    let totals: Vec<RunTypeTotals> = store
        .run_type_totals(conn, run)
        .await?
        .into_iter()
        .filter(|t| !t.resource_type.is_empty())
        .collect();
    let summary = RunSummary::parse(this.summary.as_deref());

    if this.outcome == RunOutcome::Failed {
        out.push(
            "run-failed",
            CRITICAL,
            None,
            format!(
                "Sync run {run} ({}) failed: {}. Its data is incomplete; no comparison with earlier runs was made.",
                this.kind,
                this.error.as_deref().unwrap_or("no error recorded")
            ),
        );
    } else if !is_incremental(&this.kind) && summary.resumed_from.is_none() {
        // A run that resumed an interrupted one fetched only what that one had left: its
        // volumes are not comparable (and do not serve as a baseline either).
        let baseline = baseline_runs(store, conn, &this, cfg.baseline_runs).await?;
        if !baseline.is_empty() {
            compare_types(
                store, conn, &this, &totals, &baseline, &summary, cfg, &mut out,
            )
            .await?;
            compare_patients(store, conn, &baseline[0], run, cfg, &mut out).await?;
        }
    }

    let entries = store.run_requests(conn, run).await?;
    in_band(&entries, &mut out);
    partial_types(&this, &summary, &mut out);
    freshness(store, conn, &this, &totals, cfg, &mut out).await?;
    must_support(store, conn, cfg, &mut out).await?;

    for f in &out.list {
        store.record_finding(conn, f).await?;
    }
    if !out.list.is_empty() {
        tracing::info!(
            connection = %conn,
            run,
            findings = out.list.len(),
            "sync run assessed: data may be incomplete or stale"
        );
    }
    Ok(out.list)
}

struct Findings {
    now: DateTime<Utc>,
    run: RunId,
    list: Vec<Finding>,
}

impl Findings {
    fn push(&mut self, kind: &str, severity: &str, rtype: Option<&str>, detail: String) {
        self.list.push(Finding {
            at: self.now,
            run_id: Some(self.run),
            kind: kind.into(),
            severity: severity.into(),
            resource_type: rtype.map(str::to_string),
            detail,
        });
    }
}

fn is_incremental(kind: &str) -> bool {
    kind.starts_with("incremental")
}

/// Previous runs of the same kind that finished complete or partial, most recent first.
async fn baseline_runs(
    store: &dyn Store,
    conn: &ConnectionRef,
    this: &SyncRun,
    n: u32,
) -> Result<Vec<SyncRun>, MonitorError> {
    let runs = store
        .list_runs(conn, n.saturating_mul(20).clamp(200, 2000))
        .await?;
    Ok(runs
        .into_iter()
        .filter(|r| {
            r.id < this.id
                && r.kind == this.kind
                && matches!(r.outcome, RunOutcome::Complete | RunOutcome::Partial)
                && RunSummary::parse(r.summary.as_deref())
                    .resumed_from
                    .is_none()
        })
        .take(n as usize)
        .collect())
}

/// What the sync engine wrote in the run summary (fields read leniently).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RunSummary {
    missing: Vec<MissingType>,
    skipped_types: serde_json::Value,
    notes: Vec<serde_json::Value>,
    /// The interrupted run this one resumed, if any.
    resumed_from: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MissingType {
    patient_id: String,
    resource_type: String,
    reason: String,
    detail: String,
}

impl RunSummary {
    fn parse(s: Option<&str>) -> Self {
        s.and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    fn reasons_for(&self, rtype: &str) -> BTreeSet<&str> {
        self.missing
            .iter()
            .filter(|m| m.resource_type == rtype)
            .map(|m| m.reason.as_str())
            .collect()
    }

    fn skipped(&self, rtype: &str) -> bool {
        match &self.skipped_types {
            serde_json::Value::Array(a) => a.iter().any(|v| v.as_str() == Some(rtype)),
            serde_json::Value::Object(o) => o.contains_key(rtype),
            _ => false,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn compare_types(
    store: &dyn Store,
    conn: &ConnectionRef,
    this: &SyncRun,
    totals: &[RunTypeTotals],
    baseline: &[SyncRun],
    summary: &RunSummary,
    cfg: &MonitorConfig,
    out: &mut Findings,
) -> Result<(), MonitorError> {
    let mut history: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (i, b) in baseline.iter().enumerate() {
        for t in store.run_type_totals(conn, b.id).await? {
            if t.resource_type.is_empty() {
                continue;
            }
            let v = history.entry(t.resource_type).or_default();
            v.resize(i, 0); // a type absent from a run counts as 0 there
            v.push(t.resources);
        }
    }
    for v in history.values_mut() {
        v.resize(baseline.len(), 0);
    }
    let now: BTreeMap<&str, u64> = totals
        .iter()
        .map(|t| (t.resource_type.as_str(), t.resources))
        .collect();
    for (rtype, past) in &history {
        let base = median(past);
        let previous = past[0];
        let current = now.get(rtype.as_str()).copied().unwrap_or(0);
        let why = explain_missing(summary, rtype);
        let last_nonzero = past.iter().position(|&c| c > 0);
        if let (0, Some(j)) = (current, last_nonzero) {
            let when = if j == 0 {
                "the previous run of this kind".to_string()
            } else {
                format!("run {} of this kind ({} runs ago)", baseline[j].id, j + 1)
            };
            out.push(
                "type-dropped-to-zero",
                CRITICAL,
                Some(rtype),
                format!(
                    "{rtype} returned 0 resources in run {} ({}), although {when} returned {} (median {base} over the last {} runs).{why} The source may have stopped sharing this type, the granted scopes may hide it, or the search failed silently.",
                    this.id,
                    this.kind,
                    past[j],
                    past.len()
                ),
            );
        } else if base > 0 && current < base {
            let drop = (base - current) as f64 / base as f64;
            if drop > cfg.count_drop_share && base - current >= cfg.count_drop_min {
                out.push(
                    "type-count-drop",
                    WARNING,
                    Some(rtype),
                    format!(
                        "{rtype} returned {current} resources in run {} ({}), {} fewer than its baseline of {base} (previous run: {previous}); more than the {} tolerated.{why} Data may be missing at the source or lost in paging.",
                        this.id,
                        this.kind,
                        pct(drop),
                        pct(cfg.count_drop_share)
                    ),
                );
            }
        }
    }
    Ok(())
}

fn explain_missing(summary: &RunSummary, rtype: &str) -> String {
    let reasons = summary.reasons_for(rtype);
    let mut s = String::new();
    if !reasons.is_empty() {
        s.push_str(&format!(
            " The sync reported it missing: {}.",
            reasons.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if summary.skipped(rtype) {
        s.push_str(" The sync skipped this type.");
    }
    s
}

async fn compare_patients(
    store: &dyn Store,
    conn: &ConnectionRef,
    previous: &SyncRun,
    run: RunId,
    cfg: &MonitorConfig,
    out: &mut Findings,
) -> Result<(), MonitorError> {
    let before: BTreeMap<String, u64> = store
        .run_patient_totals(conn, previous.id)
        .await?
        .into_iter()
        .collect();
    if before.is_empty() {
        return Ok(());
    }
    let now: BTreeMap<String, u64> = store
        .run_patient_totals(conn, run)
        .await?
        .into_iter()
        .collect();
    let mut drops = Vec::new();
    for (patient, &b) in &before {
        // A patient with no request in this run was not asked for: nothing to compare.
        let Some(&n) = now.get(patient) else {
            continue;
        };
        if n < b {
            let share = (b - n) as f64 / b as f64;
            if share > cfg.patient_drop_share && b - n >= cfg.patient_drop_min {
                drops.push((patient, b, n));
            }
        }
    }
    for (patient, b, n) in drops.iter().take(cfg.max_patient_findings) {
        out.push(
            "patient-count-drop",
            WARNING,
            None,
            format!(
                "Patient {patient}: {n} resources in run {run}, down from {b} in run {} ({} fewer). Part of this patient's record may not have come back.",
                previous.id,
                b - n
            ),
        );
    }
    if drops.len() > cfg.max_patient_findings {
        let rest = &drops[cfg.max_patient_findings..];
        let ids: Vec<&str> = rest.iter().take(20).map(|d| d.0.as_str()).collect();
        out.push(
            "patient-count-drop",
            WARNING,
            None,
            format!(
                "{} more patients returned fewer resources in run {run} than in run {} (e.g. {}).",
                rest.len(),
                previous.id,
                ids.join(", ")
            ),
        );
    }
    Ok(())
}

/// In-band problems: a 200 that is not what it claims, pages that came back short.
fn in_band(entries: &[LedgerEntry], out: &mut Findings) {
    // A URL counts as recovered when a later attempt of it succeeded.
    let mut ok_urls: BTreeMap<&str, u32> = BTreeMap::new();
    for e in entries {
        if e.error_kind.is_none() && e.page_complete {
            let v = ok_urls.entry(e.url.as_str()).or_insert(0);
            *v = (*v).max(e.attempt);
        }
    }
    // (kind, type) -> (unrecovered, recovered, evidence)
    type Group<'a> = (u64, u64, Vec<&'a LedgerEntry>);
    let mut groups: BTreeMap<(String, String), Group<'_>> = BTreeMap::new();
    for e in entries {
        let kind = match e.error_kind.as_deref() {
            Some(k) if IN_BAND_KINDS.iter().any(|(n, _)| *n == k) => k.to_string(),
            Some(_) => continue,
            None if !e.page_complete => "incomplete-page".to_string(),
            None => continue,
        };
        let rtype = e.resource_type.clone().unwrap_or_default();
        let g = groups.entry((kind, rtype)).or_default();
        if ok_urls.get(e.url.as_str()).is_some_and(|&a| a > e.attempt) {
            g.1 += 1;
        } else {
            g.0 += 1;
        }
        if g.2.len() < 3 {
            g.2.push(e);
        }
    }
    for ((kind, rtype), (unrecovered, recovered, evidence)) in groups {
        let what = IN_BAND_KINDS
            .iter()
            .find(|(n, _)| *n == kind)
            .map(|(_, w)| *w)
            .unwrap_or("a page came back short of what it should hold");
        let label = if rtype.is_empty() {
            "requests".to_string()
        } else {
            format!("{rtype} requests")
        };
        let ev: Vec<String> = evidence
            .iter()
            .map(|e| {
                format!(
                    "{} at {} (status {}, attempt {})",
                    e.url,
                    e.at.to_rfc3339(),
                    e.status.map_or("none".to_string(), |s| s.to_string()),
                    e.attempt
                )
            })
            .collect();
        let (severity, tail) = if unrecovered == 0 {
            (
                INFO,
                "every one succeeded on retry, so no data should be missing".to_string(),
            )
        } else {
            (
                WARNING,
                format!(
                    "{unrecovered} did not succeed on retry, so their data is missing from this run"
                ),
            )
        };
        out.push(
            "in-band-error",
            severity,
            (!rtype.is_empty()).then_some(rtype.as_str()),
            format!(
                "{} {label} looked like success but were not ({kind}): {what}; {tail} ({recovered} recovered). Evidence: {}.",
                unrecovered + recovered,
                ev.join("; ")
            ),
        );
    }
}

/// Types the run itself says are partial or missing, and server outcomes it noted.
fn partial_types(this: &SyncRun, summary: &RunSummary, out: &mut Findings) {
    // type -> (patients, reasons, example details)
    type Group<'a> = (BTreeSet<&'a str>, BTreeSet<&'a str>, Vec<&'a str>);
    let mut by_type: BTreeMap<&str, Group<'_>> = BTreeMap::new();
    for m in &summary.missing {
        let g = by_type.entry(m.resource_type.as_str()).or_default();
        g.0.insert(m.patient_id.as_str());
        g.1.insert(m.reason.as_str());
        if g.2.len() < 2 && !m.detail.is_empty() {
            g.2.push(m.detail.as_str());
        }
    }
    for (rtype, (patients, reasons, details)) in &by_type {
        out.push(
            "partial-run",
            WARNING,
            (!rtype.is_empty()).then_some(*rtype),
            format!(
                "Run {} ({}, {}) did not get all {rtype} data for {} patient(s): {}.{}",
                this.id,
                this.kind,
                this.outcome.as_str(),
                patients.len(),
                reasons.iter().copied().collect::<Vec<_>>().join(", "),
                if details.is_empty() {
                    String::new()
                } else {
                    format!(" For example: {}.", details.join("; "))
                }
            ),
        );
    }
    if this.outcome == RunOutcome::Partial && by_type.is_empty() {
        out.push(
            "partial-run",
            WARNING,
            None,
            format!(
                "Run {} ({}) ended partial without saying which types are incomplete{}.",
                this.id,
                this.kind,
                this.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        );
    }
    let outcomes: Vec<&str> = summary
        .notes
        .iter()
        .filter_map(|n| n.as_str())
        // Only outcomes the server put inside a successful Bundle; a failed request's error
        // text also quotes its OperationOutcome, but that is an error, not an in-band one.
        .filter(|n| n.contains("server outcome in results"))
        .collect();
    let unresolved: Vec<&str> = summary
        .notes
        .iter()
        .filter_map(|n| n.as_str())
        .filter(|n| n.contains("could not be fetched") || n.contains(" not fetched: "))
        .collect();
    if !unresolved.is_empty() {
        out.push(
            "unresolved-references",
            WARNING,
            None,
            format!(
                "{} reference problem(s) in run {}: resources the records point to (practitioners, locations, attachments...) could not be fetched, so the records are incomplete. E.g.: {}.",
                unresolved.len(),
                this.id,
                unresolved.iter().take(3).copied().collect::<Vec<_>>().join("; ")
            ),
        );
    }
    if !outcomes.is_empty() {
        out.push(
            "in-band-error",
            WARNING,
            None,
            format!(
                "{} page(s) of run {} carried an OperationOutcome inside a 200 Bundle: the server reported a problem while answering as if all was well. E.g.: {}.",
                outcomes.len(),
                this.id,
                outcomes
                    .iter()
                    .take(3)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        );
    }
}

async fn freshness(
    store: &dyn Store,
    conn: &ConnectionRef,
    this: &SyncRun,
    totals: &[RunTypeTotals],
    cfg: &MonitorConfig,
    out: &mut Findings,
) -> Result<(), MonitorError> {
    let fetched: BTreeMap<&str, u64> = totals
        .iter()
        .map(|t| (t.resource_type.as_str(), t.resources))
        .collect();
    for f in store.freshness(conn).await? {
        if !cfg.freshness_types.contains(&f.resource_type) {
            continue;
        }
        let n = fetched.get(f.resource_type.as_str()).copied().unwrap_or(0);
        if n == 0 {
            continue; // nothing fetched: freshness says nothing about this run
        }
        let Some(newest) = f.newest_last_updated.as_deref() else {
            continue;
        };
        let rtype = f.resource_type.as_str();
        if let Some(t) = parse_fhir_time(newest) {
            let age = out.now.signed_duration_since(t);
            if cfg.max_data_age_days > 0 && age.num_days() > cfg.max_data_age_days as i64 {
                out.push(
                    "stale-data",
                    WARNING,
                    Some(rtype),
                    format!(
                        "The newest {rtype} held was last updated at the source on {newest}, {} days ago (limit {}), although this run fetched {n} {rtype} resources. The source may be serving cached or stale data.",
                        age.num_days(),
                        cfg.max_data_age_days
                    ),
                );
                continue;
            }
        }
        if cfg.stale_unchanged_runs > 0 && is_incremental(&this.kind) {
            let key = format!("{CHECKPOINT_PREFIX}freshness/{rtype}");
            let prev = store.load_checkpoint(conn, &key).await?;
            let unchanged = match prev.as_deref().and_then(|p| p.rsplit_once('|')) {
                Some((v, c)) if v == newest => c.parse::<u32>().unwrap_or(0) + 1,
                _ => 0,
            };
            store
                .save_checkpoint(conn, &key, &format!("{newest}|{unchanged}"))
                .await?;
            if unchanged >= cfg.stale_unchanged_runs {
                out.push(
                    "stale-data",
                    WARNING,
                    Some(rtype),
                    format!(
                        "The newest {rtype} lastUpdated ({newest}) has not advanced over {unchanged} incremental runs that fetched {rtype} (this one: {n} resources), although an incremental run should only return what changed since the last sync. The source may be ignoring the _lastUpdated filter or serving cached data."
                    ),
                );
            }
        }
    }
    Ok(())
}

/// (element label, present?) — the modest US Core must-support set checked.
type Check = (&'static str, fn(&serde_json::Value) -> bool);

fn has(v: &serde_json::Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

fn has_prefix(v: &serde_json::Value, prefix: &str) -> bool {
    v.as_object()
        .is_some_and(|o| o.iter().any(|(k, x)| k.starts_with(prefix) && !x.is_null()))
}

static OBSERVATION: [Check; 4] = [
    ("status", |v| has(v, "status")),
    ("code", |v| has(v, "code")),
    ("subject", |v| has(v, "subject")),
    ("value[x]", |v| {
        has_prefix(v, "value")
            || has(v, "dataAbsentReason")
            || has(v, "component")
            || has(v, "hasMember")
    }),
];
static CONDITION: [Check; 3] = [
    ("code", |v| has(v, "code")),
    ("subject", |v| has(v, "subject")),
    ("clinicalStatus", |v| {
        has(v, "clinicalStatus") || has(v, "verificationStatus")
    }),
];
static MEDICATION_REQUEST: [Check; 3] = [
    ("status", |v| has(v, "status")),
    ("medication[x]", |v| has_prefix(v, "medication")),
    ("subject", |v| has(v, "subject")),
];

fn checks(rtype: &str) -> &'static [Check] {
    match rtype {
        "Observation" => &OBSERVATION,
        "Condition" => &CONDITION,
        "MedicationRequest" => &MEDICATION_REQUEST,
        _ => &[],
    }
}

async fn must_support(
    store: &dyn Store,
    conn: &ConnectionRef,
    cfg: &MonitorConfig,
    out: &mut Findings,
) -> Result<(), MonitorError> {
    if cfg.must_support_sample == 0 {
        return Ok(());
    }
    for rtype in ["Observation", "Condition", "MedicationRequest"] {
        let sample = store
            .list_resources(conn, rtype, None, cfg.must_support_sample, false)
            .await?;
        let parsed: Vec<serde_json::Value> = sample
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.bytes).ok())
            .collect();
        if parsed.len() < cfg.must_support_min_sample {
            continue;
        }
        let key = format!("{CHECKPOINT_PREFIX}must-support/{rtype}");
        let previous: BTreeMap<String, f64> = store
            .load_checkpoint(conn, &key)
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let mut shares = BTreeMap::new();
        for (element, present) in checks(rtype) {
            let missing = parsed.iter().filter(|v| !present(v)).count();
            let share = missing as f64 / parsed.len() as f64;
            shares.insert(element.to_string(), share);
            let before = previous.get(*element).copied();
            let jumped = before.is_some_and(|b| share - b > cfg.must_support_jump);
            if share > cfg.must_support_max_share || jumped {
                out.push(
                    "must-support-missing",
                    WARNING,
                    Some(rtype),
                    format!(
                        "{missing} of {} sampled {rtype} resources ({}) lack {element}, which US Core requires systems to support{}. The source may be sending incomplete resources.",
                        parsed.len(),
                        pct(share),
                        match before {
                            Some(b) => format!(" (previous assessment: {})", pct(b)),
                            None => String::new(),
                        }
                    ),
                );
            }
        }
        let enc = serde_json::to_string(&shares)?;
        store.save_checkpoint(conn, &key, &enc).await?;
    }
    Ok(())
}
