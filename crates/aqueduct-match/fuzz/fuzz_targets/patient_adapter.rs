//! Fuzzes the FHIR Patient adapter: bytes as a source sends them → JSON → the matcher's record
//! → prepared and compared with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    aqueduct_match::fuzzing::patient_adapter(data);
});
