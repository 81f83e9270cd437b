//! The binary as a user meets it: help, version, exit codes, one-line errors, JSON output.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::{Command, Output};

fn aqueduct(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .current_dir(dir)
        .env_remove("AQUEDUCT_CONFIG")
        .env_remove("AQUEDUCT_STORE")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_explains_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = aqueduct(&["--help"], dir.path());
    assert!(out.status.success());
    let help = text(&out.stdout);
    let commands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 4, "{help}");
    for c in &commands {
        let sub = aqueduct(&[c, "--help"], dir.path());
        assert!(sub.status.success(), "{c} --help failed");
        let s = text(&sub.stdout);
        assert!(
            s.lines().next().is_some_and(|l| l.len() > 10),
            "{c} has no description: {s}"
        );
    }
}

#[test]
fn version_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let out = aqueduct(&["--version"], dir.path());
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("aqueduct "));
}

#[test]
fn a_bad_config_fails_with_one_line_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aqueduct.toml"),
        "[store]\nlocaton = \"x.db\"\n",
    )
    .unwrap();
    let out = aqueduct(&["config", "check"], dir.path());
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("aqueduct.toml:2") && err.contains("store.locaton"),
        "{err}"
    );
}

#[test]
fn config_check_reports_json_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aqueduct.toml"),
        "[organizations.acme.connections.open]\nbase_url = \"http://127.0.0.1:9/fhir\"\nprofile = \"hapi\"\n",
    )
    .unwrap();
    let out = aqueduct(&["config", "check", "--json"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["connections"][0]["connection"], "open");
}

#[test]
fn status_of_a_new_store_creates_it_and_says_it_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let out = aqueduct(&["status", "--json"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["organizations"].as_array().unwrap().len(), 0);
    assert!(dir.path().join("aqueduct-data/aqueduct.db").exists());
}

#[test]
fn status_on_an_unusable_store_fails_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let out = aqueduct(&["status", "--store", "file/sub/store.db"], dir.path());
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("file/sub"),
        "{err}"
    );
}

#[test]
fn keys_generate_then_jwks_publishes_only_the_public_part() {
    let dir = tempfile::tempdir().unwrap();
    let out = aqueduct(
        &["keys", "generate", "--alg", "ES384", "--out", "k.pem"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = aqueduct(&["keys", "generate", "--out", "k.pem"], dir.path());
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );
    let out = aqueduct(&["keys", "jwks", "k.pem"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = &v["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["alg"], "ES384");
    assert!(
        key.get("d").is_none(),
        "the private part must not be published"
    );
}

/// `config check` finds, with key path and line, what a sync would only trip over later:
/// unknown and wrongly typed overrides, unknown profiles, unset secret variables, [monitor],
/// [alerts] and [engine] keys.
#[test]
fn config_check_tells_the_truth_about_profiles_secrets_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aqueduct.toml"),
        r#"[vault]
key = { env = "AQUEDUCT_TEST_UNSET_VAULT" }

[organizations.acme.connections.a]
base_url = "https://a.example/fhir"
profile = "epci"

[organizations.acme.connections.b]
base_url = "https://b.example/fhir"
profile = "epic"
auth = { method = "smart-standalone", client_id = "c", client_secret = { env = "AQUEDUCT_TEST_UNSET_SECRET" } }
[organizations.acme.connections.b.overrides]
page_size = 500

[organizations.acme.connections.c]
base_url = "https://c.example/fhir"
profile = "cerner"
[organizations.acme.connections.c.overrides.paging]
default_page_size = 100
max_page_size = "big"

[monitor]
baseline_runs = 3
count_drop_shar = 0.5

[alerts]
error_rate = "high"

[engine]
claim_ttl = "soon"
poll_intervall = "1s"
"#,
    )
    .unwrap();
    let out = aqueduct(&["config", "check"], dir.path());
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let expect = [
        ("aqueduct.toml:2", "vault.key", "AQUEDUCT_TEST_UNSET_VAULT"),
        (
            "aqueduct.toml:11",
            "connections.b.auth.client_secret",
            "AQUEDUCT_TEST_UNSET_SECRET",
        ),
        ("aqueduct.toml:6", "connections.a.profile", "epci"),
        (
            "aqueduct.toml:13",
            "connections.b.overrides.page_size",
            "page_size",
        ),
        (
            "aqueduct.toml:20",
            "connections.c.overrides.paging.max_page_size",
            "invalid",
        ),
        (
            "aqueduct.toml:24",
            "monitor.count_drop_shar",
            "unknown field",
        ),
        ("aqueduct.toml:27", "alerts.error_rate", "invalid type"),
        ("aqueduct.toml:30", "engine.claim_ttl", "not a duration"),
    ];
    for (line, key, word) in expect {
        assert!(
            err.lines()
                .any(|l| l.contains(line) && l.contains(key) && l.contains(word)),
            "no line with {line} {key} {word} in:\n{err}"
        );
    }
    assert_eq!(err.trim().lines().count(), expect.len(), "{err}");

    let out = aqueduct(&["config", "check", "--json"], dir.path());
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"].as_array().unwrap().len(), expect.len());
    assert_eq!(v["problems"][0]["line"], 2);
}

#[test]
fn config_check_refuses_a_symmetric_signing_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aqueduct.toml"),
        "[organizations.acme.connections.b]\nbase_url = \"https://b.example/fhir\"\nauth = { method = \"smart-backend\", client_id = \"c\", private_key = { env = \"K\" }, algorithm = \"HS256\" }\n",
    )
    .unwrap();
    let out = aqueduct(&["config", "check"], dir.path());
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("aqueduct.toml:3") && err.contains("auth.algorithm") && err.contains("HS256"),
        "{err}"
    );
}

#[test]
fn status_counts_hl7_messages_converted_unconverted_and_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = aqueduct_store::open(path.to_str().unwrap()).await.unwrap();
        let msg = |c: &str| {
            let bytes = format!("MSH|^~\\&|LAB|HOSP|||2026||QBP^Q22|{c}|P|2.5\r").into_bytes();
            aqueduct_store::InboundMessage {
                sender: "LAB^HOSP".into(),
                control_id: c.into(),
                content_hash: aqueduct_store::content_hash(&bytes),
                connection: "hl7-HOSP".into(),
                message_type: "QBP^Q22".into(),
                received_at: chrono::Utc::now(),
                bytes,
            }
        };
        let r = store
            .store_inbound_messages("acme", &[msg("1"), msg("2"), msg("3")])
            .await
            .unwrap();
        let outcome = |id, error: Option<&str>| aqueduct_store::InboundOutcome {
            id,
            error: error.map(str::to_string),
            refresh: Vec::new(),
        };
        store
            .complete_inbound(
                "acme",
                &[
                    outcome(r[0].id, None),
                    outcome(r[1].id, Some("message type QBP^Q22 is not converted")),
                ],
            )
            .await
            .unwrap();
    });
    let store = path.to_str().unwrap();
    let out = aqueduct(&["status", "--store", store, "--org", "acme"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(
            "HL7 v2 messages: 3 stored, 1 converted, 1 unconverted, 1 waiting for conversion"
        ),
        "{shown}"
    );
    let out = aqueduct(
        &["status", "--store", store, "--org", "acme", "--json"],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["organizations"][0]["hl7_messages"]["unconverted"], 1);
    assert_eq!(v["organizations"][0]["hl7_messages"]["pending"], 1);
}
