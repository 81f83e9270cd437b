//! Store errors: each says what failed and where, so an operator can act on it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create the store directory {path}: {cause}")]
    CreateDir { path: String, cause: String },
    #[error("cannot open the SQLite store at {path}: {cause}")]
    Open { path: String, cause: String },
    #[error("the store at {path} is read-only: {cause}")]
    ReadOnly { path: String, cause: String },
    #[error(
        "the disk is full while writing the store at {path}; nothing of this batch was written"
    )]
    DiskFull { path: String },
    #[error(
        "the store at {location} was written by a newer Aqueduct (schema version {found}, this build knows up to {supported}); upgrade Aqueduct or point it at another store"
    )]
    NewerSchema {
        location: String,
        found: i64,
        supported: i64,
    },
    #[error("cannot connect to PostgreSQL at {location}: {cause}")]
    Connect { location: String, cause: String },
    #[error("store migration {version} failed at {location}: {cause}")]
    Migration {
        location: String,
        version: i64,
        cause: String,
    },
    #[error("store query failed at {location} ({operation}): {cause}")]
    Query {
        location: String,
        operation: &'static str,
        cause: String,
    },
    #[error("unknown store location {0:?}: use a file path or a postgres:// URL")]
    BadLocation(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the store worker stopped unexpectedly: {0}")]
    Worker(String),
}

pub type StoreResult<T> = Result<T, StoreError>;
