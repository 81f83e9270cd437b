#![allow(clippy::unwrap_used)]
//! Property tests: nothing panics on arbitrary input; generated messages round-trip.

use aqueduct_hl7::fhir::{convert, hl7_datetime};
use aqueduct_hl7::{
    Delimiters, Message, MllpCodec, MllpFrame, decode_text, escape, split_messages, unescape,
};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

const PATHS: &[&str] = &[
    "MSH-1",
    "MSH-2",
    "MSH-9.2",
    "MSH-10",
    "PID-3(2).4.2",
    "PID-5.1",
    "OBX[2]-5",
    "ZZZ-1.1.1",
    "PID-99",
    "OBX-5(3)",
];

fn exercise(bytes: &[u8]) {
    for part in split_messages(bytes) {
        if let Ok(text) = decode_text(part) {
            if let Ok(m) = Message::parse(&text) {
                for p in PATHS {
                    let _ = m.get(p);
                }
                let enc = m.encode();
                assert_eq!(Message::parse(&enc).unwrap(), m);
                let _ = convert(&m);
            }
        }
    }
    let mut codec = MllpCodec::new(64);
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let _ = codec.decode_eof(&mut buf);
}

fn field_text() -> impl Strategy<Value = String> {
    // text including delimiters, escapes, non-ASCII and line breaks: escaped before encoding
    proptest::string::string_regex("[a-zA-Z0-9 |^~&\\\\.éü\u{4e2d}\r\n-]{0,12}").unwrap()
}

proptest! {
    // PROPTEST_CASES=N runs more cases (default 512)
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(&bytes);
    }

    #[test]
    fn msh_prefixed_noise_never_panics(rest in "[A-Z0-9|^~&\\\\\r\n#.+-]{0,300}") {
        let text = format!("MSH|^~\\&|{rest}");
        exercise(text.as_bytes());
        let text = format!("\u{feff}MSH{rest}");
        exercise(text.as_bytes());
    }

    #[test]
    fn escape_round_trips(s in any::<String>()) {
        let d = Delimiters::default();
        let e = escape(&s, &d);
        prop_assert!(!e.contains(['|', '^', '~', '&', '\r', '\n']));
        prop_assert_eq!(unescape(&e, &d).into_owned(), s.clone());
    }

    #[test]
    fn generated_messages_round_trip(
        segs in proptest::collection::vec(
            ("[A-Z][A-Z0-9]{2}", proptest::collection::vec(
                proptest::collection::vec(
                    proptest::collection::vec(field_text(), 1..3), 1..3), 0..6)),
            0..6),
        control in "[A-Z0-9]{1,10}",
    ) {
        let d = Delimiters::default();
        let mut text = format!("MSH|^~\\&|APP|FAC|||20240101||ADT^A01|{control}|P|2.5\r");
        let mut expected = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (name, fields) in &segs {
            if name == "MSH" { continue; }
            let first_of_name = seen.insert(name.clone());
            text.push_str(name);
            for (fi, reps) in fields.iter().enumerate() {
                text.push('|');
                let rs: Vec<String> = reps.iter().map(|comps| {
                    comps.iter().map(|c| escape(c, &d).into_owned()).collect::<Vec<_>>().join("^")
                }).collect();
                text.push_str(&rs.join("~"));
                for (ri, comps) in reps.iter().enumerate().filter(|_| first_of_name) {
                    for (ci, c) in comps.iter().enumerate() {
                        expected.push((name.clone(), fi + 1, ri + 1, ci + 1, c.clone()));
                    }
                }
            }
            text.push('\r');
        }
        let m = Message::parse(&text).unwrap();
        prop_assert_eq!(m.encode(), text.clone());
        let again = m.encode();
        prop_assert_eq!(Message::parse(&again).unwrap(), m.clone());
        prop_assert_eq!(m.get("MSH-10").unwrap(), control);
        // every component reads back (through the first segment of its name)
        for (name, f, r, c, value) in expected {
            let first = segs.iter().find(|(n, _)| *n == name).map(|(_, fs)| fs).unwrap();
            let exp = &first[f - 1][r - 1][c - 1];
            let got = m.get(&format!("{name}-{f}({r}).{c}"));
            let got = got.map(|g| g.into_owned()).unwrap_or_default();
            // sub-component delimiters inside a component are escaped, so the whole text is back
            prop_assert_eq!(&got, exp, "{} {} {} {} {}", name, f, r, c, value);
        }
        // CRLF and LF terminators parse to the same message
        let crlf = text.replace('\r', "\r\n");
        let lf = text.replace('\r', "\n");
        prop_assert_eq!(Message::parse(&crlf).unwrap(), m.clone());
        prop_assert_eq!(Message::parse(&lf).unwrap(), m);
    }

    #[test]
    fn mllp_frames_survive_any_chunking(
        msgs in proptest::collection::vec(proptest::collection::vec(0x20u8..0x7f, 1..200), 1..6),
        garbage in proptest::collection::vec(0x20u8..0x7f, 0..20),
        chunk in 1usize..64,
    ) {
        let mut input = Vec::new();
        for m in &msgs {
            input.extend_from_slice(&garbage);
            input.extend(aqueduct_hl7::mllp::frame(m));
        }
        let mut codec = MllpCodec::new(1000);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            buf.extend_from_slice(c);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        let expected: Vec<MllpFrame> = msgs.iter().map(|m| MllpFrame::Message(bytes::Bytes::from(m.clone()))).collect();
        prop_assert_eq!(out, expected);
        prop_assert_eq!(codec.garbage_bytes(), (garbage.len() * msgs.len()) as u64);
    }

    #[test]
    fn builder_values_read_back(a in any::<String>(), b in any::<String>(), c in any::<String>()) {
        let mut mb = aqueduct_hl7::MessageBuilder::new("ORU^R01", "X1");
        mb.set("PID-5.1", &a).unwrap().set("PID-5.2", &b).unwrap().set("OBX-1", "1").unwrap().set("OBX[2]-5(2).3.2", &c).unwrap();
        let text = mb.build();
        let m = Message::parse(&text).unwrap();
        prop_assert_eq!(m.get("PID-5.1").map(|v| v.into_owned()).unwrap_or_default(), a);
        prop_assert_eq!(m.get("PID-5.2").map(|v| v.into_owned()).unwrap_or_default(), b);
        prop_assert_eq!(m.get("OBX[2]-5(2).3.2").map(|v| v.into_owned()).unwrap_or_default(), c);
        prop_assert_eq!(m.encode(), text);
    }

    #[test]
    fn datetimes_never_panic(s in "[0-9+.-]{0,30}") {
        let _ = hl7_datetime(&s);
    }

    #[test]
    fn valid_datetimes_convert(y in 1900u32..2100, mo in 1u32..13, d in 1u32..29, h in 0u32..24, mi in 0u32..60, s in 0u32..60, tzh in 0u32..13, neg: bool) {
        let sign = if neg { '-' } else { '+' };
        let ts = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}{sign}{tzh:02}00");
        prop_assert_eq!(hl7_datetime(&ts).unwrap(), format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{sign}{tzh:02}:00"));
        prop_assert_eq!(hl7_datetime(&ts[..8]).unwrap(), format!("{y:04}-{mo:02}-{d:02}"));
    }
}

/// The committed fuzz corpus must go through the whole path without panicking.
#[test]
fn fuzz_corpus_runs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        exercise(&bytes);
        n += 1;
    }
    assert!(n >= 5);
}
