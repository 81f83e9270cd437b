//! Aqueduct normalization and terminology: one clean clinical record from many FHIR dialects,
//! rebuildable from the raw archive.
//!
//! * [`normalize`] — the pure core: one raw resource in, [`Normalized`] rows and flags out.
//!   Parsing uses borrowed, lenient serde views ([`fhir`]): a wrong shape in one field is a
//!   flag, never a lost resource; no `serde_json::Value` is built.
//! * [`Terminology`] — curated embedded tables (`terminology/*.csv`) plus loaders for official
//!   release files (LOINC CSV, RxNorm RRF, SNOMED CT RF2, ICD-10-CM order file, CVX).
//! * [`code_format`] — format checks for standard codes (LOINC and SNOMED CT check digits,
//!   SNOMED CT concept ids, ICD-10-CM, RxNorm, CVX, NDC, CPT) and NPIs: a system label is
//!   trusted only when its code passes.
//! * [`units`] — UCUM (full grammar via `octofhir-ucum`) plus the clinical refusals UCUM does
//!   not make: substance vs number, equivalents vs moles, meaningful annotations; molar-mass
//!   aware.
//! * [`dates`] — FHIR date/time parsing to UTC keeping the original precision.
//! * [`rebuild()`] / [`refresh()`] / [`cli`] — re-derive normalized rows from the store, page
//!   by page (all of them, or only sources whose raw content or context fingerprint changed);
//!   the `aqueduct normalize` and `aqueduct codes unmapped|map` commands.
//!
//! # Terminology strategy (recorded per code in [`ResolvedCode`])
//! 1. `standard`: a LOINC / SNOMED CT / ICD-10-CM / RxNorm / CVX / CPT code for the domain,
//!    with a valid shape ([`code_format`]: LOINC mod-10 and SNOMED CT Verhoeff check digits,
//!    SNOMED CT partition, ICD-10-CM pattern, RxNorm/CVX numbers, NDC segments); system
//!    aliases (`LOINC`, OIDs) accepted and flagged `system-alias`. A code that fails its
//!    label's check is flagged `code-mislabelled`, kept as the source code and treated as a
//!    local code in the steps below.
//! 2. `mapped`: an NDC through the NDC->RxNorm table, or any code through the connection's
//!    mapping table (rule `ndc-rxnorm-table` / `local-mapping`, table version recorded).
//! 3. `inferred`: text matched against the domain's table with a score >= the threshold
//!    (0.9) and no near tie — `mislabelled` instead when the row's code was a mislabelled
//!    one; below the threshold, or ambiguous: `unmapped` with the best candidate kept for
//!    review. A local (or mislabelled) code without text is `unmapped` too.
//! 4. `none`: nothing usable.
//!
//! # Flags
//! Resource level: `unparseable`, `missing-id`, `missing-resource-type`, `resource-type-mismatch`,
//! `unsupported-type`. Row level: `malformed-field`, `no-code`, `code-inferred`, `code-unmapped`,
//! `code-without-system`, `code-mislabelled`, `ndc-ambiguous`, `system-alias`, `invalid-date`,
//! `partial-date`, `timezone-assumed`, `non-standard-date`, `no-effective-time`,
//! `effective-from-issued`, `number-as-string`, `not-a-number`, `no-value`, `data-absent`,
//! `unit-from-text`, `unit-not-ucum`, `unknown-unit`, `missing-unit`, `unit-not-convertible`,
//! `implausible-value`, `components-not-split`, `empty-panel`, `entered-in-error`,
//! `no-clinical-status`, `active-but-abated`, `onset-as-text`, `probably-stale`,
//! `active-without-date`, `medication-by-reference`, `unknown-criticality`, `occurrence-as-text`,
//! `no-encounter-class`, `narrative-only`, `empty-report`, `no-content`, `not-machine-readable`,
//! `no-name`, `gender-normalized`, `unknown-gender-code`, `identifier-without-system`,
//! `invalid-npi`, `empty-identifier`, `empty-telecom`, `derived`.

pub mod code_format;
mod csv;
pub mod dates;
mod error;
pub mod fhir;
pub mod model;
mod normalize;
pub mod rebuild;
mod review;
pub mod terminology;
pub mod units;

pub use error::NormalizeError;
pub use model::*;
pub use normalize::{
    ACT_CODE, NormalizeContext, RULES_VERSION, act_code_class, derive_bmi, medication_reference,
    normalize, normalize_with_hash, normalize_with_refs, round_sig,
};
pub use rebuild::{
    RebuildOptions, RebuildReport, TypeReport, context_for, rebuild, rebuild_with, refresh,
};
pub use review::{MappingRequest, validate_mapping};
pub use terminology::{LocalMapping, Terminology};
