//! The FHIRPath subset SQL on FHIR v2 asks for, evaluated over raw JSON (`serde_json::Value`)
//! without a FHIR model: paths with choice types (`value` finds `valueQuantity`), indexing,
//! literals, `%constants`, the boolean, comparison, equality, arithmetic and union operators,
//! and the functions `where`, `exists`, `empty`, `first`, `last`, `count`, `not`, `join`,
//! `ofType`, `extension`, `getResourceKey`, `getReferenceKey`, `lowBoundary`, `highBoundary`
//! (plus `select`, `distinct`, `iif`, `hasValue`, `toString`, `contains`, `startsWith`,
//! `endsWith`, `lower`, `upper`, `trim`, `length`, `tail`, `skip`, `take`, `single`, `all`,
//! `anyTrue`, `allTrue`, `combine`, `union`, `is`, `as`).
//!
//! Types come from the JSON: a member found through a choice suffix (`valueDateTime`) carries
//! that type; other strings are of a string-like type, numbers `integer` or `decimal`. No input
//! makes the evaluator panic; depth of recursion is bounded by the parser.

mod boundary;
mod eval;
mod parse;

pub use eval::{Env, Item, evaluate, referenced_variables};
pub use parse::{Expr, parse};

use thiserror::Error;

/// What can go wrong with a FHIRPath expression.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PathError {
    #[error("`{path}` is not a valid FHIRPath expression: {message}")]
    Syntax { path: String, message: String },
    #[error("{0}")]
    Eval(String),
}
