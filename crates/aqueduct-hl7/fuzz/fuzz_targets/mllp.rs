//! The MLLP codec on arbitrary bytes cut at arbitrary points (see `aqueduct_hl7::fuzzing::mllp`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| aqueduct_hl7::fuzzing::mllp(data));
