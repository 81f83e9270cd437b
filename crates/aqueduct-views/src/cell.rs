//! The typed values of a view's rows, and how each column is stored in a table.

use serde_json::Value;

use crate::ViewError;
use crate::fhirpath::Item;

/// One cell of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Dec(f64),
    Str(String),
    /// The values of a `collection: true` column (never nested).
    List(Vec<Cell>),
}

/// How a column is stored, from its FHIR `type` (the schema of every written table follows
/// from the ViewDefinition alone, never from the data):
///
/// | FHIR type | kind | Parquet | CSV |
/// |---|---|---|---|
/// | `boolean` | `Boolean` | BOOLEAN | `true` / `false` |
/// | `integer`, `positiveInt`, `unsignedInt`, `integer64` | `Integer` | INT64 | digits |
/// | `decimal` | `Decimal` | DOUBLE | shortest round-trip text |
/// | anything else, or no type (dates and times stay ISO 8601 text as FHIR writes them) | `String` | UTF8 | text |
///
/// A `collection: true` column is a Parquet LIST of that kind, and a JSON array in CSV. A
/// null cell is an empty CSV field and a Parquet null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Boolean,
    Integer,
    Decimal,
    String,
}

impl ColumnKind {
    pub fn of(fhir_type: Option<&str>) -> ColumnKind {
        match fhir_type {
            Some("boolean") => ColumnKind::Boolean,
            Some("integer" | "positiveInt" | "unsignedInt" | "integer64") => ColumnKind::Integer,
            Some("decimal") => ColumnKind::Decimal,
            _ => ColumnKind::String,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ColumnKind::Boolean => "a boolean",
            ColumnKind::Integer => "an integer",
            ColumnKind::Decimal => "a decimal",
            ColumnKind::String => "a string",
        }
    }
}

impl Cell {
    /// The cell a FHIRPath value gives in a column of the declared kind (`None`: no type
    /// declared, the value as it is). A value that cannot be read as the declared kind
    /// (`"12"` in an integer column) is an error, never a silent null.
    pub(crate) fn from_item(
        item: &Item<'_>,
        kind: Option<ColumnKind>,
        column: &str,
    ) -> Result<Cell, ViewError> {
        let natural = match item {
            Item::Bool(b) | Item::Node(Value::Bool(b), _) => Cell::Bool(*b),
            Item::Int(i) => Cell::Int(*i),
            Item::Dec(d) => Cell::Dec(*d),
            Item::Str(s, _) => Cell::Str(s.clone()),
            Item::Node(Value::Number(n), _) => match n.as_i64() {
                Some(i) => Cell::Int(i),
                None => Cell::Dec(n.as_f64().unwrap_or(f64::NAN)),
            },
            Item::Node(Value::String(s), _) => Cell::Str(s.clone()),
            Item::Node(other, _) => Cell::Str(other.to_string()),
        };
        let Some(kind) = kind else {
            return Ok(natural);
        };
        let mismatch = |found: &Cell| ViewError::Type {
            column: column.to_string(),
            expected: kind.label(),
            found: found.to_text(),
        };
        Ok(match (kind, natural) {
            (ColumnKind::Boolean, c @ Cell::Bool(_)) => c,
            (ColumnKind::Integer, c @ Cell::Int(_)) => c,
            (ColumnKind::Integer, Cell::Dec(d))
                if d.fract() == 0.0 && d.abs() < 9.007_199_254_740_992e15 =>
            {
                Cell::Int(d as i64)
            }
            (ColumnKind::Integer, Cell::Str(s)) if s.parse::<i64>().is_ok() => {
                Cell::Int(s.parse().unwrap_or_default())
            }
            (ColumnKind::Decimal, Cell::Int(i)) => Cell::Dec(i as f64),
            (ColumnKind::Decimal, c @ Cell::Dec(_)) => c,
            (ColumnKind::String, c @ Cell::Str(_)) => c,
            (ColumnKind::String, c) => Cell::Str(c.to_text()),
            (_, c) => return Err(mismatch(&c)),
        })
    }

    /// The cell as text: what CSV writes (a list as a JSON array, null as nothing).
    pub fn to_text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Bool(b) => b.to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::Dec(d) => format_decimal(*d),
            Cell::Str(s) => s.clone(),
            Cell::List(_) => self.to_json().to_string(),
        }
    }

    /// The cell as JSON (null, boolean, number, string or array).
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Int(i) => Value::from(*i),
            Cell::Dec(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
            Cell::Str(s) => Value::String(s.clone()),
            Cell::List(items) => Value::Array(items.iter().map(Cell::to_json).collect()),
        }
    }
}

fn format_decimal(d: f64) -> String {
    if d.is_finite() {
        // Rust's `Display` for f64 is the shortest text that reads back to the same value
        d.to_string()
    } else {
        String::new()
    }
}
