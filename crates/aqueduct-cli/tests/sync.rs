//! `aqueduct sync` against a simulated server, as a user runs it: config file, one command,
//! an honest exit code and report.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::{Command, Stdio};

/// The simulator with three patients, as `aqueduct sim` runs.
fn sim(args: &[&str]) -> (aqueduct_testkit::process::Killed, String) {
    let mut all = vec!["--patients", "3"];
    all.extend_from_slice(args);
    aqueduct_testkit::process::start_sim(env!("CARGO_BIN_EXE_aqueduct"), &all)
}

/// Registers a backend-services client (system/*.read) the way an EHR's portal would.
fn backend_auth(dir: &std::path::Path, base: &str) -> String {
    assert!(
        aqueduct(
            dir,
            &["keys", "generate", "--alg", "ES384", "--out", "k.pem"]
        )
        .status
        .success()
    );
    let jwks = aqueduct(dir, &["keys", "jwks", "k.pem"]).stdout;
    let origin = base.split("/fhir").next().unwrap();
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "--data-binary",
            "@-",
            &format!("{origin}/admin/backend-clients/aq-backend"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&jwks)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "registration failed");
    r#"{ method = "smart-backend", client_id = "aq-backend", private_key = { file = "k.pem" }, algorithm = "ES384" }"#.to_string()
}

const CONFIDENTIAL: &str = r#"{ method = "client-credentials", client_id = "sim-confidential-app", client_secret = { value = "sim-confidential-secret" } }"#;

fn config(dir: &std::path::Path, base: &str, profile: &str, types: &str, auth: &str) {
    std::fs::write(
        dir.join("aqueduct.toml"),
        format!(
            r#"allow_inline_secrets = true
[vault]
key = {{ value = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }}
[organizations.acme.connections.src]
base_url = "{base}"
profile = "{profile}"
resource_types = [{types}]
auth = {auth}
"#
        ),
    )
    .unwrap();
}

fn aqueduct(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn a_complete_sync_exits_zero_and_status_shows_the_data() {
    let (_sim, base) = sim(&[
        "--personality",
        "reference",
        "--resources-per-patient",
        "60",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let auth = backend_auth(dir.path(), &base);
    config(
        dir.path(),
        &base,
        "hapi",
        r#""Patient", "Condition", "Observation", "Encounter""#,
        &auth,
    );
    let out = aqueduct(dir.path(), &["sync", "src", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
            .chars()
            .take(3000)
            .collect::<String>()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["outcome"], "complete", "{v}");
    assert_eq!(v["report"]["patients"], 3);
    assert!(
        v["report"]["by_type"]["Observation"]["fetched"]
            .as_u64()
            .unwrap()
            > 0,
        "{v}"
    );
    assert_eq!(
        v["findings"].as_array().unwrap().len(),
        0,
        "a clean sync raises no finding: {v}"
    );
    let status = aqueduct(dir.path(), &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("complete") && text.contains("Observation"),
        "{text}"
    );
    // A second, incremental sync asks only for changes and still completes.
    let again = aqueduct(dir.path(), &["sync", "src", "--incremental", "--json"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Release files named in aqueduct.toml apply to the normalization after a sync: new
    // tables, new fingerprint, every source derived again.
    let terms = dir.path().join("terms");
    std::fs::create_dir(&terms).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../aqueduct-normalize/tests/fixtures/cvx_sample.txt"
        ),
        terms.join("cvx.txt"),
    )
    .unwrap();
    let toml = dir.path().join("aqueduct.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text = text.replacen("[vault]", "[terminology]\ndir = \"terms\"\n[vault]", 1);
    std::fs::write(&toml, text).unwrap();
    let with_terms = aqueduct(dir.path(), &["sync", "src", "--incremental", "--json"]);
    assert_eq!(
        with_terms.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&with_terms.stderr)
    );
    let w: serde_json::Value = serde_json::from_slice(&with_terms.stdout).unwrap();
    assert_ne!(
        w["normalized"]["fingerprint"], v["normalized"]["fingerprint"],
        "{w}"
    );
    let obs = w["normalized"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resource_type"] == "Observation")
        .unwrap();
    assert!(obs["resources"].as_u64().unwrap() > 0, "{obs}");
    assert_eq!(obs["unchanged"], 0, "{obs}");
    // A directory that is not there is named in a one-line error.
    std::fs::remove_dir_all(&terms).unwrap();
    let bad = aqueduct(dir.path(), &["normalize"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("terminology directory terms"), "{err}");
}

#[test]
fn a_partial_sync_is_reported_as_partial_with_exit_code_two() {
    // The cerner-like server claims CarePlan in its CapabilityStatement but rejects searches.
    let (_sim, base) = sim(&["--personality", "cerner", "--resources-per-patient", "60"]);
    let dir = tempfile::tempdir().unwrap();
    config(
        dir.path(),
        &base,
        "cerner",
        r#""Patient", "Condition", "CarePlan""#,
        CONFIDENTIAL,
    );
    let out = aqueduct(dir.path(), &["sync", "src"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("outcome partial") && text.contains("CarePlan"),
        "{text}"
    );
    let findings = aqueduct(dir.path(), &["findings", "--json"]);
    assert!(
        findings.status.success(),
        "{}",
        String::from_utf8_lossy(&findings.stderr)
    );
    assert!(
        String::from_utf8_lossy(&findings.stdout).contains("partial"),
        "{}",
        String::from_utf8_lossy(&findings.stdout)
    );
}
