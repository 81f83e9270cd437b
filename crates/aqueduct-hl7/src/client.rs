//! The MLLP sender: sends messages over one connection and reads each ACK.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

use crate::ack::AckResult;
use crate::message::{Message, decode_text};
use crate::mllp::{MllpCodec, MllpFrame};

/// How [`send_with`] behaves.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// How long to wait for each ACK (and for the connection).
    pub timeout: Duration,
    /// Messages sent before waiting for ACKs: 1 is classic MLLP (one at a time); more
    /// pipelines (the Aqueduct listener answers in order).
    pub window: usize,
    /// Largest ACK frame accepted.
    pub max_ack_bytes: usize,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            timeout: Duration::from_secs(30),
            window: 1,
            max_ack_bytes: 1 << 20,
        }
    }
}

/// The control id (MSH-10) of a message, or "" when it cannot be read.
pub fn control_id_of(bytes: &[u8]) -> String {
    decode_text(bytes)
        .ok()
        .and_then(|t| {
            Message::parse(&t)
                .ok()
                .and_then(|m| m.control_id().map(|c| c.into_owned()))
        })
        .unwrap_or_default()
}

/// Sends each message over one connection to `addr`, one at a time, and returns one result per
/// message, in order (transport failures included: this never fails as a whole).
pub async fn send<I, M>(addr: impl ToSocketAddrs, messages: I) -> Vec<AckResult>
where
    I: IntoIterator<Item = M>,
    M: AsRef<[u8]>,
{
    send_with(addr, messages, &SendOptions::default()).await
}

/// [`send`] with options (timeout, pipelining window).
pub async fn send_with<I, M>(
    addr: impl ToSocketAddrs,
    messages: I,
    options: &SendOptions,
) -> Vec<AckResult>
where
    I: IntoIterator<Item = M>,
    M: AsRef<[u8]>,
{
    let messages: Vec<M> = messages.into_iter().collect();
    let ids: Vec<String> = messages.iter().map(|m| control_id_of(m.as_ref())).collect();
    let mut results = Vec::with_capacity(messages.len());
    if messages.is_empty() {
        return results;
    }
    let fail_rest = |results: &mut Vec<AckResult>, from: usize, why: &str| {
        for id in &ids[from..] {
            results.push(AckResult::failed(id, why));
        }
    };
    let stream = match tokio::time::timeout(options.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            fail_rest(&mut results, 0, &format!("cannot connect: {e}"));
            return results;
        }
        Err(_) => {
            fail_rest(&mut results, 0, "timed out connecting");
            return results;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, MllpCodec::new(options.max_ack_bytes));
    let window = options.window.max(1);
    let mut next = 0;
    let mut waiting: VecDeque<usize> = VecDeque::new();
    while results.len() < messages.len() {
        // fill the window
        while next < messages.len() && waiting.len() < window {
            let data = Bytes::copy_from_slice(messages[next].as_ref());
            let more = next + 1 < messages.len() && waiting.len() + 1 < window;
            let sent = if more {
                framed.feed(data).await
            } else {
                framed.send(data).await
            };
            if let Err(e) = sent {
                let why = format!("cannot send: {e}");
                let done = results.len();
                fail_rest(&mut results, done, &why);
                return results;
            }
            waiting.push_back(next);
            next += 1;
        }
        let Some(i) = waiting.pop_front() else { break };
        match tokio::time::timeout(options.timeout, framed.next()).await {
            Err(_) => {
                fail_rest(
                    &mut results,
                    i,
                    &format!("no ACK within {} s", options.timeout.as_secs_f64()),
                );
                return results;
            }
            Ok(None) => {
                fail_rest(
                    &mut results,
                    i,
                    "the peer closed the connection before acknowledging",
                );
                return results;
            }
            Ok(Some(Err(e))) => {
                fail_rest(&mut results, i, &e.to_string());
                return results;
            }
            Ok(Some(Ok(MllpFrame::Oversized { size, .. }))) => {
                results.push(AckResult::failed(
                    &ids[i],
                    format!("ACK of {size} bytes is too large"),
                ));
            }
            Ok(Some(Ok(MllpFrame::Message(b)))) => {
                let mut r = AckResult::from_ack(&ids[i], &b);
                if r.error.is_none() {
                    if let Some(acked) = &r.acked_control_id {
                        if !ids[i].is_empty() && *acked != ids[i] {
                            r.error = Some(format!(
                                "the ACK names control id {acked:?}, not {:?}",
                                ids[i]
                            ));
                        }
                    }
                }
                results.push(r);
            }
        }
    }
    results
}
