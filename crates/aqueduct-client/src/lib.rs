//! Aqueduct's FHIR client: talking HTTP to a FHIR server, and the vendor/institution profiles
//! that describe each server's quirks as data.
//!
//! The entry point is [`FhirClient::get`]. Its behaviour is a stack of [tower] layers over one
//! transport service, composed once per client ([`layers`] explains each and why the order):
//!
//! ```text
//! auth ∘ retry ∘ caller ∘ limiter ∘ ledger ∘ classify ∘ transport
//! ```
//!
//! In that order: [authorization](layers::auth) through an [`AccessTokenSource`] (token once
//! per request, refreshed once on 401); [retries](layers::retry) with backoff and jitter for transient
//! failures only; the layers a caller added with [`FhirClientBuilder::layer`]; the per-host
//! [limiter] shared by every sync on that host (pacing, adaptive concurrency,
//! `Retry-After` pauses), held around each attempt; a [`aqueduct_core::LedgerEntry`] for every
//! attempt to the client's [`RequestObserver`], so that nothing fails silently;
//! [classification](layers::classify) of bodies that lie (HTML or invalid JSON under 200,
//! truncated bodies, OperationOutcome errors); and the [transport](layers::transport): one
//! exchange, redirects and the token kept on the server's origin, bodies capped
//! ([`body`]). A caller that needs another order composes its own from the same pieces with
//! [`FhirClientBuilder::stack`].
//!
//! [`profile::VendorProfile`] resolves generic ← platform ← institution TOML layers; [`fhir`]
//! is a thin, lenient typed layer (Bundle, OperationOutcome, CapabilityStatement) that keeps
//! every resource as raw bytes.
//!
//! Invariants: this crate knows no sync plan, no patient record and no store table beyond the
//! ledger entry type; no code branches on a vendor's name — only on profile fields; the
//! origin rule (token and configured headers to allowed origins only, redirects within the
//! base's origin) lives in the transport, below every layer a caller can add or remove.

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
