//! SQLite: wide table (split past 2000 columns), one table per form, or the long format.
//! Rows go in through cached prepared statements in batched transactions.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use serde_json::Value;

use crate::imednet::model::Record;

use super::atomic::AtomicFile;
use super::error::ExportError;
use super::row::{Cell, Notes, Row};
use super::schema::{Column, ColumnType, ExportSchema, FormTable, form_table_name, key_only_table};
use super::values::{is_blank, parse_api_timestamp};
use super::{ExportFormat, ExportResult, RecordWriter};

/// SQLite's default SQLITE_MAX_COLUMN (and the SDK's `MAX_SQLITE_COLUMNS`).
pub const SQLITE_MAX_COLUMNS: usize = 2000;
/// Rows per transaction.
const ROWS_PER_TRANSACTION: u64 = 10_000;

/// `"name"` with embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One physical table: a subset of a logical table's columns.
struct Part {
    name: String,
    cols: Vec<usize>,
    insert: String,
}

/// A logical table (all its columns) and the physical tables it is stored in.
struct Table {
    columns: Vec<Column>,
    parts: Vec<Part>,
}

enum Layout {
    Wide(Table),
    ByForm {
        tables: Vec<Table>,
        by_form: HashMap<i64, usize>,
        used_names: HashSet<String>,
        whitelist: Option<HashSet<i64>>,
    },
    Long {
        table: String,
        insert: String,
        whitelist: Option<HashSet<String>>,
    },
}

pub(crate) struct SqliteWriter {
    // Declared before `file` so the connection closes before the temp file is removed.
    conn: Connection,
    file: AtomicFile,
    layout: Layout,
    tables: Vec<String>,
    columns: u64,
    rows: u64,
    in_transaction: u64,
    notes: Notes,
    warnings: Vec<String>,
}

/// Split a logical table into parts of at most 2000 columns. Past the limit every part is
/// `{base}_partN` and repeats the key columns (the SDK repeats none, so only part 1 could be
/// joined back).
fn plan_parts(base: &str, columns: &[Column], warnings: &mut Vec<String>) -> Vec<Part> {
    let make = |name: String, cols: Vec<usize>| {
        let marks = vec!["?"; cols.len()].join(", ");
        let insert = format!("INSERT INTO {} VALUES ({marks})", quote_ident(&name));
        Part { name, cols, insert }
    };
    if columns.len() <= SQLITE_MAX_COLUMNS {
        return vec![make(base.to_string(), (0..columns.len()).collect())];
    }
    let keys: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].is_key())
        .collect();
    let vars: Vec<usize> = (0..columns.len())
        .filter(|&i| !columns[i].is_key())
        .collect();
    let per_part = SQLITE_MAX_COLUMNS - keys.len();
    let parts: Vec<Part> = vars
        .chunks(per_part)
        .enumerate()
        .map(|(i, chunk)| {
            let mut cols = keys.clone();
            cols.extend_from_slice(chunk);
            make(format!("{base}_part{}", i + 1), cols)
        })
        .collect();
    warnings.push(format!(
        "table `{base}` has {} columns, over SQLite's {SQLITE_MAX_COLUMNS}: written as \
         `{base}_part1`…`{base}_part{}`, each starting with the {} key columns",
        columns.len(),
        parts.len(),
        keys.len()
    ));
    parts
}

fn sql_err(path: &Path, table: &str, e: rusqlite::Error) -> ExportError {
    ExportError::write("sqlite", path, format!("table `{table}`: {e}"))
}

/// SQLite value of a cell. Blank answers in typed (FLOAT/BOOLEAN) columns become NULL;
/// booleans are stored as 1/0 like Python's sqlite3; containers as JSON text.
fn sql_value<'a>(cell: &'a Cell<'_>, ty: ColumnType) -> ToSqlOutput<'a> {
    match cell {
        Cell::Null => ToSqlOutput::Owned(SqlValue::Null),
        Cell::Int(i) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
        Cell::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Cell::Json(v) => json_sql_value(v, ty),
    }
}

fn json_sql_value(v: &Value, ty: ColumnType) -> ToSqlOutput<'_> {
    match v {
        Value::Null => ToSqlOutput::Owned(SqlValue::Null),
        Value::String(_) if ty != ColumnType::Text && is_blank(v) => {
            ToSqlOutput::Owned(SqlValue::Null)
        }
        Value::String(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Bool(b) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*b))),
        Value::Number(n) => ToSqlOutput::Owned(match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        }),
        other => ToSqlOutput::Owned(SqlValue::Text(other.to_string())),
    }
}

impl SqliteWriter {
    pub fn open(
        format: ExportFormat,
        dest: &Path,
        schema: &ExportSchema,
    ) -> Result<Self, ExportError> {
        let file = AtomicFile::create(dest)?;
        let conn = Connection::open(file.path()).map_err(|e| sql_err(dest, "-", e))?;
        // The file only becomes visible after commit, so no journal and no syncs until then.
        conn.query_row("PRAGMA journal_mode = OFF", [], |_| Ok(()))
            .map_err(|e| sql_err(dest, "-", e))?;
        conn.execute_batch("PRAGMA synchronous = OFF;")
            .map_err(|e| sql_err(dest, "-", e))?;
        let mut warnings = Vec::new();
        let mut columns = 0u64;
        let layout = match format {
            ExportFormat::SqliteByForm => {
                warnings.extend(schema.form_warnings.iter().cloned());
                let mut list = Vec::new();
                let mut by_form = HashMap::new();
                let mut used_names = HashSet::new();
                for form in &schema.forms {
                    used_names.insert(form.table.to_lowercase());
                    by_form.insert(form.form_id, list.len());
                    columns += form.columns.len() as u64;
                    list.push(Table {
                        parts: plan_parts(&form.table, &form.columns, &mut warnings),
                        columns: form.columns.clone(),
                    });
                }
                Layout::ByForm {
                    tables: list,
                    by_form,
                    used_names,
                    whitelist: schema
                        .form_whitelist
                        .as_ref()
                        .map(|w| w.iter().copied().collect()),
                }
            }
            ExportFormat::LongSqlite => {
                warnings.extend(schema.warnings.iter().cloned());
                columns = 5;
                let table = schema.table_name.clone();
                Layout::Long {
                    insert: format!("INSERT INTO {} VALUES (?, ?, ?, ?, ?)", quote_ident(&table)),
                    table,
                    whitelist: schema
                        .variable_whitelist
                        .as_ref()
                        .map(|w| w.iter().cloned().collect()),
                }
            }
            _ => {
                warnings.extend(schema.warnings.iter().cloned());
                columns = schema.columns.len() as u64;
                Layout::Wide(Table {
                    parts: plan_parts(&schema.table_name, &schema.columns, &mut warnings),
                    columns: schema.columns.clone(),
                })
            }
        };
        let mut me = SqliteWriter {
            conn,
            file,
            layout,
            tables: Vec::new(),
            columns,
            rows: 0,
            in_transaction: 0,
            notes: Notes::default(),
            warnings,
        };
        let dest = me.file.dest();
        match &me.layout {
            Layout::Wide(t) => Self::create_table_parts(&me.conn, dest, t, &mut me.tables)?,
            Layout::ByForm { tables: list, .. } => {
                for t in list {
                    Self::create_table_parts(&me.conn, dest, t, &mut me.tables)?;
                }
            }
            Layout::Long { table, .. } => {
                let sql = format!(
                    "CREATE TABLE {} (record_id BIGINT, form_id BIGINT, variable_name TEXT, \
                     value TEXT, timestamp DATETIME)",
                    quote_ident(table)
                );
                me.conn
                    .execute_batch(&sql)
                    .map_err(|e| sql_err(dest, table, e))?;
                me.tables.push(table.clone());
            }
        }
        me.conn
            .set_prepared_statement_cache_capacity(me.tables.len() + 8);
        me.conn
            .execute_batch("BEGIN")
            .map_err(|e| sql_err(me.file.dest(), "-", e))?;
        Ok(me)
    }

    fn create_table_parts(
        conn: &Connection,
        dest: &Path,
        t: &Table,
        created: &mut Vec<String>,
    ) -> Result<(), ExportError> {
        for part in &t.parts {
            let defs: Vec<String> = part
                .cols
                .iter()
                .map(|&i| {
                    let c = &t.columns[i];
                    format!("{} {}", quote_ident(&c.name), c.column_type.sqlite_decl())
                })
                .collect();
            let sql = format!(
                "CREATE TABLE {} ({})",
                quote_ident(&part.name),
                defs.join(", ")
            );
            conn.execute_batch(&sql)
                .map_err(|e| sql_err(dest, &part.name, e))?;
            created.push(part.name.clone());
        }
        Ok(())
    }

    fn insert_table(
        conn: &Connection,
        dest: &Path,
        t: &Table,
        row: &Row<'_>,
    ) -> Result<u64, ExportError> {
        let cells: Vec<Cell<'_>> = t.columns.iter().map(|c| row.cell(c)).collect();
        let values: Vec<ToSqlOutput<'_>> = cells
            .iter()
            .zip(&t.columns)
            .map(|(cell, col)| sql_value(cell, col.column_type))
            .collect();
        for part in &t.parts {
            let mut stmt = conn
                .prepare_cached(&part.insert)
                .map_err(|e| sql_err(dest, &part.name, e))?;
            for (i, &ci) in part.cols.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, &values[ci])
                    .map_err(|e| sql_err(dest, &part.name, e))?;
            }
            stmt.raw_execute()
                .map_err(|e| sql_err(dest, &part.name, e))?;
        }
        Ok(1)
    }

    fn insert_long(&mut self, rec: &Record) -> Result<u64, ExportError> {
        let Layout::Long {
            table,
            insert,
            whitelist,
        } = &self.layout
        else {
            return Ok(0);
        };
        let dest = self.file.dest();
        // SDK: `timestamp` is the record's dateModified, stored the SQLAlchemy way.
        let stamp: Option<String> =
            rec.date_modified
                .as_deref()
                .map(|raw| match parse_api_timestamp(raw) {
                    Some(ts) => ts.sqlalchemy_text(),
                    None => {
                        self.notes.bad_date(raw);
                        raw.to_string()
                    }
                });
        let mut stmt = self
            .conn
            .prepare_cached(insert)
            .map_err(|e| sql_err(dest, table, e))?;
        let mut n = 0;
        for (name, value) in &rec.record_data {
            if whitelist.as_ref().is_some_and(|w| !w.contains(name)) {
                continue;
            }
            let params = (
                rec.record_id.unwrap_or(0),
                rec.form_id.unwrap_or(0),
                name,
                json_sql_value(value, ColumnType::Text),
                stamp.as_deref(),
            );
            stmt.execute(params).map_err(|e| sql_err(dest, table, e))?;
            n += 1;
        }
        Ok(n)
    }

    fn insert_by_form(&mut self, rec: &Record, row: &Row<'_>) -> Result<u64, ExportError> {
        let form_id = rec.form_id.unwrap_or(0);
        let dest = self.file.dest().to_path_buf();
        let Layout::ByForm {
            tables: list,
            by_form,
            used_names,
            whitelist,
        } = &mut self.layout
        else {
            return Ok(0);
        };
        let idx = match by_form.get(&form_id) {
            Some(&i) => i,
            // Left out by the form whitelist (normally the record filter skips these).
            None if whitelist.as_ref().is_some_and(|w| !w.contains(&form_id)) => return Ok(0),
            None => {
                // A form the schema did not know (no variables, forms not given): give it a
                // key-columns-only table rather than dropping its records.
                let mut warnings = Vec::new();
                let name = form_table_name(form_id, &rec.form_key, used_names, &mut warnings);
                let FormTable { columns, table, .. } = key_only_table(form_id, &rec.form_key, name);
                warnings.push(format!(
                    "form {form_id} (`{}`) is not in the schema; its records went to table \
                     `{table}` with the key columns only",
                    rec.form_key
                ));
                let t = Table {
                    parts: plan_parts(&table, &columns, &mut warnings),
                    columns,
                };
                Self::create_table_parts(&self.conn, &dest, &t, &mut self.tables)?;
                self.conn
                    .set_prepared_statement_cache_capacity(self.tables.len() + 8);
                self.columns += t.columns.len() as u64;
                self.notes.other.extend(warnings);
                list.push(t);
                by_form.insert(form_id, list.len() - 1);
                list.len() - 1
            }
        };
        Self::insert_table(&self.conn, &dest, &list[idx], row)
    }
}

impl RecordWriter for SqliteWriter {
    fn write(&mut self, rec: &Record) -> Result<(), ExportError> {
        let n = match &self.layout {
            Layout::Long { .. } => self.insert_long(rec)?,
            Layout::Wide(t) => {
                let row = Row::new(rec, &mut self.notes);
                Self::insert_table(&self.conn, self.file.dest(), t, &row)?
            }
            Layout::ByForm { .. } => {
                let row = Row::new(rec, &mut self.notes);
                self.insert_by_form(rec, &row)?
            }
        };
        self.rows += n;
        self.in_transaction += n;
        if self.in_transaction >= ROWS_PER_TRANSACTION {
            self.conn
                .execute_batch("COMMIT; BEGIN")
                .map_err(|e| sql_err(self.file.dest(), "-", e))?;
            self.in_transaction = 0;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<ExportResult, ExportError> {
        let me = *self;
        let dest = me.file.dest().to_path_buf();
        me.conn
            .execute_batch("COMMIT")
            .map_err(|e| sql_err(&dest, "-", e))?;
        me.conn.close().map_err(|(_, e)| sql_err(&dest, "-", e))?;
        let done = me.file.commit()?;
        let mut result = ExportResult::new(
            done,
            me.rows,
            me.columns,
            me.notes.into_warnings(me.warnings, "valid"),
        );
        result.tables = me.tables;
        Ok(result)
    }
}
