//! A newcomer's path: run the simulator, write a config, `aqueduct connect`, approve in the
//! "browser" (an HTTP GET of the printed URL), then see the grant in `aqueduct status`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The simulator with three patients, as `aqueduct sim` runs.
fn sim(args: &[&str]) -> (aqueduct_testkit::process::Killed, String) {
    let mut all = vec!["--patients", "3"];
    all.extend_from_slice(args);
    aqueduct_testkit::process::start_sim(env!("CARGO_BIN_EXE_aqueduct"), &all)
}

#[tokio::test]
async fn connect_runs_a_standalone_launch_and_status_shows_the_grant() {
    standalone_launch(
        "epic",
        "epic",
        r#"{ method = "smart-standalone", client_id = "sim-public-app" }"#,
    )
    .await;
}

#[tokio::test]
async fn connect_a_payer_with_a_confidential_client() {
    standalone_launch(
        "payer",
        "cms-payer",
        r#"{ method = "smart-standalone", client_id = "sim-confidential-app", client_secret = { value = "sim-confidential-secret" } }"#,
    )
    .await;
}

async fn standalone_launch(personality: &str, profile: &str, auth: &str) {
    let (_sim, base) = sim(&["--personality", personality]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aqueduct.toml"),
        format!(
            r#"allow_inline_secrets = true
[vault]
key = {{ value = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }}
[organizations.acme.connections.epic]
base_url = "{base}"
profile = "{profile}"
resource_types = ["Patient", "Observation", "Condition"]
auth = {auth}
"#
        ),
    )
    .unwrap();
    let mut connect = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(["connect", "acme/epic", "--json", "--timeout-secs", "30"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = connect.stderr.take().unwrap();
    let url = {
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .expect("connect exited before printing the URL")
                .unwrap();
            if let Some(u) = line.strip_prefix("authorize at: ") {
                break u.to_string();
            }
        }
    };
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(url.contains("aud="), "{url}");
    // The browser: the simulator auto-approves and redirects to the loopback listener.
    let resp = reqwest::get(&url).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let out = tokio::task::spawn_blocking(move || connect.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["patient"].as_str().is_some_and(|p| !p.is_empty()), "{v}");
    assert!(
        v["granted_scopes"]
            .as_str()
            .unwrap()
            .contains("Observation"),
        "{v}"
    );
    assert_eq!(v["refresh_token"], true);

    let status = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(["status", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(status.status.success());
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let conn = &s["organizations"][0]["connections"][0];
    assert_eq!(conn["last_auth_event"]["outcome"], "success", "{s}");
    assert!(
        conn["tokens"]["granted_scopes"]
            .as_str()
            .unwrap()
            .contains("Observation"),
        "{s}"
    );
    assert!(conn["tokens"]["expires_at"].as_str().is_some(), "{s}");
    // Tokens are stored encrypted: the raw store never holds the access token in clear.
    let db = std::fs::read(dir.path().join("aqueduct-data/aqueduct.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("\"access_token\""));
}

#[tokio::test]
async fn connect_gets_a_backend_services_token_with_a_generated_key() {
    let (_sim, base) = sim(&["--personality", "reference"]);
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_aqueduct"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    assert!(
        run(&["keys", "generate", "--alg", "RS384", "--out", "backend.pem"])
            .status
            .success()
    );
    let jwks = run(&["keys", "jwks", "backend.pem"]);
    assert!(jwks.status.success());
    // Registration at the EHR: the simulator's admin interface takes the public JWKS.
    let client = reqwest::Client::new();
    let origin = base.split("/fhir").next().unwrap();
    let reg = client
        .post(format!("{origin}/admin/backend-clients/aqueduct-backend"))
        .body(jwks.stdout.clone())
        .send()
        .await
        .unwrap();
    assert!(reg.status().is_success(), "{}", reg.status());
    std::fs::write(
        dir.path().join("aqueduct.toml"),
        format!(
            r#"allow_inline_secrets = true
[vault]
key = {{ value = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }}
[organizations.acme.connections.ref]
base_url = "{base}"
profile = "hapi"
resource_types = ["Patient", "Observation"]
auth = {{ method = "smart-backend", client_id = "aqueduct-backend", private_key = {{ file = "backend.pem" }}, algorithm = "RS384" }}
"#
        ),
    )
    .unwrap();
    let out = run(&["connect", "ref", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["granted_scopes"].as_str().unwrap().contains("system/"),
        "{v}"
    );
    let status = run(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("granted scopes: system/"), "{text}");

    // Rotate the vault key: everything stored is re-encrypted; only the new key opens it.
    let new_key = "ERERERERERERERERERERERERERERERERERERERERERE=";
    let rotated = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(["keys", "rotate-vault", "--new-key-env", "AQ_NEW_VAULT_KEY"])
        .env("AQ_NEW_VAULT_KEY", new_key)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let old = String::from_utf8_lossy(&run(&["status"]).stdout).to_string();
    assert!(
        old.contains("tokens: cannot be read"),
        "the old key no longer opens them: {old}"
    );
    let cfg = std::fs::read_to_string(dir.path().join("aqueduct.toml")).unwrap();
    std::fs::write(
        dir.path().join("aqueduct.toml"),
        cfg.replace("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", new_key),
    )
    .unwrap();
    let new = String::from_utf8_lossy(&run(&["status"]).stdout).to_string();
    assert!(new.contains("granted scopes: system/"), "{new}");
}
