#![allow(clippy::unwrap_used)]
//! The listener under load, over real TCP into a real SQLite file: one peer cannot take every
//! connection, and many large pipelined messages are held to a byte budget by back-pressure
//! (reads stop) without refusing or losing any of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aqueduct_hl7::{ListenerOptions, SendOptions, listen, mllp::frame, send_with};
use aqueduct_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ORG: &str = "acme";

fn adt(control: &str, padding: usize) -> String {
    format!(
        "MSH|^~\\&|EPIC|HOSP|AQ|AQ|20240102030405||ADT^A08^ADT_A01|{control}|P|2.5.1\rEVN|A08\rPID|1||{control}^^^HOSP^MR||Doe^John\rZPD|{}\r",
        "x".repeat(padding)
    )
}

async fn store() -> (tempfile::TempDir, std::path::PathBuf, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let s = aqueduct_store::open(path.to_str().unwrap()).await.unwrap();
    (dir, path, s)
}

/// A connection from a given loopback address (127.0.0.0/8 is all loopback on Linux).
async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{local}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// Sends one message on a raw connection and returns MSA-1 of the reply (None: closed).
async fn ack_code(s: &mut TcpStream, msg: &str) -> Option<String> {
    if s.write_all(&frame(msg.as_bytes())).await.is_err() {
        return None;
    }
    let mut buf = Vec::new();
    let mut b = [0u8; 512];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
        if buf.ends_with(&[0x1C, 0x0D]) {
            let r = aqueduct_hl7::AckResult::from_ack("", &buf[1..buf.len() - 2]);
            return r.code;
        }
    }
}

async fn is_closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn one_peer_holding_idle_connections_does_not_lock_out_the_others() {
    let (_dir, _path, store) = store().await;
    let opts = ListenerOptions {
        max_connections_per_peer: 3,
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), ORG.into(), opts)
        .await
        .unwrap();
    let addr = l.local_addr();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect_from("127.0.0.1", addr).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fourth = connect_from("127.0.0.1", addr).await;
    assert!(is_closed_by_peer(&mut fourth).await, "the 4th is refused");
    // another sender is served at once
    let mut other = connect_from("127.0.0.2", addr).await;
    assert_eq!(
        ack_code(&mut other, &adt("P1", 10)).await.as_deref(),
        Some("AA")
    );
    // and the hog's slot comes back when it closes one
    drop(idle.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut again = connect_from("127.0.0.1", addr).await;
    assert_eq!(
        ack_code(&mut again, &adt("P2", 10)).await.as_deref(),
        Some("AA")
    );
    let stats = l.shutdown().await;
    assert_eq!(stats.refused_peer_limit, 1);
    assert_eq!(stats.refused_connection_limit, 0);
    assert!(
        stats
            .to_prometheus()
            .contains("aqueduct_hl7_refused_peer_limit_total 1\n")
    );
    assert_eq!(store.inbound_counts(ORG).await.unwrap().total, 2);
}

#[tokio::test]
async fn large_pipelined_messages_are_held_to_the_byte_budget_and_none_is_lost() {
    let (_dir, path, store) = store().await;
    const SENDERS: usize = 10;
    const EACH: usize = 16;
    const SIZE: usize = 60_000;
    const BUDGET: usize = 256 * 1024;
    const MAX_MESSAGE: usize = 128 * 1024;
    let opts = ListenerOptions {
        max_in_flight_bytes: BUDGET,
        max_message_bytes: MAX_MESSAGE,
        convert: false,
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), ORG.into(), opts)
        .await
        .unwrap();
    // another process holds the database's write lock: commits wait, messages pile up
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let addr = l.local_addr();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            tokio::spawn(async move {
                let msgs: Vec<String> =
                    (0..EACH).map(|j| adt(&format!("S{s}M{j}"), SIZE)).collect();
                let options = SendOptions {
                    window: EACH,
                    timeout: Duration::from_secs(20),
                    ..SendOptions::default()
                };
                send_with(addr, &msgs, &options).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = l.stats();
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    let mut acked = 0;
    for h in senders {
        for r in h.await.unwrap() {
            assert_eq!(r.code.as_deref(), Some("AA"), "{r:?}");
            acked += 1;
        }
    }
    let stats = l.shutdown().await;
    // unbounded, the listener would have held all 160 messages (9.6 MB) while the store waited
    assert!(during.backpressure_pauses > 0, "{during:?}");
    assert!(during.in_flight_bytes > 0, "{during:?}");
    let bound = (BUDGET + SENDERS * MAX_MESSAGE) as u64;
    assert!(
        stats.in_flight_bytes_peak <= bound,
        "peak {} > {bound}",
        stats.in_flight_bytes_peak
    );
    assert_eq!(acked, SENDERS * EACH);
    assert_eq!(stats.accepted as usize, SENDERS * EACH);
    assert_eq!(stats.in_flight_bytes, 0);
    assert_eq!(
        store.inbound_counts(ORG).await.unwrap().total as usize,
        SENDERS * EACH
    );
}
