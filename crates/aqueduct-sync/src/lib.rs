//! Aqueduct's sync engine: deciding what to fetch for a patient and fetching the whole record
//! into the store, resumably.
//!
//! [`Syncer::sync_patients`] takes the connection's sync lease (two syncs of one connection
//! never run side by side), opens a run and plans each patient's record from the configured
//! resource types, the [`VendorProfile`](aqueduct_client::VendorProfile) and the server's
//! CapabilityStatement (trusted only as far as the profile allows): `Patient/$everything`
//! when supported, else one search per type (`patient=`), expanded per category where the
//! server requires one; a search the server rejects is remembered and replaced by the
//! next-best one (`fetch`). Pages are followed through their next links (loops, runaway and
//! fruitless paging, foreign links detected), written to the store page by page and
//! checkpointed (`checkpoint`): a run that was killed is resumed by the next run of the same
//! kind at the patient and page where it stopped, references of pages it does not read again
//! included; any other run starts afresh. References found in the record are resolved to
//! closure up to a depth, for every type (`resolve`); what cannot be read is a gap. Full
//! syncs tombstone what disappeared — only for types read completely with no gap, after the
//! references had their say; incremental syncs ask for `_lastUpdated=gt<server time of the
//! last complete sync>`. Every request reaches the ledger; every run ends complete, partial
//! (each gap named) or failed, by the one rule in [`outcome`].
//!
//! Invariants: this crate knows no vendor by name (only profile fields) and no SQL (only the
//! [`Store`](aqueduct_core::Store) trait); raw bytes are stored exactly as received.

mod checkpoint;
pub mod compartment;
mod fetch;
/// Bodies of the fuzz targets in `fuzz/` (FHIR pages, Bundle handling, NDJSON lines), public so
/// that tests/fuzz_corpus.rs replays the committed corpus without a fuzzer.
#[doc(hidden)]
pub mod fuzzing;
mod ledger;
pub mod outcome;
pub mod page;
pub mod plan;
pub mod refs;
mod report;
mod resolve;
pub mod scopes;
mod syncer;

pub use ledger::RunLedger;
pub use report::{MissingReason, PartialType, REAUTH_PREFIX, SyncError, SyncReport, TypeCounts};
pub use syncer::{
    HEARTBEAT_EVERY, INTERRUPTED, SyncMode, SyncOptions, Syncer, record_failed_start,
};
