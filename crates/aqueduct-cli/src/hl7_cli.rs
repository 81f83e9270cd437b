//! Command-line arguments and runners for `aqueduct hl7 listen` and `aqueduct hl7 send`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aqueduct_store::Store;
use clap::Args;

use aqueduct_hl7::Hl7Error;
use aqueduct_hl7::client::{SendOptions, send_with};
use aqueduct_hl7::listener::{ListenerOptions, listen};
use aqueduct_hl7::message::split_messages;
use aqueduct_hl7::resend::RestampingSenders;
use aqueduct_hl7::tls::{ClientTls, TlsSettings};
use std::collections::BTreeMap;

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
    /// MLLP over TLS: the listener's certificate chain (PEM). With --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) of the client certificates senders may present.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse TLS clients without a certificate from --tls-client-ca.
    #[arg(long, requires = "tls_client_ca")]
    pub require_client_cert: bool,
    /// Accept messages only from this sending facility (MSH-4.1). Repeatable.
    #[arg(long = "allowed-facility")]
    pub allowed_facilities: Vec<String>,
    /// FACILITY=SHA256: messages of FACILITY must come over TLS with the client certificate of
    /// this fingerprint (hex SHA-256 of its DER). Repeatable.
    #[arg(long = "sender-cert")]
    pub sender_certs: Vec<String>,
    /// Allow plain (non-TLS) MLLP on a non-loopback address.
    #[arg(long)]
    pub allow_plain_remote: bool,
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
    /// MLLP over TLS: the CA (PEM) that issued the listener's certificate.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// The name the listener's certificate must carry (default: the host of --to).
    #[arg(long, requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// This sender's client certificate (PEM), with --tls-key.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn read_file(p: &std::path::Path) -> Result<Vec<u8>, Hl7Error> {
    std::fs::read(p).map_err(|e| {
        Hl7Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", p.display()),
        ))
    })
}

fn listener_tls(args: &ListenArgs) -> Result<Option<TlsSettings>, Hl7Error> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let ca = args.tls_client_ca.as_deref().map(read_file).transpose()?;
    TlsSettings::from_pem(
        &read_file(cert)?,
        &read_file(key)?,
        ca.as_deref(),
        args.require_client_cert,
    )
    .map(Some)
}

fn sender_certificates(args: &ListenArgs) -> Result<BTreeMap<String, Vec<String>>, Hl7Error> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &args.sender_certs {
        let Some((facility, fp)) = s.split_once('=') else {
            return Err(Hl7Error::Tls(format!(
                "--sender-cert {s:?}: expected FACILITY=SHA256"
            )));
        };
        let fp = fp.trim().replace(':', "").to_ascii_lowercase();
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Hl7Error::Tls(format!(
                "--sender-cert {s:?}: the fingerprint must be 64 hex digits (SHA-256)"
            )));
        }
        out.entry(facility.trim().to_string()).or_default().push(fp);
    }
    Ok(out)
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
        tls: listener_tls(&args)?,
        allowed_facilities: (!args.allowed_facilities.is_empty())
            .then(|| args.allowed_facilities.iter().cloned().collect()),
        sender_certificates: sender_certificates(&args)?,
        allow_plain_remote: args.allow_plain_remote,
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
        tls: match &args.tls_ca {
            None => None,
            Some(ca) => {
                let host = args.tls_server_name.clone().unwrap_or_else(|| {
                    args.to
                        .rsplit_once(':')
                        .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                        .unwrap_or_else(|| args.to.clone())
                });
                let client = match (&args.tls_cert, &args.tls_key) {
                    (Some(c), Some(k)) => Some((read_file(c)?, read_file(k)?)),
                    _ => None,
                };
                Some(ClientTls::from_pem(
                    &read_file(ca)?,
                    &host,
                    client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
                )?)
            }
        },
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
