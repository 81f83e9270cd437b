//! Parquet (feature `parquet`): one file per view, Snappy-compressed row groups, the schema
//! from the ViewDefinition's column types (see [`ColumnKind`]): every column nullable, a
//! `collection: true` column a LIST of its kind, each field's FHIR type in its metadata
//! (`fhir_type`) and the view's name in the file's (`aqueduct.view`).

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
};
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use thiserror::Error;

use crate::{Cell, Column, ColumnKind, Row};

/// Rows buffered before they are written as one record batch.
const BATCH_ROWS: usize = 8192;

#[derive(Debug, Error)]
pub enum ParquetWriteError {
    #[error("writing Parquet")]
    Parquet(#[from] ParquetError),
    #[error("building an Arrow batch")]
    Arrow(#[from] ArrowError),
    #[error("a row of {got} cells for {want} columns")]
    Width { got: usize, want: usize },
}

fn data_type(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Boolean => DataType::Boolean,
        ColumnKind::Integer => DataType::Int64,
        ColumnKind::Decimal => DataType::Float64,
        ColumnKind::String => DataType::Utf8,
    }
}

fn item_field(kind: ColumnKind) -> Arc<Field> {
    Arc::new(Field::new("item", data_type(kind), true))
}

/// The Arrow schema of a view's table.
pub fn schema(columns: &[Column]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let kind = c.kind();
            let dt = if c.collection {
                DataType::List(item_field(kind))
            } else {
                data_type(kind)
            };
            let mut meta = std::collections::HashMap::new();
            if let Some(t) = &c.fhir_type {
                meta.insert("fhir_type".to_string(), t.clone());
            }
            Field::new(&c.name, dt, true).with_metadata(meta)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Writes one view's rows as a Parquet file.
pub struct ParquetWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    columns: Vec<(ColumnKind, bool)>,
    buffer: Vec<Row>,
    rows: u64,
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn new(out: W, view_name: &str, columns: &[Column]) -> Result<Self, ParquetWriteError> {
        let schema = schema(columns);
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "aqueduct.view".to_string(),
                view_name.to_string(),
            )]))
            .build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
        Ok(ParquetWriter {
            writer,
            schema,
            columns: columns.iter().map(|c| (c.kind(), c.collection)).collect(),
            buffer: Vec::with_capacity(BATCH_ROWS),
            rows: 0,
        })
    }

    pub fn write_row(&mut self, row: Row) -> Result<(), ParquetWriteError> {
        if row.len() != self.columns.len() {
            return Err(ParquetWriteError::Width {
                got: row.len(),
                want: self.columns.len(),
            });
        }
        self.buffer.push(row);
        self.rows += 1;
        if self.buffer.len() >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// The rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn flush_batch(&mut self) -> Result<(), ParquetWriteError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, &(kind, collection))| column_array(&self.buffer, i, kind, collection))
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        self.writer.write(&batch)?;
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is buffered and the footer, and gives the writer back.
    pub fn finish(mut self) -> Result<W, ParquetWriteError> {
        self.flush_batch()?;
        Ok(self.writer.into_inner()?)
    }
}

fn text(c: &Cell) -> Option<String> {
    match c {
        Cell::Null => None,
        other => Some(other.to_text()),
    }
}

fn boolean(c: &Cell) -> Option<bool> {
    match c {
        Cell::Bool(b) => Some(*b),
        _ => None,
    }
}

fn integer(c: &Cell) -> Option<i64> {
    match c {
        Cell::Int(i) => Some(*i),
        _ => None,
    }
}

fn decimal(c: &Cell) -> Option<f64> {
    match c {
        Cell::Dec(d) => Some(*d),
        Cell::Int(i) => Some(*i as f64),
        _ => None,
    }
}

fn items(c: &Cell) -> Option<&[Cell]> {
    match c {
        Cell::List(items) => Some(items),
        Cell::Null => None,
        single => Some(std::slice::from_ref(single)),
    }
}

fn column_array(rows: &[Row], i: usize, kind: ColumnKind, collection: bool) -> ArrayRef {
    let cells = rows.iter().map(|r| &r[i]);
    macro_rules! list {
        ($builder:expr, $conv:expr) => {{
            let mut b = ListBuilder::new($builder).with_field(item_field(kind));
            for c in cells {
                match items(c) {
                    Some(values) => {
                        for v in values {
                            b.values().append_option($conv(v));
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match (kind, collection) {
        (ColumnKind::Boolean, false) => {
            Arc::new(cells.map(boolean).collect::<BooleanArray>()) as ArrayRef
        }
        (ColumnKind::Integer, false) => Arc::new(cells.map(integer).collect::<Int64Array>()),
        (ColumnKind::Decimal, false) => Arc::new(cells.map(decimal).collect::<Float64Array>()),
        (ColumnKind::String, false) => Arc::new(cells.map(text).collect::<StringArray>()),
        (ColumnKind::Boolean, true) => list!(BooleanBuilder::new(), boolean),
        (ColumnKind::Integer, true) => list!(Int64Builder::new(), integer),
        (ColumnKind::Decimal, true) => list!(Float64Builder::new(), decimal),
        (ColumnKind::String, true) => list!(StringBuilder::new(), text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::View;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use serde_json::json;

    #[test]
    fn a_view_becomes_a_parquet_file_with_its_declared_schema() {
        let view = View::compile(&json!({
            "resource": "Patient", "name": "patient",
            "select": [{"column": [
                {"name": "id", "path": "id", "type": "id"},
                {"name": "active", "path": "active", "type": "boolean"},
                {"name": "given", "path": "name.given", "type": "string", "collection": true},
                {"name": "n", "path": "name.count()", "type": "integer"}
            ]}]
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        let file = std::fs::File::create(&path).unwrap();
        let mut w = ParquetWriter::new(file, "patient", view.columns()).unwrap();
        for i in 0..10_000 {
            let p = json!({"resourceType": "Patient", "id": format!("p{i}"), "active": i % 2 == 0,
                           "name": [{"given": ["a", "b"]}]});
            for row in view.rows(&p).unwrap() {
                w.write_row(row).unwrap();
            }
        }
        w.finish().unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata().file_metadata();
        assert_eq!(meta.num_rows(), 10_000);
        let names: Vec<&str> = meta
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(names, ["id", "active", "item", "n"]);
    }
}
