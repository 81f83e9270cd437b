//! Aqueduct's sync engine: deciding what to fetch for a patient and fetching the whole record
//! into the store, resumably.
//!
//! [`Syncer::sync_patients`] plans each patient's record from the configured resource types,
//! the [`VendorProfile`](aqueduct_client::VendorProfile) and the server's CapabilityStatement
//! (trusted only as far as the profile allows): `Patient/$everything` when supported, else one
//! search per type (`patient=`), expanded per category where the server requires one; a search
//! the server rejects is remembered and replaced by the next-best one. Pages are followed
//! through their next links (loops, repeated links and duplicate entries detected), written to
//! the store page by page and checkpointed per (patient, type, search), so a killed run resumes
//! where it stopped without losing or duplicating anything. References found in the fetched
//! resources are resolved (`_id=a,b,c` searches or reads, Binary attachments), up to a depth.
//! Full syncs tombstone what disappeared — only for types fetched completely; incremental syncs
//! ask for `_lastUpdated=gt<server time of the last complete sync>`. Every request reaches the
//! ledger; every run ends complete, partial (with each missing type and why) or failed.
//!
//! Invariants: this crate knows no vendor by name (only profile fields) and no SQL (only the
//! [`Store`](aqueduct_store::Store) trait); raw bytes are stored exactly as received.

mod ledger;
pub mod page;
pub mod plan;
pub mod refs;
mod report;
pub mod scopes;
mod syncer;

pub use ledger::RunLedger;
pub use report::{MissingReason, PartialType, SyncError, SyncReport, TypeCounts};
pub use syncer::{HEARTBEAT_EVERY, INTERRUPTED, SyncMode, SyncOptions, Syncer};
