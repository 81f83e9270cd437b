//! Acknowledgements: building ACK messages (MSA and, for errors, ERR saying why) and reading
//! the ACK a peer sends back.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use serde::Serialize;

use crate::message::{Delimiters, Message, decode_text, escape};

/// MSA-1: AA/AE/AR in original mode (and for application ACKs in enhanced mode), CA/CE/CR
/// for the commit (accept) ACK of enhanced mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AckCode {
    /// Application accept: stored.
    AA,
    /// Application error: could not be stored now (store failure); the sender should retry.
    AE,
    /// Application reject: the message is malformed and will never be accepted as is.
    AR,
    /// Commit accept: the message is committed to the store.
    CA,
    /// Commit error: it could not be committed now; the sender should retry.
    CE,
    /// Commit reject: malformed, it will never be committed as is.
    CR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// The commit-ACK code of the same outcome (AA→CA, AE→CE, AR→CR).
    pub fn commit(self) -> AckCode {
        match self {
            AckCode::AA | AckCode::CA => AckCode::CA,
            AckCode::AE | AckCode::CE => AckCode::CE,
            AckCode::AR | AckCode::CR => AckCode::CR,
        }
    }

    fn success(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }
}

/// MSH-15 / MSH-16 (HL7 table 0155): when an acknowledgement is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckCondition {
    /// AL: always.
    #[default]
    Always,
    /// NE: never.
    Never,
    /// ER: only after an error or a reject.
    OnError,
    /// SU: only after success.
    OnSuccess,
}

impl AckCondition {
    /// None when the field is empty (original mode, unless the other one is set).
    pub fn parse(field: &str) -> Option<AckCondition> {
        match field.trim() {
            "" => None,
            "NE" => Some(AckCondition::Never),
            "ER" => Some(AckCondition::OnError),
            "SU" => Some(AckCondition::OnSuccess),
            // AL, and anything unknown: answering is the safe side
            _ => Some(AckCondition::Always),
        }
    }

    pub fn wants(self, code: AckCode) -> bool {
        match self {
            AckCondition::Always => true,
            AckCondition::Never => false,
            AckCondition::OnError => !code.success(),
            AckCondition::OnSuccess => code.success(),
        }
    }
}

/// Which acknowledgements a message asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// MSH-15 and MSH-16 empty: one ACK, AA/AE/AR, after the commit.
    #[default]
    Original,
    /// MSH-15/MSH-16 set: a commit ACK (CA/CE/CR) when MSH-15 asks for it, and an application
    /// ACK (AA/AE/AR) when MSH-16 asks for it and the listener is configured to send them.
    Enhanced {
        accept: AckCondition,
        application: AckCondition,
    },
}

/// Why a message was not accepted, for the ERR segment (HL7 table 0357 codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// 100 segment sequence error, 101 required field missing, 102 data type error,
    /// 200 unsupported message type, 207 application internal error...
    pub code: u16,
    /// Where: `("MSH", 10)` means MSH-10.
    pub location: Option<(String, usize)>,
    pub text: String,
}

impl AckError {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        AckError {
            code,
            location: None,
            text: text.into(),
        }
    }

    pub fn at(mut self, segment: &str, field: usize) -> Self {
        self.location = Some((segment.to_string(), field));
        self
    }

    fn code_text(&self) -> &'static str {
        match self.code {
            0 => "Message accepted",
            100 => "Segment sequence error",
            101 => "Required field missing",
            102 => "Data type error",
            103 => "Table value not found",
            200 => "Unsupported message type",
            201 => "Unsupported event code",
            202 => "Unsupported processing id",
            203 => "Unsupported version id",
            204 => "Unknown key identifier",
            205 => "Duplicate key identifier",
            206 => "Application record locked",
            _ => "Application internal error",
        }
    }
}

/// What an ACK needs from the message it answers (all optional: a message without MSH still
/// gets an answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckContext {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub control_id: String,
    pub trigger: String,
    pub processing_id: String,
    pub version: String,
    pub mode: AckMode,
}

impl AckContext {
    /// Reads the header of a parsed message (raw components: they are copied back escaped as
    /// they came, with the same delimiters only when those are the standard ones).
    pub fn from_message(m: &Message<'_>) -> Self {
        let g = |p: &str| m.get(p).map(|v| v.into_owned()).unwrap_or_default();
        AckContext {
            sending_application: g("MSH-3.1"),
            sending_facility: g("MSH-4.1"),
            receiving_application: g("MSH-5.1"),
            receiving_facility: g("MSH-6.1"),
            control_id: g("MSH-10"),
            trigger: g("MSH-9.2"),
            processing_id: g("MSH-11.1"),
            version: g("MSH-12.1"),
            mode: match (
                AckCondition::parse(&g("MSH-15")),
                AckCondition::parse(&g("MSH-16")),
            ) {
                (None, None) => AckMode::Original,
                // an empty MSH-15 in enhanced mode means AL, an empty MSH-16 NE
                (a, b) => AckMode::Enhanced {
                    accept: a.unwrap_or(AckCondition::Always),
                    application: b.unwrap_or(AckCondition::Never),
                },
            },
        }
    }

    /// Best effort from the first bytes of a message (an oversized or unparsable one): the MSH
    /// line alone is parsed.
    pub fn from_head(bytes: &[u8]) -> Self {
        let text = match decode_text(bytes) {
            Ok(t) => t,
            Err(_) => return AckContext::default(),
        };
        let first = text
            .trim_start_matches(['\r', '\n'])
            .split(['\r', '\n'])
            .next()
            .unwrap_or_default();
        match Message::parse(first) {
            Ok(m) => AckContext::from_message(&m),
            Err(_) => AckContext::default(),
        }
    }
}

static ACK_SEQ: AtomicU64 = AtomicU64::new(1);

/// The ACKs to send for an outcome, in order, as the message's mode asks (none when it asks for
/// none): original mode, one with `code`; enhanced mode, the commit ACK if MSH-15 wants it, then
/// the application ACK if MSH-16 wants it and `application_acks` is on.
pub fn acks_for(
    ctx: &AckContext,
    code: AckCode,
    error: Option<&AckError>,
    application_acks: bool,
) -> Vec<String> {
    match ctx.mode {
        AckMode::Original => vec![build_ack(ctx, code, error)],
        AckMode::Enhanced {
            accept,
            application,
        } => {
            let mut out = Vec::new();
            if accept.wants(code.commit()) {
                out.push(build_ack(ctx, code.commit(), error));
            }
            let app = match code {
                AckCode::CA => AckCode::AA,
                AckCode::CE => AckCode::AE,
                AckCode::CR => AckCode::AR,
                c => c,
            };
            if application_acks && application.wants(app) {
                out.push(build_ack(ctx, app, error));
            }
            out
        }
    }
}

/// Builds one ACK with the standard delimiters: MSH, MSA (MSA-3 says what was wrong) and, when
/// `error` is given, ERR (ERR-1 for v2.3 readers, ERR-2/3/4/8 for v2.5+ readers). The ACK asks
/// for no acknowledgement itself.
pub fn build_ack(ctx: &AckContext, code: AckCode, error: Option<&AckError>) -> String {
    let d = Delimiters::default();
    let e = |s: &str| escape(s, &d).into_owned();
    let now = Utc::now().format("%Y%m%d%H%M%S%.3f%z");
    let seq = ACK_SEQ.fetch_add(1, Ordering::Relaxed);
    let version = if ctx.version.is_empty() {
        "2.5.1"
    } else {
        &ctx.version
    };
    let processing = if ctx.processing_id.is_empty() {
        "P"
    } else {
        &ctx.processing_id
    };
    let mut out = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK^{}^ACK|AQ{}{}|{}|{}\rMSA|{}|{}",
        e(&ctx.receiving_application),
        e(&ctx.receiving_facility),
        e(&ctx.sending_application),
        e(&ctx.sending_facility),
        now,
        e(&ctx.trigger),
        Utc::now().timestamp_millis(),
        seq,
        e(processing),
        e(version),
        code.as_str(),
        e(&ctx.control_id),
    );
    if let Some(err) = error {
        let text = e(&err.text);
        out.push('|');
        out.push_str(&text);
        out.push('\r');
        let (seg, field) = match &err.location {
            Some((s, f)) => (e(s), f.to_string()),
            None => (String::new(), String::new()),
        };
        let seq_no = if seg.is_empty() { "" } else { "1" };
        out.push_str(&format!(
            "ERR|{seg}^{seq_no}^{field}^{code}&{ct}&HL70357|{seg}^{seq_no}^{field}|{code}^{ct}^HL70357|E||||{text}\r",
            code = err.code,
            ct = err.code_text(),
        ));
    } else {
        out.push('\r');
    }
    out
}

/// The outcome of sending one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AckResult {
    /// MSH-10 of the message sent (empty when it had none).
    pub control_id: String,
    /// MSA-1 as received ("AA", "AE", "AR", "CA"...), or None when no ACK came.
    pub code: Option<String>,
    /// MSA-2 of the ACK.
    pub acked_control_id: Option<String>,
    /// MSA-3 and the ERR text, when any.
    pub text: Option<String>,
    /// A transport or protocol error (connection refused, timeout, not an ACK...).
    pub error: Option<String>,
    /// The ACK as received.
    pub raw: Option<String>,
}

impl AckResult {
    /// True for AA and CA.
    pub fn accepted(&self) -> bool {
        matches!(self.code.as_deref(), Some("AA") | Some("CA"))
    }

    pub fn failed(control_id: &str, error: impl Into<String>) -> Self {
        AckResult {
            control_id: control_id.to_string(),
            code: None,
            acked_control_id: None,
            text: None,
            error: Some(error.into()),
            raw: None,
        }
    }

    /// Reads an ACK message.
    pub fn from_ack(control_id: &str, bytes: &[u8]) -> Self {
        let text = match decode_text(bytes) {
            Ok(t) => t,
            Err(e) => return AckResult::failed(control_id, e.to_string()),
        };
        let m = match Message::parse(&text) {
            Ok(m) => m,
            Err(e) => return AckResult::failed(control_id, format!("unreadable ACK: {e}")),
        };
        let Some(code) = m.get("MSA-1") else {
            return AckResult::failed(control_id, "the reply has no MSA segment");
        };
        let mut texts = Vec::new();
        if let Some(t) = m.get("MSA-3") {
            texts.push(t.into_owned());
        }
        for err in m.segments("ERR") {
            if let Some(t) = err
                .get("8")
                .or_else(|| err.get("3.2"))
                .or_else(|| err.get("1.4.2"))
            {
                if !texts.iter().any(|x| *x == t) {
                    texts.push(t.into_owned());
                }
            }
        }
        AckResult {
            control_id: control_id.to_string(),
            code: Some(code.into_owned()),
            acked_control_id: m.get("MSA-2").map(|c| c.into_owned()),
            text: if texts.is_empty() {
                None
            } else {
                Some(texts.join("; "))
            },
            error: None,
            raw: Some(text.into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_mode_follows_msh15_and_msh16() {
        let m = |f15: &str, f16: &str| {
            let t = format!("MSH|^~\\&|A|B|C|D|2024||ADT^A08|C9|P|2.5|||{f15}|{f16}\r");
            AckContext::from_message(&Message::parse(&t).unwrap())
        };
        let codes = |v: Vec<String>| -> Vec<String> {
            v.iter()
                .map(|a| AckResult::from_ack("C9", a.as_bytes()).code.unwrap())
                .collect()
        };
        assert_eq!(m("", "").mode, AckMode::Original);
        assert_eq!(codes(acks_for(&m("", ""), AckCode::AA, None, true)), ["AA"]);
        assert_eq!(
            codes(acks_for(&m("AL", "NE"), AckCode::AA, None, true)),
            ["CA"]
        );
        assert_eq!(
            codes(acks_for(&m("AL", "AL"), AckCode::AA, None, true)),
            ["CA", "AA"]
        );
        assert_eq!(
            codes(acks_for(&m("AL", "AL"), AckCode::AA, None, false)),
            ["CA"]
        );
        let err = AckError::new(207, "disk full");
        assert_eq!(
            codes(acks_for(&m("ER", "ER"), AckCode::AE, Some(&err), true)),
            ["CE", "AE"]
        );
        assert!(acks_for(&m("ER", "NE"), AckCode::AA, None, true).is_empty());
        assert!(acks_for(&m("NE", "NE"), AckCode::AR, None, true).is_empty());
        assert_eq!(
            codes(acks_for(&m("SU", ""), AckCode::AR, None, true)).len(),
            0
        );
        let cr = &acks_for(&m("AL", ""), AckCode::AR, Some(&err), true)[0];
        assert!(cr.contains("MSA|CR|C9|disk full"), "{cr}");
        assert!(cr.contains("\rERR|"), "{cr}");
    }

    #[test]
    fn ack_round_trip() {
        let m = Message::parse("MSH|^~\\&|LAB|HOSP|AQ|AQF|20240101||ORU^R01|C1|P|2.3\r").unwrap();
        let ctx = AckContext::from_message(&m);
        let ok = build_ack(&ctx, AckCode::AA, None);
        let r = AckResult::from_ack("C1", ok.as_bytes());
        assert!(r.accepted());
        assert_eq!(r.acked_control_id.as_deref(), Some("C1"));
        let err = AckError::new(101, "MSH-10 missing | really").at("MSH", 10);
        let nak = build_ack(&ctx, AckCode::AR, Some(&err));
        let r = AckResult::from_ack("C1", nak.as_bytes());
        assert_eq!(r.code.as_deref(), Some("AR"));
        assert_eq!(r.text.as_deref(), Some("MSH-10 missing | really"));
        let parsed = Message::parse(&nak).unwrap();
        assert_eq!(parsed.get("ERR-3.1").unwrap(), "101");
        assert_eq!(parsed.get("ERR-2.1").unwrap(), "MSH");
        assert_eq!(parsed.get("MSH-5").unwrap(), "LAB");
        assert_eq!(parsed.get("MSH-12").unwrap(), "2.3");
    }
}
