//! How a Bulk job fails as a whole (everything else is a gap in the report).

use aqueduct_client::AuthError;
use aqueduct_core::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BulkError {
    #[error("store error during the Bulk import: {0}")]
    Store(#[from] StoreError),
    #[error("{url}: no answer after {attempts} attempts: {source}")]
    Transport {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: the body could not be read: {message}")]
    Body { url: String, message: String },
    #[error("{url}: HTTP {status}: {outcome}")]
    ServerError {
        url: String,
        status: u16,
        outcome: String,
    },
    #[error("authorization: {0}")]
    Auth(#[source] AuthError),
    #[error("kick-off refused: HTTP {status}: {outcome}")]
    KickOffRefused { status: u16, outcome: String },
    #[error("the export job failed at the server: HTTP {status}: {outcome}")]
    JobFailed { status: u16, outcome: String },
    #[error("{0}")]
    Protocol(String),
    #[error("the export did not complete within {0:?}")]
    Deadline(std::time::Duration),
    #[error(
        "another Bulk import of connection {connection} is running (it holds the bulk lease); \
         try again when it has finished"
    )]
    Busy { connection: String },
    #[error("building a URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("the manifest: {0}")]
    Manifest(#[from] crate::manifest::ManifestError),
}
