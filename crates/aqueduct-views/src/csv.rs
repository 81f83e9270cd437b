//! CSV (RFC 4180): a header of the view's column names, then one line per row. A field is
//! quoted when it holds a comma, a quote, CR or LF (quotes doubled); a null is an empty
//! field; a `collection: true` cell is its JSON array; lines end with CRLF.

use std::io::{self, Write};

use crate::{Cell, Column, Row};

/// Writes one view's rows as CSV.
pub struct CsvWriter<W: Write> {
    out: W,
    width: usize,
    rows: u64,
}

impl<W: Write> CsvWriter<W> {
    /// Starts a table with the header line.
    pub fn new(mut out: W, columns: &[Column]) -> io::Result<Self> {
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        write_record(&mut out, names.iter().copied())?;
        Ok(CsvWriter {
            out,
            width: columns.len(),
            rows: 0,
        })
    }

    pub fn write_row(&mut self, row: &Row) -> io::Result<()> {
        if row.len() != self.width {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a row of {} cells for {} columns", row.len(), self.width),
            ));
        }
        let texts: Vec<String> = row.iter().map(Cell::to_text).collect();
        write_record(&mut self.out, texts.iter().map(String::as_str))?;
        self.rows += 1;
        Ok(())
    }

    /// The rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and gives the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_record<'s>(out: &mut impl Write, fields: impl Iterator<Item = &'s str>) -> io::Result<()> {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        if f.contains([',', '"', '\r', '\n']) {
            out.write_all(b"\"")?;
            out.write_all(f.replace('"', "\"\"").as_bytes())?;
            out.write_all(b"\"")?;
        } else {
            out.write_all(f.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::View;
    use serde_json::json;

    #[test]
    fn fields_that_need_it_are_quoted_and_nulls_are_empty() {
        let view = View::compile(&json!({
            "resource": "Patient",
            "select": [{"column": [
                {"name": "id", "path": "id"},
                {"name": "family", "path": "name.family", "collection": true},
                {"name": "text", "path": "text.div"},
                {"name": "active", "path": "active", "type": "boolean"}
            ]}]
        }))
        .unwrap();
        let p = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "O\"Neil, Jr"}],
                       "text": {"div": "a\nb"}});
        let mut w = CsvWriter::new(Vec::new(), view.columns()).unwrap();
        for row in view.rows(&p).unwrap() {
            w.write_row(&row).unwrap();
        }
        assert_eq!(w.rows(), 1);
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            "id,family,text,active\r\np1,\"[\"\"O\\\"\"Neil, Jr\"\"]\",\"a\nb\",\r\n"
        );
    }
}
