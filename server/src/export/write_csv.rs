//! CSV: pandas `to_csv(index=False)` layout, streamed row by row.

use std::borrow::Cow;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use serde_json::Value;

use crate::imednet::model::Record;

use super::atomic::AtomicFile;
use super::error::ExportError;
use super::row::{Cell, ColumnIndex, Notes, Row};
use super::schema::{Column, ExportSchema};
use super::values::{guard_formula, number_text};
use super::{ExportResult, RecordWriter};

pub(crate) struct CsvWriter {
    file: AtomicFile,
    out: csv::Writer<BufWriter<File>>,
    columns: Vec<Column>,
    index: ColumnIndex,
    rows: u64,
    notes: Notes,
    warnings: Vec<String>,
}

/// A cell as pandas writes it (after the SDK's formula guard on strings): null → empty,
/// booleans `True`/`False`, floats as Python `repr`. Containers become JSON text.
pub(crate) fn csv_text<'a>(cell: &Cell<'a>) -> Cow<'a, str> {
    match cell {
        Cell::Null => Cow::Borrowed(""),
        Cell::Int(i) => Cow::Owned(i.to_string()),
        Cell::Text(s) => match guard_formula(s) {
            Cow::Borrowed(_) => s.clone(),
            Cow::Owned(o) => Cow::Owned(o),
        },
        Cell::Json(v) => match v {
            Value::String(s) => guard_formula(s),
            Value::Number(n) => Cow::Owned(number_text(n)),
            Value::Bool(b) => Cow::Borrowed(if *b { "True" } else { "False" }),
            Value::Null => Cow::Borrowed(""),
            other => Cow::Owned(other.to_string()),
        },
    }
}

fn csv_err(path: &Path, e: impl ToString) -> ExportError {
    ExportError::write("csv", path, e)
}

impl CsvWriter {
    pub fn open(dest: &Path, schema: &ExportSchema) -> Result<Self, ExportError> {
        let file = AtomicFile::create(dest)?;
        let handle = file.handle()?;
        let mut out = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(BufWriter::with_capacity(1 << 16, handle));
        out.write_record(schema.columns.iter().map(|c| c.name.as_bytes()))
            .map_err(|e| csv_err(dest, e))?;
        Ok(CsvWriter {
            file,
            out,
            columns: schema.columns.clone(),
            index: ColumnIndex::new(&schema.columns),
            rows: 0,
            notes: Notes::default(),
            warnings: schema.warnings.clone(),
        })
    }
}

impl RecordWriter for CsvWriter {
    fn write(&mut self, rec: &Record) -> Result<(), ExportError> {
        let row = Row::indexed(rec, &mut self.notes, &self.index);
        let dest = self.file.dest();
        // Integers are formatted on the stack: they are a good share of all cells.
        let mut digits = itoa::Buffer::new();
        for (i, col) in self.columns.iter().enumerate() {
            let cell = row.cell_at(i, col);
            let int = match &cell {
                Cell::Int(n) => Some(*n),
                Cell::Json(Value::Number(n)) => n.as_i64(),
                _ => None,
            };
            let written = match int {
                Some(n) => self.out.write_field(digits.format(n)),
                None => self.out.write_field(csv_text(&cell).as_bytes()),
            };
            written.map_err(|e| csv_err(dest, e))?;
        }
        // An empty record ends the one the fields above were written into.
        self.out
            .write_record(None::<&[u8]>)
            .map_err(|e| csv_err(dest, e))?;
        self.rows += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<ExportResult, ExportError> {
        let me = *self;
        let dest = me.file.dest().to_path_buf();
        let buf = me.out.into_inner().map_err(|e| csv_err(&dest, e))?;
        let handle = buf.into_inner().map_err(|e| csv_err(&dest, e.error()))?;
        drop(handle);
        let done = me.file.commit()?;
        Ok(ExportResult::new(
            done,
            me.rows,
            me.columns.len() as u64,
            me.notes.into_warnings(me.warnings, "valid"),
        ))
    }
}
