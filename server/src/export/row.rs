//! One record seen as a row of cells, plus the warning tally the writers share.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::imednet::model::Record;

use super::schema::{Column, ColumnSource, KeyColumn};
use super::values::parse_api_timestamp;

/// A cell before format-specific rendering.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    /// Absent variable, JSON null, or a missing dateCreated.
    Null,
    /// A key id (`None` ids render as 0, as in the SDK's models).
    Int(i64),
    /// A key text (subjectKey, recordStatus, dateCreated).
    Text(Cow<'a, str>),
    /// A `recordData` answer, JSON type kept.
    Json(&'a Value),
}

/// Warnings that may repeat for many rows, counted and reported once per kind and column.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    bad_dates: (u64, Option<String>),
    /// column → (count, first value) of answers that did not fit a typed column.
    coerced: BTreeMap<String, (u64, String)>,
    /// column → count of strings cut to Excel's cell limit.
    truncated: BTreeMap<String, u64>,
    pub other: Vec<String>,
}

impl Notes {
    pub fn bad_date(&mut self, raw: &str) {
        self.bad_dates.0 += 1;
        if self.bad_dates.1.is_none() {
            self.bad_dates.1 = Some(raw.to_string());
        }
    }

    pub fn coerced(&mut self, column: &str, raw: &Value) {
        let e = self
            .coerced
            .entry(column.to_string())
            .or_insert_with(|| (0, raw.to_string()));
        e.0 += 1;
    }

    pub fn truncated(&mut self, column: &str) {
        *self.truncated.entry(column.to_string()).or_insert(0) += 1;
    }

    /// `base` (schema warnings) followed by the tallies.
    pub fn into_warnings(self, mut base: Vec<String>, what: &str) -> Vec<String> {
        if let (n, Some(first)) = self.bad_dates {
            base.push(format!(
                "{n} record date(s) are not ISO timestamps and were written unchanged \
                 (first: `{first}`)"
            ));
        }
        for (col, (n, first)) in self.coerced {
            base.push(format!(
                "column `{col}`: {n} value(s) that are not {what} were written as null \
                 (first: {first})"
            ));
        }
        for (col, n) in self.truncated {
            base.push(format!(
                "column `{col}`: {n} string(s) longer than Excel's 32767-character cell limit \
                 were truncated"
            ));
        }
        base.extend(self.other);
        base
    }
}

/// `dateCreated` as the SDK renders it: Python's `isoformat()` of the parsed timestamp.
/// Unparseable text is kept as is (the SDK would fail the whole record list).
pub(crate) fn date_created_text<'a>(rec: &'a Record, notes: &mut Notes) -> Option<Cow<'a, str>> {
    let raw = rec.date_created.as_deref()?;
    match parse_api_timestamp(raw) {
        Some(ts) => Some(Cow::Owned(ts.py_isoformat())),
        None => {
            notes.bad_date(raw);
            Some(Cow::Borrowed(raw))
        }
    }
}

/// The variable columns of one column list by `recordData` key, in key order, so a record's
/// answers are placed in one merge pass over its (sorted) map instead of one map lookup per
/// column; wide exports have hundreds of columns and records answer only their own form's.
pub(crate) struct ColumnIndex {
    len: usize,
    /// (variable name, positions of the columns reading it), sorted by name.
    by_name: Vec<(String, Vec<usize>)>,
}

impl ColumnIndex {
    pub fn new(columns: &[Column]) -> ColumnIndex {
        let mut by_name: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, col) in columns.iter().enumerate() {
            if let ColumnSource::Variable { name, .. } = &col.source {
                by_name.push((name.clone(), vec![i]));
            }
        }
        by_name.sort_by(|a, b| a.0.cmp(&b.0));
        // Columns that share a variable name collapse into one entry.
        by_name.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1.append(&mut later.1);
            }
            same
        });
        ColumnIndex {
            len: columns.len(),
            by_name,
        }
    }

    /// Each column's entry of `rec.record_data` (`None` for key columns and absent answers).
    fn answers<'a>(&self, rec: &'a Record) -> Vec<Option<&'a Value>> {
        let mut out = vec![None; self.len];
        let mut at = 0;
        for (key, value) in &rec.record_data {
            let rest = &self.by_name[at..];
            // Keys of one form are mostly neighbours: look at the next name before searching.
            at += match rest.first() {
                None => break,
                Some((name, _)) if name.as_str() >= key => 0,
                Some(_) => rest.partition_point(|(name, _)| name.as_str() < key),
            };
            if let Some((name, cols)) = self.by_name.get(at)
                && name == key
            {
                for &c in cols {
                    out[c] = Some(value);
                }
                at += 1;
            }
        }
        out
    }
}

/// A record laid out for one row.
pub(crate) struct Row<'a> {
    rec: &'a Record,
    date_created: Option<Cow<'a, str>>,
    /// Answers by column position, when laid out through a [`ColumnIndex`].
    answers: Option<Vec<Option<&'a Value>>>,
}

impl<'a> Row<'a> {
    pub fn new(rec: &'a Record, notes: &mut Notes) -> Row<'a> {
        Row {
            rec,
            date_created: date_created_text(rec, notes),
            answers: None,
        }
    }

    /// A row for the columns `index` was built from; read it with [`Row::cell_at`].
    pub fn indexed(rec: &'a Record, notes: &mut Notes, index: &ColumnIndex) -> Row<'a> {
        Row {
            rec,
            date_created: date_created_text(rec, notes),
            answers: Some(index.answers(rec)),
        }
    }

    /// The cell of column `i` (`col`) of the indexed column list; same as [`Row::cell`].
    pub fn cell_at(&self, i: usize, col: &Column) -> Cell<'_> {
        match (&col.source, &self.answers) {
            (
                ColumnSource::Variable {
                    own_form_only,
                    form_id,
                    ..
                },
                Some(answers),
            ) => match answers.get(i).copied().flatten() {
                _ if *own_form_only && self.rec.form_id != *form_id => Cell::Null,
                None | Some(Value::Null) => Cell::Null,
                Some(v) => Cell::Json(v),
            },
            _ => self.cell(col),
        }
    }

    pub fn cell(&self, col: &Column) -> Cell<'_> {
        match &col.source {
            ColumnSource::Key(k) => match k {
                KeyColumn::RecordId => Cell::Int(self.rec.record_id.unwrap_or(0)),
                KeyColumn::VisitId => Cell::Int(self.rec.visit_id.unwrap_or(0)),
                KeyColumn::FormId => Cell::Int(self.rec.form_id.unwrap_or(0)),
                KeyColumn::SubjectKey => Cell::Text(Cow::Borrowed(&self.rec.subject_key)),
                KeyColumn::RecordStatus => Cell::Text(Cow::Borrowed(&self.rec.record_status)),
                KeyColumn::DateCreated => match &self.date_created {
                    Some(s) => Cell::Text(Cow::Borrowed(s)),
                    None => Cell::Null,
                },
            },
            ColumnSource::Variable {
                own_form_only: true,
                form_id,
                ..
            } if self.rec.form_id != *form_id => Cell::Null,
            ColumnSource::Variable { name, .. } => match self.rec.record_data.get(name) {
                None | Some(Value::Null) => Cell::Null,
                Some(v) => Cell::Json(v),
            },
        }
    }
}
