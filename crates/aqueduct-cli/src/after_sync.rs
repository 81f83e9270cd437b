//! What runs after every sync: normalization of what changed in the connection's raw data
//! (sources whose raw content or rules/tables/mappings fingerprint changed) and the
//! silent-failure checks. A sync that only looks successful is the
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
    let terms = crate::normalize_cmd::terminology(None, config)?;
    let ctx = aqueduct_normalize::context_for(store, conn, terms).await?;
    let normalized = aqueduct_normalize::refresh(store, conn, &ctx, &[]).await?;
    let cfg = crate::monitor_cmd::monitor_config(config)?;
    let findings = aqueduct_monitor::assess_run(store, conn, run, &cfg).await?;
    Ok(AfterSync {
        normalized,
        findings,
    })
}
