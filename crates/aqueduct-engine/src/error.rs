//! What can stop a use case, with its cause kept: the caller decides how to show it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("configuration")]
    Config(#[from] aqueduct_config::ConfigError),
    #[error("connection {connection}: vendor profile {profile:?}")]
    Profile {
        connection: String,
        profile: String,
        #[source]
        source: aqueduct_client::ProfileError,
    },
    #[error("connection {connection}: {what}")]
    Setting { connection: String, what: String },
    #[error(
        "no vault key: set vault.key in aqueduct.toml or AQUEDUCT_VAULT_KEY (32 random bytes, base64)"
    )]
    NoVaultKey(#[source] aqueduct_smart::SmartError),
    #[error("SMART")]
    Smart(#[source] aqueduct_smart::SmartError),
    #[error("connection {connection}: {stage}")]
    Start {
        connection: String,
        stage: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no tokens for {connection}: run `aqueduct connect {connection}` first")]
    NotConnected { connection: String },
    #[error("the launch of {connection} gave no patient context; name the patient")]
    NoPatientContext { connection: String },
    #[error("the FHIR client for {connection}")]
    Client {
        connection: String,
        #[source]
        source: Box<aqueduct_client::FetchError>,
    },
    #[error("sync")]
    Sync(#[source] Box<aqueduct_sync::SyncError>),
    #[error("store")]
    Store(#[from] aqueduct_core::StoreError),
    #[error("normalization")]
    Normalize(#[from] aqueduct_normalize::NormalizeError),
    #[error("terminology directory {dir}")]
    Terminology {
        dir: String,
        #[source]
        source: aqueduct_normalize::NormalizeError,
    },
    #[error("patient identity")]
    Identity(#[source] Box<aqueduct_match::MatchError>),
    #[error("silent-failure checks")]
    Monitor(#[from] aqueduct_monitor::MonitorError),
    #[error("aqueduct.toml [{table}]: {message}")]
    Table {
        table: &'static str,
        message: String,
    },
}

impl From<aqueduct_sync::SyncError> for EngineError {
    fn from(e: aqueduct_sync::SyncError) -> Self {
        EngineError::Sync(Box::new(e))
    }
}

impl EngineError {
    /// Another process is syncing the connection: the work waits, it did not fail.
    pub fn is_busy(&self) -> bool {
        matches!(self, EngineError::Sync(e) if matches!(**e, aqueduct_sync::SyncError::Busy { .. }))
    }
}
