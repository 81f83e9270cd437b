//! The HL7 v2 message model: a zero-copy parse of one message (fields are `&str` slices of the
//! input, still escaped; unescaping happens on access), path accessors, the encoder, character
//! set decoding (MSH-18) and splitting of files holding several messages.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::error::Hl7Error;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The delimiters a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    pub field: u8,
    pub component: u8,
    pub repetition: u8,
    pub escape: Option<u8>,
    pub subcomponent: Option<u8>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: Some(b'\\'),
            subcomponent: Some(b'&'),
        }
    }
}

impl Delimiters {
    /// Reads MSH-1 (`field`) and MSH-2 (`encoding`, 2 to 5 characters: component, repetition,
    /// escape, sub-component and the v2.7 truncation character, which is accepted and ignored).
    pub fn from_msh(field: u8, encoding: &[u8]) -> Result<Self, Hl7Error> {
        let ok = |b: u8| b.is_ascii_graphic() && !b.is_ascii_alphanumeric();
        if !ok(field) {
            return Err(Hl7Error::BadDelimiters(format!(
                "field separator {:?} is not a printable non-alphanumeric ASCII character",
                field as char
            )));
        }
        if encoding.len() < 2 || encoding.len() > 5 {
            return Err(Hl7Error::BadDelimiters(format!(
                "MSH-2 must hold 2 to 5 encoding characters, found {:?}",
                String::from_utf8_lossy(encoding)
            )));
        }
        for (i, &b) in encoding.iter().enumerate() {
            if !ok(b) || b == field || encoding[..i].contains(&b) {
                return Err(Hl7Error::BadDelimiters(format!(
                    "encoding character {:?} in MSH-2 is invalid or repeated",
                    b as char
                )));
            }
        }
        Ok(Delimiters {
            field,
            component: encoding[0],
            repetition: encoding[1],
            escape: encoding.get(2).copied(),
            subcomponent: encoding.get(3).copied(),
        })
    }

    /// MSH-2 as these delimiters write it.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(4);
        s.push(self.component as char);
        s.push(self.repetition as char);
        if let Some(e) = self.escape {
            s.push(e as char);
            if let Some(t) = self.subcomponent {
                s.push(t as char);
            }
        }
        s
    }
}

/// A parsed message. Fields borrow from the parsed text and keep their escape sequences;
/// [`Message::get`] unescapes on access. `parse(encode(m)) == m` always holds, and
/// `encode(parse(x)) == x` for canonical input (UTF-8, no BOM, every segment ended by CR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    delimiters: Delimiters,
    /// All fields of all segments; each segment's first entry is its name. For MSH, entry 1 is
    /// MSH-1 (the field separator) and entry 2 is MSH-2.
    fields: Vec<&'a str>,
    /// (start, len) of each segment in `fields`.
    segments: Vec<(u32, u32)>,
}

/// One segment of a message.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m, 'a> {
    delimiters: Delimiters,
    fields: &'m [&'a str],
}

/// A parsed path such as `PID-5.1`, `OBX[2]-5`, `PID-3(2).4.1` or `PID-3[2].1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path<'p> {
    pub segment: &'p str,
    /// 1-based occurrence of the segment.
    pub occurrence: usize,
    /// 1-based field number (MSH-1 is the field separator).
    pub field: usize,
    /// 1-based repetition; the first when not given.
    pub repetition: usize,
    pub component: Option<usize>,
    pub subcomponent: Option<usize>,
}

fn parse_index(s: &str, whole: &str) -> Result<usize, Hl7Error> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Hl7Error::BadPath(whole.to_string())),
    }
}

impl<'p> Path<'p> {
    pub fn parse(path: &'p str) -> Result<Self, Hl7Error> {
        let bad = || Hl7Error::BadPath(path.to_string());
        let (seg_part, rest) = path.split_once('-').ok_or_else(bad)?;
        let (segment, occurrence) = match seg_part.split_once('[') {
            Some((name, occ)) => (
                name,
                parse_index(occ.strip_suffix(']').ok_or_else(bad)?, path)?,
            ),
            None => (seg_part, 1),
        };
        if segment.len() != 3 || !segment.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        let mut parts = rest.split('.');
        let field_part = parts.next().ok_or_else(bad)?;
        let (field, repetition) = match field_part.find(['(', '[']) {
            Some(i) => {
                let inner = &field_part[i + 1..];
                let inner = inner
                    .strip_suffix(')')
                    .or_else(|| inner.strip_suffix(']'))
                    .ok_or_else(bad)?;
                (
                    parse_index(&field_part[..i], path)?,
                    parse_index(inner, path)?,
                )
            }
            None => (parse_index(field_part, path)?, 1),
        };
        let component = parts.next().map(|c| parse_index(c, path)).transpose()?;
        let subcomponent = parts.next().map(|c| parse_index(c, path)).transpose()?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Path {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

fn is_segment_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 3
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Splits `s` on `sep` and returns the `n`-th (1-based) piece.
fn nth_piece(s: &str, sep: u8, n: usize) -> Option<&str> {
    let mut start = 0;
    let bytes = s.as_bytes();
    let mut idx = 1;
    for pos in memchr::memchr_iter(sep, bytes) {
        if idx == n {
            return Some(&s[start..pos]);
        }
        idx += 1;
        start = pos + 1;
    }
    if idx == n { Some(&s[start..]) } else { None }
}

impl<'a> Message<'a> {
    /// Parses one message. A leading BOM and blank lines are skipped; segments may end with
    /// CR, LF or CRLF. Fails (never panics) when there is no MSH, the delimiters are bad, a
    /// segment name is invalid or a second MSH follows.
    pub fn parse(text: &'a str) -> Result<Self, Hl7Error> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let text = text.trim_start_matches(['\r', '\n']);
        if text.trim().is_empty() {
            return Err(Hl7Error::Empty);
        }
        let bytes = text.as_bytes();
        if !bytes.starts_with(b"MSH") || bytes.len() < 4 {
            let end = text
                .char_indices()
                .nth(20)
                .map(|(i, _)| i)
                .unwrap_or(text.len());
            return Err(Hl7Error::MissingMsh {
                found: text[..end].to_string(),
            });
        }
        let fsep = bytes[3];
        if fsep == b'\r' || fsep == b'\n' {
            return Err(Hl7Error::BadDelimiters("MSH ends before MSH-1".into()));
        }
        let first_end = memchr::memchr2(b'\r', b'\n', bytes).unwrap_or(bytes.len());
        let enc_end = memchr::memchr(fsep, &bytes[4..first_end])
            .map(|i| i + 4)
            .unwrap_or(first_end);
        let delimiters = Delimiters::from_msh(fsep, &bytes[4..enc_end])?;

        let mut fields: Vec<&'a str> = Vec::with_capacity(bytes.len() / 8);
        let mut segments: Vec<(u32, u32)> = Vec::with_capacity(16);
        fields.push(&text[..3]);
        fields.push(&text[3..4]);
        fields.push(&text[4..enc_end]);
        // One pass over field separators and segment terminators.
        let close = |fields: &mut Vec<&'a str>,
                     segments: &mut Vec<(u32, u32)>,
                     start: usize|
         -> Result<(), Hl7Error> {
            let index = segments.len() + 1;
            if index > 1 {
                let name = fields[start];
                if fields.len() == start + 1
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_whitespace() || b == 0 || b == 0x1A)
                {
                    // a line of blanks (or NUL / EOF padding) between or after segments
                    fields.truncate(start);
                    return Ok(());
                }
                if !is_segment_name(name) {
                    return Err(Hl7Error::BadSegmentName {
                        index,
                        name: name.chars().take(20).collect(),
                    });
                }
                if name == "MSH" {
                    return Err(Hl7Error::SeveralMessages { index });
                }
            }
            segments.push((start as u32, (fields.len() - start) as u32));
            Ok(())
        };
        let mut seg_start = 0usize;
        let mut open;
        let mut cur;
        if bytes.get(enc_end) == Some(&fsep) {
            open = true;
            cur = enc_end + 1;
        } else {
            close(&mut fields, &mut segments, 0)?;
            open = false;
            cur = enc_end;
        }
        let start_scan = cur;
        for i in memchr::memchr3_iter(fsep, b'\r', b'\n', &bytes[start_scan..]) {
            let i = i + start_scan;
            if bytes[i] == fsep {
                if !open {
                    open = true;
                    seg_start = fields.len();
                }
                fields.push(&text[cur..i]);
            } else if open {
                fields.push(&text[cur..i]);
                close(&mut fields, &mut segments, seg_start)?;
                open = false;
            } else if cur < i {
                seg_start = fields.len();
                fields.push(&text[cur..i]);
                close(&mut fields, &mut segments, seg_start)?;
            }
            cur = i + 1;
        }
        if open {
            fields.push(&text[cur..]);
            close(&mut fields, &mut segments, seg_start)?;
        } else if cur < bytes.len() {
            seg_start = fields.len();
            fields.push(&text[cur..]);
            close(&mut fields, &mut segments, seg_start)?;
        }
        Ok(Message {
            delimiters,
            fields,
            segments,
        })
    }

    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Every segment in order.
    pub fn all_segments(&self) -> impl Iterator<Item = Segment<'_, 'a>> + '_ {
        self.segments.iter().map(move |&(s, l)| Segment {
            delimiters: self.delimiters,
            fields: &self.fields[s as usize..(s + l) as usize],
        })
    }

    /// The segments named `name`, in order.
    pub fn segments<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Segment<'s, 'a>> + 's {
        self.all_segments().filter(move |s| s.name() == name)
    }

    /// The `occurrence`-th (1-based) segment named `name`.
    pub fn segment(&self, name: &str, occurrence: usize) -> Option<Segment<'_, 'a>> {
        let n = occurrence.checked_sub(1)?;
        self.all_segments().filter(|s| s.name() == name).nth(n)
    }

    /// The raw (still escaped) value at `path`, or None when absent or the path is invalid.
    pub fn get_raw(&self, path: &str) -> Option<&'a str> {
        let p = Path::parse(path).ok()?;
        self.segment(p.segment, p.occurrence)?.locate(&p)
    }

    /// The unescaped value at `path` (`PID-5.1`, `OBX[2]-5`, `PID-3(2).1`), or None when absent,
    /// empty or the path is invalid. Without a repetition, the first one is meant.
    pub fn get(&self, path: &str) -> Option<Cow<'a, str>> {
        let raw = self.get_raw(path)?;
        if raw.is_empty() {
            None
        } else {
            Some(unescape(raw, &self.delimiters))
        }
    }

    /// Like [`Message::get`] but reports an invalid path as an error.
    pub fn try_get(&self, path: &str) -> Result<Option<Cow<'a, str>>, Hl7Error> {
        let p = Path::parse(path)?;
        Ok(self
            .segment(p.segment, p.occurrence)
            .and_then(|s| s.locate(&p))
            .filter(|r| !r.is_empty())
            .map(|r| unescape(r, &self.delimiters)))
    }

    /// Writes the message back: segments joined by CR, each ended by CR.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.fields.iter().map(|f| f.len() + 1).sum());
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut String) {
        let fsep = self.delimiters.field as char;
        for seg in self.all_segments() {
            let f = seg.fields;
            if f[0] == "MSH" && f.len() >= 3 {
                out.push_str("MSH");
                out.push_str(f[1]);
                out.push_str(f[2]);
                for x in &f[3..] {
                    out.push(fsep);
                    out.push_str(x);
                }
            } else {
                out.push_str(f[0]);
                for x in &f[1..] {
                    out.push(fsep);
                    out.push_str(x);
                }
            }
            out.push('\r');
        }
    }

    /// MSH-10.
    pub fn control_id(&self) -> Option<Cow<'a, str>> {
        self.get("MSH-10")
    }

    /// MSH-9 as `TYPE^EVENT` (`ADT^A01`), without the structure component.
    pub fn message_type(&self) -> Option<String> {
        let t = self.get("MSH-9.1")?;
        Some(match self.get("MSH-9.2") {
            Some(e) => format!("{t}^{e}"),
            None => t.into_owned(),
        })
    }
}

impl<'m, 'a> Segment<'m, 'a> {
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    pub fn name(&self) -> &'a str {
        self.fields[0]
    }

    /// The number of fields after the name (for MSH, counting MSH-1).
    pub fn field_count(&self) -> usize {
        self.fields.len() - 1
    }

    /// Field `n` (1-based) raw and escaped, with all its repetitions.
    pub fn raw_field(&self, n: usize) -> Option<&'a str> {
        self.fields.get(n).copied()
    }

    fn locate(&self, p: &Path<'_>) -> Option<&'a str> {
        let raw = self.raw_field(p.field)?;
        if self.name() == "MSH" && p.field <= 2 {
            return Some(raw);
        }
        let d = &self.delimiters;
        let mut v = nth_piece(raw, d.repetition, p.repetition)?;
        if let Some(c) = p.component {
            v = nth_piece(v, d.component, c)?;
            if let Some(s) = p.subcomponent {
                v = match d.subcomponent {
                    Some(sub) => nth_piece(v, sub, s)?,
                    None if s == 1 => v,
                    None => return None,
                };
            }
        }
        Some(v)
    }

    /// The unescaped value at a path relative to this segment: `"5"`, `"5.1"`, `"3(2).1"`.
    pub fn get(&self, rel: &str) -> Option<Cow<'a, str>> {
        let full = format!("{}-{rel}", self.name());
        let p = Path::parse(&full).ok()?;
        let raw = self.locate(&p)?;
        if raw.is_empty() {
            None
        } else {
            Some(unescape(raw, &self.delimiters))
        }
    }

    /// Field `n`'s repetitions, raw.
    pub fn repetitions(&self, n: usize) -> Vec<&'a str> {
        match self.raw_field(n) {
            Some(r) if !r.is_empty() => r.split(self.delimiters.repetition as char).collect(),
            _ => Vec::new(),
        }
    }

    /// Component `c` (1-based) of a raw repetition, unescaped; None when empty.
    pub fn component_of(&self, raw: &'a str, c: usize) -> Option<Cow<'a, str>> {
        let v = nth_piece(raw, self.delimiters.component, c)?;
        if v.is_empty() {
            None
        } else {
            Some(unescape(v, &self.delimiters))
        }
    }

    /// Sub-component `s` of component `c` of a raw repetition, unescaped; None when empty.
    pub fn subcomponent_of(&self, raw: &'a str, c: usize, s: usize) -> Option<Cow<'a, str>> {
        let v = nth_piece(raw, self.delimiters.component, c)?;
        let v = match self.delimiters.subcomponent {
            Some(sub) => nth_piece(v, sub, s)?,
            None if s == 1 => v,
            None => return None,
        };
        if v.is_empty() {
            None
        } else {
            Some(unescape(v, &self.delimiters))
        }
    }
}

/// Replaces escape sequences: `\F\ \S\ \T\ \R\ \E\`, `\Xhh..\` (bytes, read as UTF-8 or else
/// Latin-1), `\H\`/`\N\` (highlighting, dropped) and `\.br\` (a line break). Unknown or
/// unterminated sequences are kept as they are.
pub fn unescape<'a>(raw: &'a str, d: &Delimiters) -> Cow<'a, str> {
    let Some(esc) = d.escape else {
        return Cow::Borrowed(raw);
    };
    if memchr::memchr(esc, raw.as_bytes()).is_none() {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = memchr::memchr(esc, rest.as_bytes()) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = memchr::memchr(esc, after.as_bytes()) else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let seq = &after[..j];
        match seq {
            "F" => out.push(d.field as char),
            "S" => out.push(d.component as char),
            "T" => out.push(d.subcomponent.unwrap_or(b'&') as char),
            "R" => out.push(d.repetition as char),
            "E" => out.push(esc as char),
            "H" | "N" => {}
            ".br" => out.push('\n'),
            _ if seq.len() >= 3
                && seq.len() % 2 == 1
                && seq.starts_with('X')
                && seq[1..].bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                let bytes: Vec<u8> = (1..seq.len())
                    .step_by(2)
                    .filter_map(|k| u8::from_str_radix(&seq[k..k + 2], 16).ok())
                    .collect();
                match std::str::from_utf8(&bytes) {
                    Ok(s) => out.push_str(s),
                    Err(_) => out.extend(bytes.iter().map(|&b| b as char)),
                }
            }
            _ => {
                out.push(esc as char);
                out.push_str(seq);
                out.push(esc as char);
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Escapes text for a field: delimiters become `\F\ \S\ \T\ \R\ \E\`, CR and LF `\X0D\` `\X0A\`.
pub fn escape<'a>(text: &'a str, d: &Delimiters) -> Cow<'a, str> {
    let special = |c: char| {
        c == d.field as char
            || c == d.component as char
            || c == d.repetition as char
            || d.escape.is_some_and(|e| c == e as char)
            || d.subcomponent.is_some_and(|s| c == s as char)
            || c == '\r'
            || c == '\n'
    };
    if !text.contains(special) {
        return Cow::Borrowed(text);
    }
    let e = d.escape.unwrap_or(b'\\') as char;
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let code = if c == d.field as char {
            "F"
        } else if c == d.component as char {
            "S"
        } else if d.subcomponent.is_some_and(|s| c == s as char) {
            "T"
        } else if c == d.repetition as char {
            "R"
        } else if d.escape.is_some_and(|x| c == x as char) {
            "E"
        } else if c == '\r' {
            "X0D"
        } else if c == '\n' {
            "X0A"
        } else {
            out.push(c);
            continue;
        };
        let _ = write!(out, "{e}{code}{e}");
    }
    Cow::Owned(out)
}

fn charset_field(bytes: &[u8]) -> Option<&[u8]> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let bytes = &bytes[start..];
    if !bytes.starts_with(b"MSH") || bytes.len() < 8 {
        return None;
    }
    let fsep = bytes[3];
    let rep = bytes[5];
    let end = memchr::memchr2(b'\r', b'\n', bytes).unwrap_or(bytes.len());
    let line = &bytes[..end];
    // MSH-18 starts after the 17th field separator (MSH-1 is the first one)
    let mut seps = memchr::memchr_iter(fsep, line);
    let from = seps.nth(16)? + 1;
    let to = seps.next().unwrap_or(line.len());
    let field = &line[from..to];
    let first = match memchr::memchr(rep, field) {
        Some(i) => &field[..i],
        None => field,
    };
    let first = first.trim_ascii();
    if first.is_empty() { None } else { Some(first) }
}

/// The character set a message declares in MSH-18 (first repetition), read from raw bytes.
pub fn declared_charset(bytes: &[u8]) -> Option<String> {
    charset_field(bytes).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Turns the bytes of a message into text according to MSH-18: ASCII and `UNICODE UTF-8` (or
/// nothing declared) are read as UTF-8, falling back to Latin-1 when the bytes are not valid
/// UTF-8; `8859/1` is decoded as Latin-1. A leading UTF-8 BOM is skipped. Other character sets
/// are refused.
pub fn decode_text(bytes: &[u8]) -> Result<Cow<'_, str>, Hl7Error> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let latin1 = |b: &[u8]| -> Cow<'_, str> { Cow::Owned(b.iter().map(|&c| c as char).collect()) };
    match charset_field(bytes) {
        None | Some(b"ASCII") | Some(b"UNICODE UTF-8") | Some(b"UTF-8") | Some(b"UNICODE") => {
            match std::str::from_utf8(bytes) {
                Ok(s) => Ok(Cow::Borrowed(s)),
                Err(_) => Ok(latin1(bytes)),
            }
        }
        Some(b"8859/1") | Some(b"ISO-8859-1") | Some(b"ISO IR100") => Ok(latin1(bytes)),
        Some(other) => Err(Hl7Error::UnsupportedCharset(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

/// Splits bytes holding several messages (a file, a batch) into one slice per message, cut at
/// each segment that starts with `MSH`. Batch envelope segments (FHS, BHS, BTS, FTS) and blank
/// lines between messages are dropped; a BOM at the start is skipped. Text before the first MSH
/// that is not a batch segment is returned as its own slice (it will fail to parse).
pub fn split_messages(bytes: &[u8]) -> Vec<&[u8]> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None; // start, end (exclusive, including terminator)
    let mut pos = 0;
    while pos < bytes.len() {
        let end = memchr::memchr2(b'\r', b'\n', &bytes[pos..])
            .map(|i| i + pos)
            .unwrap_or(bytes.len());
        let mut next = end;
        if next < bytes.len() {
            next += 1;
            if bytes[end] == b'\r' && bytes.get(next) == Some(&b'\n') {
                next += 1;
            }
        }
        let line = &bytes[pos..end];
        let line_trimmed = line.strip_prefix(BOM).unwrap_or(line);
        if line_trimmed.is_empty() || line.iter().all(|b| b.is_ascii_whitespace()) {
            // blank line: keep it inside a message only as trailing noise (dropped)
        } else if line_trimmed.starts_with(b"MSH") {
            if let Some((s, e)) = current.take() {
                out.push(&bytes[s..e]);
            }
            let start = end - line_trimmed.len();
            current = Some((start, next));
        } else if [&b"FHS"[..], b"BHS", b"BTS", b"FTS"]
            .iter()
            .any(|p| line_trimmed.starts_with(p))
        {
            if let Some((s, e)) = current.take() {
                out.push(&bytes[s..e]);
            }
        } else {
            match current.as_mut() {
                Some(c) => c.1 = next,
                None => current = Some((pos, next)),
            }
        }
        pos = next.max(pos + 1);
    }
    if let Some((s, e)) = current {
        out.push(&bytes[s..e]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &str = "MSH|^~\\&|EPIC|HOSP|AQ|AQ|20240102030405+0100||ADT^A01^ADT_A01|MSG001|P|2.5.1\rEVN|A01|20240102030405\rPID|1||12345^^^HOSP^MR~999-88-7777^^^SSA^SS||Doe^John^Q||19800101|M|||1 Main St^^Springfield^IL^62701||555-1234\rPV1|1|I|4W^401^A||||1234^Smith^Jane|||||||||||V100\rZPI|custom|data||\r";

    #[test]
    fn parses_paths() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(m.get("MSH-1").unwrap(), "|");
        assert_eq!(m.get("MSH-2").unwrap(), "^~\\&");
        assert_eq!(m.get("MSH-3").unwrap(), "EPIC");
        assert_eq!(m.get("MSH-9.2").unwrap(), "A01");
        assert_eq!(m.get("PID-5.1").unwrap(), "Doe");
        assert_eq!(m.get("PID-5.2").unwrap(), "John");
        assert_eq!(m.get("PID-3(2).1").unwrap(), "999-88-7777");
        assert_eq!(m.get("PID-3[2].5").unwrap(), "SS");
        assert_eq!(m.get("PID-3.1").unwrap(), "12345");
        assert_eq!(m.get("PID-2"), None);
        assert_eq!(m.get("PID-99"), None);
        assert_eq!(m.get("ZPI-2").unwrap(), "data");
        assert_eq!(m.segment("ZPI", 1).unwrap().field_count(), 4);
        assert_eq!(m.message_type().unwrap(), "ADT^A01");
        assert_eq!(m.encode(), ADT);
        assert!(m.try_get("nonsense").is_err());
    }

    #[test]
    fn escapes() {
        let d = Delimiters::default();
        let raw = "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\H\\bold\\N\\\\X41C3A9\\\\.br\\\\Zxx\\";
        assert_eq!(unescape(raw, &d), "a|b^c&d~e\\fboldAé\n\\Zxx\\");
        let t = "x|y^z&w~v\\u\r";
        assert_eq!(unescape(&escape(t, &d), &d), t);
        assert_eq!(unescape("unterminated\\F", &d), "unterminated\\F");
        assert_eq!(unescape("\\X\\", &d), "\\X\\");
    }

    #[test]
    fn terminators_bom_and_errors() {
        let lf = ADT.replace('\r', "\n");
        let crlf = ADT.replace('\r', "\r\n");
        let bom = format!("\u{feff}{ADT}");
        let a = Message::parse(ADT).unwrap();
        assert_eq!(Message::parse(&lf).unwrap(), a);
        assert_eq!(Message::parse(&crlf).unwrap(), a);
        assert_eq!(Message::parse(&bom).unwrap(), a);
        assert!(matches!(
            Message::parse("PID|1\r"),
            Err(Hl7Error::MissingMsh { .. })
        ));
        assert!(matches!(Message::parse(""), Err(Hl7Error::Empty)));
        assert!(matches!(
            Message::parse("MSH|^^\\&|x\r"),
            Err(Hl7Error::BadDelimiters(_))
        ));
        assert!(matches!(
            Message::parse("MSHA^~\\&|x\r"),
            Err(Hl7Error::BadDelimiters(_))
        ));
        assert!(matches!(
            Message::parse("MSH|^~\\&|x\rpid|1\r"),
            Err(Hl7Error::BadSegmentName { .. })
        ));
        let padded = format!("{ADT}  \r\t\n\u{1a}");
        assert_eq!(Message::parse(&padded).unwrap(), a);
        assert!(matches!(
            Message::parse(&format!("{ADT}{ADT}")),
            Err(Hl7Error::SeveralMessages { .. })
        ));
    }

    #[test]
    fn other_delimiters() {
        let m = Message::parse("MSH#$*!@#A#B\rPID#1##x$y*z*w@q$k\r").unwrap();
        assert_eq!(m.get("MSH-3").unwrap(), "A");
        assert_eq!(m.get("PID-3.2").unwrap(), "y");
        assert_eq!(m.get("PID-3(2)").unwrap(), "z");
        assert_eq!(m.get("PID-3(3).1.2").unwrap(), "q");
    }

    #[test]
    fn charsets() {
        let mut latin =
            b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5||||||8859/1\rPID|1||1||M".to_vec();
        latin.push(0xFC); // u-umlaut
        latin.extend_from_slice(b"ller^J\r");
        let text = decode_text(&latin).unwrap();
        let m = Message::parse(&text).unwrap();
        assert_eq!(m.get("PID-5.1").unwrap(), "Müller");
        let utf =
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5||||||UNICODE UTF-8\rPID|1||1||Müller\r";
        let mut with_bom = BOM.to_vec();
        with_bom.extend_from_slice(utf.as_bytes());
        let text = decode_text(&with_bom).unwrap();
        assert!(matches!(text, Cow::Borrowed(_)));
        assert_eq!(
            Message::parse(&text).unwrap().get("PID-5").unwrap(),
            "Müller"
        );
        let odd = "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5||||||UNICODE UTF-16\r";
        assert!(matches!(
            decode_text(odd.as_bytes()),
            Err(Hl7Error::UnsupportedCharset(_))
        ));
    }

    #[test]
    fn splits_files() {
        let file = format!(
            "\u{feff}FHS|^~\\&\r\nBHS|^~\\&\r\n{}\r\n{}BTS|2\r\nFTS|1\r\n",
            ADT.replace('\r', "\r\n").trim_end(),
            ADT
        );
        let parts = split_messages(file.as_bytes());
        assert_eq!(parts.len(), 2);
        for p in parts {
            let m = Message::parse(std::str::from_utf8(p).unwrap()).unwrap();
            assert_eq!(m, Message::parse(ADT).unwrap());
        }
        assert_eq!(split_messages(b"").len(), 0);
        assert_eq!(split_messages(b"junk\rMSH|^~\\&|\r").len(), 2);
    }
}
