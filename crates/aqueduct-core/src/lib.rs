//! The types every Aqueduct layer speaks: connections, raw resources, runs and their ledger
//! entries, findings, inbound messages, refresh requests and normalized rows ([`model`]); the
//! contract a store keeps ([`Store`], with its errors); and where access tokens come from
//! ([`token::AccessTokenSource`]).
//!
//! It owns no I/O. It must not know a database driver, HTTP, FHIR beyond a type name, a
//! logical id and bytes, or any vendor: the layers that do (client, sync, store backends)
//! depend on it, never the other way round, so a layer that only needs a type or the store's
//! contract does not compile SQLite and PostgreSQL.

pub mod boxed;
pub mod error;
pub mod hash;
pub mod model;
pub mod store;
pub mod token;

pub use boxed::BoxFuture;
pub use error::{StoreError, StoreResult};
pub use hash::content_hash;
pub use model::*;
pub use store::Store;
pub use token::{AccessTokenSource, AuthError, NoAuth, StaticBearer};
