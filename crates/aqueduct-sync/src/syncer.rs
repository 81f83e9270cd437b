//! The sync engine: for each patient, fetch every planned type page by page into the store,
//! with checkpoints, then resolve references; record everything in the ledger.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aqueduct_client::fhir::{CapabilityStatement, ResourceHead};
use aqueduct_client::{Expect, FetchError, FhirClient, FhirRequest, VendorProfile};
use aqueduct_store::{
    ConnectionRef, Finding, ParseStatus, RawResource, RunId, RunOutcome, Store, WriteSummary,
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use url::Url;

use crate::ledger::RunLedger;
use crate::page::{NextPage, PageSource, bundle_page, next_page, raw_resource};
use crate::plan::{TypePlan, plan_type, should_try};
use crate::refs::{Found, RefTarget, parse_reference};
use crate::report::{MissingReason, PartialType, SyncError, SyncReport, TypeCounts};

/// Full: fetch everything and tombstone what disappeared. Incremental: only what changed since
/// the last complete sync of each type (server clock), no tombstones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    Full,
    Incremental,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Incremental => "incremental",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Types to fetch; empty = the profile's `default_types`.
    pub resource_types: Vec<String>,
    /// Patients in flight at once.
    pub patient_concurrency: usize,
    /// Types in flight at once per patient.
    pub type_concurrency: usize,
    /// How many hops of references to follow (0 = none).
    pub reference_depth: u32,
    /// Fetch DocumentReference attachments on the same server.
    pub fetch_binaries: bool,
    /// Use `Patient/$everything` when the profile and server support it.
    pub use_everything: bool,
    /// Extra tries of a page after the client's own retries are exhausted.
    pub page_retries: u32,
    /// A `running` run of the connection without a heartbeat for this long was killed or
    /// lost: the next sync closes it as failed (a finding says so) instead of leaving it
    /// "running" forever. Running syncs beat every [`HEARTBEAT_EVERY`].
    pub stale_run_after: Duration,
}

/// How often a running sync writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

/// The error recorded on a run closed for lack of a heartbeat.
pub const INTERRUPTED: &str = "interrupted: the process running this sync stopped (killed or \
    lost) before finishing; what it stored up to its last checkpoint is kept and the next run \
    resumes from there";

/// Aborts the task when dropped: the heartbeat stops with the sync, whichever way it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            resource_types: Vec::new(),
            patient_concurrency: 4,
            type_concurrency: 4,
            reference_depth: 1,
            fetch_binaries: true,
            use_everything: true,
            page_retries: 1,
            stale_run_after: Duration::from_secs(300),
        }
    }
}

/// A checkpoint value, per (mode, patient, type, search).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Checkpoint {
    Next { next: String },
    Done { done: bool, complete: bool },
}

/// How one search ended.
#[derive(Debug, Clone)]
enum SearchEnd {
    Complete,
    Partial(MissingReason, String),
    Rejected(String),
    Forbidden(String),
    Reauth,
}

/// What the sync learned about the server, remembered across patients.
#[derive(Debug, Default)]
struct Probes {
    rejected: HashSet<(String, String)>,
    /// The server refused a batch Bundle although the profile says it takes them: reads go
    /// one by one from then on.
    batch_rejected: bool,
    /// (type, alternative label) of the alternatives the server accepted.
    working_alternative: HashSet<(String, String)>,
    everything_works: Option<bool>,
}

/// State of one `sync_patients` call.
struct Run {
    id: RunId,
    mode: SyncMode,
    client: FhirClient,
    ledger: Arc<RunLedger>,
    counts: Mutex<BTreeMap<String, TypeCounts>>,
    partial: Mutex<Vec<PartialType>>,
    notes: Mutex<Vec<String>>,
    skipped: Mutex<std::collections::BTreeSet<String>>,
    reauth: AtomicBool,
    reauth_detail: Mutex<Option<String>>,
    fetched_refs: Mutex<HashSet<(String, String)>>,
    referenced_fetched: AtomicU64,
    external: AtomicU64,
    patients_complete: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Run {
    fn note(&self, s: String) {
        tracing::info!("{s}");
        let mut n = lock(&self.notes);
        if n.len() < 1000 {
            n.push(s);
        }
    }
    fn partial(&self, patient: &str, rtype: &str, reason: MissingReason, detail: String) {
        lock(&self.partial).push(PartialType {
            patient_id: patient.into(),
            resource_type: rtype.into(),
            reason,
            detail,
        });
    }
    fn abort(&self, detail: String) {
        self.reauth.store(true, Ordering::SeqCst);
        lock(&self.reauth_detail).get_or_insert(detail);
    }
    fn aborted(&self) -> bool {
        self.reauth.load(Ordering::SeqCst)
    }
    fn count(&self, rtype: &str, f: impl FnOnce(&mut TypeCounts)) {
        f(lock(&self.counts).entry(rtype.to_string()).or_default());
    }
}

/// Per patient: what was fetched (for reference resolution) and found.
#[derive(Default)]
struct PatientState {
    fetched: HashSet<(String, String)>,
    references: HashSet<String>,
    attachments: HashSet<String>,
}

/// Syncs patients of one connection.
pub struct Syncer {
    store: Arc<dyn Store>,
    client: FhirClient,
    conn: ConnectionRef,
    profile: VendorProfile,
    options: SyncOptions,
    capability: OnceCell<Option<CapabilityStatement>>,
    probes: Mutex<Probes>,
}

fn checkpoint_key(mode: SyncMode, patient: &str, rtype: &str, sig: &str) -> String {
    format!("sync/{}/{patient}/{rtype}/{sig}", mode.as_str())
}

fn patient_prefix(mode: SyncMode, patient: &str) -> String {
    format!("sync/{}/{patient}/", mode.as_str())
}

fn last_sync_key(patient: &str, rtype: &str) -> String {
    format!("lastsync/{patient}/{rtype}")
}

impl Syncer {
    pub fn new(
        store: Arc<dyn Store>,
        client: FhirClient,
        conn: ConnectionRef,
        profile: VendorProfile,
        options: SyncOptions,
    ) -> Self {
        Self {
            store,
            client,
            conn,
            profile,
            options,
            capability: OnceCell::new(),
            probes: Mutex::new(Probes::default()),
        }
    }

    pub fn profile(&self) -> &VendorProfile {
        &self.profile
    }

    /// The types this syncer fetches.
    pub fn resource_types(&self) -> Vec<String> {
        if self.options.resource_types.is_empty() {
            self.profile.default_types.clone()
        } else {
            self.options.resource_types.clone()
        }
    }

    /// The server's CapabilityStatement, fetched once (None when it cannot be had: then the
    /// plan relies on the profile alone).
    async fn capability(&self) -> Option<&CapabilityStatement> {
        self.capability
            .get_or_init(|| async {
                match self.client.capability_statement().await {
                    Ok(cs) => cs,
                    Err(e) => {
                        tracing::warn!("no CapabilityStatement from {}: {e}", self.client.base());
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    /// Lists the ids of the patients the server exposes (backend-services population syncs):
    /// a paged `Patient` search.
    pub async fn discover_patients(&self) -> Result<Vec<String>, SyncError> {
        let count = self.profile.paging.max_page_size.to_string();
        let mut url = self
            .client
            .url("Patient", &[("_count", &count), ("_elements", "id")])?;
        let mut ids = Vec::new();
        let mut seen_urls = HashSet::new();
        loop {
            if !seen_urls.insert(url.to_string()) {
                break;
            }
            let resp = self
                .client
                .get(FhirRequest::new(url.clone()).resource_type("Patient"))
                .await?;
            let bundle = resp
                .bundle()
                .map_err(|e| SyncError::Plan(format!("patient list is not a Bundle: {e}")))?;
            let next = bundle.next_link().and_then(|n| resp.url.join(n).ok());
            for e in bundle.entry {
                if let aqueduct_client::fhir::Entry::Ok(e) = e {
                    if let Some(r) = e.resource {
                        if let Some(h) = ResourceHead::parse(r.get()) {
                            if h.resource_type.as_deref() == Some("Patient") {
                                if let Some(id) = h.id {
                                    ids.push(id);
                                }
                            }
                        }
                    }
                }
            }
            match next {
                Some(n) if self.client.is_same_server(&n) => url = n,
                _ => break,
            }
        }
        Ok(ids)
    }

    /// Lists the patients of a Group (`GET Group/{id}`, `member[].entity` references to
    /// Patient), for population syncs scoped to a roster.
    pub async fn discover_group_patients(&self, group_id: &str) -> Result<Vec<String>, SyncError> {
        let url = self.client.url(&format!("Group/{group_id}"), &[])?;
        let resp = self
            .client
            .get(FhirRequest::new(url).resource_type("Group"))
            .await?;
        let text = std::str::from_utf8(&resp.body)
            .map_err(|e| SyncError::Plan(format!("Group/{group_id} is not UTF-8: {e}")))?;
        let mut found = Found::default();
        crate::refs::collect(text, &mut found);
        let base = self.client.base().clone();
        let mut ids: Vec<String> = found
            .references
            .iter()
            .filter_map(|r| match parse_reference(r, &base) {
                RefTarget::Local {
                    resource_type, id, ..
                } if resource_type == "Patient" => Some(id),
                _ => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Syncs the patients' records. Errors only for store failures; everything the server
    /// does wrong ends up in the report and the ledger (outcome partial or failed).
    pub async fn sync_patients(
        &self,
        patient_ids: &[String],
        mode: SyncMode,
    ) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let kind = if patient_ids.len() == 1 {
            format!("{}:patient:{}", mode.as_str(), patient_ids[0])
        } else {
            format!("{}:{}-patients", mode.as_str(), patient_ids.len())
        };
        self.close_stale_runs().await?;
        let run_id = self.store.begin_run(&self.conn, &kind).await?;
        let _heartbeat = {
            let (store, conn) = (self.store.clone(), self.conn.clone());
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
                loop {
                    tick.tick().await;
                    if let Err(e) = store.heartbeat_run(&conn, run_id).await {
                        tracing::warn!(connection = %conn, run = run_id, error = %e, "heartbeat not recorded");
                    }
                }
            }))
        };
        let ledger = Arc::new(RunLedger::default());
        let run = Run {
            id: run_id,
            mode,
            client: self.client.with_observer(ledger.clone()),
            ledger,
            counts: Mutex::new(BTreeMap::new()),
            partial: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
            skipped: Mutex::new(Default::default()),
            reauth: AtomicBool::new(false),
            reauth_detail: Mutex::new(None),
            fetched_refs: Mutex::new(HashSet::new()),
            referenced_fetched: AtomicU64::new(0),
            external: AtomicU64::new(0),
            patients_complete: AtomicU64::new(0),
        };
        let result = self.run_patients(&run, patient_ids).await;
        let flushed = run
            .ledger
            .flush(self.store.as_ref(), &self.conn, run_id)
            .await;
        let report = self.report(
            &run,
            patient_ids.len(),
            started.elapsed(),
            result.as_ref().err(),
        );
        let summary = serde_json::json!({
            "missing": report.partial,
            "skipped_types": report.skipped_types,
            "by_type": report.by_type,
            "requests": report.requests,
            "retries": report.retries,
            "throttled": report.throttled,
            "notes": report.notes.iter().take(50).collect::<Vec<_>>(),
        })
        .to_string();
        // Closed as interrupted while this process was frozen (a suspended machine): the
        // real outcome replaces the interruption, and a finding says it happened.
        if let Some(r) = self.store.get_run(&self.conn, run_id).await?
            && r.outcome == RunOutcome::Failed
            && r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("interrupted"))
        {
            let f = Finding {
                at: Utc::now(),
                run_id: Some(run_id),
                kind: "run-revived".into(),
                severity: "warning".into(),
                resource_type: None,
                detail: format!(
                    "run {run_id} was closed as interrupted (no heartbeat) but its process was \
                     only paused and finished {}; that outcome replaces the interruption",
                    report.outcome.as_str()
                ),
            };
            self.store.record_finding(&self.conn, &f).await?;
        }
        self.store
            .finish_run(
                &self.conn,
                run_id,
                report.outcome,
                Some(&summary),
                report.error.as_deref(),
            )
            .await?;
        for p in report.partial.iter().take(100) {
            let f = Finding {
                at: Utc::now(),
                run_id: Some(run_id),
                kind: format!("type-{}", p.reason.as_str()),
                severity: "warning".into(),
                resource_type: Some(p.resource_type.clone()),
                detail: format!("patient {}: {}", p.patient_id, p.detail),
            };
            self.store.record_finding(&self.conn, &f).await?;
        }
        result?;
        flushed?;
        Ok(report)
    }

    /// Closes the connection's runs whose process died (no heartbeat for
    /// `stale_run_after`) as failed, with a finding each: a crash is reported, never left
    /// looking like a sync still in progress.
    async fn close_stale_runs(&self) -> Result<(), SyncError> {
        let stale = chrono::Duration::from_std(self.options.stale_run_after)
            .unwrap_or(chrono::Duration::MAX);
        let Some(before) = Utc::now().checked_sub_signed(stale) else {
            return Ok(());
        };
        let closed = self
            .store
            .close_stale_runs(&self.conn, before, INTERRUPTED)
            .await?;
        for id in closed {
            tracing::warn!(connection = %self.conn, run = id, "closed a run whose process stopped");
            let f = Finding {
                at: Utc::now(),
                run_id: Some(id),
                kind: "run-interrupted".into(),
                severity: "warning".into(),
                resource_type: None,
                detail: format!(
                    "run {id} stopped without finishing (no heartbeat since before {}); its \
                     data up to the last checkpoint is kept and the next run resumes from there",
                    before.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            };
            self.store.record_finding(&self.conn, &f).await?;
        }
        Ok(())
    }

    fn report(
        &self,
        run: &Run,
        patients: usize,
        duration: Duration,
        err: Option<&SyncError>,
    ) -> SyncReport {
        let partial = lock(&run.partial).clone();
        let reauth = run.aborted();
        let outcome = if reauth || err.is_some() {
            RunOutcome::Failed
        } else if partial.is_empty() {
            RunOutcome::Complete
        } else {
            RunOutcome::Partial
        };
        let error = if reauth {
            Some(format!(
                "re-authorization needed: {}",
                lock(&run.reauth_detail).clone().unwrap_or_default()
            ))
        } else {
            err.map(|e| e.to_string())
        };
        SyncReport {
            run_id: run.id,
            outcome,
            patients,
            patients_complete: run.patients_complete.load(Ordering::Relaxed) as usize,
            by_type: lock(&run.counts).clone(),
            referenced_fetched: run.referenced_fetched.load(Ordering::Relaxed),
            external_references: run.external.load(Ordering::Relaxed),
            requests: run.ledger.requests.load(Ordering::Relaxed),
            retries: run.ledger.retries.load(Ordering::Relaxed),
            throttled: run.ledger.throttled.load(Ordering::Relaxed),
            failed_requests: run.ledger.failed.load(Ordering::Relaxed),
            bytes: run.ledger.bytes.load(Ordering::Relaxed),
            partial,
            notes: lock(&run.notes).clone(),
            skipped_types: lock(&run.skipped).iter().cloned().collect(),
            error,
            duration,
        }
    }

    async fn run_patients(&self, run: &Run, patient_ids: &[String]) -> Result<(), SyncError> {
        // Fetch the CapabilityStatement before fanning out.
        let _ = self.capability().await;
        // The first patient alone: it probes what the server accepts (rejected searches,
        // categories, $everything) so the others do not all ask at once.
        let Some((first, rest)) = patient_ids.split_first() else {
            return Ok(());
        };
        self.sync_patient(run, first).await?;
        stream::iter(rest.iter().map(Ok))
            .try_for_each_concurrent(self.options.patient_concurrency.max(1), |pid| async move {
                if run.aborted() {
                    return Ok(());
                }
                self.sync_patient(run, pid).await
            })
            .await
    }

    async fn sync_patient(&self, run: &Run, pid: &str) -> Result<(), SyncError> {
        let partial_before = lock(&run.partial).len();
        let state = Mutex::new(PatientState::default());
        let mut types = self.resource_types();
        let cs = self.capability().await;
        let everything_done = self.try_everything(run, pid, &types, &state).await?;
        if !everything_done {
            types.retain(|t| {
                if should_try(&self.profile, cs, t) {
                    true
                } else {
                    lock(&run.skipped).insert(t.clone());
                    false
                }
            });
            stream::iter(types.iter().map(Ok))
                .try_for_each_concurrent(self.options.type_concurrency.max(1), |t| {
                    let state = &state;
                    async move { self.sync_type(run, pid, t, state).await }
                })
                .await?;
        }
        if !run.aborted() && self.options.reference_depth > 0 {
            let st = std::mem::take(&mut *lock(&state));
            self.resolve_references(run, pid, st).await?;
        }
        run.ledger
            .flush(self.store.as_ref(), &self.conn, run.id)
            .await?;
        if run.aborted() {
            return Ok(());
        }
        let resumable = lock(&run.partial)[partial_before..].iter().any(|p| {
            matches!(
                p.reason,
                MissingReason::FailedAfterRetries
                    | MissingReason::Incomplete
                    | MissingReason::ReauthorizationNeeded
            )
        });
        let complete = lock(&run.partial).len() == partial_before;
        if !resumable {
            self.store
                .clear_checkpoints(&self.conn, &patient_prefix(run.mode, pid))
                .await?;
        }
        if complete {
            run.patients_complete.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `Patient/$everything` when the profile says the server has it. Returns false when the
    /// per-type searches must be used instead.
    async fn try_everything(
        &self,
        run: &Run,
        pid: &str,
        types: &[String],
        state: &Mutex<PatientState>,
    ) -> Result<bool, SyncError> {
        if !self.options.use_everything || !self.profile.capabilities.everything {
            return Ok(false);
        }
        if lock(&self.probes).everything_works == Some(false) {
            return Ok(false);
        }
        let count = self.profile.paging.max_page_size.to_string();
        // The server time of the last complete sync; its absence also means there is no
        // earlier complete fetch to reconcile against.
        let last_complete = self
            .store
            .load_checkpoint(&self.conn, &last_sync_key(pid, "$everything"))
            .await?;
        let since = match run.mode {
            SyncMode::Incremental => last_complete.clone(),
            SyncMode::Full => None,
        };
        let mut params: Vec<(&str, &str)> = vec![("_count", &count)];
        if let Some(s) = &since {
            params.push(("_since", s));
        }
        let url = self
            .client
            .url(&format!("Patient/{pid}/$everything"), &params)?;
        let key = checkpoint_key(run.mode, pid, "$everything", "-");
        let mut seen = HashSet::new();
        let mut server_time = None;
        let mut resumed = false;
        let end = self
            .run_search(
                run,
                pid,
                None,
                &key,
                url,
                &mut seen,
                state,
                &mut server_time,
                &mut resumed,
            )
            .await?;
        match end {
            SearchEnd::Rejected(detail) => {
                run.note(format!(
                    "$everything rejected, using per-type searches: {detail}"
                ));
                lock(&self.probes).everything_works = Some(false);
                Ok(false)
            }
            SearchEnd::Forbidden(detail) => {
                run.note(format!(
                    "$everything forbidden, using per-type searches: {detail}"
                ));
                Ok(false)
            }
            SearchEnd::Reauth => Ok(true),
            SearchEnd::Partial(reason, detail) => {
                lock(&self.probes).everything_works = Some(true);
                run.partial(pid, "$everything", reason, detail);
                Ok(true)
            }
            SearchEnd::Complete => {
                lock(&self.probes).everything_works = Some(true);
                let cap = self.profile.capabilities.everything_max_resources;
                if cap > 0 && seen.len() as u64 >= cap {
                    run.partial(
                        pid,
                        "$everything",
                        MissingReason::Incomplete,
                        format!(
                            "$everything returned {} resources, the server's cap",
                            seen.len()
                        ),
                    );
                    return Ok(true);
                }
                let mut all_types: HashSet<String> = types.iter().cloned().collect();
                all_types.extend(seen.iter().map(|(t, _)| t.clone()));
                if run.mode == SyncMode::Full && !resumed && last_complete.is_some() {
                    for t in &all_types {
                        self.reconcile(run, pid, t, &seen).await?;
                    }
                }
                // A resumed fetch started earlier than this run: its start time is unknown,
                // so the last-sync time is not advanced (the next incremental asks for more).
                if let Some(t) = server_time.filter(|_| !resumed) {
                    self.store
                        .save_checkpoint(&self.conn, &last_sync_key(pid, "$everything"), &t)
                        .await?;
                }
                Ok(true)
            }
        }
    }

    async fn sync_type(
        &self,
        run: &Run,
        pid: &str,
        rtype: &str,
        state: &Mutex<PatientState>,
    ) -> Result<(), SyncError> {
        if let Some(granted) = self.client.granted_scopes() {
            if !crate::scopes::scopes_cover(&granted, rtype) {
                run.partial(
                    pid,
                    rtype,
                    MissingReason::ScopeNotGranted,
                    format!(
                        "the granted scopes do not include {rtype}: {}",
                        granted.join(" ")
                    ),
                );
                return Ok(());
            }
        }
        // The server time of the last complete sync; its absence also means there is no
        // earlier complete fetch to reconcile against.
        let last_complete = self
            .store
            .load_checkpoint(&self.conn, &last_sync_key(pid, rtype))
            .await?;
        let since = match run.mode {
            SyncMode::Incremental => last_complete.clone(),
            SyncMode::Full => None,
        };
        let plan: TypePlan = plan_type(&self.profile, rtype, pid, since.as_deref());
        // Start at the first alternative of a kind known to work, if any (kinds, not
        // positions: incremental plans put their `_lastUpdated` variants first; a rejected
        // variant is skipped by its remembered signature).
        let start_alt = {
            let probes = lock(&self.probes);
            plan.alternatives
                .iter()
                .position(|a| {
                    probes
                        .working_alternative
                        .contains(&(rtype.to_string(), a.kind.clone()))
                })
                .unwrap_or(0)
        };
        let mut seen = HashSet::new();
        let mut server_time: Option<String> = None;
        let mut resumed = false;
        let mut last_rejection = String::from("no search accepted");
        let mut forbidden: Option<String> = None;
        for alt in plan.alternatives.iter().skip(start_alt) {
            let mut accepted = 0usize;
            let mut worst: Option<(MissingReason, String)> = None;
            for s in &alt.searches {
                if lock(&self.probes)
                    .rejected
                    .contains(&(rtype.to_string(), s.signature.clone()))
                {
                    continue;
                }
                let params: Vec<(&str, &str)> = s
                    .params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let url = self.client.url(rtype, &params)?;
                let key = checkpoint_key(run.mode, pid, rtype, &s.signature);
                let end = self
                    .run_search(
                        run,
                        pid,
                        Some(rtype),
                        &key,
                        url,
                        &mut seen,
                        state,
                        &mut server_time,
                        &mut resumed,
                    )
                    .await?;
                match end {
                    SearchEnd::Complete => accepted += 1,
                    SearchEnd::Partial(r, d) => {
                        accepted += 1;
                        worst.get_or_insert((r, d));
                    }
                    SearchEnd::Rejected(d) => {
                        lock(&self.probes)
                            .rejected
                            .insert((rtype.to_string(), s.signature.clone()));
                        if alt.searches.len() > 1 {
                            run.note(format!("{rtype}: search {} rejected: {d}", s.signature));
                        }
                        last_rejection = d;
                    }
                    SearchEnd::Forbidden(d) => {
                        forbidden = Some(d);
                        break;
                    }
                    SearchEnd::Reauth => return Ok(()),
                }
            }
            if let Some(d) = forbidden.take() {
                run.partial(pid, rtype, MissingReason::Forbidden, d);
                return Ok(());
            }
            if accepted == 0 {
                continue;
            }
            lock(&self.probes)
                .working_alternative
                .insert((rtype.to_string(), alt.kind.clone()));
            if let Some((r, d)) = worst {
                run.partial(pid, rtype, r, d);
                return Ok(());
            }
            // Complete.
            if run.mode == SyncMode::Full && !resumed && last_complete.is_some() {
                self.reconcile(run, pid, rtype, &seen).await?;
            }
            if let Some(t) = server_time.as_ref().filter(|_| !resumed) {
                self.store
                    .save_checkpoint(&self.conn, &last_sync_key(pid, rtype), t)
                    .await?;
            }
            return Ok(());
        }
        run.partial(pid, rtype, MissingReason::NotSupported, last_rejection);
        Ok(())
    }

    /// Full mode: stored resources of the patient and type that the complete fetch did not
    /// return are tombstoned. A fetch that returned nothing while resources are stored is
    /// suspicious (an empty 200): nothing is tombstoned and the type is reported incomplete.
    async fn reconcile(
        &self,
        run: &Run,
        pid: &str,
        rtype: &str,
        seen: &HashSet<(String, String)>,
    ) -> Result<(), SyncError> {
        let stored = self
            .store
            .patient_resource_ids(&self.conn, pid, rtype)
            .await?;
        if stored.is_empty() {
            return Ok(());
        }
        let seen_of_type = seen.iter().filter(|(t, _)| t == rtype).count();
        if seen_of_type == 0 {
            run.partial(
                pid,
                rtype,
                MissingReason::Incomplete,
                format!(
                    "the server returned no {rtype} although {} are stored; nothing tombstoned",
                    stored.len()
                ),
            );
            return Ok(());
        }
        let gone: Vec<String> = stored
            .into_iter()
            .filter(|id| !seen.contains(&(rtype.to_string(), id.clone())))
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let n = self
            .store
            .tombstone(&self.conn, rtype, &gone, Utc::now())
            .await?;
        run.count(rtype, |c| c.tombstoned += n);
        Ok(())
    }

    /// Follows one search page by page, writing each page and then its checkpoint.
    #[allow(clippy::too_many_arguments)]
    async fn run_search(
        &self,
        run: &Run,
        pid: &str,
        expected_type: Option<&str>,
        key: &str,
        first_url: Url,
        seen: &mut HashSet<(String, String)>,
        state: &Mutex<PatientState>,
        server_time: &mut Option<String>,
        resumed: &mut bool,
    ) -> Result<SearchEnd, SyncError> {
        let mut url = first_url.clone();
        let mut from_checkpoint = false;
        if let Some(cp) = self.store.load_checkpoint(&self.conn, key).await? {
            match serde_json::from_str::<Checkpoint>(&cp) {
                Ok(Checkpoint::Done { complete: true, .. }) => {
                    *resumed = true;
                    return Ok(SearchEnd::Complete);
                }
                Ok(Checkpoint::Next { next }) => match Url::parse(&next) {
                    Ok(u) if self.client.is_same_server(&u) => {
                        *resumed = true;
                        from_checkpoint = true;
                        url = u;
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        let rlabel = expected_type.unwrap_or("$everything");
        let own_types = self.resource_types();
        let mut visited: HashSet<String> = HashSet::new();
        let mut page_no = 0u32;
        loop {
            if run.aborted() {
                return Ok(SearchEnd::Reauth);
            }
            visited.insert(url.to_string());
            let mut req = FhirRequest::new(url.clone()).patient(pid);
            if let Some(t) = expected_type {
                req = req.resource_type(t);
            }
            let resp = match self.get_with_page_retries(run, req).await {
                Ok(r) => r,
                Err(e) if e.needs_reauthorization() => {
                    run.abort(e.to_string());
                    run.partial(
                        pid,
                        rlabel,
                        MissingReason::ReauthorizationNeeded,
                        e.to_string(),
                    );
                    return Ok(SearchEnd::Reauth);
                }
                Err(e) if from_checkpoint && e.is_rejected_query() => {
                    // A stale cursor: restart the search from its first page.
                    run.note(format!(
                        "{rlabel}: saved next link no longer valid, restarting: {e}"
                    ));
                    from_checkpoint = false;
                    *resumed = false;
                    seen.retain(|(t, _)| Some(t.as_str()) != expected_type);
                    url = first_url.clone();
                    page_no = 0;
                    visited.clear();
                    continue;
                }
                Err(e) if page_no == 0 && !from_checkpoint && e.is_forbidden() => {
                    return Ok(SearchEnd::Forbidden(e.to_string()));
                }
                Err(e) if page_no == 0 && !from_checkpoint && e.is_rejected_query() => {
                    return Ok(SearchEnd::Rejected(e.to_string()));
                }
                Err(e) => {
                    let reason = if e.is_transient() {
                        MissingReason::FailedAfterRetries
                    } else {
                        MissingReason::Incomplete
                    };
                    return Ok(SearchEnd::Partial(
                        reason,
                        format!("page {}: {e}", page_no + 1),
                    ));
                }
            };
            let fetched_at = Utc::now();
            let bundle = match resp.bundle() {
                Ok(b) if b.is_bundle() => b,
                _ => {
                    return Ok(SearchEnd::Partial(
                        MissingReason::Incomplete,
                        format!(
                            "page {} of {rlabel} is not a Bundle ({})",
                            page_no + 1,
                            resp.url
                        ),
                    ));
                }
            };
            if page_no == 0 && !from_checkpoint {
                let t = bundle
                    .meta
                    .as_ref()
                    .and_then(|m| m.last_updated.as_deref())
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|d| d.with_timezone(&Utc))
                    .or(resp.server_date);
                if let Some(t) = t {
                    let t = t.to_rfc3339_opts(SecondsFormat::Millis, true);
                    if server_time.as_ref().is_none_or(|cur| t < *cur) {
                        *server_time = Some(t);
                    }
                }
            }
            let next = next_page(&resp.url, bundle.next_link(), &visited, |u| {
                self.client.is_same_server(u)
            });
            let total = bundle.total;
            let src = PageSource {
                url: resp.url.as_str(),
                patient_id: Some(pid),
                expected_type,
                fetched_at,
                collect_refs: self.options.reference_depth > 0,
            };
            let page = bundle_page(bundle, &src, seen);
            drop(resp);
            if page_no == 0
                && page.resources.is_empty()
                && page.duplicates == 0
                && total.is_some_and(|t| t > 0)
            {
                return Ok(SearchEnd::Partial(
                    MissingReason::Incomplete,
                    format!(
                        "{rlabel}: an empty page although the server counts {} matches",
                        total.unwrap_or(0)
                    ),
                ));
            }
            for o in &page.outcomes {
                run.note(format!("{rlabel}: server outcome in results: {o}"));
            }
            if page.malformed > 0 {
                run.note(format!(
                    "{rlabel}: {} malformed entries skipped",
                    page.malformed
                ));
            }
            self.write_page(run, &page.resources, page.duplicates, expected_type)
                .await?;
            {
                let mut st = lock(state);
                // Only other types matter to reference resolution (own types are never
                // fetched by reference): keeps this set small for long histories.
                for r in page
                    .resources
                    .iter()
                    .filter(|r| !own_types.contains(&r.resource_type))
                {
                    st.fetched
                        .insert((r.resource_type.clone(), r.logical_id.clone()));
                }
                st.references.extend(page.found.references);
                st.attachments.extend(page.found.attachments);
            }
            // the ledger is never behind the checkpoints: a crash loses at most the
            // requests of pages not yet checkpointed, which the resumed run repeats
            run.ledger
                .flush(self.store.as_ref(), &self.conn, run.id)
                .await?;
            page_no += 1;
            let done = |complete: bool| {
                serde_json::to_string(&Checkpoint::Done {
                    done: true,
                    complete,
                })
                .unwrap_or_default()
            };
            match next {
                NextPage::End => {
                    self.store
                        .save_checkpoint(&self.conn, key, &done(true))
                        .await?;
                    return Ok(SearchEnd::Complete);
                }
                NextPage::Problem(p) => {
                    return Ok(SearchEnd::Partial(
                        MissingReason::Incomplete,
                        format!("{rlabel}: {p}"),
                    ));
                }
                NextPage::Follow(n) => {
                    let cp = serde_json::to_string(&Checkpoint::Next {
                        next: n.to_string(),
                    })
                    .unwrap_or_default();
                    self.store.save_checkpoint(&self.conn, key, &cp).await?;
                    url = n;
                }
            }
        }
    }

    /// The client retries transient failures; a page that still fails gets a few more tries
    /// after a pause (a mid-paging error often passes).
    async fn get_with_page_retries(
        &self,
        run: &Run,
        req: FhirRequest,
    ) -> Result<aqueduct_client::FhirResponse, FetchError> {
        let mut tries = 0;
        loop {
            match run.client.get(req.clone()).await {
                Ok(r) => return Ok(r),
                Err(e)
                    if e.is_transient() && tries < self.options.page_retries && !run.aborted() =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(tries))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn write_page(
        &self,
        run: &Run,
        resources: &[RawResource],
        duplicates: u64,
        expected_type: Option<&str>,
    ) -> Result<(), SyncError> {
        if let (Some(t), true) = (expected_type, duplicates > 0) {
            run.count(t, |c| c.duplicates += duplicates);
        }
        if resources.is_empty() {
            return Ok(());
        }
        let single_type = resources
            .iter()
            .all(|r| r.resource_type == resources[0].resource_type);
        if single_type {
            let ws = self.store.write_resources(&self.conn, resources).await?;
            self.count_written(run, &resources[0].resource_type, resources, ws);
        } else {
            let mut groups: BTreeMap<&str, Vec<RawResource>> = BTreeMap::new();
            for r in resources {
                groups
                    .entry(r.resource_type.as_str())
                    .or_default()
                    .push(r.clone());
            }
            for (t, batch) in groups {
                let ws = self.store.write_resources(&self.conn, &batch).await?;
                self.count_written(run, t, &batch, ws);
            }
        }
        Ok(())
    }

    fn count_written(&self, run: &Run, rtype: &str, batch: &[RawResource], ws: WriteSummary) {
        let invalid = batch
            .iter()
            .filter(|r| r.parse_status != ParseStatus::Ok)
            .count() as u64;
        run.count(rtype, |c| {
            c.fetched += batch.len() as u64;
            c.inserted += ws.inserted;
            c.updated += ws.updated;
            c.unchanged += ws.unchanged;
            c.invalid += invalid;
        });
    }

    /// Fetches what the patient's resources reference and the store does not hold, up to the
    /// configured depth: `_id=a,b,c` searches where the profile allows, else reads; Binary
    /// attachments on the same server. References to other servers are counted, not followed.
    async fn resolve_references(
        &self,
        run: &Run,
        pid: &str,
        st: PatientState,
    ) -> Result<(), SyncError> {
        let base = self.client.base().clone();
        let mut fetched = st.fetched;
        let mut found = Found {
            references: st.references.into_iter().collect(),
            attachments: st.attachments.into_iter().collect(),
        };
        let own_types: HashSet<String> = self.resource_types().into_iter().collect();
        for _depth in 0..self.options.reference_depth {
            let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut seen_now = HashSet::new();
            let attachments = std::mem::take(&mut found.attachments);
            let references = std::mem::take(&mut found.references);
            let mut targets: Vec<(String, String)> = Vec::new();
            for r in references {
                match parse_reference(&r, &base) {
                    RefTarget::Local {
                        resource_type, id, ..
                    } => targets.push((resource_type, id)),
                    RefTarget::External(_) => {
                        run.external.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            if self.options.fetch_binaries {
                for a in attachments {
                    match parse_reference(&a, &base) {
                        RefTarget::Local {
                            resource_type, id, ..
                        } => targets.push((resource_type, id)),
                        RefTarget::External(_) => {
                            run.external.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
            for key in targets {
                if fetched.contains(&key) || !seen_now.insert(key.clone()) {
                    continue;
                }
                if lock(&run.fetched_refs).contains(&key) {
                    continue;
                }
                // The patient's own types come from the patient's searches, which are
                // authoritative (and resumable): a reference never fetches them, so they are
                // never stored without their patient.
                if own_types.contains(&key.0) {
                    continue;
                }
                if run.mode == SyncMode::Incremental
                    && self
                        .store
                        .get_resource(&self.conn, &key.0, &key.1)
                        .await?
                        .is_some()
                {
                    continue;
                }
                wanted.entry(key.0).or_default().push(key.1);
            }
            if wanted.is_empty() {
                break;
            }
            let mut next_found = Found::default();
            for (rtype, ids) in wanted {
                {
                    let mut fr = lock(&run.fetched_refs);
                    for id in &ids {
                        fr.insert((rtype.clone(), id.clone()));
                    }
                }
                let got = self
                    .fetch_referenced(run, &rtype, &ids, &mut next_found)
                    .await?;
                for id in &ids {
                    fetched.insert((rtype.clone(), id.clone()));
                }
                if got < ids.len() as u64 {
                    run.note(format!(
                        "patient {pid}: {} of {} referenced {rtype} could not be fetched",
                        ids.len() as u64 - got,
                        ids.len()
                    ));
                }
                if run.aborted() {
                    return Ok(());
                }
            }
            found = next_found;
        }
        Ok(())
    }

    /// Fetches referenced resources of one type; returns how many were stored.
    async fn fetch_referenced(
        &self,
        run: &Run,
        rtype: &str,
        ids: &[String],
        found: &mut Found,
    ) -> Result<u64, SyncError> {
        let mut stored = 0u64;
        let caps = &self.profile.capabilities;
        // Binary cannot be searched by _id on most servers; where batch works, reads of it (and
        // of types without multi-id search) go in batches instead of one request each.
        let batch_works = caps.batch && !lock(&self.probes).batch_rejected;
        if batch_works && ids.len() > 1 && (rtype == "Binary" || !caps.multi_id) {
            return self.fetch_batched(run, rtype, ids, found).await;
        }
        let use_multi = caps.multi_id && rtype != "Binary" && ids.len() > 1;
        if use_multi {
            for chunk in ids.chunks(caps.multi_id_max.max(1) as usize) {
                let joined = chunk.join(",");
                let count = chunk.len().to_string();
                let url = self
                    .client
                    .url(rtype, &[("_id", &joined), ("_count", &count)])?;
                let req = FhirRequest::new(url).resource_type(rtype);
                match run.client.get(req).await {
                    Ok(resp) => {
                        let Ok(bundle) = resp.bundle() else { continue };
                        let src = PageSource {
                            url: resp.url.as_str(),
                            patient_id: None,
                            expected_type: Some(rtype),
                            fetched_at: Utc::now(),
                            collect_refs: true,
                        };
                        let page = bundle_page(bundle, &src, &mut HashSet::new());
                        let n = page.resources.len() as u64;
                        self.write_page(run, &page.resources, 0, Some(rtype))
                            .await?;
                        found.references.extend(page.found.references);
                        stored += n;
                    }
                    Err(e) if e.needs_reauthorization() => {
                        run.abort(e.to_string());
                        return Ok(stored);
                    }
                    Err(e) => run.note(format!("referenced {rtype} search failed: {e}")),
                }
            }
            run.referenced_fetched.fetch_add(stored, Ordering::Relaxed);
            return Ok(stored);
        }
        let stored = self.fetch_one_by_one(run, rtype, ids, found).await?;
        run.referenced_fetched.fetch_add(stored, Ordering::Relaxed);
        Ok(stored)
    }

    /// Individual reads, a few at a time (the host limiter paces them), written in batches.
    async fn fetch_one_by_one(
        &self,
        run: &Run,
        rtype: &str,
        ids: &[String],
        found: &mut Found,
    ) -> Result<u64, SyncError> {
        let mut stored = 0u64;
        for chunk in ids.chunks(64) {
            let results: Vec<(String, Result<RawResource, FetchError>)> =
                stream::iter(chunk.iter().cloned())
                    .map(|id| async move {
                        let r = self.read_one(run, rtype, &id).await;
                        (id, r)
                    })
                    .buffer_unordered(4)
                    .collect()
                    .await;
            let mut batch = Vec::with_capacity(results.len());
            for (id, r) in results {
                match r {
                    Ok(raw) => {
                        if rtype != "Binary" {
                            if let Ok(text) = std::str::from_utf8(&raw.bytes) {
                                crate::refs::collect(text, found);
                            }
                        }
                        batch.push(raw);
                    }
                    Err(e) if e.needs_reauthorization() => run.abort(e.to_string()),
                    Err(e) => run.note(format!("referenced {rtype}/{id} not fetched: {e}")),
                }
            }
            stored += batch.len() as u64;
            self.write_page(run, &batch, 0, Some(rtype)).await?;
            if run.aborted() {
                break;
            }
        }
        Ok(stored)
    }

    /// Reads referenced resources with batch Bundles of GETs, up to `BATCH_MAX` per request.
    /// An entry the server could not serve is counted missing by the caller, like a failed read.
    async fn fetch_batched(
        &self,
        run: &Run,
        rtype: &str,
        ids: &[String],
        found: &mut Found,
    ) -> Result<u64, SyncError> {
        const BATCH_MAX: usize = 50;
        let mut stored = 0u64;
        for (i, chunk) in ids.chunks(BATCH_MAX).enumerate() {
            let entries: Vec<serde_json::Value> = chunk
                .iter()
                .map(|id| serde_json::json!({"request": {"method": "GET", "url": format!("{rtype}/{id}")}}))
                .collect();
            let body =
                serde_json::json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
            let url = self.client.url("", &[])?;
            let req = FhirRequest::new(url)
                .resource_type(rtype)
                .template(format!("POST batch of {rtype} reads"))
                .post_json(body.to_string());
            match run.client.get(req).await {
                Ok(resp) => {
                    let Ok(bundle) = resp.bundle() else {
                        run.note(format!(
                            "batch of {rtype} reads: the answer is not a Bundle"
                        ));
                        continue;
                    };
                    let src = PageSource {
                        url: resp.url.as_str(),
                        patient_id: None,
                        expected_type: Some(rtype),
                        fetched_at: Utc::now(),
                        collect_refs: rtype != "Binary",
                    };
                    let page = bundle_page(bundle, &src, &mut HashSet::new());
                    let n = page.resources.len() as u64;
                    self.write_page(run, &page.resources, 0, Some(rtype))
                        .await?;
                    found.references.extend(page.found.references);
                    stored += n;
                }
                Err(e) if e.needs_reauthorization() => {
                    run.abort(e.to_string());
                    break;
                }
                Err(e) if e.is_rejected_query() => {
                    // the profile promised batch, the server refuses it: read these and the
                    // rest one by one, and stop trying batches with this server (like every
                    // probe, this outlives the run)
                    lock(&self.probes).batch_rejected = true;
                    run.note(format!(
                        "the server rejected a batch Bundle ({e}); reading {rtype} one by one"
                    ));
                    let rest = &ids[i * BATCH_MAX..];
                    stored += self.fetch_one_by_one(run, rtype, rest, found).await?;
                    break;
                }
                Err(e) => run.note(format!("referenced {rtype} batch failed: {e}")),
            }
        }
        run.referenced_fetched.fetch_add(stored, Ordering::Relaxed);
        Ok(stored)
    }

    /// Reads one referenced resource. A body that is not FHIR JSON (a Binary served as its
    /// raw content) is kept as received, flagged.
    async fn read_one(&self, run: &Run, rtype: &str, id: &str) -> Result<RawResource, FetchError> {
        let url = self.client.url(&format!("{rtype}/{id}"), &[])?;
        let mut req = FhirRequest::new(url).resource_type(rtype);
        if rtype == "Binary" {
            req = req.expect(Expect::Any);
        }
        let resp = run.client.get(req).await?;
        let src = PageSource {
            url: resp.url.as_str(),
            patient_id: None,
            expected_type: Some(rtype),
            fetched_at: Utc::now(),
            collect_refs: true,
        };
        Ok(match std::str::from_utf8(&resp.body) {
            Ok(text) if resp.resource_type.is_some() => {
                let mut r = raw_resource(text.to_string(), &src);
                if r.logical_id.starts_with(crate::page::SYNTHETIC_ID_PREFIX) {
                    r.logical_id = id.to_string();
                }
                r
            }
            _ => RawResource {
                resource_type: rtype.to_string(),
                logical_id: id.to_string(),
                version_id: None,
                last_updated: None,
                source_url: resp.url.to_string(),
                patient_id: None,
                parse_status: ParseStatus::InvalidJson(format!(
                    "raw content ({})",
                    resp.content_type
                        .clone()
                        .unwrap_or_else(|| "no content type".into())
                )),
                fetched_at: Utc::now(),
                bytes: resp.body.to_vec(),
            },
        })
    }
}
