//! Running flows by name: `run` returns the run id at once; `run_and_return` waits and returns
//! every task's result (by slug) or one task's, with a distinct error for each way it can fail.
use crate::engine::{Engine, EngineError, RunOptions};
use app::state::{RunState, TaskState};
use serde_json::{Map, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FlowRunError {
    #[error("flow {flow} (run {run_id}) ended {state}: {error}")]
    FlowFailed {
        flow: String,
        run_id: i64,
        state: String,
        error: String,
    },
    #[error("task {task} of run {run_id} did not complete (it is {state})")]
    TaskNotCompleted {
        task: String,
        run_id: i64,
        state: String,
    },
    #[error("flow {flow} has no task {task}; its tasks are {}", .tasks.join(", "))]
    TaskNotInFlow {
        flow: String,
        task: String,
        tasks: Vec<String>,
    },
    #[error("task {task} of run {run_id} returned nothing")]
    EmptyResult { task: String, run_id: i64 },
    #[error("run {run_id} of {flow} did not finish within {seconds} s; it was canceled")]
    Timeout {
        flow: String,
        run_id: i64,
        seconds: u64,
    },
    #[error(transparent)]
    Start(#[from] EngineError),
}

impl FlowRunError {
    /// The error's name in API answers.
    pub fn kind(&self) -> &'static str {
        match self {
            FlowRunError::FlowFailed { .. } => "flow_failed",
            FlowRunError::TaskNotCompleted { .. } => "task_not_completed",
            FlowRunError::TaskNotInFlow { .. } => "task_not_in_flow",
            FlowRunError::EmptyResult { .. } => "empty_result",
            FlowRunError::Timeout { .. } => "timeout",
            FlowRunError::Start(_) => "not_started",
        }
    }
}

/// Waits for `run_id`, checking at least every `poll`; past `timeout` the run is canceled.
async fn wait(
    engine: &Engine,
    flow: &str,
    run_id: i64,
    timeout: Duration,
    poll: Duration,
) -> Result<RunState, FlowRunError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            let _ = engine.cancel_run(run_id, "run_and_return timeout").await;
            return Err(FlowRunError::Timeout {
                flow: flow.to_string(),
                run_id,
                seconds: timeout.as_secs(),
            });
        }
        match engine.wait_for_run(run_id, poll.min(left)).await {
            Ok(state) => return Ok(state),
            Err(EngineError::Timeout(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long `run_and_return` waits, and how often it looks.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    /// Past this the run is canceled.
    pub timeout: Duration,
    /// The longest gap between two looks at the run.
    pub poll: Duration,
}

/// Runs `flow` and returns all its results (`{slug: result}`) or `task`'s.
pub async fn run_and_return(
    engine: &Engine,
    flow: &str,
    parameters: Map<String, Value>,
    by: &str,
    options: RunOptions,
    task: Option<&str>,
    waiting: Waiting,
) -> Result<Value, FlowRunError> {
    let Waiting { timeout, poll } = waiting;
    let pipeline = engine
        .catalog
        .find(&engine.db, flow)
        .await
        .ok_or_else(|| EngineError::NotFound(format!("flow '{flow}'")))?;
    if let Some(task) = task
        && pipeline.task(task).is_none()
    {
        return Err(FlowRunError::TaskNotInFlow {
            flow: flow.to_string(),
            task: task.to_string(),
            tasks: pipeline.order.clone(),
        });
    }
    let run_id = engine.trigger_with(flow, parameters, by, options).await?;
    let state = wait(engine, flow, run_id, timeout, poll).await?;
    let instances = engine
        .db
        .run_instances(run_id)
        .await
        .map_err(EngineError::from)?;
    let Some(task) = task else {
        if state != RunState::Success {
            let error = instances
                .iter()
                .find_map(|ti| ti.error.clone())
                .unwrap_or_default();
            return Err(FlowRunError::FlowFailed {
                flow: flow.to_string(),
                run_id,
                state: state.to_string(),
                error,
            });
        }
        let results = engine
            .run_results(run_id)
            .await
            .map_err(EngineError::Invalid)?;
        let by_slug: Map<String, Value> = results
            .into_iter()
            .map(|(task, value)| (super::registry::slug(&task), value))
            .collect();
        return Ok(Value::Object(by_slug));
    };
    let mine: Vec<_> = instances
        .iter()
        .filter(|ti| ti.task_id == task && ti.state() != TaskState::Removed)
        .collect();
    if let Some(unfinished) = mine.iter().find(|ti| ti.state() != TaskState::Success) {
        if state != RunState::Success && mine.iter().all(|ti| ti.state() != TaskState::Failed) {
            // The task never ran because the flow failed elsewhere.
            return Err(FlowRunError::TaskNotCompleted {
                task: task.to_string(),
                run_id,
                state: unfinished.state.clone(),
            });
        }
        if unfinished.state() == TaskState::Failed {
            return Err(FlowRunError::FlowFailed {
                flow: flow.to_string(),
                run_id,
                state: state.to_string(),
                error: unfinished.error.clone().unwrap_or_default(),
            });
        }
        return Err(FlowRunError::TaskNotCompleted {
            task: task.to_string(),
            run_id,
            state: unfinished.state.clone(),
        });
    }
    let results = engine
        .run_results(run_id)
        .await
        .map_err(EngineError::Invalid)?;
    match results.get(task) {
        None | Some(Value::Null) => Err(FlowRunError::EmptyResult {
            task: task.to_string(),
            run_id,
        }),
        Some(Value::Array(items)) if items.is_empty() => Err(FlowRunError::EmptyResult {
            task: task.to_string(),
            run_id,
        }),
        Some(value) => Ok(value.clone()),
    }
}
