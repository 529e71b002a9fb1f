//! `s3.publish`: uploads files a run wrote (inside the export root) to a bucket under a prefix,
//! with a `manifest.json` listing them and any extra facts (e.g. a total mapped from a summary).
use super::{Operator, TaskContext, TaskError, typed};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishArgs {
    /// Paths, or export results (objects with `path`).
    files: Vec<Value>,
    #[serde(default)]
    bucket: Option<String>,
    prefix: String,
    #[serde(default = "aws_default")]
    aws_conn_id: String,
    /// Extra fields of the manifest.
    #[serde(default)]
    manifest: Map<String, Value>,
}

fn aws_default() -> String {
    "aws_default".into()
}

fn path_of(file: &Value) -> Option<&str> {
    file.as_str()
        .or_else(|| file.get("path").and_then(Value::as_str))
}

pub struct Publish;

#[async_trait]
impl Operator for Publish {
    fn name(&self) -> &'static str {
        "s3.publish"
    }

    fn validate(&self, args: &Value) -> Result<(), String> {
        let a: PublishArgs = typed(args)?;
        if let Some(bad) = a.files.iter().find(|f| path_of(f).is_none()) {
            return Err(format!(
                "files: {bad} is neither a path nor an object with a path"
            ));
        }
        Ok(())
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let a: PublishArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        let settings = ctx
            .services
            .connections
            .aws(&a.aws_conn_id)
            .await
            .map_err(|e| TaskError::Fatal(e.to_string()))?;
        let bucket = a
            .bucket
            .clone()
            .filter(|b| !b.is_empty())
            .or_else(|| settings.bucket.clone())
            .ok_or_else(|| {
                TaskError::Fatal(format!(
                    "no bucket: pass one or set a default bucket on connection {}",
                    a.aws_conn_id
                ))
            })?;
        let store = settings
            .store()
            .map_err(|e| TaskError::Fatal(e.to_string()))?;
        let root = &ctx.services.export_root;
        let prefix = a.prefix.trim_matches('/');
        let key_of = |name: &str| {
            let key = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            crate::objstore::check_object_key(&key)
                .map(|()| key)
                .map_err(|reason| TaskError::Fatal(format!("prefix `{}`: {reason}", a.prefix)))
        };
        // A bad prefix is refused before anything is uploaded.
        let manifest_key = key_of("manifest.json")?;
        let mut published = Vec::new();
        for file in &a.files {
            let path = path_of(file).unwrap_or_default();
            // Only what runs wrote: a file outside the export root is refused.
            let inside = tokio::fs::canonicalize(path)
                .await
                .ok()
                .filter(|p| p.starts_with(root))
                .ok_or_else(|| {
                    TaskError::Fatal(format!("{path} is not a file inside the export root"))
                })?;
            let name = inside
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file")
                .to_string();
            let key = key_of(&name)?;
            let put = store
                .put_file(&bucket, &key, &inside)
                .await
                .map_err(|e| TaskError::Retryable(format!("upload to s3://{bucket}/{key}: {e}")))?;
            ctx.log.info(format!("published s3://{bucket}/{key}")).await;
            published.push(json!({"key": key, "bytes": put.bytes}));
        }
        let mut manifest = a.manifest.clone();
        manifest.insert("files".into(), Value::from(published.clone()));
        let body = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        store
            .put_bytes(&bucket, &manifest_key, body, "application/json")
            .await
            .map_err(|e| TaskError::Retryable(format!("upload of the manifest: {e}")))?;
        Ok(json!({
            "bucket": bucket,
            "files": published,
            "manifest_key": manifest_key,
            "manifest": manifest,
        }))
    }
}
