//! Operators of flows of flows: `flows.run_child` (runs a child flow and returns its tasks'
//! results), `file.save` / `file.load` (file references between flows), `results.save` (a result
//! record in the result store, returned as a reference) and `assert.equal`.
use super::{Operator, TaskContext, TaskError, typed};
use crate::flows::files::{self, FileRef, FileType, Resolved};
use crate::flows::results::{
    GENERIC_RESULT_TYPE, ResultRecord, ResultRef, canonical_json, walk_attribute_index,
};
use crate::store::flows::ResultRow;
use crate::store::now_ms;
use app::state::RunState;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The key that marks a parameter to be resolved from the result store before the child runs.
pub const RESULT_KEY: &str = "$result";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunChildArgs {
    flow: String,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Runs a child flow with the given parameters and waits for it; fails when it fails. Parameters
/// of the form `{"$result": <result reference>, "attribute_index": [...]}` are loaded from the
/// result store and walked first (a `db` mapping).
pub struct RunChild;

/// What a stored result reference resolves to, walked by `attribute_index`.
pub async fn resolve_result(
    db: &crate::store::Db,
    reference: &Value,
    index: &[Value],
) -> Result<Value, String> {
    let reference: ResultRef = serde_json::from_value(reference.clone()).map_err(|e| {
        format!("expected a result reference {{project_name, result_type_string, query: {{unique_hash}}}}: {e}")
    })?;
    let row = db
        .result_by_hash(&reference.project_name, &reference.query.unique_hash)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no stored result {} in project {}",
                reference.query.unique_hash, reference.project_name
            )
        })?;
    let record = ResultRecord {
        flow_id: row.flow_id,
        project_name: row.project_name,
        inputs: serde_json::from_str(&row.inputs).unwrap_or(Value::Null),
        outputs: serde_json::from_str(&row.outputs).unwrap_or(Value::Null),
        date_modified_ms: row.date_modified,
        result_type_string: row.result_type_string,
        unique_hash: row.unique_hash,
    };
    walk_attribute_index(&record, index).map_err(|e| e.to_string())
}

#[async_trait]
impl Operator for RunChild {
    fn name(&self) -> &'static str {
        "flows.run_child"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        typed::<RunChildArgs>(args).map(|_| ())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let args: RunChildArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        let mut passed = Map::new();
        for (name, value) in &args.parameters {
            let resolved = match value.get(RESULT_KEY) {
                Some(reference) => {
                    let index: Vec<Value> = value
                        .get("attribute_index")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    resolve_result(&ctx.services.db, reference, &index)
                        .await
                        .map_err(|e| TaskError::Fatal(format!("parameter {name}: {e}")))?
                }
                None => value.clone(),
            };
            passed.insert(name.clone(), resolved);
        }
        let parent = ctx
            .services
            .db
            .run_row(ctx.run_id)
            .await
            .map_err(|e| TaskError::Retryable(e.to_string()))?;
        // A child runs where its parent may: the parent run's labels and the flow of flows' own.
        let mut labels: Vec<String> = Vec::new();
        if let Some(run) = &parent {
            labels.extend(
                run.labels
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
            labels.extend(ctx.launcher.pipeline_labels(run));
        }
        let by = format!("{} run {}", ctx.pipeline_id, ctx.run_id);
        let child = ctx
            .launcher
            .launch(super::Launch {
                pipeline_id: args.flow.clone(),
                conf: passed.clone(),
                by: by.clone(),
                labels,
                run_name: Some(format!(
                    "{} run {} · {}",
                    ctx.pipeline_id, ctx.run_id, args.flow
                )),
            })
            .await
            .map_err(|e| TaskError::Fatal(format!("starting flow {}: {e}", args.flow)))?;
        ctx.log
            .info(format!("started run {child} of flow {}", args.flow))
            .await;
        let state = tokio::select! {
            r = ctx.launcher.wait(child, Duration::from_secs(7 * 24 * 3600)) => {
                r.map_err(|e| TaskError::Retryable(format!("waiting for run {child}: {e}")))?
            }
            () = ctx.cancel.cancelled() => {
                let _ = ctx.launcher.cancel(child, &by).await;
                return Err(TaskError::Retryable("cancelled".into()));
            }
        };
        if state != RunState::Success {
            return Err(TaskError::Fatal(format!(
                "flow {} (run {child}) ended {state}",
                args.flow
            )));
        }
        let results = ctx
            .launcher
            .results(child)
            .await
            .map_err(TaskError::Retryable)?;
        ctx.log
            .info(format!("run {child} of flow {} succeeded", args.flow))
            .await;
        Ok(json!({
            "flow": args.flow,
            "project": args.project,
            "run_id": child,
            "parameters": Value::Object(passed),
            "references": Value::Object(args.parameters),
            "results": results,
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveFileArgs {
    content: Value,
    filename: String,
    #[serde(default = "text_type")]
    file_type: String,
    #[serde(default = "local_fs")]
    filesystem: String,
    /// The AWS connection for an `s3` filesystem.
    #[serde(default = "aws_default")]
    aws_conn_id: String,
}

fn aws_default() -> String {
    "aws_default".into()
}

async fn s3_store(ctx: &TaskContext, conn_id: &str) -> Result<crate::objstore::S3Store, TaskError> {
    ctx.services
        .connections
        .aws(conn_id)
        .await
        .and_then(|s| s.store())
        .map_err(|e| TaskError::Fatal(e.to_string()))
}

fn text_type() -> String {
    "text".into()
}
fn local_fs() -> String {
    "local".into()
}

fn file_type(name: &str) -> Result<FileType, String> {
    match name.to_ascii_lowercase().as_str() {
        "text" => Ok(FileType::Text),
        "json" => Ok(FileType::Json),
        "yaml" => Ok(FileType::Yaml),
        "binary" => Ok(FileType::Binary),
        _ => FileType::parse(name).map_err(|e| e.to_string()),
    }
}

/// Writes `content` as a text, JSON, YAML or binary (base64) file and returns its reference.
pub struct SaveFile;

#[async_trait]
impl Operator for SaveFile {
    fn name(&self) -> &'static str {
        "file.save"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let a: SaveFileArgs = typed(args)?;
        file_type(&a.file_type).map(|_| ())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let a: SaveFileArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        let ty = file_type(&a.file_type).map_err(TaskError::Fatal)?;
        let reference = FileRef::new(&a.filename, ty, &a.filesystem);
        let (place, _) = ctx
            .services
            .filesystems
            .resolve(&reference)
            .map_err(|e| TaskError::Fatal(e.to_string()))?;
        let bytes = files::encode(&a.content, ty).map_err(|e| TaskError::Fatal(e.to_string()))?;
        let path = match place {
            Resolved::Path(path) => path,
            Resolved::S3 { bucket, key } => {
                let store = s3_store(ctx, &a.aws_conn_id).await?;
                store
                    .put_bytes(&bucket, &key, bytes.clone(), "application/octet-stream")
                    .await
                    .map_err(|e| {
                        TaskError::Retryable(format!("writing s3://{bucket}/{key}: {e}"))
                    })?;
                ctx.log
                    .info(format!(
                        "wrote {} bytes to s3://{bucket}/{key}",
                        bytes.len()
                    ))
                    .await;
                return serde_json::to_value(&reference)
                    .map_err(|e| TaskError::Fatal(e.to_string()));
            }
        };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| TaskError::Retryable(format!("creating {}: {e}", dir.display())))?;
        }
        tokio::fs::write(&path, &bytes)
            .await
            .map_err(|e| TaskError::Retryable(format!("writing {}: {e}", path.display())))?;
        ctx.log
            .info(format!("wrote {} bytes to {}", bytes.len(), a.filename))
            .await;
        serde_json::to_value(&reference).map_err(|e| TaskError::Fatal(e.to_string()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadFileArgs {
    file: FileRef,
    #[serde(default = "aws_default")]
    aws_conn_id: String,
}

/// Reads the file a reference names and returns its content (text, JSON/YAML value, base64).
pub struct LoadFile;

#[async_trait]
impl Operator for LoadFile {
    fn name(&self) -> &'static str {
        "file.load"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let a: LoadFileArgs = typed(args)?;
        a.file.file_type().map(|_| ()).map_err(|e| e.to_string())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let a: LoadFileArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        let (place, ty) = ctx
            .services
            .filesystems
            .resolve(&a.file)
            .map_err(|e| TaskError::Fatal(e.to_string()))?;
        let bytes = match place {
            Resolved::Path(path) => tokio::fs::read(&path)
                .await
                .map_err(|e| TaskError::Fatal(format!("reading {}: {e}", a.file.filename)))?,
            Resolved::S3 { bucket, key } => s3_store(ctx, &a.aws_conn_id)
                .await?
                .get_bytes(&bucket, &key)
                .await
                .map_err(|e| TaskError::Retryable(format!("reading s3://{bucket}/{key}: {e}")))?,
        };
        files::decode(&bytes, ty).map_err(|e| TaskError::Fatal(e.to_string()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveResultArgs {
    project: String,
    #[serde(default)]
    inputs: Value,
    outputs: Value,
    #[serde(default)]
    result_type: Option<String>,
}

/// Stores `{inputs, outputs}` in the result store under the running flow's id and returns the
/// reference a `db` mapping resolves. The same content twice is stored once.
pub struct SaveResult;

#[async_trait]
impl Operator for SaveResult {
    fn name(&self) -> &'static str {
        "results.save"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let a: SaveResultArgs = typed(args)?;
        if a.project.trim().is_empty() {
            return Err("project is empty".into());
        }
        Ok(())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let a: SaveResultArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        // The flow id of the running pipeline's newest registered version, else its id.
        let flow_id = ctx
            .services
            .db
            .latest_flow(&a.project, &ctx.pipeline_id)
            .await
            .map_err(|e| TaskError::Retryable(e.to_string()))?
            .map_or_else(|| ctx.pipeline_id.clone(), |f| f.id.to_string());
        let record = ResultRecord::new(
            &flow_id,
            &a.project,
            a.result_type.as_deref().unwrap_or(GENERIC_RESULT_TYPE),
            a.inputs,
            a.outputs,
            now_ms(),
        );
        ctx.services
            .db
            .save_result(&ResultRow {
                project_name: record.project_name.clone(),
                flow_id: record.flow_id.clone(),
                inputs: canonical_json(&record.inputs),
                outputs: canonical_json(&record.outputs),
                date_modified: record.date_modified_ms,
                unique_hash: record.unique_hash.clone(),
                result_type_string: record.result_type_string.clone(),
            })
            .await
            .map_err(|e| TaskError::Retryable(e.to_string()))?;
        ctx.log
            .info(format!("stored result {}", record.unique_hash))
            .await;
        serde_json::to_value(record.reference()).map_err(|e| TaskError::Fatal(e.to_string()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertEqualArgs {
    left: Value,
    right: Value,
}

/// Succeeds with `true` when `left` equals `right`; otherwise fails (never retried).
pub struct AssertEqual;

#[async_trait]
impl Operator for AssertEqual {
    fn name(&self) -> &'static str {
        "assert.equal"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        typed::<AssertEqualArgs>(args).map(|_| ())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let a: AssertEqualArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        if a.left == a.right {
            Ok(Value::Bool(true))
        } else {
            Err(TaskError::Fatal(format!(
                "{} is not equal to {}",
                a.left, a.right
            )))
        }
    }
}
