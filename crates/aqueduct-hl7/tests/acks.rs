#![allow(clippy::unwrap_used)]
//! Acknowledgement modes over real TCP (original AA/AE/AR, enhanced CA then the application
//! ACK as MSH-15/MSH-16 ask), and the sender's retries: it reconnects with backoff until it
//! gets an ACK, and reports an AE as a failure without retrying it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aqueduct_hl7::{AckResult, ListenerOptions, SendOptions, listen, mllp::frame, send_with};
use aqueduct_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ORG: &str = "acme";

fn adt(control: &str, accept: &str, application: &str) -> String {
    format!(
        "MSH|^~\\&|EPIC|HOSP|AQ|AQ|20240102030405||ADT^A08^ADT_A01|{control}|P|2.5.1|||{accept}|{application}\rEVN|A08\rPID|1||{control}^^^HOSP^MR||Doe^John\r"
    )
}

async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = aqueduct_store::open(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    (dir, s)
}

/// Every ACK frame that arrives within `wait`.
async fn acks_within(s: &mut TcpStream, wait: Duration) -> Vec<AckResult> {
    let mut buf = Vec::new();
    let deadline = Instant::now() + wait;
    let mut b = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, s.read(&mut b)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&b[..n]),
            _ => break,
        }
    }
    buf.split(|&x| x == 0x1C)
        .filter_map(|f| f.iter().position(|&x| x == 0x0B).map(|i| &f[i + 1..]))
        .map(|f| AckResult::from_ack("", f))
        .collect()
}

#[tokio::test]
async fn enhanced_mode_sends_the_commit_ack_then_the_application_ack_it_asks_for() {
    for application_acks in [true, false] {
        let (_dir, store) = store().await;
        let options = ListenerOptions {
            application_acks,
            ..ListenerOptions::default()
        };
        let l = listen("127.0.0.1:0", store.clone(), ORG.into(), options)
            .await
            .unwrap();
        let mut s = TcpStream::connect(l.local_addr()).await.unwrap();
        s.write_all(&frame(adt("E1", "AL", "AL").as_bytes()))
            .await
            .unwrap();
        let acks = acks_within(&mut s, Duration::from_millis(500)).await;
        let codes: Vec<_> = acks.iter().map(|a| a.code.clone().unwrap()).collect();
        if application_acks {
            assert_eq!(codes, ["CA", "AA"]);
        } else {
            assert_eq!(codes, ["CA"]);
        }
        assert!(
            acks.iter()
                .all(|a| a.acked_control_id.as_deref() == Some("E1"))
        );
        // NE/NE: no answer at all, and the message is kept all the same
        s.write_all(&frame(adt("E2", "NE", "NE").as_bytes()))
            .await
            .unwrap();
        assert!(
            acks_within(&mut s, Duration::from_millis(300))
                .await
                .is_empty()
        );
        // ER: a reject is answered CR, with the reason
        s.write_all(&frame(
            b"MSH|^~\\&|EPIC|HOSP|AQ|AQ|2024||ADT^A08||P|2.5|||ER|NE\r",
        ))
        .await
        .unwrap();
        let reject = acks_within(&mut s, Duration::from_millis(300)).await;
        assert_eq!(reject.len(), 1);
        assert_eq!(reject[0].code.as_deref(), Some("CR"));
        assert!(
            reject[0].text.as_deref().unwrap().contains("MSH-10"),
            "{reject:?}"
        );
        drop(s);
        l.shutdown().await;
        assert_eq!(store.inbound_counts(ORG).await.unwrap().total, 2);
    }
}

#[tokio::test]
async fn the_sender_pairs_enhanced_mode_acks_with_their_messages() {
    let (_dir, store) = store().await;
    let options = ListenerOptions {
        application_acks: true,
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), ORG.into(), options)
        .await
        .unwrap();
    let msgs = [
        adt("P1", "AL", "AL"),
        adt("P2", "AL", "AL"),
        adt("P3", "", ""),
    ];
    let results = send_with(l.local_addr(), &msgs, &SendOptions::default()).await;
    let got: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r.acked_control_id.clone().unwrap(),
                r.code.clone().unwrap(),
                r.error.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("P1".to_string(), "CA".to_string(), None),
            ("P2".to_string(), "CA".to_string(), None),
            ("P3".to_string(), "AA".to_string(), None)
        ]
    );
    l.shutdown().await;
}

#[tokio::test]
async fn the_sender_retries_with_backoff_until_the_listener_answers() {
    let (_dir, store) = store().await;
    // a port nobody listens on yet
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = SendOptions {
        retries: 8,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        timeout: Duration::from_secs(5),
        ..SendOptions::default()
    };
    let msgs = [adt("R1", "", ""), adt("R2", "", "")];
    let started = Instant::now();
    let sender = tokio::spawn(async move { send_with(addr, &msgs, &options).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let l = listen(addr, store.clone(), ORG.into(), ListenerOptions::default())
        .await
        .unwrap();
    let results = sender.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(
        results.iter().all(|r| r.code.as_deref() == Some("AA")),
        "{results:?}"
    );
    l.shutdown().await;
    assert_eq!(store.inbound_counts(ORG).await.unwrap().total, 2);

    // with no retries left, the failure is reported
    let options = SendOptions {
        retries: 1,
        initial_backoff: Duration::from_millis(10),
        ..SendOptions::default()
    };
    let r = send_with(addr, [adt("R3", "", "")], &options).await;
    assert_eq!(r[0].code, None);
    assert!(r[0].error.as_deref().unwrap().contains("connect"), "{r:?}");
}

#[tokio::test]
async fn an_ae_is_reported_as_a_failure_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = aqueduct_store::sqlite::SqliteStore::open(dir.path().join("s.db"))
        .await
        .unwrap();
    sqlite.set_max_pages(1).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let l = listen("127.0.0.1:0", store, ORG.into(), ListenerOptions::default())
        .await
        .unwrap();
    let mut m = adt("F1", "", "");
    m.push_str(&format!("NTE|1||{}\r", "y".repeat(100_000)));
    let options = SendOptions {
        retries: 5,
        initial_backoff: Duration::from_millis(200),
        ..SendOptions::default()
    };
    let started = Instant::now();
    let r = send_with(l.local_addr(), [&m], &options).await;
    assert_eq!(r[0].code.as_deref(), Some("AE"));
    assert!(!r[0].accepted());
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "no retry of an answer"
    );
    let stats = l.shutdown().await;
    assert_eq!(stats.store_errors, 1);
}
