//! Wire models for every iMednet entity, plus the small date helpers the simulator needs.
//!
//! Models are tolerant on purpose: unknown fields are ignored, and `null`, `""` or a
//! number-as-string in a scalar field become `None`/default instead of a decode error,
//! because the real API is loose about these (and `recordData` answers arrive as `""`).

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Lenient scalar decoders used through `#[serde(deserialize_with = ...)]`.
pub mod lenient {
    use super::*;

    /// Integer from a number or numeric string; `null`/`""`/garbage → `None`.
    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
            _ => None,
        })
    }

    /// String from a string or number; `null` → `""`, containers → `""`.
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => String::new(),
        })
    }

    /// Optional string: `null`/`""` → `None`.
    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = string(d)?;
        Ok(if s.is_empty() { None } else { Some(s) })
    }

    /// Boolean from a bool, `"true"/"false"/"1"/"0"` or a number; anything else → false.
    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Bool(b) => b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::String(s) => matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "true" | "1" | "yes" | "y" | "t"
            ),
            _ => false,
        })
    }

    /// A list that may arrive as `null`.
    pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
    }
}

/// Declares a tolerant camelCase model; each field names its lenient decoder.
macro_rules! model {
    ($(#[$m:meta])* $name:ident { $($field:ident : $ty:ty = $de:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        pub struct $name {
            $(#[serde(deserialize_with = $de)] pub $field: $ty,)*
        }
    };
}

model!(Study {
    sponsor_key: String = "lenient::string",
    study_key: String = "lenient::string",
    study_id: Option<i64> = "lenient::int",
    study_name: String = "lenient::string",
    study_description: String = "lenient::string",
    study_type: String = "lenient::string",
    date_created: Option<String> = "lenient::opt_string",
    date_modified: Option<String> = "lenient::opt_string",
});

model!(Site {
    study_key: String = "lenient::string",
    site_id: Option<i64> = "lenient::int",
    site_name: String = "lenient::string",
    site_enrollment_status: String = "lenient::string",
    date_created: Option<String> = "lenient::opt_string",
    date_modified: Option<String> = "lenient::opt_string",
});

model!(Keyword {
    keyword_name: String = "lenient::string",
    keyword_key: String = "lenient::string",
    keyword_id: Option<i64> = "lenient::int",
    date_added: Option<String> = "lenient::opt_string",
});

model!(Subject {
    study_key: String = "lenient::string",
    subject_id: Option<i64> = "lenient::int",
    subject_oid: String = "lenient::string",
    subject_key: String = "lenient::string",
    subject_status: String = "lenient::string",
    site_id: Option<i64> = "lenient::int",
    site_name: String = "lenient::string",
    deleted: bool = "lenient::boolean",
    enrollment_start_date: Option<String> = "lenient::opt_string",
    date_created: Option<String> = "lenient::opt_string",
    date_modified: Option<String> = "lenient::opt_string",
    keywords: Vec<Keyword> = "lenient::list",
});

model!(
    /// `record_data` keeps the JSON answer types; empty answers stay `""`.
    Record {
    study_key: String = "lenient::string",
    interval_id: Option<i64> = "lenient::int",
    form_id: Option<i64> = "lenient::int",
    form_key: String = "lenient::string",
    site_id: Option<i64> = "lenient::int",
    record_id: Option<i64> = "lenient::int",
    record_oid: String = "lenient::string",
    record_type: String = "lenient::string",
    record_status: String = "lenient::string",
    deleted: bool = "lenient::boolean",
    date_created: Option<String> = "lenient::opt_string",
    date_modified: Option<String> = "lenient::opt_string",
    subject_id: Option<i64> = "lenient::int",
    subject_oid: String = "lenient::string",
    subject_key: String = "lenient::string",
    visit_id: Option<i64> = "lenient::int",
    parent_record_id: Option<i64> = "lenient::int",
    keywords: Vec<Keyword> = "lenient::list",
    record_data: Answers = "record_data",
});

/// A record's `recordData`: answers sorted by variable name, the last of a repeated name kept.
///
/// Decoding answers is most of the work of reading a page of records, so this is one sorted
/// list per record rather than a map, and names of up to 24 bytes are stored inline: a
/// record then costs a handful of allocations instead of one per name plus the map's nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answers(Vec<(CompactString, Value)>);

impl Answers {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<CompactString>> FromIterator<(K, Value)> for Answers {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Self {
        let mut pairs: Vec<(CompactString, Value)> =
            pairs.into_iter().map(|(k, v)| (k.into(), v)).collect();
        // Stable, so equal names stay in arrival order and the last one is kept below.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(CompactString, Value)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match kept.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => kept.push(pair),
            }
        }
        Answers(kept)
    }
}

impl<'a> IntoIterator for &'a Answers {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (CompactString, Value)>,
        fn(&'a (CompactString, Value)) -> (&'a str, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl std::ops::Index<&str> for Answers {
    type Output = Value;

    /// Like a map's index: panics when the name is absent.
    fn index(&self, name: &str) -> &Value {
        match self.get(name) {
            Some(v) => v,
            None => panic!("no answer named {name:?}"),
        }
    }
}

impl Serialize for Answers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// `recordData` may be `null`, missing or not an object (then it is empty).
fn record_data<'de, D: Deserializer<'de>>(d: D) -> Result<Answers, D::Error> {
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

    struct AnswersVisitor;

    impl<'de> Visitor<'de> for AnswersVisitor {
        type Value = Answers;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("recordData")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Answers, A::Error> {
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(pair) = map.next_entry::<CompactString, Value>()? {
                pairs.push(pair);
            }
            Ok(pairs.into_iter().collect())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Answers, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Answers::default())
        }

        fn visit_unit<E>(self) -> Result<Answers, E> {
            Ok(Answers::default())
        }

        fn visit_bool<E>(self, _: bool) -> Result<Answers, E> {
            Ok(Answers::default())
        }

        fn visit_i64<E>(self, _: i64) -> Result<Answers, E> {
            Ok(Answers::default())
        }

        fn visit_u64<E>(self, _: u64) -> Result<Answers, E> {
            Ok(Answers::default())
        }

        fn visit_f64<E>(self, _: f64) -> Result<Answers, E> {
            Ok(Answers::default())
        }

        fn visit_str<E>(self, _: &str) -> Result<Answers, E> {
            Ok(Answers::default())
        }
    }

    d.deserialize_any(AnswersVisitor)
}

model!(RecordRevision {
    study_key: String = "lenient::string",
    record_revision_id: Option<i64> = "lenient::int",
    record_id: Option<i64> = "lenient::int",
    record_oid: String = "lenient::string",
    record_revision: Option<i64> = "lenient::int",
    data_revision: Option<i64> = "lenient::int",
    record_status: String = "lenient::string",
    subject_id: Option<i64> = "lenient::int",
    subject_oid: String = "lenient::string",
    subject_key: String = "lenient::string",
    site_id: Option<i64> = "lenient::int",
    form_key: String = "lenient::string",
    interval_id: Option<i64> = "lenient::int",
    role: String = "lenient::string",
    user: String = "lenient::string",
    reason_for_change: String = "lenient::string",
    deleted: bool = "lenient::boolean",
    date_created: Option<String> = "lenient::opt_string",
});

model!(Form {
    study_key: String = "lenient::string",
    form_id: Option<i64> = "lenient::int",
    form_key: String = "lenient::string",
    form_name: String = "lenient::string",
    form_type: String = "lenient::string",
    revision: Option<i64> = "lenient::int",
    embedded_log: bool = "lenient::boolean",
    enforce_ownership: bool = "lenient::boolean",
    user_agreement: bool = "lenient::boolean",
    subject_record_report: bool = "lenient::boolean",
    unscheduled_visit: bool = "lenient::boolean",
    other_forms: bool = "lenient::boolean",
    epro_form: bool = "lenient::boolean",
    allow_copy: bool = "lenient::boolean",
    disabled: bool = "lenient::boolean",
    date_created: Option<String> = "lenient::opt_string",
    date_modified: Option<String> = "lenient::opt_string",
});

model!(Variable {
    study_key: String = "lenient::string",
    variable_id: Option<i64> = "lenient::int",
    variable_type: String = "lenient::string",
    variable_name: String = "lenient::string",
    sequence: Option<i64> = "lenient::int",
    revision: Option<i64> = "lenient::int",
    disabled: bool = "lenient::boolean",
    date_created: Option<String> = "lenient::opt_string",
    date_modified: Option<String> = "lenient::opt_string",
    form_id: Option<i64> = "lenient::int",
    variable_oid: Option<String> = "lenient::opt_string",
    deleted: bool = "lenient::boolean",
    form_key: String = "lenient::string",
    form_name: String = "lenient::string",
    label: String = "lenient::string",
    blinded: bool = "lenient::boolean",
});

model!(FormSummary {
    form_id: Option<i64> = "lenient::int",
    form_key: String = "lenient::string",
    form_name: String = "lenient::string",
});

model!(Interval {
    study_key: String = "lenient::string",
    interval_id: Option<i64> = "lenient::int",
    interval_name: String = "lenient::string",
    interval_description: String = "lenient::string",
    interval_sequence: Option<i64> = "lenient::int",
    interval_group_id: Option<i64> = "lenient::int",
    interval_group_name: String = "lenient::string",
    timeline: String = "lenient::string",
    defined_using_interval: String = "lenient::string",
    window_calculation_form: String = "lenient::string",
    window_calculation_date: String = "lenient::string",
    actual_date_form: String = "lenient::string",
    actual_date: String = "lenient::string",
    due_date_will_be_in: Option<i64> = "lenient::int",
    negative_slack: Option<i64> = "lenient::int",
    positive_slack: Option<i64> = "lenient::int",
    epro_grace_period: Option<i64> = "lenient::int",
    forms: Vec<FormSummary> = "lenient::list",
    disabled: bool = "lenient::boolean",
    date_created: Option<String> = "lenient::opt_string",
    date_modified: Option<String> = "lenient::opt_string",
});

model!(Visit {
    visit_id: Option<i64> = "lenient::int",
    study_key: String = "lenient::string",
    interval_id: Option<i64> = "lenient::int",
    interval_name: String = "lenient::string",
    subject_id: Option<i64> = "lenient::int",
    subject_key: String = "lenient::string",
    start_date: Option<String> = "lenient::opt_string",
    end_date: Option<String> = "lenient::opt_string",
    due_date: Option<String> = "lenient::opt_string",
    visit_date: Option<String> = "lenient::opt_string",
    visit_date_form: String = "lenient::string",
    visit_date_question: String = "lenient::string",
    deleted: bool = "lenient::boolean",
    date_created: Option<String> = "lenient::opt_string",
    date_modified: Option<String> = "lenient::opt_string",
});

model!(QueryComment {
    sequence: Option<i64> = "lenient::int",
    annotation_status: String = "lenient::string",
    user: String = "lenient::string",
    comment: String = "lenient::string",
    closed: bool = "lenient::boolean",
    date: Option<String> = "lenient::opt_string",
});

model!(Query {
    study_key: String = "lenient::string",
    subject_id: Option<i64> = "lenient::int",
    subject_oid: String = "lenient::string",
    annotation_type: String = "lenient::string",
    annotation_id: Option<i64> = "lenient::int",
    r#type: Option<String> = "lenient::opt_string",
    description: String = "lenient::string",
    record_id: Option<i64> = "lenient::int",
    variable: String = "lenient::string",
    subject_key: String = "lenient::string",
    date_created: Option<String> = "lenient::opt_string",
    date_modified: Option<String> = "lenient::opt_string",
    query_comments: Vec<QueryComment> = "lenient::list",
});

model!(Coding {
    study_key: String = "lenient::string",
    site_name: String = "lenient::string",
    site_id: Option<i64> = "lenient::int",
    subject_id: Option<i64> = "lenient::int",
    subject_key: String = "lenient::string",
    form_id: Option<i64> = "lenient::int",
    form_name: String = "lenient::string",
    form_key: String = "lenient::string",
    revision: Option<i64> = "lenient::int",
    record_id: Option<i64> = "lenient::int",
    variable: String = "lenient::string",
    value: String = "lenient::string",
    coding_id: Option<i64> = "lenient::int",
    code: String = "lenient::string",
    coded_by: String = "lenient::string",
    reason: String = "lenient::string",
    dictionary_name: String = "lenient::string",
    dictionary_version: String = "lenient::string",
    date_coded: Option<String> = "lenient::opt_string",
});

/// Role dates are kept raw: the documented wire form is an integer array, the SDK wants strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Role {
    #[serde(deserialize_with = "lenient::string")]
    pub role_id: String,
    #[serde(deserialize_with = "lenient::int")]
    pub community_id: Option<i64>,
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub description: String,
    #[serde(deserialize_with = "lenient::int")]
    pub level: Option<i64>,
    #[serde(deserialize_with = "lenient::string")]
    pub r#type: String,
    #[serde(deserialize_with = "lenient::boolean")]
    pub inactive: bool,
    pub date_created: Value,
    pub date_modified: Value,
}

model!(User {
    user_id: String = "lenient::string",
    login: String = "lenient::string",
    first_name: String = "lenient::string",
    last_name: String = "lenient::string",
    email: String = "lenient::string",
    user_active_in_study: bool = "lenient::boolean",
    roles: Vec<Role> = "lenient::list",
});

model!(
    /// A job as answered by POST /records and GET /jobs/{batchId}.
    Job {
    job_id: String = "lenient::string",
    batch_id: String = "lenient::string",
    state: String = "lenient::string",
    date_created: Option<String> = "lenient::opt_string",
    date_started: Option<String> = "lenient::opt_string",
    date_finished: Option<String> = "lenient::opt_string",
    progress: Option<i64> = "lenient::int",
    result_url: Option<String> = "lenient::opt_string",
});

impl Job {
    /// Done successfully (`completed`/`success`, any case).
    pub fn is_successful(&self) -> bool {
        matches!(
            self.state.to_ascii_uppercase().as_str(),
            "COMPLETED" | "SUCCESS"
        )
    }
    /// Finished without success (`failed`/`cancelled`).
    pub fn is_failed(&self) -> bool {
        matches!(
            self.state.to_ascii_uppercase().as_str(),
            "FAILED" | "CANCELLED"
        )
    }
    /// No further state change expected.
    pub fn is_terminal(&self) -> bool {
        self.is_successful() || self.is_failed()
    }
}

/// Response envelope of list endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Envelope<T> {
    pub metadata: Value,
    pub pagination: Option<Pagination>,
    pub data: Vec<T>,
}

impl<T> Default for Envelope<T> {
    fn default() -> Self {
        Self {
            metadata: Value::Null,
            pagination: None,
            data: Vec::new(),
        }
    }
}

model!(Pagination {
    current_page: Option<i64> = "lenient::int",
    size: Option<i64> = "lenient::int",
    total_pages: Option<i64> = "lenient::int",
    total_elements: Option<i64> = "lenient::int",
});

// ---------------------------------------------------------------------------
// Dates. Tiny civil-calendar helpers so the crate needs no date library.

/// Days since 1970-01-01 for a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) for days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `YYYY-MM-DD HH:MM:SS` (the API's UTC timestamp form) for epoch seconds.
pub fn fmt_timestamp(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `YYYY-MM-DD` for epoch seconds.
pub fn fmt_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parse `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` to epoch
/// seconds (UTC; a missing zone means UTC).
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    if b.len() == 10 {
        return Some(secs);
    }
    if !(b[10] == b'T' || b[10] == b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    secs += h * 3600 + mi * 60 + se;
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    match rest {
        "" | "Z" | "z" => Some(secs),
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let off = rest[1..].replace(':', "");
            if off.len() != 4 || !off.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let oh: i64 = off[0..2].parse().ok()?;
            let om: i64 = off[2..4].parse().ok()?;
            Some(secs - sign * (oh * 3600 + om * 60))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let t = parse_datetime("2018-01-01T06:00:00Z").unwrap();
        assert_eq!(fmt_timestamp(t), "2018-01-01 06:00:00");
        assert_eq!(parse_datetime("2018-01-01T08:00:00+02:00"), Some(t));
        assert_eq!(parse_datetime("2018-01-01 06:00:00"), Some(t));
        assert_eq!(parse_datetime("2018-01-01T06:00:00.123-00:00"), Some(t));
        assert_eq!(fmt_date(t), "2018-01-01");
        assert!(parse_datetime("2018-13-01").is_none());
        assert!(parse_datetime("yesterday").is_none());
    }

    #[test]
    fn tolerant_models() {
        let r: Record = serde_json::from_value(serde_json::json!({
            "recordId": "12", "siteId": "", "deleted": "true", "subjectId": null,
            "recordData": {"AGE": "", "W": 1.5}, "unknown": [1]
        }))
        .unwrap();
        assert_eq!(r.record_id, Some(12));
        assert_eq!(r.site_id, None);
        assert!(r.deleted);
        assert_eq!(r.record_data["AGE"], "");
    }

    #[test]
    fn record_data_keeps_nested_answers_and_the_last_of_a_repeated_key() {
        let r: Record = serde_json::from_str(
            r#"{"recordData": {"B": {"x": [1, null]}, "A": 1, "C": "", "A": 2}}"#,
        )
        .unwrap();
        let keys: Vec<&str> = r.record_data.keys().collect();
        assert_eq!(keys, ["A", "B", "C"]);
        assert_eq!(r.record_data["A"], 2);
        assert_eq!(r.record_data["B"], serde_json::json!({"x": [1, null]}));
        assert_eq!(r.record_data.get("D"), None);
        // Names longer than fit inline, and the map shape on the way out.
        let long = "A_VERY_LONG_VARIABLE_NAME_OF_40_CHARS_XX";
        let r: Record = serde_json::from_str(&format!(
            r#"{{"recordData": {{"{long}": "x", "B": true, "A": null}}}}"#
        ))
        .unwrap();
        assert_eq!(r.record_data[long], "x");
        assert_eq!(
            serde_json::to_string(&r.record_data).unwrap(),
            format!(r#"{{"A":null,"{long}":"x","B":true}}"#)
        );
        for other in ["null", "\"\"", "[1, {\"a\": 2}]", "5", "-1.5", "true"] {
            let r: Record =
                serde_json::from_str(&format!(r#"{{"recordData": {other}, "recordId": 7}}"#))
                    .unwrap();
            assert!(r.record_data.is_empty(), "{other}");
            assert_eq!(r.record_id, Some(7), "{other}");
        }
    }
}
