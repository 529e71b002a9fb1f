//! Durations as pipelines write them: `30s`, `2m`, `1h30m`, `7d`, or a number of seconds.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    pub fn parse(text: &str) -> Result<Dur, String> {
        let t = text.trim();
        if let Ok(secs) = t.parse::<f64>() {
            return if secs.is_finite() && secs >= 0.0 {
                Ok(Dur(Duration::from_secs_f64(secs)))
            } else {
                Err(format!(
                    "bad duration '{text}': must be zero or more seconds"
                ))
            };
        }
        humantime::parse_duration(t)
            .map(Dur)
            .map_err(|e| format!("bad duration '{text}': {e} (write e.g. 30s, 2m, 1h30m, 7d)"))
    }

    pub fn as_millis(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Dur::parse(&n.to_string()),
            Raw::Text(t) => Dur::parse(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(Dur::parse("2m").unwrap(), Dur::secs(120));
        assert_eq!(Dur::parse("1h30m").unwrap(), Dur::secs(5400));
        assert_eq!(Dur::parse("45").unwrap(), Dur::secs(45));
        assert_eq!(Dur::parse("0.5").unwrap().0, Duration::from_millis(500));
        let err = Dur::parse("2x").unwrap_err();
        assert!(err.contains("bad duration '2x'"), "{err}");
        assert!(Dur::parse("-1").is_err());
    }
}
