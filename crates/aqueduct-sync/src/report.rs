//! What a sync returns and how it fails.

use std::collections::BTreeMap;
use std::time::Duration;

use aqueduct_core::{RunId, RunOutcome, StoreError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How the error of a run stopped for re-authorization starts.
pub const REAUTH_PREFIX: &str = "re-authorization needed";

/// Why a type's data is missing or incomplete. Each is a gap that makes a run partial; see
/// [`crate::outcome`] for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingReason {
    /// 403: outside the granted scopes or forbidden.
    Forbidden,
    /// The server rejects every way of asking (400/404/405/501), or its CapabilityStatement
    /// omits the type and the profile does not say to try it.
    NotSupported,
    /// Transient failures that outlasted the retries (including errors mid-paging).
    FailedAfterRetries,
    /// The token was granted without this type's scope.
    ScopeNotGranted,
    /// The run stopped because the authorization must be renewed.
    ReauthorizationNeeded,
    /// A server-side cap (e.g. `$everything` limited) or a page that came back short.
    Incomplete,
    /// The server said it left data out because the client is not authorized for it (an
    /// OperationOutcome issue `suppressed`, in a 200 Bundle or a 4xx).
    AuthorizationSuppressed,
    /// A 200 page carried an OperationOutcome of severity error or fatal ("results
    /// truncated"): what came is kept, but the type is not known to be whole.
    ErrorOutcome,
    /// A response was refused: a redirect to another origin, or a body past its cap.
    RefusedResponse,
    /// A reference on the same server could not be read.
    ReferenceUnresolved,
    /// An attachment that may be fetched could not be.
    AttachmentNotFetched,
    /// A first sync of the patient brought no Patient resource, or nothing at all.
    EmptyRecord,
    /// The run's deadline passed before this was fetched.
    DeadlineReached,
}

impl MissingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MissingReason::Forbidden => "forbidden",
            MissingReason::NotSupported => "not-supported",
            MissingReason::FailedAfterRetries => "failed-after-retries",
            MissingReason::ScopeNotGranted => "scope-not-granted",
            MissingReason::ReauthorizationNeeded => "reauthorization-needed",
            MissingReason::Incomplete => "incomplete",
            MissingReason::AuthorizationSuppressed => "authorization-suppressed",
            MissingReason::ErrorOutcome => "error-outcome",
            MissingReason::RefusedResponse => "refused-response",
            MissingReason::ReferenceUnresolved => "reference-unresolved",
            MissingReason::AttachmentNotFetched => "attachment-not-fetched",
            MissingReason::EmptyRecord => "empty-record",
            MissingReason::DeadlineReached => "deadline-reached",
        }
    }
}

/// One type of one patient that is not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialType {
    pub patient_id: String,
    pub resource_type: String,
    pub reason: MissingReason,
    pub detail: String,
}

/// Counts for one resource type over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeCounts {
    /// Distinct resources received.
    pub fetched: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Entries received again (duplicates within a search), stored once.
    pub duplicates: u64,
    /// Stored resources no longer at the source, tombstoned (full mode only).
    pub tombstoned: u64,
    /// Resources stored with a parse problem (invalid FHIR, synthetic id).
    pub invalid: u64,
}

/// What a sync did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub run_id: RunId,
    #[serde(serialize_with = "ser_outcome")]
    pub outcome: RunOutcome,
    pub patients: usize,
    pub patients_complete: usize,
    pub by_type: BTreeMap<String, TypeCounts>,
    /// Referenced resources fetched (outside the patients' searches), Binary included.
    pub referenced_fetched: u64,
    /// References to other servers: recorded, not followed.
    pub external_references: u64,
    pub requests: u64,
    pub retries: u64,
    /// 429/503 answers.
    pub throttled: u64,
    pub failed_requests: u64,
    pub bytes: u64,
    pub partial: Vec<PartialType>,
    /// Types not offered: refused when asked although the server neither lists them nor ever
    /// returned them, or listed but outside this client's grant and not configured (outcome
    /// rule 3). Reported, not counted as missing.
    pub skipped_types: Vec<String>,
    /// Problems worth a look that did not make data missing (loops, rejected categories...).
    pub notes: Vec<String>,
    /// Set when the run failed as a whole.
    pub error: Option<String>,
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
}

fn ser_outcome<S: serde::Serializer>(o: &RunOutcome, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(o.as_str())
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl SyncReport {
    /// Total distinct resources received.
    pub fn resources(&self) -> u64 {
        self.by_type.values().map(|c| c.fetched).sum()
    }
}

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("store error during sync: {0}")]
    Store(#[from] StoreError),
    #[error("cannot plan the sync: {0}")]
    Plan(String),
    #[error("fetch failed: {0}")]
    Fetch(#[from] aqueduct_client::FetchError),
    #[error(
        "another sync of connection {connection} is running (it holds the sync lease); \
         not starting a second one side by side"
    )]
    Busy { connection: String },
    /// The run was asked to stop (the process is shutting down). Its outcome is failed with
    /// an `interrupted` error, so the next run of the same kind resumes its checkpoints.
    #[error(
        "interrupted: stopped on request (the process is shutting down) before finishing; what \
         it stored up to its last checkpoint is kept and the next run resumes from there"
    )]
    Stopped,
}
