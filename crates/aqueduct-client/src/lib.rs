//! Aqueduct's FHIR client: talking HTTP to a FHIR server, and the vendor/institution profiles
//! that describe each server's quirks as data.
//!
//! The entry point is [`FhirClient::get`], one GET with its behaviour composed from small
//! layers: a per-host [limiter](limiter) shared by every sync on that host (pacing, adaptive
//! concurrency, `Retry-After` pauses), [retries](retry) with backoff and jitter for transient
//! failures only, [authorization](auth) through an [`AccessTokenSource`] refreshed once on 401,
//! classification of bodies that lie (HTML or invalid JSON under 200, truncated bodies,
//! OperationOutcome errors) and an observer that receives a [`aqueduct_core::LedgerEntry`] for
//! every attempt, so that nothing fails silently. [`profile::VendorProfile`] resolves
//! generic ← platform ← institution TOML layers; [`fhir`] is a thin, lenient typed layer
//! (Bundle, OperationOutcome, CapabilityStatement) that keeps every resource as raw bytes.
//!
//! Invariants: this crate knows no sync plan, no patient record and no store table beyond the
//! ledger entry type; no code branches on a vendor's name — only on profile fields.

pub mod auth;
pub mod body;
pub mod client;
pub mod error;
pub mod fhir;
pub mod headers;
pub mod layers;
pub mod limiter;
pub mod profile;
pub mod retry;

pub use async_trait::async_trait;
pub use auth::{AccessTokenSource, AuthError, ClientSecretGrant, NoAuth, StaticBearer};
pub use client::{
    Expect, FhirClient, FhirClientBuilder, FhirRequest, FhirResponse, RequestObserver, host_key,
    shared_http,
};
pub use error::{Answer, FetchError, FetchErrorKind};
pub use limiter::{HostLimiter, LimiterRegistry, Signal};
pub use profile::{ProfileError, VendorProfile};
pub use retry::RetryPolicy;
