//! `doctor`: tells what a live FHIR endpoint really supports, by trying rather than trusting —
//! its SMART configuration, its CapabilityStatement, which searches work (and which need a
//! category), `$everything`, batch, `_include`, the page size it honours, its paging style,
//! the rate-limit headers it sends, its clock and TLS — and writes what it observed as an
//! institution override that a connection can use.
//!
//! It owns probing and the observed-profile format; it sends requests only through
//! `aqueduct-client` (so probes are paced like any sync) plus a few raw requests for what the
//! FHIR client deliberately hides (headers, POST of a batch). It knows no vendor by name and
//! writes nothing to the store.

mod observe;
mod report;

pub use observe::{ProbeOptions, probe};
pub use report::{DoctorReport, SmartSummary, TypeProbe};
