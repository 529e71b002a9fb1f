//! Excel: one `Sheet1` in rust_xlsxwriter's constant-memory mode (rows go to a temp file as
//! they are written, so memory does not grow with the study).

use std::io::BufWriter;
use std::path::Path;

use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};
use serde_json::Value;

use crate::imednet::model::Record;

use super::atomic::AtomicFile;
use super::error::ExportError;
use super::row::{Cell, Notes, Row};
use super::schema::{Column, ExportSchema};
use super::values::{guard_formula, truncate_utf16};
use super::{ExportResult, RecordWriter};

/// Excel's sheet limits (header row included in the rows).
pub const XLSX_MAX_ROWS: u64 = 1_048_576;
pub const XLSX_MAX_COLUMNS: usize = 16_384;
const XLSX_MAX_STRING: usize = 32_767;

pub(crate) struct XlsxWriter {
    file: AtomicFile,
    workbook: Workbook,
    columns: Vec<Column>,
    rows: u64,
    notes: Notes,
    warnings: Vec<String>,
}

fn xl_err(path: &Path, e: XlsxError) -> ExportError {
    ExportError::write("xlsx", path, e)
}

fn sheet<'a>(workbook: &'a mut Workbook, dest: &Path) -> Result<&'a mut Worksheet, ExportError> {
    workbook
        .worksheet_from_index(0)
        .map_err(|e| xl_err(dest, e))
}

impl XlsxWriter {
    pub fn open(dest: &Path, schema: &ExportSchema) -> Result<Self, ExportError> {
        if schema.columns.len() > XLSX_MAX_COLUMNS {
            return Err(ExportError::Limit {
                format: "xlsx",
                path: dest.display().to_string(),
                message: format!(
                    "Excel sheets hold at most {XLSX_MAX_COLUMNS} columns; this export has {}",
                    schema.columns.len()
                ),
            });
        }
        let file = AtomicFile::create(dest)?;
        let mut workbook = Workbook::new();
        // Spill rows next to the destination rather than in a possibly RAM-backed /tmp.
        workbook
            .set_tempdir(file.dir())
            .map_err(|e| xl_err(dest, e))?;
        let ws = workbook
            .add_worksheet_with_constant_memory()
            .map_err(|e| xl_err(dest, e))?;
        let bold = Format::new().set_bold();
        for (c, col) in schema.columns.iter().enumerate() {
            ws.write_string_with_format(0, c as u16, &col.name, &bold)
                .map_err(|e| xl_err(dest, e))?;
        }
        Ok(XlsxWriter {
            file,
            workbook,
            columns: schema.columns.clone(),
            rows: 0,
            notes: Notes::default(),
            warnings: schema.warnings.clone(),
        })
    }
}

/// Guarded, length-limited text for a string cell.
fn cell_text(s: &str, col: &str, notes: &mut Notes) -> String {
    let guarded = guard_formula(s);
    match truncate_utf16(&guarded, XLSX_MAX_STRING) {
        Some(cut) => {
            notes.truncated(col);
            cut.to_string()
        }
        None => guarded.into_owned(),
    }
}

impl RecordWriter for XlsxWriter {
    fn write(&mut self, rec: &Record) -> Result<(), ExportError> {
        if self.rows + 1 >= XLSX_MAX_ROWS {
            return Err(ExportError::Limit {
                format: "xlsx",
                path: self.file.dest().display().to_string(),
                message: format!(
                    "Excel sheets hold at most {} data rows; the study has more (use csv, \
                     parquet or sqlite)",
                    XLSX_MAX_ROWS - 1
                ),
            });
        }
        let r = (self.rows + 1) as u32;
        let dest = self.file.dest().to_path_buf();
        let row = Row::new(rec, &mut self.notes);
        let ws = sheet(&mut self.workbook, &dest)?;
        for (c, col) in self.columns.iter().enumerate() {
            let c = c as u16;
            let res = match row.cell(col) {
                Cell::Null => continue,
                Cell::Int(i) => ws.write_number(r, c, i as f64),
                Cell::Text(s) if s.is_empty() => continue,
                Cell::Text(s) => ws.write_string(r, c, cell_text(&s, &col.name, &mut self.notes)),
                Cell::Json(v) => match v {
                    Value::Null => continue,
                    Value::String(s) if s.is_empty() => continue,
                    Value::String(s) => {
                        ws.write_string(r, c, cell_text(s, &col.name, &mut self.notes))
                    }
                    Value::Number(n) => ws.write_number(r, c, n.as_f64().unwrap_or(f64::NAN)),
                    Value::Bool(b) => ws.write_boolean(r, c, *b),
                    other => ws.write_string(
                        r,
                        c,
                        cell_text(&other.to_string(), &col.name, &mut self.notes),
                    ),
                },
            };
            res.map_err(|e| xl_err(&dest, e))?;
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<ExportResult, ExportError> {
        let mut me = *self;
        let dest = me.file.dest().to_path_buf();
        let mut out = BufWriter::with_capacity(1 << 16, me.file.handle()?);
        me.workbook
            .save_to_writer(&mut out)
            .map_err(|e| xl_err(&dest, e))?;
        let handle = out
            .into_inner()
            .map_err(|e| ExportError::io("write", me.file.path(), e.into_error()))?;
        drop(handle);
        drop(me.workbook);
        let done = me.file.commit()?;
        Ok(ExportResult::new(
            done,
            me.rows,
            me.columns.len() as u64,
            me.notes.into_warnings(me.warnings, "valid"),
        ))
    }
}
