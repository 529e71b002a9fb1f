//! JSON: one array of row objects (keys in column order), written incrementally.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::imednet::model::Record;

use super::atomic::AtomicFile;
use super::error::ExportError;
use super::row::{Cell, ColumnIndex, Notes, Row};
use super::schema::{Column, ExportSchema};
use super::{ExportResult, RecordWriter};

pub(crate) struct JsonWriter {
    file: AtomicFile,
    out: BufWriter<File>,
    columns: Vec<Column>,
    index: ColumnIndex,
    /// Column names pre-encoded as JSON strings followed by `:`.
    keys: Vec<String>,
    rows: u64,
    notes: Notes,
    warnings: Vec<String>,
}

impl JsonWriter {
    pub fn open(dest: &Path, schema: &ExportSchema) -> Result<Self, ExportError> {
        let file = AtomicFile::create(dest)?;
        let mut out = BufWriter::with_capacity(1 << 16, file.handle()?);
        out.write_all(b"[")
            .map_err(|e| ExportError::io("write", file.path(), e))?;
        let keys = schema
            .columns
            .iter()
            .map(|c| format!("{}:", serde_json::Value::from(c.name.as_str())))
            .collect();
        Ok(JsonWriter {
            file,
            out,
            columns: schema.columns.clone(),
            index: ColumnIndex::new(&schema.columns),
            keys,
            rows: 0,
            notes: Notes::default(),
            warnings: schema.warnings.clone(),
        })
    }

    fn write_row(&mut self, rec: &Record) -> std::io::Result<()> {
        let row = Row::indexed(rec, &mut self.notes, &self.index);
        self.out
            .write_all(if self.rows == 0 { b"\n{" } else { b",\n{" })?;
        for (i, (col, key)) in self.columns.iter().zip(&self.keys).enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            self.out.write_all(key.as_bytes())?;
            match row.cell_at(i, col) {
                Cell::Null => self.out.write_all(b"null")?,
                Cell::Int(n) => write!(self.out, "{n}")?,
                Cell::Text(s) => serde_json::to_writer(&mut self.out, s.as_ref())?,
                Cell::Json(v) => serde_json::to_writer(&mut self.out, v)?,
            }
        }
        self.out.write_all(b"}")
    }
}

impl RecordWriter for JsonWriter {
    fn write(&mut self, rec: &Record) -> Result<(), ExportError> {
        self.write_row(rec)
            .map_err(|e| ExportError::io("write", self.file.path(), e))?;
        self.rows += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<ExportResult, ExportError> {
        let mut me = *self;
        let tail: &[u8] = if me.rows == 0 { b"]\n" } else { b"\n]\n" };
        me.out
            .write_all(tail)
            .and_then(|()| me.out.flush())
            .map_err(|e| ExportError::io("write", me.file.path(), e))?;
        drop(me.out);
        let done = me.file.commit()?;
        Ok(ExportResult::new(
            done,
            me.rows,
            me.columns.len() as u64,
            me.notes.into_warnings(me.warnings, "valid"),
        ))
    }
}
