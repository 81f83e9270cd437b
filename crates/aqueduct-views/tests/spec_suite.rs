//! The SQL on FHIR v2 specification's JSON test suite, run exactly as published (vendored in
//! `tests/sql-on-fhir-v2/`, MIT, see its LICENSE.md). Prints how many cases pass per file and
//! in total, and fails when fewer pass than `PASSING` (raise it when the engine gets better).

use std::path::Path;

use aqueduct_views::View;
use serde_json::Value;

/// Cases of the suite that pass today (of 134).
const PASSING: usize = 134;

fn numbers_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| numbers_close(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| numbers_close(v, w)))
        }
        _ => a == b,
    }
}

/// Runs one case: `Ok(())` when the engine does what the case expects.
fn run_case(resources: &[Value], case: &Value) -> Result<(), String> {
    let expect_error = case.get("expectError").and_then(Value::as_bool) == Some(true);
    let view = match View::compile(&case["view"]) {
        Ok(v) => v,
        Err(e) if expect_error => {
            let _ = e.to_string();
            return Ok(());
        }
        Err(e) => return Err(format!("refused the view: {e}")),
    };
    let mut rows = Vec::new();
    for r in resources {
        match view.rows(r) {
            Ok(rs) => rows.extend(rs),
            Err(_) if expect_error => return Ok(()),
            Err(e) => return Err(format!("failed on {}: {e}", r["id"])),
        }
    }
    if expect_error {
        return Err(format!("expected an error, got {} rows", rows.len()));
    }
    let names: Vec<&str> = view.columns().iter().map(|c| c.name.as_str()).collect();
    if let Some(cols) = case.get("expectColumns").and_then(Value::as_array) {
        let want: Vec<&str> = cols.iter().filter_map(Value::as_str).collect();
        if want != names {
            return Err(format!("columns {names:?}, expected {want:?}"));
        }
    }
    if let Some(n) = case.get("expectCount").and_then(Value::as_u64) {
        return if rows.len() as u64 == n {
            Ok(())
        } else {
            Err(format!("{} rows, expected {n}", rows.len()))
        };
    }
    let got: Vec<Value> = rows
        .iter()
        .map(|row| {
            Value::Object(
                names
                    .iter()
                    .zip(row)
                    .map(|(n, c)| ((*n).to_string(), c.to_json()))
                    .collect(),
            )
        })
        .collect();
    let Some(expect) = case.get("expect").and_then(Value::as_array) else {
        return Err("the case has no expectation".into());
    };
    // rows are compared as a multiset: the specification does not order them
    let mut unmatched: Vec<&Value> = expect.iter().collect();
    for g in &got {
        match unmatched.iter().position(|e| numbers_close(e, g)) {
            Some(i) => {
                unmatched.swap_remove(i);
            }
            None => {
                return Err(format!(
                    "unexpected row {g}; got {got:?}, expected {expect:?}"
                ));
            }
        }
    }
    if unmatched.is_empty() {
        Ok(())
    } else {
        Err(format!("missing rows {unmatched:?}; got {got:?}"))
    }
}

#[test]
fn the_specification_test_suite_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql-on-fhir-v2");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the vendored suite")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "tests.schema.json")
        })
        .collect();
    files.sort();
    let (mut passed, mut total) = (0, 0);
    let mut failures = Vec::new();
    for f in &files {
        let suite: Value =
            serde_json::from_str(&std::fs::read_to_string(f).expect("readable")).expect("JSON");
        let resources = suite["resources"].as_array().cloned().unwrap_or_default();
        let cases = suite["tests"].as_array().cloned().unwrap_or_default();
        let mut file_passed = 0;
        for case in &cases {
            match run_case(&resources, case) {
                Ok(()) => file_passed += 1,
                Err(why) => failures.push(format!(
                    "{} / {}: {why}",
                    f.file_name().unwrap_or_default().to_string_lossy(),
                    case["title"]
                )),
            }
        }
        println!(
            "{:<24} {file_passed:>3} / {:<3}",
            f.file_name().unwrap_or_default().to_string_lossy(),
            cases.len()
        );
        passed += file_passed;
        total += cases.len();
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    println!("SQL on FHIR v2 test suite: {passed} of {total} cases pass");
    assert!(total >= 134, "the vendored suite lost cases: {total}");
    assert!(
        passed >= PASSING,
        "{passed} of {total} cases pass, fewer than the {PASSING} recorded"
    );
}

/// The vendored copy is the suite in `../shared` when that is present (CI's clone has it
/// beside the project; a plain checkout may not).
#[test]
fn the_vendored_suite_is_the_shared_one() {
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec/sql-on-fhir-v2-tests");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        return;
    };
    let vendored = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql-on-fhir-v2");
    for e in entries {
        let p = e.expect("an entry").path();
        let name = p.file_name().expect("a file name");
        let theirs = std::fs::read(&p).expect("readable");
        let ours = std::fs::read(vendored.join(name)).expect("vendored copy of every file");
        assert_eq!(
            ours,
            theirs,
            "{} differs from ../shared",
            name.to_string_lossy()
        );
    }
}
