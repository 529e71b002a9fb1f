//! The flow registry: pipelines and flows of flows registered as versioned flows.
//!
//! A flow is a pipeline with a project. A flow of flows is compiled into a pipeline too: one
//! `flows.run_child` task per child, in list order, whose parameters are the exposed top-level
//! parameters (`<flow>-<param>`) or the results of parent tasks in the same run. Registering an
//! unchanged flow returns the same version; a changed one becomes the next version.
use super::results::{canonical_json, sha256_hex};
use super::spec::{
    ChildParam, Composition, FlowCatalog, FlowShape, MapType, Produces, SpecError,
    parse_flow_of_flows,
};
use crate::engine::Engine;
use crate::engine::spec::Pipeline;
use crate::operators::flows::RESULT_KEY;
use crate::store::flows::{FlowRow, NewFlow};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Everything wrong with the YAML, each `file:line: message`.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Spec(Vec<SpecError>),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What registering answered.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Registered {
    pub flow_id: i64,
    pub project: String,
    pub name: String,
    pub version: i64,
    pub kind: String,
    /// False when this exact definition was already registered.
    pub created: bool,
}

impl From<FlowRow> for Registered {
    fn from(row: FlowRow) -> Self {
        Registered {
            flow_id: row.id,
            project: row.project,
            name: row.name,
            version: row.version,
            kind: row.kind,
            created: true,
        }
    }
}

fn spec_error(file: &str, e: SpecError) -> RegistryError {
    RegistryError::Spec(vec![SpecError {
        file: file.to_string(),
        ..e
    }])
}

fn check_project(file: &str, project: &str) -> Result<(), RegistryError> {
    let ok = !project.is_empty()
        && project.len() <= 200
        && project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Spec(vec![SpecError {
            file: file.to_string(),
            line: None,
            message: format!("project '{project}' may use letters, digits, '_', '-' and '.' only"),
        }]))
    }
}

/// A flow name belongs to one project: the engine runs flows by name.
async fn check_name_free(engine: &Engine, project: &str, name: &str) -> Result<(), RegistryError> {
    if let Some(other) = engine
        .db
        .latest_flows()
        .await?
        .into_iter()
        .find(|f| f.name == name && f.project != project)
    {
        return Err(RegistryError::Conflict(format!(
            "a flow named {name} is registered in project {}",
            other.project
        )));
    }
    Ok(())
}

/// What a task hands on, judged from its operator.
fn produces(operator: &str) -> Produces {
    match operator {
        "file.save" => Produces::FileRef,
        "results.save" => Produces::ResultRef,
        "echo" | "command" | "flows.run_child" => Produces::Unknown,
        _ => Produces::Value,
    }
}

fn shape(p: &Pipeline) -> FlowShape {
    FlowShape {
        params: p
            .spec
            .params
            .iter()
            .map(|(name, spec)| ChildParam {
                name: name.clone(),
                required: spec.default.is_none(),
            })
            .collect(),
        tasks: p
            .order
            .iter()
            .filter_map(|t| p.task(t).map(|spec| (t.clone(), produces(&spec.operator))))
            .collect(),
    }
}

fn parameters_json(p: &Pipeline) -> String {
    let params: Map<String, Value> = p
        .spec
        .params
        .iter()
        .map(|(name, spec)| {
            (
                name.clone(),
                json!({"type": spec.ty, "default": spec.default, "required": spec.default.is_none()}),
            )
        })
        .collect();
    canonical_json(&Value::Object(params))
}

/// Stable names for tasks: lower case, words joined by `-`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn task_slugs_json(p: &Pipeline) -> String {
    let slugs: Map<String, Value> = p
        .order
        .iter()
        .map(|t| (t.clone(), Value::from(slug(t))))
        .collect();
    canonical_json(&Value::Object(slugs))
}

/// Registers a pipeline as flow `project/<pipeline id>`.
pub async fn register_pipeline(
    engine: &Engine,
    project: &str,
    file: &str,
    source: &str,
    actor: &str,
    allow_admin_only: bool,
) -> Result<Registered, RegistryError> {
    check_project(file, project)?;
    // Check the name before the catalog is touched.
    let id = crate::engine::spec::parse_pipeline(file, source, &engine.registry)
        .map_err(|e| spec_error(file, e))?
        .id()
        .to_string();
    check_name_free(engine, project, &id).await?;
    let pipeline = engine
        .catalog
        .register(
            &engine.db,
            &engine.registry,
            file,
            source,
            "flow",
            allow_admin_only,
        )
        .await
        .map_err(|e| spec_error(file, e))?;
    let spec = canonical_json(&serde_json::to_value(&pipeline.spec).unwrap_or(Value::Null));
    let (row, created) = engine
        .db
        .register_flow_version(&NewFlow {
            project,
            name: pipeline.id(),
            kind: "pipeline",
            source,
            spec: &spec,
            hash: &sha256_hex(spec.as_bytes()),
            labels: &pipeline.spec.labels.join(","),
            parameters: &parameters_json(&pipeline),
            task_slugs: &task_slugs_json(&pipeline),
            created_by: actor,
        })
        .await?;
    Ok(Registered {
        created,
        ..row.into()
    })
}

/// The registered flows as the composition validator sees them.
struct Snapshot {
    shapes: HashMap<(String, String), FlowShape>,
}

impl FlowCatalog for Snapshot {
    fn flow(&self, project: &str, name: &str) -> Option<FlowShape> {
        self.shapes
            .get(&(project.to_string(), name.to_string()))
            .cloned()
    }
}

async fn snapshot(
    engine: &Engine,
) -> Result<(Snapshot, HashMap<String, Arc<Pipeline>>), RegistryError> {
    let mut shapes = HashMap::new();
    let mut pipelines = HashMap::new();
    for flow in engine.db.latest_flows().await? {
        if let Some(p) = engine.catalog.find(&engine.db, &flow.name).await {
            shapes.insert((flow.project.clone(), flow.name.clone()), shape(&p));
            pipelines.insert(flow.name.clone(), p);
        }
    }
    Ok((Snapshot { shapes }, pipelines))
}

/// Parses and validates a flow of flows against the registered flows, without storing it.
pub async fn validate_composition(
    engine: &Engine,
    file: &str,
    source: &str,
) -> Result<Composition, RegistryError> {
    let (snapshot, _) = snapshot(engine).await?;
    parse_flow_of_flows(file, source, &snapshot).map_err(RegistryError::Spec)
}

/// Task ids of the compiled pipeline: the child's name made template-safe, unique.
fn task_ids(c: &Composition) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for child in &c.children {
        let mut id: String = child
            .name
            .chars()
            .map(|ch| {
                if ch.is_ascii_alphanumeric() || ch == '_' {
                    ch
                } else {
                    '_'
                }
            })
            .collect();
        if id.is_empty() || id.starts_with(|ch: char| ch.is_ascii_digit()) {
            id.insert(0, 'f');
        }
        while ids.contains(&id) {
            id.push_str(&format!("_{}", child.index));
        }
        ids.push(id);
    }
    ids
}

/// The pipeline that runs a flow of flows.
pub fn compile(c: &Composition, children: &HashMap<String, Arc<Pipeline>>) -> Value {
    let ids = task_ids(c);
    let mut params = Map::new();
    let mut tasks = Map::new();
    for (i, child) in c.children.iter().enumerate() {
        let mut parameters = Map::new();
        for exposed in &child.exposed_params {
            if let Some(spec) = children
                .get(&child.name)
                .and_then(|p| p.spec.params.get(&exposed.param))
            {
                params.insert(
                    exposed.top_level_name.clone(),
                    serde_json::to_value(spec).unwrap_or(Value::Null),
                );
            }
            parameters.insert(
                exposed.param.clone(),
                Value::from(format!("{{{{ params['{}'] }}}}", exposed.top_level_name)),
            );
        }
        for (param, m) in &child.mappings {
            let result = format!(
                "{{{{ tasks.{}.output.results['{}'] }}}}",
                ids[m.parent_index], m.parent_task
            );
            let value = match m.map_type {
                MapType::Raw | MapType::File => Value::from(result),
                MapType::Db => json!({RESULT_KEY: result, "attribute_index": m.attribute_index}),
            };
            parameters.insert(param.clone(), value);
        }
        let mut task = json!({
            "operator": "flows.run_child",
            "args": {"flow": child.name, "project": child.project, "parameters": parameters},
        });
        if i > 0 {
            task["upstream"] = json!([ids[i - 1]]);
        }
        tasks.insert(ids[i].clone(), task);
    }
    let chain: Vec<&str> = c.children.iter().map(|ch| ch.name.as_str()).collect();
    let mut pipeline = json!({
        "id": c.name,
        "description": if c.description.is_empty() {
            format!("Flow of flows: {}", chain.join(" → "))
        } else {
            c.description.clone()
        },
        "tags": ["flow-of-flows", c.project],
        "params": params,
        "tasks": tasks,
    });
    if !c.labels.is_empty() {
        pipeline["labels"] = json!(c.labels);
    }
    pipeline
}

/// Registers a flow of flows: validated against the registered flows, compiled into a pipeline
/// and stored with its mappings.
pub async fn register_composition(
    engine: &Engine,
    file: &str,
    source: &str,
    actor: &str,
) -> Result<Registered, RegistryError> {
    let (snapshot, pipelines) = snapshot(engine).await?;
    let composition = parse_flow_of_flows(file, source, &snapshot).map_err(RegistryError::Spec)?;
    check_name_free(engine, &composition.project, &composition.name).await?;
    let compiled = compile(&composition, &pipelines);
    let yaml = serde_yaml_ng::to_string(&compiled).map_err(|e| {
        RegistryError::Conflict(format!("compiling {} failed: {e}", composition.name))
    })?;
    let pipeline = engine
        .catalog
        .register(&engine.db, &engine.registry, file, &yaml, "flow", false)
        .await
        .map_err(|e| spec_error(file, e))?;
    let spec = composition.canonical_json();
    let (row, created) = engine
        .db
        .register_flow_version(&NewFlow {
            project: &composition.project,
            name: &composition.name,
            kind: "composition",
            source,
            spec: &spec,
            hash: &composition.version_hash(),
            labels: &composition.labels.join(","),
            parameters: &parameters_json(&pipeline),
            task_slugs: &task_slugs_json(&pipeline),
            created_by: actor,
        })
        .await?;
    Ok(Registered {
        created,
        ..row.into()
    })
}

/// Registers either kind: a document with `composing_flows` is a flow of flows.
pub async fn register(
    engine: &Engine,
    project: &str,
    file: &str,
    source: &str,
    actor: &str,
    allow_admin_only: bool,
) -> Result<Registered, RegistryError> {
    if is_composition(source) {
        register_composition(engine, file, source, actor).await
    } else {
        register_pipeline(engine, project, file, source, actor, allow_admin_only).await
    }
}

/// The example flows shipped in the binary (`server/flows/`), in registration order: three flows
/// of project `trials` and the flow of flows that composes them.
pub const EXAMPLES: [(&str, &str); 4] = [
    (
        "export_studies.yaml",
        include_str!("../../flows/export_studies.yaml"),
    ),
    (
        "summarize_exports.yaml",
        include_str!("../../flows/summarize_exports.yaml"),
    ),
    (
        "publish_exports.yaml",
        include_str!("../../flows/publish_exports.yaml"),
    ),
    (
        "nightly_exports.yaml",
        include_str!("../../flows/nightly_exports.yaml"),
    ),
];

/// Registers the example flows (unchanged ones keep their version).
pub async fn install_examples(
    engine: &Engine,
    actor: &str,
) -> Result<Vec<Registered>, RegistryError> {
    let mut out = Vec::new();
    for (file, source) in EXAMPLES {
        out.push(register(engine, "trials", file, source, actor, false).await?);
    }
    Ok(out)
}

pub fn is_composition(source: &str) -> bool {
    serde_yaml_ng::from_str::<Value>(source)
        .ok()
        .is_some_and(|v| v.get("composing_flows").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lower_case_words_joined_by_dashes() {
        assert_eq!(slug("Export_Records"), "export-records");
        assert_eq!(slug("save  file!"), "save-file");
    }

    #[test]
    fn documents_with_composing_flows_are_compositions() {
        assert!(is_composition("name: a\ncomposing_flows: []\n"));
        assert!(!is_composition("id: a\ntasks: {}\n"));
        assert!(!is_composition(": not yaml"));
    }
}
