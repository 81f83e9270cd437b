//! The store's contract, by role: tenants, raw resources, the sync ledger (runs, requests,
//! leases, checkpoints), the credential vault, the audit log and findings, the inbox (inbound
//! messages, the refresh-request queue, schedules), normalized data, monitoring and patient identity. Both
//! backends implement every role; [`Store`] is all of them. A layer that needs one role can
//! say so in its signature (`&dyn Inbox`); one that holds an `Arc<dyn Store>` calls any method
//! without importing anything (a trait object's supertrait methods are always in scope); a
//! concrete backend's methods need `use aqueduct_core::store::prelude::*`.
//!
//! Every method that touches tenant data names the organization (most name the connection
//! too): isolation lives here, not in callers' filters.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreResult;
use crate::model::*;

/// The whole contract: every role, plus where the store lives and its schema version.
#[async_trait]
pub trait Store:
    Tenants
    + Resources
    + Ledger
    + Vault
    + Audit
    + Inbox
    + Normalized
    + Monitoring
    + Access
    + Identities
    + Send
    + Sync
    + 'static
{
    /// Where the store lives, for messages ("/var/lib/aqueduct/store.db", "postgres://host/db").
    fn location(&self) -> &str;

    /// The schema version this store is at.
    async fn schema_version(&self) -> StoreResult<i64>;
}

/// Organizations and connections, and the per-connection overview `status` shows.
#[async_trait]
pub trait Tenants: Send + Sync {
    async fn upsert_organization(&self, org: &Organization) -> StoreResult<()>;
    async fn list_organizations(&self) -> StoreResult<Vec<Organization>>;
    async fn upsert_connection(&self, conn: &ConnectionRecord) -> StoreResult<()>;
    async fn list_connections(&self, organization: &str) -> StoreResult<Vec<ConnectionRecord>>;
    /// One entry per connection of the organization.
    async fn status(&self, organization: &str) -> StoreResult<Vec<ConnectionStatus>>;
}

/// Raw resources exactly as received: writes, reads, history, tombstones.
#[async_trait]
pub trait Resources: Send + Sync {
    /// Writes a batch in one transaction. A resource whose bytes hash the same as the stored
    /// copy is not rewritten (`unchanged`); one whose bytes differ moves the stored copy to
    /// history first (`updated`). A tombstoned resource that comes back is revived.
    async fn write_resources(
        &self,
        conn: &ConnectionRef,
        batch: &[RawResource],
    ) -> StoreResult<WriteSummary>;
    async fn get_resource(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_id: &str,
    ) -> StoreResult<Option<StoredResource>>;
    /// Earlier versions of a resource, oldest first (the current one is not included).
    async fn resource_history(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_id: &str,
    ) -> StoreResult<Vec<StoredResource>>;
    /// A page of resources of one type ordered by logical id, starting after `after_id`.
    /// Tombstoned resources are included only when `include_deleted`.
    async fn list_resources(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        after_id: Option<&str>,
        limit: u32,
        include_deleted: bool,
    ) -> StoreResult<Vec<StoredResource>>;
    /// Logical ids of the live resources of a type held for a patient (for reconciliation).
    async fn patient_resource_ids(
        &self,
        conn: &ConnectionRef,
        patient_id: &str,
        resource_type: &str,
    ) -> StoreResult<Vec<String>>;
    /// Marks resources as deleted upstream. Returns how many were live and are now tombstones.
    async fn tombstone(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_ids: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<u64>;
    async fn count_by_type(&self, conn: &ConnectionRef) -> StoreResult<Vec<TypeCount>>;
    /// The live resources held for a patient, of one type or of all, ordered by type then
    /// logical id: a patient's record in one query (the FHIR facade's `$everything`).
    async fn list_patient_resources(
        &self,
        conn: &ConnectionRef,
        patient_id: &str,
        resource_type: Option<&str>,
    ) -> StoreResult<Vec<StoredResource>>;
    /// A page of a patient's live resources of one type in logical-id order after
    /// `after_id`, with how many there are in all: a search by patient without reading the
    /// whole record.
    async fn patient_resources_page(
        &self,
        conn: &ConnectionRef,
        patient_id: &str,
        resource_type: &str,
        after_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<(Vec<StoredResource>, u64)>;
}

/// Sync runs and every request of them, the leases that coordinate processes, and the checkpoints runs resume from.
#[async_trait]
pub trait Ledger: Send + Sync {
    async fn begin_run(&self, conn: &ConnectionRef, kind: &str) -> StoreResult<RunId>;
    async fn record_requests(
        &self,
        conn: &ConnectionRef,
        run: RunId,
        entries: &[LedgerEntry],
    ) -> StoreResult<()>;
    async fn finish_run(
        &self,
        conn: &ConnectionRef,
        run: RunId,
        outcome: RunOutcome,
        summary: Option<&str>,
        error: Option<&str>,
    ) -> StoreResult<()>;
    /// Takes (or renews) the lease `name` on a connection for `holder` until `ttl` from now.
    /// `false` when another holder has it and it has not expired. Leases coordinate
    /// processes sharing the store (one token refresh at a time); they expire on their own,
    /// so a killed holder blocks others for at most `ttl`.
    async fn acquire_lease(
        &self,
        conn: &ConnectionRef,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool>;
    /// Gives the lease up if `holder` has it.
    async fn release_lease(
        &self,
        conn: &ConnectionRef,
        name: &str,
        holder: &str,
    ) -> StoreResult<()>;
    /// A running sync's sign of life.
    async fn heartbeat_run(&self, conn: &ConnectionRef, run: RunId) -> StoreResult<()>;
    /// Closes as `failed`, with `error`, every run of the connection still `running` whose
    /// last heartbeat (or start, if it never beat) is older than `stale_before`: its process
    /// was killed or lost. Returns their ids.
    async fn close_stale_runs(
        &self,
        conn: &ConnectionRef,
        stale_before: DateTime<Utc>,
        error: &str,
    ) -> StoreResult<Vec<RunId>>;
    async fn get_run(&self, conn: &ConnectionRef, run: RunId) -> StoreResult<Option<SyncRun>>;
    /// Most recent first.
    async fn list_runs(&self, conn: &ConnectionRef, limit: u32) -> StoreResult<Vec<SyncRun>>;
    async fn run_requests(&self, conn: &ConnectionRef, run: RunId)
    -> StoreResult<Vec<LedgerEntry>>;
    async fn run_request_stats(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<RunRequestStats>;
    /// Saves a resume point under a key the caller chooses ("patient/123/Observation").
    async fn save_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
        value: &str,
    ) -> StoreResult<()>;
    async fn load_checkpoint(&self, conn: &ConnectionRef, key: &str)
    -> StoreResult<Option<String>>;
    /// All checkpoints whose key starts with `prefix`, ordered by key.
    async fn list_checkpoints(
        &self,
        conn: &ConnectionRef,
        prefix: &str,
    ) -> StoreResult<Vec<(String, String)>>;
    async fn clear_checkpoints(&self, conn: &ConnectionRef, prefix: &str) -> StoreResult<u64>;
}

/// Credentials as ciphertext (the vault encrypts before it gets here).
#[async_trait]
pub trait Vault: Send + Sync {
    async fn put_secret(
        &self,
        conn: &ConnectionRef,
        name: &str,
        ciphertext: &[u8],
    ) -> StoreResult<()>;
    async fn get_secret(&self, conn: &ConnectionRef, name: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn delete_secret(&self, conn: &ConnectionRef, name: &str) -> StoreResult<bool>;
    /// Every stored secret of an organization, for key rotation: (connection, name, ciphertext).
    async fn list_secrets(&self, organization: &str)
    -> StoreResult<Vec<(String, String, Vec<u8>)>>;
}

/// The auth audit log and findings.
#[async_trait]
pub trait Audit: Send + Sync {
    async fn record_auth_event(&self, conn: &ConnectionRef, event: &AuthEvent) -> StoreResult<()>;
    /// Most recent first.
    async fn list_auth_events(
        &self,
        conn: &ConnectionRef,
        limit: u32,
    ) -> StoreResult<Vec<AuthEvent>>;
    async fn record_finding(&self, conn: &ConnectionRef, finding: &Finding) -> StoreResult<()>;
    /// Most recent first.
    async fn list_findings(&self, conn: &ConnectionRef, limit: u32) -> StoreResult<Vec<Finding>>;
    /// Most recent first, with their ids and acknowledgements; `acknowledged` keeps only the
    /// acknowledged (`Some(true)`) or the open ones (`Some(false)`).
    async fn list_finding_records(
        &self,
        conn: &ConnectionRef,
        acknowledged: Option<bool>,
        limit: u32,
    ) -> StoreResult<Vec<FindingRecord>>;
    /// Acknowledges finding `id` of the connection. The first acknowledgement stands: a later
    /// one changes nothing and gets the record as it is. None when the connection has no such
    /// finding (another connection's or organization's id included).
    async fn acknowledge_finding(
        &self,
        conn: &ConnectionRef,
        id: i64,
        ack: &Acknowledgement,
    ) -> StoreResult<Option<FindingRecord>>;
}

/// Inbound event messages, the refresh-request work queue and schedule slots.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Stores messages in ONE transaction, committed before this returns, so a caller may
    /// acknowledge them afterwards. A (sender, control id, content hash) already stored is
    /// reported as a duplicate and not stored again (a message stored before schema 9, without
    /// a hash, matches a resend with the same bytes). The same (sender, control id) with other
    /// content is a new message: it is stored, and a `control-id-reused` finding naming both
    /// messages is recorded in the same transaction under the message's connection.
    async fn store_inbound_messages(
        &self,
        organization: &str,
        messages: &[InboundMessage],
    ) -> StoreResult<Vec<InboundReceipt>>;
    /// Records, in ONE transaction, the outcome of converting stored messages: each message
    /// not yet processed is marked processed (with its error, if any) and its refresh
    /// requests are queued. A crash leaves all of it or none, so a message is never marked
    /// without its refresh requests; a message already processed is left alone, so a second
    /// conversion never queues them twice.
    async fn complete_inbound(
        &self,
        organization: &str,
        outcomes: &[InboundOutcome],
    ) -> StoreResult<()>;
    /// Records converted messages in ONE transaction, in the order given: each message not yet
    /// processed has its resources written under its connection (exactly as
    /// [`Resources::write_resources`] writes them: unchanged bytes are not rewritten, changed
    /// ones move the stored copy to history first), is marked processed (with its error, if
    /// any) and has its refresh requests queued. A crash leaves all of it or none, so a message
    /// is never marked without its resources and refresh requests; a message already processed
    /// is left alone, resources included. Returns what the resource writes did.
    async fn complete_conversions(
        &self,
        organization: &str,
        conversions: &[InboundConversion],
    ) -> StoreResult<WriteSummary>;
    /// Records that a stored message was turned into resources and events (or why not).
    async fn mark_inbound_processed(
        &self,
        organization: &str,
        id: i64,
        error: Option<&str>,
    ) -> StoreResult<()>;
    /// How many messages the organization holds: pending, converted, unconverted.
    async fn inbound_counts(&self, organization: &str) -> StoreResult<InboundCounts>;
    /// Messages in arrival order, starting after `after_id`.
    async fn list_inbound_messages(
        &self,
        organization: &str,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<StoredInboundMessage>>;
    async fn enqueue_refresh(
        &self,
        organization: &str,
        request: &RefreshRequest,
    ) -> StoreResult<i64>;
    /// Pending (not yet handled) requests, oldest first, claimed or not.
    async fn list_refresh_requests(
        &self,
        organization: &str,
        limit: u32,
    ) -> StoreResult<Vec<(i64, RefreshRequest, DateTime<Utc>)>>;
    /// Claims, in one transaction, the oldest pending request that nobody holds (or whose
    /// holder's lease expired) and may run now, together with every other such request for
    /// the same patient and connection, for `holder` until `ttl` from now. None when there is
    /// no work. Two holders never get the same request while a lease lasts.
    async fn claim_refresh(
        &self,
        organization: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<Option<ClaimedRefresh>>;
    /// Extends the claim; `false` when `holder` no longer has it (it expired and was taken).
    async fn renew_refresh_claim(
        &self,
        organization: &str,
        ids: &[i64],
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool>;
    /// Gives claimed requests back to the queue, not to be claimed again before `retry_in`
    /// has passed; `failed_attempt` counts the claim as an attempt that ended in an error.
    async fn release_refresh_claim(
        &self,
        organization: &str,
        ids: &[i64],
        holder: &str,
        retry_in: std::time::Duration,
        failed_attempt: bool,
    ) -> StoreResult<()>;
    /// Closes claimed requests with their result, once: `false` (and nothing written) when
    /// `holder` no longer holds them.
    async fn finish_refresh(
        &self,
        organization: &str,
        ids: &[i64],
        holder: &str,
        result: &RefreshResult,
    ) -> StoreResult<bool>;
    /// The most recent requests, pending or done, newest first.
    async fn recent_refreshes(
        &self,
        organization: &str,
        limit: u32,
    ) -> StoreResult<Vec<RefreshRecord>>;
    /// One request of the organization, however old; None for another organization's id.
    async fn get_refresh(&self, organization: &str, id: i64) -> StoreResult<Option<RefreshRecord>>;
    /// The slot the connection's schedule last fired for.
    async fn schedule_last_due(&self, conn: &ConnectionRef) -> StoreResult<Option<DateTime<Utc>>>;
    /// Fires the schedule's slot `due`, once: if the last slot still is `previous`
    /// (compare-and-set), moves it to `due` and queues `request` in the same transaction, and
    /// returns the request's id; None for every other caller racing for the slot.
    async fn fire_schedule(
        &self,
        conn: &ConnectionRef,
        previous: Option<DateTime<Utc>>,
        due: DateTime<Utc>,
        request: &RefreshRequest,
    ) -> StoreResult<Option<i64>>;
}

/// Normalized rows derived from raw (rebuildable), code mappings, the identifier index.
#[async_trait]
pub trait Normalized: Send + Sync {
    /// Replaces, in one transaction, all normalized rows of each given source resource.
    async fn write_normalized(
        &self,
        conn: &ConnectionRef,
        sources: &[NormalizedSource],
        rules_version: &str,
    ) -> StoreResult<()>;
    /// The stamp of each given source that has normalized rows (sources without rows are
    /// absent): lets a rebuild skip what is already derived from the same raw and rules.
    async fn normalized_stamps(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_ids: &[String],
    ) -> StoreResult<std::collections::HashMap<String, NormalizedStamp>>;
    /// Rows of one kind, optionally for one patient, ordered by effective time then source.
    async fn list_normalized(
        &self,
        conn: &ConnectionRef,
        kind: &str,
        patient_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredNormalized>>;
    /// Every normalized row of the given sources of one type, by source then ordinal (the
    /// facade's clean view of a page of resources).
    async fn normalized_of(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_ids: &[String],
    ) -> StoreResult<Vec<StoredNormalized>>;
    /// A patient's page of one type, as [`Resources::patient_resources_page`] reads it, with
    /// the normalized rows of the page's resources, as [`Normalized::normalized_of`] reads
    /// them: the facade's clean search by patient in one trip to the store.
    async fn patient_page_with_normalized(
        &self,
        conn: &ConnectionRef,
        patient_id: &str,
        resource_type: &str,
        after_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<(Vec<StoredResource>, u64, Vec<StoredNormalized>)>;
    /// Codes resolved as "unmapped", grouped with their counts, most frequent first.
    async fn unmapped_codes(
        &self,
        organization: &str,
        connection: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<UnmappedCode>>;
    async fn put_code_mapping(
        &self,
        conn: &ConnectionRef,
        mapping: &CodeMapping,
    ) -> StoreResult<()>;
    async fn list_code_mappings(&self, conn: &ConnectionRef) -> StoreResult<Vec<CodeMapping>>;
    /// Resources of a type, across the organization's connections, whose normalized form
    /// carries the identifier `system|value`.
    async fn find_by_identifier(
        &self,
        organization: &str,
        resource_type: &str,
        system: &str,
        value: &str,
    ) -> StoreResult<Vec<IdentifiedResource>>;
}

/// What silent-failure detection reads and writes: run totals, request windows, freshness, alerts.
#[async_trait]
pub trait Monitoring: Send + Sync {
    /// Per resource type totals of a run, from its ledger.
    async fn run_type_totals(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<Vec<RunTypeTotals>>;
    /// Resources a run returned per patient, from its ledger.
    async fn run_patient_totals(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<Vec<(String, u64)>>;
    /// Ledger entries of an organization at or after `since`, oldest first, with their
    /// connection (for metrics and alert windows).
    async fn requests_since(
        &self,
        organization: &str,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(String, LedgerEntry)>>;
    /// Newest `meta.lastUpdated` and fetch time per resource type.
    async fn freshness(&self, conn: &ConnectionRef) -> StoreResult<Vec<TypeFreshness>>;
    /// Creates or updates an alert, keyed by (connection, rule, subject).
    async fn upsert_alert(&self, organization: &str, alert: &Alert) -> StoreResult<()>;
    async fn list_alerts(&self, organization: &str, only_firing: bool) -> StoreResult<Vec<Alert>>;
}

/// Who may read: API keys (hashed, bound to one organization), and the log of every read of
/// patient data through the API or the FHIR facade.
#[async_trait]
pub trait Access: Send + Sync {
    /// Stores a new key. An existing id is an error, never an overwrite (ids are random).
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    /// The key with this id, revoked or not (the caller decides what a revoked key means).
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>>;
    /// The organization's keys, newest first.
    async fn list_api_keys(&self, organization: &str) -> StoreResult<Vec<ApiKey>>;
    /// Revokes a key of the organization; false when it has no such live key.
    async fn revoke_api_key(
        &self,
        organization: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Appends access events in one transaction (the server batches them: group commit).
    async fn record_access(&self, events: &[AccessEvent]) -> StoreResult<()>;
    /// The organization's access events, newest first, optionally for one patient and
    /// before an id (paging).
    async fn list_access(
        &self,
        organization: &str,
        patient: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredAccessEvent>>;
}

/// Patient identity per organization: persons (ids never reused), each record's person,
/// identity events with their evidence, reviewer decisions (who, when), hard evidence from
/// sources, the review queue and the trained match model. The store keeps evidence and models
/// as JSON it never reads; what they mean is the matcher's business.
#[async_trait]
pub trait Identities: Send + Sync {
    /// Everything the organization's identity is rebuilt from.
    async fn identity_state(&self, organization: &str) -> StoreResult<IdentityState>;
    /// Writes one round of changes in ONE transaction: all of it or none. Two processes that
    /// handed out the same person id cannot both commit: the second fails and writes nothing.
    async fn apply_identity(&self, organization: &str, update: &IdentityUpdate) -> StoreResult<()>;
    /// A person with its records; None when it has none (absorbed by a merge) or is not the
    /// organization's.
    async fn person(&self, organization: &str, person: i64) -> StoreResult<Option<PersonSummary>>;
    /// The person of a record.
    async fn person_of_record(&self, organization: &str, record: &str) -> StoreResult<Option<i64>>;
    /// Persons with records, in id order after `after`.
    async fn list_persons(
        &self,
        organization: &str,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<PersonSummary>>;
    /// Identity events, newest first, optionally only those naming a person, before an id.
    async fn identity_events(
        &self,
        organization: &str,
        person: Option<i64>,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredIdentityEvent>>;
    /// Pairs awaiting a reviewer, strongest first.
    async fn review_queue(&self, organization: &str, limit: u32) -> StoreResult<Vec<ReviewPair>>;
    /// The connections of the organization that hold Patient resources, registered or not
    /// (an HL7 facility's `hl7-...` connection is not), in name order: where identity reads
    /// its records.
    async fn patient_sources(&self, organization: &str) -> StoreResult<Vec<String>>;
    /// Reviewer decisions, newest first (the audit).
    async fn match_decisions(
        &self,
        organization: &str,
        limit: u32,
    ) -> StoreResult<Vec<MatchDecision>>;
}

/// The role traits, for `use aqueduct_core::store::prelude::*` where a store's methods are
/// called.
pub mod prelude {
    pub use super::{
        Access, Audit, Identities, Inbox, Ledger, Monitoring, Normalized, Resources, Store,
        Tenants, Vault,
    };
}
