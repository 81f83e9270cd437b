//! The parser on arbitrary bytes: splitting, character sets, parsing, path access, the
//! encode/parse round trip, ACK reading (see `aqueduct_hl7::fuzzing::parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| aqueduct_hl7::fuzzing::parse(data));
