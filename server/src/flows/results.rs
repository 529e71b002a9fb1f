//! Result records that flows save, the references that point at them, and the walk that picks one
//! value out of a record for a `db` mapping.
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt;

/// The names a walk may start with, in the order error messages list them.
pub const RECORD_ATTRIBUTES: [&str; 7] = [
    "inputs",
    "outputs",
    "flow_id",
    "date_modified",
    "unique_hash",
    "result_type_string",
    "project_name",
];

/// The result type of records saved by the generic save-result task.
pub const GENERIC_RESULT_TYPE: &str = "trialflow:Result";

/// One saved result. Its JSON form uses the attribute names of [`RECORD_ATTRIBUTES`], so the
/// whole record and a one-step walk agree (`date_modified` is milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultRecord {
    pub flow_id: String,
    pub project_name: String,
    pub inputs: Value,
    pub outputs: Value,
    #[serde(rename = "date_modified")]
    pub date_modified_ms: i64,
    pub result_type_string: String,
    pub unique_hash: String,
}

impl ResultRecord {
    /// A record with its hash computed, so it cannot disagree with its content.
    pub fn new(
        flow_id: &str,
        project_name: &str,
        result_type_string: &str,
        inputs: Value,
        outputs: Value,
        date_modified_ms: i64,
    ) -> Self {
        let unique_hash = unique_hash(flow_id, &inputs, &outputs);
        ResultRecord {
            flow_id: flow_id.to_string(),
            project_name: project_name.to_string(),
            inputs,
            outputs,
            date_modified_ms,
            result_type_string: result_type_string.to_string(),
            unique_hash,
        }
    }

    /// False when the stored hash no longer matches the content (edited or corrupted).
    pub fn hash_is_valid(&self) -> bool {
        self.unique_hash == unique_hash(&self.flow_id, &self.inputs, &self.outputs)
    }

    pub fn reference(&self) -> ResultRef {
        ResultRef {
            project_name: self.project_name.clone(),
            result_type_string: self.result_type_string.clone(),
            query: ResultQuery {
                unique_hash: self.unique_hash.clone(),
            },
        }
    }

    /// One attribute by its record name, or `None` for a name not in [`RECORD_ATTRIBUTES`].
    pub fn attribute(&self, name: &str) -> Option<Value> {
        Some(match name {
            "inputs" => self.inputs.clone(),
            "outputs" => self.outputs.clone(),
            "flow_id" => Value::from(self.flow_id.as_str()),
            "date_modified" => Value::from(self.date_modified_ms),
            "unique_hash" => Value::from(self.unique_hash.as_str()),
            "result_type_string" => Value::from(self.result_type_string.as_str()),
            "project_name" => Value::from(self.project_name.as_str()),
            _ => return None,
        })
    }

    /// The whole record as JSON (what an empty `attribute_index` yields).
    pub fn to_json(&self) -> Value {
        json!({
            "flow_id": self.flow_id,
            "project_name": self.project_name,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "date_modified": self.date_modified_ms,
            "result_type_string": self.result_type_string,
            "unique_hash": self.unique_hash,
        })
    }
}

/// What a save-result task returns: enough to find the record again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultRef {
    pub project_name: String,
    pub result_type_string: String,
    pub query: ResultQuery,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultQuery {
    pub unique_hash: String,
}

/// SHA-256 (lowercase hex) of the canonical JSON of `{flow_id, inputs, outputs}`: the same
/// result saved twice gets the same hash, whatever order its keys came in.
pub fn unique_hash(flow_id: &str, inputs: &Value, outputs: &Value) -> String {
    let identity = json!({ "flow_id": flow_id, "inputs": inputs, "outputs": outputs });
    sha256_hex(canonical_json(&identity).as_bytes())
}

/// JSON with object keys sorted (by their UTF-8 bytes) at every depth and no whitespace; strings
/// and numbers are printed as serde_json prints them. Does not depend on serde_json's
/// `preserve_order` feature, which another crate in the build may switch on.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    crate::export::hex(&Sha256::digest(data))
}

/// Why a walk stopped: at which step of the index, on what segment, and what it found there.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("attribute_index[{step}] = {segment}: {problem}")]
pub struct WalkError {
    /// Position in the index, from 0 (the record attribute).
    pub step: usize,
    pub segment: Value,
    pub problem: WalkProblem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkProblem {
    /// The first segment is not one of [`RECORD_ATTRIBUTES`].
    UnknownAttribute,
    /// A later segment is neither text nor a non-negative integer.
    BadSegment,
    /// The object has no such key; `keys` are the ones it has (sorted, at most 20).
    MissingKey {
        keys: Vec<String>,
        more: usize,
    },
    OutOfRange {
        len: usize,
    },
    /// A key asked of something that is not an object (described).
    KeyOfNonObject {
        found: String,
    },
    /// An index asked of something that is not a list (described).
    IndexOfNonList {
        found: String,
    },
}

impl fmt::Display for WalkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkProblem::UnknownAttribute => write!(
                f,
                "not a record attribute; use one of {}",
                RECORD_ATTRIBUTES.join(", ")
            ),
            WalkProblem::BadSegment => f.write_str(concat!(
                "a step after the first must be an object key (text) ",
                "or a list index (a non-negative integer)"
            )),
            WalkProblem::MissingKey { keys, more } if keys.is_empty() => {
                debug_assert_eq!(*more, 0);
                f.write_str("no such key; the object is empty")
            }
            WalkProblem::MissingKey { keys, more } => {
                write!(f, "no such key; the object has {}", keys.join(", "))?;
                if *more > 0 {
                    write!(f, " and {more} more")?;
                }
                Ok(())
            }
            WalkProblem::OutOfRange { len } => {
                write!(f, "no such index; the list has {}", items(*len))
            }
            WalkProblem::KeyOfNonObject { found } => {
                write!(f, "a key needs an object, found {found}")
            }
            WalkProblem::IndexOfNonList { found } => {
                write!(f, "an index needs a list, found {found}")
            }
        }
    }
}

fn items(n: usize) -> String {
    if n == 1 {
        "1 item".into()
    } else {
        format!("{n} items")
    }
}

/// Picks one value out of a record: the first segment names a record attribute, the rest are
/// object keys (text) or list indices (non-negative integers), never coerced into each other so a
/// typo cannot silently pick something else. An empty index yields the whole record.
pub fn walk_attribute_index(record: &ResultRecord, index: &[Value]) -> Result<Value, WalkError> {
    let Some((first, rest)) = index.split_first() else {
        return Ok(record.to_json());
    };
    let mut current = first
        .as_str()
        .and_then(|name| record.attribute(name))
        .ok_or_else(|| WalkError {
            step: 0,
            segment: first.clone(),
            problem: WalkProblem::UnknownAttribute,
        })?;
    for (i, segment) in rest.iter().enumerate() {
        current = step_into(current, segment).map_err(|problem| WalkError {
            step: i + 1,
            segment: segment.clone(),
            problem,
        })?;
    }
    Ok(current)
}

fn step_into(current: Value, segment: &Value) -> Result<Value, WalkProblem> {
    match (segment, current) {
        (Value::String(key), Value::Object(mut map)) => map.remove(key).ok_or_else(|| {
            let mut keys: Vec<String> = map.keys().cloned().collect();
            keys.sort();
            let more = keys.len().saturating_sub(20);
            keys.truncate(20);
            WalkProblem::MissingKey { keys, more }
        }),
        (Value::String(_), other) => Err(WalkProblem::KeyOfNonObject {
            found: describe(&other),
        }),
        (Value::Number(n), current) => {
            let Some(i) = n.as_u64() else {
                return Err(WalkProblem::BadSegment);
            };
            let Value::Array(list) = current else {
                return Err(WalkProblem::IndexOfNonList {
                    found: describe(&current),
                });
            };
            let len = list.len();
            usize::try_from(i)
                .ok()
                .and_then(|i| list.into_iter().nth(i))
                .ok_or(WalkProblem::OutOfRange { len })
        }
        _ => Err(WalkProblem::BadSegment),
    }
}

/// A short description of a value for error messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            let head: String = s.chars().take(40).collect();
            format!("the text \"{head}…\"")
        }
        Value::String(s) => format!("the text \"{s}\""),
        Value::Array(list) => format!("a list of {}", items(list.len())),
        Value::Object(map) if map.is_empty() => "an empty object".into(),
        Value::Object(map) => {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let more = keys.len().saturating_sub(10);
            keys.truncate(10);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("an object with keys {}{tail}", keys.join(", "))
        }
    }
}

#[cfg(test)]
mod tests;
