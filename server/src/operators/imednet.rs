//! The iMednet operators: the provider's hook helpers, export, to-S3, job sensor and record
//! submission. Each resolves its connection when it runs (secrets never travel in arguments)
//! and classifies failures: bad keys, bad input and missing studies are fatal; network
//! trouble, 429 and 5xx are retried by the engine.
use super::{Operator, TaskContext, TaskError, typed};
use crate::connections::{ConnectionError, ImednetSettings};
use crate::export::{
    ExportError, ExportFormat, ExportOptions, ExportSchema, RecordFilter, export_stream,
};
use crate::imednet::model::{Study, Variable};
use crate::imednet::{ImednetClient, ImednetError, ListParams};
use crate::objstore::parse_s3_url;
use crate::store::connections::{NewArtifact, WatermarkKey};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

const DEFAULT_CONN: &str = "imednet_default";
const DEFAULT_AWS_CONN: &str = "aws_default";

fn default_conn() -> String {
    DEFAULT_CONN.into()
}

fn default_aws_conn() -> String {
    DEFAULT_AWS_CONN.into()
}

/// Missing or wrong configuration does not fix itself between tries.
fn conn_error(e: ConnectionError) -> TaskError {
    match e {
        ConnectionError::Store(_) => TaskError::Retryable(e.to_string()),
        other => TaskError::Fatal(other.to_string()),
    }
}

/// API errors that another try cannot fix are fatal; the rest are retried.
fn api_error(context: &str, e: ImednetError) -> TaskError {
    let message = format!("{context}: {e}");
    match e {
        ImednetError::BadRequest(_)
        | ImednetError::Unauthorized(_)
        | ImednetError::Forbidden(_)
        | ImednetError::NotFound(_)
        | ImednetError::Conflict(_)
        | ImednetError::Invalid(_)
        | ImednetError::JobFailed { .. } => TaskError::Fatal(message),
        _ => TaskError::Retryable(message),
    }
}

async fn client(ctx: &TaskContext, conn_id: &str) -> Result<ImednetClient, TaskError> {
    let settings: ImednetSettings = ctx
        .services
        .connections
        .imednet(conn_id)
        .await
        .map_err(conn_error)?;
    settings.client().map_err(conn_error)
}

async fn study_keys(ctx: &TaskContext, conn_id: &str) -> Result<Vec<String>, TaskError> {
    let client = client(ctx, conn_id).await?;
    let studies: Vec<Study> = ImednetClient::collect(client.studies(ListParams::default()))
        .await
        .map_err(|e| api_error("listing studies", e))?;
    Ok(studies.into_iter().map(|s| s.study_key).collect())
}

/// The reference DAG's file-name token: `[^A-Za-z0-9_-]` → `_`, trimmed of `_`/`-`.
pub fn safe_path_fragment(study_key: &str) -> String {
    let replaced: String = study_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = replaced.trim_matches(|c| c == '_' || c == '-');
    if trimmed.is_empty() {
        "study".into()
    } else {
        trimmed.into()
    }
}

/// Where an export goes: a file under the export root, or an S3 object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

impl Destination {
    /// Relative paths resolve under `root`; absolute ones must lie inside it; `..` is refused.
    pub fn parse(output_path: &str, root: &Path) -> Result<Destination, String> {
        let output_path = output_path.trim();
        if output_path.starts_with("s3://") {
            let (bucket, key) = parse_s3_url(output_path).map_err(|e| e.to_string())?;
            return Ok(Destination::S3 { bucket, key });
        }
        if output_path.is_empty() {
            return Err("output_path is empty".into());
        }
        let path = Path::new(output_path);
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!("output_path `{output_path}` must not contain `..`"));
        }
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            root.join(path)
        };
        if !full.starts_with(root) {
            // Viewers read task errors: name the rule, not the server's folders.
            return Err(format!(
                "output_path `{output_path}` is outside the export root"
            ));
        }
        if full == root || output_path.ends_with('/') {
            return Err(format!(
                "output_path `{output_path}` names a folder, not a file"
            ));
        }
        Ok(Destination::Local(full))
    }

    pub fn describe(&self) -> String {
        match self {
            Destination::Local(p) => p.display().to_string(),
            Destination::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
        }
    }
}

/// `imednet.list_study_keys`: the account's study keys as plain strings.
pub struct ListStudyKeys;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnArgs {
    #[serde(default = "default_conn")]
    imednet_conn_id: String,
}

#[async_trait]
impl Operator for ListStudyKeys {
    fn name(&self) -> &'static str {
        "imednet.list_study_keys"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        typed::<ConnArgs>(&or_empty(args)).map(|_| ())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let args: ConnArgs = typed(&or_empty(&ctx.args)).map_err(TaskError::Fatal)?;
        let keys = study_keys(ctx, &args.imednet_conn_id).await?;
        ctx.log.info(format!("{} studies", keys.len())).await;
        Ok(json!(keys))
    }
}

/// `imednet.list_studies_metadata`: studies as JSON with sensitive keys masked at any depth.
pub struct ListStudiesMetadata;

#[async_trait]
impl Operator for ListStudiesMetadata {
    fn name(&self) -> &'static str {
        "imednet.list_studies_metadata"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        typed::<ConnArgs>(&or_empty(args)).map(|_| ())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let args: ConnArgs = typed(&or_empty(&ctx.args)).map_err(TaskError::Fatal)?;
        let client = client(ctx, &args.imednet_conn_id).await?;
        // Raw JSON, so fields our model does not know are passed on too (masked if sensitive).
        let studies: Vec<Value> = client
            .list::<Value>(None, "", ListParams::default())
            .try_collect()
            .await
            .map_err(|e| api_error("listing studies", e))?;
        ctx.log.info(format!("{} studies", studies.len())).await;
        Ok(ctx.services.secrets.redact_json(&Value::Array(studies)))
    }
}

/// `imednet.discover_export_targets`: one `{study_key, output_path, export_kwargs}` per study,
/// for `expand_kwargs` of `imednet.export`. Enumerates only; writes nothing.
pub struct DiscoverExportTargets;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverArgs {
    #[serde(default = "default_conn")]
    imednet_conn_id: String,
    /// Folder (under the export root) or `s3://bucket/prefix`.
    output_root: String,
    #[serde(default = "default_format")]
    format: String,
    #[serde(default)]
    export_kwargs: Option<Value>,
    /// Only these studies (default: all).
    #[serde(default)]
    study_keys: Option<Vec<String>>,
}

fn default_format() -> String {
    "csv".into()
}

impl DiscoverArgs {
    fn check(&self) -> Result<ExportFormat, String> {
        let format: ExportFormat = self
            .format
            .parse()
            .map_err(|e: ExportError| e.to_string())?;
        ExportOptions::from_json(self.export_kwargs.as_ref().unwrap_or(&Value::Null))?;
        if self.output_root.trim().is_empty() {
            return Err("output_root is empty".into());
        }
        Ok(format)
    }
}

#[async_trait]
impl Operator for DiscoverExportTargets {
    fn name(&self) -> &'static str {
        "imednet.discover_export_targets"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        typed::<DiscoverArgs>(args)?.check().map(|_| ())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let args: DiscoverArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        let format = args.check().map_err(TaskError::Fatal)?;
        let mut keys = study_keys(ctx, &args.imednet_conn_id)
            .await
            .map_err(|e| match e {
                TaskError::Retryable(m) => {
                    TaskError::Retryable(format!("failed to discover study keys: {m}"))
                }
                TaskError::Fatal(m) => {
                    TaskError::Fatal(format!("failed to discover study keys: {m}"))
                }
            })?;
        if let Some(only) = &args.study_keys {
            keys.retain(|k| only.contains(k));
        }
        let root = args.output_root.trim().trim_end_matches('/');
        let kwargs = args.export_kwargs.clone().unwrap_or_else(|| json!({}));
        let mut used = std::collections::HashSet::new();
        let targets: Vec<Value> = keys
            .iter()
            .map(|key| {
                // Two keys can share a safe name (`A/B`, `A_B`): keep file names distinct.
                let base = safe_path_fragment(key);
                let mut name = base.clone();
                let mut n = 2;
                while !used.insert(name.clone()) {
                    name = format!("{base}_{n}");
                    n += 1;
                }
                json!({
                    "study_key": key,
                    "output_path": format!("{root}/{name}.{}", format.extension()),
                    "export_kwargs": kwargs,
                })
            })
            .collect();
        ctx.log
            .info(format!("{} export targets under {root}", targets.len()))
            .await;
        Ok(Value::Array(targets))
    }
}

/// `imednet.export`: one study to a file in any format, streamed, written atomically.
pub struct Export;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportArgs {
    study_key: String,
    output_path: String,
    #[serde(default = "default_format", alias = "export_func")]
    format: String,
    #[serde(default, alias = "options")]
    export_kwargs: Option<Value>,
    #[serde(default = "default_conn")]
    imednet_conn_id: String,
    #[serde(default = "default_aws_conn")]
    aws_conn_id: String,
    /// Override `export_kwargs.incremental` / `.full_refresh` (a trigger form's switches).
    #[serde(default)]
    incremental: Option<bool>,
    #[serde(default)]
    full_refresh: Option<bool>,
}

impl ExportArgs {
    fn check(&self, root: &Path) -> Result<(ExportFormat, ExportOptions, Destination), String> {
        if self.study_key.trim().is_empty() {
            return Err("study_key is empty".into());
        }
        let format: ExportFormat = self
            .format
            .parse()
            .map_err(|e: ExportError| e.to_string())?;
        let mut options =
            ExportOptions::from_json(self.export_kwargs.as_ref().unwrap_or(&Value::Null))?;
        if let Some(incremental) = self.incremental {
            options.incremental = incremental;
        }
        if let Some(full_refresh) = self.full_refresh {
            options.full_refresh = full_refresh;
        }
        let dest = Destination::parse(&self.output_path, root)?;
        Ok((format, options, dest))
    }
}

#[async_trait]
impl Operator for Export {
    fn name(&self) -> &'static str {
        "imednet.export"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        // The root is only known at run time; check the shape with a placeholder root.
        typed::<ExportArgs>(args)?
            .check(Path::new("/export-root"))
            .map(|_| ())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let args: ExportArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        let root = ctx.services.export_root.clone();
        let (format, options, dest) = args.check(&root).map_err(TaskError::Fatal)?;
        let study = args.study_key.trim();
        let client = client(ctx, &args.imednet_conn_id).await?;

        let variables: Vec<Variable> =
            ImednetClient::collect(client.variables(study, ListParams::default()))
                .await
                .map_err(|e| api_error(&format!("reading variables of {study}"), e))?;
        // Forms name the tables of the per-form layout.
        let forms = ImednetClient::collect(client.forms(study, ListParams::default()))
            .await
            .map_err(|e| api_error(&format!("reading forms of {study}"), e))?;
        let schema = ExportSchema::build(&variables, &forms, &options);
        for warning in schema.warnings.iter().chain(&schema.form_warnings) {
            ctx.log.info(format!("warning: {warning}")).await;
        }
        let destination = dest.describe();
        let mark_key = WatermarkKey {
            pipeline_id: &ctx.pipeline_id,
            task_id: &ctx.task_id,
            conn_id: &args.imednet_conn_id,
            study_key: study,
        };
        let watermark = if options.incremental && options.full_refresh {
            ctx.log
                .info("incremental, full refresh: exporting everything and storing a new watermark")
                .await;
            None
        } else if options.incremental {
            let w = ctx
                .services
                .db
                .task_watermark(&mark_key, ctx.run_id)
                .await
                .map_err(|e| TaskError::Retryable(e.to_string()))?;
            match &w {
                Some((run, w)) => {
                    ctx.log
                        .info(format!(
                            "incremental: records modified after {w} (the mark of run {run})"
                        ))
                        .await
                }
                None => {
                    ctx.log
                        .info("incremental: no earlier export, exporting everything")
                        .await
                }
            }
            w.map(|(_, w)| w)
        } else {
            None
        };
        let filter = RecordFilter::new(&options, watermark.as_deref())
            .map_err(|e| TaskError::Fatal(e.to_string()))?;
        let local = match &dest {
            Destination::Local(p) => p.clone(),
            // Staged locally, then uploaded; the staging file is removed either way.
            Destination::S3 { key, .. } => root.join(".staging").join(format!(
                "run-{}-ti-{}-{}",
                ctx.run_id,
                ctx.instance_id,
                safe_path_fragment(key)
            )),
        };
        ctx.log
            .info(format!(
                "exporting {study}: {} variables as {} to {destination}",
                variables.len(),
                format.as_str()
            ))
            .await;
        let records = client.records(study, ListParams::default());
        let export = export_stream(format, local.clone(), schema, filter, records);
        let outcome = tokio::select! {
            r = export => r.map_err(|e| TaskError::Retryable(format!("export of {study} failed: {e}")))?,
            () = ctx.cancel.cancelled() => return Err(TaskError::Retryable("cancelled".into())),
        };
        let mut result = outcome.result;
        if let Destination::S3 { bucket, key } = &dest {
            let uploaded = upload(ctx, &args.aws_conn_id, &local, bucket, key).await;
            let _ = tokio::fs::remove_file(&local).await;
            uploaded?;
            result.path = destination.clone();
        }
        ctx.log
            .info(format!(
                "wrote {} rows × {} columns, {} bytes, sha256 {}",
                result.rows, result.columns, result.bytes, result.sha256
            ))
            .await;
        ctx.services
            .db
            .insert_artifact(&NewArtifact {
                run_id: ctx.run_id,
                task_instance_id: ctx.instance_id,
                uri: &result.path,
                bytes: i64::try_from(result.bytes).unwrap_or(i64::MAX),
                sha256: &result.sha256,
                rows_written: i64::try_from(result.rows).ok(),
            })
            .await
            .map_err(|e| TaskError::Retryable(e.to_string()))?;
        if options.incremental
            && let Some(mark) = &outcome.max_date_modified
        {
            ctx.services
                .db
                .set_task_watermark(&mark_key, ctx.run_id, mark)
                .await
                .map_err(|e| TaskError::Retryable(e.to_string()))?;
        }
        Ok(json!({
            "study_key": study,
            "format": format.as_str(),
            "path": result.path,
            "rows": result.rows,
            "columns": result.columns,
            "bytes": result.bytes,
            "sha256": result.sha256,
            "warnings": result.warnings,
        }))
    }
}

async fn upload(
    ctx: &TaskContext,
    aws_conn_id: &str,
    file: &Path,
    bucket: &str,
    key: &str,
) -> Result<(), TaskError> {
    let settings = ctx
        .services
        .connections
        .aws(aws_conn_id)
        .await
        .map_err(conn_error)?;
    let store = settings.store().map_err(conn_error)?;
    store
        .put_file(bucket, key, file)
        .await
        .map_err(|e| TaskError::Retryable(format!("upload to s3://{bucket}/{key}: {e}")))?;
    ctx.log
        .info(format!("uploaded to s3://{bucket}/{key}"))
        .await;
    Ok(())
}

/// Endpoints `imednet.to_s3` can read (every list endpoint of a study).
const LIST_ENDPOINTS: &[&str] = &[
    "sites",
    "subjects",
    "records",
    "recordRevisions",
    "forms",
    "intervals",
    "variables",
    "queries",
    "codings",
    "users",
    "visits",
];

/// `imednet.to_s3`: every item of one endpoint as one JSON array at exactly `s3_key`.
pub struct ToS3;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToS3Args {
    study_key: String,
    /// Default: the AWS connection's default bucket.
    #[serde(default)]
    s3_bucket: Option<String>,
    s3_key: String,
    #[serde(default = "default_endpoint")]
    endpoint: String,
    #[serde(default)]
    endpoint_kwargs: EndpointKwargs,
    #[serde(default = "default_conn")]
    imednet_conn_id: String,
    #[serde(default = "default_aws_conn")]
    aws_conn_id: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EndpointKwargs {
    filter: Option<String>,
    record_data_filter: Option<String>,
    sort: Option<Vec<String>>,
    include_inactive: Option<bool>,
}

fn default_endpoint() -> String {
    "records".into()
}

impl ToS3Args {
    fn check(&self) -> Result<(), String> {
        if !LIST_ENDPOINTS.contains(&self.endpoint.as_str()) {
            return Err(format!(
                "endpoint `{}` has no list to export; use one of {}",
                self.endpoint,
                LIST_ENDPOINTS.join(", ")
            ));
        }
        if self.s3_key.trim().is_empty() {
            return Err("s3_key is empty".into());
        }
        if self.study_key.trim().is_empty() {
            return Err("study_key is empty".into());
        }
        Ok(())
    }
}

#[async_trait]
impl Operator for ToS3 {
    fn name(&self) -> &'static str {
        "imednet.to_s3"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        typed::<ToS3Args>(args)?.check()
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let args: ToS3Args = typed(&ctx.args).map_err(TaskError::Fatal)?;
        args.check().map_err(TaskError::Fatal)?;
        let aws = ctx
            .services
            .connections
            .aws(&args.aws_conn_id)
            .await
            .map_err(conn_error)?;
        let bucket = args
            .s3_bucket
            .clone()
            .filter(|b| !b.trim().is_empty())
            .or(aws.bucket.clone())
            .ok_or_else(|| {
                TaskError::Fatal(format!(
                    "no s3_bucket given and connection `{}` has no default bucket",
                    args.aws_conn_id
                ))
            })?;
        let (bucket, key) = parse_s3_url(&format!("s3://{bucket}/{}", args.s3_key))
            .map_err(|e| TaskError::Fatal(e.to_string()))?;
        let store = aws.store().map_err(conn_error)?;
        let client = client(ctx, &args.imednet_conn_id).await?;
        let kw = &args.endpoint_kwargs;
        let params = ListParams {
            filter: kw.filter.clone(),
            record_data_filter: kw.record_data_filter.clone(),
            sort: kw.sort.clone().unwrap_or_default(),
            page_size: None,
            include_inactive: kw.include_inactive,
        };
        // Items are written as the API sent them (dates are already strings), streamed to a
        // staging file so memory stays flat, then uploaded.
        let staging = ctx.services.export_root.join(".staging");
        std::fs::create_dir_all(&staging)
            .map_err(|e| TaskError::Retryable(format!("creating {}: {e}", staging.display())))?;
        let mut file = tempfile::NamedTempFile::new_in(&staging)
            .map_err(|e| TaskError::Retryable(format!("staging file: {e}")))?;
        let items = client.list::<Value>(Some(args.study_key.trim()), &args.endpoint, params);
        let mut items = std::pin::pin!(items);
        let mut count: u64 = 0;
        let write_err = |e: std::io::Error| TaskError::Retryable(format!("staging file: {e}"));
        file.write_all(b"[").map_err(write_err)?;
        while let Some(item) = items.next().await {
            if ctx.cancel.is_cancelled() {
                return Err(TaskError::Retryable("cancelled".into()));
            }
            let item = item.map_err(|e| api_error(&format!("reading {}", args.endpoint), e))?;
            if count > 0 {
                file.write_all(b",").map_err(write_err)?;
            }
            serde_json::to_writer(&mut file, &item)
                .map_err(|e| TaskError::Retryable(format!("staging file: {e}")))?;
            count += 1;
        }
        file.write_all(b"]").map_err(write_err)?;
        file.flush().map_err(write_err)?;
        let put = store
            .put_file(&bucket, &key, file.path())
            .await
            .map_err(|e| TaskError::Retryable(format!("upload to s3://{bucket}/{key}: {e}")))?;
        let uri = format!("s3://{bucket}/{key}");
        ctx.log
            .info(format!(
                "{count} {} items → {uri} ({} bytes)",
                args.endpoint, put.bytes
            ))
            .await;
        Ok(json!({"path": uri, "items": count, "bytes": put.bytes, "endpoint": args.endpoint}))
    }
}

/// `imednet.job_sensor`: done on COMPLETED/SUCCESS, fails naming the state on
/// FAILED/CANCELLED, keeps poking otherwise.
pub struct JobSensor;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobArgs {
    study_key: String,
    batch_id: String,
    #[serde(default = "default_conn")]
    imednet_conn_id: String,
}

#[async_trait]
impl Operator for JobSensor {
    fn name(&self) -> &'static str {
        "imednet.job_sensor"
    }

    fn is_sensor(&self) -> bool {
        true
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let a: JobArgs = typed(args)?;
        if a.batch_id.trim().is_empty() {
            return Err("batch_id is empty".into());
        }
        Ok(())
    }

    async fn execute(&self, _ctx: &TaskContext) -> Result<Value, TaskError> {
        Err(TaskError::Fatal(
            "imednet.job_sensor runs as a sensor".into(),
        ))
    }

    async fn poke(&self, ctx: &TaskContext) -> Result<Option<Value>, TaskError> {
        let args: JobArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        let client = client(ctx, &args.imednet_conn_id).await?;
        let job = client
            .job(args.study_key.trim(), args.batch_id.trim())
            .await
            .map_err(|e| api_error(&format!("reading job {}", args.batch_id), e))?;
        ctx.log
            .info(format!("job {} is {}", args.batch_id, job.state))
            .await;
        if job.is_successful() {
            return Ok(Some(serde_json::to_value(&job).unwrap_or(Value::Null)));
        }
        if job.is_failed() {
            return Err(TaskError::Fatal(format!(
                "job {} ended in state {}",
                args.batch_id,
                job.state.to_ascii_uppercase()
            )));
        }
        Ok(None)
    }
}

/// `imednet.submit_records`: POSTs records and returns the job's batch id. Never retried by
/// the engine: a retry after a lost answer would submit the records twice.
pub struct SubmitRecords;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitArgs {
    study_key: String,
    records: Vec<Value>,
    #[serde(default)]
    email_notify: Option<String>,
    #[serde(default = "default_conn")]
    imednet_conn_id: String,
}

#[async_trait]
impl Operator for SubmitRecords {
    fn name(&self) -> &'static str {
        "imednet.submit_records"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let a: SubmitArgs = typed(args)?;
        if a.records.is_empty() {
            return Err("records is empty".into());
        }
        if let Some(i) = a.records.iter().position(|r| !r.is_object()) {
            return Err(format!("records[{i}] is not an object"));
        }
        Ok(())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let args: SubmitArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        let client = client(ctx, &args.imednet_conn_id).await?;
        let job = client
            .create_records(args.study_key.trim(), &args.records, args.email_notify.as_deref())
            .await
            .map_err(|e| {
                TaskError::Fatal(format!(
                    "submitting {} records: {e} (not retried automatically: a retry could submit them twice)",
                    args.records.len()
                ))
            })?;
        ctx.log
            .info(format!(
                "submitted {} records: batch {} is {}",
                args.records.len(),
                job.batch_id,
                job.state
            ))
            .await;
        Ok(json!({"batch_id": job.batch_id, "job_id": job.job_id, "state": job.state}))
    }
}

fn or_empty(args: &Value) -> Value {
    if args.is_null() {
        json!({})
    } else {
        args.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_fragments_match_the_reference_dag() {
        assert_eq!(safe_path_fragment("ONC-202"), "ONC-202");
        assert_eq!(safe_path_fragment("CV 3/B"), "CV_3_B");
        assert_eq!(safe_path_fragment("__a.b--"), "a_b");
        assert_eq!(safe_path_fragment("///"), "study");
        assert_eq!(safe_path_fragment(""), "study");
    }

    #[test]
    fn destinations_stay_inside_the_export_root() {
        let root = Path::new("/data/exports");
        assert_eq!(
            Destination::parse("ref/run-1/A.csv", root),
            Ok(Destination::Local(root.join("ref/run-1/A.csv")))
        );
        assert_eq!(
            Destination::parse("/data/exports/x.csv", root),
            Ok(Destination::Local(root.join("x.csv")))
        );
        assert!(
            Destination::parse("/etc/passwd", root)
                .unwrap_err()
                .contains("outside the export root")
        );
        assert!(
            Destination::parse("a/../../x.csv", root)
                .unwrap_err()
                .contains("`..`")
        );
        assert!(
            Destination::parse("dir/", root)
                .unwrap_err()
                .contains("folder")
        );
        assert_eq!(
            Destination::parse("s3://bucket-1/a/b.csv", root),
            Ok(Destination::S3 {
                bucket: "bucket-1".into(),
                key: "a/b.csv".into()
            })
        );
        assert!(Destination::parse("s3://B/x", root).is_err());
    }

    #[test]
    fn arguments_are_checked_before_queueing() {
        let export = Export;
        assert!(
            export
                .validate(&json!({"study_key": "S", "output_path": "a.csv", "format": "csv"}))
                .is_ok()
        );
        let e = export
            .validate(&json!({"study_key": "S", "output_path": "a.csv", "format": "docx"}))
            .unwrap_err();
        assert!(e.contains("docx"), "{e}");
        let e = export
            .validate(
                &json!({"study_key": "S", "output_path": "a.csv", "export_kwargs": {"colour": 1}}),
            )
            .unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = export
            .validate(&json!({"study_key": "S", "output_path": "a.csv", "bogus": 1}))
            .unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        // The seed's `{"index": false}` is accepted (we never write an index).
        assert!(export
            .validate(&json!({"study_key": "S", "output_path": "a.csv", "export_func": "export_to_csv", "export_kwargs": {"index": false}}))
            .is_ok());
        let e = ToS3
            .validate(&json!({"study_key": "S", "s3_key": "k", "endpoint": "jobs"}))
            .unwrap_err();
        assert!(e.contains("`jobs` has no list"), "{e}");
        assert!(
            SubmitRecords
                .validate(&json!({"study_key": "S", "records": [1]}))
                .unwrap_err()
                .contains("records[0]")
        );
        assert!(
            JobSensor
                .validate(&json!({"study_key": "S", "batch_id": " "}))
                .is_err()
        );
    }
}
