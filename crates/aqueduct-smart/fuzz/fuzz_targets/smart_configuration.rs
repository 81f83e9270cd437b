//! Fuzzes SMART discovery documents (`.well-known/smart-configuration` and the
//! CapabilityStatement fallback): parsing, endpoint checks, predicates, the cache round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| aqueduct_smart::fuzzing::smart_configuration(data));
