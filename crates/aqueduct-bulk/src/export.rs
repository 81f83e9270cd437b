//! One Bulk import run: kick-off (or the stored job), polling, the manifest, the files, the
//! outcome. Its state lives in checkpoints under `bulk/` so a killed process resumes the same
//! job: `bulk/job` (status URLs, manifests), `bulk/file/{job}/{file}` (committed lines and the
//! byte offset after them, written after the lines' resources and the ledger), and
//! `bulk/last/{level}` (the `transactionTime` of the last complete export, for
//! `--incremental`).

use aqueduct_core::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aqueduct_client::headers::parse_retry_after;
use aqueduct_client::{AccessTokenSource, FhirClient, RetryPolicy};
use aqueduct_core::{ConnectionRef, Finding, RawResource, RunId, RunOutcome, Store};
use aqueduct_sync::outcome::{
    BulkFileRead, OutcomeMeaning, bulk_file_gap, outcome_meaning, run_outcome,
};
use aqueduct_sync::{MissingReason, PartialType, RunLedger};
use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::BulkError;
use crate::http::{Http, Req, outcome_text};
use crate::manifest::{FileKind, Manifest, ManifestFile, parse_manifest};
use crate::ndjson::{Line, LineSource, LineSplitter, deleted_entries, is_blank, parse_line};

/// The patient named in gaps that concern the whole population.
pub const POPULATION: &str = "*";
const LEASE: &str = "bulk";
const JOB_KEY: &str = "bulk/job";
const FILE_PREFIX: &str = "bulk/file/";
/// A batch is committed at this many bytes of lines even when it has fewer lines than
/// `batch_lines`: memory stays bounded by concurrency x this, whatever the resources' size.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Which `$export` to ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// `[base]/$export`
    System,
    /// `[base]/Patient/$export`
    Patient,
    /// `[base]/Group/{id}/$export`
    Group(String),
}

impl Level {
    fn path(&self) -> String {
        match self {
            Level::System => "$export".into(),
            Level::Patient => "Patient/$export".into(),
            Level::Group(id) => format!("Group/{id}/$export"),
        }
    }

    /// A short name, for run kinds and checkpoint keys.
    pub fn key(&self) -> String {
        match self {
            Level::System => "system".into(),
            Level::Patient => "patient".into(),
            Level::Group(id) => format!("group:{id}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BulkOptions {
    pub level: Level,
    /// `_type`; empty = what the server exports.
    pub types: Vec<String>,
    /// `_since`, explicit.
    pub since: Option<String>,
    /// `_typeFilter` values (each `Type?query`).
    pub type_filters: Vec<String>,
    /// `_outputFormat` (default: none sent, the server's NDJSON).
    pub output_format: Option<String>,
    /// `_since` = the `transactionTime` of the last complete export of this level.
    pub incremental: bool,
    /// Files downloaded at once (the host limiter may allow fewer).
    pub concurrency: usize,
    /// Lines written to the store per transaction (and per checkpoint).
    pub batch_lines: usize,
    /// A `running` run without a heartbeat for this long was killed: closed as failed by the
    /// next run (its job is resumed); also the lease's time to live.
    pub stale_run_after: Duration,
    /// The whole export's deadline, polling included.
    pub max_duration: Duration,
    /// The longest a `Retry-After` is honoured for one poll.
    pub max_poll_wait: Duration,
    /// New kick-offs for expired files.
    pub max_rekicks: u32,
    /// Tries of one file (a broken body resumes where it stopped).
    pub file_attempts: u32,
    /// No data arriving on a download for this long is a broken body.
    pub stall_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for BulkOptions {
    fn default() -> Self {
        Self {
            level: Level::System,
            types: Vec::new(),
            since: None,
            type_filters: Vec::new(),
            output_format: None,
            incremental: false,
            concurrency: 4,
            batch_lines: 2000,
            stale_run_after: Duration::from_secs(300),
            max_duration: Duration::from_secs(24 * 3600),
            max_poll_wait: Duration::from_secs(600),
            max_rekicks: 2,
            file_attempts: 3,
            stall_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        }
    }
}

/// Counts per resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeTotals {
    /// Lines that were resources (valid or flagged).
    pub lines: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Lines stored flagged (not JSON, no type or id).
    pub invalid: u64,
    pub tombstoned: u64,
}

/// A line that was not a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// What a Bulk import did.
#[derive(Debug, Clone, Serialize)]
pub struct BulkReport {
    pub run_id: RunId,
    #[serde(serialize_with = "ser_outcome")]
    pub outcome: RunOutcome,
    pub level: String,
    pub since: Option<String>,
    pub transaction_time: Option<String>,
    /// This run continued a job an earlier (killed) run started.
    pub resumed: bool,
    /// Kick-offs (more than 1 when expired files were asked for again).
    pub jobs: usize,
    pub files: usize,
    pub files_complete: usize,
    pub by_type: BTreeMap<String, TypeTotals>,
    pub malformed_lines: u64,
    /// The first malformed lines, with file and line number (all are findings).
    pub quarantined: Vec<Quarantined>,
    /// OperationOutcomes read from `error` files.
    pub error_outcomes: u64,
    /// Types whose files expired and were asked for again with a new kick-off.
    pub rerequested_types: Vec<String>,
    pub partial: Vec<PartialType>,
    pub notes: Vec<String>,
    pub error: Option<String>,
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    /// Bytes received on the wire (compressed when gzip).
    pub bytes_received: u64,
    /// NDJSON bytes after decompression.
    pub bytes_decoded: u64,
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
}

impl BulkReport {
    /// Resources (lines) read in this run.
    pub fn resources(&self) -> u64 {
        self.by_type.values().map(|t| t.lines).sum()
    }
}

fn ser_outcome<S: serde::Serializer>(o: &RunOutcome, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(o.as_str())
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The job(s) of an import, as checkpointed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobState {
    kind: String,
    since: Option<String>,
    parts: Vec<JobPart>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobPart {
    status_url: String,
    /// `_type` of this kick-off (empty: the configured types).
    types: Vec<String>,
    manifest: Option<Manifest>,
    /// Its files were all handled; expired ones asked for again.
    handled: bool,
}

/// A file's committed progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FileProgress {
    lines: u64,
    offset: u64,
    resources: u64,
    malformed: u64,
    done: bool,
    /// Why the file is not whole (clause 6), once done.
    gap: Option<(MissingReason, String)>,
    expired: bool,
}

#[derive(Default)]
struct Totals {
    by_type: BTreeMap<String, TypeTotals>,
    malformed: u64,
    quarantined: Vec<Quarantined>,
    error_outcomes: u64,
    gaps: Vec<PartialType>,
    notes: Vec<String>,
    bytes_received: u64,
    bytes_decoded: u64,
    files: usize,
    files_complete: usize,
}

struct Ctx {
    run: RunId,
    http: Http,
    totals: Mutex<Totals>,
}

impl Ctx {
    fn totals(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn note(&self, n: String) {
        tracing::info!(run = self.run, "{n}");
        self.totals().notes.push(n);
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Imports a Bulk Data export into the store.
pub struct BulkExporter {
    store: Arc<dyn Store>,
    client: FhirClient,
    auth: Arc<dyn AccessTokenSource>,
    conn: ConnectionRef,
    options: BulkOptions,
}

impl BulkExporter {
    /// `client` gives the base URL, the host limiter and the origin rule; `auth` is the same
    /// token source the client was built with (tokens are refreshed through it during long
    /// exports).
    pub fn new(
        store: Arc<dyn Store>,
        client: FhirClient,
        auth: Arc<dyn AccessTokenSource>,
        conn: ConnectionRef,
        options: BulkOptions,
    ) -> Self {
        Self {
            store,
            client,
            auth,
            conn,
            options,
        }
    }

    fn http(&self, ledger: Arc<RunLedger>) -> Http {
        Http {
            client: self.client.clone(),
            http: aqueduct_client::shared_http(),
            auth: self.auth.clone(),
            ledger,
            retry: self.options.retry.clone(),
            timeout: Duration::from_secs(120),
        }
    }

    fn kind(&self) -> String {
        format!("bulk:{}", self.options.level.key())
    }

    /// Runs (or resumes) the import. Errors only for store failures or a concurrent import;
    /// what the server does wrong ends in the report (outcome partial or failed).
    pub fn run(&self) -> BoxFuture<'_, Result<BulkReport, BulkError>> {
        Box::pin(self.run_unboxed())
    }

    async fn run_unboxed(&self) -> Result<BulkReport, BulkError> {
        let started = Instant::now();
        self.close_stale_runs().await?;
        let holder = format!(
            "bulk-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        let ttl = self.options.stale_run_after;
        if !self
            .store
            .acquire_lease(&self.conn, LEASE, &holder, ttl)
            .await?
        {
            return Err(BulkError::Busy {
                connection: self.conn.to_string(),
            });
        }
        let result = self.run_leased(started, &holder).await;
        if let Err(e) = self.store.release_lease(&self.conn, LEASE, &holder).await {
            tracing::warn!(connection = %self.conn, error = %e, "bulk lease not released; it expires on its own");
        }
        result
    }

    async fn close_stale_runs(&self) -> Result<(), BulkError> {
        let stale = chrono::Duration::from_std(self.options.stale_run_after)
            .unwrap_or(chrono::Duration::MAX);
        let Some(before) = Utc::now().checked_sub_signed(stale) else {
            return Ok(());
        };
        for id in self
            .store
            .close_stale_runs(&self.conn, before, aqueduct_sync::INTERRUPTED)
            .await?
        {
            let f = Finding {
                at: Utc::now(),
                run_id: Some(id),
                kind: "run-interrupted".into(),
                severity: "warning".into(),
                resource_type: None,
                detail: format!(
                    "run {id} stopped without finishing (no heartbeat since before {}); what it \
                     committed is kept and the Bulk job is resumed from its checkpoints",
                    before.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            };
            self.store.record_finding(&self.conn, &f).await?;
        }
        Ok(())
    }

    async fn run_leased(&self, started: Instant, holder: &str) -> Result<BulkReport, BulkError> {
        let kind = self.kind();
        let run = self.store.begin_run(&self.conn, &kind).await?;
        let _heartbeat = {
            let (store, conn) = (self.store.clone(), self.conn.clone());
            let (holder, ttl) = (holder.to_string(), self.options.stale_run_after);
            let every = (ttl / 3).max(Duration::from_millis(10));
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Err(e) = store.heartbeat_run(&conn, run).await {
                        tracing::warn!(connection = %conn, run, error = %e, "heartbeat not recorded");
                    }
                    if let Err(e) = store.acquire_lease(&conn, LEASE, &holder, ttl).await {
                        tracing::warn!(connection = %conn, run, error = %e, "bulk lease not renewed");
                    }
                }
            }))
        };
        let ledger = Arc::new(RunLedger::default());
        let ctx = Ctx {
            run,
            http: self.http(ledger.clone()),
            totals: Mutex::new(Totals::default()),
        };
        let mut state_since = None;
        let mut resumed = false;
        let mut rerequested = Vec::new();
        let mut jobs = 0;
        let mut transaction_time = None;
        let failure = match self
            .drive(
                &ctx,
                &mut state_since,
                &mut resumed,
                &mut rerequested,
                &mut jobs,
                &mut transaction_time,
            )
            .await
        {
            Ok(()) => None,
            Err(BulkError::Store(e)) => {
                // the store is gone: nothing more can be recorded reliably
                let _ = ledger.flush(self.store.as_ref(), &self.conn, run).await;
                return Err(BulkError::Store(e));
            }
            Err(e) => {
                if matches!(e, BulkError::JobFailed { .. }) {
                    // the server ended the job: nothing to resume; delete it there, forget it here
                    if let Some(state) = self.load_state().await? {
                        for p in &state.parts {
                            self.delete_job(&ctx, &p.status_url).await;
                        }
                    }
                    self.clear_state().await?;
                }
                Some(e.to_string())
            }
        };
        let flushed = ledger.flush(self.store.as_ref(), &self.conn, run).await;
        let t = std::mem::take(&mut *ctx.totals());
        let outcome = run_outcome(failure.as_deref(), &t.gaps);
        if outcome == RunOutcome::Complete
            && let Some(tt) = &transaction_time
        {
            self.store
                .save_checkpoint(&self.conn, &last_key(&self.options.level), tt)
                .await?;
        }
        let report = BulkReport {
            run_id: run,
            outcome,
            level: self.options.level.key(),
            since: state_since,
            transaction_time,
            resumed,
            jobs,
            files: t.files,
            files_complete: t.files_complete,
            by_type: t.by_type,
            malformed_lines: t.malformed,
            quarantined: t.quarantined,
            error_outcomes: t.error_outcomes,
            rerequested_types: rerequested,
            partial: t.gaps,
            notes: t.notes,
            error: failure,
            requests: ledger.requests.load(std::sync::atomic::Ordering::Relaxed),
            retries: ledger.retries.load(std::sync::atomic::Ordering::Relaxed),
            throttled: ledger.throttled.load(std::sync::atomic::Ordering::Relaxed),
            bytes_received: t.bytes_received,
            bytes_decoded: t.bytes_decoded,
            duration: started.elapsed(),
        };
        let summary = serde_json::json!({
            "missing": report.partial,
            "by_type": report.by_type,
            "files": report.files,
            "files_complete": report.files_complete,
            "malformed_lines": report.malformed_lines,
            "error_outcomes": report.error_outcomes,
            "rerequested_types": report.rerequested_types,
            "transaction_time": report.transaction_time,
            "resumed": report.resumed,
            "notes": report.notes.iter().take(50).collect::<Vec<_>>(),
        })
        .to_string();
        self.store
            .finish_run(
                &self.conn,
                run,
                outcome,
                Some(&summary),
                report.error.as_deref(),
            )
            .await?;
        for p in report.partial.iter().take(100) {
            let f = Finding {
                at: Utc::now(),
                run_id: Some(run),
                kind: format!("type-{}", p.reason.as_str()),
                severity: "warning".into(),
                resource_type: Some(p.resource_type.clone()),
                detail: p.detail.clone(),
            };
            self.store.record_finding(&self.conn, &f).await?;
        }
        if let Some(e) = &report.error {
            let f = Finding {
                at: Utc::now(),
                run_id: Some(run),
                kind: "bulk-export-failed".into(),
                severity: "critical".into(),
                resource_type: None,
                detail: e.clone(),
            };
            self.store.record_finding(&self.conn, &f).await?;
        }
        flushed?;
        Ok(report)
    }

    async fn load_state(&self) -> Result<Option<JobState>, BulkError> {
        let Some(text) = self.store.load_checkpoint(&self.conn, JOB_KEY).await? else {
            return Ok(None);
        };
        match serde_json::from_str::<JobState>(&text) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                // written by another version: start afresh rather than guess
                tracing::warn!(connection = %self.conn, error = %e, "stored Bulk job state unreadable; starting a new export");
                Ok(None)
            }
        }
    }

    /// Saves the job state, after the ledger (which is never behind what a crash keeps).
    async fn save_state(&self, ctx: &Ctx, state: &JobState) -> Result<(), BulkError> {
        ctx.http
            .ledger
            .flush(self.store.as_ref(), &self.conn, ctx.run)
            .await?;
        let text = serde_json::to_string(state)
            .map_err(|e| BulkError::Protocol(format!("job state: {e}")))?;
        self.store
            .save_checkpoint(&self.conn, JOB_KEY, &text)
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        ctx: &Ctx,
        since_out: &mut Option<String>,
        resumed: &mut bool,
        rerequested: &mut Vec<String>,
        jobs: &mut usize,
        transaction_time: &mut Option<String>,
    ) -> Result<(), BulkError> {
        let deadline = Instant::now() + self.options.max_duration;
        let mut state = match self.load_state().await? {
            Some(s) if s.kind == self.kind() => {
                *resumed = true;
                ctx.note(format!(
                    "resuming the Bulk job an interrupted run started ({} kick-off(s)); committed lines are not read again",
                    s.parts.len()
                ));
                s
            }
            other => {
                if other.is_some() {
                    ctx.note("a stored Bulk job of another level was dropped".into());
                    self.clear_state().await?;
                }
                let since = match (&self.options.since, self.options.incremental) {
                    (Some(s), _) => Some(s.clone()),
                    (None, true) => {
                        let last = self
                            .store
                            .load_checkpoint(&self.conn, &last_key(&self.options.level))
                            .await?;
                        if last.is_none() {
                            ctx.note("no earlier complete export of this level: --incremental exports everything".into());
                        }
                        last
                    }
                    (None, false) => None,
                };
                let status_url = self
                    .kick_off(ctx, &self.options.types, since.as_deref())
                    .await?;
                let s = JobState {
                    kind: self.kind(),
                    since,
                    parts: vec![JobPart {
                        status_url,
                        types: self.options.types.clone(),
                        manifest: None,
                        handled: false,
                    }],
                };
                self.save_state(ctx, &s).await?;
                s
            }
        };
        since_out.clone_from(&state.since);
        let mut i = 0;
        while i < state.parts.len() {
            let manifest = match state.parts[i].manifest.clone() {
                Some(m) => m,
                None => {
                    let url = Url::parse(&state.parts[i].status_url)?;
                    let m = self.poll(ctx, &url, deadline).await?;
                    state.parts[i].manifest = Some(m.clone());
                    self.save_state(ctx, &state).await?;
                    m
                }
            };
            if i == 0 || transaction_time.is_none() {
                transaction_time.clone_from(&manifest.transaction_time);
            }
            for u in &manifest.unusable {
                ctx.totals().gaps.push(PartialType {
                    patient_id: POPULATION.into(),
                    resource_type: "*".into(),
                    reason: MissingReason::Incomplete,
                    detail: format!("manifest entry {u}"),
                });
            }
            let expired = self.download_all(ctx, i, &manifest).await?;
            if !expired.is_empty() {
                let types: Vec<String> = expired.iter().cloned().collect();
                if state.parts.len() as u32 > self.options.max_rekicks {
                    for t in &types {
                        ctx.totals().gaps.push(PartialType {
                            patient_id: POPULATION.into(),
                            resource_type: t.clone(),
                            reason: MissingReason::FailedAfterRetries,
                            detail: format!(
                                "files of {t} expired at the server (404/410) and {} new kick-offs did not bring them",
                                self.options.max_rekicks
                            ),
                        });
                    }
                } else if !state.parts[i].handled {
                    ctx.note(format!(
                        "files of {} expired at the server (404/410): asked for again with a new kick-off for only those types",
                        types.join(", ")
                    ));
                    let url = self.kick_off(ctx, &types, state.since.as_deref()).await?;
                    for t in &types {
                        if !rerequested.contains(t) {
                            rerequested.push(t.clone());
                        }
                    }
                    state.parts[i].handled = true;
                    state.parts.push(JobPart {
                        status_url: url,
                        types,
                        manifest: None,
                        handled: false,
                    });
                    self.save_state(ctx, &state).await?;
                }
            }
            state.parts[i].handled = true;
            i += 1;
        }
        *jobs = state.parts.len();
        // done with the job: forget it here, then delete it at the server (a crash in
        // between leaves a job the server expires on its own, never a stored job whose
        // status URL is gone)
        self.clear_state().await?;
        for p in &state.parts {
            self.delete_job(ctx, &p.status_url).await;
        }
        Ok(())
    }

    async fn clear_state(&self) -> Result<(), BulkError> {
        self.store
            .clear_checkpoints(&self.conn, FILE_PREFIX)
            .await?;
        self.store.clear_checkpoints(&self.conn, JOB_KEY).await?;
        Ok(())
    }

    fn kickoff_url(&self, types: &[String], since: Option<&str>) -> Result<Url, BulkError> {
        let mut url = self.client.base().join(&self.options.level.path())?;
        {
            let mut q = url.query_pairs_mut();
            if !types.is_empty() {
                q.append_pair("_type", &types.join(","));
            }
            if let Some(s) = since {
                q.append_pair("_since", s);
            }
            for f in &self.options.type_filters {
                let t = f.split('?').next().unwrap_or("");
                if types.is_empty() || types.iter().any(|x| x == t) {
                    q.append_pair("_typeFilter", f);
                }
            }
            if let Some(o) = &self.options.output_format {
                q.append_pair("_outputFormat", o);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }

    /// `GET [base]/…/$export` with `Prefer: respond-async`: the status URL.
    async fn kick_off(
        &self,
        ctx: &Ctx,
        types: &[String],
        since: Option<&str>,
    ) -> Result<String, BulkError> {
        let url = self.kickoff_url(types, since)?;
        let template = format!(
            "{}{}",
            self.options.level.path(),
            if url.query().is_some() { "?{}" } else { "" }
        );
        let r = ctx
            .http
            .small(&Req {
                method: reqwest::Method::GET,
                url: &url,
                headers: vec![
                    ("accept", "application/fhir+json".into()),
                    ("prefer", "respond-async".into()),
                ],
                token: true,
                resource_type: None,
                template: &template,
            })
            .await?;
        if r.status != 202 {
            return Err(BulkError::KickOffRefused {
                status: r.status,
                outcome: outcome_text(&r.body),
            });
        }
        let location = r
            .headers
            .get("content-location")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                BulkError::Protocol(
                    "the kick-off answered 202 without a usable Content-Location".into(),
                )
            })?;
        tracing::info!(connection = %self.conn, level = %self.options.level.key(), "bulk export kicked off");
        Ok(location.to_string())
    }

    /// Polls until the manifest (200) or the job's end.
    async fn poll(&self, ctx: &Ctx, url: &Url, deadline: Instant) -> Result<Manifest, BulkError> {
        let mut waited_polls = 0u32;
        let mut errors = 0u32;
        loop {
            if Instant::now() > deadline {
                return Err(BulkError::Deadline(self.options.max_duration));
            }
            let r = ctx
                .http
                .small(&Req {
                    method: reqwest::Method::GET,
                    url,
                    headers: vec![("accept", "application/json".into())],
                    token: true,
                    resource_type: None,
                    template: "bulkstatus/{job}",
                })
                .await;
            let r = match r {
                Ok(r) => r,
                Err(BulkError::ServerError {
                    status, outcome, ..
                }) => {
                    return Err(BulkError::JobFailed { status, outcome });
                }
                Err(e @ (BulkError::Transport { .. } | BulkError::Body { .. })) => {
                    errors += 1;
                    if errors > 5 {
                        return Err(e);
                    }
                    tokio::time::sleep(self.options.retry.backoff(errors)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let retry_after = r
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            match r.status {
                200 => {
                    let m = parse_manifest(&r.body, url)?;
                    return Ok(m);
                }
                202 => {
                    waited_polls += 1;
                    errors = 0;
                    if let Some(p) = r.headers.get("x-progress").and_then(|v| v.to_str().ok()) {
                        tracing::debug!(progress = p, "bulk export in progress");
                    }
                    let wait = retry_after.unwrap_or_else(|| {
                        Duration::from_secs(1u64 << waited_polls.min(5))
                            .min(Duration::from_secs(30))
                    });
                    tokio::time::sleep(wait.min(self.options.max_poll_wait)).await;
                }
                429 | 503 | 500 | 502 | 504 => {
                    // still throttled or failing after the request's own retries: the job goes on
                    errors += 1;
                    if errors > 10 {
                        return Err(BulkError::JobFailed {
                            status: r.status,
                            outcome: outcome_text(&r.body),
                        });
                    }
                    let wait = retry_after.unwrap_or_else(|| self.options.retry.backoff(errors));
                    tokio::time::sleep(wait.min(self.options.max_poll_wait)).await;
                }
                401 => {
                    // an authorization problem, not the job's end: the job stays stored
                    return Err(BulkError::Auth(
                        aqueduct_client::AuthError::ReauthorizationNeeded(format!(
                            "the status URL answered 401: {}",
                            outcome_text(&r.body)
                        )),
                    ));
                }
                status => {
                    return Err(BulkError::JobFailed {
                        status,
                        outcome: outcome_text(&r.body),
                    });
                }
            }
        }
    }

    async fn delete_job(&self, ctx: &Ctx, status_url: &str) {
        let Ok(url) = Url::parse(status_url) else {
            return;
        };
        let r = ctx
            .http
            .small(&Req {
                method: reqwest::Method::DELETE,
                url: &url,
                headers: vec![("accept", "application/fhir+json".into())],
                token: true,
                resource_type: None,
                template: "bulkstatus/{job}",
            })
            .await;
        match r {
            Ok(r) if (200..300).contains(&r.status) || r.status == 404 => {}
            Ok(r) => ctx.note(format!(
                "the job could not be deleted at the server: HTTP {}",
                r.status
            )),
            Err(e) => ctx.note(format!("the job could not be deleted at the server: {e}")),
        }
    }

    /// Deletes the stored job at the server and forgets it (`--cancel`). Its requests reach
    /// the ledger of a `bulk-cancel` run. Returns how many jobs were deleted.
    pub async fn cancel(&self) -> Result<usize, BulkError> {
        let Some(state) = self.load_state().await? else {
            return Ok(0);
        };
        let run = self.store.begin_run(&self.conn, "bulk-cancel").await?;
        let ledger = Arc::new(RunLedger::default());
        let ctx = Ctx {
            run,
            http: self.http(ledger.clone()),
            totals: Mutex::new(Totals::default()),
        };
        for p in &state.parts {
            self.delete_job(&ctx, &p.status_url).await;
        }
        self.clear_state().await?;
        ledger.flush(self.store.as_ref(), &self.conn, run).await?;
        let notes = std::mem::take(&mut ctx.totals().notes);
        self.store
            .finish_run(
                &self.conn,
                run,
                RunOutcome::Complete,
                Some(
                    &serde_json::json!({"cancelled_jobs": state.parts.len(), "notes": notes})
                        .to_string(),
                ),
                None,
            )
            .await?;
        Ok(state.parts.len())
    }

    /// Downloads every file of one manifest; returns the types whose files expired.
    async fn download_all(
        &self,
        ctx: &Ctx,
        part: usize,
        manifest: &Manifest,
    ) -> Result<BTreeSet<String>, BulkError> {
        ctx.totals().files += manifest.files.len();
        // results arrive in completion order: each carries its file's index. The items are
        // indices, not borrowed files: a closure over a borrowed item is not general enough
        // for the boxed `run`'s `Send` (rust-lang/rust#102211).
        let results: Vec<(usize, Result<FileProgress, BulkError>)> =
            futures_util::stream::iter(0..manifest.files.len())
                .map(|n| async move {
                    let f = &manifest.files[n];
                    (
                        n,
                        self.download(ctx, part, n, f, manifest.requires_access_token)
                            .await,
                    )
                })
                .buffer_unordered(self.options.concurrency.max(1))
                .collect()
                .await;
        let mut expired = BTreeSet::new();
        for (n, r) in results {
            let f = &manifest.files[n];
            let p = r?;
            if p.expired {
                expired.insert(f.resource_type.clone());
                continue;
            }
            match &p.gap {
                None => ctx.totals().files_complete += 1,
                Some((reason, detail)) => ctx.totals().gaps.push(PartialType {
                    patient_id: POPULATION.into(),
                    resource_type: f.resource_type.clone(),
                    reason: *reason,
                    detail: detail.clone(),
                }),
            }
        }
        Ok(expired)
    }

    async fn save_progress(&self, key: &str, p: &FileProgress) -> Result<(), BulkError> {
        let text = serde_json::to_string(p).map_err(|e| BulkError::Protocol(e.to_string()))?;
        self.store.save_checkpoint(&self.conn, key, &text).await?;
        Ok(())
    }

    /// One file, resumed from its committed line; retried (from there) when the body breaks.
    async fn download(
        &self,
        ctx: &Ctx,
        part: usize,
        index: usize,
        file: &ManifestFile,
        requires_token: bool,
    ) -> Result<FileProgress, BulkError> {
        let key = format!("{FILE_PREFIX}{part:03}/{index:05}");
        let mut prog: FileProgress = self
            .store
            .load_checkpoint(&self.conn, &key)
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        if prog.done {
            return Ok(prog);
        }
        let Ok(url) = Url::parse(&file.url) else {
            prog.done = true;
            prog.gap = Some((
                MissingReason::Incomplete,
                format!("file URL {} does not parse", file.url),
            ));
            return Ok(prog);
        };
        if requires_token && !self.client.may_receive_token(&url) {
            ctx.note(format!(
                "a file needs the access token but is on another origin ({}); the token is not sent (list the host in http.document_hosts to allow it)",
                url.origin().ascii_serialization()
            ));
        }
        let mut use_range = true;
        let mut last_error = String::new();
        for attempt in 1..=self.options.file_attempts.max(1) {
            match self
                .download_once(ctx, &key, &url, file, requires_token, &mut prog, use_range)
                .await?
            {
                Attempt::Done => return Ok(prog),
                Attempt::Expired => {
                    prog.expired = true;
                    return Ok(prog);
                }
                Attempt::Final(reason, detail) => {
                    prog.done = true;
                    prog.gap = Some((reason, detail));
                    self.save_progress(&key, &prog).await?;
                    return Ok(prog);
                }
                Attempt::Broken(why, range_ok) => {
                    use_range &= range_ok;
                    tracing::debug!(attempt, file = %file.url, why = %why, "bulk file body broken; resuming");
                    last_error = why;
                    tokio::time::sleep(self.options.retry.backoff(attempt)).await;
                }
            }
        }
        let read = BulkFileRead {
            read_to_end: false,
            ..Default::default()
        };
        let reason = bulk_file_gap(&read).unwrap_or(MissingReason::FailedAfterRetries);
        prog.done = true;
        prog.gap = Some((
            reason,
            format!(
                "{} file {} not read to its end after {} tries ({last_error}); {} lines committed",
                file.resource_type, file.url, self.options.file_attempts, prog.lines
            ),
        ));
        self.save_progress(&key, &prog).await?;
        Ok(prog)
    }

    #[allow(clippy::too_many_arguments)]
    async fn download_once(
        &self,
        ctx: &Ctx,
        key: &str,
        url: &Url,
        file: &ManifestFile,
        requires_token: bool,
        prog: &mut FileProgress,
        use_range: bool,
    ) -> Result<Attempt, BulkError> {
        let ranged = use_range && prog.offset > 0;
        let mut headers = vec![("accept", "application/fhir+ndjson".to_string())];
        if ranged {
            headers.push(("range", format!("bytes={}-", prog.offset)));
            headers.push(("accept-encoding", "identity".into()));
        } else {
            headers.push(("accept-encoding", "gzip".into()));
        }
        let s = match ctx
            .http
            .stream(&Req {
                method: reqwest::Method::GET,
                url,
                headers,
                token: requires_token,
                resource_type: Some(&file.resource_type),
                template: "bulkfile/{file}",
            })
            .await
        {
            Ok(s) => s,
            Err(e @ (BulkError::Transport { .. } | BulkError::Body { .. })) => {
                return Ok(Attempt::Broken(e.to_string(), true));
            }
            Err(BulkError::ServerError {
                status, outcome, ..
            }) => {
                return Ok(Attempt::Final(
                    MissingReason::FailedAfterRetries,
                    format!(
                        "{} file {}: HTTP {status}: {outcome}",
                        file.resource_type, file.url
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        let status = s.status;
        let gzip = s
            .headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("gzip"));
        match status {
            200 => {}
            206 if ranged && !gzip => {
                let from = s
                    .headers
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if from != Some(prog.offset) {
                    s.finish(0, 0, Some("range-mismatch".into()));
                    return Ok(Attempt::Broken(
                        "the server answered another range".into(),
                        false,
                    ));
                }
            }
            206 | 416 => {
                s.finish(0, 0, Some(format!("http-{status}")));
                return Ok(Attempt::Broken(
                    format!("HTTP {status} to a range request"),
                    false,
                ));
            }
            404 | 410 => {
                s.finish(0, 0, Some(format!("http-{status}")));
                return Ok(Attempt::Expired);
            }
            401 | 403 => {
                s.finish(0, 0, Some(format!("http-{status}")));
                return Ok(Attempt::Final(
                    MissingReason::Forbidden,
                    format!("{} file {}: HTTP {status}", file.resource_type, file.url),
                ));
            }
            _ => {
                s.finish(0, 0, Some(format!("http-{status}")));
                return Ok(Attempt::Final(
                    MissingReason::FailedAfterRetries,
                    format!("{} file {}: HTTP {status}", file.resource_type, file.url),
                ));
            }
        }
        // 206: the bytes start after the committed lines; 200: from the file's start, and the
        // committed lines are skipped
        let (mut splitter, skip) = if status == 206 {
            (LineSplitter::resume(prog.lines, prog.offset), 0)
        } else {
            (LineSplitter::new(), prog.lines)
        };
        let mut reader = Reader {
            inflate: None,
            sniffed: false,
            gzip,
        };
        let mut resp = s;
        let src_url = file.url.clone();
        let fetched_at = Utc::now();
        let mut batch = Batch::default();
        let mut received = 0u64;
        let mut decoded_total = 0u64;
        let mut lines_this_attempt = 0u64;
        let mut broken: Option<String> = None;
        let mut decoded = Vec::new();
        loop {
            let chunk =
                match tokio::time::timeout(self.options.stall_timeout, resp.resp.chunk()).await {
                    Err(_) => {
                        broken = Some(format!("no data for {:?}", self.options.stall_timeout));
                        break;
                    }
                    Ok(Err(e)) => {
                        broken = Some(format!("reading the body: {e}"));
                        break;
                    }
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(c))) => c,
                };
            received += chunk.len() as u64;
            decoded.clear();
            if let Err(e) = reader.decode(&chunk, &mut decoded) {
                broken = Some(format!("gzip: {e}"));
                break;
            }
            decoded_total += decoded.len() as u64;
            let src = LineSource {
                url: &src_url,
                file_type: &file.resource_type,
                fetched_at,
            };
            let _ = splitter.push::<()>(&decoded, |line| {
                if line.number > skip {
                    batch.take(line, file.kind, &src);
                    lines_this_attempt += 1;
                }
                Ok(())
            });
            if batch.len() >= self.options.batch_lines || batch.bytes >= BATCH_BYTES {
                self.commit(ctx, key, file, &mut batch, prog).await?;
            }
        }
        if broken.is_none() {
            decoded.clear();
            if let Err(e) = reader.finish(&mut decoded) {
                broken = Some(format!("gzip stream ended early: {e}"));
            } else if !decoded.is_empty() {
                decoded_total += decoded.len() as u64;
                let src = LineSource {
                    url: &src_url,
                    file_type: &file.resource_type,
                    fetched_at,
                };
                let _ = splitter.push::<()>(&decoded, |line| {
                    if line.number > skip {
                        batch.take(line, file.kind, &src);
                    }
                    Ok(())
                });
            }
        }
        let mut ended_mid_line = false;
        if broken.is_none() {
            let src = LineSource {
                url: &src_url,
                file_type: &file.resource_type,
                fetched_at,
            };
            let _ = splitter.finish::<()>(|line| {
                if line.number > skip {
                    // a last line without newline is fine when it is a whole resource
                    let whole = serde_json::from_slice::<serde::de::IgnoredAny>(line.bytes).is_ok();
                    if !whole && !is_blank(line.bytes) {
                        ended_mid_line = true;
                    }
                    batch.take(line, file.kind, &src);
                }
                Ok(())
            });
        }
        self.commit(ctx, key, file, &mut batch, prog).await?;
        {
            let mut t = ctx.totals();
            t.bytes_received += received;
            t.bytes_decoded += decoded_total;
        }
        let resources_now = lines_this_attempt;
        if let Some(why) = broken {
            resp.finish(received, resources_now, Some("truncated".into()));
            return Ok(Attempt::Broken(why, true));
        }
        let read = BulkFileRead {
            read_to_end: true,
            ended_mid_line,
            malformed_lines: prog.malformed,
            declared: file.count.filter(|_| file.kind == FileKind::Output),
            resources: prog.resources,
        };
        let gap = bulk_file_gap(&read);
        resp.finish(
            received,
            resources_now,
            gap.map(|_| {
                if ended_mid_line {
                    "ended-mid-line".to_string()
                } else {
                    "malformed-lines".to_string()
                }
            }),
        );
        prog.done = true;
        prog.gap = gap.map(|reason| {
            let mut why = Vec::new();
            if ended_mid_line {
                why.push(format!(
                    "the file ends in the middle of line {}",
                    prog.lines
                ));
            }
            if prog.malformed > 0 {
                why.push(format!(
                    "{} line(s) are not resources (stored flagged, each a finding)",
                    prog.malformed
                ));
            }
            if let Some(d) = read.declared.filter(|d| prog.resources < *d) {
                why.push(format!(
                    "{} resources read, the manifest announced {d}",
                    prog.resources
                ));
            }
            (
                reason,
                format!(
                    "{} file {}: {}",
                    file.resource_type,
                    file.url,
                    why.join("; ")
                ),
            )
        });
        self.save_progress(key, prog).await?;
        Ok(Attempt::Done)
    }

    /// Writes what the batch holds, then the ledger, then the file's progress.
    async fn commit(
        &self,
        ctx: &Ctx,
        key: &str,
        file: &ManifestFile,
        batch: &mut Batch,
        prog: &mut FileProgress,
    ) -> Result<(), BulkError> {
        let Some((lines, offset)) = batch.last else {
            return Ok(());
        };
        let resources = std::mem::take(&mut batch.resources);
        if !resources.is_empty() {
            let summary = self.store.write_resources(&self.conn, &resources).await?;
            let mut t = ctx.totals();
            for r in &resources {
                let e = match t.by_type.get_mut(&r.resource_type) {
                    Some(e) => e,
                    None => t.by_type.entry(r.resource_type.clone()).or_default(),
                };
                e.lines += 1;
                if r.parse_status != aqueduct_core::ParseStatus::Ok {
                    e.invalid += 1;
                }
            }
            // the store reports per batch; attribute to the file's type
            let e = t.by_type.entry(file.resource_type.clone()).or_default();
            e.inserted += summary.inserted;
            e.updated += summary.updated;
            e.unchanged += summary.unchanged;
        }
        let tombstones = std::mem::take(&mut batch.tombstones);
        for (rtype, ids) in tombstones {
            let n = self
                .store
                .tombstone(&self.conn, &rtype, &ids, Utc::now())
                .await?;
            ctx.totals().by_type.entry(rtype).or_default().tombstoned += n;
        }
        let problems = std::mem::take(&mut batch.problems);
        for (line, reason) in &problems {
            let detail = format!(
                "{} file {} line {line}: {reason}",
                file.resource_type, file.url
            );
            if prog.malformed < 1000 {
                let f = Finding {
                    at: Utc::now(),
                    run_id: Some(ctx.run),
                    kind: "bulk-line-malformed".into(),
                    severity: "warning".into(),
                    resource_type: Some(file.resource_type.clone()),
                    detail: detail.clone(),
                };
                self.store.record_finding(&self.conn, &f).await?;
            }
            prog.malformed += 1;
            let mut t = ctx.totals();
            t.malformed += 1;
            if t.quarantined.len() < 50 {
                t.quarantined.push(Quarantined {
                    file: file.url.clone(),
                    line: *line,
                    reason: reason.clone(),
                });
            }
        }
        for (line, summary, meaning) in std::mem::take(&mut batch.outcomes) {
            let f = Finding {
                at: Utc::now(),
                run_id: Some(ctx.run),
                kind: "bulk-error-outcome".into(),
                severity: "warning".into(),
                resource_type: None,
                detail: format!("error file {} line {line}: {summary}", file.url),
            };
            self.store.record_finding(&self.conn, &f).await?;
            let mut t = ctx.totals();
            t.error_outcomes += 1;
            if let OutcomeMeaning::Gap(reason) = meaning {
                t.gaps.push(PartialType {
                    patient_id: POPULATION.into(),
                    resource_type: "*".into(),
                    reason,
                    detail: format!(
                        "the server reported (error file {} line {line}): {summary}",
                        file.url
                    ),
                });
            }
        }
        prog.resources += batch.ok_resources;
        batch.ok_resources = 0;
        batch.bytes = 0;
        prog.lines = lines;
        prog.offset = offset;
        ctx.http
            .ledger
            .flush(self.store.as_ref(), &self.conn, ctx.run)
            .await?;
        self.save_progress(key, prog).await?;
        Ok(())
    }
}

fn last_key(level: &Level) -> String {
    format!("bulk/last/{}", level.key())
}

enum Attempt {
    Done,
    Expired,
    /// Not worth another try: a gap.
    Final(MissingReason, String),
    /// The body broke; try again from the committed line (bool: ranges still usable).
    Broken(String, bool),
}

/// Lines read since the last commit.
#[derive(Default)]
struct Batch {
    resources: Vec<RawResource>,
    tombstones: BTreeMap<String, Vec<String>>,
    /// (line, why) of lines that are not resources.
    problems: Vec<(u64, String)>,
    outcomes: Vec<(u64, String, OutcomeMeaning)>,
    /// (line number, offset after it) of the last line taken.
    last: Option<(u64, u64)>,
    ok_resources: u64,
    bytes: usize,
}

impl Batch {
    fn len(&self) -> usize {
        self.resources.len() + self.tombstones.values().map(Vec::len).sum::<usize>()
    }

    fn take(&mut self, line: Line<'_>, kind: FileKind, src: &LineSource<'_>) {
        self.last = Some((line.number, line.end_offset));
        if is_blank(line.bytes) {
            return;
        }
        match kind {
            FileKind::Output => {
                let p = parse_line(line.bytes, src);
                self.bytes += p.resource.bytes.len();
                match p.problem {
                    Some(why) => self.problems.push((line.number, why)),
                    None => self.ok_resources += 1,
                }
                self.resources.push(p.resource);
            }
            FileKind::Deleted => match deleted_entries(line.bytes) {
                Ok(entries) => {
                    for (t, id) in entries {
                        self.tombstones.entry(t).or_default().push(id);
                    }
                    self.ok_resources += 1;
                }
                Err(why) => self.problems.push((line.number, why)),
            },
            FileKind::Error => match aqueduct_client::fhir::OperationOutcome::parse(line.bytes) {
                Some(o) => {
                    let meaning = outcome_meaning(
                        o.issue
                            .iter()
                            .map(|i| (i.severity.as_deref(), i.code.as_deref())),
                    );
                    self.outcomes.push((line.number, o.summary(), meaning));
                    self.ok_resources += 1;
                }
                None => self.problems.push((
                    line.number,
                    "an error-file line that is not an OperationOutcome".into(),
                )),
            },
        }
    }
}

/// Content decoding of a file body: gzip when the server says so (`Content-Encoding`) or the
/// body starts with the gzip magic bytes; identity otherwise.
struct Reader {
    inflate: Option<flate2::write::MultiGzDecoder<Vec<u8>>>,
    sniffed: bool,
    gzip: bool,
}

impl Reader {
    fn decode(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        use std::io::Write as _;
        if !self.sniffed && !chunk.is_empty() {
            self.sniffed = true;
            if self.gzip || chunk.starts_with(&[0x1f, 0x8b]) {
                self.inflate = Some(flate2::write::MultiGzDecoder::new(Vec::with_capacity(
                    256 * 1024,
                )));
            }
        }
        match &mut self.inflate {
            Some(d) => {
                d.write_all(chunk)?;
                std::mem::swap(d.get_mut(), out);
            }
            None => out.extend_from_slice(chunk),
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        if let Some(d) = &mut self.inflate {
            d.try_finish()?;
            std::mem::swap(d.get_mut(), out);
        }
        Ok(())
    }
}
