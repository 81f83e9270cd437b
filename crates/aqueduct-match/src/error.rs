//! Errors of the matcher.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MatchError {
    #[error("a record needs a non-empty id")]
    EmptyId,
    #[error("more records than the matcher can number (u32)")]
    TooManyRecords,
    #[error("more than 65,535 sources")]
    TooManySources,
    #[error("unknown record {0}")]
    UnknownRecord(String),
    #[error("not a FHIR Patient: {0}")]
    NotAPatient(String),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("CSV line {line}: {reason}")]
    Csv { line: usize, reason: String },
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("identity store: {0}")]
    Store(String),
}
