//! The normalized model: what the application above reads, whatever EHR the data came from.

use serde::Serialize;

use crate::dates::When;

/// How a code was obtained, in the order the strategy tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// A standard code was present and used directly.
    Standard,
    /// A local (or NDC) code mapped through a mapping table.
    Mapped,
    /// Matched from text above the confidence threshold.
    Inferred,
    /// The coding's system label failed that system's format check (a local "31337" sent
    /// as LOINC), so the code was treated as a local code and resolved by its text above
    /// the threshold. The mislabelled coding is kept as the source code. A mislabelled code
    /// the text cannot resolve is `unmapped` (the review queue); both are flagged
    /// `code-mislabelled`.
    Mislabelled,
    /// Something was there (local code, text) but nothing matched well enough: queued for review.
    Unmapped,
    /// Nothing usable.
    None,
}

impl Resolution {
    pub const ALL: [Resolution; 6] = [
        Resolution::Standard,
        Resolution::Mapped,
        Resolution::Inferred,
        Resolution::Mislabelled,
        Resolution::Unmapped,
        Resolution::None,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Standard => "standard",
            Resolution::Mapped => "mapped",
            Resolution::Inferred => "inferred",
            Resolution::Mislabelled => "mislabelled",
            Resolution::Unmapped => "unmapped",
            Resolution::None => "none",
        }
    }
}

/// The code a row carries and how it was obtained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedCode {
    pub resolution: Resolution,
    pub system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
    /// The coding as received that the result came from; for a code resolved by text (or
    /// not at all), the mislabelled coding if there is one, else the first coded one.
    pub source_system: Option<String>,
    pub source_code: Option<String>,
    pub source_text: Option<String>,
    /// Which rule produced the code: standard-code, ndc-rxnorm-table, local-mapping,
    /// text-match, text-below-threshold, text-ambiguous, unmapped-code, no-code.
    pub rule: &'static str,
    /// Version of the table the rule used.
    pub table_version: Option<String>,
    /// Text-match score (0..1) for inferred, mislabelled and unmapped-with-candidate codes.
    pub confidence: Option<f64>,
    /// Best text candidate that was NOT applied (below threshold or ambiguous), for review.
    pub candidate: Option<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub system: String,
    pub code: String,
    pub display: String,
    pub score: f64,
}

/// A data-quality finding: never silent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    pub code: &'static str,
    pub field: &'static str,
    pub detail: String,
}

impl Flag {
    pub fn new(code: &'static str, field: &'static str, detail: impl Into<String>) -> Self {
        Flag {
            code,
            field,
            detail: detail.into(),
        }
    }
}

/// The normalized record kinds (the store's `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Patient,
    Observation,
    Condition,
    Medication,
    Allergy,
    Immunization,
    Procedure,
    Encounter,
    DiagnosticReport,
    Document,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Patient => "patient",
            Kind::Observation => "observation",
            Kind::Condition => "condition",
            Kind::Medication => "medication",
            Kind::Allergy => "allergy",
            Kind::Immunization => "immunization",
            Kind::Procedure => "procedure",
            Kind::Encounter => "encounter",
            Kind::DiagnosticReport => "diagnostic-report",
            Kind::Document => "document",
        }
    }

    /// The FHIR resource types normalized into this kind.
    pub fn for_resource_type(t: &str) -> Option<Kind> {
        Some(match t {
            "Patient" => Kind::Patient,
            "Observation" => Kind::Observation,
            "Condition" => Kind::Condition,
            "MedicationRequest" | "MedicationStatement" => Kind::Medication,
            "AllergyIntolerance" => Kind::Allergy,
            "Immunization" => Kind::Immunization,
            "Procedure" => Kind::Procedure,
            "Encounter" => Kind::Encounter,
            "DiagnosticReport" => Kind::DiagnosticReport,
            "DocumentReference" => Kind::Document,
            _ => return None,
        })
    }
}

/// The resource types [`crate::normalize`] understands.
pub const SUPPORTED_TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
    "Immunization",
    "Procedure",
    "Encounter",
    "DiagnosticReport",
    "DocumentReference",
];

/// One normalized row. A blood-pressure panel gives two.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NormalizedRow {
    pub ordinal: u32,
    pub kind: Kind,
    pub patient_id: Option<String>,
    pub status: Option<String>,
    pub effective: Option<When>,
    /// `None` for kinds without a code (Patient).
    pub code: Option<ResolvedCode>,
    pub detail: Detail,
    pub flags: Vec<Flag>,
}

/// Where a normalized row came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lineage {
    pub resource_type: String,
    pub logical_id: Option<String>,
    /// Hex SHA-256 of the raw bytes (as the store computes it).
    pub content_hash: String,
}

/// Everything normalization derived from one raw resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalized {
    pub lineage: Lineage,
    pub rows: Vec<NormalizedRow>,
    /// Resource-level findings (unparseable, type mismatch, unsupported type).
    pub flags: Vec<Flag>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Detail {
    Patient(PatientDetail),
    Observation(ObservationDetail),
    Condition(ConditionDetail),
    Medication(MedicationDetail),
    Allergy(AllergyDetail),
    Immunization(ImmunizationDetail),
    Procedure(ProcedureDetail),
    Encounter(EncounterDetail),
    DiagnosticReport(DiagnosticReportDetail),
    Document(DocumentDetail),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodingOut {
    pub system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct PatientDetail {
    pub names: Vec<NameOut>,
    pub birth_date: Option<When>,
    pub gender: Option<String>,
    pub deceased: Option<bool>,
    pub addresses: Vec<AddressOut>,
    pub telecom: Vec<TelecomOut>,
    pub identifiers: Vec<IdentifierOut>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NameOut {
    #[serde(rename = "use")]
    pub use_: Option<String>,
    pub family: Option<String>,
    pub given: Vec<String>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddressOut {
    #[serde(rename = "use")]
    pub use_: Option<String>,
    pub lines: Vec<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelecomOut {
    pub system: Option<String>,
    pub value: String,
    #[serde(rename = "use")]
    pub use_: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentifierOut {
    pub system: Option<String>,
    pub value: String,
    pub type_code: Option<String>,
}

/// A measured value with its original and canonical forms.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ValueOut {
    /// quantity | integer | string | coded | boolean
    pub kind: &'static str,
    pub value: Option<f64>,
    pub comparator: Option<String>,
    /// The unit text as received.
    pub unit_text: Option<String>,
    /// The received unit as UCUM, when recognised.
    pub ucum: Option<String>,
    pub canonical_value: Option<f64>,
    pub canonical_unit: Option<String>,
    /// identity | converted | molar-mass | no-canonical | not-convertible | missing-unit
    pub conversion: Option<&'static str>,
    pub text: Option<String>,
    pub coded: Option<CodingOut>,
    pub boolean: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RangeOut {
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub unit: Option<String>,
    pub canonical_low: Option<f64>,
    pub canonical_high: Option<f64>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ObservationDetail {
    /// vital-sign | laboratory | other category code
    pub class: String,
    pub categories: Vec<String>,
    pub value: Option<ValueOut>,
    pub reference_range: Option<RangeOut>,
    /// Normalized v3 interpretation codes (H, L, N, A, HH, LL, ...).
    pub interpretation: Vec<String>,
    /// For rows split from a panel: the panel's code.
    pub panel_code: Option<String>,
    /// For derived rows (BMI): the (resource type, logical id) inputs.
    pub derived_from: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ConditionDetail {
    pub clinical_status: Option<String>,
    pub verification_status: Option<String>,
    /// problem-list-item | encounter-diagnosis | health-concern | other
    pub category: Option<String>,
    pub onset: Option<When>,
    pub abatement: Option<When>,
    pub abated: Option<bool>,
    pub recorded: Option<When>,
    pub groups: Vec<String>,
    /// ICD-10-CM chapter of the first ICD-10-CM code (or of the resolved code).
    pub chapter: Option<ChapterOut>,
    pub codings: Vec<CodingOut>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ChapterOut {
    pub number: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct MedicationDetail {
    pub resource_type: String,
    pub intent: Option<String>,
    pub authored: Option<When>,
    pub dosage_text: Option<String>,
    pub validity_end: Option<When>,
    pub repeats_allowed: Option<f64>,
    pub ingredient_rxcui: Option<String>,
    /// codeable-concept | contained | referenced | reference-only | missing
    pub medication_source: &'static str,
    pub probably_stale: bool,
    pub stale_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ReactionOut {
    pub substance: Option<String>,
    pub manifestations: Vec<String>,
    pub severity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct AllergyDetail {
    pub clinical_status: Option<String>,
    pub verification_status: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub categories: Vec<String>,
    /// low | high | unable-to-assess
    pub criticality: Option<String>,
    pub reactions: Vec<ReactionOut>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ImmunizationDetail {
    pub lot_number: Option<String>,
    pub primary_source: Option<bool>,
    pub occurrence_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ProcedureDetail {
    pub performed_end: Option<When>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct EncounterDetail {
    /// inpatient | outpatient | emergency | telehealth | other
    pub class: &'static str,
    /// The signal that decided the class.
    pub class_rule: String,
    pub raw_class: Option<String>,
    pub types: Vec<String>,
    pub service_type: Option<String>,
    pub period_end: Option<When>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct AttachmentOut {
    pub content_type: Option<String>,
    pub size: Option<u64>,
    pub has_data: bool,
    pub url: Option<String>,
    /// structured | text | binary | unknown
    pub format_class: &'static str,
    pub machine_readable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DiagnosticReportDetail {
    pub categories: Vec<String>,
    pub result_count: usize,
    /// structured | narrative-only | empty
    pub form: &'static str,
    pub conclusion: Option<String>,
    pub presented_forms: Vec<AttachmentOut>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DocumentDetail {
    pub categories: Vec<String>,
    pub contents: Vec<AttachmentOut>,
    pub machine_readable: bool,
}
