//! schemathesis (PyPI), as published, fuzzes `aqueduct serve`'s REST API from the OpenAPI
//! document the server itself serves at `/api/openapi.json`: every operation, with valid and
//! invalid inputs, under every check schemathesis has. No answer may be a 5xx, and every
//! answer must match the document (status, content type, headers, body schema).
//!
//! Needs python3 with pip; schemathesis is installed into the kit (`tests/schemathesis/.pydeps`,
//! gitignored) from the pinned `requirements.txt` when missing or stale. A missing tool fails
//! the test with how to install it: it never skips.
//!
//! The kit: `run.py` starts schemathesis's CLI (with a workaround for a CPython 3.11 bug it
//! explains), `schemathesis.toml` gives it the demo's real connection and patient and holds the
//! one exception to a check (why is written there). No check is excluded.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "install python3 and pip with `apt-get install python3 python3-pip` \
     (Debian) or your platform's packages; `.ci/run` installs them in CI";
/// Test cases per operation: enough to reach every status an operation documents, few enough
/// that the run stays well under a minute and a half on two cores (about 15 s here).
const MAX_EXAMPLES: &str = "100";
/// The demo connection whose data the operations are fuzzed with.
const CONNECTION: &str = "epic-main";

fn kit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis")
}

fn aqueduct(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .current_dir(dir)
        .env_remove("AQUEDUCT_VAULT_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aqueduct {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Installs the pinned schemathesis into the kit unless the stamp there matches the
/// requirements; python3 or pip missing fails the test, saying how to install them.
fn python_deps() -> PathBuf {
    let kit = kit();
    let target = kit.join(".pydeps");
    let has_pip = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_pip,
        "python3 with pip (for schemathesis) is needed and was not found; {INSTALL_HINT}"
    );
    let lock = kit.join("requirements.txt");
    let want = std::fs::read(&lock).unwrap();
    let stamp = target.join(".aqueduct-installed-from");
    if std::fs::read(&stamp).ok().as_deref() != Some(&want[..]) {
        eprintln!("schemathesis: installing into {}", target.display());
        let out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--upgrade",
                "--target",
            ])
            .arg(&target)
            .arg("-r")
            .arg(&lock)
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 -m pip ({e}); {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "pip install --target .pydeps -r requirements.txt failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(stamp, want).unwrap();
    }
    target
}

/// The `aqueduct serve` child, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    // The tool first: a machine without python3 and pip fails here, saying what to install.
    let pydeps = python_deps();

    let dir = tempfile::tempdir().unwrap();
    aqueduct(dir.path(), &["demo", "--patients", "2"]);
    // schemathesis's own admin key: it may revoke it (DELETE /api-keys/{id}), after which it
    // is answered 401, which the document allows; nothing else in this test uses it.
    let key = String::from_utf8(
        aqueduct(
            dir.path(),
            &["api-keys", "create", "--org", "demo", "--scope", "admin"],
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(key.starts_with("aqk_"), "{key}");

    let port = free_port();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_aqueduct"))
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                // actions only enqueue refresh requests: no engine runs them
                "--no-engine",
            ])
            .current_dir(dir.path())
            .env_remove("AQUEDUCT_VAULT_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let origin = format!("http://127.0.0.1:{port}");
    let schema_url = format!("{origin}/api/openapi.json");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let doc: serde_json::Value = loop {
        // the document needs no credential
        if let Ok(r) = http.get(&schema_url).send().await
            && r.status().is_success()
        {
            break r.json().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "aqueduct serve did not answer on {origin}: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/api/v1/connections/{connection}/runs"]["get"].is_object(),
        "{doc}"
    );

    // A real patient, so that the record operations answer with data.
    let listed: serde_json::Value = http
        .get(format!(
            "{origin}/api/v1/connections/{CONNECTION}/patients?limit=1"
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let patient = listed["patients"][0]["id"].as_str().unwrap().to_string();

    // Everything but revoking keys first: the stateful phase follows GET /api-keys to
    // DELETE /api-keys/{id}, and revoking its own key would leave the rest 401s. Then the
    // revocation alone, with the key it may revoke.
    let main = schemathesis(
        &pydeps,
        &schema_url,
        &key,
        &patient,
        "--exclude-operation-id",
    )
    .await;
    let revoke = schemathesis(
        &pydeps,
        &schema_url,
        &key,
        &patient,
        "--include-operation-id",
    )
    .await;
    let main_out = String::from_utf8_lossy(&main.stdout);
    eprintln!("{main_out}");
    for (what, run) in [("all but revoke_key", &main), ("revoke_key", &revoke)] {
        assert!(
            run.status.success(),
            "schemathesis ({what}) found failures ({}):\n{}\n{}\n--- aqueduct serve's log:\n{}",
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    // It really ran: every operation of the document was tested.
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert!(operations >= 21, "{operations} operations");
    assert!(
        main_out.contains(&format!("{} selected / {operations} total", operations - 1)),
        "schemathesis did not test all {operations} operations:\n{main_out}"
    );
    assert!(
        String::from_utf8_lossy(&revoke.stdout).contains("1 selected"),
        "schemathesis did not test revoke_key"
    );
}

/// One schemathesis run over the document, every check on, with `filter` (an include or
/// exclude option) applied to the key revocation.
async fn schemathesis(
    pydeps: &Path,
    schema_url: &str,
    key: &str,
    patient: &str,
    filter: &str,
) -> Output {
    let kit = kit();
    let mut cmd = Command::new("python3");
    cmd.arg(kit.join("run.py"))
        .arg("--config-file")
        .arg(kit.join("schemathesis.toml"))
        .args([
            "run",
            schema_url,
            "--header",
            &format!("Authorization: Bearer {key}"),
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "16",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            filter,
            "revoke_key",
        ])
        .current_dir(std::env::temp_dir())
        .env("PYTHONPATH", pydeps)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("AQUEDUCT_ST_CONNECTION", CONNECTION)
        .env("AQUEDUCT_ST_PATIENT", patient)
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || {
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {INSTALL_HINT}"))
    })
    .await
    .unwrap()
}
