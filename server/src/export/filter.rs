//! Which records an export keeps, and the new incremental watermark.

use std::collections::HashSet;

use serde::Serialize;

use crate::imednet::model::Record;

use super::error::ExportError;
use super::options::ExportOptions;
use super::values::parse_api_timestamp;

/// Counts of what the filter saw and why records were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterStats {
    pub seen: u64,
    pub kept: u64,
    pub skipped_deleted: u64,
    pub skipped_form: u64,
    pub skipped_variables: u64,
    pub skipped_not_modified: u64,
    /// Records whose dateModified is missing or unreadable (kept when incremental).
    pub undated: u64,
}

/// Record filter: deleted flag, form whitelist, variable whitelist (records carrying none of
/// the whitelisted variables are skipped, as the simulator's `variableNames==` filter does)
/// and, for incremental exports, `dateModified > watermark` compared as instants.
#[derive(Debug, Clone)]
pub struct RecordFilter {
    include_deleted: bool,
    forms: Option<HashSet<i64>>,
    variables: Option<HashSet<String>>,
    /// (raw text, UTC microseconds) of the previous high-water mark.
    watermark: Option<(String, i128)>,
    /// (UTC microseconds, raw text) of the newest dateModified seen.
    newest: Option<(i128, String)>,
    stats: FilterStats,
}

impl RecordFilter {
    /// `watermark` is the caller's stored high-water mark; it is used only when
    /// `options.incremental` is true (and `None` then means a full export).
    pub fn new(options: &ExportOptions, watermark: Option<&str>) -> Result<Self, ExportError> {
        let watermark = match watermark {
            Some(raw) if options.incremental => {
                let ts = parse_api_timestamp(raw.trim())
                    .ok_or_else(|| ExportError::InvalidWatermark(raw.to_string()))?;
                Some((raw.to_string(), ts.utc_micros()))
            }
            _ => None,
        };
        Ok(RecordFilter {
            include_deleted: options.include_deleted,
            forms: options
                .form_whitelist
                .as_ref()
                .map(|f| f.iter().copied().collect()),
            variables: options
                .variable_whitelist
                .as_ref()
                .map(|v| v.iter().cloned().collect()),
            newest: watermark.as_ref().map(|(raw, t)| (*t, raw.clone())),
            watermark,
            stats: FilterStats::default(),
        })
    }

    /// A filter that keeps every record (the SDK's behaviour).
    pub fn keep_all() -> Self {
        RecordFilter {
            include_deleted: true,
            forms: None,
            variables: None,
            watermark: None,
            newest: None,
            stats: FilterStats::default(),
        }
    }

    /// Decide on one record, and track the newest dateModified over every record seen.
    pub fn keep(&mut self, rec: &Record) -> bool {
        self.stats.seen += 1;
        let modified = rec
            .date_modified
            .as_deref()
            .and_then(|s| parse_api_timestamp(s.trim()))
            .map(|t| t.utc_micros());
        match (modified, &self.newest) {
            (Some(t), Some((newest, _))) if t <= *newest => {}
            (Some(t), _) => {
                self.newest = Some((t, rec.date_modified.clone().unwrap_or_default()));
            }
            (None, _) => self.stats.undated += 1,
        }
        if rec.deleted && !self.include_deleted {
            self.stats.skipped_deleted += 1;
            return false;
        }
        if let Some(forms) = &self.forms
            && !rec.form_id.is_some_and(|id| forms.contains(&id))
        {
            self.stats.skipped_form += 1;
            return false;
        }
        if let Some(vars) = &self.variables
            && !rec.record_data.keys().any(|k| vars.contains(k))
        {
            self.stats.skipped_variables += 1;
            return false;
        }
        // An undated record cannot be proven old, so an incremental export keeps it.
        if let (Some((_, mark)), Some(t)) = (&self.watermark, modified)
            && t <= *mark
        {
            self.stats.skipped_not_modified += 1;
            return false;
        }
        self.stats.kept += 1;
        true
    }

    /// The watermark to store after a successful export: the newest dateModified seen (raw
    /// text as the API sent it), or the previous watermark if nothing newer was seen.
    pub fn max_date_modified(&self) -> Option<String> {
        self.newest.as_ref().map(|(_, raw)| raw.clone())
    }

    pub fn stats(&self) -> &FilterStats {
        &self.stats
    }
}
