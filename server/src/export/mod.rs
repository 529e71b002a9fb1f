//! Study export writers: the iMednet SDK 0.5.0 export semantics (`imednet.integrations.export`)
//! as streaming writers with a fixed memory footprint.
//!
//! Flow: [`ExportOptions::from_json`] → [`ExportSchema::build`] (columns from the variables)
//! → [`RecordFilter::new`] → [`export_stream`] (or [`open_writer`] + [`RecordWriter`] when
//! the caller already runs on a blocking thread). Every writer writes a temp file beside the
//! destination and renames it into place on `finish`; dropping a writer removes the temp file.
//! NOTES.md in the scratch crate lists every deliberate difference from the SDK.

mod atomic;
pub mod bench;
mod driver;
mod error;
mod filter;
mod options;
mod page_spill;
pub mod provenance;
mod row;
mod schema;
mod values;
mod write_csv;
mod write_json;
mod write_parquet;
mod write_sqlite;
mod write_xlsx;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use crate::imednet::model::Record;

pub use atomic::hex;
pub use driver::{ExportOutcome, export_stream};
pub use error::ExportError;
pub use filter::{FilterStats, RecordFilter};
pub use options::{DEFAULT_TABLE_NAME, ExportOptions, KNOWN_OPTIONS};
pub use schema::{
    Column, ColumnSource, ColumnType, ExportSchema, FormTable, KEY_COLUMNS, KeyColumn,
};
pub use values::guard_formula;
pub use write_sqlite::SQLITE_MAX_COLUMNS;
pub use write_xlsx::{XLSX_MAX_COLUMNS, XLSX_MAX_ROWS};

/// Output format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Csv,
    Json,
    Parquet,
    Xlsx,
    /// One wide table (split into `{table}_partN` past 2000 columns).
    Sqlite,
    /// One table per form, named by formKey.
    SqliteByForm,
    /// `record_id, form_id, variable_name, value, timestamp`.
    LongSqlite,
}

/// Every name [`ExportFormat::from_str`] accepts (case-insensitive).
pub const FORMAT_NAMES: [&str; 18] = [
    "csv",
    "json",
    "parquet",
    "xlsx",
    "excel",
    "sqlite",
    "sql",
    "sqlite_by_form",
    "sql_by_form",
    "long_sqlite",
    "long_sql",
    "export_to_csv",
    "export_to_excel",
    "export_to_json",
    "export_to_parquet",
    "export_to_sql",
    "export_to_sql_by_form",
    "export_to_long_sql",
];

impl ExportFormat {
    pub const ALL: [ExportFormat; 7] = [
        ExportFormat::Csv,
        ExportFormat::Json,
        ExportFormat::Parquet,
        ExportFormat::Xlsx,
        ExportFormat::Sqlite,
        ExportFormat::SqliteByForm,
        ExportFormat::LongSqlite,
    ];

    /// Canonical name (what `Display` prints and `FromStr` accepts).
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
            ExportFormat::Parquet => "parquet",
            ExportFormat::Xlsx => "xlsx",
            ExportFormat::Sqlite => "sqlite",
            ExportFormat::SqliteByForm => "sqlite_by_form",
            ExportFormat::LongSqlite => "long_sqlite",
        }
    }

    /// The SDK function this format replaces.
    pub fn sdk_function(self) -> &'static str {
        match self {
            ExportFormat::Csv => "export_to_csv",
            ExportFormat::Json => "export_to_json",
            ExportFormat::Parquet => "export_to_parquet",
            ExportFormat::Xlsx => "export_to_excel",
            ExportFormat::Sqlite => "export_to_sql",
            ExportFormat::SqliteByForm => "export_to_sql_by_form",
            ExportFormat::LongSqlite => "export_to_long_sql",
        }
    }

    /// Usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
            ExportFormat::Parquet => "parquet",
            ExportFormat::Xlsx => "xlsx",
            _ => "sqlite",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportFormat {
    type Err = ExportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "csv" | "export_to_csv" => ExportFormat::Csv,
            "json" | "export_to_json" => ExportFormat::Json,
            "parquet" | "export_to_parquet" => ExportFormat::Parquet,
            "xlsx" | "excel" | "export_to_excel" => ExportFormat::Xlsx,
            "sqlite" | "sql" | "export_to_sql" => ExportFormat::Sqlite,
            "sqlite_by_form" | "sql_by_form" | "export_to_sql_by_form" => {
                ExportFormat::SqliteByForm
            }
            "long_sqlite" | "long_sql" | "export_to_long_sql" => ExportFormat::LongSqlite,
            _ => {
                return Err(ExportError::UnknownFormat {
                    value: s.to_string(),
                    valid: FORMAT_NAMES.join(", "),
                });
            }
        })
    }
}

/// What a finished export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportResult {
    /// Final path (the destination).
    pub path: String,
    /// Data rows written (long format: value rows; per-form: rows over all tables).
    pub rows: u64,
    /// Logical columns (wide: key + variable columns, not counting the key columns a split
    /// repeats; per-form: summed over tables; long: 5).
    pub columns: u64,
    /// Size of the final file.
    pub bytes: u64,
    /// Hex SHA-256 of the final file.
    pub sha256: String,
    pub warnings: Vec<String>,
    /// SQLite tables created, in creation order (empty for other formats).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

impl ExportResult {
    fn new(done: atomic::Committed, rows: u64, columns: u64, warnings: Vec<String>) -> Self {
        ExportResult {
            path: done.path,
            rows,
            columns,
            bytes: done.bytes,
            sha256: done.sha256,
            warnings,
            tables: Vec::new(),
        }
    }
}

/// A streaming writer for one export file. Blocking: call it from a blocking thread.
pub trait RecordWriter: Send {
    /// Append one record (already filtered).
    fn write(&mut self, rec: &Record) -> Result<(), ExportError>;
    /// Flush, fsync, hash and rename the temp file onto the destination.
    fn finish(self: Box<Self>) -> Result<ExportResult, ExportError>;
}

/// Open a writer for `format` at `dest` (directory created if missing). Blocking.
pub fn open_writer(
    format: ExportFormat,
    dest: &Path,
    schema: &ExportSchema,
) -> Result<Box<dyn RecordWriter>, ExportError> {
    Ok(match format {
        ExportFormat::Csv => Box::new(write_csv::CsvWriter::open(dest, schema)?),
        ExportFormat::Json => Box::new(write_json::JsonWriter::open(dest, schema)?),
        ExportFormat::Parquet => Box::new(write_parquet::ParquetWriter::open(dest, schema)?),
        ExportFormat::Xlsx => Box::new(write_xlsx::XlsxWriter::open(dest, schema)?),
        ExportFormat::Sqlite | ExportFormat::SqliteByForm | ExportFormat::LongSqlite => {
            Box::new(write_sqlite::SqliteWriter::open(format, dest, schema)?)
        }
    })
}
