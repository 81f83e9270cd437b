//! Fuzzes the config file parser: TOML syntax, the typed model, validation, the key-line
//! index and the lookups made of a parsed file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| aqueduct_config::fuzzing::config_text(data));
