//! `export_kwargs` as the Airflow provider passed them, validated by name.

use crate::json::json_kind;
use serde::Serialize;
use serde_json::Value;

/// Options accepted in an export's JSON options object (`export_kwargs`).
pub const KNOWN_OPTIONS: [&str; 8] = [
    "use_labels_as_columns",
    "variable_whitelist",
    "form_whitelist",
    "include_deleted",
    "incremental",
    "full_refresh",
    "table_name",
    "index",
];

/// Default SQLite table name (wide and long formats).
pub const DEFAULT_TABLE_NAME: &str = "records";

/// Validated export options. Absent or `null` options take the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportOptions {
    /// Name variable columns by label instead of variable name.
    pub use_labels_as_columns: bool,
    /// Only these variables (exact names) become columns; records with none of them are
    /// skipped (the `variableNames==` server filter the SDK sends).
    pub variable_whitelist: Option<Vec<String>>,
    /// Only these form ids: their variables become columns, their records are exported.
    pub form_whitelist: Option<Vec<i64>>,
    /// Export records flagged `deleted` (the SDK always does; we skip them by default).
    pub include_deleted: bool,
    /// Only records modified after the caller's stored watermark.
    pub incremental: bool,
    /// With `incremental`: ignore the stored watermark this once (export everything) and
    /// store a fresh one.
    pub full_refresh: bool,
    /// SQLite table name for the `sqlite` and `long_sqlite` formats.
    pub table_name: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            use_labels_as_columns: false,
            variable_whitelist: None,
            form_whitelist: None,
            include_deleted: false,
            incremental: false,
            full_refresh: false,
            table_name: DEFAULT_TABLE_NAME.into(),
        }
    }
}

fn want_bool(key: &str, v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| {
        format!(
            "export option `{key}` must be a boolean, got {}",
            json_kind(v)
        )
    })
}

fn want_list<'a>(key: &str, what: &str, v: &'a Value) -> Result<&'a Vec<Value>, String> {
    let items = v.as_array().ok_or_else(|| {
        format!(
            "export option `{key}` must be a list of {what}, got {}",
            json_kind(v)
        )
    })?;
    if items.is_empty() {
        // An empty whitelist would export nothing (the SDK is inconsistent about it): refuse.
        return Err(format!(
            "export option `{key}` must not be an empty list; leave it out to export all"
        ));
    }
    Ok(items)
}

/// Check a SQLite table name we will create.
pub fn check_table_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("export option `table_name` must not be blank".into());
    }
    if name.contains('\0') {
        return Err("export option `table_name` must not contain a NUL character".into());
    }
    if name.to_ascii_lowercase().starts_with("sqlite_") {
        return Err(format!(
            "export option `table_name` = `{name}` is reserved by SQLite (names starting with `sqlite_`)"
        ));
    }
    Ok(())
}

impl ExportOptions {
    /// Validate a JSON options object. Unknown keys and wrong types are rejected by name;
    /// `null` (whole object or one option) means the default.
    pub fn from_json(value: &Value) -> Result<ExportOptions, String> {
        let mut opts = ExportOptions::default();
        let map = match value {
            Value::Null => return Ok(opts),
            Value::Object(m) => m,
            other => {
                return Err(format!(
                    "export options must be a JSON object, got {}",
                    json_kind(other)
                ));
            }
        };
        for (key, v) in map {
            if !KNOWN_OPTIONS.contains(&key.as_str()) {
                return Err(format!(
                    "unknown export option `{key}`; known options: {}",
                    KNOWN_OPTIONS.join(", ")
                ));
            }
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "use_labels_as_columns" => opts.use_labels_as_columns = want_bool(key, v)?,
                "include_deleted" => opts.include_deleted = want_bool(key, v)?,
                "incremental" => opts.incremental = want_bool(key, v)?,
                "full_refresh" => opts.full_refresh = want_bool(key, v)?,
                // A pandas kwarg the reference DAG passes; we never write an index.
                "index" if want_bool(key, v)? => {
                    return Err(
                        "export option `index` can only be false: exports never write a row index"
                            .into(),
                    );
                }
                "table_name" => {
                    let name = v.as_str().ok_or_else(|| {
                        format!(
                            "export option `table_name` must be a string, got {}",
                            json_kind(v)
                        )
                    })?;
                    check_table_name(name)?;
                    opts.table_name = name.to_string();
                }
                "variable_whitelist" => {
                    let items = want_list(key, "variable names (strings)", v)?;
                    let names = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            item.as_str().map(str::to_string).ok_or_else(|| {
                                format!(
                                    "export option `variable_whitelist` must be a list of variable \
                                     names (strings); item {} is {}",
                                    i + 1,
                                    json_kind(item)
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    opts.variable_whitelist = Some(names);
                }
                "form_whitelist" => {
                    let items = want_list(key, "form ids (integers)", v)?;
                    let ids = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            item.as_i64().ok_or_else(|| {
                                format!(
                                    "export option `form_whitelist` must be a list of form ids \
                                     (integers); item {} is {}",
                                    i + 1,
                                    if item.is_number() {
                                        "not an integer"
                                    } else {
                                        json_kind(item)
                                    }
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    opts.form_whitelist = Some(ids);
                }
                _ => {}
            }
        }
        Ok(opts)
    }
}
