//! `aqueduct bulk export` against a simulated server, as a user runs it: a config file, one
//! command, an honest exit code and report, and `--cancel`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

fn aqueduct(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .current_dir(dir)
        .env_remove("AQUEDUCT_CONFIG")
        .env_remove("AQUEDUCT_STORE")
        .output()
        .unwrap()
}

#[test]
fn bulk_export_imports_then_incremental_then_cancel() {
    let (_sim, base) = aqueduct_testkit::process::start_sim(
        env!("CARGO_BIN_EXE_aqueduct"),
        &[
            "--patients",
            "3",
            "--personality",
            "reference",
            "--resources-per-patient",
            "40",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aqueduct.toml"),
        format!(
            r#"allow_inline_secrets = true
[vault]
key = {{ value = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }}
[organizations.acme.connections.src]
base_url = "{base}"
profile = "generic"
auth = {{ method = "client-credentials", client_id = "sim-confidential-app", client_secret = {{ value = "sim-confidential-secret" }}, scopes = "system/*.read" }}
"#
        ),
    )
    .unwrap();
    let out = aqueduct(
        dir.path(),
        &["bulk", "export", "src", "--patients", "--json"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        stdout.chars().take(3000).collect::<String>()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"]["outcome"], "complete", "{v}");
    assert!(
        v["report"]["by_type"]["Observation"]["inserted"]
            .as_u64()
            .unwrap()
            > 0,
        "{v}"
    );
    assert!(
        v["normalized"].is_object(),
        "normalization ran after the import: {v}"
    );
    // incremental: nothing changed, nothing new
    let out = aqueduct(
        dir.path(),
        &["bulk", "export", "src", "--patients", "--incremental"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("since"));
    let out = aqueduct(dir.path(), &["bulk", "export", "src", "--cancel"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 stored Bulk job(s)"));
}
