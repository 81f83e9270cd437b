#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `cargo bench -p aqueduct-hl7`: parse throughput of ~1 KB ADT messages, and MLLP end to end
//! into a SQLite store with 8 concurrent senders (each waits for its ACK before sending the
//! next message, as MLLP senders do). Plain `main`, prints figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aqueduct_hl7::{ListenerOptions, Message, MllpCodec, MllpFrame, decode_text, listen};
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
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut framed = Framed::new(stream, MllpCodec::new(1 << 20));
            let mut lat = Vec::with_capacity(per_sender);
            for i in 0..per_sender {
                let msg = Bytes::from(adt(&format!("S{s}-{i}"), (s * per_sender + i) as u32));
                let t = Instant::now();
                framed.send(msg).await.unwrap();
                match framed.next().await {
                    Some(Ok(MllpFrame::Message(ack))) => {
                        assert!(ack.windows(7).any(|w| w == b"MSA|AA|"), "not AA");
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
        "MLLP -> SQLite ({senders} senders, conversion {}): {} messages ACKed in {secs:.2} s = {:.0} msgs/s; ACK latency P50 {:.2} ms, P99 {:.2} ms, max {:.2} ms; {} store transactions ({:.1} msgs each)",
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
        println!(
            "  conversion: {} converted while ACKing, all {} converted {drain:.2} s after the last ACK",
            acked_stats.converted, stats.converted
        );
    }
}

fn main() {
    parse_bench();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(mllp_bench(8, 2500, false));
    rt.block_on(mllp_bench(8, 2500, true));
}
