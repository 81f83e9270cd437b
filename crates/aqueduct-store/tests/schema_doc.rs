//! SCHEMA.md must describe the real tables: every table and column in a fresh SQLite store is
//! documented, and the document names nothing that does not exist.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::{BTreeMap, BTreeSet};

#[tokio::test]
async fn schema_doc_matches_the_real_tables() {
    let t = common::TestStore::sqlite().await;
    let c = rusqlite::Connection::open(&t.location).unwrap();
    let mut real: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in tables {
        let cols: BTreeSet<String> = c
            .prepare(&format!("PRAGMA table_info({table})"))
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        real.insert(table, cols);
    }

    let doc = include_str!("../SCHEMA.md");
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(name) = line.strip_prefix("### `").and_then(|l| l.strip_suffix('`')) {
            current = Some(name.to_string());
            documented.entry(name.to_string()).or_default();
        } else if let (Some(table), Some(cell)) = (&current, line.strip_prefix("| `")) {
            let cell = cell.split(" |").next().unwrap_or("");
            for col in cell.split(", ") {
                documented
                    .get_mut(table)
                    .unwrap()
                    .insert(col.trim_matches('`').to_string());
            }
        }
    }
    // resource_history documents only its extra column and says "same columns as resources".
    let resources = documented.get("resources").cloned().unwrap_or_default();
    documented
        .get_mut("resource_history")
        .unwrap()
        .extend(resources);
    assert_eq!(documented, real);
}
