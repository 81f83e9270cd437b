//! What runs after every sync: normalization of the connection's raw data (derived, so it is
//! simply rebuilt) and the silent-failure checks. A sync that only looks successful is the
//! failure Aqueduct exists to catch, so these run every time, not on request.

use aqueduct_normalize::RebuildReport;
use aqueduct_store::{ConnectionRef, Finding, RunId, Store};

pub struct AfterSync {
    pub normalized: RebuildReport,
    pub findings: Vec<Finding>,
}

pub async fn after_sync(
    store: &dyn Store,
    conn: &ConnectionRef,
    run: RunId,
    config: Option<&aqueduct_config::Config>,
) -> anyhow::Result<AfterSync> {
    let terms = crate::normalize_cmd::terminology(None)?;
    let ctx = aqueduct_normalize::context_for(store, conn, terms).await?;
    let normalized = aqueduct_normalize::rebuild(store, conn, &ctx, &[]).await?;
    let cfg = crate::monitor_cmd::monitor_config(config)?;
    let findings = aqueduct_monitor::assess_run(store, conn, run, &cfg).await?;
    Ok(AfterSync {
        normalized,
        findings,
    })
}
