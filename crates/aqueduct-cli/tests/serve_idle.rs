//! `aqueduct serve` as a process with 10,000 idle client connections open at once (and some
//! that send garbage): it still answers real requests promptly, answers garbage with a 4xx,
//! its memory stays bounded, and nothing stored changes.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn aqueduct(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aqueduct {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

const IDLE: usize = 10_000;

#[tokio::test]
async fn ten_thousand_idle_connections_do_not_stop_the_server_or_grow_it_unbounded() {
    let dir = tempfile::tempdir().unwrap();
    aqueduct(dir.path(), &["demo", "--patients", "2"]);
    let key = String::from_utf8(
        aqueduct(
            dir.path(),
            &["api-keys", "create", "--org", "demo", "--scope", "read"],
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_aqueduct"))
            .args(["serve", "--no-engine", "--bind", &addr])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let api = format!("http://{addr}/api/v1/connections");
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(&api).bearer_auth(&key).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = rss_mib(server.0.id());
    let counts_before = stored(dir.path()).await;

    // 10,000 connections that never send a byte
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(s) => idle.push(s),
            Err(e) => {
                panic!("connection {i} refused: {e} (is the file-descriptor limit below 20,000?)")
            }
        }
    }
    // garbage on a few more: a clear 4xx, not a hang or a crash
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("garbage got an answer in time")
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 4") || n == 0,
            "garbage {:?} got {head:?}",
            String::from_utf8_lossy(junk)
        );
    }
    // real requests still answered promptly while every idle connection is held
    for _ in 0..20 {
        let t = Instant::now();
        let r = http.get(&api).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a request took {:?}",
            t.elapsed()
        );
    }
    let during = rss_mib(server.0.id());
    eprintln!(
        "server RSS {before:.0} MiB before, {during:.0} MiB with {IDLE} idle connections open"
    );
    assert!(
        during - before < 400.0,
        "memory grew from {before:.0} to {during:.0} MiB for {IDLE} idle connections"
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = http.get(&api).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(server);
    assert_eq!(
        stored(dir.path()).await,
        counts_before,
        "nothing stored changed"
    );
}

/// Live, deleted and invalid resources per connection and type of the demo's store.
async fn stored(dir: &Path) -> Vec<(String, aqueduct_store::TypeCount)> {
    let store = aqueduct_store::open(dir.join("aqueduct-data/aqueduct.db").to_str().unwrap())
        .await
        .unwrap();
    let mut out = Vec::new();
    for c in store.list_connections("demo").await.unwrap() {
        let conn = aqueduct_store::ConnectionRef::new("demo", &c.name);
        for t in store.count_by_type(&conn).await.unwrap() {
            out.push((c.name.clone(), t));
        }
    }
    assert!(!out.is_empty());
    out
}
