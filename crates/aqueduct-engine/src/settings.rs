//! `[engine]` in aqueduct.toml: how `aqueduct run` works through its queue. Every key has a
//! default a deployment rarely changes; tests shorten the times.

use std::time::Duration;

use aqueduct_config::Config;
use serde::{Deserialize, Deserializer};

use crate::EngineError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// How often the queue and the schedules are looked at when there is nothing to do.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// A claimed refresh request is the holder's this long without a renewal; a process that
    /// dies gives its work back after at most this long. Renewed every third of it.
    #[serde(deserialize_with = "duration")]
    pub claim_ttl: Duration,
    /// A sync whose process stopped beating this long ago is closed as interrupted and its
    /// connection's sync lease expires (the sync layer's `stale_run_after`).
    #[serde(deserialize_with = "duration")]
    pub stale_run_after: Duration,
    /// Refresh requests worked on at once (each syncs one connection at a time).
    pub concurrency: usize,
    /// Patients synced at once within one sync.
    pub patient_concurrency: usize,
    /// Claims of a request that may end in an error before it is closed as failed.
    pub max_attempts: u32,
    /// The wait before the first retry; doubled after every failed attempt.
    #[serde(deserialize_with = "duration")]
    pub retry_backoff: Duration,
    /// The wait before trying again when another process is syncing the connection.
    #[serde(deserialize_with = "duration")]
    pub busy_retry: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            claim_ttl: Duration::from_secs(120),
            stale_run_after: Duration::from_secs(300),
            concurrency: 2,
            patient_concurrency: 4,
            max_attempts: 5,
            retry_backoff: Duration::from_secs(30),
            busy_retry: Duration::from_secs(15),
        }
    }
}

impl EngineSettings {
    /// The config's `[engine]` table, checked: an unknown key or a bad value is an error
    /// with its line.
    pub fn from_config(config: &Config) -> Result<Self, EngineError> {
        let s: EngineSettings = config.typed_table(&["engine"], &config.engine)?;
        if s.concurrency == 0 || s.patient_concurrency == 0 || s.max_attempts == 0 {
            return Err(EngineError::Table {
                table: "engine",
                message: "concurrency, patient_concurrency and max_attempts must be at least 1"
                    .into(),
            });
        }
        if s.claim_ttl < Duration::from_millis(100) || s.poll_interval.is_zero() {
            return Err(EngineError::Table {
                table: "engine",
                message: "claim_ttl must be at least 100ms and poll_interval above 0".into(),
            });
        }
        Ok(s)
    }

    /// The wait before retrying after `attempts` failed attempts (exponential, capped at an
    /// hour).
    pub fn backoff(&self, attempts: u32) -> Duration {
        self.retry_backoff
            .saturating_mul(2u32.saturating_pow(attempts.min(16)))
            .min(Duration::from_secs(3600))
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    aqueduct_monitor::parse_duration(&s).map_err(serde::de::Error::custom)
}
