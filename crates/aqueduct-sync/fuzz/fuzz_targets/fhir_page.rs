//! Fuzzes a FHIR search page as a server sends it: Bundle parsing, the next link, splitting
//! entries into resources, references and attachments; the same bytes as an OperationOutcome
//! and a CapabilityStatement.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aqueduct_sync::fuzzing::fhir_page(data);
});
