//! Templated arguments, rendered with minijinja over params, run metadata and upstream results.
//!
//! A string that is exactly one expression (`"{{ tasks.discover.output }}"`) evaluates to the
//! value itself — a list stays a list — so mapping inputs can come from upstream results. Any
//! other string with template syntax renders to text. Undefined names are errors, not blanks.
use minijinja::{Environment, UndefinedBehavior};
use regex::Regex;
use serde_json::Value;
use std::sync::LazyLock;

pub struct Templates {
    env: Environment<'static>,
}

static SINGLE_EXPRESSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*\{\{(?P<expr>(?s:.)*?)\}\}\s*$").expect("valid regex"));
static TASK_REFERENCE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\btasks\.([A-Za-z_][A-Za-z0-9_]*)").expect("valid regex"));

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// The expression inside a string that is one `{{ … }}` and nothing else.
fn single_expression(s: &str) -> Option<&str> {
    let caps = SINGLE_EXPRESSION.captures(s)?;
    let expr = caps.name("expr")?.as_str();
    (!expr.contains("}}") && !expr.contains("{{")).then_some(expr)
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        Templates { env }
    }
}

impl Templates {
    /// Checks every template inside `value` compiles; the error names the path.
    pub fn check(&self, value: &Value, path: &str) -> Result<(), String> {
        match value {
            Value::String(s) if is_template(s) => {
                let result = match single_expression(s) {
                    Some(expr) => self.env.compile_expression(expr).map(|_| ()),
                    None => self.env.template_from_str(s).map(|_| ()),
                };
                result.map_err(|e| format!("template error in {path}: {}", describe(&e)))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| self.check(v, &format!("{path}[{i}]"))),
            Value::Object(map) => map
                .iter()
                .try_for_each(|(k, v)| self.check(v, &format!("{path}.{k}"))),
            _ => Ok(()),
        }
    }

    /// Renders every template inside `value` against `ctx`.
    pub fn render(&self, value: &Value, ctx: &Value, path: &str) -> Result<Value, String> {
        match value {
            Value::String(s) if is_template(s) => {
                let ctx = minijinja::Value::from_serialize(ctx);
                match single_expression(s) {
                    Some(expr) => {
                        let compiled = self
                            .env
                            .compile_expression(expr)
                            .map_err(|e| format!("template error in {path}: {}", describe(&e)))?;
                        let out = compiled
                            .eval(ctx)
                            .map_err(|e| format!("cannot render {path}: {}", describe(&e)))?;
                        if out.is_undefined() {
                            return Err(format!(
                                "cannot render {path}: '{}' is undefined",
                                expr.trim()
                            ));
                        }
                        serde_json::to_value(&out).map_err(|e| format!("cannot render {path}: {e}"))
                    }
                    None => self
                        .env
                        .render_str(s, ctx)
                        .map(Value::String)
                        .map_err(|e| format!("cannot render {path}: {}", describe(&e))),
                }
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.render(v, ctx, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render(v, ctx, &format!("{path}.{k}"))?)))
                .collect::<Result<serde_json::Map<_, _>, String>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }
}

/// Names of tasks a value's templates refer to (`tasks.<id>`), in order of first mention.
pub fn referenced_tasks(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if is_template(s) => {
            for cap in TASK_REFERENCE.captures_iter(s) {
                let name = cap[1].to_string();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| referenced_tasks(v, out)),
        Value::Object(map) => map.values().for_each(|v| referenced_tasks(v, out)),
        _ => {}
    }
}

/// minijinja's message plus what it says about where, without its debug dump.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{} ({detail})", e.kind()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lone_expression_keeps_its_type() {
        let t = Templates::default();
        let ctx = json!({"tasks": {"discover": {"output": [{"study_key": "A"}, {"study_key": "B"}]}}, "params": {"root": "out"}});
        let list = t
            .render(&json!("{{ tasks.discover.output }}"), &ctx, "expand_kwargs")
            .unwrap();
        assert_eq!(list, json!([{"study_key": "A"}, {"study_key": "B"}]));
        let text = t
            .render(&json!("{{ params.root }}/x.csv"), &ctx, "args.path")
            .unwrap();
        assert_eq!(text, json!("out/x.csv"));
        let nested = t
            .render(&json!({"a": ["{{ params.root }}", 3]}), &ctx, "args")
            .unwrap();
        assert_eq!(nested, json!({"a": ["out", 3]}));
    }

    #[test]
    fn undefined_names_and_bad_syntax_are_errors_naming_the_path() {
        let t = Templates::default();
        let err = t
            .render(
                &json!("{{ params.missing }}"),
                &json!({"params": {}}),
                "args.x",
            )
            .unwrap_err();
        assert!(err.contains("args.x"), "{err}");
        let err = t
            .check(&json!({"y": "{{ oops( }}"}), "tasks.t.args")
            .unwrap_err();
        assert!(err.starts_with("template error in tasks.t.args.y"), "{err}");
    }

    #[test]
    fn finds_task_references() {
        let mut out = Vec::new();
        referenced_tasks(
            &json!({"a": "{{ tasks.discover.output }}", "b": ["{{ tasks.x.output[0] }} {{ tasks.discover.output }}"]}),
            &mut out,
        );
        assert_eq!(out, vec!["discover", "x"]);
    }
}
