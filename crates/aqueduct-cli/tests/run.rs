//! `aqueduct run` as an operator runs it: a config with a scheduled connection, the engine in
//! the foreground, then SIGKILL or SIGTERM in the middle of the sync and a second start. The
//! scheduled work is done exactly once: one refresh request, closed once, complete, and the
//! second process resumes the interrupted run instead of starting over.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aqueduct_store::{ConnectionRef, RefreshOutcome, RunOutcome, Store};
use aqueduct_testkit::process::{Killed, start_sim};

/// A simulator slow enough (20 requests/s, then 429) that a sync of its population takes
/// seconds.
fn slow_sim() -> (Killed, String) {
    start_sim(
        env!("CARGO_BIN_EXE_aqueduct"),
        &[
            "--patients",
            "12",
            "--resources-per-patient",
            "120",
            "--rate-limit",
            "20",
        ],
    )
}

fn write_config(dir: &std::path::Path, base: &str) {
    std::fs::write(
        dir.join("aqueduct.toml"),
        format!(
            r#"allow_inline_secrets = true
[store]
location = "store.db"
[vault]
key = {{ value = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" }}
[engine]
poll_interval = "100ms"
claim_ttl = "2s"
stale_run_after = "2s"
[organizations.acme.connections.ehr]
base_url = "{base}"
profile = "generic"
schedule = "every 1h"
auth = {{ method = "client-credentials", client_id = "sim-confidential-app", client_secret = {{ value = "sim-confidential-secret" }} }}
"#
        ),
    )
    .unwrap();
}

fn start_run(dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .arg("run")
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn conn() -> ConnectionRef {
    ConnectionRef::new("acme", "ehr")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn store(dir: &std::path::Path) -> std::sync::Arc<dyn Store> {
    aqueduct_store::open(dir.join("store.db").to_str().unwrap())
        .await
        .unwrap()
}

/// Waits until the scheduled sync is running and has stored some of the record.
fn wait_mid_sync(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    rt().block_on(async {
        loop {
            assert!(Instant::now() < deadline, "the sync never started");
            if dir.join("store.db").exists() {
                let s = store(dir).await;
                let running = s
                    .list_runs(&conn(), 1)
                    .await
                    .unwrap_or_default()
                    .first()
                    .is_some_and(|r| r.outcome == RunOutcome::Running);
                let stored: u64 = s
                    .count_by_type(&conn())
                    .await
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.live)
                    .sum();
                if running && stored > 20 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

fn finish_until_idle(dir: &std::path::Path) -> String {
    let out = start_run(dir, &["--until-idle"])
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The scheduled request was closed once, complete, by a run that resumed the first.
fn assert_done_once(dir: &std::path::Path, interrupted_error: &str) {
    rt().block_on(async {
        let s = store(dir).await;
        let requests = s.recent_refreshes("acme", 10).await.unwrap();
        assert_eq!(requests.len(), 1, "one slot fired once: {requests:?}");
        let r = &requests[0];
        assert_eq!(r.state, "done");
        assert_eq!(r.outcome, Some(RefreshOutcome::Complete), "{:?}", r.detail);
        let runs = s.list_runs(&conn(), 10).await.unwrap();
        assert_eq!(runs.len(), 2, "{runs:?}");
        let (last, first) = (&runs[0], &runs[1]);
        assert_eq!(r.run_ids, vec![last.id]);
        assert_eq!(first.outcome, RunOutcome::Failed);
        let err = first.error.as_deref().unwrap_or_default();
        assert!(err.starts_with(interrupted_error), "{err}");
        assert_eq!(last.outcome, RunOutcome::Complete);
        assert!(
            last.summary
                .as_deref()
                .unwrap_or_default()
                .contains(&format!("\"resumed_from\":{}", first.id)),
            "the second run resumed the first: {:?}",
            last.summary
        );
    });
}

#[test]
fn run_killed_mid_sync_is_resumed_by_the_next_run_and_done_once() {
    let (_sim, base) = slow_sim();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &base);
    let mut first = Killed(start_run(dir.path(), &[]));
    wait_mid_sync(dir.path());
    first.0.kill().unwrap(); // SIGKILL: no chance to clean up
    first.0.wait().unwrap();
    // its claim and its run's heartbeat lapse (2 s each); then the next process takes over
    std::thread::sleep(Duration::from_millis(2500));
    let text = finish_until_idle(dir.path());
    assert!(
        text.contains("1 refresh request claim(s) handled"),
        "{text}"
    );
    assert_done_once(
        dir.path(),
        "interrupted: the process running this sync stopped",
    );
}

#[test]
fn sigterm_checkpoints_exits_zero_and_the_next_run_finishes_the_work() {
    let (_sim, base) = slow_sim();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &base);
    let mut first = Killed(start_run(dir.path(), &[]));
    let pid = first.0.id().to_string();
    wait_mid_sync(dir.path());
    let stopped_at = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = first.0.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "stops promptly: {:?}",
        stopped_at.elapsed()
    );
    // the request went back to the queue at once: no lease to wait for
    let text = finish_until_idle(dir.path());
    assert!(
        text.contains("1 refresh request claim(s) handled"),
        "{text}"
    );
    assert_done_once(dir.path(), "interrupted: stopped on request");
}

#[test]
fn run_until_idle_exits_non_zero_when_a_request_failed() {
    // a server that is not there, one attempt: the scheduled request closes as failed
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/fhir", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &base);
    let text = std::fs::read_to_string(dir.path().join("aqueduct.toml"))
        .unwrap()
        .replace("[engine]\n", "[engine]\nmax_attempts = 1\n");
    std::fs::write(dir.path().join("aqueduct.toml"), text).unwrap();
    let out = start_run(dir.path(), &["--until-idle"])
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("failed"), "{stdout}");
}
