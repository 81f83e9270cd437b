//! The embedded default backend: one SQLite file in WAL mode.
//!
//! rusqlite is synchronous, so every call runs on tokio's blocking pool. One connection writes
//! (SQLite allows one writer at a time anyway) and a few others read, so `status` and the API stay
//! responsive while a sync writes; WAL lets them run side by side. `synchronous = NORMAL` in WAL
//! mode keeps the database consistent across a process crash (kill -9): a transaction is either
//! in the WAL whole or not at all.

mod access;
mod identity;
mod inbound;
mod migrate;
mod monitor;
mod normalized;
mod queue;
mod resources;
mod tenant;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use aqueduct_core::error::{StoreError, StoreResult};
use aqueduct_core::model::*;
use aqueduct_core::store::prelude::*;

pub struct SqliteStore {
    location: String,
    /// The one writer connection.
    writer: Arc<Pool>,
    /// Reader connections: reads on several cores at once (WAL lets them run beside the
    /// writer and each other), each read on whichever is free.
    readers: Arc<Pool>,
    _checkpointer: Checkpointer,
}

/// Connections lent to one blocking task at a time. A task waits for a free connection in
/// async code (a semaphore permit) before it takes a blocking thread, never on a lock inside
/// one: waiting on a lock parked a thread of the blocking pool per queued read, and the
/// wake-ups cost a facade search a fifth of its time in context switches.
struct Pool {
    idle: Mutex<Vec<Connection>>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Pool {
    fn new(conns: Vec<Connection>) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(tokio::sync::Semaphore::new(conns.len())),
            idle: Mutex::new(conns),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // a panic while the list was locked cannot leave it half-changed (push and pop only)
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection taken from a [`Pool`]; given back when dropped, also after a panic (rusqlite
/// rolls back a transaction left open, so the connection is consistent).
struct Lent<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.idle().push(c);
        }
    }
}

/// Copies the WAL back into the database file from a thread of its own, so that no commit
/// waits for it. Left to SQLite, the commit that crosses `wal_autocheckpoint` does the whole
/// copy itself: with 16 KiB pages and the API's stream of small audit-log commits that was a
/// stall of tens of milliseconds every second or so, felt by every read waiting on its audit
/// entry. The writer keeps a far higher autocheckpoint as a backstop.
struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpointer {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(200);

    fn start(conn: Connection) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Self::EVERY);
                    // PASSIVE never waits for readers or the writer; what it cannot copy now
                    // it copies next time
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "background checkpoint skipped");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no checkpoint thread; SQLite checkpoints on commit");
        }
        Self { stop }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reader connections per store: enough for the API's concurrent reads on a few cores, few
/// enough that their page caches stay small.
const READERS: usize = 4;

impl SqliteStore {
    /// Opens the store file, creating it (and its directory) on first use, and migrates it.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let location = path.display().to_string();
        let loc = location.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path, loc))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    fn open_blocking(path: &Path, location: String) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::CreateDir {
                    path: dir.display().to_string(),
                    cause: e.to_string(),
                })?;
            }
        }
        let mut writer = open_connection(path, &location, true)?;
        migrate::migrate(&mut writer, &location)?;
        // (a memory map for the readers was tried: more CPU per read than read(2) per page)
        let readers = (0..READERS)
            .map(|_| open_connection(path, &location, false))
            .collect::<StoreResult<Vec<_>>>()?;
        // the checkpoint thread keeps the WAL short; the writer only steps in if it falls far
        // behind (256 MiB of WAL). The writer also trims the WAL file, at the first commit
        // after each restart, down to journal_size_limit: at the 64 MiB the readers keep, a
        // steady stream of writes grew it past that between checkpoints, so every restart cut
        // it back and the file system then allocated the same blocks again. Up to the backstop
        // the file is reused in place.
        writer
            .execute_batch(
                "PRAGMA wal_autocheckpoint = 16384; PRAGMA journal_size_limit = 268435456;",
            )
            .map_err(|e| map_err(&location, "configure", e))?;
        let checkpointer = Checkpointer::start(open_connection(path, &location, false)?);
        Ok(Self {
            location,
            writer: Pool::new(vec![writer]),
            readers: Pool::new(readers),
            _checkpointer: checkpointer,
        })
    }

    /// Caps the file at `pages` pages of 4 KiB. Exists so tests can produce a real "disk
    /// full" (SQLITE_FULL) without filling a disk.
    pub async fn set_max_pages(&self, pages: u64) -> StoreResult<()> {
        let location = self.location.clone();
        self.write(move |c| {
            c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(|e| map_err(&location, "set max_page_count", e))
        })
        .await
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        run_on(Arc::clone(&self.writer), f).await
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        run_on(Arc::clone(&self.readers), f).await
    }
}

async fn run_on<T, F>(pool: Arc<Pool>, f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
{
    let permit = Arc::clone(&pool.permits)
        .acquire_owned()
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        // declared first, dropped last: the connection is back before the permit is
        let _permit = permit;
        let mut lent = Lent {
            conn: pool.idle().pop(),
            pool: &pool,
        };
        match lent.conn.as_mut() {
            Some(c) => f(c),
            // a permit is one idle connection; none here would be a bug, not a wait
            None => Err(StoreError::Worker("no idle SQLite connection".into())),
        }
    })
    .await
    .map_err(|e| StoreError::Worker(e.to_string()))?
}

fn open_connection(path: &Path, location: &str, create: bool) -> StoreResult<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        match map_err(location, "open", e) {
            StoreError::Query { cause, .. } => StoreError::Open {
                path: location.to_string(),
                cause,
            },
            other => other,
        }
    })?;
    // busy_timeout first: another process may be creating or migrating the same file
    let setup = "PRAGMA busy_timeout = 10000;
                 PRAGMA page_size = 16384;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA cache_size = -16000;
                 PRAGMA wal_autocheckpoint = 4096;
                 PRAGMA journal_size_limit = 67108864;";
    conn.execute_batch(setup)
        .map_err(|e| match map_err(location, "configure", e) {
            StoreError::Query { cause, .. } => StoreError::Open {
                path: location.to_string(),
                cause,
            },
            other => other,
        })?;
    // the facade and the sync prepare a few dozen statement shapes; re-preparing them on
    // every call (rusqlite keeps 16 by default) cost a tenth of a search's time
    conn.set_prepared_statement_cache_capacity(128);
    // One plan per statement whatever its bound values. Without it, SQLite (built with
    // STAT4, as the bundled build is) marks a cached statement with ORDER BY expired at each
    // new binding and compiles it again on the next step: a patient's page and its
    // normalized rows spent a third of a facade search re-preparing. The store runs no
    // ANALYZE, so value-dependent plans had nothing to gain.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(|e| map_err(location, "configure", e))?;
    Ok(conn)
}

/// Turns a SQLite error into one that says what happened and where.
pub(crate) fn map_err(location: &str, operation: &'static str, e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(ffi, _) = &e {
        match ffi.code {
            ErrorCode::DiskFull => {
                return StoreError::DiskFull {
                    path: location.to_string(),
                };
            }
            ErrorCode::ReadOnly => {
                return StoreError::ReadOnly {
                    path: location.to_string(),
                    cause: e.to_string(),
                };
            }
            ErrorCode::CannotOpen | ErrorCode::NotADatabase | ErrorCode::PermissionDenied => {
                return StoreError::Open {
                    path: location.to_string(),
                    cause: e.to_string(),
                };
            }
            _ => {}
        }
    }
    StoreError::Query {
        location: location.to_string(),
        operation,
        cause: e.to_string(),
    }
}

/// Timestamps are stored as RFC 3339 UTC text with microseconds: sortable and readable in the
/// `sqlite3` shell.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

#[async_trait]
impl Store for SqliteStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        let loc = self.location.clone();
        self.read(move |c| {
            c.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM aqueduct_schema",
                [],
                |r| r.get(0),
            )
            .map_err(|e| map_err(&loc, "schema version", e))
        })
        .await
    }
}

#[async_trait]
impl Tenants for SqliteStore {
    async fn upsert_organization(&self, org: &Organization) -> StoreResult<()> {
        let (loc, org) = (self.location.clone(), org.clone());
        self.write(move |c| tenant::upsert_organization(c, &loc, &org))
            .await
    }

    async fn list_organizations(&self) -> StoreResult<Vec<Organization>> {
        let loc = self.location.clone();
        self.read(move |c| tenant::list_organizations(c, &loc))
            .await
    }

    async fn upsert_connection(&self, conn: &ConnectionRecord) -> StoreResult<()> {
        let (loc, rec) = (self.location.clone(), conn.clone());
        self.write(move |c| tenant::upsert_connection(c, &loc, &rec))
            .await
    }

    async fn list_connections(&self, organization: &str) -> StoreResult<Vec<ConnectionRecord>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| tenant::list_connections(c, &loc, &org))
            .await
    }

    async fn status(&self, organization: &str) -> StoreResult<Vec<ConnectionStatus>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| tenant::status(c, &loc, &org)).await
    }
}

#[async_trait]
impl Resources for SqliteStore {
    async fn write_resources(
        &self,
        conn: &ConnectionRef,
        batch: &[RawResource],
    ) -> StoreResult<WriteSummary> {
        if batch.is_empty() {
            return Ok(WriteSummary::default());
        }
        let (loc, cr, batch) = (self.location.clone(), conn.clone(), batch.to_vec());
        self.write(move |c| resources::write(c, &loc, &cr, &batch))
            .await
    }

    async fn get_resource(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_id: &str,
    ) -> StoreResult<Option<StoredResource>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (t, id) = (resource_type.to_string(), logical_id.to_string());
        self.read(move |c| resources::get(c, &loc, &cr, &t, &id))
            .await
    }

    async fn resource_history(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_id: &str,
    ) -> StoreResult<Vec<StoredResource>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (t, id) = (resource_type.to_string(), logical_id.to_string());
        self.read(move |c| resources::history(c, &loc, &cr, &t, &id))
            .await
    }

    async fn list_resources(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        after_id: Option<&str>,
        limit: u32,
        include_deleted: bool,
    ) -> StoreResult<Vec<StoredResource>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (t, after) = (resource_type.to_string(), after_id.map(str::to_string));
        self.read(move |c| {
            resources::list(c, &loc, &cr, &t, after.as_deref(), limit, include_deleted)
        })
        .await
    }

    async fn patient_resource_ids(
        &self,
        conn: &ConnectionRef,
        patient_id: &str,
        resource_type: &str,
    ) -> StoreResult<Vec<String>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (p, t) = (patient_id.to_string(), resource_type.to_string());
        self.read(move |c| resources::patient_ids(c, &loc, &cr, &p, &t))
            .await
    }

    async fn tombstone(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_ids: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (t, ids) = (resource_type.to_string(), logical_ids.to_vec());
        self.write(move |c| resources::tombstone(c, &loc, &cr, &t, &ids, at))
            .await
    }

    async fn count_by_type(&self, conn: &ConnectionRef) -> StoreResult<Vec<TypeCount>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| resources::count_by_type(c, &loc, &cr))
            .await
    }

    async fn list_patient_resources(
        &self,
        conn: &ConnectionRef,
        patient_id: &str,
        resource_type: Option<&str>,
    ) -> StoreResult<Vec<StoredResource>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (p, t) = (patient_id.to_string(), resource_type.map(str::to_string));
        self.read(move |c| resources::patient_resources(c, &loc, &cr, &p, t.as_deref()))
            .await
    }

    async fn patient_resources_page(
        &self,
        conn: &ConnectionRef,
        patient_id: &str,
        resource_type: &str,
        after_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<(Vec<StoredResource>, u64)> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (p, t) = (patient_id.to_string(), resource_type.to_string());
        let after = after_id.map(str::to_string);
        self.read(move |c| resources::patient_page(c, &loc, &cr, &p, &t, after.as_deref(), limit))
            .await
    }
}

#[async_trait]
impl Access for SqliteStore {
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let (loc, key) = (self.location.clone(), key.clone());
        self.write(move |c| access::create_key(c, &loc, &key)).await
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKey>> {
        let (loc, id) = (self.location.clone(), id.to_string());
        self.read(move |c| access::get_key(c, &loc, &id)).await
    }

    async fn list_api_keys(&self, organization: &str) -> StoreResult<Vec<ApiKey>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| access::list_keys(c, &loc, &org)).await
    }

    async fn revoke_api_key(
        &self,
        organization: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (loc, org, id) = (
            self.location.clone(),
            organization.to_string(),
            id.to_string(),
        );
        self.write(move |c| access::revoke_key(c, &loc, &org, &id, at))
            .await
    }

    async fn record_access(&self, events: &[AccessEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let (loc, events) = (self.location.clone(), events.to_vec());
        self.write(move |c| access::record(c, &loc, &events)).await
    }

    async fn list_access(
        &self,
        organization: &str,
        patient: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredAccessEvent>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        let patient = patient.map(str::to_string);
        self.read(move |c| access::list(c, &loc, &org, patient.as_deref(), before_id, limit))
            .await
    }
}

#[async_trait]
impl Ledger for SqliteStore {
    async fn begin_run(&self, conn: &ConnectionRef, kind: &str) -> StoreResult<RunId> {
        let (loc, cr, kind) = (self.location.clone(), conn.clone(), kind.to_string());
        self.write(move |c| tenant::begin_run(c, &loc, &cr, &kind))
            .await
    }

    async fn record_requests(
        &self,
        conn: &ConnectionRef,
        run: RunId,
        entries: &[LedgerEntry],
    ) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (loc, cr, entries) = (self.location.clone(), conn.clone(), entries.to_vec());
        self.write(move |c| tenant::record_requests(c, &loc, &cr, run, &entries))
            .await
    }

    async fn finish_run(
        &self,
        conn: &ConnectionRef,
        run: RunId,
        outcome: RunOutcome,
        summary: Option<&str>,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (summary, error) = (summary.map(str::to_string), error.map(str::to_string));
        self.write(move |c| {
            tenant::finish_run(
                c,
                &loc,
                &cr,
                run,
                outcome,
                summary.as_deref(),
                error.as_deref(),
            )
        })
        .await
    }

    async fn acquire_lease(
        &self,
        conn: &ConnectionRef,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let (loc, cr, n, h) = (
            self.location.clone(),
            conn.clone(),
            name.to_string(),
            holder.to_string(),
        );
        self.write(move |c| tenant::acquire_lease(c, &loc, &cr, &n, &h, ttl))
            .await
    }

    async fn release_lease(
        &self,
        conn: &ConnectionRef,
        name: &str,
        holder: &str,
    ) -> StoreResult<()> {
        let (loc, cr, n, h) = (
            self.location.clone(),
            conn.clone(),
            name.to_string(),
            holder.to_string(),
        );
        self.write(move |c| tenant::release_lease(c, &loc, &cr, &n, &h))
            .await
    }

    async fn heartbeat_run(&self, conn: &ConnectionRef, run: RunId) -> StoreResult<()> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.write(move |c| tenant::heartbeat_run(c, &loc, &cr, run))
            .await
    }

    async fn close_stale_runs(
        &self,
        conn: &ConnectionRef,
        stale_before: DateTime<Utc>,
        error: &str,
    ) -> StoreResult<Vec<RunId>> {
        let (loc, cr, err) = (self.location.clone(), conn.clone(), error.to_string());
        self.write(move |c| tenant::close_stale_runs(c, &loc, &cr, stale_before, &err))
            .await
    }

    async fn get_run(&self, conn: &ConnectionRef, run: RunId) -> StoreResult<Option<SyncRun>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| tenant::get_run(c, &loc, &cr, run)).await
    }

    async fn list_runs(&self, conn: &ConnectionRef, limit: u32) -> StoreResult<Vec<SyncRun>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| tenant::list_runs(c, &loc, &cr, limit))
            .await
    }

    async fn run_requests(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| tenant::run_requests(c, &loc, &cr, run))
            .await
    }

    async fn run_request_stats(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<RunRequestStats> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| tenant::run_request_stats(c, &loc, &cr, run))
            .await
    }

    async fn save_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
        value: &str,
    ) -> StoreResult<()> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (k, v) = (key.to_string(), value.to_string());
        self.write(move |c| tenant::save_checkpoint(c, &loc, &cr, &k, &v))
            .await
    }

    async fn load_checkpoint(
        &self,
        conn: &ConnectionRef,
        key: &str,
    ) -> StoreResult<Option<String>> {
        let (loc, cr, k) = (self.location.clone(), conn.clone(), key.to_string());
        self.read(move |c| tenant::load_checkpoint(c, &loc, &cr, &k))
            .await
    }

    async fn list_checkpoints(
        &self,
        conn: &ConnectionRef,
        prefix: &str,
    ) -> StoreResult<Vec<(String, String)>> {
        let (loc, cr, p) = (self.location.clone(), conn.clone(), prefix.to_string());
        self.read(move |c| tenant::list_checkpoints(c, &loc, &cr, &p))
            .await
    }

    async fn clear_checkpoints(&self, conn: &ConnectionRef, prefix: &str) -> StoreResult<u64> {
        let (loc, cr, p) = (self.location.clone(), conn.clone(), prefix.to_string());
        self.write(move |c| tenant::clear_checkpoints(c, &loc, &cr, &p))
            .await
    }
}

#[async_trait]
impl Vault for SqliteStore {
    async fn put_secret(
        &self,
        conn: &ConnectionRef,
        name: &str,
        ciphertext: &[u8],
    ) -> StoreResult<()> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (n, ct) = (name.to_string(), ciphertext.to_vec());
        self.write(move |c| tenant::put_secret(c, &loc, &cr, &n, &ct))
            .await
    }

    async fn get_secret(&self, conn: &ConnectionRef, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let (loc, cr, n) = (self.location.clone(), conn.clone(), name.to_string());
        self.read(move |c| tenant::get_secret(c, &loc, &cr, &n))
            .await
    }

    async fn delete_secret(&self, conn: &ConnectionRef, name: &str) -> StoreResult<bool> {
        let (loc, cr, n) = (self.location.clone(), conn.clone(), name.to_string());
        self.write(move |c| tenant::delete_secret(c, &loc, &cr, &n))
            .await
    }

    async fn list_secrets(
        &self,
        organization: &str,
    ) -> StoreResult<Vec<(String, String, Vec<u8>)>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| tenant::list_secrets(c, &loc, &org))
            .await
    }
}

#[async_trait]
impl Audit for SqliteStore {
    async fn record_auth_event(&self, conn: &ConnectionRef, event: &AuthEvent) -> StoreResult<()> {
        let (loc, cr, ev) = (self.location.clone(), conn.clone(), event.clone());
        self.write(move |c| tenant::record_auth_event(c, &loc, &cr, &ev))
            .await
    }

    async fn list_auth_events(
        &self,
        conn: &ConnectionRef,
        limit: u32,
    ) -> StoreResult<Vec<AuthEvent>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| tenant::list_auth_events(c, &loc, &cr, limit))
            .await
    }

    async fn record_finding(&self, conn: &ConnectionRef, finding: &Finding) -> StoreResult<()> {
        let (loc, cr, f) = (self.location.clone(), conn.clone(), finding.clone());
        self.write(move |c| tenant::record_finding(c, &loc, &cr, &f))
            .await
    }

    async fn list_findings(&self, conn: &ConnectionRef, limit: u32) -> StoreResult<Vec<Finding>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| tenant::list_findings(c, &loc, &cr, limit))
            .await
    }

    async fn list_finding_records(
        &self,
        conn: &ConnectionRef,
        acknowledged: Option<bool>,
        limit: u32,
    ) -> StoreResult<Vec<FindingRecord>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| tenant::list_finding_records(c, &loc, &cr, acknowledged, limit))
            .await
    }

    async fn acknowledge_finding(
        &self,
        conn: &ConnectionRef,
        id: i64,
        ack: &Acknowledgement,
    ) -> StoreResult<Option<FindingRecord>> {
        let (loc, cr, ack) = (self.location.clone(), conn.clone(), ack.clone());
        self.write(move |c| tenant::acknowledge_finding(c, &loc, &cr, id, &ack))
            .await
    }
}

#[async_trait]
impl Inbox for SqliteStore {
    async fn store_inbound_messages(
        &self,
        organization: &str,
        messages: &[InboundMessage],
    ) -> StoreResult<Vec<InboundReceipt>> {
        let (loc, org, msgs) = (
            self.location.clone(),
            organization.to_string(),
            messages.to_vec(),
        );
        self.write(move |c| inbound::store_messages(c, &loc, &org, &msgs))
            .await
    }

    async fn complete_inbound(
        &self,
        organization: &str,
        outcomes: &[InboundOutcome],
    ) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let (loc, org, out) = (
            self.location.clone(),
            organization.to_string(),
            outcomes.to_vec(),
        );
        self.write(move |c| inbound::complete(c, &loc, &org, &out))
            .await
    }

    async fn complete_conversions(
        &self,
        organization: &str,
        conversions: &[InboundConversion],
    ) -> StoreResult<WriteSummary> {
        if conversions.is_empty() {
            return Ok(WriteSummary::default());
        }
        let (loc, org, conv) = (
            self.location.clone(),
            organization.to_string(),
            conversions.to_vec(),
        );
        self.write(move |c| inbound::complete_conversions(c, &loc, &org, &conv))
            .await
    }

    async fn mark_inbound_processed(
        &self,
        organization: &str,
        id: i64,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let (loc, org, err) = (
            self.location.clone(),
            organization.to_string(),
            error.map(str::to_string),
        );
        self.write(move |c| inbound::mark_processed(c, &loc, &org, id, err.as_deref()))
            .await
    }

    async fn inbound_counts(&self, organization: &str) -> StoreResult<InboundCounts> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| inbound::counts(c, &loc, &org)).await
    }

    async fn list_inbound_messages(
        &self,
        organization: &str,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<StoredInboundMessage>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| inbound::list_messages(c, &loc, &org, after_id, limit))
            .await
    }

    async fn enqueue_refresh(
        &self,
        organization: &str,
        request: &RefreshRequest,
    ) -> StoreResult<i64> {
        let (loc, org, req) = (
            self.location.clone(),
            organization.to_string(),
            request.clone(),
        );
        self.write(move |c| inbound::enqueue_refresh(c, &loc, &org, &req))
            .await
    }

    async fn list_refresh_requests(
        &self,
        organization: &str,
        limit: u32,
    ) -> StoreResult<Vec<(i64, RefreshRequest, DateTime<Utc>)>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| inbound::list_refresh(c, &loc, &org, limit))
            .await
    }

    async fn claim_refresh(
        &self,
        organization: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<Option<ClaimedRefresh>> {
        let (loc, org, h) = (
            self.location.clone(),
            organization.to_string(),
            holder.to_string(),
        );
        self.write(move |c| queue::claim(c, &loc, &org, &h, ttl))
            .await
    }

    async fn renew_refresh_claim(
        &self,
        organization: &str,
        ids: &[i64],
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<bool> {
        let (loc, org, ids, h) = (
            self.location.clone(),
            organization.to_string(),
            ids.to_vec(),
            holder.to_string(),
        );
        self.write(move |c| queue::renew(c, &loc, &org, &ids, &h, ttl))
            .await
    }

    async fn release_refresh_claim(
        &self,
        organization: &str,
        ids: &[i64],
        holder: &str,
        retry_in: std::time::Duration,
        failed_attempt: bool,
    ) -> StoreResult<()> {
        let (loc, org, ids, h) = (
            self.location.clone(),
            organization.to_string(),
            ids.to_vec(),
            holder.to_string(),
        );
        self.write(move |c| queue::release(c, &loc, &org, &ids, &h, retry_in, failed_attempt))
            .await
    }

    async fn finish_refresh(
        &self,
        organization: &str,
        ids: &[i64],
        holder: &str,
        result: &RefreshResult,
    ) -> StoreResult<bool> {
        let (loc, org, ids, h, r) = (
            self.location.clone(),
            organization.to_string(),
            ids.to_vec(),
            holder.to_string(),
            result.clone(),
        );
        self.write(move |c| queue::finish(c, &loc, &org, &ids, &h, &r))
            .await
    }

    async fn recent_refreshes(
        &self,
        organization: &str,
        limit: u32,
    ) -> StoreResult<Vec<RefreshRecord>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| queue::recent(c, &loc, &org, None, limit))
            .await
    }

    async fn get_refresh(&self, organization: &str, id: i64) -> StoreResult<Option<RefreshRecord>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| queue::recent(c, &loc, &org, Some(id), 1))
            .await
            .map(|v| v.into_iter().next())
    }

    async fn schedule_last_due(&self, conn: &ConnectionRef) -> StoreResult<Option<DateTime<Utc>>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| queue::schedule_last_due(c, &loc, &cr))
            .await
    }

    async fn fire_schedule(
        &self,
        conn: &ConnectionRef,
        previous: Option<DateTime<Utc>>,
        due: DateTime<Utc>,
        request: &RefreshRequest,
    ) -> StoreResult<Option<i64>> {
        let (loc, cr, req) = (self.location.clone(), conn.clone(), request.clone());
        self.write(move |c| queue::fire_schedule(c, &loc, &cr, previous, due, &req))
            .await
    }
}

#[async_trait]
impl Normalized for SqliteStore {
    async fn write_normalized(
        &self,
        conn: &ConnectionRef,
        sources: &[NormalizedSource],
        rules_version: &str,
    ) -> StoreResult<()> {
        let (loc, cr, src, rv) = (
            self.location.clone(),
            conn.clone(),
            sources.to_vec(),
            rules_version.to_string(),
        );
        self.write(move |c| normalized::write(c, &loc, &cr, &src, &rv))
            .await
    }

    async fn normalized_stamps(
        &self,
        conn: &ConnectionRef,
        resource_type: &str,
        logical_ids: &[String],
    ) -> StoreResult<std::collections::HashMap<String, NormalizedStamp>> {
        let (loc, cr, rt, ids) = (
            self.location.clone(),
            conn.clone(),
            resource_type.to_string(),
            logical_ids.to_vec(),
        );
        self.read(move |c| normalized::stamps(c, &loc, &cr, &rt, &ids))
            .await
    }

    async fn list_normalized(
        &self,
        conn: &ConnectionRef,
        kind: &str,
        patient_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredNormalized>> {
        let (loc, cr, k, p) = (
            self.location.clone(),
            conn.clone(),
            kind.to_string(),
            patient_id.map(str::to_string),
        );
        self.read(move |c| normalized::list(c, &loc, &cr, &k, p.as_deref(), limit))
            .await
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
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (t, ids) = (resource_type.to_string(), logical_ids.to_vec());
        self.read(move |c| normalized::of_sources(c, &loc, &cr, &t, &ids))
            .await
    }

    async fn patient_page_with_normalized(
        &self,
        conn: &ConnectionRef,
        patient_id: &str,
        resource_type: &str,
        after_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<(Vec<StoredResource>, u64, Vec<StoredNormalized>)> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        let (p, t) = (patient_id.to_string(), resource_type.to_string());
        let after = after_id.map(str::to_string);
        // one blocking trip and one read transaction for both
        self.read(move |c| {
            let (page, total) =
                resources::patient_page(c, &loc, &cr, &p, &t, after.as_deref(), limit)?;
            let ids: Vec<String> = page.iter().map(|r| r.logical_id.clone()).collect();
            let rows = if ids.is_empty() {
                Vec::new()
            } else {
                normalized::of_sources(c, &loc, &cr, &t, &ids)?
            };
            Ok((page, total, rows))
        })
        .await
    }

    async fn unmapped_codes(
        &self,
        organization: &str,
        connection: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<UnmappedCode>> {
        let (loc, org, cn) = (
            self.location.clone(),
            organization.to_string(),
            connection.map(str::to_string),
        );
        self.read(move |c| normalized::unmapped(c, &loc, &org, cn.as_deref(), limit))
            .await
    }

    async fn put_code_mapping(
        &self,
        conn: &ConnectionRef,
        mapping: &CodeMapping,
    ) -> StoreResult<()> {
        let (loc, cr, m) = (self.location.clone(), conn.clone(), mapping.clone());
        self.write(move |c| normalized::put_mapping(c, &loc, &cr, &m))
            .await
    }

    async fn list_code_mappings(&self, conn: &ConnectionRef) -> StoreResult<Vec<CodeMapping>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| normalized::list_mappings(c, &loc, &cr))
            .await
    }

    async fn find_by_identifier(
        &self,
        organization: &str,
        resource_type: &str,
        system: &str,
        value: &str,
    ) -> StoreResult<Vec<IdentifiedResource>> {
        let (loc, org, rt, sys, val) = (
            self.location.clone(),
            organization.to_string(),
            resource_type.to_string(),
            system.to_string(),
            value.to_string(),
        );
        self.read(move |c| queue::find_by_identifier(c, &loc, &org, &rt, &sys, &val))
            .await
    }
}

#[async_trait]
impl Monitoring for SqliteStore {
    async fn run_type_totals(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<Vec<RunTypeTotals>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| monitor::run_type_totals(c, &loc, &cr, run))
            .await
    }

    async fn run_patient_totals(
        &self,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<Vec<(String, u64)>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| monitor::run_patient_totals(c, &loc, &cr, run))
            .await
    }

    async fn requests_since(
        &self,
        organization: &str,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(String, LedgerEntry)>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| monitor::requests_since(c, &loc, &org, since, limit))
            .await
    }

    async fn freshness(&self, conn: &ConnectionRef) -> StoreResult<Vec<TypeFreshness>> {
        let (loc, cr) = (self.location.clone(), conn.clone());
        self.read(move |c| monitor::freshness(c, &loc, &cr)).await
    }

    async fn upsert_alert(&self, organization: &str, alert: &Alert) -> StoreResult<()> {
        let (loc, org, a) = (
            self.location.clone(),
            organization.to_string(),
            alert.clone(),
        );
        self.write(move |c| monitor::upsert_alert(c, &loc, &org, &a))
            .await
    }

    async fn list_alerts(&self, organization: &str, only_firing: bool) -> StoreResult<Vec<Alert>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| monitor::list_alerts(c, &loc, &org, only_firing))
            .await
    }
}

#[async_trait]
impl Identities for SqliteStore {
    async fn identity_state(&self, organization: &str) -> StoreResult<IdentityState> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| identity::state(c, &loc, &org)).await
    }

    async fn apply_identity(&self, organization: &str, update: &IdentityUpdate) -> StoreResult<()> {
        if update.is_empty() {
            return Ok(());
        }
        let (loc, org, u) = (
            self.location.clone(),
            organization.to_string(),
            update.clone(),
        );
        self.write(move |c| identity::apply(c, &loc, &org, &u))
            .await
    }

    async fn person(&self, organization: &str, person: i64) -> StoreResult<Option<PersonSummary>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| identity::person(c, &loc, &org, person))
            .await
    }

    async fn person_of_record(&self, organization: &str, record: &str) -> StoreResult<Option<i64>> {
        let (loc, org, r) = (
            self.location.clone(),
            organization.to_string(),
            record.to_string(),
        );
        self.read(move |c| identity::person_of(c, &loc, &org, &r))
            .await
    }

    async fn list_persons(
        &self,
        organization: &str,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<PersonSummary>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| identity::list_persons(c, &loc, &org, after, limit))
            .await
    }

    async fn identity_events(
        &self,
        organization: &str,
        person: Option<i64>,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredIdentityEvent>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| identity::events(c, &loc, &org, person, before_id, limit))
            .await
    }

    async fn review_queue(&self, organization: &str, limit: u32) -> StoreResult<Vec<ReviewPair>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| identity::review_queue(c, &loc, &org, limit))
            .await
    }

    async fn patient_sources(&self, organization: &str) -> StoreResult<Vec<String>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| identity::patient_sources(c, &loc, &org))
            .await
    }

    async fn match_decisions(
        &self,
        organization: &str,
        limit: u32,
    ) -> StoreResult<Vec<MatchDecision>> {
        let (loc, org) = (self.location.clone(), organization.to_string());
        self.read(move |c| identity::decisions(c, &loc, &org, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rusqlite::StatementStatus;

    /// A cached statement runs with new values without being compiled again: a facade
    /// search is two of them per request.
    #[test]
    fn cached_statements_with_order_by_are_not_prepared_again_per_binding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut c = super::open_connection(&path, "test", true).unwrap();
        super::migrate::migrate(&mut c, "test").unwrap();
        let sql = "SELECT logical_id FROM resources
                   WHERE organization = ?1 AND connection = ?2 AND patient_id = ?3
                     AND resource_type = ?4 AND deleted_at IS NULL AND logical_id > ?5
                   ORDER BY logical_id LIMIT ?6";
        for i in 0..5 {
            let mut st = c.prepare_cached(sql).unwrap();
            let rows: Vec<String> = st
                .query_map(
                    rusqlite::params!["acme", "epic", format!("p{i}"), "Observation", "", 20],
                    |r| r.get(0),
                )
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(rows.is_empty());
            assert_eq!(st.get_status(StatementStatus::RePrepare), 0, "run {i}");
        }
    }
}
