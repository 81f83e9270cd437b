#![allow(clippy::unwrap_used)]
//! `aqueduct hl7 send`: the command's file handling (BOMs, several messages per file, any line
//! ending) over real TCP to a real listener on a real SQLite store.

use std::sync::Arc;

use aqueduct_hl7::{ListenerOptions, listen};
use aqueduct_testkit::hl7::{adt, store};

const ORG: &str = "acme";

#[tokio::test]
async fn run_send_sends_every_message_of_files() {
    let (_dir, store) = store().await;
    let l = listen(
        "127.0.0.1:0",
        store.clone(),
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("batch.hl7");
    let body = format!(
        "\u{feff}{}\n{}",
        adt("F1", "A01", "31").replace('\r', "\n"),
        adt("F2", "A03", "31").replace('\r', "\r\n")
    );
    std::fs::write(&f, body).unwrap();
    let args = aqueduct_cli::hl7_cli::SendArgs {
        files: vec![f],
        to: l.local_addr().to_string(),
        json: true,
        timeout_secs: 5,
        retries: 0,
        tls_ca: None,
        tls_server_name: None,
        tls_cert: None,
        tls_key: None,
    };
    aqueduct_cli::hl7_cli::run_send(args).await.unwrap();
    let msgs = store.list_inbound_messages(ORG, 0, 10).await.unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].message_type, "ADT^A03");
    l.shutdown().await;
}

#[tokio::test]
async fn send_fails_when_the_listener_refuses_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = adt("F1", "A01", "1");
    m.push_str(&format!("NTE|1||{}\r", "y".repeat(100_000)));
    // a store too small for the message: the listener answers AE and the command fails
    let f = dir.path().join("m.hl7");
    std::fs::write(&f, &m).unwrap();
    let l2 = listen(
        "127.0.0.1:0",
        {
            let s = aqueduct_store::sqlite::SqliteStore::open(dir.path().join("s2.db"))
                .await
                .unwrap();
            s.set_max_pages(1).await.unwrap();
            Arc::new(s)
        },
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .unwrap();
    let err = aqueduct_cli::hl7_cli::run_send(aqueduct_cli::hl7_cli::SendArgs {
        files: vec![f],
        to: l2.local_addr().to_string(),
        json: true,
        timeout_secs: 5,
        retries: 3,
        tls_ca: None,
        tls_server_name: None,
        tls_cert: None,
        tls_key: None,
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("1 of 1"), "{err}");
    l2.shutdown().await;
}
