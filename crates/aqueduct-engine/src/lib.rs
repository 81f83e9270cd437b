//! The Aqueduct engine: the use cases that make a sync useful, in one runtime every caller
//! shares — the `aqueduct` commands, the demo, the API and the workers.
//!
//! - [`Engine::sync_connection`]: a configured connection end to end — its token, the sync
//!   (whole records, checkpointed, the outcome rule), the findings discovery noticed,
//!   normalization of what changed and the silent-failure checks.
//! - [`Engine::work_once`] and [`Engine::run`]: the refresh-request queue (HL7 events,
//!   schedules, Subscriptions, the API all raise requests) consumed under a lease so several
//!   processes on one store do each request once, with coalescing, retries and an outcome
//!   recorded per request; and every connection's schedule, fired once per slot.
//! - [`export::export`]: tables for the warehouse, the store's resources (raw or clean)
//!   through SQL on FHIR views into CSV or Parquet files per view, organization and source,
//!   rewriting only the partitions whose resources changed.
//!
//! - [`update_identity`], [`decide_pair`], [`explain_pair`]: patient identity over the store
//!   (`aqueduct-match`'s identity with the store behind its `IdentityStore`): a round after
//!   every sync, Bulk import and HL7 refresh matches the organization's new or changed
//!   Patients against their blocks, takes `Patient.link` and HL7 merges as forced links, and
//!   records reviewers' decisions that no later round overturns.
//!
//! It owns the order of those steps and the glue between crates that do not know each other
//! (config → vendor profile → SMART settings → token source). It must not know how it is
//! called: no argument parsing, no terminal output, no HTTP serving, no process signals —
//! callers stop it through a watch channel.

mod after_sync;
mod connection;
mod error;
pub mod export;
mod identity;
mod refresh;
mod runner;
mod schedule;
mod settings;
mod sync_job;

pub use after_sync::{AfterSync, after_sync, monitor_config, terminology};
pub use connection::{ResolvedConnection, vault_key};
pub use error::EngineError;
pub use identity::{
    IdentityReport, StoreIdentity, TRAIN_AT, decide_pair, explain_pair, update_identity,
};
pub use refresh::{RefreshTarget, WorkDone};
pub use runner::RunSummary;
pub use schedule::due_slot;
pub use settings::EngineSettings;
pub use sync_job::{SyncJob, SyncRequest};

use std::sync::Arc;

use aqueduct_config::Config;
use aqueduct_core::Store;
use aqueduct_smart::SmartClient;
use tokio::sync::{OnceCell, watch};

/// The runtime: a configuration, a store, and the SMART client its connections share.
pub struct Engine {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    smart: OnceCell<Arc<SmartClient>>,
    settings: EngineSettings,
    /// Who this process is in leases and claims (`engine-<pid>-<random>`).
    holder: String,
    /// Turns true when the caller asks the engine to stop (see [`Engine::stopper`]).
    stop: watch::Receiver<bool>,
    stop_tx: watch::Sender<bool>,
}

impl Engine {
    /// An engine over `store` for the organizations and connections of `config`; its
    /// `[engine]` table gives the settings.
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>) -> Result<Self, EngineError> {
        let settings = EngineSettings::from_config(&config)?;
        Ok(Self::with_settings(config, store, settings))
    }

    pub fn with_settings(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        settings: EngineSettings,
    ) -> Self {
        let (stop_tx, stop) = watch::channel(false);
        Self {
            config,
            store,
            smart: OnceCell::new(),
            settings,
            holder: format!("engine-{}-{:08x}", std::process::id(), rand_u32()),
            stop,
            stop_tx,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Ask the engine to stop: syncs in flight checkpoint and close as interrupted (the next
    /// run resumes them), claimed requests go back to the queue, [`Engine::run`] returns.
    pub fn stop(&self) {
        let _ = self.stop_tx.send(true);
    }

    /// A handle that stops the engine from elsewhere (a signal handler).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop_tx.clone()
    }

    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The SMART client, created on first use (it needs the vault key).
    async fn smart(&self) -> Result<Arc<SmartClient>, EngineError> {
        self.smart
            .get_or_try_init(|| async {
                let key = vault_key(&self.config)?;
                Ok::<_, EngineError>(Arc::new(
                    SmartClient::new(self.store.clone(), key).map_err(EngineError::Smart)?,
                ))
            })
            .await
            .cloned()
    }
}

/// A random suffix for holder ids: two engines in one process are two holders.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u32
}
