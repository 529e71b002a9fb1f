//! Value rendering shared by the writers: the SDK's formula guard, Python's float `repr`,
//! Python's `datetime.isoformat()` of API timestamps, and SQLAlchemy's SQLite DATETIME text.

use std::borrow::Cow;

use serde_json::{Number, Value};

/// The SDK's `sanitize_csv_formula`: a string whose first character after leading
/// whitespace is `= + - @` gets a `'` prefix (the original string is kept whole, whitespace
/// included). Only strings are guarded, never numbers.
pub fn guard_formula(s: &str) -> Cow<'_, str> {
    // Most answers start with a visible ASCII character: decide on it without decoding.
    if let Some(&b) = s.as_bytes().first()
        && b.is_ascii_graphic()
    {
        return match b {
            b'=' | b'+' | b'-' | b'@' => Cow::Owned(format!("'{s}")),
            _ => Cow::Borrowed(s),
        };
    }
    // Python's `str.lstrip()` strips `str.isspace()` characters: Unicode White_Space plus the
    // ASCII information separators U+001C..U+001F, which Rust does not count as whitespace.
    let first = s
        .chars()
        .find(|c| !(c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(c)));
    match first {
        Some('=' | '+' | '-' | '@') => Cow::Owned(format!("'{s}")),
        _ => Cow::Borrowed(s),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for decimal exponents
/// in [-4, 16), scientific (`1e+16`, `1e-05`) otherwise, and always a `.0` on integral values.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "-1.2345e-5".
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    let decpt = exp + 1; // position of the decimal point relative to the digits
    if decpt > -4 && decpt <= 16 {
        let n = digits.len() as i32;
        if decpt <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
        } else if decpt >= n {
            format!("{sign}{digits}{}.0", "0".repeat((decpt - n) as usize))
        } else {
            let (a, b) = digits.split_at(decpt as usize);
            format!("{sign}{a}.{b}")
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

/// Text of a JSON number: integers as integers, other numbers as Python's float `repr`.
pub fn number_text(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        py_float_repr(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Text of a non-string JSON value for text cells outside CSV (JSON spelling of booleans,
/// compact JSON for containers).
pub fn json_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Number(n) => Cow::Owned(number_text(n)),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// Boolean from a loosely typed answer, using the SDK's `parse_bool` vocabulary.
/// `None` when the value is not recognisably boolean.
pub fn loose_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "t" => Some(true),
            "false" | "0" | "no" | "n" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Finite number from a JSON number or a numeric string.
pub fn loose_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// True for `""` and whitespace-only strings: an unanswered question.
pub fn is_blank(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.trim().is_empty())
}

/// A parsed API timestamp (what Python's `datetime.fromisoformat` accepts, 3.11 rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
    /// Seconds east of UTC; `None` for a naive timestamp (the API's UTC wall clock).
    pub offset: Option<i32>,
}

fn digits(s: &str, n: usize) -> Option<u32> {
    let part = s.get(..n)?;
    if part.bytes().all(|b| b.is_ascii_digit()) {
        part.parse().ok()
    } else {
        None
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Fraction digits → microseconds (padded, truncated past 6 digits, like Python).
fn micros_of(frac: &str) -> u32 {
    let mut micros = 0u32;
    for i in 0..6 {
        let d = frac.as_bytes().get(i).map_or(0, |b| u32::from(b - b'0'));
        micros = micros * 10 + d;
    }
    micros
}

/// Split `HH[:MM[:SS[(.|,)f+]]]` or `HHMM[SS]`; returns (h, m, s, micros).
fn parse_clock(s: &str, allow_frac: bool) -> Option<(u32, u32, u32, u32)> {
    let (main, frac) = match s.find(['.', ',']) {
        Some(i) if allow_frac => {
            let f = &s[i + 1..];
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (&s[..i], Some(f))
        }
        Some(_) => return None,
        None => (s, None),
    };
    let parts: Vec<u32> = if main.contains(':') {
        let pieces: Vec<&str> = main.split(':').collect();
        if pieces.len() > 3 || pieces.iter().any(|p| p.len() != 2) {
            return None;
        }
        pieces
            .iter()
            .map(|p| digits(p, 2))
            .collect::<Option<Vec<u32>>>()?
    } else {
        if main.is_empty()
            || main.len() % 2 != 0
            || main.len() > 6
            || !main.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        (0..main.len() / 2)
            .map(|i| digits(main.get(i * 2..)?, 2))
            .collect::<Option<Vec<u32>>>()?
    };
    if frac.is_some() && parts.len() != 3 {
        return None;
    }
    let h = parts.first().copied()?;
    let m = parts.get(1).copied().unwrap_or(0);
    let sec = parts.get(2).copied().unwrap_or(0);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some((h, m, sec, frac.map_or(0, micros_of)))
}

impl Timestamp {
    /// Parse the ISO forms Python 3.11's `datetime.fromisoformat` accepts for API dates:
    /// `YYYY-MM-DD` or `YYYYMMDD`, then optionally any one separator character and a time
    /// `HH[:MM[:SS[.f…]]]`, then optionally `Z` or `±HH[:MM[:SS]]`/`±HHMM`.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let (date_len, year, month, day) = if s.get(4..5) == Some("-") {
            if s.get(7..8) != Some("-") {
                return None;
            }
            (
                10,
                digits(s, 4)?,
                digits(s.get(5..)?, 2)?,
                digits(s.get(8..)?, 2)?,
            )
        } else {
            (
                8,
                digits(s, 4)?,
                digits(s.get(4..)?, 2)?,
                digits(s.get(6..)?, 2)?,
            )
        };
        let year = i64::from(year);
        if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let mut ts = Timestamp {
            year,
            month,
            day,
            hour: 0,
            minute: 0,
            second: 0,
            micros: 0,
            offset: None,
        };
        let rest = s.get(date_len..)?;
        let mut chars = rest.chars();
        if chars.next().is_none() {
            return Some(ts);
        }
        let time = chars.as_str();
        let (clock, zone) = match time.find(['Z', '+', '-']) {
            Some(i) => (&time[..i], Some(&time[i..])),
            None => (time, None),
        };
        let (h, m, sec, micros) = parse_clock(clock, true)?;
        ts.hour = h;
        ts.minute = m;
        ts.second = sec;
        ts.micros = micros;
        if let Some(zone) = zone {
            ts.offset = Some(if zone == "Z" {
                0
            } else {
                let sign = if zone.starts_with('-') { -1 } else { 1 };
                let (oh, om, os, ou) = parse_clock(&zone[1..], false)?;
                if ou != 0 {
                    return None;
                }
                sign * (oh * 3600 + om * 60 + os) as i32
            });
        }
        Some(ts)
    }

    /// Epoch seconds (a JSON number the lenient model turned into text), like the SDK's
    /// `datetime.fromtimestamp(v, tz=timezone.utc)`.
    pub fn from_epoch_text(s: &str) -> Option<Timestamp> {
        if s.contains(['-', ':']) && !s.starts_with('-') {
            return None;
        }
        let f: f64 = s.trim().parse().ok().filter(|f: &f64| f.is_finite())?;
        // Whole microseconds, rounded half to even as Python does.
        let total = (f * 1_000_000.0).round_ties_even();
        if total.abs() > 2.5e17 {
            return None;
        }
        let total = total as i64;
        let secs = total.div_euclid(1_000_000);
        let micros = total.rem_euclid(1_000_000) as u32;
        let (y, mo, d) = crate::imednet::model::civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        if y < 1 {
            return None;
        }
        Some(Timestamp {
            year: y,
            month: mo as u32,
            day: d as u32,
            hour: (sod / 3600) as u32,
            minute: (sod / 60 % 60) as u32,
            second: (sod % 60) as u32,
            micros,
            offset: Some(0),
        })
    }

    /// Python's `datetime.isoformat()`: `YYYY-MM-DDTHH:MM:SS[.ffffff][±HH:MM[:SS]]`.
    pub fn py_isoformat(&self) -> String {
        let mut out = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.micros != 0 {
            out.push_str(&format!(".{:06}", self.micros));
        }
        if let Some(off) = self.offset {
            let sign = if off < 0 { '-' } else { '+' };
            let a = off.unsigned_abs();
            out.push_str(&format!("{sign}{:02}:{:02}", a / 3600, a / 60 % 60));
            if a % 60 != 0 {
                out.push_str(&format!(":{:02}", a % 60));
            }
        }
        out
    }

    /// Microseconds since the epoch in UTC (a naive timestamp is taken as UTC).
    pub fn utc_micros(&self) -> i128 {
        let days = crate::imednet::model::days_from_civil(
            self.year,
            i64::from(self.month),
            i64::from(self.day),
        );
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset.unwrap_or(0));
        i128::from(secs) * 1_000_000 + i128::from(self.micros)
    }

    /// SQLAlchemy's SQLite DATETIME storage text, `YYYY-MM-DD HH:MM:SS.ffffff`, in UTC.
    pub fn sqlalchemy_text(&self) -> String {
        let total = self.utc_micros();
        let micros = total.rem_euclid(1_000_000) as u32;
        let secs = total.div_euclid(1_000_000) as i64;
        let (y, mo, d) = crate::imednet::model::civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        format!(
            "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

/// Parse an API timestamp as the SDK does (ISO text, or epoch seconds from a JSON number).
pub fn parse_api_timestamp(s: &str) -> Option<Timestamp> {
    Timestamp::parse(s).or_else(|| Timestamp::from_epoch_text(s))
}

/// Truncate to at most `max` UTF-16 code units on a character boundary (Excel's limit).
pub fn truncate_utf16(s: &str, max: usize) -> Option<&str> {
    let mut units = 0usize;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            return Some(&s[..i]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_guard_matches_sdk_rule() {
        assert_eq!(guard_formula("=1+1"), "'=1+1");
        assert_eq!(guard_formula("+1"), "'+1");
        assert_eq!(guard_formula("-5 units"), "'-5 units");
        assert_eq!(guard_formula("@home"), "'@home");
        // Leading whitespace is skipped for the test but kept in the value.
        assert_eq!(guard_formula("  =A1"), "'  =A1");
        assert_eq!(guard_formula("\t\n@x"), "'\t\n@x");
        assert_eq!(guard_formula("\u{a0}=x"), "'\u{a0}=x");
        // Python's isspace() includes U+001C..U+001F.
        assert_eq!(guard_formula("\u{1c}=x"), "'\u{1c}=x");
        assert_eq!(guard_formula("a=b"), "a=b");
        assert_eq!(guard_formula(""), "");
        assert_eq!(guard_formula("   "), "   ");
        assert_eq!(guard_formula("'=x"), "'=x");
        // U+200B is not whitespace for Python either.
        assert_eq!(guard_formula("\u{200b}=x"), "\u{200b}=x");
    }

    #[test]
    fn python_float_repr() {
        let cases = [
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1.5e300, "1.5e+300"),
            (12.3, "12.3"),
            (40.0, "40.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.5e-7, "2.5e-07"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn isoformat_like_python() {
        let iso = |s: &str| parse_api_timestamp(s).map(|t| t.py_isoformat());
        let cases = [
            ("2025-06-05 21:12:09", "2025-06-05T21:12:09"),
            ("2025-06-05T21:12:09Z", "2025-06-05T21:12:09+00:00"),
            ("2025-06-05T21:12:09.5", "2025-06-05T21:12:09.500000"),
            ("2025-06-05T21:12:09.1234567", "2025-06-05T21:12:09.123456"),
            ("2025-06-05T21:12", "2025-06-05T21:12:00"),
            ("2025-06-05T21", "2025-06-05T21:00:00"),
            ("2025-06-05", "2025-06-05T00:00:00"),
            ("2025-06-05T21:12:09-00:00", "2025-06-05T21:12:09+00:00"),
            ("2025-06-05T21:12:09+0530", "2025-06-05T21:12:09+05:30"),
            ("2025-06-05T21:12:09+05", "2025-06-05T21:12:09+05:00"),
            ("2025-06-05T21:12:09,5", "2025-06-05T21:12:09.500000"),
            ("2025-06-05t21:12:09", "2025-06-05T21:12:09"),
            ("2025-06-05x21:12:09", "2025-06-05T21:12:09"),
            (
                "2025-06-05T21:12:09+05:30:15",
                "2025-06-05T21:12:09+05:30:15",
            ),
            (
                "2025-06-05T21:12:09.123+01:00",
                "2025-06-05T21:12:09.123000+01:00",
            ),
            ("2025-06-05T21:12:09-03:00", "2025-06-05T21:12:09-03:00"),
            ("20250605", "2025-06-05T00:00:00"),
            ("1717171717.5", "2024-05-31T16:08:37.500000+00:00"),
            ("0", "1970-01-01T00:00:00+00:00"),
        ];
        for (s, want) in cases {
            assert_eq!(iso(s).as_deref(), Some(want), "{s}");
        }
        for bad in [
            "2025-06-05T21:12:09z",
            "2025-06-05T24:00:00",
            "2025-06-05T21:12:60",
            "2025-06-05T21:12:09 ",
            "2025-06-05T21:12:09.",
            "2025-02-30",
            "yesterday",
            "",
        ] {
            assert_eq!(iso(bad), None, "{bad}");
        }
    }

    #[test]
    fn parsers_never_panic_on_junk() {
        // Every string of up to 5 symbols from an alphabet of separators, digits and a
        // multi-byte character, appended to a valid date and on its own.
        let alphabet = ["1", "9", "-", ":", "T", " ", ".", ",", "+", "Z", "é", "😀"];
        let mut stack = vec![String::new()];
        let mut n = 0;
        while let Some(s) = stack.pop() {
            for prefix in ["", "2025-06-05", "2025-06-05T21", "2025-06-05T21:12:09"] {
                let full = format!("{prefix}{s}");
                if let Some(ts) = parse_api_timestamp(&full) {
                    let _ = (ts.py_isoformat(), ts.sqlalchemy_text(), ts.utc_micros());
                }
                let _ = guard_formula(&full);
                n += 1;
            }
            if s.chars().count() < 5 {
                for a in alphabet {
                    stack.push(format!("{s}{a}"));
                }
            }
        }
        assert!(n > 100_000);
    }

    #[test]
    fn utc_ordering_and_sqlalchemy_text() {
        let a = parse_api_timestamp("2025-06-05T21:12:09+02:00").unwrap();
        let b = parse_api_timestamp("2025-06-05 19:12:09").unwrap();
        assert_eq!(a.utc_micros(), b.utc_micros());
        let c = parse_api_timestamp("2025-06-05 19:12:09.000001").unwrap();
        assert!(c.utc_micros() > b.utc_micros());
        assert_eq!(a.sqlalchemy_text(), "2025-06-05 19:12:09.000000");
    }

    #[test]
    fn loose_conversions() {
        assert_eq!(loose_bool(&Value::from("Yes")), Some(true));
        assert_eq!(loose_bool(&Value::from("0")), Some(false));
        assert_eq!(loose_bool(&Value::from("maybe")), None);
        assert_eq!(loose_f64(&Value::from(" 2.5 ")), Some(2.5));
        assert_eq!(loose_f64(&Value::from("inf")), None);
        assert!(is_blank(&Value::from("  ")));
        assert_eq!(truncate_utf16("aé😀b", 3), Some("aé"));
        assert_eq!(truncate_utf16("abc", 3), None);
    }
}
