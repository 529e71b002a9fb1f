//! Masking of secrets in JSON (by key name) and in free text (by known value).
//!
//! JSON: the value of every object key whose lower-cased name contains a sensitive fragment is
//! replaced by `"***"`, whatever its type (Airflow 3 leaked numbers/bools/objects under such keys).
//! Case, hyphens and underscores are ignored, so `Api-Key`, `apiKey` and `x_api_key` match too.

use serde_json::{Map, Value};

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// Key-name fragments (lower case) that mark a value as secret. Airflow's list plus the
/// iMednet provider's header/extra names.
pub const SENSITIVE_KEY_FRAGMENTS: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
    "security_key",
    "x-api-key",
    "x-imn-security-key",
];

/// Values shorter than this (in characters) are not masked in free text: masking "a" or "no"
/// would destroy the log without protecting anything worth protecting.
pub const MIN_TEXT_SECRET_CHARS: usize = 4;

/// True when a JSON key (or header/field name) names a secret. Case, `-` and `_` are ignored
/// on both sides, so `securityKey`, `Security-Key` and `security_key` all match.
pub fn is_sensitive_key(name: &str) -> bool {
    let key = compact(name);
    SENSITIVE_KEY_FRAGMENTS
        .iter()
        .any(|fragment| key.contains(&compact(fragment)))
}

fn compact(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A copy of `value` with the value under every sensitive key, at any depth, replaced by `"***"`.
pub fn redact_json(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_sensitive_key(k) {
                        Value::String(MASK.into())
                    } else {
                        redact_json(v)
                    };
                    (k.clone(), v)
                })
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_json).collect()),
        other => other.clone(),
    }
}

/// Masks every occurrence of the given secret values in `text` (task logs, error messages).
/// Values under [`MIN_TEXT_SECRET_CHARS`] characters are ignored. Overlapping secrets are
/// handled by preferring the longest match, and passes repeat until nothing matches, so no
/// listed secret can survive, even one that a mask would otherwise help reassemble.
pub fn redact_text(text: &str, secrets: &[&str]) -> String {
    let mut needles: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| s.chars().count() >= MIN_TEXT_SECRET_CHARS)
        .collect();
    if needles.is_empty() {
        return text.to_owned();
    }
    // Longest first, so a secret containing another one is masked whole.
    needles.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    needles.dedup();
    let mut current = text.to_owned();
    // Each replacement shrinks the text (>= 4 chars become 3), so this terminates.
    while let Some(next) = mask_pass(&current, &needles) {
        current = next;
    }
    current
}

/// One left-to-right pass; `None` when nothing matched.
fn mask_pass(text: &str, needles: &[&str]) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut replaced = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(needle) = needles.iter().find(|n| rest.starts_with(**n)) {
            out.push_str(MASK);
            rest = &rest[needle.len()..];
            replaced = true;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    replaced.then_some(out)
}

#[cfg(test)]
mod tests;
