//! The MLLP listener: many concurrent connections, a message acknowledged (AA) only once it is
//! durably committed to the store, resends (same sender, control id AND content, see
//! [`crate::resend`]) acknowledged again but processed once, a reused control id with other
//! content stored as a new message with a `control-id-reused` finding, malformed messages
//! rejected (AR) with an ERR segment, store failures answered AE (never AA).
//!
//! Under load: connections beyond the global or the per-peer limit are closed at once and
//! counted; the bytes of messages in flight share one budget, and when it is spent connections
//! stop reading (back-pressure) instead of buffering without bound.
//!
//! Pipeline: each connection reads frames and hands valid messages to one committer task,
//! which writes everything that arrived meanwhile in ONE store transaction (group commit) and
//! answers each waiting connection; the connection writes ACKs in order. New (non-duplicate)
//! messages then go to a converter task that maps them to FHIR resources and refresh requests
//! and, in one transaction per chunk of messages, writes those and marks the messages processed
//! (with the error when conversion fails). Unprocessed messages left by an earlier run are
//! converted at start-up.

use aqueduct_core::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aqueduct_core::{InboundConversion, InboundMessage, InboundOutcome, InboundReceipt, Store};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use crate::ack::{AckCode, AckContext, AckError, acks_for};
use crate::error::Hl7Error;
use crate::fhir::{connection_of, sender_of};
use crate::limits::{ByteBudget, Charge, PeerSlots};
use crate::message::{Message, decode_text};
use crate::mllp::{MllpCodec, MllpFrame, frame};
use crate::resend::{RestampingSenders, content_hash};
use crate::tls::TlsSettings;

/// How the listener behaves.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Frames larger than this are rejected (AR) without being buffered.
    pub max_message_bytes: usize,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this are closed at once (counted in `refused_connection_limit`).
    pub max_connections: usize,
    /// Connections from one peer address beyond this are closed at once (counted in
    /// `refused_peer_limit`), so that one peer cannot take every slot.
    pub max_connections_per_peer: usize,
    /// Bytes of messages received but not yet committed and acknowledged, over all
    /// connections. When spent, connections take no further frame until commits free it (their
    /// socket buffers fill and TCP pushes back on the senders); nothing is refused or dropped.
    /// Connections that checked just before it was spent each add at most one message, so the
    /// peak stays under this plus one message per connection.
    pub max_in_flight_bytes: usize,
    /// At most this many messages per store transaction.
    pub max_batch: usize,
    /// Messages a connection may have waiting for their ACK (pipelining senders).
    pub max_in_flight_per_connection: usize,
    /// Convert stored messages to FHIR resources and refresh requests.
    pub convert: bool,
    /// At start-up, convert messages an earlier run stored but did not process.
    pub recover_unprocessed: bool,
    /// Stored messages waiting for conversion held in memory; beyond this they wait in the
    /// store (unprocessed) and are picked up by a scan once the queue drains.
    pub conversion_queue: usize,
    /// Bytes of the messages held in the conversion queue; beyond this, as beyond
    /// `conversion_queue`, they wait in the store.
    pub conversion_queue_bytes: usize,
    /// The connection named in the refresh requests raised by messages (the FHIR connection
    /// that serves the same facility); None asks to refresh every connection holding the
    /// patient.
    pub refresh_connection: Option<String>,
    /// Senders that put a new MSH-7 on a resend: for them MSH-7 is left out of the content
    /// that tells a resend from a new message with a reused control id.
    pub restamping_senders: RestampingSenders,
    /// In enhanced mode, also send the application ACK (AA/AE/AR) that MSH-16 asks for, after
    /// the commit ACK, on the same connection. Aqueduct's application is keeping the message:
    /// the application ACK says it is stored (conversion follows, and a message that cannot be
    /// converted is still kept and counted as unconverted).
    pub application_acks: bool,
    /// MLLP over TLS: the listener's certificate, and the CA of client certificates.
    pub tls: Option<TlsSettings>,
    /// When set, only messages whose sending facility (MSH-4.1) is listed are accepted; the
    /// others are answered AR and counted in `refused_facility`.
    pub allowed_facilities: Option<BTreeSet<String>>,
    /// Per sending facility (MSH-4.1), the fingerprints ([`crate::tls::fingerprint`]) of the
    /// client certificates allowed to send for it: a message of such a facility over a
    /// connection without one of them is answered AR and counted in
    /// `refused_sender_certificate`. Facilities not listed need no certificate.
    pub sender_certificates: BTreeMap<String, Vec<String>>,
    /// Plain (non-TLS) MLLP is refused on a non-loopback address unless this is set: HL7 v2 is
    /// patient data in clear text.
    pub allow_plain_remote: bool,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            max_message_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(300),
            max_connections: 512,
            max_connections_per_peer: 64,
            max_in_flight_bytes: 64 << 20,
            max_batch: 512,
            max_in_flight_per_connection: 64,
            convert: true,
            recover_unprocessed: true,
            conversion_queue: 4096,
            conversion_queue_bytes: 64 << 20,
            refresh_connection: None,
            restamping_senders: RestampingSenders::default(),
            application_acks: false,
            tls: None,
            allowed_facilities: None,
            sender_certificates: BTreeMap::new(),
            allow_plain_remote: false,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused_connection_limit: AtomicU64,
    refused_peer_limit: AtomicU64,
    backpressure_pauses: AtomicU64,
    tls_handshake_failures: AtomicU64,
    refused_facility: AtomicU64,
    refused_sender_certificate: AtomicU64,
    received: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    control_id_reused: AtomicU64,
    rejected: AtomicU64,
    store_errors: AtomicU64,
    oversized: AtomicU64,
    truncated: AtomicU64,
    garbage_bytes: AtomicU64,
    batches: AtomicU64,
    converted: AtomicU64,
    conversion_errors: AtomicU64,
}

/// Counters since the listener started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListenerStats {
    pub connections: u64,
    /// Connections closed at once because `max_connections` were open.
    pub refused_connection_limit: u64,
    /// Connections closed at once because their peer held `max_connections_per_peer`.
    pub refused_peer_limit: u64,
    /// Times a connection stopped reading because the in-flight byte budget was spent.
    pub backpressure_pauses: u64,
    /// TLS connections closed because the handshake failed or timed out.
    pub tls_handshake_failures: u64,
    /// Messages answered AR because their sending facility is not allowed.
    pub refused_facility: u64,
    /// Messages answered AR because the connection lacks the client certificate their
    /// sending facility requires.
    pub refused_sender_certificate: u64,
    /// Bytes in flight now, and the most seen at once.
    pub in_flight_bytes: u64,
    pub in_flight_bytes_peak: u64,
    /// Frames holding a message (oversized ones not included).
    pub received: u64,
    /// Acknowledged AA after being stored for the first time.
    pub accepted: u64,
    /// Acknowledged AA as duplicates of a stored message (same sender, control id, content).
    pub duplicates: u64,
    /// New messages (stored, acknowledged) whose control id an earlier, different message of
    /// the same sender used; each has a `control-id-reused` finding.
    pub control_id_reused: u64,
    /// Answered AR (malformed, oversized).
    pub rejected: u64,
    /// Answered AE because the store failed.
    pub store_errors: u64,
    pub oversized: u64,
    /// Connections that ended in the middle of a frame.
    pub truncated: u64,
    /// Bytes skipped outside frames.
    pub garbage_bytes: u64,
    /// Store transactions written.
    pub batches: u64,
    pub converted: u64,
    pub conversion_errors: u64,
}

impl ListenerStats {
    /// The counters in the Prometheus text format (`aqueduct_hl7_*`), for a host that serves
    /// metrics: every refusal and pause has its own counter.
    pub fn to_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, u64); 21] = [
            (
                "tls_handshake_failures_total",
                "counter",
                "TLS connections whose handshake failed",
                self.tls_handshake_failures,
            ),
            (
                "refused_facility_total",
                "counter",
                "messages answered AR because their sending facility is not allowed",
                self.refused_facility,
            ),
            (
                "refused_sender_certificate_total",
                "counter",
                "messages answered AR because the connection lacks the client certificate their facility requires",
                self.refused_sender_certificate,
            ),
            (
                "connections_total",
                "counter",
                "connections accepted",
                self.connections,
            ),
            (
                "refused_connection_limit_total",
                "counter",
                "connections closed because max_connections were open",
                self.refused_connection_limit,
            ),
            (
                "refused_peer_limit_total",
                "counter",
                "connections closed because their peer held max_connections_per_peer",
                self.refused_peer_limit,
            ),
            (
                "backpressure_pauses_total",
                "counter",
                "times a connection stopped reading because the in-flight byte budget was spent",
                self.backpressure_pauses,
            ),
            (
                "in_flight_bytes",
                "gauge",
                "bytes received and not yet acknowledged",
                self.in_flight_bytes,
            ),
            (
                "in_flight_bytes_peak",
                "gauge",
                "most bytes in flight at once",
                self.in_flight_bytes_peak,
            ),
            (
                "received_total",
                "counter",
                "frames holding a message",
                self.received,
            ),
            (
                "accepted_total",
                "counter",
                "messages stored and acknowledged AA",
                self.accepted,
            ),
            (
                "duplicates_total",
                "counter",
                "resends acknowledged AA, stored once",
                self.duplicates,
            ),
            (
                "control_id_reused_total",
                "counter",
                "new messages reusing an earlier message's control id",
                self.control_id_reused,
            ),
            (
                "rejected_total",
                "counter",
                "messages answered AR",
                self.rejected,
            ),
            (
                "store_errors_total",
                "counter",
                "messages answered AE because the store failed",
                self.store_errors,
            ),
            (
                "oversized_total",
                "counter",
                "frames over the size limit",
                self.oversized,
            ),
            (
                "truncated_total",
                "counter",
                "connections that ended inside a frame",
                self.truncated,
            ),
            (
                "garbage_bytes_total",
                "counter",
                "bytes skipped outside frames",
                self.garbage_bytes,
            ),
            (
                "batches_total",
                "counter",
                "store transactions",
                self.batches,
            ),
            (
                "converted_total",
                "counter",
                "messages converted to FHIR",
                self.converted,
            ),
            (
                "unconverted_total",
                "counter",
                "messages stored but not converted (reason on the message)",
                self.conversion_errors,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP aqueduct_hl7_{name} {help}\n# TYPE aqueduct_hl7_{name} {kind}\naqueduct_hl7_{name} {value}\n"
            ));
        }
        out
    }
}

impl Counters {
    fn snapshot(&self, budget: &ByteBudget) -> ListenerStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ListenerStats {
            connections: g(&self.connections),
            refused_connection_limit: g(&self.refused_connection_limit),
            refused_peer_limit: g(&self.refused_peer_limit),
            backpressure_pauses: g(&self.backpressure_pauses),
            tls_handshake_failures: g(&self.tls_handshake_failures),
            refused_facility: g(&self.refused_facility),
            refused_sender_certificate: g(&self.refused_sender_certificate),
            in_flight_bytes: budget.used() as u64,
            in_flight_bytes_peak: budget.peak() as u64,
            received: g(&self.received),
            accepted: g(&self.accepted),
            duplicates: g(&self.duplicates),
            control_id_reused: g(&self.control_id_reused),
            rejected: g(&self.rejected),
            store_errors: g(&self.store_errors),
            oversized: g(&self.oversized),
            truncated: g(&self.truncated),
            garbage_bytes: g(&self.garbage_bytes),
            batches: g(&self.batches),
            converted: g(&self.converted),
            conversion_errors: g(&self.conversion_errors),
        }
    }
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

type CommitReply = Result<InboundReceipt, String>;

struct Job {
    message: InboundMessage,
    reply: oneshot::Sender<CommitReply>,
}

struct ConvertJob {
    id: i64,
    bytes: Vec<u8>,
    received_at: DateTime<Utc>,
    /// Held while the job waits in the conversion queue (None for jobs read from the store).
    _queued: Option<Charge>,
}

enum Pending {
    /// ACKs to write at once (none when the message asked for none).
    Ready(Vec<String>),
    Commit {
        rx: oneshot::Receiver<CommitReply>,
        ctx: AckContext,
        /// The message's bytes count against the budget until its ACK is written.
        _in_flight: Charge,
    },
}

struct Shared {
    options: ListenerOptions,
    counters: Arc<Counters>,
    commit_tx: mpsc::Sender<Job>,
    budget: Arc<ByteBudget>,
}

/// A running listener. Dropping it does not stop it: call [`Listener::shutdown`].
pub struct Listener {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
    budget: Arc<ByteBudget>,
}

impl Listener {
    /// The address it listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> ListenerStats {
        self.counters.snapshot(&self.budget)
    }

    /// A receiver that turns true when shutdown starts.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Serves until `signal` completes (Ctrl-C, a cancellation future), then shuts down
    /// gracefully like [`Listener::shutdown`].
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>) -> ListenerStats {
        signal.await;
        self.shutdown().await
    }

    /// Stops accepting, lets every connection finish the messages it already received (they
    /// are stored and acknowledged), waits for conversion of stored messages to finish, and
    /// returns the final counters.
    pub async fn shutdown(self) -> ListenerStats {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.task.await {
            warn!("the HL7 listener task failed: {e}");
        }
        self.counters.snapshot(&self.budget)
    }
}

/// Binds `bind` and serves MLLP until [`Listener::shutdown`]. Messages are stored for
/// `organization` through `store`.
pub fn listen<'a>(
    bind: impl ToSocketAddrs + Send + 'a,
    store: Arc<dyn Store>,
    organization: String,
    options: ListenerOptions,
) -> BoxFuture<'a, Result<Listener, Hl7Error>> {
    Box::pin(async move {
        let socket = TcpListener::bind(bind).await?;
        listen_on(socket, store, organization, options).await
    })
}

/// [`listen`] on a socket already bound.
pub fn listen_on(
    socket: TcpListener,
    store: Arc<dyn Store>,
    organization: String,
    options: ListenerOptions,
) -> BoxFuture<'static, Result<Listener, Hl7Error>> {
    Box::pin(listen_on_unboxed(socket, store, organization, options))
}

async fn listen_on_unboxed(
    socket: TcpListener,
    store: Arc<dyn Store>,
    organization: String,
    options: ListenerOptions,
) -> Result<Listener, Hl7Error> {
    let local_addr = socket.local_addr()?;
    if options.tls.is_none() && !options.allow_plain_remote && !local_addr.ip().is_loopback() {
        return Err(Hl7Error::PlainNotLoopback(local_addr));
    }
    let counters = Arc::new(Counters::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (commit_tx, commit_rx) = mpsc::channel::<Job>(options.max_batch.max(1) * 4);
    let (conv_tx, conv_rx) = mpsc::channel::<ConvertJob>(options.conversion_queue.max(1));
    let overflow = Arc::new(Overflow::default());
    let budget = ByteBudget::new(options.max_in_flight_bytes);
    let queue_budget = ByteBudget::new(options.conversion_queue_bytes);
    let started_at = Utc::now();

    let converter = tokio::spawn(converter(
        store.clone(),
        organization.clone(),
        conv_rx,
        overflow.clone(),
        counters.clone(),
        (options.recover_unprocessed && options.convert).then_some(started_at),
        options.refresh_connection.clone(),
    ));
    let committer = tokio::spawn(committer(
        store,
        organization.clone(),
        commit_rx,
        Handoff {
            tx: options.convert.then_some(conv_tx),
            budget: queue_budget,
            overflow,
        },
        options.max_batch.max(1),
        counters.clone(),
    ));
    let shared = Arc::new(Shared {
        options,
        counters: counters.clone(),
        commit_tx,
        budget: budget.clone(),
    });
    info!(%local_addr, organization, "HL7 MLLP listener started");
    let task = tokio::spawn(accept_loop(
        socket,
        shared,
        shutdown_rx,
        committer,
        converter,
    ));
    Ok(Listener {
        local_addr,
        shutdown: shutdown_tx,
        task,
        counters,
        budget,
    })
}

async fn signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn accept_loop(
    socket: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    committer: tokio::task::JoinHandle<()>,
    converter: tokio::task::JoinHandle<()>,
) {
    let slots = Arc::new(Semaphore::new(shared.options.max_connections.max(1)));
    let peers = PeerSlots::new(shared.options.max_connections_per_peer);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = signalled(&mut shutdown) => break,
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    while conns.try_join_next().is_some() {}
                    let Some(peer_slot) = peers.take(peer.ip()) else {
                        inc(&shared.counters.refused_peer_limit);
                        warn!(%peer, limit = shared.options.max_connections_per_peer, "this peer holds too many HL7 connections: closing the new one");
                        drop(stream);
                        continue;
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        inc(&shared.counters.refused_connection_limit);
                        warn!(%peer, limit = shared.options.max_connections, "too many HL7 connections: closing this one");
                        drop(stream);
                        continue;
                    };
                    inc(&shared.counters.connections);
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let rx = shutdown.clone();
                    conns.spawn(async move {
                        match shared.options.tls.clone() {
                            None => {
                                let (rd, wr) = stream.into_split();
                                connection(rd, wr, None, peer, shared, rx).await;
                            }
                            Some(tls) => {
                                let handshake = tokio::time::timeout(
                                    TLS_HANDSHAKE_TIMEOUT,
                                    tls.acceptor.accept(stream),
                                )
                                .await;
                                match handshake {
                                    Ok(Ok(s)) => {
                                        let cert = s
                                            .get_ref()
                                            .1
                                            .peer_certificates()
                                            .and_then(|c| c.first())
                                            .map(|c| crate::tls::fingerprint(c.as_ref()));
                                        let (rd, wr) = tokio::io::split(s);
                                        connection(rd, wr, cert, peer, shared, rx).await;
                                    }
                                    Ok(Err(e)) => {
                                        inc(&shared.counters.tls_handshake_failures);
                                        warn!(%peer, "TLS handshake failed: {e}");
                                    }
                                    Err(_) => {
                                        inc(&shared.counters.tls_handshake_failures);
                                        warn!(%peer, "TLS handshake timed out");
                                    }
                                }
                            }
                        }
                        drop(permit);
                        drop(peer_slot);
                    });
                }
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(socket);
    info!("HL7 listener stopping: finishing in-flight messages");
    while conns.join_next().await.is_some() {}
    drop(shared); // closes the commit channel once every connection is done
    let _ = committer.await;
    let _ = converter.await;
    info!("HL7 listener stopped");
}

/// A TLS handshake longer than this closes the connection (a peer must not hold a slot by
/// never finishing it).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection: its read half, its write half, and the fingerprint of the client
/// certificate it authenticated with (TLS only).
async fn connection<R, W>(
    rd: R,
    wr: W,
    client_cert: Option<String>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    debug!(%peer, tls = shared.options.tls.is_some(), "HL7 connection opened");
    let mut frames = FramedRead::new(rd, MllpCodec::new(shared.options.max_message_bytes));
    let (tx, rx) = mpsc::channel::<Pending>(shared.options.max_in_flight_per_connection.max(1));
    let writer = tokio::spawn(write_acks(
        wr,
        rx,
        shared.counters.clone(),
        peer,
        shared.options.application_acks,
    ));
    loop {
        // back-pressure: take no further frame while the budget is spent. A partial frame in
        // the read buffer is not charged, so waiting here cannot deadlock: only commits free
        // the budget, and they never wait for a reader.
        if shared.budget.spent() {
            inc(&shared.counters.backpressure_pauses);
            debug!(%peer, "in-flight byte budget spent: pausing reads");
            tokio::select! {
                biased;
                _ = signalled(&mut shutdown) => break,
                _ = shared.budget.wait_for_room() => {}
            }
        }
        let next = tokio::select! {
            biased;
            _ = signalled(&mut shutdown) => break,
            r = tokio::time::timeout(shared.options.idle_timeout, frames.next()) => r,
        };
        let frame = match next {
            Err(_) => {
                debug!(%peer, "HL7 connection idle: closing");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                warn!(%peer, "HL7 connection error: {e}");
                if matches!(e, Hl7Error::TruncatedFrame { .. }) {
                    inc(&shared.counters.truncated);
                }
                break;
            }
            Ok(Some(Ok(f))) => f,
        };
        let pending = handle_frame(&shared, frame, peer, client_cert.as_deref()).await;
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    shared
        .counters
        .garbage_bytes
        .fetch_add(frames.decoder().garbage_bytes(), Ordering::Relaxed);
    drop(tx);
    let _ = writer.await;
    debug!(%peer, "HL7 connection closed");
}

/// Checks what the listener needs before storing: a parsable MSH with a type and control id.
#[allow(clippy::result_large_err)]
fn inspect(
    bytes: &Bytes,
    restamping: &RestampingSenders,
) -> Result<(AckContext, InboundMessage), (AckContext, AckError)> {
    let text = match decode_text(bytes) {
        Ok(t) => t,
        // kept and acknowledged all the same (the raw bytes are the record): the header is
        // ASCII whatever the character set, and conversion marks it unconverted with the reason
        Err(Hl7Error::UnsupportedCharset(_)) => {
            std::borrow::Cow::Owned(bytes.iter().map(|&b| b as char).collect())
        }
        Err(e) => {
            return Err((
                AckContext::from_head(bytes),
                AckError::new(207, e.to_string()).at("MSH", 18),
            ));
        }
    };
    let m = Message::parse(&text).map_err(|e| {
        let err = match &e {
            Hl7Error::BadDelimiters(_) => AckError::new(102, e.to_string()).at("MSH", 2),
            _ => AckError::new(100, e.to_string()),
        };
        (AckContext::from_head(bytes), err)
    })?;
    let ctx = AckContext::from_message(&m);
    let Some(message_type) = m.message_type() else {
        return Err((
            ctx,
            AckError::new(101, "MSH-9 (message type) is missing").at("MSH", 9),
        ));
    };
    let Some(control_id) = m.control_id() else {
        return Err((
            ctx,
            AckError::new(101, "MSH-10 (message control id) is missing").at("MSH", 10),
        ));
    };
    let sender = sender_of(&m);
    let message = InboundMessage {
        content_hash: content_hash(bytes, restamping.contains(&sender)),
        connection: connection_of(&m),
        sender,
        control_id: control_id.into_owned(),
        message_type,
        received_at: Utc::now(),
        bytes: bytes.to_vec(),
    };
    Ok((ctx, message))
}

/// Why a sender may not send this message here, if it may not.
fn refusal(shared: &Shared, ctx: &AckContext, client_cert: Option<&str>) -> Option<AckError> {
    let facility = ctx.sending_facility.as_str();
    if let Some(allowed) = &shared.options.allowed_facilities {
        if !allowed.contains(facility) {
            inc(&shared.counters.refused_facility);
            return Some(
                AckError::new(
                    207,
                    format!("sending facility {facility:?} is not allowed on this listener"),
                )
                .at("MSH", 4),
            );
        }
    }
    if let Some(pins) = shared.options.sender_certificates.get(facility) {
        if !client_cert.is_some_and(|c| pins.iter().any(|p| p.eq_ignore_ascii_case(c))) {
            inc(&shared.counters.refused_sender_certificate);
            return Some(
                AckError::new(
                    207,
                    format!(
                        "sending facility {facility:?} must send over TLS with its own client certificate"
                    ),
                )
                .at("MSH", 4),
            );
        }
    }
    None
}

async fn handle_frame(
    shared: &Shared,
    frame: MllpFrame,
    peer: SocketAddr,
    client_cert: Option<&str>,
) -> Pending {
    let counters = &shared.counters;
    let app_acks = shared.options.application_acks;
    match frame {
        MllpFrame::Oversized { size, head } => {
            inc(&counters.oversized);
            inc(&counters.rejected);
            let ctx = AckContext::from_head(&head);
            warn!(%peer, size, control_id = ctx.control_id, "HL7 message over the size limit rejected");
            let err = AckError::new(
                207,
                format!(
                    "message of {size} bytes exceeds the limit of {} bytes",
                    shared.options.max_message_bytes
                ),
            );
            Pending::Ready(acks_for(&ctx, AckCode::AR, Some(&err), app_acks))
        }
        MllpFrame::Message(bytes) => {
            inc(&counters.received);
            match inspect(&bytes, &shared.options.restamping_senders) {
                Err((ctx, err)) => {
                    inc(&counters.rejected);
                    warn!(%peer, control_id = ctx.control_id, "HL7 message rejected: {}", err.text);
                    Pending::Ready(acks_for(&ctx, AckCode::AR, Some(&err), app_acks))
                }
                Ok((ctx, message)) => {
                    if let Some(err) = refusal(shared, &ctx, client_cert) {
                        inc(&counters.rejected);
                        warn!(%peer, control_id = ctx.control_id, "HL7 message refused: {}", err.text);
                        return Pending::Ready(acks_for(&ctx, AckCode::AR, Some(&err), app_acks));
                    }
                    let in_flight = shared.budget.charge(message.bytes.len());
                    let (reply, rx) = oneshot::channel();
                    if shared.commit_tx.send(Job { message, reply }).await.is_err() {
                        let err = AckError::new(207, "the listener is shutting down");
                        return Pending::Ready(acks_for(&ctx, AckCode::AE, Some(&err), app_acks));
                    }
                    Pending::Commit {
                        rx,
                        ctx,
                        _in_flight: in_flight,
                    }
                }
            }
        }
    }
}

async fn write_acks<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Pending>,
    counters: Arc<Counters>,
    peer: SocketAddr,
    app_acks: bool,
) {
    let mut broken = false;
    while let Some(p) = rx.recv().await {
        let acks = match p {
            Pending::Ready(a) => a,
            Pending::Commit { rx, ctx, .. } => match rx.await {
                Ok(Ok(receipt)) => {
                    inc(if receipt.duplicate {
                        &counters.duplicates
                    } else {
                        &counters.accepted
                    });
                    if receipt.reuses_control_id_of.is_some() {
                        inc(&counters.control_id_reused);
                    }
                    acks_for(&ctx, AckCode::AA, None, app_acks)
                }
                Ok(Err(e)) => {
                    inc(&counters.store_errors);
                    let err = AckError::new(207, format!("the message could not be stored: {e}"));
                    acks_for(&ctx, AckCode::AE, Some(&err), app_acks)
                }
                Err(_) => {
                    inc(&counters.store_errors);
                    let err =
                        AckError::new(207, "the message could not be stored (listener stopped)");
                    acks_for(&ctx, AckCode::AE, Some(&err), app_acks)
                }
            },
        };
        for ack in acks {
            if broken {
                break;
            }
            if let Err(e) = wr.write_all(&frame(ack.as_bytes())).await {
                debug!(%peer, "cannot write ACK: {e}");
                broken = true;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// Where the committer hands new messages for conversion: the queue (None when conversion is
/// off), the bytes it may hold, and the overflow left in the store for a later scan.
struct Handoff {
    tx: Option<mpsc::Sender<ConvertJob>>,
    budget: Arc<ByteBudget>,
    overflow: Arc<Overflow>,
}

async fn committer(
    store: Arc<dyn Store>,
    organization: String,
    mut rx: mpsc::Receiver<Job>,
    handoff: Handoff,
    max_batch: usize,
    counters: Arc<Counters>,
) {
    let Handoff {
        tx: conv_tx,
        budget: queue_budget,
        overflow,
    } = handoff;
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        let (messages, replies): (Vec<InboundMessage>, Vec<_>) =
            jobs.drain(..).map(|j| (j.message, j.reply)).unzip();
        let outcome = commit(&store, &organization, &messages, &counters).await;
        let outcome = match outcome {
            Err(e) if messages.len() > 1 => {
                // one bad message must not fail the others: retry one by one
                warn!(
                    count = messages.len(),
                    "storing a batch of HL7 messages failed ({e}); retrying one by one"
                );
                let mut each = Vec::with_capacity(messages.len());
                for m in &messages {
                    each.push(
                        commit(&store, &organization, std::slice::from_ref(m), &counters)
                            .await
                            .map(|r| r[0]),
                    );
                }
                each
            }
            Err(e) => vec![Err(e)],
            Ok(receipts) => receipts.into_iter().map(Ok).collect(),
        };
        for ((result, reply), message) in outcome.into_iter().zip(replies).zip(messages) {
            match result {
                Ok(receipt) => {
                    let _ = reply.send(Ok(receipt));
                    if receipt.duplicate {
                        continue;
                    }
                    if let Some(tx) = &conv_tx {
                        if queue_budget.spent() {
                            // stays in the store, unprocessed: converted by a scan later
                            overflow.add(receipt.id);
                            continue;
                        }
                        let job = ConvertJob {
                            id: receipt.id,
                            _queued: Some(queue_budget.charge(message.bytes.len())),
                            bytes: message.bytes,
                            received_at: message.received_at,
                        };
                        if let Err(mpsc::error::TrySendError::Full(job)) = tx.try_send(job) {
                            overflow.add(job.id);
                        }
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

/// One store transaction; an answer with the wrong number of receipts is an error.
async fn commit(
    store: &Arc<dyn Store>,
    organization: &str,
    messages: &[InboundMessage],
    counters: &Counters,
) -> Result<Vec<InboundReceipt>, String> {
    inc(&counters.batches);
    match store.store_inbound_messages(organization, messages).await {
        Ok(r) if r.len() == messages.len() => Ok(r),
        Ok(r) => Err(format!(
            "the store returned {} receipts for {} messages",
            r.len(),
            messages.len()
        )),
        Err(e) => {
            warn!(count = messages.len(), "storing HL7 messages failed: {e}");
            Err(e.to_string())
        }
    }
}

fn count_outcome(id: i64, error: Option<&str>, counters: &Counters) {
    match error {
        None => inc(&counters.converted),
        Some(e) => {
            inc(&counters.conversion_errors);
            debug!(id, "HL7 conversion failed: {e}");
        }
    }
}

async fn mark(
    store: &Arc<dyn Store>,
    organization: &str,
    id: i64,
    error: Option<String>,
    counters: &Counters,
) {
    count_outcome(id, error.as_deref(), counters);
    if let Err(e) = store
        .mark_inbound_processed(organization, id, error.as_deref())
        .await
    {
        warn!(id, "cannot mark HL7 message processed: {e}");
    }
}

/// Converted messages recorded per transaction at most. Messages of a batch share pages
/// (16 KiB each in the WAL), so larger transactions write less per message; in the benchmark
/// (8 senders, 2 cores) chunks of 16 to 64 gave both lower throughput and no better ACK P99
/// than whole batches of 256: more commits for the ACKs to queue behind, none much shorter.
const COMPLETE_CHUNK: usize = 256;

/// Converts a batch of stored messages and records them, resources, refresh requests and
/// processed marks together, one transaction per chunk ([`Store::complete_conversions`]). A
/// merge reads the prior Patient from the store, so what the batch is about to write to that
/// Patient is committed first.
async fn process_batch(
    store: &Arc<dyn Store>,
    organization: &str,
    jobs: Vec<ConvertJob>,
    counters: &Counters,
    refresh_connection: Option<&str>,
) {
    let failed = |id: i64, error: String| InboundConversion {
        outcome: InboundOutcome {
            id,
            error: Some(error),
            refresh: Vec::new(),
        },
        connection: String::new(),
        resources: Vec::new(),
    };
    let mut pending: Vec<InboundConversion> = Vec::with_capacity(jobs.len().min(COMPLETE_CHUNK));
    for job in jobs {
        let mut converted = match crate::fhir::convert_bytes(&job.bytes) {
            Ok(c) => c,
            Err(e) => {
                pending.push(failed(job.id, e.to_string()));
                continue;
            }
        };
        for w in &converted.warnings {
            debug!(id = job.id, "HL7 conversion warning: {w}");
        }
        if let Some(rc) = refresh_connection {
            for r in &mut converted.refresh {
                r.connection = Some(rc.to_string());
            }
        }
        let reads_pending = converted.merges.iter().any(|m| {
            pending.iter().any(|p| {
                p.connection == converted.connection
                    && p.resources
                        .iter()
                        .any(|r| r.resource_type == "Patient" && r.logical_id == m.prior_id)
            })
        });
        if reads_pending {
            flush(store, organization, &mut pending, counters).await;
        }
        match crate::fhir::resources_to_write(store, organization, &converted, job.received_at)
            .await
        {
            Ok(resources) => pending.push(InboundConversion {
                outcome: InboundOutcome {
                    id: job.id,
                    error: None,
                    refresh: converted.refresh,
                },
                connection: converted.connection,
                resources,
            }),
            Err(e) => pending.push(failed(job.id, e.to_string())),
        }
        if pending.len() >= COMPLETE_CHUNK {
            flush(store, organization, &mut pending, counters).await;
        }
    }
    flush(store, organization, &mut pending, counters).await;
}

/// Records the pending conversions in one transaction; if that fails, each on its own, so
/// that one that cannot be recorded does not take the others with it (it is marked
/// unconverted with the reason).
async fn flush(
    store: &Arc<dyn Store>,
    organization: &str,
    pending: &mut Vec<InboundConversion>,
    counters: &Counters,
) {
    if pending.is_empty() {
        return;
    }
    let batch = std::mem::take(pending);
    match store.complete_conversions(organization, &batch).await {
        Ok(_) => {
            for c in &batch {
                count_outcome(c.outcome.id, c.outcome.error.as_deref(), counters);
            }
        }
        Err(e) => {
            warn!(
                count = batch.len(),
                "recording converted HL7 messages failed: {e}"
            );
            for c in batch {
                match store
                    .complete_conversions(organization, std::slice::from_ref(&c))
                    .await
                {
                    Ok(_) => count_outcome(c.outcome.id, c.outcome.error.as_deref(), counters),
                    Err(e) => {
                        let error = format!("storing the converted resources failed: {e}");
                        mark(store, organization, c.outcome.id, Some(error), counters).await;
                    }
                }
            }
        }
    }
}

/// Committed messages that did not fit in the conversion queue: they stay unprocessed in the
/// store and are converted by a scan of the store once the queue has drained, so that memory
/// stays bounded when messages arrive faster than they can be converted.
#[derive(Debug, Default)]
struct Overflow(std::sync::Mutex<Option<(i64, i64)>>);

impl Overflow {
    fn add(&self, id: i64) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g = Some(match *g {
            None => (id, id),
            Some((lo, hi)) => (lo.min(id), hi.max(id)),
        });
    }

    fn take(&self) -> Option<(i64, i64)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Converts the unprocessed messages stored after id `after` (up to `upto`, received before
/// `before`).
async fn convert_stored(
    store: &Arc<dyn Store>,
    organization: &str,
    mut after: i64,
    upto: Option<i64>,
    before: Option<DateTime<Utc>>,
    counters: &Counters,
    refresh_connection: Option<&str>,
) {
    loop {
        let page = match store.list_inbound_messages(organization, after, 256).await {
            Ok(p) => p,
            Err(e) => {
                warn!("cannot list unprocessed HL7 messages: {e}");
                return;
            }
        };
        let Some(last) = page.last() else { return };
        after = last.id;
        let jobs: Vec<ConvertJob> = page
            .into_iter()
            .filter(|m| {
                m.processed_at.is_none()
                    && upto.is_none_or(|u| m.id <= u)
                    && before.is_none_or(|b| m.received_at < b)
            })
            .map(|m| ConvertJob {
                id: m.id,
                bytes: m.bytes,
                received_at: m.received_at,
                _queued: None,
            })
            .collect();
        if !jobs.is_empty() {
            debug!(count = jobs.len(), "converting stored HL7 messages");
            process_batch(store, organization, jobs, counters, refresh_connection).await;
        }
        if upto.is_some_and(|u| after >= u) {
            return;
        }
    }
}

async fn converter(
    store: Arc<dyn Store>,
    organization: String,
    mut rx: mpsc::Receiver<ConvertJob>,
    overflow: Arc<Overflow>,
    counters: Arc<Counters>,
    // convert what an earlier run left unprocessed (received before this time)
    recover_before: Option<DateTime<Utc>>,
    refresh_connection: Option<String>,
) {
    let rc = refresh_connection.as_deref();
    if let Some(before) = recover_before {
        convert_stored(&store, &organization, 0, None, Some(before), &counters, rc).await;
    }
    const CONVERT_BATCH: usize = 256;
    let mut jobs = Vec::with_capacity(CONVERT_BATCH);
    while rx.recv_many(&mut jobs, CONVERT_BATCH).await > 0 {
        // Conversion shares the store's single writer with the commits that ACKs wait for:
        // under load, gather a fuller batch (a few milliseconds at most) so it takes one
        // transaction where it would take dozens.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(5);
        while jobs.len() < CONVERT_BATCH {
            let room = CONVERT_BATCH - jobs.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut jobs, room)).await {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        process_batch(
            &store,
            &organization,
            std::mem::take(&mut jobs),
            &counters,
            rc,
        )
        .await;
        if rx.is_empty() {
            if let Some((lo, hi)) = overflow.take() {
                convert_stored(&store, &organization, lo - 1, Some(hi), None, &counters, rc).await;
            }
        }
    }
    if let Some((lo, hi)) = overflow.take() {
        convert_stored(&store, &organization, lo - 1, Some(hi), None, &counters, rc).await;
    }
}
