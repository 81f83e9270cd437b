//! Fuzzes Bundle handling (searchset, batch-response, duplicates) against the invariants every
//! page must keep: each entry accounted once, bytes stored as received, deterministic ids.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aqueduct_sync::fuzzing::bundle_handling(data);
});
