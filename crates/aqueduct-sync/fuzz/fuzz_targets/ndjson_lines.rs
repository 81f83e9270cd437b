//! Fuzzes Bulk Data NDJSON: every line becomes a raw resource stored exactly as its text, with
//! its references collected and parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aqueduct_sync::fuzzing::ndjson_lines(data);
});
