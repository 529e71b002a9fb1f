//! Output columns of an export, fixed up front from the study's variables and the options.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::imednet::model::{Form, Variable};

use super::options::ExportOptions;

/// The SDK's key columns, in order, before the variable columns.
pub const KEY_COLUMNS: [&str; 6] = [
    "recordId",
    "subjectKey",
    "visitId",
    "formId",
    "recordStatus",
    "dateCreated",
];

/// One of the six record key columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyColumn {
    RecordId,
    SubjectKey,
    VisitId,
    FormId,
    RecordStatus,
    DateCreated,
}

impl KeyColumn {
    pub const ALL: [KeyColumn; 6] = [
        KeyColumn::RecordId,
        KeyColumn::SubjectKey,
        KeyColumn::VisitId,
        KeyColumn::FormId,
        KeyColumn::RecordStatus,
        KeyColumn::DateCreated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyColumn::RecordId => KEY_COLUMNS[0],
            KeyColumn::SubjectKey => KEY_COLUMNS[1],
            KeyColumn::VisitId => KEY_COLUMNS[2],
            KeyColumn::FormId => KEY_COLUMNS[3],
            KeyColumn::RecordStatus => KEY_COLUMNS[4],
            KeyColumn::DateCreated => KEY_COLUMNS[5],
        }
    }

    pub fn column_type(self) -> ColumnType {
        match self {
            KeyColumn::RecordId | KeyColumn::VisitId | KeyColumn::FormId => ColumnType::Integer,
            _ => ColumnType::Text,
        }
    }
}

/// Storage type of a column in typed formats (Parquet, SQLite declared types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Key ids: Parquet Int64, SQLite BIGINT.
    Integer,
    /// NUMBER and CALCULATED variables: Parquet Float64, SQLite FLOAT.
    Float,
    /// CHECKBOX variables: Parquet Boolean, SQLite BOOLEAN.
    Boolean,
    /// Everything else: Parquet Utf8, SQLite TEXT.
    Text,
}

impl ColumnType {
    /// Column type for an iMednet `variableType` (case-insensitive). These are the types
    /// pandas/pyarrow infer for the SDK on a fully answered study.
    pub fn for_variable_type(variable_type: &str) -> ColumnType {
        match variable_type.trim().to_ascii_uppercase().as_str() {
            "NUMBER" | "CALCULATED" => ColumnType::Float,
            "CHECKBOX" => ColumnType::Boolean,
            _ => ColumnType::Text,
        }
    }

    /// Declared SQLite type, as pandas/SQLAlchemy `to_sql` declares it.
    pub fn sqlite_decl(self) -> &'static str {
        match self {
            ColumnType::Integer => "BIGINT",
            ColumnType::Float => "FLOAT",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Text => "TEXT",
        }
    }
}

/// Where a column's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    Key(KeyColumn),
    /// `recordData[name]`.
    Variable {
        name: String,
        label: String,
        form_id: Option<i64>,
        /// Set when several variables share this name (in different forms): the column then
        /// only takes values from records of its own form.
        own_form_only: bool,
    },
}

/// One output column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Final (de-duplicated) column name.
    pub name: String,
    pub column_type: ColumnType,
    pub source: ColumnSource,
}

impl Column {
    pub fn is_key(&self) -> bool {
        matches!(self.source, ColumnSource::Key(_))
    }
}

/// One table of the per-form SQLite export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormTable {
    pub form_id: i64,
    pub form_key: String,
    /// Table name: the formKey, made unique and usable.
    pub table: String,
    pub columns: Vec<Column>,
}

/// Everything the writers need to lay out rows, fixed before the first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSchema {
    /// Wide-table columns: the six key columns, then the variable columns.
    pub columns: Vec<Column>,
    /// Per-form tables (`sqlite_by_form`), in form order.
    pub forms: Vec<FormTable>,
    /// SQLite table name (`sqlite`, `long_sqlite`).
    pub table_name: String,
    /// Variable whitelist, also applied to the long format's rows.
    pub variable_whitelist: Option<Vec<String>>,
    /// Form whitelist: the per-form writer makes no table for other forms.
    pub form_whitelist: Option<Vec<i64>>,
    /// Warnings about the wide layout (renamed columns, unknown whitelist names).
    pub warnings: Vec<String>,
    /// Warnings about the per-form layout.
    pub form_warnings: Vec<String>,
}

fn key_columns() -> Vec<Column> {
    KeyColumn::ALL
        .iter()
        .map(|k| Column {
            name: k.name().to_string(),
            column_type: k.column_type(),
            source: ColumnSource::Key(*k),
        })
        .collect()
}

/// Give every column a unique name (case-insensitive). Later duplicates get `_2`, `_3`, …,
/// skipping any suffixed name that is itself a wanted column name, and each rename is
/// reported. (The SDK silently drops the later duplicates.)
fn dedupe(columns: &mut [Column], place: &str, warnings: &mut Vec<String>) {
    let wanted: HashSet<String> = columns.iter().map(|c| c.name.to_lowercase()).collect();
    let mut used: HashSet<String> = HashSet::new();
    for col in columns.iter_mut() {
        if used.insert(col.name.to_lowercase()) {
            continue;
        }
        let mut n = 2u64;
        let new_name = loop {
            let candidate = format!("{}_{n}", col.name);
            let lower = candidate.to_lowercase();
            if !used.contains(&lower) && !wanted.contains(&lower) {
                used.insert(lower);
                break candidate;
            }
            n += 1;
        };
        if let ColumnSource::Variable { name, label, .. } = &col.source {
            warnings.push(format!(
                "column `{}`{place} of variable `{name}` (label `{label}`) renamed to `{new_name}`: \
                 its name duplicates an earlier column (case-insensitive)",
                col.name
            ));
        }
        col.name = new_name;
    }
}

fn variable_column(v: &Variable, use_labels: bool, warnings: &mut Vec<String>) -> Column {
    let name = if use_labels {
        if v.label.trim().is_empty() {
            // The SDK would name the column "" (and then drop every other blank one).
            warnings.push(format!(
                "variable `{}` has a blank label; its column uses the variable name",
                v.variable_name
            ));
            v.variable_name.clone()
        } else {
            v.label.clone()
        }
    } else {
        v.variable_name.clone()
    };
    Column {
        name,
        column_type: ColumnType::for_variable_type(&v.variable_type),
        source: ColumnSource::Variable {
            name: v.variable_name.clone(),
            label: v.label.clone(),
            form_id: v.form_id,
            own_form_only: false,
        },
    }
}

/// A usable, unique table name for a form.
pub(crate) fn form_table_name(
    form_id: i64,
    form_key: &str,
    used: &mut HashSet<String>,
    warnings: &mut Vec<String>,
) -> String {
    let key = form_key.trim();
    let mut base = if key.is_empty() {
        warnings.push(format!(
            "form {form_id} has a blank formKey; its table is named `form_{form_id}`"
        ));
        format!("form_{form_id}")
    } else if key.to_ascii_lowercase().starts_with("sqlite_") || key.contains('\0') {
        let fixed = format!("form_{}", key.replace('\0', ""));
        warnings.push(format!(
            "formKey `{key}` (form {form_id}) cannot be a SQLite table name; table named `{fixed}`"
        ));
        fixed
    } else {
        key.to_string()
    };
    if !used.insert(base.to_lowercase()) {
        let mut n = 2u64;
        let renamed = loop {
            let candidate = format!("{base}_{n}");
            if used.insert(candidate.to_lowercase()) {
                break candidate;
            }
            n += 1;
        };
        warnings.push(format!(
            "table for formKey `{key}` (form {form_id}) renamed to `{renamed}`: the name \
             duplicates an earlier table (case-insensitive)"
        ));
        base = renamed;
    }
    base
}

/// A per-form table with only the key columns (a form without variables).
pub(crate) fn key_only_table(form_id: i64, form_key: &str, table: String) -> FormTable {
    FormTable {
        form_id,
        form_key: form_key.to_string(),
        table,
        columns: key_columns(),
    }
}

/// Variables sharing a name (in different forms) read only their own form's records, so
/// the same answer does not show up under every one of their columns.
fn mark_shared_names(columns: &mut [Column]) {
    let mut count: HashMap<String, usize> = HashMap::new();
    for c in columns.iter() {
        if let ColumnSource::Variable { name, .. } = &c.source {
            *count.entry(name.clone()).or_insert(0) += 1;
        }
    }
    for c in columns.iter_mut() {
        if let ColumnSource::Variable {
            name,
            own_form_only,
            ..
        } = &mut c.source
        {
            *own_form_only = count.get(name.as_str()).is_some_and(|n| *n > 1);
        }
    }
}

impl ExportSchema {
    /// Build the layout from the study's variables (server order) and, optionally, its
    /// forms (server order; used for the per-form tables, including forms without
    /// variables). The whitelists select variable columns and forms.
    pub fn build(variables: &[Variable], forms: &[Form], options: &ExportOptions) -> ExportSchema {
        let mut warnings = Vec::new();
        let var_ok = |v: &Variable| {
            options
                .variable_whitelist
                .as_ref()
                .is_none_or(|w| w.contains(&v.variable_name))
        };
        let form_ok = |id: Option<i64>| {
            options
                .form_whitelist
                .as_ref()
                .is_none_or(|w| id.is_some_and(|id| w.contains(&id)))
        };
        if let Some(wl) = &options.variable_whitelist {
            let known: HashSet<&str> = variables.iter().map(|v| v.variable_name.as_str()).collect();
            for name in wl.iter().filter(|n| !known.contains(n.as_str())) {
                warnings.push(format!(
                    "variable_whitelist names `{name}`, which is not a variable of this study"
                ));
            }
        }
        if let Some(wl) = &options.form_whitelist {
            let known: HashSet<i64> = variables
                .iter()
                .filter_map(|v| v.form_id)
                .chain(forms.iter().filter_map(|f| f.form_id))
                .collect();
            for id in wl.iter().filter(|id| !known.contains(id)) {
                warnings.push(format!(
                    "form_whitelist names form {id}, which is not a form of this study"
                ));
            }
        }
        let mut form_warnings = warnings.clone();

        let mut columns = key_columns();
        for v in variables.iter().filter(|v| var_ok(v) && form_ok(v.form_id)) {
            columns.push(variable_column(
                v,
                options.use_labels_as_columns,
                &mut warnings,
            ));
        }
        mark_shared_names(&mut columns);
        dedupe(&mut columns, "", &mut warnings);

        // Per-form tables: the given forms in order, then forms only known from variables
        // (by form id).
        let mut seen_forms = HashSet::new();
        let mut order: Vec<(i64, String)> = forms
            .iter()
            .filter_map(|f| f.form_id.map(|id| (id, f.form_key.clone())))
            .filter(|(id, _)| seen_forms.insert(*id))
            .collect();
        let mut extra: BTreeMap<i64, String> = BTreeMap::new();
        for v in variables {
            match v.form_id {
                Some(id) if !seen_forms.contains(&id) => {
                    extra.entry(id).or_insert_with(|| v.form_key.clone());
                }
                Some(_) => {}
                None if var_ok(v) && options.form_whitelist.is_none() => {
                    form_warnings.push(format!(
                        "variable `{}` has no formId; it is left out of the per-form tables",
                        v.variable_name
                    ));
                }
                None => {}
            }
        }
        order.extend(extra);

        let mut used_tables = HashSet::new();
        let mut form_tables = Vec::new();
        for (form_id, form_key) in order {
            if !form_ok(Some(form_id)) {
                continue;
            }
            let table = form_table_name(form_id, &form_key, &mut used_tables, &mut form_warnings);
            let mut cols = key_columns();
            for v in variables
                .iter()
                .filter(|v| v.form_id == Some(form_id) && var_ok(v))
            {
                cols.push(variable_column(
                    v,
                    options.use_labels_as_columns,
                    &mut form_warnings,
                ));
            }
            dedupe(
                &mut cols,
                &format!(" in table `{table}`"),
                &mut form_warnings,
            );
            form_tables.push(FormTable {
                form_id,
                form_key,
                table,
                columns: cols,
            });
        }

        ExportSchema {
            columns,
            forms: form_tables,
            table_name: options.table_name.clone(),
            variable_whitelist: options.variable_whitelist.clone(),
            form_whitelist: options.form_whitelist.clone(),
            warnings,
            form_warnings,
        }
    }

    /// Wide-table column names, in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }
}
