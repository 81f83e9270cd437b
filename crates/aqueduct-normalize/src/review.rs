//! The terminology review queue's write side: a reviewer's mapping of a local code to a
//! standard one is checked here before it is stored, whoever asks (the CLI, the API).

use aqueduct_core::CodeMapping;

use crate::error::NormalizeError;
use crate::terminology::recognise_system;

/// A reviewer's request: map `source_system|source_code` to `target_system|target_code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRequest {
    pub source_system: String,
    pub source_code: String,
    /// A standard system by URI or name ("LOINC", "http://loinc.org"), or the v3 ActCode
    /// system for encounter classes.
    pub target_system: String,
    pub target_code: String,
    pub display: Option<String>,
}

/// Checks a mapping before it is stored: the target must be a recognised standard system
/// (stored under its canonical URI) and the code must have that system's shape.
pub fn validate_mapping(a: &MappingRequest) -> Result<CodeMapping, NormalizeError> {
    let code = a.source_code.trim();
    if code.is_empty() {
        return Err(NormalizeError::Invalid("the source code is empty".into()));
    }
    if a.target_system.trim() == crate::normalize::ACT_CODE {
        let c = a.target_code.trim().to_ascii_uppercase();
        if crate::normalize::act_code_class(&c) == "other"
            && c != "HH"
            && c != "OBSENC"
            && c != "PRENC"
            && c != "SS"
            && c != "FLD"
        {
            return Err(NormalizeError::Invalid(format!(
                "target code {c} is not a v3 ActCode encounter class (AMB, IMP, ACUTE, NONAC, EMER, VR, HH, OBSENC, PRENC, SS, FLD)"
            )));
        }
        return Ok(CodeMapping {
            source_system: a.source_system.trim().to_string(),
            source_code: code.to_string(),
            target_system: crate::normalize::ACT_CODE.to_string(),
            target_code: c,
            target_display: a.display.clone(),
        });
    }
    let Some((sys, _)) = recognise_system(&a.target_system) else {
        return Err(NormalizeError::Invalid(format!(
            "target system {} is not a standard system (LOINC, SNOMED CT, ICD-10-CM, RxNorm, CVX, CPT)",
            a.target_system
        )));
    };
    let to_code = a.target_code.trim();
    if !sys.valid_code(to_code) {
        return Err(NormalizeError::Invalid(format!(
            "target code {to_code} is not a valid {} code",
            sys.uri()
        )));
    }
    Ok(CodeMapping {
        source_system: a.source_system.trim().to_string(),
        source_code: code.to_string(),
        target_system: sys.uri().to_string(),
        target_code: to_code.to_string(),
        target_display: a.display.clone(),
    })
}
