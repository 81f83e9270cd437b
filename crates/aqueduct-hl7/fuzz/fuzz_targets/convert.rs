//! Conversion to FHIR of arbitrary messages (see `aqueduct_hl7::fuzzing::convert`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| aqueduct_hl7::fuzzing::convert(data));
