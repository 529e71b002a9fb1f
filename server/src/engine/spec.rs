//! Pipelines as declarative YAML: parsed, validated and resolved into a [`Pipeline`].
//!
//! Every error names the file, the line and what is wrong: unknown operator, unknown upstream,
//! cycle, bad duration, template error, bad parameter, bad schedule.
use super::duration::Dur;
use super::params::ParamSpec;
use super::template::{Templates, referenced_tasks};
use crate::yaml_lines::Seg;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

fn default_16() -> u32 {
    16
}
fn default_pool() -> String {
    DEFAULT_POOL.to_string()
}
fn default_one() -> u32 {
    1
}
fn default_retry_delay() -> Dur {
    Dur::secs(300)
}
fn default_poke_interval() -> Dur {
    Dur::secs(60)
}
fn default_sensor_timeout() -> Dur {
    Dur::secs(7 * 24 * 3600)
}

pub const DEFAULT_POOL: &str = "default_pool";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Cron expression (five fields, or six with seconds first); runs are created at its ticks
    /// (no catch-up of missed ticks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default = "default_16")]
    pub max_active_runs: u32,
    #[serde(default = "default_16")]
    pub max_active_tasks: u32,
    /// Only workers advertising all these labels run this pipeline's tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub params: IndexMap<String, ParamSpec>,
    /// How long a run may take from being queued (or from its start time) to its end before
    /// `alerts.on_sla_miss` is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<Dur>,
    #[serde(default, skip_serializing_if = "AlertSpec::is_empty")]
    pub alerts: AlertSpec,
    pub tasks: IndexMap<String, TaskSpec>,
}

/// Who hears about a run's end: webhook or smtp connection ids per event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_sla_miss: Vec<String>,
}

impl AlertSpec {
    pub fn is_empty(&self) -> bool {
        self.on_failure.is_empty() && self.on_success.is_empty() && self.on_sla_miss.is_empty()
    }

    /// Whether a run's end has anyone to tell.
    pub fn on_end(&self) -> bool {
        !self.on_failure.is_empty() || !self.on_success.is_empty()
    }

    /// The targets of one event (`failure`, `success` or `sla_miss`).
    pub fn targets(&self, event: &str) -> &[String] {
        match event {
            "failure" => &self.on_failure,
            "success" => &self.on_success,
            "sla_miss" => &self.on_sla_miss,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    #[default]
    AllSuccess,
    AllFailed,
    AllDone,
    OneSuccess,
    OneFailed,
    NoneFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorMode {
    /// Holds its slot between pokes.
    #[default]
    Poke,
    /// Frees its slot between pokes.
    Reschedule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub operator: String,
    /// Arguments of an unmapped task (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Map<String, Value>>,
    /// Arguments every mapped instance shares (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Map<String, Value>>,
    /// Mapped arguments: one instance per combination (cross product) of these lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand: Option<IndexMap<String, Value>>,
    /// Mapped arguments: one instance per object of this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand_kwargs: Option<Value>,
    /// A human name for each instance, rendered with `item` (e.g. `{{ item.study_key }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_key: Option<String>,
    /// Explicit upstream tasks, beside those the templates refer to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "default_retry_delay")]
    pub retry_delay: Dur,
    #[serde(default)]
    pub retry_exponential_backoff: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_delay: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_timeout: Option<Dur>,
    #[serde(default = "default_pool")]
    pub pool: String,
    #[serde(default = "default_one")]
    pub pool_slots: u32,
    #[serde(default)]
    pub priority_weight: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_tis_per_dagrun: Option<u32>,
    #[serde(default)]
    pub trigger_rule: TriggerRule,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    // Sensor settings (ignored by other operators).
    #[serde(default)]
    pub mode: SensorMode,
    #[serde(default = "default_poke_interval")]
    pub poke_interval: Dur,
    /// Counted from the first poke; a sensor that times out is not retried.
    #[serde(default = "default_sensor_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub soft_fail: bool,
    #[serde(default)]
    pub exponential_backoff: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait: Option<Dur>,
}

impl TaskSpec {
    pub fn is_mapped(&self) -> bool {
        self.expand.is_some() || self.expand_kwargs.is_some()
    }

    /// Base arguments: `partial` for mapped tasks, `args` otherwise.
    pub fn base_args(&self) -> Map<String, Value> {
        self.partial
            .clone()
            .or_else(|| self.args.clone())
            .unwrap_or_default()
    }
}

/// A validated pipeline with its dependency graph resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub spec: PipelineSpec,
    /// Upstream task ids of each task (explicit and from template references).
    pub upstream: HashMap<String, Vec<String>>,
    /// Task ids, each after all of its upstream tasks.
    pub order: Vec<String>,
    /// Uses operators that only admins may register (e.g. `command`).
    pub admin_only: bool,
}

impl Pipeline {
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn task(&self, id: &str) -> Option<&TaskSpec> {
        self.spec.tasks.get(id)
    }

    pub fn downstream_of(&self, task: &str) -> Vec<String> {
        self.order
            .iter()
            .filter(|t| {
                self.upstream
                    .get(*t)
                    .is_some_and(|ups| ups.iter().any(|u| u == task))
            })
            .cloned()
            .collect()
    }
}

/// What is wrong with a pipeline file, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for SpecError {}

/// What validation needs to know about operators.
pub trait OperatorCatalog {
    /// `Some(admin_only)` when the operator exists.
    fn lookup(&self, name: &str) -> Option<bool>;
    fn names(&self) -> Vec<String>;
}

/// Parses and validates one pipeline file.
pub fn parse_pipeline(
    file: &str,
    source: &str,
    operators: &dyn OperatorCatalog,
) -> Result<Pipeline, SpecError> {
    let spec: PipelineSpec = serde_yaml_ng::from_str(source).map_err(|e| {
        let message = e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string();
        SpecError {
            file: file.to_string(),
            line: e
                .location()
                .map(|l| refine_line(source, l.line(), &message)),
            message,
        }
    })?;
    validate(file, source, spec, operators)
}

fn validate(
    file: &str,
    source: &str,
    spec: PipelineSpec,
    operators: &dyn OperatorCatalog,
) -> Result<Pipeline, SpecError> {
    let err = |path: &[&str], message: String| SpecError {
        file: file.to_string(),
        line: locate(source, path),
        message,
    };
    if !valid_id(&spec.id) {
        return Err(err(
            &["id"],
            format!(
                "pipeline id '{}' may use letters, digits, '_', '-' and '.' only",
                spec.id
            ),
        ));
    }
    if spec.tasks.is_empty() {
        return Err(err(&["tasks"], "a pipeline needs at least one task".into()));
    }
    if spec.max_active_runs == 0 || spec.max_active_tasks == 0 {
        return Err(err(
            &["max_active_tasks"],
            "max_active_runs and max_active_tasks must be at least 1".into(),
        ));
    }
    if let Some(cron) = &spec.schedule {
        croner::Cron::new(cron)
            .with_seconds_optional()
            .parse()
            .map_err(|e| err(&["schedule"], format!("bad schedule '{cron}': {e}")))?;
    }
    if spec.sla.is_some_and(|d| d.0.is_zero()) {
        return Err(err(&["sla"], "sla must be longer than zero".into()));
    }
    if !spec.alerts.on_sla_miss.is_empty() && spec.sla.is_none() {
        return Err(err(
            &["alerts", "on_sla_miss"],
            "alerts.on_sla_miss needs an `sla` (e.g. sla: 2h)".into(),
        ));
    }
    for (event, targets) in [
        ("on_failure", &spec.alerts.on_failure),
        ("on_success", &spec.alerts.on_success),
        ("on_sla_miss", &spec.alerts.on_sla_miss),
    ] {
        if let Some(bad) = targets.iter().find(|t| !valid_id(t)) {
            return Err(err(
                &["alerts", event],
                format!("alerts.{event}: '{bad}' is not a connection id"),
            ));
        }
    }
    for (name, param) in &spec.params {
        if let Some(default) = &param.default {
            param.check(default).map_err(|m| {
                err(
                    &["params", name],
                    format!("default of parameter '{name}': {m}"),
                )
            })?;
        }
    }

    let templates = Templates::default();
    let mut admin_only = false;
    let mut upstream = HashMap::new();
    for (id, task) in &spec.tasks {
        let at = |field: &'static str| vec!["tasks", id.as_str(), field];
        if !valid_id(id) {
            return Err(err(
                &["tasks", id],
                format!("task id '{id}' may use letters, digits, '_', '-' and '.' only"),
            ));
        }
        match operators.lookup(&task.operator) {
            Some(restricted) => admin_only |= restricted,
            None => {
                return Err(err(
                    &at("operator"),
                    format!(
                        "task '{id}': unknown operator '{}'; known: {}",
                        task.operator,
                        operators.names().join(", ")
                    ),
                ));
            }
        }
        if task.expand.is_some() && task.expand_kwargs.is_some() {
            return Err(err(
                &at("expand"),
                format!("task '{id}': use expand or expand_kwargs, not both"),
            ));
        }
        if !task.is_mapped() && (task.partial.is_some() || task.map_key.is_some()) {
            return Err(err(
                &at("partial"),
                format!("task '{id}': partial and map_key need expand or expand_kwargs"),
            ));
        }
        if task.is_mapped() && task.args.is_some() {
            return Err(err(
                &at("args"),
                format!("task '{id}': a mapped task takes partial, not args"),
            ));
        }
        if task.pool_slots == 0 {
            return Err(err(
                &at("pool_slots"),
                format!("task '{id}': pool_slots must be at least 1"),
            ));
        }
        if task.max_active_tis_per_dagrun == Some(0) {
            return Err(err(
                &at("max_active_tis_per_dagrun"),
                format!("task '{id}': max_active_tis_per_dagrun must be at least 1"),
            ));
        }

        let mut refs = Vec::new();
        let mut templated: Vec<(&str, Value)> = vec![("args", Value::Object(task.base_args()))];
        if let Some(expand) = &task.expand {
            templated.push(("expand", serde_json::to_value(expand).unwrap_or_default()));
        }
        if let Some(kwargs) = &task.expand_kwargs {
            templated.push(("expand_kwargs", kwargs.clone()));
        }
        if let Some(key) = &task.map_key {
            templated.push(("map_key", Value::String(key.clone())));
        }
        for (field, value) in &templated {
            let field = if *field == "args" && task.is_mapped() {
                "partial"
            } else {
                field
            };
            templates
                .check(value, &format!("tasks.{id}.{field}"))
                .map_err(|m| err(&at(field), m))?;
            referenced_tasks(value, &mut refs);
        }
        for up in task.upstream.iter().chain(refs.iter()) {
            if up == id {
                return Err(err(
                    &["tasks", id],
                    format!("task '{id}' depends on itself"),
                ));
            }
            if !spec.tasks.contains_key(up) {
                return Err(err(
                    &["tasks", id],
                    format!("task '{id}': unknown upstream task '{up}'"),
                ));
            }
        }
        let mut ups: Vec<String> = task.upstream.clone();
        for r in refs {
            if !ups.contains(&r) {
                ups.push(r);
            }
        }
        upstream.insert(id.clone(), ups);
    }

    let order = topological_order(&spec, &upstream).map_err(|cycle| {
        err(
            &["tasks", cycle[0].as_str()],
            format!("cycle between tasks: {}", cycle.join(" → ")),
        )
    })?;
    Ok(Pipeline {
        spec,
        upstream,
        order,
        admin_only,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Kahn's algorithm in declaration order; on a cycle, returns one cycle's path.
fn topological_order(
    spec: &PipelineSpec,
    upstream: &HashMap<String, Vec<String>>,
) -> Result<Vec<String>, Vec<String>> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < spec.tasks.len() {
        let next = spec.tasks.keys().find(|t| {
            !done.contains(t.as_str()) && upstream[*t].iter().all(|u| done.contains(u.as_str()))
        });
        match next {
            Some(t) => {
                done.insert(t);
                order.push(t.clone());
            }
            None => {
                // Walk upstream from any remaining task until a task repeats.
                let start = spec
                    .tasks
                    .keys()
                    .find(|t| !done.contains(t.as_str()))
                    .cloned()
                    .unwrap_or_default();
                let mut path = vec![start.clone()];
                let mut current = start;
                loop {
                    let Some(next) = upstream[&current]
                        .iter()
                        .find(|u| !done.contains(u.as_str()))
                    else {
                        return Err(path);
                    };
                    if let Some(pos) = path.iter().position(|p| p == next) {
                        let mut cycle = path[pos..].to_vec();
                        cycle.reverse();
                        cycle.push(cycle[0].clone());
                        return Err(cycle);
                    }
                    path.push(next.clone());
                    current = next.clone();
                }
            }
        }
    }
    Ok(order)
}

/// The parser places errors inside a nested map at the map's first line; when the message quotes
/// the offending text (`'10x'`, `` `colour` ``), point at the line that holds it instead.
fn refine_line(source: &str, line: usize, message: &str) -> usize {
    let quoted = [('\'', '\''), ('`', '`')].iter().find_map(|(open, close)| {
        let start = message.find(*open)? + 1;
        let len = message[start..].find(*close)?;
        Some(&message[start..start + len])
    });
    let Some(needle) = quoted.filter(|q| !q.is_empty()) else {
        return line;
    };
    source
        .lines()
        .enumerate()
        .skip(line.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map_or(line, |(n, _)| n + 1)
}

/// The 1-based line of a nested key (`tasks` → `export` → `retries`), or of the deepest key found.
pub fn locate(source: &str, path: &[&str]) -> Option<usize> {
    let path: Vec<Seg> = path.iter().map(|key| Seg::Key(key)).collect();
    crate::yaml_lines::locate(source, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ops;
    impl OperatorCatalog for Ops {
        fn lookup(&self, name: &str) -> Option<bool> {
            match name {
                "noop" | "echo" | "imednet.export" | "imednet.discover_export_targets" => {
                    Some(false)
                }
                "command" => Some(true),
                _ => None,
            }
        }
        fn names(&self) -> Vec<String> {
            vec!["noop".into(), "echo".into()]
        }
    }

    const REFERENCE: &str = r#"
id: imednet_multi_study_reference
max_active_runs: 1
max_active_tasks: 8
params:
  connection: { type: connection, kind: imednet, default: imednet_default }
  export_root: { type: string, default: exports }
tasks:
  discover_studies:
    operator: imednet.discover_export_targets
    retries: 1
    retry_delay: 2m
    execution_timeout: 5m
    args: { connection: "{{ params.connection }}", output_root: "{{ params.export_root }}" }
  export_records:
    operator: imednet.export
    pool: imednet_exports
    retries: 3
    retry_delay: 10m
    execution_timeout: 30m
    partial: { connection: "{{ params.connection }}" }
    expand_kwargs: "{{ tasks.discover_studies.output }}"
    map_key: "{{ item.study_key }}"
"#;

    fn parse(src: &str) -> Result<Pipeline, SpecError> {
        parse_pipeline("p.yaml", src, &Ops)
    }

    #[test]
    fn the_reference_dag_is_expressible() {
        let p = parse(REFERENCE).unwrap();
        assert_eq!(p.order, vec!["discover_studies", "export_records"]);
        assert_eq!(p.upstream["export_records"], vec!["discover_studies"]);
        let export = p.task("export_records").unwrap();
        assert_eq!(
            (export.retries, export.retry_delay, export.execution_timeout),
            (3, Dur::secs(600), Some(Dur::secs(1800)))
        );
        assert_eq!(p.spec.max_active_tasks, 8);
        assert!(!p.admin_only);
    }

    #[test]
    fn errors_give_file_line_and_reason() {
        let e = parse(&REFERENCE.replace("imednet.export\n", "imednet.exprot\n")).unwrap_err();
        assert_eq!(e.line, Some(16));
        assert!(
            e.to_string()
                .starts_with("p.yaml:16: task 'export_records': unknown operator 'imednet.exprot'"),
            "{e}"
        );

        let e = parse(&REFERENCE.replace("retry_delay: 10m", "retry_delay: 10x")).unwrap_err();
        assert_eq!(e.line, Some(19), "{e}");
        assert!(e.message.contains("bad duration '10x'"), "{e}");

        let e = parse(&REFERENCE.replace("tasks.discover_studies.output", "tasks.discover.output"))
            .unwrap_err();
        assert!(
            e.message.contains("unknown upstream task 'discover'"),
            "{e}"
        );
        assert_eq!(e.line, Some(15));

        let e =
            parse(&REFERENCE.replace("{{ item.study_key }}", "{{ item.study_key ")).unwrap_err();
        assert!(
            e.message
                .starts_with("template error in tasks.export_records.map_key"),
            "{e}"
        );

        let e = parse(&REFERENCE.replace("    retries: 1\n", "    retries: 1\n    colour: blue\n"))
            .unwrap_err();
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        assert_eq!(e.line, Some(12));
    }

    #[test]
    fn cycles_are_named() {
        let src = "id: c\ntasks:\n  a: { operator: noop, upstream: [c] }\n  b: { operator: noop, upstream: [a] }\n  c: { operator: noop, upstream: [b] }\n";
        let e = parse(src).unwrap_err();
        assert!(e.message.starts_with("cycle between tasks: "), "{e}");
        for t in ["a", "b", "c"] {
            assert!(e.message.contains(t), "{e}");
        }
        let e = parse("id: s\ntasks:\n  a: { operator: noop, upstream: [a] }\n").unwrap_err();
        assert!(e.message.contains("depends on itself"), "{e}");
    }

    #[test]
    fn command_pipelines_need_an_admin() {
        let p = parse("id: c\ntasks:\n  run: { operator: command, args: { argv: [\"true\"] } }\n")
            .unwrap();
        assert!(p.admin_only);
    }

    #[test]
    fn bad_schedule_and_params_are_refused() {
        let e =
            parse("id: s\nschedule: \"not cron\"\ntasks:\n  a: { operator: noop }\n").unwrap_err();
        assert!(e.message.starts_with("bad schedule 'not cron'"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = parse("id: s\nparams:\n  n: { type: integer, default: \"x\" }\ntasks:\n  a: { operator: noop }\n").unwrap_err();
        assert!(e.message.contains("default of parameter 'n'"), "{e}");
    }
}
