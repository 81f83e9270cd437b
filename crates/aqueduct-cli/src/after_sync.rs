//! What runs after every sync: the silent-failure checks (and, once normalization lands in
//! this binary, the re-derivation of normalized rows). A sync that only looks successful is
//! the failure Aqueduct exists to catch, so these run every time, not on request.

use aqueduct_store::{ConnectionRef, Finding, RunId, Store};

/// Assesses a finished run and returns the findings it raised (also recorded in the store).
pub async fn after_sync(
    store: &dyn Store,
    conn: &ConnectionRef,
    run: RunId,
    config: Option<&aqueduct_config::Config>,
) -> anyhow::Result<Vec<Finding>> {
    let cfg = crate::monitor_cmd::monitor_config(config)?;
    Ok(aqueduct_monitor::assess_run(store, conn, run, &cfg).await?)
}
