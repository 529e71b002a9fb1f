//! The run page's data, built from the database: the detail above the instance table and one
//! page of the table. Loads are served from shared snapshots of these (see `snapshots.rs`).
use super::ServerBackend;
use super::console::{ARTIFACTS_SHOWN, INSTANCE_PAGE, non_blank};
use crate::store::console::{InstanceQuery as StoreInstanceQuery, InstanceSort};
use crate::store::engine::TiRow;
use crate::store::now_ms;
use app::error::AppError;
use app::model::{
    AlertDeliveryInfo, ArtifactInfo, ChildRun, InstancePage, InstanceQuery, RunDetail, STATE_ORDER,
    TaskProgress,
};
use app::state::TaskState;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

impl ServerBackend {
    /// Everything the run page shows above its instance table.
    pub(super) async fn build_run_detail(&self, run_id: i64) -> Result<RunDetail, AppError> {
        // Read before the counts: the live stream resumes from here, so nothing is missed.
        let last_event_id = self.db.last_event_id().await?;
        let run = self.run_row(run_id).await?;
        let pipeline = self.engine.run_pipeline(&run).ok();
        let order: Vec<String> = pipeline
            .as_ref()
            .map(|p| p.order.clone())
            .unwrap_or_default();
        let mut counts: BTreeMap<String, HashMap<String, i64>> = BTreeMap::new();
        for (task, state, n) in self.db.task_state_counts(run_id).await? {
            if state != "removed" {
                counts.entry(task).or_default().insert(state, n);
            }
        }
        let mut task_ids = order.clone();
        task_ids.extend(counts.keys().filter(|t| !order.contains(t)).cloned());
        let mut tasks = Vec::with_capacity(task_ids.len());
        let mut instance_count = 0;
        let mut unmapped: HashMap<String, TiRow> = HashMap::new();
        for task_id in task_ids {
            let by_state = counts.remove(&task_id).unwrap_or_default();
            let mapped = pipeline
                .as_ref()
                .and_then(|p| p.task(&task_id))
                .is_some_and(|t| t.is_mapped());
            let total: i64 = by_state.values().sum();
            let done = by_state
                .iter()
                .filter(|(s, _)| s.parse::<TaskState>().is_ok_and(TaskState::is_terminal))
                .map(|(_, n)| n)
                .sum();
            instance_count += total;
            // An unmapped task's one instance; kept whole for the child-run table below.
            let single_row = if mapped {
                None
            } else {
                self.db
                    .instances(run_id, &task_id)
                    .await?
                    .into_iter()
                    .next()
            };
            let single = single_row
                .as_ref()
                .map(|ti| Self::instance_summary(&self.shown(), ti));
            if let Some(ti) = single_row {
                unmapped.insert(task_id.clone(), ti);
            }
            tasks.push(TaskProgress {
                counts: STATE_ORDER
                    .iter()
                    .filter_map(|s| by_state.get(*s).map(|n| (s.to_string(), *n)))
                    .collect(),
                task_id,
                mapped,
                total,
                done,
                single,
            });
        }
        let all_artifacts = self.db.run_artifacts(run_id).await?;
        let artifact_count = all_artifacts.len();
        let shown = self.shown();
        let artifacts = all_artifacts
            .into_iter()
            .take(ARTIFACTS_SHOWN)
            .map(|a| ArtifactInfo {
                downloadable: !a.uri.starts_with("s3://"),
                id: a.id,
                uri: shown.text(&a.uri),
                bytes: a.bytes,
                sha256: a.sha256,
                rows: a.rows_written,
            })
            .collect();
        let mut children = Vec::new();
        if let Some(p) = &pipeline {
            for task_id in p
                .order
                .iter()
                .filter(|t| p.task(t).is_some_and(|t| t.operator == "flows.run_child"))
            {
                let Some(ti) = unmapped.get(task_id) else {
                    continue;
                };
                let output: Value = ti
                    .output
                    .as_deref()
                    .and_then(|o| serde_json::from_str(o).ok())
                    .unwrap_or(Value::Null);
                let input: Value = ti
                    .input
                    .as_deref()
                    .and_then(|i| serde_json::from_str(i).ok())
                    .unwrap_or(Value::Null);
                let pretty = |v: &Value| {
                    serde_json::to_string_pretty(&self.shown().json(v)).unwrap_or_default()
                };
                children.push(ChildRun {
                    task_id: task_id.clone(),
                    flow: p
                        .task(task_id)
                        .and_then(|t| t.args.as_ref())
                        .and_then(|a| a.get("flow"))
                        .and_then(Value::as_str)
                        .unwrap_or(task_id)
                        .to_string(),
                    state: ti.state.clone(),
                    run_id: output["run_id"].as_i64(),
                    parameters: if output.is_null() {
                        pretty(&input["parameters"])
                    } else {
                        pretty(&output["parameters"])
                    },
                    references: pretty(&input["parameters"]),
                    error: ti.error.as_deref().map(|e| self.shown().text(e)),
                });
            }
        }
        let secrets = self.shown();
        let task_order: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
        let timeline = super::timeline::load(
            &self.db,
            run_id,
            (
                run.started_at.unwrap_or(run.queued_at),
                run.ended_at.unwrap_or_else(now_ms),
            ),
            instance_count,
            &task_order,
        )
        .await?;
        let alerts = self
            .db
            .run_deliveries(run_id)
            .await?
            .into_iter()
            .map(|d| AlertDeliveryInfo {
                id: d.id,
                next_attempt_at: (d.state == "pending").then_some(d.next_attempt_at),
                event: d.event,
                conn_id: d.conn_id,
                state: d.state,
                attempts: d.attempts,
                last_error: d.last_error.map(|e| secrets.text(&e)),
                created_at: d.created_at,
                delivered_at: d.delivered_at,
            })
            .collect();
        Ok(RunDetail {
            timeline,
            children,
            alerts,
            id: run.id,
            pipeline_id: run.pipeline_id,
            state: run.state,
            conf: secrets.text(&run.conf),
            run_trigger: run.run_trigger,
            triggered_by: run.triggered_by,
            queued_at: run.queued_at,
            started_at: run.started_at,
            ended_at: run.ended_at,
            tasks,
            instance_count,
            artifacts,
            artifact_count,
            last_event_id,
        })
    }

    /// One page of the run's instances, filtered, searched and sorted in SQL.
    pub(super) async fn build_instance_page(
        &self,
        run_id: i64,
        query: &InstanceQuery,
    ) -> Result<InstancePage, AppError> {
        let state = match non_blank(&query.state) {
            Some(s) => Some(
                s.parse::<TaskState>()
                    .map_err(|e| AppError::invalid("state", e))?
                    .as_str()
                    .to_string(),
            ),
            None => None,
        };
        let sort = InstanceSort::parse(non_blank(&query.sort).unwrap_or("")).ok_or_else(|| {
            AppError::invalid(
                "sort",
                "expected one of index, key, state, try, started, duration",
            )
        })?;
        let descending = match non_blank(&query.dir) {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(AppError::invalid(
                    "dir",
                    format!("'{other}' is not asc or desc"),
                ));
            }
        };
        let page = query.page.unwrap_or(1).max(1);
        // A missing run is a 404, not an empty table.
        self.run_row(run_id).await?;
        let (rows, total) = self
            .db
            .instance_page(&StoreInstanceQuery {
                run_id,
                task_id: non_blank(&query.task).map(str::to_string),
                state,
                search: non_blank(&query.q).map(str::to_string),
                sort,
                descending,
                limit: i64::from(INSTANCE_PAGE),
                offset: i64::from(page - 1) * i64::from(INSTANCE_PAGE),
            })
            .await?;
        Ok(InstancePage {
            rows: {
                let shown = self.shown();
                rows.iter()
                    .map(|ti| Self::instance_summary(&shown, ti))
                    .collect()
            },
            total,
            page,
            page_size: INSTANCE_PAGE,
        })
    }
}
