//! Pipeline parameters: typed, with defaults and validation. They become the trigger form, and a
//! trigger's conf is checked against them before a run exists.
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    /// The id of a connection, of `kind` when given.
    Connection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub ty: ParamType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Connection kind for `type: connection` (e.g. `imednet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Allowed values.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
}

/// One thing wrong with one parameter, for the form to show at the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

impl ParamSpec {
    /// Checks one value against the type and constraints.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        let type_ok = match self.ty {
            ParamType::String | ParamType::Connection => value.is_string(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Number => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Array => value.is_array(),
            ParamType::Object => value.is_object(),
        };
        if !type_ok {
            return Err(format!(
                "expected {}, got {}",
                type_name(self.ty),
                describe(value)
            ));
        }
        if self.ty == ParamType::Connection && value.as_str().is_some_and(|s| s.trim().is_empty()) {
            return Err("name a connection".into());
        }
        if let Some(allowed) = &self.allowed
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("must be one of {}", list.join(", ")));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = self.minimum
                && n < min
            {
                return Err(format!("must be at least {min}"));
            }
            if let Some(max) = self.maximum
                && n > max
            {
                return Err(format!("must be at most {max}"));
            }
        }
        Ok(())
    }
}

fn type_name(ty: ParamType) -> &'static str {
    match ty {
        ParamType::String => "a string",
        ParamType::Integer => "an integer",
        ParamType::Number => "a number",
        ParamType::Boolean => "true or false",
        ParamType::Array => "a list",
        ParamType::Object => "an object",
        ParamType::Connection => "a connection id",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the text \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Fills defaults and checks a trigger's conf; every problem is reported, each at its parameter.
pub fn resolve_conf(
    params: &IndexMap<String, ParamSpec>,
    conf: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<ParamError>> {
    let mut errors = Vec::new();
    for key in conf.keys() {
        if !params.contains_key(key) {
            let known: Vec<&str> = params.keys().map(String::as_str).collect();
            errors.push(ParamError {
                param: key.clone(),
                message: format!(
                    "unknown parameter; this pipeline takes {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    }
    let mut resolved = Map::new();
    for (name, spec) in params {
        let value = conf
            .get(name)
            .filter(|v| !v.is_null())
            .or(spec.default.as_ref());
        match value {
            Some(v) => match spec.check(v) {
                Ok(()) => {
                    resolved.insert(name.clone(), v.clone());
                }
                Err(message) => errors.push(ParamError {
                    param: name.clone(),
                    message,
                }),
            },
            None => errors.push(ParamError {
                param: name.clone(),
                message: "required".into(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(resolved)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> IndexMap<String, ParamSpec> {
        serde_yaml_ng::from_str(
            "connection: { type: connection, kind: imednet, default: imednet_default }\n\
             export_root: { type: string, default: exports }\n\
             batch: { type: integer, minimum: 1, maximum: 500 }\n",
        )
        .unwrap()
    }

    #[test]
    fn defaults_fill_in_and_errors_name_the_parameter() {
        let ok = resolve_conf(&params(), json!({"batch": 10}).as_object().unwrap()).unwrap();
        assert_eq!(ok["connection"], "imednet_default");
        assert_eq!(ok["export_root"], "exports");

        let errs = resolve_conf(
            &params(),
            json!({"batch": 0, "colour": "red", "export_root": 5})
                .as_object()
                .unwrap(),
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"batch: must be at least 1".to_string()),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("colour: unknown parameter")),
            "{text:?}"
        );
        assert!(
            text.contains(&"export_root: expected a string, got the number 5".to_string()),
            "{text:?}"
        );

        let missing = resolve_conf(&params(), &Map::new()).unwrap_err();
        assert_eq!(
            missing,
            vec![ParamError {
                param: "batch".into(),
                message: "required".into()
            }]
        );
    }
}
