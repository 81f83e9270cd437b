//! SQL on FHIR v2 views: a `ViewDefinition` turns each FHIR resource into flat, typed rows,
//! and the rows are written as CSV (always) or Parquet (the `parquet` feature).
//!
//! A ViewDefinition (the HL7 standard for tabular views of FHIR, <https://sql-on-fhir.org>)
//! names a resource type and the columns to take from it with FHIRPath, nesting `select`s
//! that iterate (`forEach`, `forEachOrNull`, `repeat`) or concatenate (`unionAll`), filtered by
//! `where` and parameterised by `constant`s. [`View::compile`] checks a definition against the
//! specification's rules (and says where it breaks them); [`View::rows`] gives the rows of one
//! resource, read as raw JSON with no FHIR model, so whatever a source sent is readable.
//! [`fhirpath`] is the subset of FHIRPath the specification requires, plus its
//! `getResourceKey()`/`getReferenceKey()` and boundary functions.
//!
//! [`catalog`] ships views for the US Core types (Patient, Observation, Condition...) and loads
//! a user's from files. [`csv`] and `parquet` write rows; each table's schema follows from its
//! ViewDefinition alone (see [`ColumnKind`]), so it is the same for every export.
//!
//! The engine is tested against the specification's published JSON test suite
//! (`tests/spec_suite.rs`, the suite vendored under `tests/sql-on-fhir-v2/`), and no input —
//! definition or resource — makes it panic (`tests/no_panic.rs`).
//!
//! It owns: ViewDefinitions, the FHIRPath subset, rows, the table writers. It must not know:
//! the store, HTTP, organizations or sources (the caller decides what to read and where
//! tables go), or any vendor.

pub mod catalog;
mod cell;
pub mod csv;
pub mod fhirpath;
#[cfg(feature = "parquet")]
pub mod parquet;
mod view;

pub use cell::{Cell, ColumnKind};
pub use view::{Column, Row, View};

use thiserror::Error;

/// Why a ViewDefinition is refused, or why a resource cannot be turned into rows.
#[derive(Debug, Error)]
pub enum ViewError {
    #[error("invalid ViewDefinition at {at}: {message}")]
    Invalid { at: String, message: String },
    #[error("invalid ViewDefinition at {at}")]
    Path {
        at: String,
        #[source]
        source: fhirpath::PathError,
    },
    #[error("evaluating {at}")]
    Eval {
        at: String,
        #[source]
        source: fhirpath::PathError,
    },
    #[error("the where path `{path}` gave a value that is not a boolean")]
    WhereNotBoolean { path: String },
    #[error(
        "column `{column}` gave {count} values; a column that is not `collection: true` takes \
         at most one (use first(), a where(), or forEach)"
    )]
    NotSingle { column: String, count: usize },
    #[error("column `{column}` is declared {expected}, but the resource holds `{found}`")]
    Type {
        column: String,
        expected: &'static str,
        found: String,
    },
    #[error("one resource would give more than {limit} rows or nodes; refusing it")]
    TooManyRows { limit: usize },
}
