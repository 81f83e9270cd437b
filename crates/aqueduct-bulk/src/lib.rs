//! Aqueduct's FHIR Bulk Data Access 2.0 client: a `$export` (system, `Patient` or
//! `Group/{id}` level, with `_type`, `_since`, `_typeFilter`, `_outputFormat`, or
//! `--incremental` from the last complete export's `transactionTime`) imported into the store.
//!
//! [`BulkExporter::run`] kicks the export off with `Prefer: respond-async`, polls the status
//! URL honouring `Retry-After` (seconds or HTTP date), `X-Progress`, 429 and transient 5xx, and
//! ends the job with the server's reason when it answers an error OperationOutcome. The
//! manifest's files are downloaded in parallel (bounded, under the connection's host limiter),
//! gzip accepted, and streamed line by line ([`ndjson`]) into the store in batches: each line's
//! bytes are kept exactly as received, keyed like any resource; a line that is not a resource
//! is stored flagged and reported with its file and line number (a finding, the ledger, the
//! report), never skipped; `error` files become findings, `deleted` entries tombstones. Files
//! the server let expire (404/410) are asked for again by a new kick-off for only their types.
//! The job, the manifest and each file's committed line live in checkpoints under `bulk/`, so
//! a process killed at any point resumes the same job where it stopped (a `Range` request when
//! the server takes one, else the committed lines are skipped), and nothing is stored twice.
//! Every request reaches the run's ledger; the run ends complete, partial or failed by the
//! rule in [`aqueduct_sync::outcome`] (clause 6 is about Bulk files). The job is deleted at
//! the server at the end, and by [`BulkExporter::cancel`].
//!
//! It owns: the Bulk protocol, the manifest, NDJSON streaming, the `bulk/` checkpoints. It
//! must not know: any vendor by name, SQL or a store backend (only the
//! [`Store`](aqueduct_core::Store) trait), what normalization or monitoring do afterwards
//! (the caller runs them), or the simulator.

mod error;
mod export;
/// Bodies of the fuzz targets in `fuzz/` (the manifest, NDJSON streaming), public so that
/// `tests/fuzz_corpus.rs` replays the committed corpus without a fuzzer.
#[doc(hidden)]
pub mod fuzzing;
mod http;
pub mod manifest;
pub mod ndjson;

pub use error::BulkError;
pub use export::{
    BulkExporter, BulkOptions, BulkReport, Level, POPULATION, Quarantined, TypeTotals,
};
