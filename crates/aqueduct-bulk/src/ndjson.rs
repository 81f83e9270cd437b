//! NDJSON, streamed: bytes go in as they arrive (already inflated), complete lines come out
//! with their 1-based line number and the byte offset just past them, so a download can be
//! resumed after the last committed line. A UTF-8 byte-order mark at the start of the file and
//! a `\r` before the `\n` are transport noise and are not part of the line; blank lines are
//! counted (line numbers stay those of the file) but carry nothing. Nothing here allocates per
//! line beyond the caller's copy: the buffer holds at most one partial line plus one chunk.

use aqueduct_core::{ParseStatus, RawResource};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Longest line accepted (one resource); a longer one is cut off and reported, so a server
/// that never sends a newline cannot make the buffer grow without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// One line of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// 1-based line number in the file.
    pub number: u64,
    /// The line without its `\r\n` / `\n` (and without a leading BOM on line 1).
    pub bytes: &'a [u8],
    /// Offset in the (decoded) file just past this line's newline.
    pub end_offset: u64,
    /// False for a last line that had no newline (it may have been cut off).
    pub terminated: bool,
}

/// Splits a byte stream into lines.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// Offset in the file of `buf[0]`.
    buf_offset: u64,
    /// Number of the last line handed out.
    line: u64,
    at_file_start: bool,
    /// Bytes of an over-long line dropped after `buf`'s end (the line is handed out cut).
    skipped: u64,
}

impl LineSplitter {
    /// Starts at the beginning of a file.
    pub fn new() -> Self {
        Self::resume(0, 0)
    }

    /// Continues a file whose first `lines` lines (ending at byte `offset`) were read before:
    /// the bytes pushed start at `offset`.
    pub fn resume(lines: u64, offset: u64) -> Self {
        Self {
            buf: Vec::with_capacity(64 * 1024),
            buf_offset: offset,
            line: lines,
            at_file_start: offset == 0,
            skipped: 0,
        }
    }

    /// Number of the last line handed out.
    pub fn lines(&self) -> u64 {
        self.line
    }

    /// Feeds bytes; `each` gets every line completed by them, in order. A line longer than
    /// [`MAX_LINE_BYTES`] is handed out cut to that length (it will not parse).
    pub fn push<E>(
        &mut self,
        data: &[u8],
        mut each: impl FnMut(Line<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let scan_from = self.buf.len();
        self.buf.extend_from_slice(data);
        let mut start = 0usize;
        let mut search = scan_from;
        while let Some(rel) = memchr::memchr(b'\n', &self.buf[search..]) {
            let nl = search + rel;
            let end_offset = self.buf_offset + self.skipped + nl as u64 + 1;
            self.line += 1;
            let line = trim_line(&self.buf[start..nl], self.at_file_start);
            self.at_file_start = false;
            each(Line {
                number: self.line,
                bytes: line,
                end_offset,
                terminated: true,
            })?;
            start = nl + 1;
            search = start;
        }
        if start > 0 {
            self.buf.drain(..start);
            self.buf_offset += start as u64 + self.skipped;
            self.skipped = 0;
        }
        if self.buf.len() > MAX_LINE_BYTES {
            // keep the beginning (it will not parse, and is reported), drop the rest
            let dropped = self.buf.len() - MAX_LINE_BYTES;
            self.buf.truncate(MAX_LINE_BYTES);
            self.skipped += dropped as u64;
        }
        Ok(())
    }

    /// The end of the file: a last line without a newline, if any.
    pub fn finish<E>(&mut self, each: impl FnOnce(Line<'_>) -> Result<(), E>) -> Result<(), E> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.line += 1;
        let end_offset = self.buf_offset + self.skipped + self.buf.len() as u64;
        let bytes = std::mem::take(&mut self.buf);
        let line = trim_line(&bytes, self.at_file_start);
        each(Line {
            number: self.line,
            bytes: line,
            end_offset,
            terminated: false,
        })
    }
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new()
    }
}

fn trim_line(line: &[u8], first: bool) -> &[u8] {
    let line = if first {
        line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
    } else {
        line
    };
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// True for a line of only spaces and tabs (or nothing).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// The head of a line: the fields routing and storage need, borrowed as raw JSON (nothing is
/// built for the rest of the resource, which is only validated while skipped).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Head<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
    #[serde(borrow)]
    subject: Option<&'a RawValue>,
    #[serde(borrow)]
    patient: Option<&'a RawValue>,
    #[serde(borrow)]
    beneficiary: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MetaHead {
    #[serde(rename = "versionId")]
    version_id: Option<Value>,
    #[serde(rename = "lastUpdated")]
    last_updated: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RefHead {
    reference: Option<Value>,
}

/// What a line turned into.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedLine {
    pub resource: RawResource,
    /// Why the line is not a usable resource (it is stored flagged all the same).
    pub problem: Option<String>,
}

/// Where a line came from.
#[derive(Debug, Clone, Copy)]
pub struct LineSource<'a> {
    /// The file's URL (never with a token).
    pub url: &'a str,
    /// The manifest's type for the file, used when the line does not say its own.
    pub file_type: &'a str,
    pub fetched_at: DateTime<Utc>,
}

/// A JSON string's value (escapes decoded); None for anything else.
fn str_of(v: Option<&RawValue>) -> Option<String> {
    let raw = v?.get();
    if !raw.starts_with('"') {
        return None;
    }
    if !raw.contains('\\') {
        return Some(raw[1..raw.len() - 1].to_string());
    }
    serde_json::from_str::<String>(raw).ok()
}

fn meta_of(v: Option<&RawValue>) -> MetaHead {
    v.and_then(|m| serde_json::from_str::<MetaHead>(m.get()).ok())
        .unwrap_or_default()
}

fn patient_of(r: Option<&RawValue>) -> Option<String> {
    let head = serde_json::from_str::<RefHead>(r?.get()).ok()?;
    let reference = head.reference.as_ref()?.as_str()?;
    let id = reference.rsplit_once("Patient/").map(|(_, id)| id)?;
    let id = id.split('/').next().unwrap_or(id);
    (!id.is_empty()).then(|| id.to_string())
}

/// Turns one non-blank line into a raw resource: its bytes exactly as received, its type and
/// id from the line (the file's type and a content-derived synthetic id when it has none, so a
/// resumed import keys it the same way), its patient from `subject`/`patient`. A line that is
/// not JSON, not an object with a string `resourceType` and `id`, is flagged with why.
pub fn parse_line(bytes: &[u8], src: &LineSource<'_>) -> ParsedLine {
    let (rtype, id, meta, patient, status) = match serde_json::from_slice::<Head>(bytes) {
        Err(e) => (
            None,
            None,
            None,
            None,
            ParseStatus::InvalidJson(format!("not a JSON object: {e}")),
        ),
        Ok(h) => {
            let mut problems = Vec::new();
            let rtype = str_of(h.resource_type)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()));
            if rtype.is_none() {
                problems.push("missing resourceType");
            }
            let id = str_of(h.id).filter(|i| !i.trim().is_empty() && i.len() <= 256);
            if id.is_none() {
                problems.push("missing id: synthetic id assigned");
            }
            let patient = if rtype.as_deref() == Some("Patient") {
                id.clone()
            } else {
                patient_of(h.subject)
                    .or_else(|| patient_of(h.patient))
                    .or_else(|| patient_of(h.beneficiary))
            };
            let status = if problems.is_empty() {
                ParseStatus::Ok
            } else {
                ParseStatus::InvalidFhir(problems.join("; "))
            };
            (rtype, id, Some(meta_of(h.meta)), patient, status)
        }
    };
    let problem = status.detail().map(str::to_string);
    let meta = meta.unwrap_or_default();
    let meta_str = |v: &Option<Value>| v.as_ref().and_then(Value::as_str).map(str::to_string);
    ParsedLine {
        resource: RawResource {
            resource_type: rtype.unwrap_or_else(|| src.file_type.to_string()),
            logical_id: id.unwrap_or_else(|| aqueduct_sync::page::synthetic_id(bytes)),
            version_id: meta_str(&meta.version_id),
            last_updated: meta_str(&meta.last_updated),
            source_url: src.url.to_string(),
            patient_id: patient,
            parse_status: status,
            fetched_at: src.fetched_at,
            bytes: bytes.to_vec(),
        },
        problem,
    }
}

/// The (type, id) pairs a line of a `deleted` file names: a Bundle whose entries have
/// `request.method = DELETE` and `request.url = Type/id`. Err says why the line is unusable.
pub fn deleted_entries(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err("not a Bundle".into());
    }
    let entries = v
        .get("entry")
        .and_then(Value::as_array)
        .ok_or("a Bundle without entries")?;
    let mut out = Vec::new();
    for e in entries {
        let req = e.get("request");
        let method = req.and_then(|r| r.get("method")).and_then(Value::as_str);
        let url = req.and_then(|r| r.get("url")).and_then(Value::as_str);
        match (method, url) {
            (Some(m), Some(u)) if m.eq_ignore_ascii_case("DELETE") => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                let mut segs = path.rsplit('/');
                let (id, t) = (segs.next(), segs.next());
                match (t, id) {
                    (Some(t), Some(id))
                        if !t.is_empty()
                            && !id.is_empty()
                            && t.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                    {
                        out.push((t.to_string(), id.to_string()))
                    }
                    _ => return Err(format!("a DELETE of {u:?}, not Type/id")),
                }
            }
            _ => return Err("an entry that is not a DELETE".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> Vec<(u64, Vec<u8>, u64, bool)> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push::<()>(c, |l| {
                out.push((l.number, l.bytes.to_vec(), l.end_offset, l.terminated));
                Ok(())
            })
            .ok();
        }
        s.finish::<()>(|l| {
            out.push((l.number, l.bytes.to_vec(), l.end_offset, l.terminated));
            Ok(())
        })
        .ok();
        out
    }

    #[test]
    fn lines_bom_crlf_and_chunk_boundaries() {
        let data = b"\xEF\xBB\xBF{\"a\":1}\r\n\n{\"b\":2}\n{\"c\":3}";
        for cut in 0..data.len() {
            let got = split_all(&[&data[..cut], &data[cut..]]);
            assert_eq!(
                got,
                vec![
                    (1, b"{\"a\":1}".to_vec(), 12, true),
                    (2, b"".to_vec(), 13, true),
                    (3, b"{\"b\":2}".to_vec(), 21, true),
                    (4, b"{\"c\":3}".to_vec(), 28, false),
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn resume_continues_numbering_and_offsets() {
        let mut s = LineSplitter::resume(10, 500);
        let mut got = vec![];
        s.push::<()>(b"{}\n", |l| {
            got.push((l.number, l.end_offset));
            Ok(())
        })
        .ok();
        assert_eq!(got, vec![(11, 503)]);
    }

    #[test]
    fn parse_line_classifies() {
        let src = LineSource {
            url: "http://x/f.ndjson",
            file_type: "Observation",
            fetched_at: Utc::now(),
        };
        let ok = parse_line(
            br#"{"resourceType":"Observation","id":"o1","meta":{"versionId":"2"},"subject":{"reference":"Patient/p9"}}"#,
            &src,
        );
        assert_eq!(ok.problem, None);
        assert_eq!(ok.resource.logical_id, "o1");
        assert_eq!(ok.resource.version_id.as_deref(), Some("2"));
        assert_eq!(ok.resource.patient_id.as_deref(), Some("p9"));
        let bad = parse_line(b"{\"resourceType\": \"Observation\",, }", &src);
        assert!(matches!(
            bad.resource.parse_status,
            ParseStatus::InvalidJson(_)
        ));
        assert_eq!(bad.resource.resource_type, "Observation");
        let again = parse_line(b"{\"resourceType\": \"Observation\",, }", &src);
        assert_eq!(bad.resource.logical_id, again.resource.logical_id);
        let no_type = parse_line(br#"{"id":"x"}"#, &src);
        assert!(no_type.problem.is_some());
        let array = parse_line(b"[1,2]", &src);
        assert!(array.problem.is_some());
        let escaped = parse_line(
            br#"{"resourceType":"Observation","id":"a\u0062","meta":null,"subject":"x"}"#,
            &src,
        );
        assert_eq!(escaped.problem, None);
        assert_eq!(escaped.resource.logical_id, "ab");
        assert_eq!(escaped.resource.patient_id, None);
        let numeric = parse_line(br#"{"resourceType":"Observation","id":5}"#, &src);
        assert!(numeric.problem.is_some());
    }

    #[test]
    fn deleted_bundles() {
        let ok = br#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Observation/o1"}}]}"#;
        assert_eq!(
            deleted_entries(ok),
            Ok(vec![("Observation".into(), "o1".into())])
        );
        assert!(deleted_entries(br#"{"resourceType":"Patient"}"#).is_err());
        assert!(deleted_entries(b"nope").is_err());
    }
}
