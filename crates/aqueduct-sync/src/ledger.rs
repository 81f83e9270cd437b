//! The run's request ledger: the client reports every attempt here; entries are batched to
//! the store.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aqueduct_client::RequestObserver;
use aqueduct_core::{ConnectionRef, LedgerEntry, RunId, Store, StoreResult};

#[derive(Debug, Default)]
pub struct RunLedger {
    buf: Mutex<Vec<LedgerEntry>>,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
    /// Attempts the server answered with an HTTP status (any status).
    pub answered: AtomicU64,
}

impl RequestObserver for RunLedger {
    fn on_attempt(&self, entry: &LedgerEntry) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if entry.attempt > 1 {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(entry.status, Some(429 | 503)) {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if entry.error_kind.is_some() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if entry.status.is_some() {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(entry.bytes, Ordering::Relaxed);
        self.lock().push(entry.clone());
    }
}

impl RunLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LedgerEntry>> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Writes the buffered entries to the store.
    pub async fn flush(
        &self,
        store: &dyn Store,
        conn: &ConnectionRef,
        run: RunId,
    ) -> StoreResult<()> {
        let entries = std::mem::take(&mut *self.lock());
        if entries.is_empty() {
            return Ok(());
        }
        store.record_requests(conn, run, &entries).await
    }
}
