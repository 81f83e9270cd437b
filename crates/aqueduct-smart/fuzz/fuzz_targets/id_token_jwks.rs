//! Fuzzes JWKS documents and id_token verification input (`JWKS \n TOKEN`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| aqueduct_smart::fuzzing::id_token_and_jwks(data));
