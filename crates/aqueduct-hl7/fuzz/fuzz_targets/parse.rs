//! Fuzzes the whole inbound path on arbitrary bytes: MLLP decoding, file splitting, character
//! set decoding, parsing, path access, the encode/parse round trip and FHIR conversion.
#![no_main]

use aqueduct_hl7::{Message, MllpCodec, decode_text, fhir::convert, split_messages};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = MllpCodec::new(4096);
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let _ = codec.decode_eof(&mut buf);
    for part in split_messages(data) {
        if let Ok(text) = decode_text(part) {
            if let Ok(m) = Message::parse(&text) {
                for p in ["MSH-9.2", "PID-3(2).4.2", "OBX[2]-5", "PID-5.1.1"] {
                    let _ = m.get(p);
                }
                let enc = m.encode();
                assert_eq!(Message::parse(&enc).ok().as_ref(), Some(&m));
                let _ = convert(&m);
            }
        }
    }
});
