#![allow(clippy::unwrap_used)]
//! `aqueduct hl7 send`: the command's file handling (BOMs, several messages per file, any line
//! ending) over real TCP to a real listener on a real SQLite store.

use std::sync::Arc;

use aqueduct_hl7::{ListenerOptions, listen};
use aqueduct_store::Store;

const ORG: &str = "acme";

fn adt(control: &str, event: &str, mrn: &str) -> String {
    let mut pv1 = vec![String::new(); 46];
    pv1[0] = "PV1".into();
    pv1[1] = "1".into();
    pv1[2] = "I".into();
    pv1[3] = "4W^401^A".into();
    pv1[7] = "1234^Smith^Jane".into();
    pv1[19] = format!("V{mrn}");
    pv1[44] = "20240102030000+0100".into();
    if event == "A03" {
        pv1[45] = "20240105120000+0100".into();
    }
    format!(
        "MSH|^~\\&|EPIC|HOSP|AQ|AQ|20240102030405+0100||ADT^{event}^ADT_A01|{control}|P|2.5.1\r\
EVN|{event}|20240102030405\r\
PID|1||{mrn}^^^HOSP^MR~999-88-7777^^^SSA^SS||Doe^John^Q||19800101|M|||1 Main St^^Springfield^IL^62701||555-1234\r\
{}\r\
ZPI|custom|data\r",
        pv1.join("|")
    )
}

async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let s = aqueduct_store::open(path.to_str().unwrap()).await.unwrap();
    (dir, s)
}

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
