//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`), here so that the committed corpus
//! is replayed by a plain test (`tests/fuzz_corpus.rs`) without building the fuzzer. Each
//! function takes arbitrary bytes and panics only when an invariant is broken.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::message::{Message, decode_text, split_messages};
use crate::mllp::{MllpCodec, MllpFrame, frame};

/// Parser: every message of the input parses or fails cleanly; paths never panic; encoding a
/// parsed message and parsing it again gives the same message; the resend hash is total.
pub fn parse(data: &[u8]) {
    let _ = crate::resend::content_hash(data, true);
    for part in split_messages(data) {
        let Ok(text) = decode_text(part) else {
            continue;
        };
        let Ok(m) = Message::parse(&text) else {
            continue;
        };
        for p in [
            "MSH-9.2",
            "PID-3(2).4.2",
            "OBX[2]-5",
            "PID-5.1.1",
            "MSH-18",
            "ZZZ-1",
        ] {
            let _ = m.get(p);
        }
        for seg in m.all_segments() {
            for f in 0..seg.field_count().min(40) {
                for r in seg.repetitions(f) {
                    let _ = seg.component_of(r, 1);
                    let _ = seg.subcomponent_of(r, 2, 2);
                }
            }
        }
        let enc = m.encode();
        assert_eq!(
            Message::parse(&enc).ok().as_ref(),
            Some(&m),
            "encode/parse round trip"
        );
        let _ = crate::ack::AckContext::from_message(&m);
    }
    let _ = crate::ack::AckContext::from_head(data);
    let _ = crate::ack::AckResult::from_ack("x", data);
}

/// MLLP codec: whatever the bytes and however they are cut, no frame exceeds the cap, every
/// byte is accounted for, and a stream of framed messages decodes to exactly those messages.
pub fn mllp(data: &[u8]) {
    let cap = 64 + usize::from(data.first().copied().unwrap_or(0)) * 4;
    let chunk = usize::from(data.get(1).copied().unwrap_or(1)).max(1);
    let mut codec = MllpCodec::new(cap);
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(MllpFrame::Message(m))) => assert!(m.len() <= codec.max_frame()),
                Ok(Some(MllpFrame::Oversized { size, head })) => {
                    assert!(size > codec.max_frame());
                    assert!(head.len() <= size);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    while let Ok(Some(_)) = codec.decode_eof(&mut buf) {}
    // framing then decoding gives the messages back (messages without the frame bytes)
    let messages: Vec<&[u8]> = data
        .split(|&b| b == 0x0B || b == 0x1C)
        .filter(|m| !m.is_empty() && m.len() <= 4096)
        .collect();
    let mut stream = Vec::new();
    for m in &messages {
        stream.extend_from_slice(&frame(m));
    }
    let mut codec = MllpCodec::new(4096);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            got.push(f);
        }
    }
    assert_eq!(got.len(), messages.len(), "every framed message decodes");
    for (f, m) in got.iter().zip(&messages) {
        assert_eq!(f, &MllpFrame::Message(bytes::Bytes::copy_from_slice(m)));
    }
    assert_eq!(codec.garbage_bytes(), 0);
}

/// Conversion: any message converts or fails with an error; every resource it gives has a
/// valid FHIR id and says its own type.
pub fn convert(data: &[u8]) {
    for part in split_messages(data) {
        let Ok(c) = crate::fhir::convert_bytes(part) else {
            continue;
        };
        for r in &c.resources {
            assert!(
                !r.id.is_empty()
                    && r.id.len() <= 64
                    && r.id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
                "invalid FHIR id {:?}",
                r.id
            );
            assert_eq!(r.json["resourceType"], r.resource_type);
            assert!(serde_json::to_vec(&r.json).is_ok());
        }
    }
}
