//! Where each key of the file was written: problems found after parsing (a name, an unknown
//! profile, an unset secret variable) are reported with the same line an error from the parser
//! itself would carry.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};

/// The 1-based line of every key path of a config file (array items by index).
#[derive(Debug, Clone, Default)]
pub struct KeyLines {
    lines: BTreeMap<Vec<String>, usize>,
}

impl KeyLines {
    /// Indexes the keys of `text`; text that does not parse yields an empty index (the parser
    /// reports that error itself).
    pub fn index(text: &str) -> KeyLines {
        let mut out = KeyLines::default();
        if let Ok(root) = DeTable::parse(text) {
            let starts = line_starts(text);
            out.walk_table(root.get_ref(), &mut Vec::new(), &starts);
        }
        out
    }

    fn walk_table(&mut self, t: &DeTable<'_>, path: &mut Vec<String>, starts: &[usize]) {
        for (k, v) in t {
            path.push(k.get_ref().to_string());
            self.lines
                .entry(path.clone())
                .or_insert_with(|| line_at(starts, k.span().start));
            self.walk_value(v.get_ref(), path, starts);
            path.pop();
        }
    }

    fn walk_value(&mut self, v: &DeValue<'_>, path: &mut Vec<String>, starts: &[usize]) {
        match v {
            DeValue::Table(t) => self.walk_table(t, path, starts),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    self.lines
                        .entry(path.clone())
                        .or_insert_with(|| line_at(starts, item.span().start));
                    self.walk_value(item.get_ref(), path, starts);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// The line of `path`, else of its longest prefix written in the file (a key inside an
    /// inline table or a missing key is reported where its table is).
    pub fn line(&self, path: &[&str]) -> Option<usize> {
        (1..=path.len()).rev().find_map(|n| {
            let key: Vec<String> = path[..n].iter().map(|s| s.to_string()).collect();
            self.lines.get(&key).copied()
        })
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

fn line_at(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|&s| s <= offset).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_keys_tables_and_inline_tables() {
        let text = "a = 1\n[t]\nb = { c = 2,\n  d = 3 }\n[[arr]]\nx = 1\n[[arr]]\nx = 2\n";
        let k = KeyLines::index(text);
        assert_eq!(k.line(&["a"]), Some(1));
        assert_eq!(k.line(&["t"]), Some(2));
        assert_eq!(k.line(&["t", "b", "c"]), Some(3));
        assert_eq!(k.line(&["t", "b", "d"]), Some(4));
        assert_eq!(k.line(&["t", "b", "missing"]), Some(3));
        assert_eq!(k.line(&["arr", "1", "x"]), Some(8));
        assert_eq!(k.line(&["nope"]), None);
        assert_eq!(KeyLines::index("a = ").line(&["a"]), None);
    }
}
