//! Operators: the Rust types that do a task's work. Each validates its typed input before the
//! task is queued and classifies its failures as retryable or fatal.
mod command;
pub mod flows;
mod generic;
pub mod imednet;
mod s3;

use crate::connections::{Connections, KnownSecrets};
use crate::engine::spec::OperatorCatalog;
use crate::store::Db;
use app::state::RunState;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// Worth another try (network trouble, a busy server, a non-zero exit).
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way again (bad input, missing configuration); retries are skipped.
    #[error("{0}")]
    Fatal(String),
}

/// What an operator may use besides its arguments.
pub struct Services {
    pub db: Db,
    pub data_dir: PathBuf,
    /// Absolute; local export paths must lie inside it.
    pub export_root: PathBuf,
    pub connections: Arc<Connections>,
    /// Scrubs secret values from task logs, errors and results.
    pub secrets: KnownSecrets,
    /// Where flows' file references point: `local` (`<data dir>/files`) and configured ones.
    pub filesystems: crate::flows::files::Filesystems,
}

/// A run an operator asks for (a flow of flows' child).
pub struct Launch {
    pub pipeline_id: String,
    pub conf: serde_json::Map<String, Value>,
    /// Who asked, as the run and the audit record show it.
    pub by: String,
    /// Only workers advertising all of these run its tasks.
    pub labels: Vec<String>,
    pub run_name: Option<String>,
}

/// What operators may ask of the engine that runs them: start a run, wait for it, cancel it and
/// read its results. The engine hands itself to every attempt as this port, so operators never
/// depend on the engine itself.
#[async_trait]
pub trait Launcher: Send + Sync {
    async fn launch(&self, launch: Launch) -> Result<i64, String>;
    async fn wait(&self, run_id: i64, limit: std::time::Duration) -> Result<RunState, String>;
    async fn cancel(&self, run_id: i64, by: &str) -> Result<(), String>;
    /// Labels the run's pipeline asks for.
    fn pipeline_labels(&self, run: &crate::store::engine::RunRow) -> Vec<String>;
    /// Every task's result of a finished run: a mapped task's as a list in map order.
    async fn results(&self, run_id: i64) -> Result<serde_json::Map<String, Value>, String>;
}

/// Appends lines to the log of the current attempt; readable while the task runs.
#[derive(Clone)]
pub struct TaskLog {
    db: Db,
    attempt_id: i64,
    secrets: KnownSecrets,
}

impl TaskLog {
    pub fn new(db: Db, attempt_id: i64, secrets: KnownSecrets) -> Self {
        TaskLog {
            db,
            attempt_id,
            secrets,
        }
    }

    pub async fn info(&self, line: impl AsRef<str>) {
        self.write("log", line.as_ref()).await;
    }

    pub async fn stderr(&self, line: impl AsRef<str>) {
        self.write("stderr", line.as_ref()).await;
    }

    async fn write(&self, stream: &str, line: &str) {
        let line = self.secrets.redact_text(line);
        if let Err(e) = self
            .db
            .append_task_log(self.attempt_id, stream, &line)
            .await
        {
            tracing::warn!(error = %e, attempt = self.attempt_id, "task log write failed");
        }
    }
}

pub struct TaskContext {
    pub run_id: i64,
    /// The task instance (one per map index) this attempt belongs to.
    pub instance_id: i64,
    pub pipeline_id: String,
    pub task_id: String,
    pub map_index: i64,
    pub try_number: i64,
    /// Rendered arguments.
    pub args: Value,
    pub log: TaskLog,
    /// Fired on timeout, cancellation or shutdown; long operations should stop promptly.
    pub cancel: CancellationToken,
    pub services: Arc<Services>,
    pub launcher: Arc<dyn Launcher>,
}

#[async_trait]
pub trait Operator: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Only admins may register pipelines that use it.
    fn admin_only(&self) -> bool {
        false
    }

    fn is_sensor(&self) -> bool {
        false
    }

    /// Checks the rendered arguments before the task is queued.
    fn validate(&self, args: &Value) -> Result<(), String>;

    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError>;

    /// One poke of a sensor: `Some(result)` when the condition holds.
    async fn poke(&self, _ctx: &TaskContext) -> Result<Option<Value>, TaskError> {
        Err(TaskError::Fatal(format!("{} is not a sensor", self.name())))
    }
}

/// Reads typed arguments; the error names the field that is wrong.
pub fn typed<T: DeserializeOwned>(args: &Value) -> Result<T, String> {
    serde_json::from_value(args.clone()).map_err(|e| format!("invalid arguments: {e}"))
}

#[derive(Clone, Default)]
pub struct OperatorRegistry {
    operators: BTreeMap<&'static str, Arc<dyn Operator>>,
}

impl OperatorRegistry {
    /// The generic operators every installation has.
    pub fn with_builtin() -> Self {
        let mut r = OperatorRegistry::default();
        r.register(generic::Noop);
        r.register(generic::Sleep);
        r.register(generic::Echo);
        r.register(generic::Fail);
        r.register(generic::FileSensor);
        r.register(command::Command);
        r.register(imednet::ListStudyKeys);
        r.register(imednet::ListStudiesMetadata);
        r.register(imednet::DiscoverExportTargets);
        r.register(imednet::Export);
        r.register(imednet::ToS3);
        r.register(imednet::JobSensor);
        r.register(imednet::SubmitRecords);
        r.register(flows::RunChild);
        r.register(flows::SaveFile);
        r.register(flows::LoadFile);
        r.register(flows::SaveResult);
        r.register(flows::AssertEqual);
        r.register(s3::Publish);
        r
    }

    pub fn register(&mut self, op: impl Operator) {
        self.operators.insert(op.name(), Arc::new(op));
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Operator>> {
        self.operators.get(name).cloned()
    }
}

impl OperatorCatalog for OperatorRegistry {
    fn lookup(&self, name: &str) -> Option<bool> {
        self.operators.get(name).map(|op| op.admin_only())
    }

    fn names(&self) -> Vec<String> {
        self.operators.keys().map(|k| k.to_string()).collect()
    }
}
