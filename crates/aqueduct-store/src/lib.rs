//! The Aqueduct store: raw FHIR resources exactly as received, their history and tombstones,
//! the sync ledger (one row per run and per HTTP request), checkpoints for resuming, encrypted
//! credentials, the auth audit log, monitoring findings and alerts, inbound event messages and
//! refresh requests, derived normalized rows with their lineage, patient identity (persons,
//! their records, identity events, reviewer decisions, the review queue), and short leases that let
//! processes sharing a store coordinate. It implements the [`Store`] contract of
//! `aqueduct-core` with two real backends: SQLite (a single file, the embedded default) and
//! PostgreSQL (scale-out).
//!
//! The store owns durability, transactions, schema migrations and tenant isolation: every query
//! of tenant data names its organization. It must not know FHIR beyond a type name, a logical id
//! and bytes — it never parses, validates or rewrites a resource — nor anything about vendors,
//! HTTP or auth (secrets arrive already encrypted). The tables are documented in [`schema`].

mod identity_text;
pub mod postgres;
pub mod sqlite;

#[doc = include_str!("../SCHEMA.md")]
pub mod schema {}

use std::sync::Arc;

// The contract and its values live in `aqueduct-core` (so layers that only speak them do not
// compile the drivers); they are re-exported so a caller that opens a store needs one crate.
pub use aqueduct_core::model::*;
pub use aqueduct_core::store::prelude::*;
pub use aqueduct_core::{StoreError, StoreResult, content_hash};

/// The newest schema version this build knows; migrations bring older stores up to it.
pub const SCHEMA_VERSION: i64 = 14;

/// Opens (creating and migrating as needed) the store at `location`: a `postgres://` or
/// `postgresql://` URL selects PostgreSQL, anything else is a SQLite file path.
pub async fn open(location: &str) -> StoreResult<Arc<dyn Store>> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(location).await?))
    } else if location.contains("://") {
        Err(StoreError::BadLocation(location.to_string()))
    } else {
        Ok(Arc::new(sqlite::SqliteStore::open(location).await?))
    }
}
