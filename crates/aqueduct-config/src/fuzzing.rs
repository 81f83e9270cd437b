//! The function the fuzz target in `fuzz/` calls, public so that the committed corpus is
//! replayed by an ordinary test (CI builds no fuzzer). It takes arbitrary bytes, as a config
//! file could hold, and must never panic. It does not read the environment or the file
//! system (a fuzzed secret path could name a FIFO).

use crate::{KeyLines, parse};

/// Parses the bytes as a config file and, when they parse, exercises every lookup the CLI
/// makes of the result.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = KeyLines::index(text);
    let Ok(config) = parse(text, "fuzz.toml") else {
        return;
    };
    for (path, _) in config.secret_refs() {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let e = config.problem(&path, "x");
        assert!(!e.to_string().is_empty());
        let _ = lines.line(&path);
    }
    for (org, oc) in &config.organizations {
        for name in oc.connections.keys() {
            let found = config.find_connection(&format!("{org}/{name}"));
            assert!(found.is_ok(), "{org}/{name} must be found");
            let _ = config.find_connection(name);
        }
    }
    let _ = config.typed_table::<toml::Table>(&["monitor"], &config.monitor);
    let _ =
        config.typed_table::<std::collections::BTreeMap<String, f64>>(&["alerts"], &config.alerts);
}
