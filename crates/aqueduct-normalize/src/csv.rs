//! A minimal RFC 4180 CSV reader (quoted fields, doubled quotes, embedded separators and line
//! breaks), enough for the LOINC table and our own embedded tables.

use std::io::BufRead;

/// Reads one record; `Ok(None)` at end of input. `line` counts physical lines read.
pub(crate) fn read_record<R: BufRead>(
    r: &mut R,
    sep: u8,
    buf: &mut String,
    line: &mut u64,
) -> std::io::Result<Option<Vec<String>>> {
    buf.clear();
    if r.read_line(buf)? == 0 {
        return Ok(None);
    }
    *line += 1;
    // keep reading while inside an open quote
    while count_quotes_open(buf) {
        let n = r.read_line(buf)?;
        if n == 0 {
            break;
        }
        *line += 1;
    }
    let rec = buf.trim_end_matches(['\n', '\r']);
    Ok(Some(split(rec, sep)))
}

fn count_quotes_open(s: &str) -> bool {
    s.bytes().filter(|&b| b == b'"').count() % 2 == 1
}

pub(crate) fn split(rec: &str, sep: u8) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut chars = rec.chars().peekable();
    let sepc = sep as char;
    let mut field_start = true;
    while let Some(c) = chars.next() {
        if in_q {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    in_q = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && field_start {
            in_q = true;
            field_start = false;
        } else if c == sepc {
            out.push(std::mem::take(&mut cur));
            field_start = true;
        } else {
            cur.push(c);
            field_start = false;
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields() {
        assert_eq!(
            split(r#""a,b","c ""d""",e,"#, b','),
            vec!["a,b", "c \"d\"", "e", ""]
        );
    }

    #[test]
    fn multiline_record() {
        let data = "\"x\ny\",2\nz,3\n";
        let mut r = std::io::Cursor::new(data);
        let mut buf = String::new();
        let mut line = 0;
        let a = read_record(&mut r, b',', &mut buf, &mut line).unwrap_or_default();
        assert_eq!(a, Some(vec!["x\ny".to_string(), "2".to_string()]));
        let b = read_record(&mut r, b',', &mut buf, &mut line).unwrap_or_default();
        assert_eq!(b, Some(vec!["z".to_string(), "3".to_string()]));
        assert_eq!(line, 3);
    }
}
