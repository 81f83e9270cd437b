#![allow(clippy::unwrap_used)] // tests fail loudly by design

use aqueduct_config::*;

fn err(text: &str) -> String {
    parse(text, "aqueduct.toml").unwrap_err().to_string()
}

#[test]
fn the_shipped_example_is_valid() {
    let c = load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../aqueduct.example.toml"
    )))
    .unwrap();
    let acme = &c.organizations["acme"];
    assert_eq!(acme.connections.len(), 3);
    let epic = &acme.connections["epic-main"];
    assert_eq!(epic.profile, "epic");
    assert_eq!(
        epic.schedule,
        Some(Schedule::Every(std::time::Duration::from_secs(6 * 3600)))
    );
    assert_eq!(
        epic.overrides
            .get("paging")
            .and_then(|p| p.get("default_page_size"))
            .and_then(|v| v.as_integer()),
        Some(500)
    );
    assert!(matches!(epic.auth, AuthConfig::SmartBackend { .. }));
    assert_eq!(acme.connections["open-hapi"].auth, AuthConfig::None);
}

#[test]
fn unknown_keys_are_rejected_with_path_and_line() {
    let e = err(
        "[store]\nlocation = \"x.db\"\n\n[organizations.acme.connections.epic]\nbase_url = \"https://e.example/fhir\"\npage_sise = 5\n",
    );
    assert!(e.contains("aqueduct.toml:6"), "{e}");
    assert!(e.contains("organizations.acme.connections.epic"), "{e}");
    assert!(e.contains("page_sise"), "{e}");
}

#[test]
fn wrong_types_are_rejected_with_path_and_line() {
    let e = err(
        "[organizations.acme.connections.epic]\nbase_url = \"https://e.example/fhir\"\nresource_types = \"Patient\"\n",
    );
    assert!(e.contains(":3"), "{e}");
    assert!(e.contains("resource_types"), "{e}");
}

#[test]
fn a_base_url_that_is_not_a_url_is_rejected() {
    let e = err("[organizations.acme.connections.epic]\nbase_url = \"not a url\"\n");
    assert!(e.contains("base_url"), "{e}");
}

#[test]
fn syntax_errors_name_the_line() {
    let e = err("[store]\nlocation = \n");
    assert!(e.contains("aqueduct.toml:2"), "{e}");
}

#[test]
fn inline_secrets_are_refused_unless_allowed() {
    let text = "[organizations.acme.connections.x]\nbase_url = \"https://e.example\"\nauth = { method = \"bearer\", token = { value = \"abc\" } }\n";
    let e = err(text);
    assert!(
        e.contains("organizations.acme.connections.x.auth.token"),
        "{e}"
    );
    assert!(!e.contains("abc"), "the secret must not be echoed: {e}");
    let ok = parse(&format!("allow_inline_secrets = true\n{text}"), "t").unwrap();
    let tok = ok.find_connection("x").unwrap().config.auth.secrets()[0]
        .1
        .resolve("token")
        .unwrap();
    assert_eq!(tok, "abc");
}

#[test]
fn a_plain_string_secret_is_refused() {
    let e = err(
        "[organizations.acme.connections.x]\nbase_url = \"https://e.example\"\nauth = { method = \"bearer\", token = \"abc\" }\n",
    );
    assert!(e.contains("secret must be a reference"), "{e}");
}

#[test]
fn secrets_resolve_from_env_and_file_and_report_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret.txt");
    std::fs::write(&f, "from-file\n").unwrap();
    assert_eq!(
        SecretRef::File(f.display().to_string())
            .resolve("x")
            .unwrap(),
        "from-file"
    );
    let e = SecretRef::Env("AQUEDUCT_TEST_SURELY_UNSET".into())
        .resolve("client secret of acme/epic")
        .unwrap_err();
    assert!(e.to_string().contains("AQUEDUCT_TEST_SURELY_UNSET"), "{e}");
    assert!(e.to_string().contains("acme/epic"), "{e}");
    assert!(format!("{:?}", SecretRef::Inline("hunter2".into())).contains("redacted"));
}

#[test]
fn schedules_parse_or_explain() {
    assert_eq!(
        "every 15m".parse::<Schedule>().unwrap(),
        Schedule::Every(std::time::Duration::from_secs(900))
    );
    assert_eq!(
        "daily 02:30".parse::<Schedule>().unwrap(),
        Schedule::DailyAt {
            hour: 2,
            minute: 30
        }
    );
    for bad in ["every 0h", "every h", "daily 25:00", "hourly", "every 5y"] {
        assert!(
            bad.parse::<Schedule>()
                .unwrap_err()
                .contains("invalid schedule"),
            "{bad}"
        );
    }
}

#[test]
fn bad_names_are_rejected() {
    let e = err("[organizations.\"acme corp\".connections.x]\nbase_url = \"https://e.example\"\n");
    assert!(e.contains("organizations.acme corp"), "{e}");
}

#[test]
fn connections_are_found_by_qualified_or_unique_name() {
    let text = "[organizations.a.connections.epic]\nbase_url = \"https://a.example\"\n[organizations.b.connections.epic]\nbase_url = \"https://b.example\"\n[organizations.b.connections.payer]\nbase_url = \"https://p.example\"\n";
    let c = parse(text, "t").unwrap();
    assert_eq!(
        c.find_connection("b/epic")
            .unwrap()
            .config
            .base_url
            .as_str(),
        "https://b.example/"
    );
    assert_eq!(c.find_connection("payer").unwrap().organization, "b");
    assert!(c.find_connection("epic").is_err(), "ambiguous");
    assert!(c.find_connection("nope").is_err());
}

#[test]
fn an_empty_file_is_a_valid_config_with_the_default_store() {
    let c = parse("", "t").unwrap();
    assert_eq!(c.store.location, DEFAULT_STORE);
}

#[test]
fn an_unsupported_signing_algorithm_is_refused_with_key_and_line() {
    let e = err(
        "[organizations.acme.connections.epic]\nbase_url = \"https://e.example/fhir\"\n\n[organizations.acme.connections.epic.auth]\nmethod = \"smart-backend\"\nclient_id = \"c\"\nprivate_key = { file = \"k.pem\" }\nalgorithm = \"HS256\"\n",
    );
    assert!(e.contains("aqueduct.toml:8"), "{e}");
    assert!(
        e.contains("organizations.acme.connections.epic.auth.algorithm"),
        "{e}"
    );
    assert!(e.contains("HS256") && e.contains("RS384"), "{e}");
    // inline form: the line of the inline table
    let e = err(
        "[organizations.acme.connections.epic]\nbase_url = \"https://e.example/fhir\"\nauth = { method = \"smart-backend\", client_id = \"c\", private_key = { env = \"K\" }, algorithm = \"none\" }\n",
    );
    assert!(e.contains("aqueduct.toml:3"), "{e}");
}

#[test]
fn errors_found_after_parsing_carry_the_line() {
    let e = err("\n\n[organizations.acme.connections.x]\nbase_url = \"ftp://e.example\"\n");
    assert!(e.contains("aqueduct.toml:4"), "{e}");
    assert!(e.contains("connections.x.base_url"), "{e}");
}

#[test]
fn unset_secret_variables_are_reported_at_check_time_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let present = dir.path().join("present.pem");
    std::fs::write(&present, "x").unwrap();
    let text = format!(
        "[vault]\nkey = {{ env = \"AQUEDUCT_TEST_UNSET_VAULT_KEY\" }}\n\n[organizations.acme.connections.a]\nbase_url = \"https://a.example\"\nauth = {{ method = \"smart-standalone\", client_id = \"c\", client_secret = {{ env = \"PATH\" }} }}\n\n[organizations.acme.connections.b]\nbase_url = \"https://b.example\"\n[organizations.acme.connections.b.auth]\nmethod = \"smart-backend\"\nclient_id = \"c\"\nprivate_key = {{ file = \"{}\" }}\n\n[organizations.acme.connections.c]\nbase_url = \"https://c.example\"\n[organizations.acme.connections.c.auth]\nmethod = \"client-credentials\"\nclient_id = \"c\"\nclient_secret = {{ file = \"{}/missing.txt\" }}\n",
        present.display(),
        dir.path().display()
    );
    // loading does not need the secrets...
    let c = parse(&text, "aqueduct.toml").unwrap();
    // ...checking does, and reports each missing one where it is written
    let problems: Vec<String> = c
        .check_environment()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("aqueduct.toml:2")
            && problems[0].contains("vault.key")
            && problems[0].contains("AQUEDUCT_TEST_UNSET_VAULT_KEY is not set"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].contains("aqueduct.toml:20")
            && problems[1].contains("organizations.acme.connections.c.auth.client_secret")
            && problems[1].contains("missing.txt"),
        "{}",
        problems[1]
    );
}

#[test]
fn free_form_tables_are_typed_with_key_path_and_line() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Thresholds {
        drop_ratio: f64,
        #[serde(default)]
        rules: Vec<Rule>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rule {
        name: String,
    }
    let c = parse(
        "[monitor]\ndrop_ratio = 0.5\n\n[alerts]\ndrop_ratio = \"high\"\n",
        "aqueduct.toml",
    )
    .unwrap();
    let ok: Thresholds = c.typed_table(&["monitor"], &c.monitor).unwrap();
    assert!((ok.drop_ratio - 0.5).abs() < f64::EPSILON);
    let e = c
        .typed_table::<Thresholds>(&["alerts"], &c.alerts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("aqueduct.toml:5") && e.contains("alerts.drop_ratio"),
        "{e}"
    );
    let c = parse(
        "[monitor]\ndrop_ratio = 0.5\n[[monitor.rules]]\nname = \"a\"\n[[monitor.rules]]\nnmae = \"b\"\n",
        "aqueduct.toml",
    )
    .unwrap();
    let e = c
        .typed_table::<Thresholds>(&["monitor"], &c.monitor)
        .unwrap_err()
        .to_string();
    assert!(e.contains("aqueduct.toml:6") && e.contains("nmae"), "{e}");
}

/// The committed fuzz corpus goes through the function the fuzz target calls (CI builds no
/// fuzzer).
#[test]
fn fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_parse");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        aqueduct_config::fuzzing::config_text(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 5, "only {n} corpus files in {}", dir.display());
}
