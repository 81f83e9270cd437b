//! Fuzzes NDJSON streaming: lines independent of chunk boundaries, resumable at any line,
//! each line a raw resource with its exact bytes and a deterministic key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aqueduct_bulk::fuzzing::ndjson(data);
});
