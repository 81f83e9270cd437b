//! The values the store takes and gives back. None of them interprets FHIR: a resource is a
//! type name, a logical id and bytes; what those bytes mean is the caller's business.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One connection of one organization: the unit every tenant-scoped query names.
///
/// There is deliberately no way to query resources without one of these (or at least an
/// organization name): cross-organization reads cannot happen by forgetting a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionRef {
    pub organization: String,
    pub connection: String,
}

impl ConnectionRef {
    pub fn new(organization: impl Into<String>, connection: impl Into<String>) -> Self {
        Self {
            organization: organization.into(),
            connection: connection.into(),
        }
    }
}

impl std::fmt::Display for ConnectionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.organization, self.connection)
    }
}

/// An organization (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    pub name: String,
    pub display_name: Option<String>,
}

/// A connection as registered in the store (the configuration file is the source of truth;
/// the store keeps a copy so that `status` and the ledger can name it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub organization: String,
    pub name: String,
    pub base_url: String,
    pub profile: String,
}

/// Whether the bytes of a raw resource parsed, as judged by whoever fetched them.
/// The store keeps every resource whatever its status: nothing is dropped for being invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum ParseStatus {
    /// Valid JSON that looked like the FHIR resource it claims to be.
    Ok,
    /// Valid JSON, but not valid FHIR (missing resourceType, wrong shapes...).
    InvalidFhir(String),
    /// Not even JSON.
    InvalidJson(String),
}

impl ParseStatus {
    pub fn code(&self) -> &'static str {
        match self {
            ParseStatus::Ok => "ok",
            ParseStatus::InvalidFhir(_) => "invalid-fhir",
            ParseStatus::InvalidJson(_) => "invalid-json",
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            ParseStatus::Ok => None,
            ParseStatus::InvalidFhir(d) | ParseStatus::InvalidJson(d) => Some(d),
        }
    }

    /// The status back from its stored parts ([`Self::code`] and [`Self::detail`]).
    pub fn from_parts(code: &str, detail: Option<String>) -> Self {
        match code {
            "ok" => ParseStatus::Ok,
            "invalid-json" => ParseStatus::InvalidJson(detail.unwrap_or_default()),
            _ => ParseStatus::InvalidFhir(detail.unwrap_or_default()),
        }
    }
}

/// A resource exactly as received, with where and when it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResource {
    pub resource_type: String,
    pub logical_id: String,
    /// `meta.versionId` as the source gave it.
    pub version_id: Option<String>,
    /// `meta.lastUpdated` as the source gave it (the source's clock, kept as text).
    pub last_updated: Option<String>,
    /// The URL of the request that returned it.
    pub source_url: String,
    /// The patient whose record this resource was fetched for, when the fetcher knows it.
    pub patient_id: Option<String>,
    pub parse_status: ParseStatus,
    pub fetched_at: DateTime<Utc>,
    /// The bytes, never rewritten.
    pub bytes: Vec<u8>,
}

/// A resource as stored: the raw record plus the store's own bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    pub connection: ConnectionRef,
    pub resource_type: String,
    pub logical_id: String,
    pub version_id: Option<String>,
    pub last_updated: Option<String>,
    pub source_url: String,
    pub patient_id: Option<String>,
    pub parse_status: ParseStatus,
    pub fetched_at: DateTime<Utc>,
    /// Hex SHA-256 of `bytes`.
    pub content_hash: String,
    /// How many distinct contents the store has seen for this key (1 for the first).
    pub version_seq: i64,
    /// Set when the source no longer has the resource (tombstone); the bytes are kept.
    pub deleted_at: Option<DateTime<Utc>>,
    pub bytes: Vec<u8>,
}

/// What one batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSummary {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl WriteSummary {
    pub fn add(&mut self, other: WriteSummary) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

/// Resources of one type held for a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCount {
    pub resource_type: String,
    pub live: u64,
    pub deleted: u64,
    pub invalid: u64,
}

/// How a sync run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    Running,
    Complete,
    Partial,
    Failed,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Complete => "complete",
            RunOutcome::Partial => "partial",
            RunOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunOutcome::Running,
            "complete" => RunOutcome::Complete,
            "partial" => RunOutcome::Partial,
            "failed" => RunOutcome::Failed,
            _ => return None,
        })
    }
}

/// Identifies a sync run in the ledger.
pub type RunId = i64;

/// One sync run as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRun {
    pub id: RunId,
    pub connection: ConnectionRef,
    /// What was asked for, e.g. "full", "incremental", "patient:123".
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: RunOutcome,
    /// Free-form JSON written by the sync engine at the end (what is missing and why...).
    pub summary: Option<String>,
    pub error: Option<String>,
    /// Last sign of life while running (`None` before the first heartbeat).
    pub heartbeat_at: Option<DateTime<Utc>>,
}

impl SyncRun {
    /// How long a `running` run has been silent (since its last heartbeat, or its start);
    /// `None` once it has finished.
    pub fn silent_for(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        (self.outcome == RunOutcome::Running)
            .then(|| now - self.heartbeat_at.unwrap_or(self.started_at))
    }
}

/// One HTTP request made during a sync: every request lands here, success or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub at: DateTime<Utc>,
    pub method: String,
    /// The request with patient and cursor values replaced by placeholders, for aggregation.
    pub url_template: String,
    /// The request URL as sent.
    pub url: String,
    pub resource_type: Option<String>,
    pub patient_id: Option<String>,
    /// HTTP status, or None when no response came (connection error, timeout).
    pub status: Option<u16>,
    pub duration_ms: f64,
    pub bytes: u64,
    pub resources: u64,
    /// A short machine-readable cause when the request did not succeed ("timeout", "http-429",
    /// "invalid-json", ...).
    pub error_kind: Option<String>,
    /// False when a page came back short of what it should hold (truncated, error mid-paging).
    pub page_complete: bool,
    /// 1 for the first try, 2 for the first retry...
    pub attempt: u32,
}

/// Aggregates over a run's requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRequestStats {
    pub requests: u64,
    pub errors: u64,
    pub throttled: u64,
    pub retries: u64,
    pub bytes: u64,
    pub resources: u64,
}

/// An authorization event, without secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthEvent {
    pub at: DateTime<Utc>,
    /// "authorize", "token-exchange", "refresh", "revoke", "backend-token", "ehr-launch"...
    pub event: String,
    /// "success" or "failure".
    pub outcome: String,
    /// Why, in words; never a token or secret.
    pub reason: Option<String>,
}

/// Something the monitoring layer should look at (a scope granted narrower than asked, a
/// resource type that dropped to zero...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub at: DateTime<Utc>,
    pub run_id: Option<RunId>,
    /// Machine-readable kind, e.g. "scope-narrowed", "empty-type".
    pub kind: String,
    /// "info", "warning" or "critical".
    pub severity: String,
    pub resource_type: Option<String>,
    pub detail: String,
}

/// Who acknowledged a finding, when, and why. The first acknowledgement stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub by: String,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
}

/// A finding as the store holds it: its id, and whether someone has acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRecord {
    pub id: i64,
    #[serde(flatten)]
    pub finding: Finding,
    pub acknowledged: Option<Acknowledgement>,
}

/// Per-connection overview, as `aqueduct status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    pub connection: ConnectionRef,
    pub base_url: Option<String>,
    pub profile: Option<String>,
    pub types: Vec<TypeCount>,
    pub last_run: Option<SyncRun>,
    pub last_run_stats: Option<RunRequestStats>,
    /// Requests that failed, over all runs.
    pub error_count: u64,
    /// Findings nobody has acknowledged yet.
    pub findings: u64,
}

/// A message received from an event feed (HL7 v2 over MLLP), kept exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Who sent it (for HL7 v2: sending application and facility).
    pub sender: String,
    /// The sender's message control id. It is not an identity on its own (senders reset their
    /// counters, test systems reuse `MSG00001`): a resend is the same sender, the same control
    /// id AND the same `content_hash`.
    pub control_id: String,
    /// What makes two messages with one control id the same message, computed by the feed
    /// (for HL7 v2: the segments, without MSH-7 when the sender restamps its resends).
    pub content_hash: String,
    /// The connection that findings about this message are filed under (e.g. `hl7-HOSP`).
    pub connection: String,
    pub message_type: String,
    pub received_at: DateTime<Utc>,
    pub bytes: Vec<u8>,
}

/// What storing an inbound message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundReceipt {
    pub id: i64,
    /// True when the same (sender, control id, content) was already stored: acknowledge it
    /// again, process it once.
    pub duplicate: bool,
    /// A new message whose (sender, control id) an earlier, different message already used:
    /// the id of the latest such message. Both are kept, and a `control-id-reused` finding
    /// naming both was recorded in the same transaction.
    pub reuses_control_id_of: Option<i64>,
}

/// The kind of finding recorded when a sender reuses a control id for a different message.
pub const FINDING_CONTROL_ID_REUSED: &str = "control-id-reused";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInboundMessage {
    pub id: i64,
    pub sender: String,
    pub control_id: String,
    /// None for messages stored before schema version 9 (they are compared by their bytes).
    pub content_hash: Option<String>,
    pub message_type: String,
    pub received_at: DateTime<Utc>,
    pub bytes: Vec<u8>,
    pub processed_at: Option<DateTime<Utc>>,
    /// Why the message could not be converted (it is kept, marked unconverted).
    pub process_error: Option<String>,
}

/// How many inbound messages an organization holds, by conversion state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundCounts {
    pub total: u64,
    /// Stored, not yet converted (the conversion backlog).
    pub pending: u64,
    pub converted: u64,
    /// Stored and acknowledged, but not turned into resources; the reason is on the message.
    pub unconverted: u64,
}

/// The detail of a `control-id-reused` finding.
pub fn control_id_reused_detail(
    m: &InboundMessage,
    new_id: i64,
    earlier_id: i64,
    earlier_received_at: &str,
) -> String {
    format!(
        "{sender} reused control id {control:?} for a different message: message {new_id} \
         ({mtype}, received {at}) is not a resend of message {earlier_id} (received \
         {earlier_received_at}); both are stored and acknowledged",
        sender = m.sender,
        control = m.control_id,
        mtype = m.message_type,
        at = m.received_at.to_rfc3339(),
    )
}

/// A request to refresh a patient's data, raised by an event (an HL7 v2 message, a FHIR
/// Subscription notification, a schedule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    /// How the event names the patient: `system|value` of an identifier (an MRN), or
    /// `Patient/<id>` at the named connection. None refreshes the whole connection (a
    /// schedule firing).
    pub patient_key: Option<String>,
    /// The connection to refresh, when the event names one; otherwise all that hold the patient.
    pub connection: Option<String>,
    /// Why, e.g. "hl7:ADT^A08".
    pub reason: String,
    /// Where the event came from, e.g. "mllp://LAB^HOSP/123".
    pub source: String,
}

/// Pending refresh requests taken by one holder: the oldest pending request and every other
/// pending one for the same patient and connection (coalesced: one sync serves them all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedRefresh {
    /// The requests claimed, oldest first; the first is the one the others coalesce into.
    pub ids: Vec<i64>,
    pub request: RefreshRequest,
    pub requested_at: DateTime<Utc>,
    /// How many earlier claims of the first request ended in an error.
    pub attempts: u32,
}

/// How a refresh request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefreshOutcome {
    /// Every sync it caused completed.
    Complete,
    /// A sync it caused was partial (its gaps are in the run's report).
    Partial,
    /// It could not be done (after its retries), or a sync it caused failed.
    Failed,
    /// No connection of the organization holds a patient with that identifier.
    Unmatched,
}

impl RefreshOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Complete => "complete",
            RefreshOutcome::Partial => "partial",
            RefreshOutcome::Failed => "failed",
            RefreshOutcome::Unmatched => "unmatched",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "complete" => RefreshOutcome::Complete,
            "partial" => RefreshOutcome::Partial,
            "failed" => RefreshOutcome::Failed,
            "unmatched" => RefreshOutcome::Unmatched,
            _ => return None,
        })
    }
}

/// The result a holder records when it closes claimed requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshResult {
    pub outcome: RefreshOutcome,
    /// What happened, for people ("synced Patient/p1 at acme/epic: complete").
    pub detail: String,
    /// The sync runs it caused.
    pub run_ids: Vec<RunId>,
}

/// A refresh request as the queue holds it, for `status` and the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub id: i64,
    pub request: RefreshRequest,
    pub requested_at: DateTime<Utc>,
    /// `pending`, `claimed` or `done`.
    pub state: String,
    pub claimed_by: Option<String>,
    pub attempts: u32,
    pub handled_at: Option<DateTime<Utc>>,
    pub outcome: Option<RefreshOutcome>,
    pub detail: Option<String>,
    pub run_ids: Vec<RunId>,
    pub coalesced_into: Option<i64>,
}

/// A resource found by one of its business identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifiedResource {
    pub connection: String,
    pub logical_id: String,
}

/// What converting one stored inbound message produced: its refresh requests, or why it
/// could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundOutcome {
    pub id: i64,
    pub error: Option<String>,
    pub refresh: Vec<RefreshRequest>,
}

/// A converted inbound message as [`crate::Inbox::complete_conversions`] records it: its
/// outcome and the resources it converted to, filed under `connection` of the message's
/// organization (none when conversion failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundConversion {
    pub outcome: InboundOutcome,
    pub connection: String,
    pub resources: Vec<RawResource>,
}

/// One normalized row derived from a raw resource (a blood-pressure panel gives two). The store
/// keeps the columns it indexes and the row itself as JSON; what the JSON holds is the
/// normalize layer's business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalizedRecord {
    /// Position among the rows derived from the same resource.
    pub ordinal: u32,
    /// "observation", "condition", "medication", "patient", "encounter"...
    pub kind: String,
    pub patient_id: Option<String>,
    /// UTC RFC 3339 instant, for ordering.
    pub effective: Option<String>,
    /// The code the row ended up with.
    pub code_system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
    /// How the code was obtained: "standard", "mapped", "inferred", "unmapped" or "none".
    pub resolution: String,
    /// The code (or text) as the source gave it.
    pub source_system: Option<String>,
    pub source_code: Option<String>,
    pub source_text: Option<String>,
    /// The whole normalized row, as JSON.
    pub data: String,
}

/// All the normalized rows of one raw resource, with its lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedSource {
    pub resource_type: String,
    pub logical_id: String,
    /// The content hash of the raw version these rows were derived from.
    pub content_hash: String,
    pub records: Vec<NormalizedRecord>,
    /// The resource's business identifiers as (system, value), indexed for lookup
    /// ([`crate::Store::find_by_identifier`]) and replaced with the rows.
    pub identifiers: Vec<(String, String)>,
}

/// A normalized row as stored, with its lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNormalized {
    pub resource_type: String,
    pub logical_id: String,
    pub content_hash: String,
    pub rules_version: String,
    #[serde(flatten)]
    pub record: NormalizedRecord,
}

/// What a source's normalized rows were derived from: the raw content and the rules (the
/// fingerprint of rules, tables and mappings). Equal stamps mean re-deriving is a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalizedStamp {
    pub content_hash: String,
    pub rules_version: String,
    /// The patient of the source's first row: where the rows were filed last time.
    pub patient_id: Option<String>,
}

/// A source code no rule could resolve, with how often it occurs: the review queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmappedCode {
    pub connection: String,
    pub kind: String,
    pub source_system: Option<String>,
    pub source_code: Option<String>,
    pub source_text: Option<String>,
    pub count: u64,
}

/// A per-connection mapping of a local code to a standard one, maintained by the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeMapping {
    pub source_system: String,
    pub source_code: String,
    pub target_system: String,
    pub target_code: String,
    pub target_display: Option<String>,
}

/// What one run got for one resource type, summed from its ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTypeTotals {
    pub resource_type: String,
    pub requests: u64,
    pub resources: u64,
    /// Requests that did not succeed.
    pub errors: u64,
    /// Pages that came back short (truncated, error mid-paging).
    pub incomplete_pages: u64,
}

/// How fresh the data of one type is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeFreshness {
    pub resource_type: String,
    /// The newest `meta.lastUpdated` held (the source's clock, as text).
    pub newest_last_updated: Option<String>,
    /// When Aqueduct last received a resource of this type.
    pub newest_fetched_at: Option<DateTime<Utc>>,
}

/// An alert raised by a monitoring rule; kept so that alerts are de-duplicated and resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub connection: String,
    /// The rule that raised it ("error-rate", "p95-latency", "type-dropped-to-zero"...).
    pub rule: String,
    /// What it is about within the connection (a resource type, a host, "" for the whole).
    pub subject: String,
    /// "firing" or "resolved".
    pub state: String,
    pub severity: String,
    pub detail: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The state the sinks were last told about, so each transition is sent once.
    pub notified_state: Option<String>,
}

/// A duration that cannot be stored (NaN, infinite, negative) is recorded as 0 rather than
/// failing the ledger write: the request still happened and must be counted.
pub fn finite(ms: f64) -> f64 {
    if ms.is_finite() && ms >= 0.0 { ms } else { 0.0 }
}

/// What an API key may do. Ordered: `Admin` may do what `Write` may, `Write` what `Read` may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiScope {
    /// Read records, runs, findings and the audit log of the key's organization.
    Read,
    /// Also start syncs, raise refresh requests, map codes, acknowledge findings.
    Write,
    /// Also manage the organization's API keys.
    Admin,
}

impl ApiScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiScope::Read => "read",
            ApiScope::Write => "write",
            ApiScope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(ApiScope::Read),
            "write" => Some(ApiScope::Write),
            "admin" => Some(ApiScope::Admin),
            _ => None,
        }
    }
}

/// An API key as stored: never the secret itself, only its SHA-256 (the secret is 256 random
/// bits, so a fast hash is as strong as a slow one and keeps every request cheap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The public half of the key (`aqk_{id}_{secret}`), shown in lists and the audit log.
    pub id: String,
    /// The one organization the key is bound to.
    pub organization: String,
    pub scope: ApiScope,
    pub label: Option<String>,
    /// Hex SHA-256 of the secret half.
    #[serde(skip_serializing)]
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One read of patient data through the API or the FHIR facade: who read what, of whom, when
/// and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEvent {
    pub at: DateTime<Utc>,
    pub organization: String,
    /// Who: `api-key:{id}` or `jwt:{issuer}#{subject}`.
    pub principal: String,
    /// "read", "search", "everything", "api"...
    pub action: String,
    /// The route as matched (`/fhir/{org}/{type}/{id}`), not the URL with its values.
    pub route: String,
    /// The patient whose data was read (a facade id), when the read names one.
    pub patient: Option<String>,
    /// The resource types returned.
    pub resource_types: Vec<String>,
    /// How many resources were returned.
    pub count: u64,
    pub client_addr: Option<String>,
}

/// An access event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAccessEvent {
    pub id: i64,
    #[serde(flatten)]
    pub event: AccessEvent,
}

/// What a reviewer (or a source's hard evidence) says about two patient records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchVerdict {
    Link,
    Unlink,
}

impl MatchVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchVerdict::Link => "link",
            MatchVerdict::Unlink => "unlink",
        }
    }

    pub fn parse(s: &str) -> Option<MatchVerdict> {
        match s {
            "link" => Some(MatchVerdict::Link),
            "unlink" => Some(MatchVerdict::Unlink),
            _ => None,
        }
    }
}

/// A reviewer's decision on a pair of patient records (record ids are the matcher's,
/// `{connection}/Patient/{id}`), with who and when: the audit of a person's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchDecision {
    pub a: String,
    pub b: String,
    pub verdict: MatchVerdict,
    /// `api-key:{id}`, `jwt:{issuer}#{subject}`, `cli:{user}`.
    pub reviewer: String,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
}

/// Hard evidence from a source that two records are one person (an HL7 merge or link, a FHIR
/// `Patient.link`), with what said so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForcedMatch {
    pub a: String,
    pub b: String,
    /// e.g. `HL7 ADT^A40 (Linkage merge-1-2)`, `FHIR Patient.link replaced-by`.
    pub source: String,
    pub at: DateTime<Utc>,
}

/// Something that happened to persons (created, joined, merged, split), with its evidence as
/// the matcher wrote it (JSON the store keeps without reading).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityEventRecord {
    pub at: DateTime<Utc>,
    /// `created`, `joined`, `merged`, `split`.
    pub kind: String,
    /// The persons it concerns, the kept one first.
    pub persons: Vec<i64>,
    /// The records it moved or linked.
    pub records: Vec<String>,
    /// The whole event with its evidence, JSON.
    pub detail: String,
}

/// An identity event as stored, with its id (order of recording).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredIdentityEvent {
    pub id: i64,
    pub event: IdentityEventRecord,
}

/// A pair of records whose score lies between the review and the link thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewPair {
    /// The smaller record id of the two.
    pub a: String,
    pub b: String,
    /// The total weight, bits.
    pub weight: f64,
    /// The evidence (each comparison's weight and the total), JSON.
    pub evidence: String,
    pub queued_at: DateTime<Utc>,
}

/// A record's person, and the content hash of the record as last matched (a record whose
/// bytes are unchanged is not matched again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub record: String,
    pub person: i64,
    pub content_hash: String,
}

/// An organization's trained match model (JSON the store keeps without reading).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMatchModel {
    pub model: String,
    /// How many records it was trained on.
    pub records: u64,
    pub trained_at: DateTime<Utc>,
}

/// Everything an organization's identity is rebuilt from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IdentityState {
    /// The next person id to hand out (ids are never reused).
    pub next_person: i64,
    pub records: Vec<IdentityRecord>,
    /// Oldest first.
    pub decisions: Vec<MatchDecision>,
    /// Oldest first.
    pub forced: Vec<ForcedMatch>,
    pub model: Option<StoredMatchModel>,
}

/// One round of identity changes, written in one transaction.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IdentityUpdate {
    /// Person ids handed out in this round; one already stored (another process handed it
    /// out first) fails the whole update.
    pub new_persons: Vec<i64>,
    /// Records' persons and hashes (inserted or replaced).
    pub records: Vec<IdentityRecord>,
    pub events: Vec<IdentityEventRecord>,
    /// New reviewer decisions; each takes its pair out of the review queue.
    pub decisions: Vec<MatchDecision>,
    /// New forced links (one already stored with the same source is kept once).
    pub forced: Vec<ForcedMatch>,
    /// Records matched again: their pairs leave the review queue before `review` is added.
    pub review_cleared_for: Vec<String>,
    pub review: Vec<ReviewPair>,
    pub model: Option<StoredMatchModel>,
}

impl IdentityUpdate {
    pub fn is_empty(&self) -> bool {
        self.new_persons.is_empty()
            && self.records.is_empty()
            && self.events.is_empty()
            && self.decisions.is_empty()
            && self.forced.is_empty()
            && self.review_cleared_for.is_empty()
            && self.review.is_empty()
            && self.model.is_none()
    }
}

/// A person of an organization with its records, in record-id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonSummary {
    pub person: i64,
    pub records: Vec<String>,
}
