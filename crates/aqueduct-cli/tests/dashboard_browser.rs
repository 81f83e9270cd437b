//! The dashboard in a real headless Chromium (Debian's `chromium`, driven by playwright-core
//! from npm, pinned in `tests/dashboard_browser/package-lock.json`): `aqueduct serve` with its
//! engine on a store filled by `aqueduct sync` from the simulator (with injected 500s), then in
//! the browser: a wrong key refused, sign in, open the connection, follow a failed request,
//! open a patient's record (and one whose name is `<script>`: shown as text, nothing runs),
//! map a local code from the review queue, start a sync and see it finish, a POST without the
//! CSRF token refused with 403, sign out. Afterwards the store must hold what the clicks did.
//!
//! Needs node, npm and chromium (`AQUEDUCT_CHROMIUM` names another binary); playwright-core is
//! installed into the kit (`tests/dashboard_browser/node_modules`, gitignored) from the lock
//! file when missing or stale, and never downloads a browser. A missing tool fails the test
//! with how to install it: it never skips.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aqueduct_store::{ConnectionRef, ParseStatus, RawResource, RefreshOutcome};
use aqueduct_testkit::process::start_sim;

const INSTALL_HINT: &str = "install node, npm and chromium with `apt-get install nodejs npm \
     chromium` (Debian) or your platform's packages; `.ci/run` installs them in CI";

fn kit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard_browser")
}

fn chromium() -> String {
    std::env::var("AQUEDUCT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run {:?} ({e}); {INSTALL_HINT}",
            cmd.get_program()
        )
    });
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn require(cmd: &mut Command, what: &str) {
    let ok = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{what} is needed and was not found; {INSTALL_HINT}");
}

/// playwright-core from the lock file, installed once per lock file contents.
fn node_deps() {
    let kit = kit();
    require(Command::new("node").arg("--version"), "node");
    require(Command::new("npm").arg("--version"), "npm");
    require(Command::new(chromium()).arg("--version"), "chromium");
    let want = std::fs::read(kit.join("package-lock.json")).unwrap();
    let stamp = kit.join("node_modules/.aqueduct-installed-from");
    if std::fs::read(&stamp).ok().as_deref() == Some(&want[..]) {
        return;
    }
    eprintln!("dashboard_browser: installing playwright-core (npm ci)");
    run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .current_dir(&kit),
        "installing playwright-core (npm ci)",
    );
    std::fs::write(stamp, want).unwrap();
}

fn aqueduct(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
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
async fn a_person_signs_in_follows_a_failure_maps_a_code_and_syncs_in_chromium() {
    node_deps();
    // 500s on some requests: retried, so the record completes, and the ledger holds failures
    let (_sim, base) = start_sim(
        env!("CARGO_BIN_EXE_aqueduct"),
        &[
            "--patients",
            "3",
            "--resources-per-patient",
            "40",
            "--fault",
            "server-error-500@0.08",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aqueduct.toml"),
        format!(
            r#"allow_inline_secrets = true
[store]
location = "store.db"
[vault]
key = {{ value = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }}
[engine]
poll_interval = "100ms"
[organizations.acme.connections.ehr]
base_url = "{base}"
profile = "generic"
auth = {{ method = "client-credentials", client_id = "sim-confidential-app", client_secret = {{ value = "sim-confidential-secret" }} }}
"#
        ),
    )
    .unwrap();
    let synced = aqueduct(dir.path(), &["sync", "ehr"]);
    assert!(
        matches!(synced.status.code(), Some(0 | 2)),
        "aqueduct sync: {}\n{}",
        String::from_utf8_lossy(&synced.stdout),
        String::from_utf8_lossy(&synced.stderr)
    );
    // a patient whose name is markup: the browser must show it as text and run nothing
    {
        let store = aqueduct_store::open(dir.path().join("store.db").to_str().unwrap())
            .await
            .unwrap();
        let bytes = br#"{"resourceType":"Patient","id":"hostile","name":[{"family":"<script>alert(1)</script>","given":["<img src=x onerror=alert(2)>"]}]}"#;
        store
            .write_resources(
                &ConnectionRef::new("acme", "ehr"),
                &[RawResource {
                    resource_type: "Patient".into(),
                    logical_id: "hostile".into(),
                    version_id: None,
                    last_updated: None,
                    source_url: format!("{base}/Patient/hostile"),
                    patient_id: Some("hostile".into()),
                    parse_status: ParseStatus::Ok,
                    fetched_at: chrono::Utc::now(),
                    bytes: bytes.to_vec(),
                }],
            )
            .await
            .unwrap();
    }
    let key = aqueduct(
        dir.path(),
        &["api-keys", "create", "--org", "acme", "--scope", "write"],
    );
    assert!(key.status.success());
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();

    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_aqueduct"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let origin = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while !http
        .get(format!("{origin}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "aqueduct serve did not answer: {}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let flow = Command::new("node")
        .arg(kit().join("flow.mjs"))
        .args([&origin, &key, "ehr", &chromium(), "hostile"])
        .current_dir(kit())
        .output()
        .unwrap();
    assert!(
        flow.status.success(),
        "the browser flow failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&flow.stdout),
        String::from_utf8_lossy(&flow.stderr),
        std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
    );
    let seen: serde_json::Value = serde_json::from_slice(&flow.stdout).unwrap();
    eprintln!("the browser saw: {seen}");
    assert_eq!(seen["csrf_refused"], serde_json::json!([403, 403]));
    assert_eq!(seen["failed_request"]["outcome"], "failed");
    assert_eq!(seen["still_unmapped"], 0, "the mapped code left the queue");
    assert_eq!(seen["dialogs"], 0, "no script ran");

    // what the clicks did, in the store
    let store = aqueduct_store::open(dir.path().join("store.db").to_str().unwrap())
        .await
        .unwrap();
    let conn = ConnectionRef::new("acme", "ehr");
    let mappings = store.list_code_mappings(&conn).await.unwrap();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    assert_eq!(mappings[0].source_code, "LAB-GLU-POC");
    assert_eq!(mappings[0].target_code, "2345-7");
    // one sync raised (the refused POSTs raised none), done by the engine with a new run
    let raised = store.recent_refreshes("acme", 10).await.unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    let r = &raised[0];
    assert_eq!(r.request.reason, "dashboard:sync");
    assert_eq!(r.state, "done");
    assert!(
        matches!(
            r.outcome,
            Some(RefreshOutcome::Complete | RefreshOutcome::Partial)
        ),
        "{r:?}"
    );
    assert_eq!(seen["refresh_outcome"], r.outcome.unwrap().as_str());
    assert_eq!(
        seen["new_run"].as_str().unwrap(),
        r.run_ids[0].to_string(),
        "the page linked the run the request caused"
    );
    // the patient pages the browser opened are in the access log
    let reads = store.list_access("acme", None, None, 50).await.unwrap();
    assert!(
        reads
            .iter()
            .any(|e| e.event.action == "dashboard" && e.event.patient.is_some()),
        "{reads:?}"
    );
    let runs = store.list_runs(&conn, 10).await.unwrap();
    assert_eq!(runs.len(), 2, "the first sync and the dashboard's");
}
