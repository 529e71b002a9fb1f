//! Parquet: small arrow batches encoded into large row groups, schema fixed from variable types.
//!
//! Memory: a row group's finished pages wait in a temp file ([`SpillFactory`]) rather than on
//! the heap until the group is written, so groups can be as large as readers like
//! ([`GROUP_ROWS`], [`GROUP_BYTES`]) and the footer metadata kept for each written group
//! (~0.5 MB for 246 columns) stays small. What remains on the heap is per column and fixed:
//! the current page and the dictionary.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde_json::Value;

use crate::imednet::model::Record;

use super::atomic::AtomicFile;
use super::error::ExportError;
use super::page_spill::SpillFactory;
use super::row::{Cell, ColumnIndex, Notes, Row};
use super::schema::{Column, ColumnSource, ColumnType, ExportSchema, KeyColumn};
use super::values::{is_blank, json_text, loose_bool, loose_f64};
use super::{ExportResult, RecordWriter};

/// Rows per arrow batch: about 256k cells, so the builders stay small for any width.
pub(crate) fn batch_rows(columns: usize) -> usize {
    (256_000 / columns.max(1)).clamp(64, 2048)
}

/// Rows per row group at most (parquet-rs' default).
const GROUP_ROWS: usize = 1 << 20;

/// Encoded bytes per row group at most: the size data tools conventionally read. The group is
/// spilled, not held, so this bounds disk, not memory; parquet-rs keeps ~1.9 KB of metadata
/// per written column chunk until the footer, so fewer, larger groups keep that small.
const GROUP_BYTES: usize = 128 << 20;

/// Rows per data page.
const PAGE_ROWS: usize = 8192;

/// Largest dictionary per column chunk.
const DICTIONARY_BYTES: usize = 256 << 10;

enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
}

impl Builder {
    fn new(t: ColumnType, rows: usize) -> Builder {
        match t {
            ColumnType::Integer => Builder::Int(Int64Builder::with_capacity(rows)),
            ColumnType::Float => Builder::Float(Float64Builder::with_capacity(rows)),
            ColumnType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Text => Builder::Text(StringBuilder::with_capacity(rows, rows * 8)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
        }
    }

    /// Append one cell. Answers that do not fit a typed column are null and tallied;
    /// blank answers (`""`) in typed columns are plain nulls.
    fn append(&mut self, cell: &Cell<'_>, col: &str, notes: &mut Notes) {
        match self {
            Builder::Int(b) => match cell {
                Cell::Int(i) => b.append_value(*i),
                Cell::Json(v) => match v.as_i64() {
                    Some(i) => b.append_value(i),
                    None => {
                        if !is_blank(v) {
                            notes.coerced(col, v);
                        }
                        b.append_null();
                    }
                },
                _ => b.append_null(),
            },
            Builder::Float(b) => match cell {
                Cell::Int(i) => b.append_value(*i as f64),
                Cell::Json(v) => match loose_f64(v) {
                    Some(f) => b.append_value(f),
                    None => {
                        if !is_blank(v) {
                            notes.coerced(col, v);
                        }
                        b.append_null();
                    }
                },
                _ => b.append_null(),
            },
            Builder::Bool(b) => match cell {
                Cell::Json(v) => match loose_bool(v) {
                    Some(x) => b.append_value(x),
                    None => {
                        if !is_blank(v) {
                            notes.coerced(col, v);
                        }
                        b.append_null();
                    }
                },
                _ => b.append_null(),
            },
            Builder::Text(b) => match cell {
                Cell::Null => b.append_null(),
                Cell::Int(i) => b.append_value(i.to_string()),
                Cell::Text(s) => b.append_value(s),
                Cell::Json(Value::String(s)) => b.append_value(s),
                Cell::Json(v) => b.append_value(json_text(v)),
            },
        }
    }
}

pub(crate) fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Integer => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Text => DataType::Utf8,
    }
}

pub(crate) struct ParquetWriter {
    file: AtomicFile,
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    columns: Vec<Column>,
    index: ColumnIndex,
    builders: Vec<Builder>,
    batch_rows: usize,
    pending: usize,
    rows: u64,
    notes: Notes,
    warnings: Vec<String>,
}

fn pq_err(path: &Path, e: impl ToString) -> ExportError {
    ExportError::write("parquet", path, e)
}

impl ParquetWriter {
    pub fn open(dest: &Path, schema: &ExportSchema) -> Result<Self, ExportError> {
        Self::open_with(dest, schema, GROUP_BYTES)
    }

    /// `open` with another row-group size cap (tests).
    pub(crate) fn open_with(
        dest: &Path,
        schema: &ExportSchema,
        group_bytes: usize,
    ) -> Result<Self, ExportError> {
        let file = AtomicFile::create(dest)?;
        let fields: Vec<Field> = schema
            .columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.column_type), true))
            .collect();
        let arrow_schema = Arc::new(Schema::new(fields));
        let batch_rows = batch_rows(schema.columns.len());
        // Page-level indexes are held in memory until the file closes, so they grow with the
        // study; chunk statistics (min/max, cut to 64 bytes) cost little with few groups and
        // let readers skip groups. Every column encoder holds its page's dictionary indices
        // (8 bytes a row) and its dictionary, so pages end at 8192 rows and dictionaries at
        // 256 KiB (free-text answers then fall back to plain encoding).
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(GROUP_ROWS))
            .set_max_row_group_bytes(Some(group_bytes))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_statistics_truncate_length(Some(64))
            .set_offset_index_disabled(true)
            .set_data_page_row_count_limit(PAGE_ROWS)
            .set_dictionary_page_size_limit(DICTIONARY_BYTES);
        // One value per record: a dictionary would only cost memory.
        for c in &schema.columns {
            if matches!(
                c.source,
                ColumnSource::Key(KeyColumn::RecordId | KeyColumn::DateCreated)
            ) {
                props =
                    props.set_column_dictionary_enabled(ColumnPath::from(c.name.as_str()), false);
            }
        }
        let spill = SpillFactory::create_in(file.dir()).map_err(|e| pq_err(dest, e))?;
        let options = ArrowWriterOptions::new()
            .with_properties(props.build())
            .with_page_store_factory(Arc::new(spill));
        let writer =
            ArrowWriter::try_new_with_options(file.handle()?, arrow_schema.clone(), options)
                .map_err(|e| pq_err(dest, e))?;
        Ok(ParquetWriter {
            file,
            writer,
            schema: arrow_schema,
            builders: schema
                .columns
                .iter()
                .map(|c| Builder::new(c.column_type, batch_rows))
                .collect(),
            columns: schema.columns.clone(),
            index: ColumnIndex::new(&schema.columns),
            batch_rows,
            pending: 0,
            rows: 0,
            notes: Notes::default(),
            warnings: schema.warnings.clone(),
        })
    }

    /// Hand the pending rows to the encoder (which ends a row group at `group_bytes`).
    fn flush_batch(&mut self) -> Result<(), ExportError> {
        if self.pending == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| pq_err(self.file.dest(), e))?;
        self.writer
            .write(&batch)
            .map_err(|e| pq_err(self.file.dest(), e))?;
        self.pending = 0;
        Ok(())
    }
}

impl RecordWriter for ParquetWriter {
    fn write(&mut self, rec: &Record) -> Result<(), ExportError> {
        let row = Row::indexed(rec, &mut self.notes, &self.index);
        for (i, (b, col)) in self.builders.iter_mut().zip(&self.columns).enumerate() {
            b.append(&row.cell_at(i, col), &col.name, &mut self.notes);
        }
        self.pending += 1;
        self.rows += 1;
        if self.pending >= self.batch_rows {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<ExportResult, ExportError> {
        let mut me = *self;
        me.flush_batch()?;
        let dest = me.file.dest().to_path_buf();
        // `close` writes the footer and flushes; dropping it closes our handle.
        me.writer.close().map_err(|e| pq_err(&dest, e))?;
        let done = me.file.commit()?;
        Ok(ExportResult::new(
            done,
            me.rows,
            me.columns.len() as u64,
            me.notes
                .into_warnings(me.warnings, "of the column's type (number or boolean)"),
        ))
    }
}
