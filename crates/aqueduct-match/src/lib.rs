//! Patient matching: an explainable, tunable Fellegi–Sunter record linker with person ids that
//! stay stable.
//!
//! It owns: the matcher's record ([`Record`]) and its normalizers (names, dates, addresses,
//! E.164 phones, emails, identifiers), comparisons with levels ([`compare`]), the model with m
//! and u estimated by expectation maximization on the records themselves ([`Model`]),
//! blocking with several rules and an incremental index ([`block`]), the evidence of every
//! decision ([`Evidence`]), identity (persons, merges, splits, reviewer decisions, forced
//! links) behind the [`IdentityStore`] trait with an in-memory implementation, a synthetic
//! noisy population with ground truth ([`synth`]) and the accuracy benchmarks ([`bench`]).
//!
//! It must not know: FHIR below [`fhir`] (the one adapter that turns a Patient resource into a
//! [`Record`]), the Aqueduct store (persistence is the [`IdentityStore`] trait; an adapter to
//! the store lives above this crate), HTTP, or any vendor.

pub mod bench;
pub mod block;
pub mod compare;
pub mod error;
pub mod explain;
pub mod fhir;
pub mod fuzzing;
pub mod identity;
pub mod matcher;
pub mod model;
pub mod normalize;
pub mod record;
pub mod synth;

pub use block::{BlockRule, BlockStats};
pub use compare::{Field, nickname_equivalent};
pub use error::MatchError;
pub use explain::{Evidence, Term};

pub use identity::{
    Identity, IdentityEvent, IdentityStore, MemoryIdentityStore, PersonId, ReviewerDecision,
    Verdict,
};
pub use matcher::{Matcher, PairScope, ScoredPair, Settings};
pub use model::{Decision, Model, Thresholds};
pub use record::{Address, Identifier, Record, Sex};
