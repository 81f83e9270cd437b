#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `cargo bench -p aqueduct-hl7`: parse throughput of ~1 KB ADT messages; conversion alone of
//! mixed message kinds (the fixture set: ADT, ORU, OUL, orders, MDM, SIU, VXU, pharmacy,
//! financial, REF, PPR) on one core; and MLLP end to end into a SQLite store with 8 concurrent
//! senders of mixed kinds (each waits for its ACK before sending the next message, as MLLP
//! senders do), conversion off and on, with the conversion backlog at the last ACK. Plain
//! `main`, prints figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aqueduct_hl7::{
    ListenerOptions, Message, MllpCodec, MllpFrame, decode_text, fhir::convert_bytes, listen,
    split_messages,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

fn adt(control: &str, mrn: u32) -> String {
    let mut pv1 = vec![String::new(); 46];
    pv1[0] = "PV1".into();
    pv1[1] = "1".into();
    pv1[2] = "I".into();
    pv1[3] = "4W^401^A^MAIN HOSPITAL".into();
    pv1[7] = "1234^Smith^Jane^Q^^Dr^MD".into();
    pv1[10] = "MED".into();
    pv1[19] = format!("V{mrn}");
    pv1[44] = "20240102030000+0100".into();
    format!(
        "MSH|^~\\&|EPIC|HOSP|AQUEDUCT|AQ|20240102030405+0100||ADT^A08^ADT_A01|{control}|P|2.5.1|||AL|NE||UNICODE UTF-8\r\
EVN|A08|20240102030405+0100|||USER1^Clerk^Ann\r\
PID|1||{mrn}^^^HOSP^MR~999-88-7777^^^SSA^SS||Doe^John^Quincy^Jr^Mr^^L~Doe^Johnny^^^^^A||19800101|M||2106-3^White^HL70005|1 Main St^Apt 4\\S\\B^Springfield^IL^62701^USA^H||(217)555-1234^PRN^PH~^NET^Internet^john.doe@example.org|(217)555-9876^WPN^PH|en^English|M^Married|CHR|A{mrn}|999-88-7777\r\
PD1|||Springfield Clinic^^1001|5678^Jones^Robert^^^Dr\r\
NK1|1|Doe^Mary|SPO^Spouse|1 Main St^^Springfield^IL^62701|(217)555-1234\r\
{}\r\
PV2|||CHEST PAIN^Chest pain\r\
AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives\r\
DG1|1||I20.9^Angina pectoris, unspecified^I10|||A\r\
OBX|1|NM|8302-2^Body height^LN||180|cm^centimeter^UCUM|||||F|||20240102030000+0100\r\
IN1|1|BCBS-PPO^Blue Cross PPO|60054|BLUE CROSS BLUE SHIELD^^PO Box 1^Chicago^IL^60601||||GRP123|||||||Doe^John^Q|SEL|19800101\r\
ZPI|custom|extension|fields\r",
        pv1.join("|")
    )
}

fn parse_bench() {
    let msgs: Vec<String> = (0..1000)
        .map(|i| adt(&format!("C{i}"), 100_000 + i))
        .collect();
    let avg = msgs.iter().map(String::len).sum::<usize>() / msgs.len();
    // warm up
    for m in &msgs {
        black_box(Message::parse(m).unwrap());
    }
    for (label, with_access) in [("parse only", false), ("parse + 6 field reads", true)] {
        let rounds = 400;
        let start = Instant::now();
        let mut n = 0u64;
        for _ in 0..rounds {
            for m in &msgs {
                let text = decode_text(m.as_bytes()).unwrap();
                let parsed = Message::parse(&text).unwrap();
                if with_access {
                    black_box(parsed.get("MSH-10"));
                    black_box(parsed.get("PID-3.1"));
                    black_box(parsed.get("PID-5.1"));
                    black_box(parsed.get("PID-11.2"));
                    black_box(parsed.get("PV1-19"));
                    black_box(parsed.get("PV1-44"));
                }
                black_box(&parsed);
                n += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "parse ({label}): {n} messages of ~{avg} bytes in {secs:.2} s = {:.0} msgs/s, {:.0} MB/s (one core)",
            n as f64 / secs,
            (n as f64 * avg as f64) / secs / 1e6
        );
    }
}

/// The fixture set, every message once (resends left out).
fn mixed_kinds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hl7") && !p.ends_with("resends.hl7"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        out.extend(split_messages(&bytes).into_iter().map(<[u8]>::to_vec));
    }
    out
}

/// Message `i` of the mix with its own control id (MSH-10) and patient (PID-3.1 suffixed).
fn mixed(kinds: &[Vec<u8>], tag: &str, i: usize) -> Vec<u8> {
    let m = &kinds[i % kinds.len()];
    let text = String::from_utf8_lossy(m);
    let mut out = String::with_capacity(m.len() + 16);
    for (n, seg) in text.split_inclusive(['\r', '\n']).enumerate() {
        if n == 0 {
            let mut f: Vec<&str> = seg.split('|').collect();
            let id = format!("{tag}-{i}");
            if f.len() > 9 {
                f[9] = &id;
                out.push_str(&f.join("|"));
                continue;
            }
        }
        if seg.starts_with("PID|") {
            let mut f: Vec<String> = seg.split('|').map(str::to_string).collect();
            if f.len() > 3 {
                f[3] = f[3].replacen('^', &format!("{}^", i % 5000), 1);
            }
            out.push_str(&f.join("|"));
            continue;
        }
        out.push_str(seg);
    }
    out.into_bytes()
}

fn conversion_bench() {
    let kinds = mixed_kinds();
    let msgs: Vec<Vec<u8>> = (0..2000).map(|i| mixed(&kinds, "C", i)).collect();
    for m in &msgs {
        convert_bytes(m).unwrap();
    }
    let rounds = 10;
    let start = Instant::now();
    let mut resources = 0;
    for _ in 0..rounds {
        for m in &msgs {
            resources += black_box(convert_bytes(m).unwrap()).resources.len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = rounds * msgs.len();
    println!(
        "conversion alone (mixed kinds, the {} fixture messages): {n} messages in {secs:.2} s = {:.0} msgs/s on one core ({:.1} resources per message)",
        kinds.len(),
        n as f64 / secs,
        resources as f64 / n as f64
    );
}

async fn mllp_bench(senders: usize, per_sender: usize, convert: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = aqueduct_store::open(dir.path().join("bench.db").to_str().unwrap())
        .await
        .unwrap();
    let options = ListenerOptions {
        convert,
        ..ListenerOptions::default()
    };
    let l = listen("127.0.0.1:0", store.clone(), "bench".into(), options)
        .await
        .unwrap();
    let addr = l.local_addr();
    let kinds = std::sync::Arc::new(mixed_kinds());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let kinds = kinds.clone();
        tasks.push(tokio::spawn(async move {
            let msgs: Vec<Bytes> = (0..per_sender)
                .map(|i| Bytes::from(mixed(&kinds, &format!("S{s}"), s * 7 + i)))
                .collect();
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut framed = Framed::new(stream, MllpCodec::new(1 << 20));
            let mut lat = Vec::with_capacity(per_sender);
            for msg in msgs {
                let t = Instant::now();
                framed.send(msg).await.unwrap();
                match framed.next().await {
                    Some(Ok(MllpFrame::Message(ack))) => {
                        assert!(
                            ack.windows(7).any(|w| w == b"MSA|AA|" || w == b"MSA|CA|"),
                            "not accepted: {}",
                            String::from_utf8_lossy(&ack)
                        );
                    }
                    other => panic!("no ACK: {other:?}"),
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    let acked_stats = l.stats();
    let drain = Instant::now();
    let stats = l.shutdown().await;
    let drain = drain.elapsed().as_secs_f64();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "MLLP -> SQLite ({senders} senders, mixed kinds, conversion {}): {} messages ACKed in {secs:.2} s = {:.0} msgs/s; ACK latency P50 {:.2} ms, P99 {:.2} ms, max {:.2} ms; {} store transactions ({:.1} msgs each)",
        if convert { "on" } else { "off" },
        lat.len(),
        lat.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        acked_stats.batches,
        lat.len() as f64 / acked_stats.batches.max(1) as f64,
    );
    if convert {
        let done = acked_stats.converted + acked_stats.conversion_errors;
        println!(
            "  conversion: backlog at the last ACK {} of {} ({} converted, {} unconverted); all done {drain:.2} s after the last ACK ({} converted, {} unconverted)",
            acked_stats.accepted.saturating_sub(done),
            acked_stats.accepted,
            acked_stats.converted,
            acked_stats.conversion_errors,
            stats.converted,
            stats.conversion_errors
        );
    }
}

fn main() {
    parse_bench();
    conversion_bench();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(mllp_bench(8, 2500, false));
    rt.block_on(mllp_bench(8, 2500, true));
}
