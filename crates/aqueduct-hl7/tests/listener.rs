#![allow(clippy::unwrap_used)]
//! The listener over real TCP on 127.0.0.1:0, with a real SQLite store.

use std::sync::Arc;
use std::time::Duration;

use aqueduct_hl7::{
    AckResult, ListenerOptions, Message, SendOptions, listen, mllp::frame, send, send_with,
};
use aqueduct_store::{ConnectionRef, Store};
use aqueduct_testkit::hl7::{adt, store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ORG: &str = "acme";

async fn wait_processed(store: &Arc<dyn Store>, count: usize) {
    for _ in 0..200 {
        let msgs = store.list_inbound_messages(ORG, 0, 1000).await.unwrap();
        if msgs.len() >= count && msgs.iter().all(|m| m.processed_at.is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("messages not processed in time");
}

/// Reads one framed reply from a raw socket.
async fn read_frame(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Ok(Ok(1)) => {
                buf.push(b[0]);
                if buf.ends_with(&[0x1C, 0x0D]) {
                    let start = buf.iter().position(|&x| x == 0x0B)?;
                    return Some(
                        String::from_utf8_lossy(&buf[start + 1..buf.len() - 2]).into_owned(),
                    );
                }
            }
            _ => return None,
        }
    }
}

fn ack_of(raw: &str) -> AckResult {
    AckResult::from_ack("", raw.as_bytes())
}

#[tokio::test]
async fn acks_after_commit_converts_and_enqueues_refresh() {
    let (_dir, store) = store().await;
    let l = listen(
        "127.0.0.1:0",
        store.clone(),
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .unwrap();
    let results = send(
        l.local_addr(),
        [adt("C1", "A01", "123"), adt("C2", "A08", "123")],
    )
    .await;
    assert_eq!(results.len(), 2);
    for r in &results {
        assert!(r.accepted(), "{r:?}");
        assert!(r.error.is_none(), "{r:?}");
    }
    assert_eq!(results[0].acked_control_id.as_deref(), Some("C1"));
    // the message is durably stored by the time the ACK arrives
    let msgs = store.list_inbound_messages(ORG, 0, 10).await.unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].sender, "EPIC^HOSP");
    assert_eq!(msgs[0].control_id, "C1");
    assert_eq!(msgs[0].message_type, "ADT^A01");
    assert_eq!(msgs[0].bytes, adt("C1", "A01", "123").into_bytes());
    wait_processed(&store, 2).await;
    let msgs = store.list_inbound_messages(ORG, 0, 10).await.unwrap();
    assert!(msgs.iter().all(|m| m.process_error.is_none()), "{msgs:?}");

    let conn = ConnectionRef::new(ORG, "hl7-HOSP");
    let p = store
        .get_resource(&conn, "Patient", "HOSP-123")
        .await
        .unwrap()
        .unwrap();
    let pj: serde_json::Value = serde_json::from_slice(&p.bytes).unwrap();
    assert_eq!(pj["name"][0]["family"], "Doe");
    assert_eq!(pj["birthDate"], "1980-01-01");
    assert_eq!(pj["gender"], "male");
    assert_eq!(p.source_url, "mllp://EPIC^HOSP/C2");
    let history = store
        .resource_history(&conn, "Patient", "HOSP-123")
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].source_url, "mllp://EPIC^HOSP/C1");
    assert_eq!(p.patient_id.as_deref(), Some("HOSP-123"));
    let e = store
        .get_resource(&conn, "Encounter", "HOSP-V123")
        .await
        .unwrap()
        .unwrap();
    let ej: serde_json::Value = serde_json::from_slice(&e.bytes).unwrap();
    assert_eq!(ej["status"], "in-progress");
    assert_eq!(ej["class"]["code"], "IMP");
    assert_eq!(ej["subject"]["reference"], "Patient/HOSP-123");
    assert_eq!(ej["period"]["start"], "2024-01-02T03:00:00+01:00");

    let refresh = store.list_refresh_requests(ORG, 10).await.unwrap();
    assert_eq!(refresh.len(), 2);
    assert_eq!(
        refresh[0].1.patient_key.as_deref(),
        Some("urn:aqueduct:hl7v2:HOSP|123")
    );
    assert_eq!(refresh[0].1.connection, None);
    assert_eq!(refresh[0].1.reason, "hl7:ADT^A01");
    assert_eq!(refresh[1].1.reason, "hl7:ADT^A08");
    let stats = l.shutdown().await;
    assert_eq!(stats.accepted, 2);
    assert_eq!(stats.converted, 2);
}

#[tokio::test]
async fn duplicates_are_acked_but_processed_once() {
    let (_dir, store) = store().await;
    let l = listen(
        "127.0.0.1:0",
        store.clone(),
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .unwrap();
    let m = adt("DUP1", "A08", "55");
    let r1 = send(l.local_addr(), [&m, &m]).await;
    let r2 = send(l.local_addr(), [&m]).await;
    assert!(r1.iter().chain(&r2).all(|r| r.accepted()));
    wait_processed(&store, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store.list_inbound_messages(ORG, 0, 10).await.unwrap().len(),
        1
    );
    assert_eq!(store.list_refresh_requests(ORG, 10).await.unwrap().len(), 1);
    let stats = l.shutdown().await;
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.duplicates, 2);
    assert_eq!(stats.converted, 1);
}

#[tokio::test]
async fn a_reused_control_id_is_a_new_message_unless_it_is_a_restamped_resend() {
    let first = adt("MSG00001", "A01", "61");
    let restamped = first.replace("20240102030405+0100||ADT", "20240102031000+0100||ADT");
    assert_ne!(first, restamped);
    let other_patient = adt("MSG00001", "A08", "62");
    for restamping in [false, true] {
        let (_dir, store) = store().await;
        let options = ListenerOptions {
            restamping_senders: if restamping {
                aqueduct_hl7::RestampingSenders::new(["EPIC^HOSP"])
            } else {
                aqueduct_hl7::RestampingSenders::default()
            },
            ..ListenerOptions::default()
        };
        let l = listen("127.0.0.1:0", store.clone(), ORG.into(), options)
            .await
            .unwrap();
        let acks = send(l.local_addr(), [&first, &restamped, &other_patient, &first]).await;
        assert!(
            acks.iter().all(|r| r.code.as_deref() == Some("AA")),
            "{acks:?}"
        );
        let stored = store.list_inbound_messages(ORG, 0, 10).await.unwrap();
        let findings = store
            .list_findings(&ConnectionRef::new(ORG, "hl7-HOSP"), 10)
            .await
            .unwrap();
        let stats = l.shutdown().await;
        if restamping {
            assert_eq!(stored.len(), 2, "the restamped copy is a resend");
            assert_eq!(stats.duplicates, 2);
        } else {
            assert_eq!(stored.len(), 3, "another MSH-7 is another message");
            assert_eq!(stored[1].bytes, restamped.as_bytes());
            assert_eq!(stats.duplicates, 1);
        }
        assert_eq!(stored.last().unwrap().bytes, other_patient.as_bytes());
        assert_eq!(stats.control_id_reused as usize, stored.len() - 1);
        assert_eq!(findings.len(), stored.len() - 1, "{findings:?}");
        assert!(findings.iter().all(|f| f.kind == "control-id-reused"));
        assert!(
            findings[0]
                .detail
                .contains(&format!("message {}", stored[0].id))
                || findings[0]
                    .detail
                    .contains(&format!("message {}", stored[1].id)),
            "{}",
            findings[0].detail
        );
    }
}

#[tokio::test]
async fn bad_input_over_tcp() {
    let (_dir, store) = store().await;
    let options = ListenerOptions {
        max_message_bytes: 4096,
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), ORG.into(), options)
        .await
        .unwrap();
    let mut s = TcpStream::connect(l.local_addr()).await.unwrap();

    // garbage before a frame, then a BOM-prefixed message: skipped, then AA
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(adt("BOM1", "A04", "7").as_bytes());
    let mut data = b"garbage\r\n".to_vec();
    data.extend(frame(&bom));
    s.write_all(&data).await.unwrap();
    let a = ack_of(&read_frame(&mut s).await.unwrap());
    assert_eq!(a.code.as_deref(), Some("AA"), "{a:?}");
    assert_eq!(a.acked_control_id.as_deref(), Some("BOM1"));

    // no MSH: AR with an ERR segment saying why
    s.write_all(&frame(b"PID|1||123\r")).await.unwrap();
    let raw = read_frame(&mut s).await.unwrap();
    let a = ack_of(&raw);
    assert_eq!(a.code.as_deref(), Some("AR"));
    assert!(raw.contains("\rERR|"), "{raw}");
    assert!(a.text.unwrap().contains("MSH"));

    // MSH too short (no MSH-9/MSH-10): AR naming the field
    s.write_all(&frame(b"MSH|^~\\&|A|B\r")).await.unwrap();
    let raw = read_frame(&mut s).await.unwrap();
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.get("MSA-1").unwrap(), "AR");
    assert_eq!(m.get("ERR-3.1").unwrap(), "101");
    assert_eq!(m.get("ERR-2.3").unwrap(), "9");

    // bad delimiters
    s.write_all(&frame(b"MSH|^^\\&|A|B|C|D|2024||ADT^A01|X|P|2.5\r"))
        .await
        .unwrap();
    let a = ack_of(&read_frame(&mut s).await.unwrap());
    assert_eq!(a.code.as_deref(), Some("AR"));

    // oversized: AR naming the control id, the connection stays usable
    let mut big = adt("BIG1", "A08", "8");
    big.push_str(&format!("NTE|1||{}\r", "x".repeat(10_000)));
    s.write_all(&frame(big.as_bytes())).await.unwrap();
    let a = ack_of(&read_frame(&mut s).await.unwrap());
    assert_eq!(a.code.as_deref(), Some("AR"));
    assert_eq!(a.acked_control_id.as_deref(), Some("BIG1"));
    assert!(a.text.unwrap().contains("exceeds"));

    // invalid dates, unknown segments, odd field counts: stored and AA (conversion is liberal)
    let odd = "MSH|^~\\&|EPIC|HOSP|AQ|AQ|notadate||ADT^A08|ODD1|P|2.3\rPID|1||77^^^HOSP^MR||Roe^Ann||19801345|F\rZZZ|1|2|3|4|5|6|7|8|9|10\rPV1\r";
    s.write_all(&frame(odd.as_bytes())).await.unwrap();
    let a = ack_of(&read_frame(&mut s).await.unwrap());
    assert_eq!(a.code.as_deref(), Some("AA"), "{a:?}");
    drop(s);

    wait_processed(&store, 2).await;
    let msgs = store.list_inbound_messages(ORG, 0, 10).await.unwrap();
    assert_eq!(
        msgs.len(),
        2,
        "only the BOM message and the odd one are stored"
    );
    assert!(msgs.iter().all(|m| m.process_error.is_none()), "{msgs:?}");
    let conn = ConnectionRef::new(ORG, "hl7-HOSP");
    let p = store
        .get_resource(&conn, "Patient", "HOSP-77")
        .await
        .unwrap()
        .unwrap();
    let pj: serde_json::Value = serde_json::from_slice(&p.bytes).unwrap();
    assert!(pj.get("birthDate").is_none());
    let stats = l.shutdown().await;
    assert_eq!(stats.rejected, 4);
    assert_eq!(stats.oversized, 1);
    assert_eq!(stats.garbage_bytes, 9);
}

#[tokio::test]
async fn disconnect_mid_message_stores_nothing_and_others_are_served() {
    let (_dir, store) = store().await;
    let l = listen(
        "127.0.0.1:0",
        store.clone(),
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .unwrap();
    let mut s = TcpStream::connect(l.local_addr()).await.unwrap();
    let f = frame(adt("CUT1", "A01", "9").as_bytes());
    s.write_all(&f[..f.len() / 2]).await.unwrap();
    s.shutdown().await.unwrap();
    drop(s);
    let r = send(l.local_addr(), [adt("OK1", "A01", "10")]).await;
    assert!(r[0].accepted());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let msgs = store.list_inbound_messages(ORG, 0, 10).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].control_id, "OK1");
    let stats = l.shutdown().await;
    assert_eq!(stats.truncated, 1);
}

#[tokio::test]
async fn disk_full_naks_never_acks() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = aqueduct_store::sqlite::SqliteStore::open(dir.path().join("s.db"))
        .await
        .unwrap();
    sqlite.set_max_pages(1).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let l = listen(
        "127.0.0.1:0",
        store.clone(),
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .unwrap();
    let mut m = adt("FULL1", "A01", "11");
    m.push_str(&format!("NTE|1||{}\r", "y".repeat(100_000)));
    let r = send(l.local_addr(), [m]).await;
    assert_eq!(r[0].code.as_deref(), Some("AE"), "{:?}", r[0]);
    assert!(
        r[0].text.as_deref().unwrap().contains("stored"),
        "{:?}",
        r[0]
    );
    let stats = l.shutdown().await;
    assert_eq!(stats.store_errors, 1);
    assert_eq!(stats.accepted, 0);
}

#[tokio::test]
async fn concurrent_pipelined_senders_and_graceful_shutdown() {
    let (_dir, store) = store().await;
    let l = listen(
        "127.0.0.1:0",
        store.clone(),
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .unwrap();
    let addr = l.local_addr();
    let mut tasks = Vec::new();
    for c in 0..8 {
        tasks.push(tokio::spawn(async move {
            let msgs: Vec<String> = (0..50)
                .map(|i| adt(&format!("P{c}-{i}"), "A08", &format!("{c}{i}")))
                .collect();
            let opts = SendOptions {
                window: 1 + c % 4,
                ..SendOptions::default()
            };
            send_with(addr, &msgs, &opts).await
        }));
    }
    let mut n = 0;
    for t in tasks {
        for r in t.await.unwrap() {
            assert!(r.accepted(), "{r:?}");
            assert!(r.error.is_none(), "{r:?}");
            n += 1;
        }
    }
    assert_eq!(n, 400);
    let stats = l.shutdown().await;
    assert_eq!(stats.accepted, 400);
    // shutdown waited for conversion of everything stored
    assert_eq!(stats.converted, 400);
    assert!(stats.batches <= 400);
    let msgs = store.list_inbound_messages(ORG, 0, 1000).await.unwrap();
    assert_eq!(msgs.len(), 400);
    assert!(msgs.iter().all(|m| m.processed_at.is_some()));
}

#[tokio::test]
async fn unprocessed_messages_are_recovered_at_start() {
    let (_dir, store) = store().await;
    let opts = ListenerOptions {
        convert: false,
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), ORG.into(), opts)
        .await
        .unwrap();
    assert!(send(l.local_addr(), [adt("R1", "A01", "21")]).await[0].accepted());
    l.shutdown().await;
    assert!(
        store.list_inbound_messages(ORG, 0, 10).await.unwrap()[0]
            .processed_at
            .is_none()
    );
    let opts = ListenerOptions {
        refresh_connection: Some("epic-main".into()),
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), ORG.into(), opts)
        .await
        .unwrap();
    wait_processed(&store, 1).await;
    l.shutdown().await;
    let refresh = store.list_refresh_requests(ORG, 10).await.unwrap();
    assert_eq!(refresh.len(), 1);
    assert_eq!(refresh[0].1.connection.as_deref(), Some("epic-main"));
}

#[tokio::test]
async fn conversion_failure_is_recorded_not_lost() {
    let (_dir, store) = store().await;
    let l = listen(
        "127.0.0.1:0",
        store.clone(),
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .unwrap();
    // a kind that is not converted, a document without its patient, and a character set
    // that cannot be read: each is acknowledged, kept as received, and marked unconverted
    let unknown_kind = "MSH|^~\\&|X|Y|AQ|AQ|20240101||QBP^Q22|M1|P|2.5\rQPD|x\r";
    let no_patient = "MSH|^~\\&|X|Y|AQ|AQ|20240101||MDM^T02|M2|P|2.5\rTXA|1\r";
    let mut charset =
        b"MSH|^~\\&|X|Y|AQ|AQ|20240101||ADT^A08|M3|P|2.5|||||JPN|ISO IR87\rPID|1||1^^^Y^MR||"
            .to_vec();
    charset.extend_from_slice(&[0x1B, 0x24, 0x42, 0x30, 0x21, 0x1B, 0x28, 0x42]);
    charset.push(b'\r');
    let acks = send(
        l.local_addr(),
        [unknown_kind.as_bytes(), no_patient.as_bytes(), &charset],
    )
    .await;
    assert!(
        acks.iter().all(|a| a.code.as_deref() == Some("AA")),
        "{acks:?}"
    );
    wait_processed(&store, 3).await;
    let m = store.list_inbound_messages(ORG, 0, 10).await.unwrap();
    assert!(
        m[0].process_error.as_deref().unwrap().contains("QBP^Q22"),
        "{m:?}"
    );
    assert!(
        m[1].process_error.as_deref().unwrap().contains("PID"),
        "{m:?}"
    );
    assert!(
        m[2].process_error.as_deref().unwrap().contains("ISO IR87"),
        "{m:?}"
    );
    assert_eq!(m[0].bytes, unknown_kind.as_bytes());
    assert_eq!(m[2].bytes, charset);
    let counts = store.inbound_counts(ORG).await.unwrap();
    assert_eq!((counts.unconverted, counts.converted), (3, 0));
    let stats = l.shutdown().await;
    assert_eq!(stats.conversion_errors, 3);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let (_dir, store) = store().await;
    let opts = ListenerOptions {
        idle_timeout: Duration::from_millis(200),
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store, ORG.into(), opts)
        .await
        .unwrap();
    let mut s = TcpStream::connect(l.local_addr()).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed by the listener");
    l.shutdown().await;
}

#[tokio::test]
async fn send_reports_connection_failures() {
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let r = send(addr, [adt("N1", "A01", "1"), adt("N2", "A01", "1")]).await;
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|x| x.error.is_some() && !x.accepted()));
    assert_eq!(r[1].control_id, "N2");
}

#[tokio::test]
async fn shutdown_mid_stream_never_acks_unstored_messages() {
    let (_dir, store) = store().await;
    let l = listen(
        "127.0.0.1:0",
        store.clone(),
        ORG.into(),
        ListenerOptions::default(),
    )
    .await
    .unwrap();
    let addr = l.local_addr();
    let sender = tokio::spawn(async move {
        let msgs: Vec<String> = (0..2000)
            .map(|i| adt(&format!("S{i}"), "A08", "5"))
            .collect();
        let opts = SendOptions {
            window: 16,
            timeout: Duration::from_secs(10),
            ..SendOptions::default()
        };
        send_with(addr, &msgs, &opts).await
    });
    while l.stats().accepted < 20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stats = l.shutdown().await;
    let results = sender.await.unwrap();
    let acked: Vec<&str> = results
        .iter()
        .filter(|r| r.accepted())
        .map(|r| r.control_id.as_str())
        .collect();
    let stored = store.list_inbound_messages(ORG, 0, 5000).await.unwrap();
    assert!(acked.len() >= 20);
    assert!(acked.len() < 2000, "shutdown came mid-stream");
    // every AA is stored; everything stored was converted before shutdown returned
    for id in &acked {
        assert!(
            stored.iter().any(|m| m.control_id == *id),
            "{id} ACKed but not stored"
        );
    }
    assert!(stored.iter().all(|m| m.processed_at.is_some()));
    assert_eq!(stats.accepted as usize, stored.len());
    // those not acknowledged are reported as failures to the sender, never as accepted
    assert!(
        results[acked.len()..]
            .iter()
            .all(|r| !r.accepted() && r.error.is_some())
    );
}

#[tokio::test]
async fn conversion_queue_overflow_falls_back_to_the_store() {
    let (_dir, store) = store().await;
    let opts = ListenerOptions {
        conversion_queue: 2,
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), ORG.into(), opts)
        .await
        .unwrap();
    let msgs: Vec<String> = (0..300)
        .map(|i| adt(&format!("Q{i}"), "A08", &format!("{i}")))
        .collect();
    let opts = SendOptions {
        window: 32,
        ..SendOptions::default()
    };
    let r = send_with(l.local_addr(), &msgs, &opts).await;
    assert!(r.iter().all(|r| r.accepted()));
    let stats = l.shutdown().await;
    assert_eq!(stats.converted, 300);
    let stored = store.list_inbound_messages(ORG, 0, 1000).await.unwrap();
    assert!(
        stored
            .iter()
            .all(|m| m.processed_at.is_some() && m.process_error.is_none())
    );
    assert_eq!(
        store.list_refresh_requests(ORG, 1000).await.unwrap().len(),
        300
    );
}

#[tokio::test]
async fn one_message_that_cannot_be_stored_does_not_fail_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = aqueduct_store::sqlite::SqliteStore::open(dir.path().join("s.db"))
        .await
        .unwrap();
    sqlite.set_max_pages(1).await.unwrap(); // no new pages: only free room in existing ones
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let opts = ListenerOptions {
        convert: false,
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), ORG.into(), opts)
        .await
        .unwrap();
    let addr = l.local_addr();
    let mut big = "MSH|^~\\&|A|B|C|D|2024||ADT^A08|BIG|P|2.5\r".to_string();
    big.push_str(&format!("NTE|1||{}\r", "z".repeat(200_000)));
    let small = |i: usize| format!("MSH|^~\\&|A|B|C|D|2024||ADT^A08|s{i}|P|2.5\r");
    let (rb, r1, r2) = tokio::join!(
        send(addr, [big]),
        send(addr, [small(1)]),
        send(addr, [small(2)])
    );
    assert_eq!(rb[0].code.as_deref(), Some("AE"), "{:?}", rb[0]);
    assert!(r1[0].accepted(), "{:?}", r1[0]);
    assert!(r2[0].accepted(), "{:?}", r2[0]);
    let stored = store.list_inbound_messages(ORG, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    l.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let (_dir, store) = store().await;
    let opts = ListenerOptions {
        max_connections: 1,
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store, ORG.into(), opts)
        .await
        .unwrap();
    let first = TcpStream::connect(l.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = TcpStream::connect(l.local_addr()).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), second.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(send(l.local_addr(), [adt("L1", "A08", "1")]).await[0].accepted());
    let stats = l.shutdown().await;
    assert_eq!(stats.refused_connection_limit, 1);
    assert!(
        stats
            .to_prometheus()
            .contains("aqueduct_hl7_refused_connection_limit_total 1\n")
    );
}
