//! Tests for the export writers: options, schema, every format read back, atomicity,
//! filters and the async driver.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::imednet::model::{Form, Record, Variable};

fn var(name: &str, ty: &str, form_id: i64, form_key: &str, label: &str) -> Variable {
    Variable {
        variable_name: name.into(),
        variable_type: ty.into(),
        form_id: Some(form_id),
        form_key: form_key.into(),
        label: label.into(),
        ..Default::default()
    }
}

fn rec(id: i64, form_id: i64, data: Value) -> Record {
    serde_json::from_value(json!({
        "recordId": id, "formId": form_id, "formKey": format!("F{form_id}"),
        "subjectKey": format!("01-{id:03}"), "visitId": id * 10,
        "recordStatus": "Record Complete", "deleted": false,
        "dateCreated": "2025-06-05 21:12:09", "dateModified": "2025-06-06 08:00:00",
        "recordData": data,
    }))
    .unwrap()
}

/// A small study: form 1 (DM) with TEXT/NUMBER/CHECKBOX/DATE, form 2 (AE) with TEXT/CALCULATED.
fn study() -> (Vec<Variable>, Vec<Record>) {
    let vars = vec![
        var("DM_text", "TEXT", 1, "DM", "Initials"),
        var("DM_num", "NUMBER", 1, "DM", "Weight"),
        var("DM_chk", "CHECKBOX", 1, "DM", "Consent"),
        var("DM_date", "DATE", 1, "DM", "Visit date"),
        var("AE_text", "TEXT", 2, "AE", "Term"),
        var("AE_calc", "CALCULATED", 2, "AE", "Score"),
    ];
    let recs = vec![
        rec(
            1,
            1,
            json!({"DM_text": "=1+1", "DM_num": 72.5, "DM_chk": true, "DM_date": "2025-01-02",
                   "EXTRA": "dropped"}),
        ),
        rec(
            2,
            1,
            json!({"DM_text": "  -5 units", "DM_num": "", "DM_chk": false, "DM_date": ""}),
        ),
        rec(3, 2, json!({"AE_text": "@home", "AE_calc": 12})),
        rec(
            4,
            2,
            json!({"AE_text": "plain, \"quoted\"\nline", "AE_calc": "n/a"}),
        ),
    ];
    (vars, recs)
}

fn schema_of(vars: &[Variable], opts: &ExportOptions) -> ExportSchema {
    ExportSchema::build(vars, &[], opts)
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Write `recs` with a fresh writer and finish.
fn export(
    format: ExportFormat,
    dest: &Path,
    schema: &ExportSchema,
    recs: &[Record],
) -> ExportResult {
    let mut w = open_writer(format, dest, schema).unwrap();
    for r in recs {
        w.write(r).unwrap();
    }
    w.finish().unwrap()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sha_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// --- formats and options --------------------------------------------------------------

#[test]
fn format_names_parse() {
    let cases = [
        ("csv", ExportFormat::Csv),
        ("json", ExportFormat::Json),
        ("parquet", ExportFormat::Parquet),
        ("xlsx", ExportFormat::Xlsx),
        ("excel", ExportFormat::Xlsx),
        ("sqlite", ExportFormat::Sqlite),
        ("sql", ExportFormat::Sqlite),
        ("sqlite_by_form", ExportFormat::SqliteByForm),
        ("sql_by_form", ExportFormat::SqliteByForm),
        ("long_sqlite", ExportFormat::LongSqlite),
        ("long_sql", ExportFormat::LongSqlite),
        ("export_to_csv", ExportFormat::Csv),
        ("export_to_excel", ExportFormat::Xlsx),
        ("export_to_json", ExportFormat::Json),
        ("export_to_parquet", ExportFormat::Parquet),
        ("export_to_sql", ExportFormat::Sqlite),
        ("export_to_sql_by_form", ExportFormat::SqliteByForm),
        ("export_to_long_sql", ExportFormat::LongSqlite),
        ("CSV", ExportFormat::Csv),
    ];
    for (name, want) in cases {
        assert_eq!(ExportFormat::from_str(name).unwrap(), want, "{name}");
    }
    for f in ExportFormat::ALL {
        assert_eq!(ExportFormat::from_str(f.as_str()).unwrap(), f);
        assert_eq!(ExportFormat::from_str(f.sdk_function()).unwrap(), f);
    }
    let err = ExportFormat::from_str("export_to_xml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`export_to_xml`"), "{err}");
    for name in FORMAT_NAMES {
        assert!(err.contains(name), "{err} lacks {name}");
    }
}

#[test]
fn options_defaults_and_values() {
    let d = ExportOptions::from_json(&Value::Null).unwrap();
    assert_eq!(d, ExportOptions::default());
    assert_eq!(d.table_name, "records");
    assert!(!d.include_deleted);
    assert_eq!(ExportOptions::from_json(&json!({})).unwrap(), d);
    // The reference DAG's pandas kwarg, and nulls meaning "default".
    assert_eq!(
        ExportOptions::from_json(&json!({"index": false, "table_name": null})).unwrap(),
        d
    );
    let o = ExportOptions::from_json(&json!({
        "use_labels_as_columns": true, "variable_whitelist": ["A", "B"], "form_whitelist": [1, 3],
        "include_deleted": true, "incremental": true, "table_name": "study 1"
    }))
    .unwrap();
    assert!(o.use_labels_as_columns && o.include_deleted && o.incremental);
    assert_eq!(o.variable_whitelist, Some(vec!["A".into(), "B".into()]));
    assert_eq!(o.form_whitelist, Some(vec![1, 3]));
    assert_eq!(o.table_name, "study 1");
}

#[test]
fn options_errors_name_the_option() {
    let err = |v: Value| ExportOptions::from_json(&v).unwrap_err();
    let e = err(json!({"foo": 1}));
    assert!(e.contains("unknown export option `foo`"), "{e}");
    for k in KNOWN_OPTIONS {
        assert!(e.contains(k), "{e}");
    }
    let e = err(json!({"index": true}));
    assert!(e.contains("`index`") && e.contains("false"), "{e}");
    let e = err(json!({"use_labels_as_columns": "yes"}));
    assert!(
        e.contains("`use_labels_as_columns`") && e.contains("boolean") && e.contains("a string"),
        "{e}"
    );
    let e = err(json!({"include_deleted": 1}));
    assert!(
        e.contains("`include_deleted`") && e.contains("boolean"),
        "{e}"
    );
    let e = err(json!({"variable_whitelist": "AGE"}));
    assert!(
        e.contains("`variable_whitelist`") && e.contains("list"),
        "{e}"
    );
    let e = err(json!({"variable_whitelist": ["AGE", 3]}));
    assert!(
        e.contains("`variable_whitelist`") && e.contains("item 2"),
        "{e}"
    );
    let e = err(json!({"variable_whitelist": []}));
    assert!(
        e.contains("`variable_whitelist`") && e.contains("empty"),
        "{e}"
    );
    let e = err(json!({"form_whitelist": [1, "2"]}));
    assert!(
        e.contains("`form_whitelist`") && e.contains("item 2"),
        "{e}"
    );
    let e = err(json!({"form_whitelist": [1.5]}));
    assert!(
        e.contains("`form_whitelist`") && e.contains("not an integer"),
        "{e}"
    );
    let e = err(json!({"table_name": 5}));
    assert!(e.contains("`table_name`") && e.contains("string"), "{e}");
    let e = err(json!({"table_name": "  "}));
    assert!(e.contains("`table_name`") && e.contains("blank"), "{e}");
    let e = err(json!({"table_name": "sqlite_master"}));
    assert!(e.contains("`table_name`") && e.contains("reserved"), "{e}");
    let e = err(json!([1]));
    assert!(e.contains("JSON object"), "{e}");
}

// --- schema ------------------------------------------------------------------------------

#[test]
fn schema_columns_in_order() {
    let (vars, _) = study();
    let s = schema_of(&vars, &ExportOptions::default());
    assert_eq!(
        s.column_names(),
        [
            "recordId",
            "subjectKey",
            "visitId",
            "formId",
            "recordStatus",
            "dateCreated",
            "DM_text",
            "DM_num",
            "DM_chk",
            "DM_date",
            "AE_text",
            "AE_calc"
        ]
    );
    assert!(s.warnings.is_empty());
    let types: Vec<ColumnType> = s.columns.iter().map(|c| c.column_type).collect();
    use ColumnType::*;
    assert_eq!(
        types,
        [
            Integer, Text, Integer, Integer, Text, Text, Text, Float, Boolean, Text, Text, Float
        ]
    );
    let labels = schema_of(
        &vars,
        &ExportOptions {
            use_labels_as_columns: true,
            ..Default::default()
        },
    );
    assert_eq!(
        &labels.column_names()[6..],
        [
            "Initials",
            "Weight",
            "Consent",
            "Visit date",
            "Term",
            "Score"
        ]
    );
}

#[test]
fn label_collisions_are_suffixed_and_reported() {
    let vars = vec![
        var("A1", "TEXT", 1, "DM", "Age"),
        var("A2", "NUMBER", 1, "DM", "age"),
        var("A3", "TEXT", 2, "AE", "AGE"),
        var("A4", "TEXT", 2, "AE", "Age_2"),
        var("A5", "TEXT", 2, "AE", "RecordID"),
        var("A6", "TEXT", 2, "AE", "  "),
    ];
    let s = schema_of(
        &vars,
        &ExportOptions {
            use_labels_as_columns: true,
            ..Default::default()
        },
    );
    // `Age_2` is itself a wanted label, so the duplicates skip it.
    assert_eq!(
        &s.column_names()[6..],
        ["Age", "age_3", "AGE_4", "Age_2", "RecordID_2", "A6"]
    );
    assert_eq!(s.warnings.len(), 4, "{:?}", s.warnings);
    assert!(s.warnings[0].contains("variable `A6`") && s.warnings[0].contains("blank label"));
    let w = &s.warnings[1];
    assert!(
        w.contains("`age`") && w.contains("variable `A2`") && w.contains("label `age`"),
        "{w}"
    );
    assert!(w.contains("renamed to `age_3`"), "{w}");
    assert!(s.warnings[2].contains("`AGE_4`"));
    assert!(s.warnings[3].contains("variable `A5`") && s.warnings[3].contains("`RecordID_2`"));
    // Variable names colliding case-insensitively are handled the same way.
    let vars = vec![var("x", "TEXT", 1, "DM", ""), var("X", "TEXT", 1, "DM", "")];
    let s = schema_of(&vars, &ExportOptions::default());
    assert_eq!(&s.column_names()[6..], ["x", "X_2"]);
    assert_eq!(s.warnings.len(), 1);
}

#[test]
fn whitelists_select_columns_and_forms() {
    let (vars, _) = study();
    let s = schema_of(
        &vars,
        &ExportOptions {
            variable_whitelist: Some(vec!["AE_calc".into(), "DM_num".into(), "NOPE".into()]),
            ..Default::default()
        },
    );
    // Server order, not whitelist order.
    assert_eq!(&s.column_names()[6..], ["DM_num", "AE_calc"]);
    assert!(
        s.warnings.iter().any(|w| w.contains("`NOPE`")),
        "{:?}",
        s.warnings
    );
    let s = schema_of(
        &vars,
        &ExportOptions {
            form_whitelist: Some(vec![2, 9]),
            ..Default::default()
        },
    );
    assert_eq!(&s.column_names()[6..], ["AE_text", "AE_calc"]);
    assert_eq!(s.forms.len(), 1);
    assert_eq!(s.forms[0].table, "AE");
    assert!(s.warnings.iter().any(|w| w.contains("form 9")));
}

#[test]
fn form_tables_follow_forms_and_dedupe_names() {
    let mut vars = study().0;
    vars.push(var("X_text", "TEXT", 3, "dm", "x"));
    vars.push(var("Y_text", "TEXT", 4, "", "y"));
    let forms: Vec<Form> = [(2, "AE"), (1, "DM"), (5, "EMPTY")]
        .iter()
        .map(|(id, key)| Form {
            form_id: Some(*id),
            form_key: (*key).into(),
            ..Default::default()
        })
        .collect();
    let s = ExportSchema::build(&vars, &forms, &ExportOptions::default());
    let names: Vec<&str> = s.forms.iter().map(|f| f.table.as_str()).collect();
    assert_eq!(names, ["AE", "DM", "EMPTY", "dm_2", "form_4"]);
    let ae: Vec<&str> = s.forms[0].columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(&ae[6..], ["AE_text", "AE_calc"]);
    assert_eq!(s.forms[2].columns.len(), 6);
    assert!(s.form_warnings.iter().any(|w| w.contains("`dm_2`")));
    assert!(s.form_warnings.iter().any(|w| w.contains("form_4")));
}

// --- formats read back --------------------------------------------------------------------

#[test]
fn csv_matches_sdk_rendering() {
    let (vars, recs) = study();
    let dir = tmpdir();
    let dest = dir.path().join("out.csv");
    let s = schema_of(&vars, &ExportOptions::default());
    let res = export(ExportFormat::Csv, &dest, &s, &recs);
    assert_eq!((res.rows, res.columns), (4, 12));
    let mut rd = csv::Reader::from_path(&dest).unwrap();
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, s.column_names());
    let rows: Vec<Vec<String>> = rd
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "1",
            "01-001",
            "10",
            "1",
            "Record Complete",
            "2025-06-05T21:12:09",
            "'=1+1",
            "72.5",
            "True",
            "2025-01-02",
            "",
            ""
        ]
    );
    assert_eq!(rows[1][6..10], ["'  -5 units", "", "False", ""]);
    assert_eq!(rows[2][10..], ["'@home", "12"]);
    assert_eq!(rows[3][10..], ["plain, \"quoted\"\nline", "n/a"]);
    assert!(!std::fs::read_to_string(&dest).unwrap().contains("dropped"));
}

#[test]
fn json_rows_keep_types_and_order() {
    let (vars, recs) = study();
    let dir = tmpdir();
    let dest = dir.path().join("nested/deeper/out.json");
    let s = schema_of(&vars, &ExportOptions::default());
    let res = export(ExportFormat::Json, &dest, &s, &recs);
    assert_eq!(res.rows, 4);
    let text = std::fs::read_to_string(&dest).unwrap();
    let data: Value = serde_json::from_str(&text).unwrap();
    let rows = data.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[0],
        json!({"recordId": 1, "subjectKey": "01-001", "visitId": 10, "formId": 1,
               "recordStatus": "Record Complete", "dateCreated": "2025-06-05T21:12:09",
               "DM_text": "=1+1", "DM_num": 72.5, "DM_chk": true, "DM_date": "2025-01-02",
               "AE_text": null, "AE_calc": null})
    );
    assert_eq!(rows[1]["DM_num"], "");
    assert_eq!(rows[3]["AE_calc"], "n/a");
    // Keys are written in column order.
    let first = text.find("\"recordId\"").unwrap();
    let last = text.find("\"AE_calc\"").unwrap();
    assert!(first < text.find("\"DM_text\"").unwrap() && text.find("\"DM_text\"").unwrap() < last);
    // Empty export: a valid empty array.
    let empty = dir.path().join("empty.json");
    export(ExportFormat::Json, &empty, &s, &[]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&empty).unwrap()).unwrap();
    assert_eq!(v, json!([]));
}

#[test]
fn parquet_reads_back_with_typed_columns() {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_schema::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let (vars, recs) = study();
    let dir = tmpdir();
    let dest = dir.path().join("out.parquet");
    let s = schema_of(&vars, &ExportOptions::default());
    let res = export(ExportFormat::Parquet, &dest, &s, &recs);
    assert_eq!(res.rows, 4);
    // "n/a" in a CALCULATED (Float64) column becomes null, reported once.
    assert!(
        res.warnings
            .iter()
            .any(|w| w.contains("`AE_calc`") && w.contains("1 value")),
        "{:?}",
        res.warnings
    );
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&dest).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
    assert_eq!(
        types,
        [
            &DataType::Int64,
            &DataType::Utf8,
            &DataType::Int64,
            &DataType::Int64,
            &DataType::Utf8,
            &DataType::Utf8,
            &DataType::Utf8,
            &DataType::Float64,
            &DataType::Boolean,
            &DataType::Utf8,
            &DataType::Utf8,
            &DataType::Float64
        ]
    );
    let batches: Vec<_> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(
        b.column(0).as_primitive::<Int64Type>().values(),
        &[1, 2, 3, 4]
    );
    let num = b.column(7).as_primitive::<Float64Type>();
    assert_eq!(num.value(0), 72.5);
    assert!(num.is_null(1) && num.is_null(2)); // "" and absent
    let chk = b.column(8).as_boolean();
    assert!(chk.value(0) && !chk.value(1) && chk.is_null(2));
    let text = b.column(6).as_string::<i32>();
    assert_eq!(text.value(0), "=1+1"); // no formula guard outside CSV/Excel
    assert_eq!(
        b.column(5).as_string::<i32>().value(0),
        "2025-06-05T21:12:09"
    );
    let calc = b.column(11).as_primitive::<Float64Type>();
    assert_eq!(calc.value(2), 12.0);
    assert!(calc.is_null(3));
}

#[test]
fn parquet_groups_spilled_to_disk_read_back_whole_and_in_order() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use write_parquet::ParquetWriter;
    type Row = (i64, f64, String, String);
    // Every row group's rows as (recordId, V, T, C), group by group.
    let read = |path: &Path| -> Vec<Vec<Row>> {
        let file = std::fs::File::open(path).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let groups = builder.metadata().num_row_groups();
        (0..groups)
            .map(|g| {
                let file = std::fs::File::open(path).unwrap();
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .with_row_groups(vec![g])
                    .build()
                    .unwrap();
                let mut rows = Vec::new();
                for batch in reader {
                    let b = batch.unwrap();
                    let id = b.column_by_name("recordId").unwrap();
                    let id = id.as_primitive::<Int64Type>();
                    let v = b.column_by_name("V").unwrap().as_primitive::<Float64Type>();
                    let t = b.column_by_name("T").unwrap().as_string::<i32>();
                    let c = b.column_by_name("C").unwrap().as_string::<i32>();
                    for i in 0..b.num_rows() {
                        let (t, c) = (t.value(i).to_string(), c.value(i).to_string());
                        rows.push((id.value(i), v.value(i), t, c));
                    }
                }
                rows
            })
            .collect()
    };
    let vars = vec![
        var("V", "NUMBER", 1, "DM", "v"),
        var("T", "TEXT", 1, "DM", "t"),
        var("C", "TEXT", 1, "DM", "c"),
    ];
    // T is distinct per row (its dictionary overflows to plain pages); C has three answers,
    // so its dictionary page, produced last, must still come first in every chunk.
    let expected: Vec<Row> = (0..20_000)
        .map(|i| {
            let c = ["yes", "no", "unknown"][i as usize % 3];
            (i, i as f64 / 4.0, format!("answer {i}"), c.to_string())
        })
        .collect();
    let recs: Vec<Record> = expected
        .iter()
        .map(|(i, v, t, c)| rec(*i, 1, json!({ "V": v, "T": t, "C": c })))
        .collect();
    let s = schema_of(&vars, &ExportOptions::default());
    let dir = tmpdir();

    // Under the default caps a study this size is a single group, not one per batch.
    let one = dir.path().join("one.parquet");
    assert_eq!(export(ExportFormat::Parquet, &one, &s, &recs).rows, 20_000);
    assert_eq!(read(&one), std::slice::from_ref(&expected));

    // A small cap makes several groups, each spilled and spliced back, losing nothing.
    let many = dir.path().join("many.parquet");
    let mut w = ParquetWriter::open_with(&many, &s, 32 << 10).unwrap();
    for r in &recs {
        w.write(r).unwrap();
    }
    assert_eq!(Box::new(w).finish().unwrap().rows, 20_000);
    let groups = read(&many);
    assert!(groups.len() > 2, "{} groups", groups.len());
    assert_eq!(groups.concat(), expected);
    // The spill file had no name: only the two exports are left.
    assert_eq!(dir_entries(dir.path()), ["many.parquet", "one.parquet"]);
}

#[test]
fn sqlite_wide_table_reads_back() {
    let (vars, recs) = study();
    let dir = tmpdir();
    let dest = dir.path().join("out.db");
    let s = schema_of(&vars, &ExportOptions::default());
    let res = export(ExportFormat::Sqlite, &dest, &s, &recs);
    assert_eq!(res.tables, ["records"]);
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let decl: Vec<(String, String)> = conn
        .prepare("PRAGMA table_info(records)")
        .unwrap()
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(decl[0], ("recordId".into(), "BIGINT".into()));
    assert_eq!(decl[7], ("DM_num".into(), "FLOAT".into()));
    assert_eq!(decl[8], ("DM_chk".into(), "BOOLEAN".into()));
    assert_eq!(decl[6], ("DM_text".into(), "TEXT".into()));
    let n: i64 = conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4);
    let row: (String, f64, i64, Option<f64>) = conn
        .query_row(
            "SELECT DM_text, DM_num, DM_chk, AE_calc FROM records WHERE recordId = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(row, ("=1+1".into(), 72.5, 1, None));
    // "" in a FLOAT column is NULL; non-numeric text survives (SQLite typing is dynamic).
    let blank: Option<f64> = conn
        .query_row("SELECT DM_num FROM records WHERE recordId = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(blank, None);
    let na: String = conn
        .query_row("SELECT AE_calc FROM records WHERE recordId = 4", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(na, "n/a");
    let created: String = conn
        .query_row(
            "SELECT dateCreated FROM records WHERE recordId = 3",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(created, "2025-06-05T21:12:09");
}

#[test]
fn sqlite_splits_past_2000_columns_with_key_columns_in_each_part() {
    let vars: Vec<Variable> = (0..2500)
        .map(|i| var(&format!("V{i}"), "TEXT", 1, "DM", ""))
        .collect();
    let data: serde_json::Map<String, Value> = (0..2500)
        .map(|i| (format!("V{i}"), json!(format!("v{i}"))))
        .collect();
    let recs = vec![
        rec(1, 1, Value::Object(data.clone())),
        rec(2, 1, Value::Object(data)),
    ];
    let dir = tmpdir();
    let dest = dir.path().join("wide.db");
    let opts = ExportOptions {
        table_name: "study".into(),
        ..Default::default()
    };
    let res = export(ExportFormat::Sqlite, &dest, &schema_of(&vars, &opts), &recs);
    assert_eq!(res.tables, ["study_part1", "study_part2"]);
    assert_eq!(res.columns, 2506);
    assert!(res.warnings.iter().any(|w| w.contains("2506 columns")));
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let cols = |t: &str| -> Vec<String> {
        conn.prepare(&format!("PRAGMA table_info({t})"))
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let p1 = cols("study_part1");
    let p2 = cols("study_part2");
    assert_eq!(p1.len(), 2000);
    assert_eq!(p2.len(), 6 + 2500 - 1994);
    assert_eq!(&p1[..6], KEY_COLUMNS);
    assert_eq!(&p2[..6], KEY_COLUMNS);
    assert_eq!(p1[6], "V0");
    assert_eq!(p2[6], "V1994");
    let v: String = conn
        .query_row(
            "SELECT V2499 FROM study_part2 WHERE recordId = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, "v2499");
}

#[test]
fn sqlite_by_form_tables() {
    let (vars, mut recs) = study();
    recs.push(rec(5, 7, json!({"Z": 1}))); // a form the schema does not know
    let dir = tmpdir();
    let dest = dir.path().join("forms.db");
    let s = schema_of(&vars, &ExportOptions::default());
    let res = export(ExportFormat::SqliteByForm, &dest, &s, &recs);
    assert_eq!(res.tables, ["DM", "AE", "F7"]);
    assert_eq!(res.rows, 5);
    assert!(
        res.warnings.iter().any(|w| w.contains("form 7")),
        "{:?}",
        res.warnings
    );
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let cols = |t: &str| -> Vec<String> {
        conn.prepare(&format!("PRAGMA table_info(\"{t}\")"))
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(&cols("DM")[6..], ["DM_text", "DM_num", "DM_chk", "DM_date"]);
    assert_eq!(&cols("AE")[6..], ["AE_text", "AE_calc"]);
    assert_eq!(cols("F7").len(), 6);
    let count = |t: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!((count("DM"), count("AE"), count("F7")), (2, 2, 1));
}

#[test]
fn long_format_rows() {
    let (vars, recs) = study();
    let dir = tmpdir();
    let dest = dir.path().join("long.db");
    let s = schema_of(&vars, &ExportOptions::default());
    let res = export(ExportFormat::LongSqlite, &dest, &s, &recs);
    // Every recordData entry, including keys that are not variables (as the SDK).
    assert_eq!(res.rows, 5 + 4 + 2 + 2);
    assert_eq!(res.columns, 5);
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let cols: Vec<(String, String)> = conn
        .prepare("PRAGMA table_info(records)")
        .unwrap()
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "record_id",
            "form_id",
            "variable_name",
            "value",
            "timestamp"
        ]
    );
    let row: (i64, i64, String, String) = conn
        .query_row(
            "SELECT record_id, form_id, value, timestamp FROM records \
             WHERE variable_name = 'DM_num' AND record_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    // TEXT affinity stores numbers as text, as pandas' object column does.
    assert_eq!(
        row,
        (1, 1, "72.5".into(), "2025-06-06 08:00:00.000000".into())
    );
    let chk: String = conn
        .query_row(
            "SELECT value FROM records WHERE variable_name = 'DM_chk' AND record_id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(chk, "1");
    // The variable whitelist limits the long rows too.
    let opts = ExportOptions {
        variable_whitelist: Some(vec!["AE_calc".into()]),
        ..Default::default()
    };
    let dest2 = dir.path().join("long2.db");
    let res = export(
        ExportFormat::LongSqlite,
        &dest2,
        &schema_of(&vars, &opts),
        &recs,
    );
    assert_eq!(res.rows, 2);
}

#[test]
fn xlsx_opens_and_refuses_too_many_columns() {
    let (vars, recs) = study();
    let dir = tmpdir();
    let dest = dir.path().join("out.xlsx");
    let s = schema_of(&vars, &ExportOptions::default());
    let res = export(ExportFormat::Xlsx, &dest, &s, &recs);
    assert_eq!(res.rows, 4);
    let bytes = std::fs::read(&dest).unwrap();
    assert!(bytes.len() > 1000);
    assert_eq!(&bytes[..2], b"PK");
    assert_eq!(dir_entries(dir.path()), ["out.xlsx"]);
    let wide: Vec<Variable> = (0..XLSX_MAX_COLUMNS)
        .map(|i| var(&format!("V{i}"), "TEXT", 1, "DM", ""))
        .collect();
    let err = open_writer(
        ExportFormat::Xlsx,
        &dir.path().join("wide.xlsx"),
        &schema_of(&wide, &ExportOptions::default()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("16384 columns") && err.contains("wide.xlsx"),
        "{err}"
    );
}

// --- files: atomicity, cleanup, digest -------------------------------------------------------

#[test]
fn dropped_writers_remove_their_temp_files() {
    let (vars, recs) = study();
    let s = schema_of(&vars, &ExportOptions::default());
    for format in ExportFormat::ALL {
        let dir = tmpdir();
        let dest = dir.path().join(format!("out.{}", format.extension()));
        let mut w = open_writer(format, &dest, &s).unwrap();
        w.write(&recs[0]).unwrap();
        let during = dir_entries(dir.path());
        assert!(
            during
                .iter()
                .any(|n| n.starts_with(&format!(".out.{}.tmp-", format.extension()))),
            "{format}: {during:?}"
        );
        drop(w);
        assert_eq!(dir_entries(dir.path()), Vec::<String>::new(), "{format}");
    }
}

#[test]
fn finish_replaces_destination_atomically_with_matching_digest() {
    let (vars, recs) = study();
    let s = schema_of(&vars, &ExportOptions::default());
    for format in ExportFormat::ALL {
        let dir = tmpdir();
        let dest = dir.path().join("export.out");
        std::fs::write(&dest, b"old content").unwrap();
        let mut w = open_writer(format, &dest, &s).unwrap();
        for r in &recs {
            w.write(r).unwrap();
        }
        // Until finish, readers still see the old file.
        assert_eq!(std::fs::read(&dest).unwrap(), b"old content");
        let res = w.finish().unwrap();
        assert_eq!(dir_entries(dir.path()), ["export.out"], "{format}");
        assert_eq!(res.path, dest.display().to_string());
        assert_eq!(
            res.bytes,
            std::fs::metadata(&dest).unwrap().len(),
            "{format}"
        );
        assert_eq!(res.sha256, sha_hex(&dest), "{format}");
        assert_eq!(res.sha256.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{format}");
        }
    }
}

#[test]
fn bad_destinations_are_named() {
    let dir = tmpdir();
    let s = schema_of(&study().0, &ExportOptions::default());
    let err = open_writer(ExportFormat::Csv, dir.path(), &s)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("is a directory") && err.contains(&dir.path().display().to_string()));
    // A file where the directory should be.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = open_writer(ExportFormat::Csv, &blocker.join("out.csv"), &s)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("create directory"), "{err}");
}

// --- record filter --------------------------------------------------------------------------

fn dated(id: i64, form: i64, modified: &str, deleted: bool) -> Record {
    let mut r = rec(id, form, json!({"DM_text": "x"}));
    r.date_modified = Some(modified.into());
    r.deleted = deleted;
    r
}

#[test]
fn filter_deleted_forms_and_variables() {
    let recs = [
        dated(1, 1, "2025-01-01 00:00:00", false),
        dated(2, 1, "2025-01-01 00:00:00", true),
        dated(3, 2, "2025-01-01 00:00:00", false),
    ];
    let kept = |opts: ExportOptions| -> Vec<i64> {
        let mut f = RecordFilter::new(&opts, None).unwrap();
        recs.iter()
            .filter(|r| f.keep(r))
            .map(|r| r.record_id.unwrap())
            .collect()
    };
    assert_eq!(kept(ExportOptions::default()), [1, 3]);
    assert_eq!(
        kept(ExportOptions {
            include_deleted: true,
            ..Default::default()
        }),
        [1, 2, 3]
    );
    assert_eq!(
        kept(ExportOptions {
            form_whitelist: Some(vec![2]),
            ..Default::default()
        }),
        [3]
    );
    assert_eq!(
        kept(ExportOptions {
            variable_whitelist: Some(vec!["OTHER".into()]),
            ..Default::default()
        }),
        Vec::<i64>::new()
    );
    let mut all = RecordFilter::keep_all();
    assert!(recs.iter().all(|r| all.keep(r)));
}

#[test]
fn incremental_filter_compares_instants() {
    let opts = ExportOptions {
        incremental: true,
        ..Default::default()
    };
    let recs = [
        dated(1, 1, "2025-06-05 10:00:00", false),
        // Same instant as the watermark, written with an offset: not newer.
        dated(2, 1, "2025-06-05T12:00:00+02:00", false),
        dated(3, 1, "2025-06-05T10:00:00.5Z", false),
        // Lexically smaller than the watermark text but later in time.
        dated(4, 1, "2025-06-05T09:00:00-05:00", false),
        dated(5, 1, "not a date", false),
    ];
    let mut f = RecordFilter::new(&opts, Some("2025-06-05 10:00:00")).unwrap();
    let kept: Vec<i64> = recs
        .iter()
        .filter(|r| f.keep(r))
        .map(|r| r.record_id.unwrap())
        .collect();
    assert_eq!(kept, [3, 4, 5]);
    assert_eq!(
        f.max_date_modified().as_deref(),
        Some("2025-06-05T09:00:00-05:00")
    );
    assert_eq!(f.stats().skipped_not_modified, 2);
    assert_eq!(f.stats().undated, 1);
    // Nothing newer: the previous watermark stays.
    let mut f = RecordFilter::new(&opts, Some("2030-01-01T00:00:00Z")).unwrap();
    assert!(!f.keep(&recs[0]));
    assert_eq!(
        f.max_date_modified().as_deref(),
        Some("2030-01-01T00:00:00Z")
    );
    // Not incremental: the watermark is ignored, the newest date is still reported.
    let mut f = RecordFilter::new(&ExportOptions::default(), Some("2030-01-01")).unwrap();
    assert!(recs.iter().all(|r| f.keep(r)));
    assert_eq!(
        f.max_date_modified().as_deref(),
        Some("2025-06-05T09:00:00-05:00")
    );
    let err = RecordFilter::new(&opts, Some("last tuesday"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`last tuesday`"), "{err}");
}

// --- async driver ---------------------------------------------------------------------------

#[tokio::test]
async fn export_stream_writes_filtered_records() {
    let (vars, mut recs) = study();
    recs[1].deleted = true;
    let many: Vec<Record> = (0..1000)
        .map(|i| {
            let mut r = recs[i % recs.len()].clone();
            r.record_id = Some(i as i64 + 1);
            r
        })
        .collect();
    let dir = tmpdir();
    let dest = dir.path().join("s.csv");
    let s = schema_of(&vars, &ExportOptions::default());
    let filter = RecordFilter::new(&ExportOptions::default(), None).unwrap();
    let stream = futures::stream::iter(many.into_iter().map(Ok::<_, String>));
    let out = export_stream(ExportFormat::Csv, dest.clone(), s, filter, stream)
        .await
        .unwrap();
    assert_eq!(out.result.rows, 750);
    assert_eq!(out.stats.skipped_deleted, 250);
    assert_eq!(
        out.max_date_modified.as_deref(),
        Some("2025-06-06 08:00:00")
    );
    assert_eq!(
        csv::Reader::from_path(&dest).unwrap().records().count(),
        750
    );
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["rows"], 750);
    assert_eq!(json["max_date_modified"], "2025-06-06 08:00:00");
}

#[tokio::test]
async fn export_stream_source_error_leaves_nothing() {
    let (vars, recs) = study();
    let dir = tmpdir();
    let dest = dir.path().join("s.parquet");
    let items: Vec<Result<Record, String>> = recs
        .iter()
        .cloned()
        .map(Ok)
        .chain([Err("page 3: HTTP 500".to_string())])
        .collect();
    let err = export_stream(
        ExportFormat::Parquet,
        dest.clone(),
        schema_of(&vars, &ExportOptions::default()),
        RecordFilter::keep_all(),
        futures::stream::iter(items),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ExportError::Source(ref m) if m.contains("HTTP 500")),
        "{err}"
    );
    assert_eq!(dir_entries(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn export_stream_writer_error_is_reported() {
    let (vars, recs) = study();
    let dir = tmpdir();
    let err = export_stream(
        ExportFormat::Json,
        dir.path().to_path_buf(),
        schema_of(&vars, &ExportOptions::default()),
        RecordFilter::keep_all(),
        futures::stream::iter(recs.into_iter().map(Ok::<_, String>)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ExportError::InvalidDestination { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_export_stream_removes_temp_file() {
    let (vars, recs) = study();
    let dir = tmpdir();
    let dest: PathBuf = dir.path().join("c.sqlite");
    // Enough records to fill a batch, then a stream that never ends.
    let first: Vec<Result<Record, String>> = (0..600).map(|i| Ok(recs[i % 4].clone())).collect();
    let stream =
        futures::StreamExt::chain(futures::stream::iter(first), futures::stream::pending());
    let fut = export_stream(
        ExportFormat::Sqlite,
        dest.clone(),
        schema_of(&vars, &ExportOptions::default()),
        RecordFilter::keep_all(),
        stream,
    );
    let timed = tokio::time::timeout(std::time::Duration::from_millis(300), fut).await;
    assert!(
        timed.is_err(),
        "stream never ends, so the export cannot finish"
    );
    // The future is dropped: the writer thread sees the closed channel and cleans up.
    let mut left = dir_entries(dir.path());
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        left = dir_entries(dir.path());
    }
    assert_eq!(left, Vec::<String>::new());
    assert!(!dest.exists());
}

#[test]
fn odd_records_never_panic() {
    // Missing ids, dates that are not ISO, nested answers, huge numbers.
    let vars = vec![
        var("N", "NUMBER", 1, "DM", ""),
        var("C", "CHECKBOX", 1, "DM", ""),
        var("T", "TEXT", 1, "DM", ""),
    ];
    let r: Record = serde_json::from_value(json!({
        "recordId": null, "dateCreated": "05/06/2025", "dateModified": 1717171717,
        "recordData": {"N": [1, 2], "C": "maybe", "T": {"a": 1}}
    }))
    .unwrap();
    let r2: Record = serde_json::from_value(json!({
        "recordData": {"N": 18446744073709551615u64, "C": 1, "T": 1e300}
    }))
    .unwrap();
    let s = schema_of(&vars, &ExportOptions::default());
    for format in ExportFormat::ALL {
        let dir = tmpdir();
        let res = export(format, &dir.path().join("x"), &s, &[r.clone(), r2.clone()]);
        assert!(res.rows >= 2, "{format}");
        if format != ExportFormat::LongSqlite {
            assert!(
                res.warnings.iter().any(|w| w.contains("05/06/2025")),
                "{format}: {:?}",
                res.warnings
            );
        }
    }
    let dir = tmpdir();
    let dest = dir.path().join("x.csv");
    export(ExportFormat::Csv, &dest, &s, &[r, r2]);
    let text = std::fs::read_to_string(&dest).unwrap();
    assert!(
        text.contains("0,,0,0,,05/06/2025,\"[1,2]\",maybe,\"{\"\"a\"\":1}\""),
        "{text}"
    );
    assert!(text.contains("18446744073709551615,1,1e+300"), "{text}");
}

#[test]
fn shared_variable_names_read_their_own_form() {
    // The same variable name in two forms: two columns, each filled from its own form only.
    let vars = vec![
        var("DATE", "DATE", 1, "DM", "Date"),
        var("DATE", "DATE", 2, "AE", "Date"),
    ];
    let recs = vec![
        rec(1, 1, json!({"DATE": "2025-01-01"})),
        rec(2, 2, json!({"DATE": "2025-02-02"})),
    ];
    let s = schema_of(&vars, &ExportOptions::default());
    assert_eq!(&s.column_names()[6..], ["DATE", "DATE_2"]);
    let dir = tmpdir();
    let dest = dir.path().join("o.json");
    export(ExportFormat::Json, &dest, &s, &recs);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&dest).unwrap()).unwrap();
    assert_eq!(v[0]["DATE"], "2025-01-01");
    assert_eq!(v[0]["DATE_2"], Value::Null);
    assert_eq!(v[1]["DATE"], Value::Null);
    assert_eq!(v[1]["DATE_2"], "2025-02-02");
}

#[test]
fn by_form_respects_form_whitelist_without_filter() {
    let (vars, recs) = study();
    let opts = ExportOptions {
        form_whitelist: Some(vec![2]),
        ..Default::default()
    };
    let dir = tmpdir();
    let dest = dir.path().join("f.db");
    let res = export(
        ExportFormat::SqliteByForm,
        &dest,
        &schema_of(&vars, &opts),
        &recs,
    );
    assert_eq!(res.tables, ["AE"]);
    assert_eq!(res.rows, 2);
}

#[test]
fn export_stream_future_is_send() {
    // The server spawns exports on a multi-threaded runtime: the future must be `Send`.
    fn assert_send<T: Send>(_: &T) {}
    let stream = futures::stream::iter(Vec::<Result<Record, String>>::new());
    let fut = export_stream(
        ExportFormat::Csv,
        PathBuf::from("/nonexistent/x.csv"),
        schema_of(&[], &ExportOptions::default()),
        RecordFilter::keep_all(),
        stream,
    );
    assert_send(&fut);
}

#[test]
fn indexed_rows_read_the_same_cells_as_lookups_by_name() {
    use super::row::{ColumnIndex, Notes, Row};
    // Names that sort around each other, one name shared by two forms, answers the schema
    // does not know, nulls and absent answers.
    let vars = vec![
        var("b", "TEXT", 1, "DM", ""),
        var("A", "NUMBER", 1, "DM", ""),
        var("DATE", "DATE", 1, "DM", ""),
        var("DATE", "DATE", 2, "AE", ""),
        var("a_1", "CHECKBOX", 2, "AE", ""),
        var("zz", "TEXT", 3, "CM", ""),
    ];
    let recs = vec![
        rec(
            1,
            1,
            json!({"b": "x", "A": 1, "DATE": "2025-01-01", "0": "early"}),
        ),
        rec(
            2,
            2,
            json!({"DATE": "2025-02-02", "a_1": true, "b": null, "zzz": 3}),
        ),
        rec(3, 3, json!({"zz": "last", "A": "", "a": "not a column"})),
        rec(4, 1, json!({})),
        rec(5, 9, json!({"DATE": "orphan", "zz": [1]})),
    ];
    for opts in [
        ExportOptions::default(),
        ExportOptions::from_json(&json!({"use_labels_as_columns": true})).unwrap(),
    ] {
        let s = schema_of(&vars, &opts);
        let index = ColumnIndex::new(&s.columns);
        let mut notes = Notes::default();
        for r in &recs {
            let by_name = Row::new(r, &mut notes);
            let indexed = Row::indexed(r, &mut notes, &index);
            for (i, col) in s.columns.iter().enumerate() {
                assert_eq!(
                    indexed.cell_at(i, col),
                    by_name.cell(col),
                    "record {:?}, column {}",
                    r.record_id,
                    col.name
                );
            }
        }
    }
}
