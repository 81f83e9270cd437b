//! Building messages by path: `set("PID-5.1", "Doe")` escapes the value and creates the
//! segment, field, repetition and component as needed.

use crate::error::Hl7Error;
use crate::message::{Delimiters, Path, escape};

/// A message under construction, with the standard delimiters (`|^~\&`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBuilder {
    d: Delimiters,
    /// Segment name and its fields (escaped); for MSH, fields start at MSH-3.
    segments: Vec<(String, Vec<String>)>,
}

impl MessageBuilder {
    /// A message with an MSH holding the type (`ADT^A01`), the control id, processing id `P`,
    /// version 2.5.1 and the current time (UTC) in MSH-7.
    pub fn new(message_type: &str, control_id: &str) -> Self {
        let mut b = MessageBuilder {
            d: Delimiters::default(),
            segments: vec![("MSH".into(), Vec::new())],
        };
        let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000").to_string();
        let raw = |b: &mut Self, f: usize, v: &str| b.set_raw(0, f, v.to_string());
        raw(&mut b, 7, &now);
        let mut parts = message_type.split('^');
        let t = parts.next().unwrap_or_default();
        let _ = b.set_at(0, 9, 1, Some(1), None, t);
        for (i, p) in parts.enumerate() {
            let _ = b.set_at(0, 9, 1, Some(i + 2), None, p);
        }
        let _ = b.set_at(0, 10, 1, None, None, control_id);
        raw(&mut b, 11, "P");
        raw(&mut b, 12, "2.5.1");
        b
    }

    /// Appends a segment (e.g. a second OBX) and returns its occurrence number.
    pub fn add_segment(&mut self, name: &str) -> usize {
        self.segments.push((name.to_string(), Vec::new()));
        self.segments.iter().filter(|(n, _)| n == name).count()
    }

    fn set_raw(&mut self, seg: usize, field: usize, raw: String) {
        let is_msh = self.segments[seg].0 == "MSH";
        let idx = if is_msh { field - 3 } else { field - 1 };
        let fields = &mut self.segments[seg].1;
        if fields.len() <= idx {
            fields.resize(idx + 1, String::new());
        }
        fields[idx] = raw;
    }

    fn set_at(
        &mut self,
        seg: usize,
        field: usize,
        rep: usize,
        comp: Option<usize>,
        sub: Option<usize>,
        value: &str,
    ) -> Result<(), Hl7Error> {
        let is_msh = self.segments[seg].0 == "MSH";
        if is_msh && field <= 2 {
            return Err(Hl7Error::BadPath(format!(
                "MSH-{field} holds the delimiters and cannot be set"
            )));
        }
        let d = self.d;
        let idx = if is_msh { field - 3 } else { field - 1 };
        let current = self.segments[seg].1.get(idx).cloned().unwrap_or_default();
        let esc = escape(value, &d).into_owned();
        let replace = |s: &str, sep: u8, n: usize, with: &dyn Fn(&str) -> String| -> String {
            let sep = sep as char;
            let mut parts: Vec<String> = if s.is_empty() {
                Vec::new()
            } else {
                s.split(sep).map(str::to_string).collect()
            };
            if parts.len() < n {
                parts.resize(n, String::new());
            }
            parts[n - 1] = with(&parts[n - 1]);
            parts.join(&sep.to_string())
        };
        let sub_sep = d.subcomponent.unwrap_or(b'&');
        let new = replace(&current, d.repetition, rep, &|r| match comp {
            None => esc.clone(),
            Some(c) => replace(r, d.component, c, &|cv| match sub {
                None => esc.clone(),
                Some(s) => replace(cv, sub_sep, s, &|_| esc.clone()),
            }),
        });
        self.set_raw(seg, field, new);
        Ok(())
    }

    /// Sets the value at `path` (escaped). The segment is created when the path names the
    /// next occurrence (`OBX[3]` when there are two).
    pub fn set(&mut self, path: &str, value: &str) -> Result<&mut Self, Hl7Error> {
        let p = Path::parse(path)?;
        let existing: Vec<usize> = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| n == p.segment)
            .map(|(i, _)| i)
            .collect();
        let seg = match existing.get(p.occurrence - 1) {
            Some(&i) => i,
            None if p.occurrence == existing.len() + 1 && p.segment != "MSH" => {
                self.segments.push((p.segment.to_string(), Vec::new()));
                self.segments.len() - 1
            }
            None => return Err(Hl7Error::BadPath(path.to_string())),
        };
        self.set_at(
            seg,
            p.field,
            p.repetition,
            p.component,
            p.subcomponent,
            value,
        )?;
        Ok(self)
    }

    /// The message text, each segment ended by CR.
    pub fn build(&self) -> String {
        let mut out = String::new();
        for (name, fields) in &self.segments {
            out.push_str(name);
            if name == "MSH" {
                out.push('|');
                out.push_str(&self.d.encoding_characters());
            }
            for f in fields {
                out.push('|');
                out.push_str(f);
            }
            out.push('\r');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn builds_by_path() {
        let mut b = MessageBuilder::new("ADT^A01^ADT_A01", "C9");
        b.set("MSH-3", "APP")
            .unwrap()
            .set("MSH-4", "FAC")
            .unwrap()
            .set("PID-3.1", "123")
            .unwrap()
            .set("PID-3.4.1", "HOSP")
            .unwrap()
            .set("PID-3(2).1", "999")
            .unwrap()
            .set("PID-5.1", "O|Brien^x")
            .unwrap()
            .set("OBX-5", "a")
            .unwrap()
            .set("OBX[2]-5", "b")
            .unwrap();
        assert!(b.set("OBX[4]-5", "x").is_err());
        assert!(b.set("MSH-2", "x").is_err());
        let text = b.build();
        let m = Message::parse(&text).unwrap();
        assert_eq!(m.message_type().unwrap(), "ADT^A01");
        assert_eq!(m.get("MSH-9.3").unwrap(), "ADT_A01");
        assert_eq!(m.get("MSH-10").unwrap(), "C9");
        assert_eq!(m.get("MSH-3").unwrap(), "APP");
        assert_eq!(m.get("PID-3.1").unwrap(), "123");
        assert_eq!(m.get("PID-3.4.1").unwrap(), "HOSP");
        assert_eq!(m.get("PID-3(2).1").unwrap(), "999");
        assert_eq!(m.get("PID-5.1").unwrap(), "O|Brien^x");
        assert_eq!(m.get("OBX[2]-5").unwrap(), "b");
        assert_eq!(m.encode(), text);
    }
}
