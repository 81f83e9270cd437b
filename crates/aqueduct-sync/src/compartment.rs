//! The R4 Patient compartment (CompartmentDefinition `patient`): the resource types that
//! belong to a patient's record. A type the server lists in its CapabilityStatement and that
//! belongs here is part of the whole record even when no configuration names it.

/// Types of the Patient compartment that hold a patient's data, searchable by the patient
/// (`patient`, `subject` or `beneficiary`, as the profile says). Left out: Patient itself
/// (read by id), Group and Person (collections of patients), AuditEvent and Schedule (not
/// clinical data).
pub const PATIENT_COMPARTMENT: &[&str] = &[
    "Account",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "Basic",
    "BodyStructure",
    "CarePlan",
    "CareTeam",
    "ChargeItem",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "Communication",
    "CommunicationRequest",
    "Composition",
    "Condition",
    "Consent",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "Encounter",
    "EnrollmentRequest",
    "EpisodeOfCare",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "Invoice",
    "List",
    "MeasureReport",
    "Media",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "MolecularSequence",
    "NutritionOrder",
    "Observation",
    "Procedure",
    "Provenance",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchSubject",
    "RiskAssessment",
    "ServiceRequest",
    "Specimen",
    "SupplyDelivery",
    "SupplyRequest",
    "VisionPrescription",
];

pub fn in_patient_compartment(resource_type: &str) -> bool {
    PATIENT_COMPARTMENT.contains(&resource_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn us_core_types_are_in_the_compartment_and_shared_ones_are_not() {
        for t in [
            "Observation",
            "Condition",
            "MedicationRequest",
            "DocumentReference",
            "Provenance",
            "Coverage",
        ] {
            assert!(in_patient_compartment(t), "{t}");
        }
        for t in [
            "Practitioner",
            "Organization",
            "Location",
            "Medication",
            "Patient",
            "Binary",
        ] {
            assert!(!in_patient_compartment(t), "{t}");
        }
    }
}
