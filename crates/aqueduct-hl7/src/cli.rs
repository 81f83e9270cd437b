//! Command-line arguments and runners for `aqueduct hl7 listen` and `aqueduct hl7 send`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aqueduct_store::Store;
use clap::Args;

use crate::client::{SendOptions, send_with};
use crate::error::Hl7Error;
use crate::listener::{ListenerOptions, listen};
use crate::message::split_messages;
use crate::resend::RestampingSenders;

/// Receive HL7 v2 messages over MLLP, store them, acknowledge them, turn them into events.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Address to listen on (loopback by default: expose it deliberately).
    #[arg(long, default_value = "127.0.0.1:2575", env = "AQUEDUCT_HL7_BIND")]
    pub bind: String,
    /// Organization the messages belong to.
    #[arg(long)]
    pub org: String,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message_bytes: usize,
    /// Close a connection silent for this many seconds.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Connection to name in the refresh requests raised by messages (default: every
    /// connection that holds the patient).
    #[arg(long)]
    pub refresh_connection: Option<String>,
    /// A sender (`MSH-3^MSH-4`, e.g. `LAB^HOSP`, or `*` for all) that puts a new MSH-7 on its
    /// resends: its MSH-7 is left out when telling a resend from a new message. Repeatable.
    #[arg(long = "restamping-sender")]
    pub restamping_senders: Vec<String>,
    /// Connections one peer address may hold open at once.
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_peer: usize,
    /// Bytes of messages received and not yet acknowledged, over all connections; when spent,
    /// the listener stops reading until commits free it.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_in_flight_bytes: usize,
    /// In enhanced mode (MSH-15/MSH-16 set), also send the application ACK that MSH-16 asks
    /// for after the commit ACK (CA).
    #[arg(long)]
    pub application_acks: bool,
}

/// Send the HL7 v2 messages of files over MLLP and print each ACK.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Files holding one or more messages each.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// HOST:PORT of the MLLP listener.
    #[arg(long)]
    pub to: String,
    /// Print one JSON object per message instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each ACK.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// Reconnections (with exponential backoff from 200 ms up to 10 s) after the connection
    /// fails or no ACK comes, before a message is reported as not acknowledged. An AE or AR
    /// answer is a failure reported at once, not retried.
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
}

/// Serves until Ctrl-C, then shuts down gracefully (in-flight messages are stored and
/// acknowledged).
pub async fn run_listen(args: ListenArgs, store: Arc<dyn Store>) -> Result<(), Hl7Error> {
    let options = ListenerOptions {
        max_message_bytes: args.max_message_bytes,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
        refresh_connection: args.refresh_connection.clone(),
        restamping_senders: RestampingSenders::new(args.restamping_senders.iter().cloned()),
        max_connections_per_peer: args.max_connections_per_peer,
        max_in_flight_bytes: args.max_in_flight_bytes,
        application_acks: args.application_acks,
        ..ListenerOptions::default()
    };
    let listener = listen(args.bind.as_str(), store, args.org.clone(), options).await?;
    eprintln!(
        "listening for HL7 v2 over MLLP on {} (organization {}); Ctrl-C to stop",
        listener.local_addr(),
        args.org
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping: finishing in-flight messages...");
    let stats = listener.shutdown().await;
    eprintln!(
        "stopped: {} received, {} accepted, {} duplicates, {} rejected, {} store errors, {} converted, {} conversion errors",
        stats.received,
        stats.accepted,
        stats.duplicates,
        stats.rejected,
        stats.store_errors,
        stats.converted,
        stats.conversion_errors
    );
    eprintln!(
        "refused: {} over the connection limit, {} over the per-peer limit; {} back-pressure pauses (peak {} bytes in flight)",
        stats.refused_connection_limit,
        stats.refused_peer_limit,
        stats.backpressure_pauses,
        stats.in_flight_bytes_peak
    );
    Ok(())
}

/// Sends every message of every file (a file may hold many) and prints each ACK. Fails when
/// a file cannot be read or any message was not accepted (AA/CA).
pub async fn run_send(args: SendArgs) -> Result<(), Hl7Error> {
    let mut all = Vec::new();
    let mut origin = Vec::new();
    for f in &args.files {
        let bytes = std::fs::read(f).map_err(|e| {
            Hl7Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", f.display()),
            ))
        })?;
        for (i, m) in split_messages(&bytes).into_iter().enumerate() {
            all.push(m.to_vec());
            origin.push((f.display().to_string(), i + 1));
        }
    }
    let options = SendOptions {
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        retries: args.retries,
        ..SendOptions::default()
    };
    let results = send_with(args.to.as_str(), &all, &options).await;
    let mut failed = 0;
    for (r, (file, n)) in results.iter().zip(&origin) {
        if !r.accepted() || r.error.is_some() {
            failed += 1;
        }
        if args.json {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["file"] = serde_json::json!(file);
            v["index"] = serde_json::json!(n);
            println!("{v}");
        } else {
            println!(
                "{file}#{n} {} {} {}",
                if r.control_id.is_empty() {
                    "-"
                } else {
                    &r.control_id
                },
                r.code.as_deref().unwrap_or("no-ack"),
                r.error.as_deref().or(r.text.as_deref()).unwrap_or_default()
            );
        }
    }
    if failed > 0 {
        return Err(Hl7Error::NotAccepted {
            failed,
            total: results.len(),
        });
    }
    Ok(())
}
