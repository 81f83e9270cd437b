//! HL7 v2 over MLLP for Aqueduct, usable as a library on its own. This crate owns HL7 v2
//! parsing and encoding ([`Message`], zero-copy with lazy unescaping), MLLP framing
//! ([`MllpCodec`]), the listener ([`listen`]) that acknowledges a message only once it is
//! durably committed and tells resends from reused control ids ([`resend`]), its limits under
//! load (connections per peer, a byte budget with back-pressure), the sender ([`send`]), the
//! mapping of every common message kind (ADT, ORU/OUL, ORM/OML/OMG, MDM, SIU, VXU, RDE/RDS,
//! DFT/BAR, REF, PPR) to FHIR resources and refresh events ([`fhir::convert`], which knows
//! nothing of the store), and the writing of those resources ([`persist`]). It does not know
//! sync, SMART or vendors, and it persists only through the [`aqueduct_core::Store`] trait.
//!
//! ```
//! use aqueduct_hl7::{Message, decode_text};
//! let bytes = b"\xEF\xBB\xBFMSH|^~\\&|LAB|HOSP|||20240101||ORU^R01|42|P|2.5\rPID|1||123^^^HOSP^MR~9^^^SSA^SS||Doe^John\\T\\Jim\r";
//! let text = decode_text(bytes)?; // MSH-18 honoured, BOM skipped
//! let m = Message::parse(&text)?;
//! assert_eq!(m.get("PID-5.2").as_deref(), Some("John&Jim"));
//! assert_eq!(m.get("PID-3(2).1").as_deref(), Some("9"));
//! assert_eq!(m.segments("PID").count(), 1);
//! assert_eq!(Message::parse(&m.encode())?, m);
//! # Ok::<(), aqueduct_hl7::Hl7Error>(())
//! ```
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<dyn aqueduct_core::Store>) -> Result<(), aqueduct_hl7::Hl7Error> {
//! use aqueduct_hl7::{ListenerOptions, listen, send};
//! let listener = listen("0.0.0.0:2575", store, "acme".into(), ListenerOptions::default()).await?;
//! let acks = send(listener.local_addr(), [b"MSH|^~\\&|A|B|||2024||ADT^A08|1|P|2.5\r".to_vec()]).await;
//! assert!(acks[0].accepted());
//! let stats = listener.shutdown().await; // finishes in-flight messages
//! # Ok(()) }
//! ```

pub mod ack;
mod builder;
pub mod client;
mod error;
pub mod fhir;
#[doc(hidden)]
pub mod fuzzing;
mod limits;
pub mod listener;
pub mod message;
pub mod mllp;
pub mod persist;
pub mod resend;
pub mod tls;

pub use ack::{
    AckCode, AckCondition, AckContext, AckError, AckMode, AckResult, acks_for, build_ack,
};
pub use builder::MessageBuilder;
pub use client::{SendOptions, send, send_with};
pub use error::Hl7Error;
pub use listener::{Listener, ListenerOptions, ListenerStats, listen};
pub use message::{
    Delimiters, Message, Path, Segment, decode_text, escape, split_messages, unescape,
};
pub use mllp::{MllpCodec, MllpFrame};
pub use resend::{RestampingSenders, content_hash};
pub use tls::{ClientTls, TlsSettings};
