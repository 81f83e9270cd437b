//! MLLP framing (`0x0B` message `0x1C 0x0D`) as a `tokio_util::codec` with a frame-size cap.
//!
//! Bytes outside a frame are skipped and counted. A frame larger than the cap is not buffered:
//! the codec keeps its first bytes (to answer with a NAK naming the control id), discards the
//! rest up to the end marker, and yields [`MllpFrame::Oversized`] so the connection stays in
//! sync. A frame cut off by the end of the stream is an error for that connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Hl7Error;

pub const START_BLOCK: u8 = 0x0B;
pub const END_BLOCK: u8 = 0x1C;
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// How many bytes of an oversized frame are kept to read its MSH.
const OVERSIZED_HEAD: usize = 4096;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MllpFrame {
    /// A complete message, without the framing bytes.
    Message(Bytes),
    /// A frame over the cap: its size and its first bytes.
    Oversized { size: usize, head: Bytes },
}

#[derive(Debug)]
enum State {
    Idle,
    InFrame { scanned: usize },
    Discarding { size: usize, head: Bytes },
}

#[derive(Debug)]
pub struct MllpCodec {
    max_frame: usize,
    state: State,
    garbage: u64,
    /// The last frame ended at the end of the buffer: a CR that comes next belongs to it.
    skip_cr: bool,
}

impl MllpCodec {
    pub fn new(max_frame: usize) -> Self {
        MllpCodec {
            max_frame: max_frame.max(16),
            state: State::Idle,
            garbage: 0,
            skip_cr: false,
        }
    }

    /// Bytes skipped so far because they were outside any frame (or an abandoned frame).
    pub fn garbage_bytes(&self) -> u64 {
        self.garbage
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for MllpCodec {
    fn default() -> Self {
        MllpCodec::new(1 << 20)
    }
}

impl Decoder for MllpCodec {
    type Item = MllpFrame;
    type Error = Hl7Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<MllpFrame>, Hl7Error> {
        loop {
            match &mut self.state {
                State::Idle if self.skip_cr && !buf.is_empty() => {
                    self.skip_cr = false;
                    if buf[0] == CARRIAGE_RETURN {
                        buf.advance(1);
                    }
                }
                State::Idle => match memchr::memchr(START_BLOCK, buf) {
                    None => {
                        self.garbage += buf.len() as u64;
                        buf.clear();
                        return Ok(None);
                    }
                    Some(i) => {
                        self.garbage += i as u64;
                        buf.advance(i + 1);
                        self.state = State::InFrame { scanned: 0 };
                    }
                },
                State::InFrame { scanned } => {
                    match memchr::memchr2(END_BLOCK, START_BLOCK, &buf[*scanned..]) {
                        Some(rel) => {
                            let i = *scanned + rel;
                            if buf[i] == START_BLOCK {
                                // a new frame starts before this one ended: drop the fragment
                                self.garbage += i as u64;
                                buf.advance(i + 1);
                                *scanned = 0;
                                continue;
                            }
                            let frame = buf.split_to(i).freeze();
                            if buf.len() >= 2 {
                                buf.advance(if buf[1] == CARRIAGE_RETURN { 2 } else { 1 });
                            } else {
                                // 0x1C ends the buffer: do not wait for the 0x0D (a sender that
                                // omits it would hang); skip it if it comes next
                                buf.advance(1);
                                self.skip_cr = true;
                            }
                            self.state = State::Idle;
                            if frame.len() > self.max_frame {
                                let size = frame.len();
                                return Ok(Some(MllpFrame::Oversized {
                                    size,
                                    head: frame.slice(..OVERSIZED_HEAD.min(size)),
                                }));
                            }
                            return Ok(Some(MllpFrame::Message(frame)));
                        }
                        None => {
                            if buf.len() > self.max_frame {
                                let size = buf.len();
                                let head = Bytes::copy_from_slice(&buf[..OVERSIZED_HEAD.min(size)]);
                                buf.clear();
                                self.state = State::Discarding { size, head };
                                return Ok(None);
                            }
                            *scanned = buf.len();
                            return Ok(None);
                        }
                    }
                }
                State::Discarding { size, head } => match memchr::memchr(END_BLOCK, buf) {
                    Some(i) => {
                        let size = *size + i;
                        let head = std::mem::take(head);
                        buf.advance(i + 1);
                        if buf.first() == Some(&CARRIAGE_RETURN) {
                            buf.advance(1);
                        }
                        self.state = State::Idle;
                        return Ok(Some(MllpFrame::Oversized { size, head }));
                    }
                    None => {
                        *size += buf.len();
                        buf.clear();
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<MllpFrame>, Hl7Error> {
        if let Some(f) = self.decode(buf)? {
            return Ok(Some(f));
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {
                self.garbage += buf.len() as u64;
                buf.clear();
                Ok(None)
            }
            State::InFrame { .. } => {
                let bytes = buf.len();
                buf.clear();
                Err(Hl7Error::TruncatedFrame { bytes })
            }
            State::Discarding { size, .. } => {
                buf.clear();
                Err(Hl7Error::TruncatedFrame { bytes: size })
            }
        }
    }
}

fn put_frame(data: &[u8], dst: &mut BytesMut) {
    dst.reserve(data.len() + 3);
    dst.put_u8(START_BLOCK);
    dst.put_slice(data);
    dst.put_u8(END_BLOCK);
    dst.put_u8(CARRIAGE_RETURN);
}

impl Encoder<Bytes> for MllpCodec {
    type Error = Hl7Error;
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Hl7Error> {
        put_frame(&item, dst);
        Ok(())
    }
}

impl<'b> Encoder<&'b [u8]> for MllpCodec {
    type Error = Hl7Error;
    fn encode(&mut self, item: &'b [u8], dst: &mut BytesMut) -> Result<(), Hl7Error> {
        put_frame(item, dst);
        Ok(())
    }
}

/// One framed message as bytes (for writing without a codec).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 3);
    v.push(START_BLOCK);
    v.extend_from_slice(data);
    v.push(END_BLOCK);
    v.push(CARRIAGE_RETURN);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        codec: &mut MllpCodec,
        input: &[u8],
        chunk: usize,
    ) -> Vec<Result<MllpFrame, String>> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(c);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(Ok(f));
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn frames_garbage_and_truncation() {
        let mut input = b"junk".to_vec();
        input.extend(frame(b"MSH|one"));
        input.extend(b"\r\n");
        input.extend(frame(b"MSH|two"));
        input.extend(b"\x0bMSH|cut");
        for chunk in [1, 2, 3, 7, 1000] {
            let mut c = MllpCodec::new(100);
            let out = decode_all(&mut c, &input, chunk);
            assert_eq!(out.len(), 3, "chunk {chunk}");
            assert_eq!(
                out[0],
                Ok(MllpFrame::Message(Bytes::from_static(b"MSH|one")))
            );
            assert_eq!(
                out[1],
                Ok(MllpFrame::Message(Bytes::from_static(b"MSH|two")))
            );
            assert!(out[2].is_err());
            assert_eq!(c.garbage_bytes(), 6);
        }
    }

    #[test]
    fn oversized_frames_resync() {
        let big = vec![b'x'; 500];
        let mut input = frame(&big);
        input.extend(frame(b"MSH|small"));
        for chunk in [1, 50, 10_000] {
            let mut c = MllpCodec::new(100);
            let out = decode_all(&mut c, &input, chunk);
            assert_eq!(out.len(), 2, "chunk {chunk}");
            match &out[0] {
                Ok(MllpFrame::Oversized { size, .. }) => assert_eq!(*size, 500),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                out[1],
                Ok(MllpFrame::Message(Bytes::from_static(b"MSH|small")))
            );
        }
    }

    #[test]
    fn end_block_without_cr_is_not_waited_for() {
        let mut c = MllpCodec::new(100);
        let mut buf = BytesMut::from(&b"\x0bMSH|a\x1c"[..]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(MllpFrame::Message(Bytes::from_static(b"MSH|a")))
        );
        buf.extend_from_slice(b"\r\x0bMSH|b\x1c\r");
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(MllpFrame::Message(Bytes::from_static(b"MSH|b")))
        );
        assert_eq!(c.garbage_bytes(), 0);
    }

    #[test]
    fn restart_inside_frame() {
        let mut input = b"\x0bMSH|abandoned".to_vec();
        input.extend(frame(b"MSH|ok"));
        let mut c = MllpCodec::new(100);
        let out = decode_all(&mut c, &input, 4);
        assert_eq!(
            out,
            vec![Ok(MllpFrame::Message(Bytes::from_static(b"MSH|ok")))]
        );
    }
}
