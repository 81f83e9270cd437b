//! The MLLP sender: sends messages over one connection and reads each ACK. When the connection
//! fails (refused, reset, no ACK in time) it reconnects with exponential backoff and resends
//! from the first message not yet acknowledged (a receiver that de-duplicates resends, as
//! Aqueduct does, stores each once). An ACK that says AE or AR is an answer, not a transport
//! failure: it is reported, not retried.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;
use tracing::debug;

use crate::ack::AckResult;
use crate::message::{Message, decode_text};
use crate::mllp::{MllpCodec, MllpFrame};
use crate::tls::ClientTls;

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
    /// Reconnections after a transport failure before the messages still unacknowledged are
    /// reported as failed (0: none). Progress resets the count.
    pub retries: u32,
    /// The first wait before reconnecting; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// MLLP over TLS (the listener's CA and name, optionally a client certificate).
    pub tls: Option<ClientTls>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            timeout: Duration::from_secs(30),
            window: 1,
            max_ack_bytes: 1 << 20,
            retries: 0,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            tls: None,
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
pub async fn send<I, M>(addr: impl ToSocketAddrs + Clone, messages: I) -> Vec<AckResult>
where
    I: IntoIterator<Item = M>,
    M: AsRef<[u8]>,
{
    send_with(addr, messages, &SendOptions::default()).await
}

/// [`send`] with options (timeout, pipelining window, retries with backoff).
pub async fn send_with<I, M>(
    addr: impl ToSocketAddrs + Clone,
    messages: I,
    options: &SendOptions,
) -> Vec<AckResult>
where
    I: IntoIterator<Item = M>,
    M: AsRef<[u8]>,
{
    let messages: Vec<M> = messages.into_iter().collect();
    let ids: Vec<String> = messages.iter().map(|m| control_id_of(m.as_ref())).collect();
    let mut results: Vec<AckResult> = Vec::with_capacity(messages.len());
    let mut failures = 0;
    let mut backoff = options.initial_backoff;
    while results.len() < messages.len() {
        let from = results.len();
        let mut got = send_once(addr.clone(), &messages[from..], &ids[from..], options).await;
        // answered (whatever the answer) up to the first transport failure
        let answered = got.iter().take_while(|r| r.code.is_some()).count();
        let rest = got.split_off(answered);
        results.append(&mut got);
        if rest.is_empty() {
            break;
        }
        if answered > 0 {
            failures = 0;
            backoff = options.initial_backoff;
        }
        failures += 1;
        if failures > options.retries {
            results.extend(rest);
            break;
        }
        debug!(
            attempt = failures,
            wait_ms = backoff.as_millis() as u64,
            "MLLP send failed ({}): reconnecting",
            rest[0].error.as_deref().unwrap_or("no ACK")
        );
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(options.max_backoff);
    }
    results
}

/// One connection: sends `messages` and returns one result per message (the first transport
/// failure fails the rest).
async fn send_once<M: AsRef<[u8]>>(
    addr: impl ToSocketAddrs,
    messages: &[M],
    ids: &[String],
    options: &SendOptions,
) -> Vec<AckResult> {
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
    let codec = MllpCodec::new(options.max_ack_bytes);
    match &options.tls {
        None => exchange(Framed::new(stream, codec), messages, ids, options, results).await,
        Some(tls) => {
            let handshake = tokio::time::timeout(
                options.timeout,
                tls.connector.connect(tls.server_name.clone(), stream),
            )
            .await;
            match handshake {
                Ok(Ok(s)) => exchange(Framed::new(s, codec), messages, ids, options, results).await,
                Ok(Err(e)) => {
                    fail_rest(&mut results, 0, &format!("TLS handshake failed: {e}"));
                    results
                }
                Err(_) => {
                    fail_rest(&mut results, 0, "timed out in the TLS handshake");
                    results
                }
            }
        }
    }
}

/// Sends and reads ACKs over an established connection.
async fn exchange<S, M>(
    mut framed: Framed<S, MllpCodec>,
    messages: &[M],
    ids: &[String],
    options: &SendOptions,
    mut results: Vec<AckResult>,
) -> Vec<AckResult>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    M: AsRef<[u8]>,
{
    let fail_rest = |results: &mut Vec<AckResult>, from: usize, why: &str| {
        for id in &ids[from..] {
            results.push(AckResult::failed(id, why));
        }
    };
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
                // enhanced mode: the application ACK of a message already answered by its
                // commit ACK is not this message's answer
                if r.acked_control_id.as_ref().is_some_and(|a| {
                    *a != ids[i]
                        && ids[..i].contains(a)
                        && r.code.as_deref().is_some_and(|c| c.starts_with('A'))
                }) {
                    waiting.push_front(i);
                    continue;
                }
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
