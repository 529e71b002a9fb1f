//! The embedded job engine: pipelines, runs, mapped task instances, pools, retries, sensors.
//!
//! `Engine::start` loads pipelines and, as configured, runs the scheduler (one leader across
//! processes) and a pool of workers. All state lives in the database; events announce every
//! change in-process and, on PostgreSQL, to other processes.
pub mod bench;
pub mod catalog;
pub mod duration;
pub mod events;
mod launcher;
pub mod params;
pub mod scheduler;
pub mod spec;
pub mod template;
mod worker;

use crate::connections::{Connections, EnvFallback};
use crate::operators::{OperatorRegistry, Services};
use crate::secrets::KeyRing;
use crate::store::engine::{EngineEvent, NewRun, Resets, RunRow};
use crate::store::{Db, StoreError, now_ms};
use app::state::{RunState, TaskState};
use catalog::Catalog;
use events::EventBus;
use params::ParamError;
use serde_json::{Map, Value};
use spec::{Pipeline, SpecError, TaskSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use template::Templates;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0} was not found")]
    NotFound(String),
    #[error("invalid parameters: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Params(Vec<ParamError>),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("timed out waiting for run {0}")]
    Timeout(i64),
}

impl From<sqlx::Error> for EngineError {
    fn from(e: sqlx::Error) -> Self {
        EngineError::Store(StoreError::Sqlx(e))
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Run the scheduler here (it still schedules only while it holds leadership).
    pub scheduler: bool,
    /// Tasks this process runs at once; 0 = no workers here.
    pub workers: usize,
    pub worker_id: String,
    /// Labels this process's workers advertise.
    pub worker_labels: Vec<String>,
    pub lease_ms: i64,
    pub heartbeat_ms: u64,
    pub max_map_length: usize,
    /// Longest the scheduler and idle workers wait without news.
    pub idle_poll_ms: u64,
    /// Most instances a worker claims in one transaction.
    pub claim_batch: i64,
    pub pipelines_dir: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// Where local exports go; output paths outside it are refused.
    pub export_root: PathBuf,
    /// Extra filesystems for flows' file references, as `ID=kind:…` (see `flows::files`).
    pub filesystems: Vec<String>,
    /// Alert delivery; sent by processes that run the scheduler.
    pub alerts: crate::alerts::AlertConfig,
}

impl EngineConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        EngineConfig {
            scheduler: true,
            workers: 16,
            worker_id: default_worker_id(),
            worker_labels: Vec::new(),
            lease_ms: 30_000,
            heartbeat_ms: 5_000,
            max_map_length: 10_000,
            idle_poll_ms: 1_000,
            claim_batch: 64,
            pipelines_dir: None,
            export_root: data_dir.join("exports"),
            data_dir,
            filesystems: Vec::new(),
            alerts: crate::alerts::AlertConfig::default(),
        }
    }
}

/// The export root as an absolute path, so output paths can be checked against it.
fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `host:pid:random`: unique per process, readable in the attempts table.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// What to clear.
/// How a run is started beyond its parameters.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only workers advertising all of these run its tasks.
    pub labels: Vec<String>,
    pub run_name: Option<String>,
    /// Epoch milliseconds; the run stays queued until then.
    pub start_after: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ClearRequest {
    pub task_id: String,
    /// One mapped instance; `None` = the whole task.
    pub map_index: Option<i64>,
    /// Only instances that failed (or never ran because an upstream failed).
    pub only_failed: bool,
    /// Also reset every task downstream (blocked downstream tasks are always reset).
    pub downstream: bool,
}

pub struct Engine {
    pub db: Db,
    pub registry: OperatorRegistry,
    pub catalog: Catalog,
    pub bus: Arc<EventBus>,
    pub config: EngineConfig,
    templates: Templates,
    shutdown: CancellationToken,
    run_specs: Mutex<HashMap<i64, Arc<Pipeline>>>,
    running: Mutex<HashMap<i64, CancellationToken>>,
    services: Arc<Services>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Engine {
    /// Loads pipelines and starts the scheduler and workers this process is configured for.
    pub async fn start(
        db: Db,
        config: EngineConfig,
        registry: OperatorRegistry,
    ) -> Result<Arc<Engine>, EngineError> {
        let mut filesystems = crate::flows::files::Filesystems::new();
        filesystems.insert(
            "local",
            crate::flows::files::Filesystem::Local {
                root: absolute(&config.data_dir.join("files")),
            },
        );
        for entry in &config.filesystems {
            let (id, fs) =
                crate::flows::files::parse_filesystem(entry).map_err(EngineError::Invalid)?;
            filesystems.insert(&id, fs);
        }
        let keys = KeyRing::load_or_create(&config.data_dir)
            .map_err(|e| EngineError::Invalid(format!("secret keys: {e}")))?;
        let connections = Arc::new(Connections::new(
            db.clone(),
            keys,
            EnvFallback::from_process(),
        ));
        if let Err(e) = connections.learn_secrets().await {
            tracing::warn!(error = %e, "reading stored connections failed");
        }
        if let Err(e) = std::fs::create_dir_all(&config.export_root) {
            tracing::warn!(error = %e, root = %config.export_root.display(), "cannot create the export root");
        }
        let engine = Arc::new(Engine {
            services: Arc::new(Services {
                db: db.clone(),
                data_dir: config.data_dir.clone(),
                export_root: absolute(&config.export_root),
                secrets: connections.known_secrets(),
                connections,
                filesystems,
            }),
            db,
            registry,
            catalog: Catalog::default(),
            bus: Arc::new(EventBus::default()),
            config,
            templates: Templates::default(),
            shutdown: CancellationToken::new(),
            run_specs: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        for e in engine
            .catalog
            .load(
                &engine.db,
                &engine.registry,
                engine.config.pipelines_dir.as_deref(),
            )
            .await
        {
            tracing::error!(error = %e, "pipeline not loaded");
        }
        if engine.config.scheduler && engine.db.is_single_node() {
            // Single node: nothing else can be running these, so reclaim them now.
            engine.db.expire_all_leases().await?;
        }
        events::spawn_listener(
            engine.db.clone(),
            engine.bus.clone(),
            engine.shutdown.clone(),
        );
        let mut handles = Vec::new();
        if engine.config.scheduler {
            handles.push(tokio::spawn(engine.clone().scheduler_loop()));
            let alerts = crate::alerts::Dispatcher::new(
                engine.db.clone(),
                engine.services.connections.clone(),
                engine.config.alerts.clone(),
            );
            handles.push(tokio::spawn(
                alerts.run(engine.shutdown.clone(), engine.subscribe()),
            ));
        }
        if engine.config.workers > 0 {
            let labels = engine.config.worker_labels.join(",");
            let concurrency = i64::try_from(engine.config.workers).unwrap_or(i64::MAX);
            engine
                .db
                .register_worker(&engine.config.worker_id, &host_name(), &labels, concurrency)
                .await?;
            handles.push(tokio::spawn(engine.clone().worker_loop()));
            handles.push(tokio::spawn(engine.clone().heartbeat_loop()));
        }
        if let Ok(mut tasks) = engine.tasks.lock() {
            tasks.extend(handles);
        }
        Ok(engine)
    }

    /// Where local exports are written (absolute).
    pub fn export_root(&self) -> std::path::PathBuf {
        self.services.export_root.clone()
    }

    /// Named credentials, shared with the operators.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.services.connections
    }

    /// Stops scheduling and claiming; running attempts are cancelled and retried later.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        let handles: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
        if self.config.workers > 0 {
            let _ = self.db.worker_stopped(&self.config.worker_id).await;
        }
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.bus.subscribe()
    }

    /// Starts a run of a pipeline with `conf` checked against its params.
    pub async fn trigger(
        &self,
        pipeline_id: &str,
        conf: Map<String, Value>,
        by: &str,
        labels: Vec<String>,
    ) -> Result<i64, EngineError> {
        let options = RunOptions {
            labels,
            ..RunOptions::default()
        };
        self.trigger_with(pipeline_id, conf, by, options).await
    }

    /// Triggers with a run name, worker labels and a start time.
    pub async fn trigger_with(
        &self,
        pipeline_id: &str,
        conf: Map<String, Value>,
        by: &str,
        options: RunOptions,
    ) -> Result<i64, EngineError> {
        let pipeline = self
            .catalog
            .find(&self.db, pipeline_id)
            .await
            .ok_or_else(|| EngineError::NotFound(format!("pipeline '{pipeline_id}'")))?;
        self.create_run(&pipeline, conf, "manual", by, now_ms(), options)
            .await
    }

    pub(crate) async fn create_run(
        &self,
        pipeline: &Pipeline,
        conf: Map<String, Value>,
        trigger: &str,
        by: &str,
        logical_date: i64,
        options: RunOptions,
    ) -> Result<i64, EngineError> {
        let resolved =
            params::resolve_conf(&pipeline.spec.params, &conf).map_err(EngineError::Params)?;
        let mut labels = options.labels;
        labels.sort();
        labels.dedup();
        let run_labels = labels.join(",");
        let tasks: Vec<_> = pipeline
            .order
            .iter()
            .filter_map(|id| {
                pipeline
                    .task(id)
                    .map(|t| scheduler::placeholder(pipeline, id, t, &run_labels))
            })
            .collect();
        let run = NewRun {
            pipeline_id: pipeline.id().to_string(),
            conf: Value::Object(resolved),
            trigger: trigger.to_string(),
            triggered_by: by.to_string(),
            logical_date,
            labels: run_labels,
            spec: serde_json::to_string(pipeline)
                .map_err(|e| EngineError::Invalid(e.to_string()))?,
            run_name: options.run_name,
            start_after: options.start_after,
            sla_due_at: pipeline
                .spec
                .sla
                .map(|sla| options.start_after.unwrap_or(0).max(now_ms()) + sla.as_millis()),
            alerts_pending: pipeline.spec.alerts.on_end(),
        };
        let (run_id, events) = self.db.create_run(&run, &tasks).await?;
        self.bus.publish(events);
        self.changed().await;
        Ok(run_id)
    }

    /// Waits until the run ends, without polling: it listens to the engine's events.
    pub async fn wait_for_run(
        &self,
        run_id: i64,
        limit: Duration,
    ) -> Result<RunState, EngineError> {
        // The run may execute in another process (a `serve` beside a CLI, or other workers on
        // PostgreSQL), whose events never reach this process's bus: look at the database
        // again at least this often.
        const RECHECK: Duration = Duration::from_millis(500);
        let mut events = self.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let run = self.load_run(run_id).await?;
            if run.state().is_terminal() {
                return Ok(run.state());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Timeout(run_id));
            }
            let recheck_at = deadline.min(tokio::time::Instant::now() + RECHECK);
            loop {
                match tokio::time::timeout_at(recheck_at, events.recv()).await {
                    Err(_) => break,
                    Ok(Ok(e)) if e.run_id == Some(run_id) && e.kind == "run" => break,
                    Ok(Ok(_)) => {}
                    // Missed events: look at the database again.
                    Ok(Err(_)) => break,
                }
            }
        }
    }

    pub async fn cancel_run(&self, run_id: i64, by: &str) -> Result<(), EngineError> {
        let events = self
            .db
            .cancel_run(run_id, &format!("run canceled by {by}"))
            .await?;
        if events.is_empty() {
            return Err(EngineError::Invalid(format!(
                "run {run_id} is not queued or running"
            )));
        }
        self.bus.publish(events);
        self.stop_local_attempts(run_id).await;
        self.changed().await;
        Ok(())
    }

    /// Clears instances so they run again. Returns how many instances were reset.
    pub async fn clear(&self, run_id: i64, req: &ClearRequest) -> Result<usize, EngineError> {
        let run = self.load_run(run_id).await?;
        let pipeline = self.run_pipeline(&run)?;
        let task = pipeline.task(&req.task_id).ok_or_else(|| {
            EngineError::NotFound(format!("task '{}' in run {run_id}", req.task_id))
        })?;
        let fresh = |t: &TaskSpec| i64::from(t.retries) + 1;
        let is_failed = |s: TaskState| matches!(s, TaskState::Failed | TaskState::UpstreamFailed);
        let mut resets = Resets::default();
        let instances = self.db.instances(run_id, &req.task_id).await?;
        match req.map_index {
            Some(index) => {
                let ti = instances
                    .iter()
                    .find(|ti| ti.map_index == index)
                    .ok_or_else(|| {
                        EngineError::NotFound(format!("instance {index} of '{}'", req.task_id))
                    })?;
                resets.reschedule.push((ti.id, fresh(task)));
            }
            None if req.only_failed => {
                resets.reschedule.extend(
                    instances
                        .iter()
                        .filter(|ti| is_failed(ti.state()))
                        .map(|ti| (ti.id, fresh(task))),
                );
            }
            None if task.is_mapped() => resets.reset_tasks.push((
                req.task_id.clone(),
                scheduler::placeholder(&pipeline, &req.task_id, task, &run.labels),
            )),
            None => resets
                .reschedule
                .extend(instances.iter().map(|ti| (ti.id, fresh(task)))),
        }
        if resets.is_empty() {
            return Ok(0);
        }
        resets.extend(
            self.downstream_resets(&run, &pipeline, &req.task_id, req.downstream)
                .await?,
        );
        let count = resets.len();
        let events = self.db.clear_instances(run_id, &resets).await?;
        self.bus.publish(events);
        self.stop_local_attempts(run_id).await;
        self.changed().await;
        Ok(count)
    }

    /// Marks one instance (or all of a task's) success or failed.
    pub async fn mark(
        &self,
        run_id: i64,
        task_id: &str,
        map_index: Option<i64>,
        state: TaskState,
        by: &str,
    ) -> Result<usize, EngineError> {
        if !matches!(state, TaskState::Success | TaskState::Failed) {
            return Err(EngineError::Invalid(format!(
                "instances can be marked success or failed, not {state}"
            )));
        }
        let ids: Vec<i64> = self
            .db
            .instances(run_id, task_id)
            .await?
            .into_iter()
            .filter(|ti| map_index.is_none_or(|i| ti.map_index == i))
            .map(|ti| ti.id)
            .collect();
        if ids.is_empty() {
            return Err(EngineError::NotFound(format!(
                "task '{task_id}' in run {run_id}"
            )));
        }
        // Marked successful: what the failure had blocked may run now.
        let unblock = if state == TaskState::Success {
            let run = self.load_run(run_id).await?;
            let pipeline = self.run_pipeline(&run)?;
            self.downstream_resets(&run, &pipeline, task_id, false)
                .await?
        } else {
            Resets::default()
        };
        let events = self
            .db
            .mark_instances(run_id, &ids, state, by, &unblock)
            .await?;
        self.bus.publish(events);
        self.stop_local_attempts(run_id).await;
        self.changed().await;
        Ok(ids.len())
    }

    /// Downstream tasks to reset when `task` runs again or is marked successful: all of them
    /// when `all`, otherwise those the failure blocked (upstream_failed or skipped).
    async fn downstream_resets(
        &self,
        run: &RunRow,
        pipeline: &Pipeline,
        task: &str,
        all: bool,
    ) -> Result<Resets, EngineError> {
        let mut resets = Resets::default();
        for down in downstream_closure(pipeline, task) {
            let Some(dt) = pipeline.task(&down) else {
                continue;
            };
            let ds = self.db.instances(run.id, &down).await?;
            let blocked = ds
                .iter()
                .any(|ti| matches!(ti.state(), TaskState::UpstreamFailed | TaskState::Skipped));
            if !(all || blocked) {
                continue;
            }
            if dt.is_mapped() {
                resets.reset_tasks.push((
                    down.clone(),
                    scheduler::placeholder(pipeline, &down, dt, &run.labels),
                ));
            } else {
                let fresh = i64::from(dt.retries) + 1;
                resets.reschedule.extend(
                    ds.iter()
                        .filter(|ti| all || ti.state() != TaskState::Success)
                        .map(|ti| (ti.id, fresh)),
                );
            }
        }
        Ok(resets)
    }

    async fn load_run(&self, run_id: i64) -> Result<RunRow, EngineError> {
        self.db
            .run_row(run_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {run_id}")))
    }

    /// The definition a run was created with (cached).
    pub fn run_pipeline(&self, run: &RunRow) -> Result<Arc<Pipeline>, EngineError> {
        if let Some(p) = self
            .run_specs
            .lock()
            .ok()
            .and_then(|m| m.get(&run.id).cloned())
        {
            return Ok(p);
        }
        let p: Arc<Pipeline> = Arc::new(serde_json::from_str(&run.spec).map_err(|e| {
            EngineError::Invalid(format!("run {} has an unreadable definition: {e}", run.id))
        })?);
        if let Ok(mut m) = self.run_specs.lock() {
            if m.len() > 1_000 {
                m.clear();
            }
            m.insert(run.id, p.clone());
        }
        Ok(p)
    }

    /// Creates or resizes a pool; the scheduler looks again at once (more slots may admit more).
    pub async fn save_pool(
        &self,
        name: &str,
        slots: i64,
        description: &str,
    ) -> Result<(), EngineError> {
        self.db.set_pool(name, slots, description).await?;
        self.changed().await;
        Ok(())
    }

    /// Something changed that the scheduler should look at, here and in other processes.
    async fn changed(&self) {
        self.bus.wake_scheduler();
        self.db
            .notify_others(crate::store::notify::News::Done)
            .await;
    }

    /// Local attempts of this run whose claim has moved on stop at once (remote workers notice
    /// at their next heartbeat).
    async fn stop_local_attempts(&self, run_id: i64) {
        let Ok(instances) = self.db.run_instances(run_id).await else {
            return;
        };
        if let Ok(running) = self.running.lock() {
            for ti in instances
                .iter()
                .filter(|ti| ti.state() != TaskState::Running)
            {
                if let Some(token) = running.get(&ti.id) {
                    token.cancel();
                }
            }
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// All tasks downstream of `task`, in dependency order.
fn downstream_closure(pipeline: &Pipeline, task: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut frontier = vec![task.to_string()];
    while let Some(t) = frontier.pop() {
        for d in pipeline.downstream_of(&t) {
            if !out.contains(&d) {
                out.push(d.clone());
                frontier.push(d);
            }
        }
    }
    pipeline
        .order
        .iter()
        .filter(|t| out.contains(t))
        .cloned()
        .collect()
}

/// When a failed try runs again: `retry_delay`, doubled per try with exponential backoff (capped
/// by `max_retry_delay`, default a day) and jittered down to half so retries spread out.
pub fn retry_at(task: &TaskSpec, try_number: i64) -> i64 {
    let base = task.retry_delay.as_millis();
    let delay = if task.retry_exponential_backoff {
        let doublings = u32::try_from((try_number - 1).clamp(0, 30)).unwrap_or(30);
        let cap = task.max_retry_delay.map_or(86_400_000, |d| d.as_millis());
        let full = base.saturating_mul(1_i64 << doublings).min(cap);
        full / 2 + rand::random::<i64>().rem_euclid(full / 2 + 1)
    } else {
        base
    };
    now_ms() + delay
}
