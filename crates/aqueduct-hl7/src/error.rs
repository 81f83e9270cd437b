//! Errors of the HL7 crate: each names what was wrong, so that a NAK can say why.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Hl7Error {
    #[error("empty message")]
    Empty,
    #[error("the message does not start with an MSH segment (found {found:?})")]
    MissingMsh { found: String },
    #[error("bad delimiters in MSH-1/MSH-2: {0}")]
    BadDelimiters(String),
    #[error(
        "segment {index} has an invalid name {name:?} (expected three upper-case letters or digits)"
    )]
    BadSegmentName { index: usize, name: String },
    #[error("several messages in one: segment {index} is a second MSH (split them first)")]
    SeveralMessages { index: usize },
    #[error("required field {field} is missing or empty")]
    MissingField { field: &'static str },
    #[error("unsupported character set {0:?} in MSH-18")]
    UnsupportedCharset(String),
    #[error("invalid path {0:?} (expected e.g. PID-5.1, OBX[2]-5, PID-3(2).4.1)")]
    BadPath(String),
    #[error("MLLP frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("connection closed in the middle of an MLLP frame ({bytes} bytes received)")]
    TruncatedFrame { bytes: usize },
    #[error("the peer sent no ACK within {0} seconds")]
    AckTimeout(u64),
    #[error("the reply is not an HL7 ACK: {0}")]
    BadAck(String),
    #[error("{failed} of {total} messages were not accepted by the receiver")]
    NotAccepted { failed: usize, total: usize },
    #[error("cannot convert the message to FHIR: {0}")]
    Conversion(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(
        "plain MLLP on {0} would be reachable from other hosts: bind a loopback address, configure TLS, or allow plain remote connections explicitly"
    )]
    PlainNotLoopback(std::net::SocketAddr),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] aqueduct_core::StoreError),
}
