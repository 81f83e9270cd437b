//! What runs after every sync (and every Bulk import): normalization of what changed in the
//! connection's raw data (sources whose raw content or rules/tables/mappings fingerprint
//! changed), the silent-failure checks, and a round of the organization's patient identity
//! (its new or changed Patients matched, see [`crate::identity`]). A sync that only looks successful is the failure
//! Aqueduct exists to catch, so these run every time, not on request.

use aqueduct_core::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use aqueduct_config::Config;
use aqueduct_core::{ConnectionRef, Finding, RunId, Store};
use aqueduct_monitor::MonitorConfig;
use aqueduct_normalize::{RebuildReport, Terminology};
use serde::Serialize;

use crate::EngineError;
use crate::identity::IdentityReport;

#[derive(Debug, Clone, Serialize)]
pub struct AfterSync {
    pub normalized: RebuildReport,
    pub findings: Vec<Finding>,
    /// The organization's identity round: its new or changed Patients matched (None when
    /// the round failed: the sync stands, and the next round matches what this one did not).
    pub identity: Option<IdentityReport>,
}

pub fn after_sync<'a>(
    store: &'a dyn Store,
    conn: &'a ConnectionRef,
    run: RunId,
    config: Option<&'a Config>,
) -> BoxFuture<'a, Result<AfterSync, EngineError>> {
    Box::pin(after_sync_unboxed(store, conn, run, config))
}

async fn after_sync_unboxed(
    store: &dyn Store,
    conn: &ConnectionRef,
    run: RunId,
    config: Option<&Config>,
) -> Result<AfterSync, EngineError> {
    let terms = terminology(None, config)?;
    let ctx = aqueduct_normalize::context_for(store, conn, terms).await?;
    let normalized = aqueduct_normalize::refresh(store, conn, &ctx, &[]).await?;
    let cfg = monitor_config(config)?;
    let findings = aqueduct_monitor::assess_run(store, conn, run, &cfg).await?;
    let identity = match crate::identity::update_identity(store, &conn.organization).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = ?e, organization = %conn.organization, "patient identity not updated after the sync");
            None
        }
    };
    Ok(AfterSync {
        normalized,
        findings,
        identity,
    })
}

/// The terminology tables: the embedded ones plus the release files of `dir`, else
/// `AQUEDUCT_TERMINOLOGY_DIR`, else the config's `terminology.dir`. After a sync and on
/// request the same tables apply, so the two never disagree.
pub fn terminology(
    dir: Option<&Path>,
    config: Option<&Config>,
) -> Result<Arc<Terminology>, EngineError> {
    let env_dir = std::env::var_os("AQUEDUCT_TERMINOLOGY_DIR").map(PathBuf::from);
    let dir = dir
        .map(Path::to_path_buf)
        .or(env_dir)
        .or_else(|| config.and_then(|c| c.terminology.dir.clone()));
    // loaded once per process: release files run to hundreds of megabytes and a sync of
    // several connections normalizes each of them
    type Loaded = Option<(Option<PathBuf>, Arc<Terminology>)>;
    static LOADED: Mutex<Loaded> = Mutex::new(None);
    let mut cache = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((d, t)) = cache.as_ref()
        && *d == dir
    {
        return Ok(t.clone());
    }
    let terms = Arc::new(match dir.as_deref() {
        Some(d) => {
            let (terms, loaded) =
                Terminology::embedded_with_dir(d).map_err(|e| EngineError::Terminology {
                    dir: d.display().to_string(),
                    source: e,
                })?;
            for (file, n) in loaded {
                tracing::info!("terminology: loaded {n} entries from {file}");
            }
            terms
        }
        None => Terminology::embedded(),
    });
    *cache = Some((dir, terms.clone()));
    Ok(terms)
}

/// The `[monitor]` thresholds of the config (defaults without one).
pub fn monitor_config(config: Option<&Config>) -> Result<MonitorConfig, EngineError> {
    match config {
        Some(c) => Ok(c.typed_table(&["monitor"], &c.monitor)?),
        None => Ok(MonitorConfig::default()),
    }
}
