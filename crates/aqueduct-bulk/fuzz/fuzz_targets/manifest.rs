//! Fuzzes the Bulk completion manifest: parsed or refused, never a panic; every file URL it
//! yields is http(s).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aqueduct_bulk::fuzzing::manifest(data);
});
