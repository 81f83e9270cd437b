//! Aqueduct monitoring: owns judging whether data that looks fine is complete and fresh —
//! findings from the sync ledger compared with baselines and claims ([`assess_run`]), metrics
//! in the Prometheus text format ([`render_metrics`]), alert rules with de-duplication and
//! sinks ([`AlertRules`], [`evaluate_alerts`], [`notify_pending`]); it reads and writes only
//! through the [`aqueduct_core::Store`] trait, fetches nothing itself, and knows no vendor.

mod alerts;
mod assess;
mod metrics;
mod util;

pub use alerts::{
    AlertRules, AlertSink, AlertTransition, FindingsSink, LogSink, TransitionKind, WebhookSink,
    evaluate_alerts, notify_pending, sign_body, verify_signature,
};
pub use assess::{FINDING_KINDS, MonitorConfig, assess_run};
pub use metrics::{escape_label_value, render_metrics};
pub use util::parse_duration;

use thiserror::Error;

/// Finding severities, as recorded in the store.
pub const INFO: &str = "info";
pub const WARNING: &str = "warning";
pub const CRITICAL: &str = "critical";

/// What went wrong while monitoring; each says what failed so an operator can act on it.
#[derive(Debug, Error)]
pub enum MonitorError {
    #[error("monitoring could not read or write the store: {0}")]
    Store(#[from] aqueduct_core::StoreError),
    #[error("run {run} of {connection} is not in the store")]
    UnknownRun { connection: String, run: i64 },
    #[error("finding {id} of {connection} is not in the store")]
    UnknownFinding { connection: String, id: i64 },
    #[error("alert sink {sink} failed: {cause}")]
    Sink { sink: String, cause: String },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot encode JSON output: {0}")]
    Json(#[from] serde_json::Error),
}
