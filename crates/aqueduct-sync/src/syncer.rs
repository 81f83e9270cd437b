//! The run lifecycle: one `sync_patients` call takes the connection's sync lease, opens a run
//! (resuming an interrupted one's epoch), syncs each patient (searches in [`crate::fetch`],
//! references in [`crate::resolve`]) and closes the run with the outcome the rule in
//! [`crate::outcome`] gives.

use aqueduct_core::BoxFuture;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aqueduct_client::fhir::{CapabilityStatement, ResourceHead};
use aqueduct_client::{FetchError, FhirClient, FhirRequest, VendorProfile};
use aqueduct_core::{
    ConnectionRef, Finding, ParseStatus, RawResource, RunId, RunOutcome, Store, WriteSummary,
};
use chrono::{SecondsFormat, Utc};
use futures_util::stream::{self, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::checkpoint::{Checkpoints, record_epoch, resumable_epoch};
use crate::ledger::RunLedger;
use crate::outcome;
use crate::refs::{Found, RefTarget, parse_reference};
use crate::report::{MissingReason, PartialType, REAUTH_PREFIX, SyncError, SyncReport, TypeCounts};

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
    /// How many hops of references to follow (0 = none). Cycle-safe: a resource is read once.
    pub reference_depth: u32,
    /// Fetch attachments (Binary content) on the same server.
    pub fetch_binaries: bool,
    /// Use `Patient/$everything` when the profile and server support it.
    pub use_everything: bool,
    /// Extra tries of a page after the client's own retries are exhausted.
    pub page_retries: u32,
    /// A `running` run of the connection without a heartbeat for this long was killed or
    /// lost: the next sync closes it as failed (a finding says so) instead of leaving it
    /// "running" forever. Running syncs beat every [`HEARTBEAT_EVERY`]. The sync lease of a
    /// connection lasts as long, so a dead holder blocks the next sync at most this long.
    pub stale_run_after: Duration,
    /// An interrupted run is resumed by the next run of the same kind only if it started
    /// this recently; older checkpoints are not trusted and the run starts afresh.
    pub resume_within: Duration,
    /// The whole run's deadline: what is not fetched by then is a gap (`deadline-reached`).
    pub max_run_duration: Option<Duration>,
}

/// How often a running sync writes its heartbeat (more often when `stale_run_after` is
/// shorter than three beats).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

/// The error recorded on a run closed for lack of a heartbeat.
pub const INTERRUPTED: &str = "interrupted: the process running this sync stopped (killed or \
    lost) before finishing; what it stored up to its last checkpoint is kept and the next run \
    resumes from there";

/// The lease that keeps two syncs of one connection from running side by side.
const SYNC_LEASE: &str = "sync";

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
            reference_depth: 3,
            fetch_binaries: true,
            use_everything: true,
            page_retries: 1,
            stale_run_after: Duration::from_secs(300),
            resume_within: Duration::from_secs(24 * 3600),
            max_run_duration: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// What the sync learned about the server, remembered across patients.
#[derive(Debug, Default)]
pub(crate) struct Probes {
    pub rejected: HashSet<(String, String)>,
    /// The server refused a batch Bundle although the profile says it takes them: reads go
    /// one by one from then on.
    pub batch_rejected: bool,
    /// (type, alternative label) of the alternatives the server accepted.
    pub working_alternative: HashSet<(String, String)>,
    pub everything_works: Option<bool>,
    /// Server-wide: whether a type holds any data (`_summary=count`), for planning.
    pub type_has_data: HashMap<String, bool>,
}

/// State of one `sync_patients` call.
pub(crate) struct Run {
    pub id: RunId,
    pub mode: SyncMode,
    /// The run whose checkpoints this one continues (itself when it started afresh).
    pub epoch: RunId,
    pub client: FhirClient,
    pub ledger: Arc<RunLedger>,
    pub counts: Mutex<BTreeMap<String, TypeCounts>>,
    pub partial: Mutex<Vec<PartialType>>,
    pub notes: Mutex<Vec<String>>,
    pub skipped: Mutex<BTreeSet<String>>,
    pub reauth: AtomicBool,
    pub reauth_detail: Mutex<Option<String>>,
    /// Referenced resources read in this run (shared by patients), and why those that could
    /// not be read failed — so every patient pointing at one gets the gap, not only the first.
    pub fetched_refs: Mutex<HashSet<(String, String)>>,
    pub failed_refs: Mutex<HashMap<(String, String), (MissingReason, String)>>,
    pub referenced_fetched: AtomicU64,
    pub external: AtomicU64,
    pub patients_complete: AtomicU64,
    /// Types the store held for the connection when the run began ("returned before").
    pub stored_types: HashSet<String>,
    pub deadline: Option<Instant>,
    /// Patients of the run, and those reached through `Patient.link` (each synced once).
    pub linked: Mutex<HashSet<String>>,
    /// Searches that ended on a timeout: once [`STALLED_AFTER`] have, the server is taken as
    /// stalled and nothing more is asked of it in this run (a stall costs a few timeouts, not
    /// one per remaining search).
    pub timed_out: AtomicU64,
    /// Types in the record because the server lists them, not because they were configured:
    /// one the client is not authorized for (403) is reported, not a gap.
    pub unconfigured: Mutex<HashSet<String>>,
}

/// Searches ending on a timeout after which a run stops asking the server.
pub(crate) const STALLED_AFTER: u64 = 2;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Run {
    pub fn note(&self, s: String) {
        tracing::info!("{s}");
        let mut n = lock(&self.notes);
        if n.len() < 1000 {
            n.push(s);
        }
    }
    pub fn partial(&self, patient: &str, rtype: &str, reason: MissingReason, detail: String) {
        lock(&self.partial).push(PartialType {
            patient_id: patient.into(),
            resource_type: rtype.into(),
            reason,
            detail,
        });
    }
    pub fn abort(&self, detail: String) {
        self.reauth.store(true, Ordering::SeqCst);
        lock(&self.reauth_detail).get_or_insert(detail);
    }
    pub fn aborted(&self) -> bool {
        self.reauth.load(Ordering::SeqCst)
    }
    pub fn stalled(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed) >= STALLED_AFTER
    }
    pub fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
    pub fn count(&self, rtype: &str, f: impl FnOnce(&mut TypeCounts)) {
        f(lock(&self.counts).entry(rtype.to_string()).or_default());
    }
    fn gaps_of(&self, patient: &str) -> Vec<PartialType> {
        lock(&self.partial)
            .iter()
            .filter(|p| p.patient_id == patient)
            .cloned()
            .collect()
    }
}

/// Per patient: what was fetched (for reference resolution) and found.
#[derive(Default)]
pub(crate) struct PatientState {
    pub fetched: HashSet<(String, String)>,
    pub references: HashSet<String>,
    pub attachments: HashSet<String>,
    /// Declared sizes of attachments (url → bytes).
    pub attachment_sizes: HashMap<String, u64>,
    /// A Patient resource came with the record.
    pub got_patient: bool,
    /// Types read completely and fresh: they may tombstone what the record no longer holds.
    pub reconcile: Vec<String>,
    /// Ids of the Patient resources the record came with (the server's own id may differ
    /// from the one asked for).
    pub patient_ids: BTreeSet<String>,
    /// `Patient.link` references: other records of the same person.
    pub links: Vec<String>,
}

impl PatientState {
    pub fn absorb(&mut self, found: Found) {
        self.references.extend(found.references);
        self.attachments.extend(found.attachments);
        self.attachment_sizes.extend(found.attachment_sizes);
    }
}

/// Syncs patients of one connection.
pub struct Syncer {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) client: FhirClient,
    pub(crate) conn: ConnectionRef,
    pub(crate) profile: VendorProfile,
    pub(crate) options: SyncOptions,
    capability: OnceCell<Option<CapabilityStatement>>,
    pub(crate) probes: Mutex<Probes>,
    /// Requests made before a run opens (listing the population): the next run — or the
    /// failed run recorded when listing fails — takes them into its ledger.
    pre_run: Arc<RunLedger>,
    /// Set to true to stop the running sync at its next await point (see [`Syncer::with_stop`]).
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

pub(crate) fn last_sync_key(patient: &str, rtype: &str) -> String {
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
            pre_run: Arc::new(RunLedger::default()),
            stop: None,
        }
    }

    /// A sync that stops when `stop` turns true: the work in flight is dropped (every write
    /// is a transaction, so nothing half-written remains), the ledger so far is flushed and the
    /// run closes as failed with an `interrupted` error ([`SyncError::Stopped`]), so the next
    /// run of the same kind resumes from its checkpoints. A graceful shutdown, not a crash.
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Resolves when a stop is requested; never without a stop signal.
    async fn stop_requested(&self) {
        let Some(mut rx) = self.stop.clone() else {
            return std::future::pending().await;
        };
        // a dropped sender means nobody can ask any more: keep running
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Records a sync that failed before it could start (the population could not be listed,
    /// the endpoints not discovered, no token): a failed run with the error, the requests
    /// made so far in its ledger, and a finding — so `status` never says "never synced" about
    /// a connection that is failing.
    pub async fn record_failed_start(
        &self,
        mode: SyncMode,
        stage: &str,
        error: &str,
    ) -> Result<RunId, SyncError> {
        let run = record_failed_start(self.store.as_ref(), &self.conn, mode, stage, error).await?;
        self.pre_run
            .flush(self.store.as_ref(), &self.conn, run)
            .await?;
        Ok(run)
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
    pub(crate) async fn capability(&self) -> Option<&CapabilityStatement> {
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

    pub(crate) fn checkpoints<'a>(&'a self, run: &Run) -> Checkpoints<'a> {
        Checkpoints {
            store: self.store.as_ref(),
            conn: &self.conn,
            mode: run.mode,
            epoch: run.epoch,
        }
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
                .with_observer(self.pre_run.clone())
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
            .with_observer(self.pre_run.clone())
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

    /// Syncs the patients' records. Errors only for store failures or when another sync of
    /// the connection holds its lease; everything the server does wrong ends up in the report
    /// and the ledger (outcome partial or failed).
    pub fn sync_patients<'a>(
        &'a self,
        patient_ids: &'a [String],
        mode: SyncMode,
    ) -> BoxFuture<'a, Result<SyncReport, SyncError>> {
        Box::pin(self.sync_patients_unboxed(patient_ids, mode))
    }

    async fn sync_patients_unboxed(
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
        let holder = format!("sync-{}-{}", std::process::id(), uuid_like());
        let lease_ttl = self.options.stale_run_after;
        if !self
            .store
            .acquire_lease(&self.conn, SYNC_LEASE, &holder, lease_ttl)
            .await?
        {
            return Err(SyncError::Busy {
                connection: self.conn.to_string(),
            });
        }
        let result = self
            .sync_leased(patient_ids, mode, &kind, started, &holder)
            .await;
        if let Err(e) = self
            .store
            .release_lease(&self.conn, SYNC_LEASE, &holder)
            .await
        {
            tracing::warn!(connection = %self.conn, error = %e, "sync lease not released; it expires on its own");
        }
        result
    }

    async fn sync_leased(
        &self,
        patient_ids: &[String],
        mode: SyncMode,
        kind: &str,
        started: Instant,
        holder: &str,
    ) -> Result<SyncReport, SyncError> {
        let run_id = self.store.begin_run(&self.conn, kind).await?;
        self.pre_run
            .flush(self.store.as_ref(), &self.conn, run_id)
            .await?;
        let not_before = Utc::now()
            - chrono::Duration::from_std(self.options.resume_within)
                .unwrap_or(chrono::Duration::MAX);
        let resumed_epoch =
            resumable_epoch(self.store.as_ref(), &self.conn, run_id, kind, not_before).await?;
        let epoch = resumed_epoch.unwrap_or(run_id);
        record_epoch(self.store.as_ref(), &self.conn, run_id, epoch).await?;
        let _heartbeat = {
            let (store, conn) = (self.store.clone(), self.conn.clone());
            let (holder, ttl) = (holder.to_string(), self.options.stale_run_after);
            // beat (and renew the lease) well within the time after which a silent run
            // counts as dead
            let every = HEARTBEAT_EVERY.min(ttl / 3).max(Duration::from_millis(10));
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Err(e) = store.heartbeat_run(&conn, run_id).await {
                        tracing::warn!(connection = %conn, run = run_id, error = %e, "heartbeat not recorded");
                    }
                    if let Err(e) = store.acquire_lease(&conn, SYNC_LEASE, &holder, ttl).await {
                        tracing::warn!(connection = %conn, run = run_id, error = %e, "sync lease not renewed");
                    }
                }
            }))
        };
        let stored_types = self
            .store
            .count_by_type(&self.conn)
            .await?
            .into_iter()
            .filter(|c| c.live > 0)
            .map(|c| c.resource_type)
            .collect();
        let ledger = Arc::new(RunLedger::default());
        let run = Run {
            id: run_id,
            mode,
            epoch,
            client: self.client.with_observer(ledger.clone()),
            ledger,
            counts: Mutex::new(BTreeMap::new()),
            partial: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
            skipped: Mutex::new(Default::default()),
            reauth: AtomicBool::new(false),
            reauth_detail: Mutex::new(None),
            fetched_refs: Mutex::new(HashSet::new()),
            failed_refs: Mutex::new(HashMap::new()),
            referenced_fetched: AtomicU64::new(0),
            external: AtomicU64::new(0),
            patients_complete: AtomicU64::new(0),
            stored_types,
            deadline: self.options.max_run_duration.map(|d| started + d),
            linked: Mutex::new(patient_ids.iter().cloned().collect()),
            timed_out: AtomicU64::new(0),
            unconfigured: Mutex::new(HashSet::new()),
        };
        if let Some(e) = resumed_epoch {
            run.note(format!(
                "resuming the checkpoints of interrupted run {e}: patients and pages it finished are not fetched again"
            ));
        }
        let result = tokio::select! {
            r = self.run_patients(&run, patient_ids) => r,
            () = self.stop_requested() => Err(SyncError::Stopped),
        };
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
            "resumed_from": resumed_epoch,
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
        flushed?;
        match result {
            // a stop is an outcome (failed, interrupted, resumable), not an error of the sync
            Err(SyncError::Stopped) | Ok(()) => Ok(report),
            Err(e) => Err(e),
        }
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
        let error = if run.aborted() {
            Some(format!(
                "{REAUTH_PREFIX}: {}",
                lock(&run.reauth_detail).clone().unwrap_or_default()
            ))
        } else {
            err.map(|e| e.to_string()).or_else(|| {
                outcome::nothing_answered(run.ledger.answered.load(Ordering::Relaxed), &partial)
            })
        };
        SyncReport {
            run_id: run.id,
            outcome: outcome::run_outcome(error.as_deref(), &partial),
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
        // Fetch the CapabilityStatement before fanning out. Without one, nothing says which
        // types the server offers beyond what is configured: a finding says so.
        if self.capability().await.is_none() {
            let detail = format!(
                "no usable CapabilityStatement from {}metadata: type coverage unverified — \
                 only the configured types (and what $everything and references bring) were \
                 fetched",
                self.client.base()
            );
            run.note(detail.clone());
            let f = Finding {
                at: Utc::now(),
                run_id: Some(run.id),
                kind: "type-coverage-unverified".into(),
                severity: "warning".into(),
                resource_type: None,
                detail,
            };
            self.store.record_finding(&self.conn, &f).await?;
        }
        // The first patient alone: it probes what the server accepts (rejected searches,
        // categories, $everything) so the others do not all ask at once.
        let Some((first, rest)) = patient_ids.split_first() else {
            return Ok(());
        };
        self.sync_or_resume_patient(run, first).await?;
        stream::iter(rest.iter().map(Ok))
            .try_for_each_concurrent(self.options.patient_concurrency.max(1), |pid| async move {
                if run.aborted() {
                    return Ok(());
                }
                self.sync_or_resume_patient(run, pid).await
            })
            .await
    }

    /// A patient finished in this epoch (by the interrupted run this one resumes) is not
    /// fetched again: its gaps carry over, so resuming never turns a partial record complete.
    async fn sync_or_resume_patient(&self, run: &Run, pid: &str) -> Result<(), SyncError> {
        if let Some(gaps) = self.checkpoints(run).patient_done(pid).await? {
            if gaps.is_empty() {
                run.patients_complete.fetch_add(1, Ordering::Relaxed);
            }
            lock(&run.partial).extend(gaps);
            return Ok(());
        }
        if run.past_deadline() {
            run.partial(
                pid,
                "*",
                MissingReason::DeadlineReached,
                "the run's deadline passed before this patient was fetched".into(),
            );
            return Ok(());
        }
        self.sync_patient(run, pid).await
    }

    /// The types of the whole record: the configured ones, plus every type of the Patient
    /// compartment the CapabilityStatement lists that the server holds any data of (one
    /// server-wide count per such type and run).
    async fn record_types(&self, run: &Run) -> Vec<String> {
        let mut types = self.resource_types();
        let listed: Vec<String> = match self.capability().await {
            Some(cs) => crate::compartment::PATIENT_COMPARTMENT
                .iter()
                .filter(|t| cs.supports_type(t) && !types.iter().any(|c| c == *t))
                .map(|t| t.to_string())
                .collect(),
            None => Vec::new(),
        };
        let granted = self.client.granted_scopes();
        for t in listed {
            if run.aborted() {
                break;
            }
            // a type nobody asked a scope for is not fetched behind the grant's back: it is
            // reported (not offered to this grant), and configured types stay gaps
            if let Some(g) = &granted
                && !crate::scopes::scopes_cover(g, &t)
            {
                if lock(&run.skipped).insert(t.clone()) {
                    run.note(format!(
                        "{t}: listed by the server but outside the granted scopes; configure it \
                         (and its scope) to include it in the record"
                    ));
                }
                continue;
            }
            if self.server_has_any(run, &t).await {
                lock(&run.unconfigured).insert(t.clone());
                types.push(t);
            }
        }
        types
    }

    async fn sync_patient(&self, run: &Run, pid: &str) -> Result<(), SyncError> {
        let state = Mutex::new(PatientState::default());
        let types = self.record_types(run).await;
        let first_sync = self
            .store
            .get_resource(&self.conn, "Patient", pid)
            .await?
            .is_none();
        let everything_done = self.try_everything(run, pid, &types, &state).await?;
        // Every configured type is asked for, listed in the CapabilityStatement or not
        // (statements lie both ways); a refusal of an unlisted type is remembered, so only the
        // first patient pays for it, and makes it "not offered" (outcome rule 3). After a
        // whole `$everything`, the configured types it did not return are still searched —
        // servers leave types out of it — except those the server holds none of at all.
        let to_search: Vec<String> = if everything_done {
            let returned: HashSet<String> = lock(&state)
                .fetched
                .iter()
                .map(|(t, _)| t.clone())
                .collect();
            let mut rest = Vec::new();
            for t in types.iter().filter(|t| !returned.contains(*t)) {
                if !run.aborted() && self.server_has_any(run, t).await {
                    rest.push(t.clone());
                }
            }
            rest
        } else {
            types.clone()
        };
        if !run.aborted() {
            stream::iter(to_search.iter().map(Ok))
                .try_for_each_concurrent(self.options.type_concurrency.max(1), |t| {
                    let state = &state;
                    async move { self.sync_type(run, pid, t, state).await }
                })
                .await?;
        }
        let mut st = std::mem::take(&mut *lock(&state));
        let (got_patient, reconcile) = (st.got_patient, std::mem::take(&mut st.reconcile));
        let (patient_ids, links) = (
            std::mem::take(&mut st.patient_ids),
            std::mem::take(&mut st.links),
        );
        let held = if !run.aborted() && self.options.reference_depth > 0 {
            self.resolve_references(run, pid, st).await?
        } else {
            st.fetched
        };
        // Only types with no gap at all (a reference of the type that could not be read is
        // one) tombstone, and only after the references had their say.
        if !run.aborted() {
            let gap_types: HashSet<String> = run
                .gaps_of(pid)
                .into_iter()
                .map(|g| g.resource_type)
                .collect();
            for t in reconcile
                .iter()
                .filter(|t| outcome::may_tombstone(true, false, gap_types.contains(*t)))
            {
                self.reconcile(run, pid, t, &held).await?;
            }
        }
        run.ledger
            .flush(self.store.as_ref(), &self.conn, run.id)
            .await?;
        if run.aborted() {
            // Not finished: its checkpoints stay for the run that resumes this one.
            return Ok(());
        }
        let asked_for_patient = everything_done || types.iter().any(|t| t == "Patient");
        if let Some(reason) = outcome::empty_record(first_sync && asked_for_patient, got_patient) {
            run.partial(
                pid,
                "Patient",
                reason,
                format!(
                    "the first sync of patient {pid} brought no Patient resource: the record is \
                     empty or the patient id is not the server's"
                ),
            );
        }
        if !patient_ids.is_empty() && !patient_ids.contains(pid) {
            self.record_alias(run, pid, &patient_ids).await?;
        }
        // The person's other records (a payer's member Patient that only links to the
        // Patients holding the data) are synced as part of the same record.
        let base = self.client.base().clone();
        for l in links {
            if let RefTarget::Local {
                resource_type, id, ..
            } = parse_reference(&l, &base)
                && resource_type == "Patient"
                && lock(&run.linked).insert(id.clone())
            {
                run.note(format!(
                    "patient {pid} links to Patient/{id}: synced as the same person"
                ));
                Box::pin(self.sync_or_resume_patient(run, &id)).await?;
            }
        }
        let gaps = run.gaps_of(pid);
        if gaps.is_empty() {
            run.patients_complete.fetch_add(1, Ordering::Relaxed);
        }
        self.checkpoints(run).finish_patient(pid, gaps).await?;
        Ok(())
    }

    /// The server answered for `pid` with a Patient under another id (a per-session id):
    /// both are kept — searches went out with the id asked for, the data names the other —
    /// and a finding says so.
    async fn record_alias(
        &self,
        run: &Run,
        pid: &str,
        ids: &BTreeSet<String>,
    ) -> Result<(), SyncError> {
        let others: Vec<&str> = ids.iter().map(String::as_str).collect();
        let detail = format!(
            "patient {pid} was answered with Patient {}: the server uses another id for the              same record; both are kept (the records' data references the server's id)",
            others.join(", ")
        );
        run.note(detail.clone());
        let f = Finding {
            at: Utc::now(),
            run_id: Some(run.id),
            kind: "patient-alias".into(),
            severity: "info".into(),
            resource_type: Some("Patient".into()),
            detail,
        };
        self.store.record_finding(&self.conn, &f).await?;
        Ok(())
    }

    /// The client retries transient failures; a page that still fails gets a few more tries
    /// after a pause (a mid-paging error often passes). A timeout is not tried again here:
    /// the client already gave a stalled server its one extra try.
    pub(crate) async fn get_with_page_retries(
        &self,
        run: &Run,
        req: FhirRequest,
    ) -> Result<aqueduct_client::FhirResponse, FetchError> {
        let mut tries = 0;
        loop {
            match run.client.get(req.clone()).await {
                Ok(r) => return Ok(r),
                Err(e)
                    if e.is_transient()
                        && e.kind != aqueduct_client::FetchErrorKind::Timeout
                        && tries < self.options.page_retries
                        && !run.aborted()
                        && !run.past_deadline() =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(tries))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) async fn write_page(
        &self,
        run: &Run,
        resources: &[RawResource],
        duplicates: &BTreeMap<String, u64>,
    ) -> Result<(), SyncError> {
        for (t, n) in duplicates {
            run.count(t, |c| c.duplicates += n);
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
}

/// Records a sync that failed before it started (see [`Syncer::record_failed_start`]); for
/// callers that fail before they have a syncer (no token, no discovery document).
pub async fn record_failed_start(
    store: &dyn Store,
    conn: &ConnectionRef,
    mode: SyncMode,
    stage: &str,
    error: &str,
) -> Result<RunId, SyncError> {
    let run = store
        .begin_run(conn, &format!("{}:population", mode.as_str()))
        .await?;
    let text = format!("{stage}: {error}");
    store
        .finish_run(conn, run, RunOutcome::Failed, None, Some(&text))
        .await?;
    let f = Finding {
        at: Utc::now(),
        run_id: Some(run),
        kind: "run-failed-to-start".into(),
        severity: "critical".into(),
        resource_type: None,
        detail: format!("the sync of {conn} could not start — {text}"),
    };
    store.record_finding(conn, &f).await?;
    Ok(run)
}

/// A process-unique suffix for lease holders (two syncers in one process are two holders).
fn uuid_like() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", Utc::now().timestamp_nanos_opt().unwrap_or(0))
}
