//! The scale-out backend: PostgreSQL through a deadpool connection pool.
//!
//! Same tables and semantics as SQLite (see [`crate::schema`]), with native types
//! (`timestamptz`, `bytea`, `boolean`). Batches are written with a handful of set-based
//! statements over `UNNEST`ed arrays rather than one round trip per resource, which is what
//! makes PostgreSQL keep up with a sync on loopback.

mod access;
mod identity;
mod inbound;
mod migrate;
mod monitor;
mod normalized;
mod queue;
mod resources;
mod tenant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use aqueduct_core::error::{StoreError, StoreResult};
use aqueduct_core::model::*;
use aqueduct_core::store::prelude::*;

pub struct PgStore {
    location: String,
    pool: Pool,
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl PgStore {
    /// Connects, checks the server answers, and migrates the schema.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let location = redact(url);
        let config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| StoreError::Connect {
                    location: location.clone(),
                    cause: format!("bad URL: {e}"),
                })?;
        let mut config = config;
        config.connect_timeout(std::time::Duration::from_secs(10));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .build()
            .map_err(|e| StoreError::Connect {
                location: location.clone(),
                cause: e.to_string(),
            })?;
        let store = Self { location, pool };
        let mut client = store.client().await?;
        migrate::migrate(&mut client, &store.location).await?;
        Ok(store)
    }

    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| StoreError::Connect {
            location: self.location.clone(),
            cause: match e {
                deadpool_postgres::PoolError::Backend(be) => describe(&be),
                other => other.to_string(),
            },
        })
    }
}

/// tokio-postgres' Display hides the server's message behind "db error"; show it.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

pub(crate) fn map_err(
    location: &str,
    operation: &'static str,
    e: tokio_postgres::Error,
) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == tokio_postgres::error::SqlState::DISK_FULL {
            return StoreError::DiskFull {
                path: location.to_string(),
            };
        }
        if *code == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION {
            return StoreError::ReadOnly {
                path: location.to_string(),
                cause: db.message().to_string(),
            };
        }
    }
    if e.is_closed() {
        return StoreError::Connect {
            location: location.to_string(),
            cause: describe(&e),
        };
    }
    StoreError::Query {
        location: location.to_string(),
        operation,
        cause: describe(&e),
    }
}

#[async_trait]
impl Store for PgStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM aqueduct_schema",
                &[],
            )
            .await
            .map_err(|e| map_err(&self.location, "schema version", e))?;
        Ok(row.get(0))
    }
}

#[async_trait]
impl Tenants for PgStore {
    async fn upsert_organization(&self, org: &Organization) -> StoreResult<()> {
        tenant::upsert_organization(self, org).await
    }

    async fn list_organizations(&self) -> StoreResult<Vec<Organization>> {
        tenant::list_organizations(self).await
    }

    async fn upsert_connection(&self, conn: &ConnectionRecord) -> StoreResult<()> {
        tenant::upsert_connection(self, conn).await
    }

    async fn list_connections(&self, organization: &str) -> StoreResult<Vec<ConnectionRecord>> {
        tenant::list_connections(self, organization).await
    }

    async fn status(&self, organization: &str) -> StoreResult<Vec<ConnectionStatus>> {
        tenant::status(self, organization).await
    }
}

#[async_trait]
impl Resources for PgStore {
    async fn write_resources(
        &self,
        conn: &ConnectionRef,
        batch: &[RawResource],
    ) -> StoreResult<WriteSummary> {
        resources::write(self, conn, batch).await
    }

    async fn get_resource(
        &self,
        conn: &ConnectionRef,
        t: &str,
        id: &str,
    ) -> StoreResult<Option<StoredResource>> {
        resources::get(self, conn, t, id).await
    }

    async fn resource_history(
        &self,
        conn: &ConnectionRef,
        t: &str,
        id: &str,
    ) -> StoreResult<Vec<StoredResource>> {
        resources::history(self, conn, t, id).await
    }

    async fn list_resources(
        &self,
        conn: &ConnectionRef,
        t: &str,
        after_id: Option<&str>,
        limit: u32,
        include_deleted: bool,
    ) -> StoreResult<Vec<StoredResource>> {
        resources::list(self, conn, t, after_id, limit, include_deleted).await
    }

    async fn patient_resource_ids(
        &self,
        conn: &ConnectionRef,
        p: &str,
        t: &str,
    ) -> StoreResult<Vec<String>> {
        resources::patient_ids(self, conn, p, t).await
    }

    async fn tombstone(
        &self,
        conn: &ConnectionRef,
        t: &str,
        ids: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        resources::tombstone(self, conn, t, ids, at).await
    }

    async fn count_by_type(&self, conn: &ConnectionRef) -> StoreResult<Vec<TypeCount>> {
        resources::count_by_type(self, conn).await
    }

    async fn list_patient_resources(
        &self,
        conn: &ConnectionRef,
        p: &str,
        t: Option<&str>,
    ) -> StoreResult<Vec<StoredResource>> {
        resources::patient_resources(self, conn, p, t).await
    }

    async fn patient_resources_page(
        &self,
        conn: &ConnectionRef,
        p: &str,
        t: &str,
        after_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<(Vec<StoredResource>, u64)> {
        resources::patient_page(self, conn, p, t, after_id, limit).await
    }
}

#[async_trait]
impl Access for PgStore {
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        access::create_key(self, key).await
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        access::get_key(self, id).await
    }

    async fn list_api_keys(&self, organization: &str) -> StoreResult<Vec<ApiKey>> {
        access::list_keys(self, organization).await
    }

    async fn revoke_api_key(
        &self,
        organization: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        access::revoke_key(self, organization, id, at).await
    }

    async fn record_access(&self, events: &[AccessEvent]) -> StoreResult<()> {
        access::record(self, events).await
    }

    async fn list_access(
        &self,
        organization: &str,
        patient: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredAccessEvent>> {
        access::list(self, organization, patient, before_id, limit).await
    }
}

#[async_trait]
impl Ledger for PgStore {
    async fn begin_run(&self, conn: &ConnectionRef, kind: &str) -> StoreResult<RunId> {
        tenant::begin_run(self, conn, kind).await
    }

    async fn record_requests(
        &self,
        conn: &ConnectionRef,
        run: RunId,
        entries: &[LedgerEntry],
    ) -> StoreResult<()> {
        tenant::record_requests(self, conn, run, entries).await
    }

    async fn finish_run(
        &self,
        conn: &ConnectionRef,
        run: RunId,
        outcome: RunOutcome,
        summary: Option<&str>,
        error: Option<&str>,
    ) -> StoreResult<()> {
        tenant::finish_run(self, conn, run, outcome, summary, error).await
    }

    async fn acquire_lease(
        &self,
        conn: &ConnectionRef,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        tenant::acquire_lease(self, conn, name, holder, ttl).await
    }

    async fn release_lease(
        &self,
        conn: &ConnectionRef,
        name: &str,
        holder: &str,
    ) -> StoreResult<()> {
        tenant::release_lease(self, conn, name, holder).await
    }

    async fn heartbeat_run(&self, conn: &ConnectionRef, run: RunId) -> StoreResult<()> {
        tenant::heartbeat_run(self, conn, run).await
    }

    async fn close_stale_runs(
        &self,
        conn: &ConnectionRef,
        stale_before: DateTime<Utc>,
        error: &str,
    ) -> StoreResult<Vec<RunId>> {
        tenant::close_stale_runs(self, conn, stale_before, error).await
    }

    async fn get_run(&self, conn: &ConnectionRef, run: RunId) -> StoreResult<Option<SyncRun>> {
        tenant::get_run(self, conn, run).await
    }

    async fn list_runs(&self, conn: &ConnectionRef, limit: u32) -> StoreResult<Vec<SyncRun>> {
        tenant::list_runs(self, conn, limit).await
    }

    async fn run_requests(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<Vec<LedgerEntry>> {
        tenant::run_requests(self, conn, run).await
    }

    async fn run_request_stats(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<RunRequestStats> {
        tenant::run_request_stats(self, conn, run).await
    }

    async fn save_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
        value: &str,
    ) -> StoreResult<()> {
        tenant::save_checkpoint(self, conn, key, value).await
    }

    async fn load_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
    ) -> StoreResult<Option<String>> {
        tenant::load_checkpoint(self, conn, key).await
    }

    async fn list_checkpoints(
        &self,
        conn: &ConnectionRef,
        prefix: &str,
    ) -> StoreResult<Vec<(String, String)>> {
        tenant::list_checkpoints(self, conn, prefix).await
    }

    async fn clear_checkpoints(&self, conn: &ConnectionRef, prefix: &str) -> StoreResult<u64> {
        tenant::clear_checkpoints(self, conn, prefix).await
    }
}

#[async_trait]
impl Vault for PgStore {
    async fn put_secret(&self, conn: &ConnectionRef, name: &str, ct: &[u8]) -> StoreResult<()> {
        tenant::put_secret(self, conn, name, ct).await
    }

    async fn get_secret(&self, conn: &ConnectionRef, name: &str) -> StoreResult<Option<Vec<u8>>> {
        tenant::get_secret(self, conn, name).await
    }

    async fn delete_secret(&self, conn: &ConnectionRef, name: &str) -> StoreResult<bool> {
        tenant::delete_secret(self, conn, name).await
    }

    async fn list_secrets(
        &self,
        organization: &str,
    ) -> StoreResult<Vec<(String, String, Vec<u8>)>> {
        tenant::list_secrets(self, organization).await
    }
}

#[async_trait]
impl Audit for PgStore {
    async fn record_auth_event(&self, conn: &ConnectionRef, ev: &AuthEvent) -> StoreResult<()> {
        tenant::record_auth_event(self, conn, ev).await
    }

    async fn list_auth_events(
        &self,
        conn: &ConnectionRef,
        limit: u32,
    ) -> StoreResult<Vec<AuthEvent>> {
        tenant::list_auth_events(self, conn, limit).await
    }

    async fn record_finding(&self, conn: &ConnectionRef, f: &Finding) -> StoreResult<()> {
        tenant::record_finding(self, conn, f).await
    }

    async fn list_findings(&self, conn: &ConnectionRef, limit: u32) -> StoreResult<Vec<Finding>> {
        tenant::list_findings(self, conn, limit).await
    }

    async fn list_finding_records(
        &self,
        conn: &ConnectionRef,
        acknowledged: Option<bool>,
        limit: u32,
    ) -> StoreResult<Vec<FindingRecord>> {
        tenant::list_finding_records(self, conn, acknowledged, limit).await
    }

    async fn acknowledge_finding(
        &self,
        conn: &ConnectionRef,
        id: i64,
        ack: &Acknowledgement,
    ) -> StoreResult<Option<FindingRecord>> {
        tenant::acknowledge_finding(self, conn, id, ack).await
    }
}

#[async_trait]
impl Inbox for PgStore {
    async fn store_inbound_messages(
        &self,
        org: &str,
        messages: &[InboundMessage],
    ) -> StoreResult<Vec<InboundReceipt>> {
        inbound::store_messages(self, org, messages).await
    }

    async fn complete_inbound(&self, org: &str, outcomes: &[InboundOutcome]) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        inbound::complete(self, org, outcomes).await
    }

    async fn complete_conversions(
        &self,
        org: &str,
        conversions: &[InboundConversion],
    ) -> StoreResult<WriteSummary> {
        if conversions.is_empty() {
            return Ok(WriteSummary::default());
        }
        inbound::complete_conversions(self, org, conversions).await
    }

    async fn mark_inbound_processed(
        &self,
        org: &str,
        id: i64,
        error: Option<&str>,
    ) -> StoreResult<()> {
        inbound::mark_processed(self, org, id, error).await
    }

    async fn inbound_counts(&self, org: &str) -> StoreResult<InboundCounts> {
        inbound::counts(self, org).await
    }

    async fn list_inbound_messages(
        &self,
        org: &str,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<StoredInboundMessage>> {
        inbound::list_messages(self, org, after_id, limit).await
    }

    async fn enqueue_refresh(&self, org: &str, request: &RefreshRequest) -> StoreResult<i64> {
        inbound::enqueue_refresh(self, org, request).await
    }

    async fn list_refresh_requests(
        &self,
        org: &str,
        limit: u32,
    ) -> StoreResult<Vec<(i64, RefreshRequest, DateTime<Utc>)>> {
        inbound::list_refresh(self, org, limit).await
    }

    async fn claim_refresh(
        &self,
        org: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<Option<ClaimedRefresh>> {
        queue::claim(self, org, holder, ttl).await
    }

    async fn renew_refresh_claim(
        &self,
        org: &str,
        ids: &[i64],
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        queue::renew(self, org, ids, holder, ttl).await
    }

    async fn release_refresh_claim(
        &self,
        org: &str,
        ids: &[i64],
        holder: &str,
        retry_in: std::time::Duration,
        failed_attempt: bool,
    ) -> StoreResult<()> {
        queue::release(self, org, ids, holder, retry_in, failed_attempt).await
    }

    async fn finish_refresh(
        &self,
        org: &str,
        ids: &[i64],
        holder: &str,
        result: &RefreshResult,
    ) -> StoreResult<bool> {
        queue::finish(self, org, ids, holder, result).await
    }

    async fn recent_refreshes(&self, org: &str, limit: u32) -> StoreResult<Vec<RefreshRecord>> {
        queue::recent(self, org, None, limit).await
    }

    async fn get_refresh(&self, org: &str, id: i64) -> StoreResult<Option<RefreshRecord>> {
        Ok(queue::recent(self, org, Some(id), 1)
            .await?
            .into_iter()
            .next())
    }

    async fn schedule_last_due(&self, conn: &ConnectionRef) -> StoreResult<Option<DateTime<Utc>>> {
        queue::schedule_last_due(self, conn).await
    }

    async fn fire_schedule(
        &self,
        conn: &ConnectionRef,
        previous: Option<DateTime<Utc>>,
        due: DateTime<Utc>,
        request: &RefreshRequest,
    ) -> StoreResult<Option<i64>> {
        queue::fire_schedule(self, conn, previous, due, request).await
    }
}

#[async_trait]
impl Normalized for PgStore {
    async fn write_normalized(
        &self,
        conn: &ConnectionRef,
        sources: &[NormalizedSource],
        rules_version: &str,
    ) -> StoreResult<()> {
        normalized::write(self, conn, sources, rules_version).await
    }

    async fn normalized_stamps(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_ids: &[String],
    ) -> StoreResult<std::collections::HashMap<String, NormalizedStamp>> {
        normalized::stamps(self, conn, resource_type, logical_ids).await
    }

    async fn list_normalized(
        &self,
        conn: &ConnectionRef,
        kind: &str,
        patient_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredNormalized>> {
        normalized::list(self, conn, kind, patient_id, limit).await
    }

    async fn normalized_of(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_ids: &[String],
    ) -> StoreResult<Vec<StoredNormalized>> {
        if logical_ids.is_empty() {
            return Ok(Vec::new());
        }
        normalized::of_sources(self, conn, resource_type, logical_ids).await
    }

    async fn patient_page_with_normalized(
        &self,
        conn: &ConnectionRef,
        patient_id: &str,
        resource_type: &str,
        after_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<(Vec<StoredResource>, u64, Vec<StoredNormalized>)> {
        let (page, total) =
            resources::patient_page(self, conn, patient_id, resource_type, after_id, limit).await?;
        let ids: Vec<String> = page.iter().map(|r| r.logical_id.clone()).collect();
        let rows = self.normalized_of(conn, resource_type, &ids).await?;
        Ok((page, total, rows))
    }

    async fn unmapped_codes(
        &self,
        org: &str,
        connection: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<UnmappedCode>> {
        normalized::unmapped(self, org, connection, limit).await
    }

    async fn put_code_mapping(
        &self,
        conn: &ConnectionRef,
        mapping: &CodeMapping,
    ) -> StoreResult<()> {
        normalized::put_mapping(self, conn, mapping).await
    }

    async fn list_code_mappings(&self, conn: &ConnectionRef) -> StoreResult<Vec<CodeMapping>> {
        normalized::list_mappings(self, conn).await
    }

    async fn find_by_identifier(
        &self,
        org: &str,
        resource_type: &str,
        system: &str,
        value: &str,
    ) -> StoreResult<Vec<IdentifiedResource>> {
        queue::find_by_identifier(self, org, resource_type, system, value).await
    }
}

#[async_trait]
impl Monitoring for PgStore {
    async fn run_type_totals(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<Vec<RunTypeTotals>> {
        monitor::run_type_totals(self, conn, run).await
    }

    async fn run_patient_totals(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<Vec<(String, u64)>> {
        monitor::run_patient_totals(self, conn, run).await
    }

    async fn requests_since(
        &self,
        org: &str,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(String, LedgerEntry)>> {
        monitor::requests_since(self, org, since, limit).await
    }

    async fn freshness(&self, conn: &ConnectionRef) -> StoreResult<Vec<TypeFreshness>> {
        monitor::freshness(self, conn).await
    }

    async fn upsert_alert(&self, org: &str, alert: &Alert) -> StoreResult<()> {
        monitor::upsert_alert(self, org, alert).await
    }

    async fn list_alerts(&self, org: &str, only_firing: bool) -> StoreResult<Vec<Alert>> {
        monitor::list_alerts(self, org, only_firing).await
    }
}

#[async_trait]
impl Identities for PgStore {
    async fn identity_state(&self, organization: &str) -> StoreResult<IdentityState> {
        identity::state(self, organization).await
    }

    async fn apply_identity(&self, organization: &str, update: &IdentityUpdate) -> StoreResult<()> {
        if update.is_empty() {
            return Ok(());
        }
        identity::apply(self, organization, update).await
    }

    async fn person(&self, organization: &str, person: i64) -> StoreResult<Option<PersonSummary>> {
        identity::person(self, organization, person).await
    }

    async fn person_of_record(&self, organization: &str, record: &str) -> StoreResult<Option<i64>> {
        identity::person_of(self, organization, record).await
    }

    async fn list_persons(
        &self,
        organization: &str,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<PersonSummary>> {
        identity::list_persons(self, organization, after, limit).await
    }

    async fn identity_events(
        &self,
        organization: &str,
        person: Option<i64>,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredIdentityEvent>> {
        identity::events(self, organization, person, before_id, limit).await
    }

    async fn review_queue(&self, organization: &str, limit: u32) -> StoreResult<Vec<ReviewPair>> {
        identity::review_queue(self, organization, limit).await
    }

    async fn patient_sources(&self, organization: &str) -> StoreResult<Vec<String>> {
        identity::patient_sources(self, organization).await
    }

    async fn match_decisions(
        &self,
        organization: &str,
        limit: u32,
    ) -> StoreResult<Vec<MatchDecision>> {
        identity::decisions(self, organization, limit).await
    }
}
