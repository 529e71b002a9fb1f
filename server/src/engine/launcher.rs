//! The engine as the operators' [`Launcher`]: how a flow of flows starts, follows and reads its
//! children without the operators depending on the engine.
use super::{Engine, RunOptions};
use crate::operators::{Launch, Launcher};
use crate::store::engine::RunRow;
use app::state::RunState;
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::time::Duration;

#[async_trait]
impl Launcher for Engine {
    async fn launch(&self, launch: Launch) -> Result<i64, String> {
        let options = RunOptions {
            labels: launch.labels,
            run_name: launch.run_name,
            start_after: None,
        };
        self.trigger_with(&launch.pipeline_id, launch.conf, &launch.by, options)
            .await
            .map_err(|e| e.to_string())
    }

    async fn wait(&self, run_id: i64, limit: Duration) -> Result<RunState, String> {
        self.wait_for_run(run_id, limit)
            .await
            .map_err(|e| e.to_string())
    }

    async fn cancel(&self, run_id: i64, by: &str) -> Result<(), String> {
        self.cancel_run(run_id, by).await.map_err(|e| e.to_string())
    }

    fn pipeline_labels(&self, run: &RunRow) -> Vec<String> {
        self.run_pipeline(run)
            .map(|p| p.spec.labels.clone())
            .unwrap_or_default()
    }

    async fn results(&self, run_id: i64) -> Result<Map<String, Value>, String> {
        self.run_results(run_id).await
    }
}

impl Engine {
    /// Every task's result of a finished run: a mapped task's as a list in map order.
    pub async fn run_results(&self, run_id: i64) -> Result<Map<String, Value>, String> {
        let run = self
            .db
            .run_row(run_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("run {run_id} vanished"))?;
        let pipeline = self.run_pipeline(&run).map_err(|e| e.to_string())?;
        let mut results = Map::new();
        for task in &pipeline.order {
            let outputs = self
                .db
                .task_outputs(run_id, task)
                .await
                .map_err(|e| e.to_string())?;
            let values: Vec<Value> = outputs
                .into_iter()
                .map(|(_, o)| {
                    o.and_then(|o| serde_json::from_str(&o).ok())
                        .unwrap_or(Value::Null)
                })
                .collect();
            let mapped = pipeline.task(task).is_some_and(|t| t.is_mapped());
            let value = if mapped {
                Value::Array(values)
            } else {
                values.into_iter().next().unwrap_or(Value::Null)
            };
            results.insert(task.clone(), value);
        }
        Ok(results)
    }
}
