//! What makes a message a resend. A control id (MSH-10) is not an identity: senders reset their
//! counters after a restart and test systems reuse `MSG00001`. A resend is the same sender, the
//! same control id AND the same content; this module computes the content part of that key.
//!
//! The hash covers the segments as sent, with the segment terminators normalized (CR, LF or
//! CRLF) and a leading BOM skipped, so that a resend that travelled another path is still
//! recognized. For a sender that restamps its resends with a new MSH-7 (a listener setting),
//! MSH-7 is left out of the hash.

use sha2::{Digest, Sha256};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Hex SHA-256 of the message's segments (without MSH-7 when `ignore_timestamp`).
pub fn content_hash(bytes: &[u8], ignore_timestamp: bool) -> String {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let mut h = Sha256::new();
    let mut first = true;
    for line in bytes.split(|&b| b == b'\r' || b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if first && ignore_timestamp && line.starts_with(b"MSH") && line.len() > 3 {
            h.update(without_field_7(line).as_slice());
        } else {
            h.update(line);
        }
        h.update(b"\r");
        first = false;
    }
    hex::encode(h.finalize())
}

/// The MSH line with MSH-7 emptied (MSH-1 is the separator itself, so MSH-7 sits between the
/// 6th and the 7th separator).
fn without_field_7(msh: &[u8]) -> Vec<u8> {
    let sep = msh[3];
    let mut seps = msh
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == sep)
        .map(|(i, _)| i);
    let (Some(from), Some(to)) = (seps.nth(5), seps.next()) else {
        // MSH-7 is the last field (or absent): cut after the 6th separator
        return match msh.iter().enumerate().filter(|(_, b)| **b == sep).nth(5) {
            Some((from, _)) => msh[..=from].to_vec(),
            None => msh.to_vec(),
        };
    };
    let mut out = Vec::with_capacity(msh.len());
    out.extend_from_slice(&msh[..=from]);
    out.extend_from_slice(&msh[to..]);
    out
}

/// Which senders restamp MSH-7 on a resend: `*` names all of them, otherwise a sender is
/// written as the listener keys it, `{MSH-3.1}^{MSH-4.1}` (e.g. `LAB^HOSP`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestampingSenders(Vec<String>);

impl RestampingSenders {
    pub fn new(senders: impl IntoIterator<Item = impl Into<String>>) -> Self {
        RestampingSenders(senders.into_iter().map(Into::into).collect())
    }

    pub fn all() -> Self {
        RestampingSenders(vec!["*".into()])
    }

    pub fn contains(&self, sender: &str) -> bool {
        self.0.iter().any(|s| s == "*" || s == sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[u8] = b"MSH|^~\\&|LAB|HOSP|AQ|AQ|20240101120000||ORU^R01|C1|P|2.5\rPID|1||123\r";

    #[test]
    fn terminators_and_bom_do_not_matter_content_does() {
        let lf = String::from_utf8_lossy(M).replace('\r', "\n");
        let crlf = String::from_utf8_lossy(M).replace('\r', "\r\n");
        let mut bom = BOM.to_vec();
        bom.extend_from_slice(M);
        let h = content_hash(M, false);
        assert_eq!(content_hash(lf.as_bytes(), false), h);
        assert_eq!(content_hash(crlf.as_bytes(), false), h);
        assert_eq!(content_hash(&bom, false), h);
        let other = String::from_utf8_lossy(M).replace("123", "124");
        assert_ne!(content_hash(other.as_bytes(), false), h);
    }

    #[test]
    fn msh7_is_left_out_only_when_asked() {
        let restamped = String::from_utf8_lossy(M).replace("20240101120000", "20240101120500");
        assert_ne!(
            content_hash(restamped.as_bytes(), false),
            content_hash(M, false)
        );
        assert_eq!(
            content_hash(restamped.as_bytes(), true),
            content_hash(M, true)
        );
        // MSH-7 is the only field left out: another MSH-9 still differs
        let retyped = String::from_utf8_lossy(M).replace("ORU^R01", "ORU^R30");
        assert_ne!(
            content_hash(retyped.as_bytes(), true),
            content_hash(M, true)
        );
        // a short MSH does not panic
        assert_eq!(content_hash(b"MSH|^~", true), content_hash(b"MSH|^~", true));
        assert_eq!(
            content_hash(b"MSH|^~\\&|A|B|C|D|2024", true),
            content_hash(b"MSH|^~\\&|A|B|C|D|2025", true)
        );
    }

    #[test]
    fn restamping_senders() {
        assert!(RestampingSenders::all().contains("LAB^HOSP"));
        let s = RestampingSenders::new(["LAB^HOSP"]);
        assert!(s.contains("LAB^HOSP"));
        assert!(!s.contains("EPIC^HOSP"));
        assert!(!RestampingSenders::default().contains("LAB^HOSP"));
    }
}
