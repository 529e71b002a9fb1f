//! What the console shows of text the engine stored: known secret values masked, and the
//! server's own directories cut off, so pages, JSON and live events name files relative to
//! the export root (or the data directory) and never reveal where the server keeps them.
//! Stored results keep their absolute paths: downstream tasks read them.
use crate::connections::KnownSecrets;
use crate::engine::Engine;
use serde_json::Value;

#[derive(Clone)]
pub struct Shown {
    secrets: KnownSecrets,
    /// Absolute, without a trailing `/`, longest first (the export root usually lies inside
    /// the data directory).
    dirs: Vec<String>,
}

impl Shown {
    pub fn for_engine(engine: &Engine) -> Shown {
        Shown::new(
            engine.connections().known_secrets(),
            &[engine.export_root(), engine.config.data_dir.clone()],
        )
    }

    pub fn new(secrets: KnownSecrets, dirs: &[std::path::PathBuf]) -> Shown {
        let mut dirs: Vec<String> = dirs
            .iter()
            .filter_map(|d| std::path::absolute(d).ok())
            .map(|d| d.to_string_lossy().trim_end_matches('/').to_owned())
            .filter(|d| !d.is_empty())
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        dirs.dedup();
        Shown { secrets, dirs }
    }

    pub fn text(&self, text: &str) -> String {
        self.relative(&self.secrets.redact_text(text))
    }

    /// Sensitive keys masked at any depth, then every string as [`Shown::text`].
    pub fn json(&self, value: &Value) -> Value {
        self.relative_json(&self.secrets.redact_json(value))
    }

    fn relative_json(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.relative(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.relative_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.relative_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `<dir>/a/b` → `a/b` and a bare `<dir>` → `.`, only where `<dir>` ends at a path
    /// boundary (so `/srv/data` does not touch `/srv/database`).
    fn relative(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for dir in &self.dirs {
            if !out.contains(dir.as_str()) {
                continue;
            }
            let mut result = String::with_capacity(out.len());
            let mut rest = out.as_str();
            while let Some(at) = rest.find(dir.as_str()) {
                result.push_str(&rest[..at]);
                let after = &rest[at + dir.len()..];
                match after.chars().next() {
                    Some('/') => rest = &after[1..],
                    Some(c) if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') => {
                        result.push_str(dir);
                        rest = after;
                    }
                    _ => {
                        result.push('.');
                        rest = after;
                    }
                }
            }
            result.push_str(rest);
            out = result;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shown() -> Shown {
        Shown::new(
            KnownSecrets::default(),
            &[
                PathBuf::from("/srv/tf/data/exports"),
                PathBuf::from("/srv/tf/data/"),
            ],
        )
    }

    #[test]
    fn server_directories_become_relative() {
        let s = shown();
        assert_eq!(
            s.text("wrote /srv/tf/data/exports/reference/run-2/DEMO.csv"),
            "wrote reference/run-2/DEMO.csv"
        );
        assert_eq!(s.text("/srv/tf/data/files/a.txt"), "files/a.txt");
        assert_eq!(
            s.text("outside the export root /srv/tf/data/exports: ../x"),
            "outside the export root .: ../x"
        );
        assert_eq!(s.text("/srv/tf/database/x"), "/srv/tf/database/x");
        assert_eq!(s.text("s3://bucket/key.csv"), "s3://bucket/key.csv");
    }

    #[test]
    fn json_strings_are_made_relative_at_any_depth() {
        let v = serde_json::json!({"out": [{"path": "/srv/tf/data/exports/a.csv", "rows": 3}]});
        assert_eq!(
            shown().json(&v),
            serde_json::json!({"out": [{"path": "a.csv", "rows": 3}]})
        );
    }
}
