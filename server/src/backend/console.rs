//! The console's side of the port: pipelines, runs, instances, actions, pools, audit log.
//! Everything shown passes through `Shown` first (secrets masked, server paths relative);
//! every change is audited.
use super::ServerBackend;
use super::shown::Shown;
use crate::engine::ClearRequest;
use crate::engine::params::ParamType;
use crate::engine::spec::Pipeline;
use crate::store::engine::{RunFilter, RunRow, TiRow};
use crate::store::now_ms;
use app::error::{AppError, FieldError};
use app::model::{
    AttemptInfo, AuditChain, AuditInfo, AuditPage, CurrentUser, DashboardInfo, InstanceDetail,
    InstancePage, InstanceQuery, InstanceSummary, LogLineInfo, ParamInfo, PipelineDetail,
    PipelineSummary, PoolInfo, RunAction, RunBar, RunDetail, RunList, RunListItem, RunListQuery,
    TaskNode, WorkerInfo,
};
use app::model::{FlowDetail, FlowInfo, FlowRegistered};
use app::port::{Backend, Console, FlowRunOptions};
use app::state::{RunState, TaskState};
use serde_json::{Map, Value};
use std::collections::HashMap;

pub(super) const INSTANCE_PAGE: u32 = 50;
const RUNS_PAGE: i64 = 25;
const AUDIT_PAGE: i64 = 50;
pub(super) const ARTIFACTS_SHOWN: usize = 200;
/// Runs in a pipeline's history chart.
const HISTORY_RUNS: i64 = 50;
const LOG_LINES_SHOWN: i64 = 500;
/// A worker whose heartbeat is older than this is shown as lost.
const WORKER_ALIVE_MS: i64 = 60_000;

fn run_item(run: &RunRow, (done, total): (i64, i64)) -> RunListItem {
    RunListItem {
        id: run.id,
        pipeline_id: run.pipeline_id.clone(),
        state: run.state.clone(),
        run_trigger: run.run_trigger.clone(),
        triggered_by: run.triggered_by.clone(),
        queued_at: run.queued_at,
        started_at: run.started_at,
        ended_at: run.ended_at,
        done,
        total,
    }
}

fn param_infos(p: &Pipeline) -> Vec<ParamInfo> {
    p.spec
        .params
        .iter()
        .map(|(name, spec)| ParamInfo {
            name: name.clone(),
            ty: type_name(spec.ty).to_string(),
            default: spec.default.as_ref().map(|d| d.to_string()),
            description: spec.description.clone(),
            allowed: spec
                .allowed
                .iter()
                .flatten()
                .map(|v| v.to_string())
                .collect(),
            minimum: spec.minimum,
            maximum: spec.maximum,
            kind: spec.kind.clone(),
        })
        .collect()
}

fn type_name(ty: ParamType) -> &'static str {
    match ty {
        ParamType::String => "string",
        ParamType::Integer => "integer",
        ParamType::Number => "number",
        ParamType::Boolean => "boolean",
        ParamType::Array => "array",
        ParamType::Object => "object",
        ParamType::Connection => "connection",
    }
}

/// A form field's text as the parameter's JSON type.
fn typed_value(ty: ParamType, text: &str) -> Result<Value, String> {
    let text = text.trim();
    match ty {
        ParamType::String | ParamType::Connection => Ok(Value::String(text.to_string())),
        ParamType::Integer => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("'{text}' is not a whole number")),
        ParamType::Number => text
            .parse::<f64>()
            .ok()
            .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            .ok_or_else(|| format!("'{text}' is not a number")),
        ParamType::Boolean => match text {
            "true" | "on" | "yes" => Ok(Value::Bool(true)),
            "false" | "off" | "no" => Ok(Value::Bool(false)),
            other => Err(format!("'{other}' is not true or false")),
        },
        ParamType::Array | ParamType::Object => {
            let value: Value =
                serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
            match (ty, &value) {
                (ParamType::Array, Value::Array(_)) | (ParamType::Object, Value::Object(_)) => {
                    Ok(value)
                }
                (ParamType::Array, _) => Err("must be a JSON array".into()),
                _ => Err("must be a JSON object".into()),
            }
        }
    }
}

/// Parses `YYYY-MM-DD` (UTC) into the epoch milliseconds of its midnight.
fn date_ms(field: &str, text: &str) -> Result<i64, AppError> {
    let date = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| AppError::invalid(field, format!("'{text}' is not a date like 2026-11-22")))?;
    Ok(date
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default())
}

pub(super) fn non_blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl ServerBackend {
    /// How stored text is shown: secrets masked, server directories made relative.
    pub(super) fn shown(&self) -> Shown {
        Shown::for_engine(&self.engine)
    }

    /// `shown` is made once per request: a page of instances shares it.
    pub(super) fn instance_summary(secrets: &Shown, ti: &TiRow) -> InstanceSummary {
        let output: Option<Value> = ti
            .output
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok());
        let field = |name: &str| output.as_ref().and_then(|o| o.get(name));
        InstanceSummary {
            id: ti.id,
            run_id: ti.run_id,
            task_id: ti.task_id.clone(),
            map_index: ti.map_index,
            map_key: ti.map_key.clone(),
            state: ti.state.clone(),
            try_number: ti.try_number,
            max_tries: ti.max_tries,
            started_at: ti.started_at,
            ended_at: ti.ended_at,
            duration_ms: ti
                .started_at
                .map(|s| ti.ended_at.unwrap_or_else(now_ms) - s),
            rows: field("rows").and_then(Value::as_i64),
            bytes: field("bytes").and_then(Value::as_i64),
            path: field("path")
                .and_then(Value::as_str)
                .map(|p| secrets.text(p)),
            summary: secrets.text(&summarize(ti.output.as_deref(), ti.error.as_deref())),
        }
    }

    fn pretty_redacted(&self, json_text: Option<&str>) -> Option<String> {
        let secrets = self.shown();
        json_text.map(|text| match serde_json::from_str::<Value>(text) {
            Ok(v) => serde_json::to_string_pretty(&secrets.json(&v))
                .unwrap_or_else(|_| secrets.text(text)),
            Err(_) => secrets.text(text),
        })
    }

    async fn progress(&self, run: &RunRow) -> Result<RunListItem, AppError> {
        Ok(run_item(run, self.db.run_progress(run.id).await?))
    }

    async fn summary_of(&self, p: &Pipeline) -> Result<PipelineSummary, AppError> {
        let row = self.db.pipeline_row(p.id()).await?;
        let last = self
            .db
            .list_runs(&RunFilter {
                pipeline_id: Some(p.id().to_string()),
                limit: 1,
                ..Default::default()
            })
            .await?
            .into_iter()
            .next()
            .map(|r| (r.id, r.state));
        Ok(PipelineSummary {
            id: p.id().to_string(),
            description: p.spec.description.trim().to_string(),
            tags: p.spec.tags.clone(),
            schedule: p.spec.schedule.clone(),
            tasks: p.spec.tasks.len(),
            params: param_infos(p),
            paused: row.as_ref().is_some_and(|r| r.paused),
            next_run_at: row.and_then(|r| r.next_run_at),
            last_run: last,
        })
    }

    pub(super) async fn run_row(&self, run_id: i64) -> Result<RunRow, AppError> {
        self.db
            .run_row(run_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("Run {run_id}")))
    }

    /// The instance `ti_id` of run `run_id`, or a not-found naming both.
    async fn instance_of(&self, run_id: i64, ti_id: Option<i64>) -> Result<TiRow, AppError> {
        let ti_id = ti_id.ok_or_else(|| AppError::invalid("ti_id", "name the instance"))?;
        self.db
            .instance(ti_id)
            .await?
            .filter(|ti| ti.run_id == run_id)
            .ok_or_else(|| AppError::NotFound(format!("Instance {ti_id} of run {run_id}")))
    }

    async fn audit_action(
        &self,
        actor: &CurrentUser,
        action: &str,
        target: String,
        detail: Value,
    ) -> Result<(), AppError> {
        self.db
            .audit(&actor.username, action, &target, detail)
            .await?;
        Ok(())
    }

    async fn apply_run_action(
        &self,
        actor: &CurrentUser,
        run_id: i64,
        action: RunAction,
        task_id: Option<String>,
        ti_id: Option<i64>,
    ) -> Result<String, AppError> {
        let run = self.run_row(run_id).await?;
        let by = actor.username.as_str();
        let task_id = task_id.filter(|t| !t.trim().is_empty());
        let (message, detail) = match action {
            RunAction::Cancel => {
                self.engine.cancel_run(run_id, by).await?;
                ("Run canceled.".to_string(), serde_json::json!({}))
            }
            RunAction::ClearInstance => {
                let ti = self.instance_of(run_id, ti_id).await?;
                let n = self
                    .engine
                    .clear(
                        run_id,
                        &ClearRequest {
                            task_id: ti.task_id.clone(),
                            map_index: (ti.map_index >= 0).then_some(ti.map_index),
                            only_failed: false,
                            downstream: false,
                        },
                    )
                    .await?;
                (
                    format!("Cleared {n} instance(s)."),
                    serde_json::json!({"task_id": ti.task_id, "map_key": ti.map_key, "ti_id": ti.id, "reset": n}),
                )
            }
            RunAction::ClearFailed => {
                // No task named: every task's failed instances.
                let tasks: Vec<String> = match &task_id {
                    Some(t) => vec![t.clone()],
                    None => self
                        .db
                        .task_state_counts(run_id)
                        .await?
                        .into_iter()
                        .filter(|(_, s, n)| (s == "failed" || s == "upstream_failed") && *n > 0)
                        .map(|(t, _, _)| t)
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                };
                let mut n = 0;
                for task in &tasks {
                    n += self
                        .engine
                        .clear(
                            run_id,
                            &ClearRequest {
                                task_id: task.clone(),
                                map_index: None,
                                only_failed: true,
                                downstream: false,
                            },
                        )
                        .await?;
                }
                if n == 0 {
                    return Err(AppError::Conflict(format!(
                        "Run {run_id} has no failed instances to clear."
                    )));
                }
                (
                    format!("Cleared {n} failed instance(s); they run again."),
                    serde_json::json!({"tasks": tasks, "reset": n}),
                )
            }
            RunAction::ClearDownstream => {
                let task = task_id
                    .clone()
                    .ok_or_else(|| AppError::invalid("task_id", "name the task to clear"))?;
                let n = self
                    .engine
                    .clear(
                        run_id,
                        &ClearRequest {
                            task_id: task.clone(),
                            map_index: None,
                            only_failed: false,
                            downstream: true,
                        },
                    )
                    .await?;
                (
                    format!("Cleared task {task} and everything downstream ({n})."),
                    serde_json::json!({"task_id": task, "reset": n}),
                )
            }
            RunAction::MarkSuccess | RunAction::MarkFailed => {
                let ti = self.instance_of(run_id, ti_id).await?;
                let state = if action == RunAction::MarkSuccess {
                    TaskState::Success
                } else {
                    TaskState::Failed
                };
                self.engine
                    .mark(
                        run_id,
                        &ti.task_id,
                        (ti.map_index >= 0).then_some(ti.map_index),
                        state,
                        by,
                    )
                    .await?;
                (
                    format!("Marked {state}."),
                    serde_json::json!({"task_id": ti.task_id, "map_key": ti.map_key, "ti_id": ti.id}),
                )
            }
        };
        self.audit_action(
            actor,
            &format!("run.{}", action.as_str()),
            format!("{} run {run_id}", run.pipeline_id),
            detail,
        )
        .await?;
        Ok(message)
    }
}

#[async_trait::async_trait]
impl Console for ServerBackend {
    async fn dashboard(&self) -> Result<DashboardInfo, AppError> {
        let last_event_id = self.db.last_event_id().await?;
        let health = Backend::health(self).await;
        let mut active = Vec::new();
        for run in self.db.active_runs().await?.iter().take(50) {
            active.push(self.progress(run).await?);
        }
        let mut failures = Vec::new();
        for run in self
            .db
            .list_runs(&RunFilter {
                state: Some(RunState::Failed),
                since: Some(now_ms() - 24 * 3600 * 1000),
                limit: 10,
                ..Default::default()
            })
            .await?
        {
            failures.push(self.progress(&run).await?);
        }
        let now = now_ms();
        let workers = self
            .db
            .recent_workers(24 * 3600 * 1000)
            .await?
            .into_iter()
            .map(|w| WorkerInfo {
                alive: w.stopped_at.is_none() && now - w.heartbeat_at < WORKER_ALIVE_MS,
                id: w.id,
                host: w.host,
                labels: w.labels,
                concurrency: w.concurrency,
                started_at: w.started_at,
                heartbeat_at: w.heartbeat_at,
                stopped_at: w.stopped_at,
            })
            .collect();
        Ok(DashboardInfo {
            health,
            active,
            failures,
            pools: self.list_pools().await?,
            workers,
            last_event_id,
        })
    }

    async fn list_pipelines(&self) -> Result<Vec<PipelineSummary>, AppError> {
        let mut pipelines = self.engine.catalog.all();
        pipelines.sort_by(|a, b| a.id().cmp(b.id()));
        let mut list = Vec::with_capacity(pipelines.len());
        for p in &pipelines {
            list.push(self.summary_of(p).await?);
        }
        Ok(list)
    }

    async fn get_pipeline(&self, pipeline_id: &str) -> Result<PipelineDetail, AppError> {
        let p = self
            .engine
            .catalog
            .get(pipeline_id)
            .ok_or_else(|| AppError::NotFound(format!("Pipeline `{pipeline_id}`")))?;
        let row = self.db.pipeline_row(pipeline_id).await?;
        let graph = p
            .order
            .iter()
            .filter_map(|id| {
                p.task(id).map(|t| TaskNode {
                    id: id.clone(),
                    operator: t.operator.clone(),
                    upstream: p.upstream.get(id).cloned().unwrap_or_default(),
                    mapped: t.is_mapped(),
                    pool: t.pool.clone(),
                })
            })
            .collect();
        let recent = self
            .db
            .list_runs(&RunFilter {
                pipeline_id: Some(pipeline_id.to_string()),
                limit: HISTORY_RUNS,
                ..Default::default()
            })
            .await?;
        let mut runs = Vec::new();
        for run in recent.iter().take(20) {
            runs.push(self.progress(run).await?);
        }
        let history = recent
            .iter()
            .rev()
            .map(|r| RunBar {
                id: r.id,
                state: r.state.clone(),
                queued_at: r.queued_at,
                duration_ms: r.started_at.map(|s| r.ended_at.unwrap_or_else(now_ms) - s),
            })
            .collect();
        Ok(PipelineDetail {
            summary: self.summary_of(&p).await?,
            source: row.as_ref().map(|r| r.source.clone()).unwrap_or_default(),
            origin: row.map(|r| r.origin).unwrap_or_default(),
            graph,
            runs,
            history,
            sla: p.spec.sla.map(|d| d.to_string()),
            alerts: [
                ("on_failure", &p.spec.alerts.on_failure),
                ("on_success", &p.spec.alerts.on_success),
                ("on_sla_miss", &p.spec.alerts.on_sla_miss),
            ]
            .into_iter()
            .filter(|(_, targets)| !targets.is_empty())
            .map(|(event, targets)| format!("{event} → {}", targets.join(", ")))
            .collect(),
        })
    }

    async fn list_runs(&self, query: RunListQuery) -> Result<RunList, AppError> {
        let state = match non_blank(&query.state) {
            Some(s) => Some(
                s.parse::<RunState>()
                    .map_err(|e| AppError::invalid("state", e))?,
            ),
            None => None,
        };
        let since = non_blank(&query.since)
            .map(|d| date_ms("since", d))
            .transpose()?;
        // Inclusive: the whole of the `until` day.
        let until = non_blank(&query.until)
            .map(|d| date_ms("until", d).map(|ms| ms + 24 * 3600 * 1000))
            .transpose()?;
        let page = query.page.unwrap_or(1).max(1);
        let mut rows = self
            .db
            .list_runs(&RunFilter {
                pipeline_id: non_blank(&query.pipeline).map(str::to_string),
                state,
                since,
                until,
                limit: RUNS_PAGE + 1,
                offset: i64::from(page - 1) * RUNS_PAGE,
            })
            .await?;
        let has_next = rows.len() as i64 > RUNS_PAGE;
        rows.truncate(RUNS_PAGE as usize);
        let mut runs = Vec::with_capacity(rows.len());
        for run in &rows {
            runs.push(self.progress(run).await?);
        }
        let mut pipelines: Vec<String> = self
            .engine
            .catalog
            .all()
            .iter()
            .map(|p| p.id().to_string())
            .collect();
        pipelines.sort();
        Ok(RunList {
            runs,
            page,
            has_next,
            pipelines,
        })
    }

    async fn get_run(&self, run_id: i64, covering: Option<i64>) -> Result<RunDetail, AppError> {
        let detail = self
            .snapshots
            .detail(
                run_id,
                covering,
                || async { Ok(self.db.run_page_version(run_id).await?) },
                || self.build_run_detail(run_id),
            )
            .await?;
        Ok(RunDetail::clone(&detail))
    }

    async fn list_instances(
        &self,
        run_id: i64,
        query: InstanceQuery,
        covering: Option<i64>,
    ) -> Result<InstancePage, AppError> {
        let page = self
            .snapshots
            .page(
                run_id,
                covering,
                &query,
                || async { Ok(self.db.run_page_version(run_id).await?) },
                || self.build_instance_page(run_id, &query),
            )
            .await?;
        Ok(InstancePage::clone(&page))
    }

    async fn get_instance(&self, ti_id: i64) -> Result<InstanceDetail, AppError> {
        let ti = self
            .db
            .instance(ti_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("Instance {ti_id}")))?;
        let run = self.run_row(ti.run_id).await?;
        let secrets = self.shown();
        let mut attempts = Vec::new();
        for a in self.db.attempts(ti_id).await? {
            let log = self.db.task_log(a.id, 0, LOG_LINES_SHOWN + 1).await?;
            let log_more = log.len() as i64 > LOG_LINES_SHOWN;
            attempts.push(AttemptInfo {
                id: a.id,
                try_number: a.try_number,
                worker: a.worker,
                state: a.state,
                started_at: a.started_at,
                ended_at: a.ended_at,
                error: a.error.map(|e| secrets.text(&e)),
                log: log
                    .into_iter()
                    .take(LOG_LINES_SHOWN as usize)
                    .map(|l| LogLineInfo {
                        id: l.id,
                        at: l.at,
                        stream: l.stream,
                        line: secrets.text(&l.line),
                    })
                    .collect(),
                log_more,
            });
        }
        Ok(InstanceDetail {
            instance: Self::instance_summary(&self.shown(), &ti),
            pipeline_id: run.pipeline_id,
            run_state: run.state,
            input: self.pretty_redacted(ti.input.as_deref()),
            output: self.pretty_redacted(ti.output.as_deref()),
            error: ti.error.map(|e| secrets.text(&e)),
            queued_at: ti.queued_at,
            next_attempt_at: ti.next_attempt_at,
            attempts,
        })
    }

    async fn trigger_run(
        &self,
        actor: &CurrentUser,
        pipeline_id: &str,
        conf: Map<String, Value>,
    ) -> Result<i64, AppError> {
        let detail = Value::Object(conf.clone());
        let run_id = self
            .engine
            .trigger(pipeline_id, conf, &actor.username, Vec::new())
            .await?;
        self.audit_action(
            actor,
            "run.trigger",
            format!("{pipeline_id} run {run_id}"),
            self.shown().json(&detail),
        )
        .await?;
        Ok(run_id)
    }

    async fn trigger_from_form(
        &self,
        actor: &CurrentUser,
        pipeline_id: &str,
        fields: HashMap<String, String>,
    ) -> Result<i64, AppError> {
        let p = self
            .engine
            .catalog
            .get(pipeline_id)
            .ok_or_else(|| AppError::NotFound(format!("Pipeline `{pipeline_id}`")))?;
        let mut errors = Vec::new();
        let mut unknown: Vec<&String> = fields
            .keys()
            .filter(|k| !p.spec.params.contains_key(*k))
            .collect();
        unknown.sort();
        for name in unknown {
            errors.push(FieldError {
                field: name.clone(),
                message: "is not a parameter of this pipeline".into(),
            });
        }
        let mut conf = Map::new();
        for (name, spec) in &p.spec.params {
            // Blank keeps the default.
            let Some(text) = fields.get(name).filter(|t| !t.trim().is_empty()) else {
                continue;
            };
            match typed_value(spec.ty, text) {
                Ok(v) => {
                    conf.insert(name.clone(), v);
                }
                Err(message) => errors.push(FieldError {
                    field: name.clone(),
                    message,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(AppError::Fields(errors));
        }
        self.trigger_run(actor, pipeline_id, conf).await
    }

    async fn retrigger(&self, actor: &CurrentUser, run_id: i64) -> Result<i64, AppError> {
        let run = self.run_row(run_id).await?;
        let conf = match serde_json::from_str::<Value>(&run.conf) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let labels: Vec<String> = run
            .labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let new_id = self
            .engine
            .trigger(&run.pipeline_id, conf, &actor.username, labels)
            .await?;
        self.audit_action(
            actor,
            "run.retrigger",
            format!("{} run {run_id}", run.pipeline_id),
            serde_json::json!({"new_run": new_id}),
        )
        .await?;
        Ok(new_id)
    }

    async fn run_action(
        &self,
        actor: &CurrentUser,
        run_id: i64,
        action: RunAction,
        task_id: Option<String>,
        ti_id: Option<i64>,
    ) -> Result<String, AppError> {
        let done = self
            .apply_run_action(actor, run_id, action, task_id, ti_id)
            .await;
        // The page reloads after an action: it must not get the snapshot from before it.
        self.snapshots.forget(run_id);
        done
    }

    async fn list_pools(&self) -> Result<Vec<PoolInfo>, AppError> {
        let occupancy = self.db.pool_occupancy().await?;
        Ok(self
            .db
            .pools()
            .await?
            .into_iter()
            .map(|p| {
                let (running, queued) = occupancy.get(&p.name).copied().unwrap_or_default();
                PoolInfo {
                    name: p.name,
                    slots: p.slots,
                    description: p.description,
                    builtin: p.builtin,
                    running,
                    queued,
                }
            })
            .collect())
    }

    async fn save_pool(
        &self,
        actor: &CurrentUser,
        name: &str,
        slots: i64,
        description: &str,
    ) -> Result<PoolInfo, AppError> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(AppError::invalid(
                "name",
                "use 1–64 letters, digits, '_', '-' or '.'",
            ));
        }
        if !(0..=100_000).contains(&slots) {
            return Err(AppError::invalid(
                "slots",
                format!("{slots} is out of range 0–100000"),
            ));
        }
        if description.chars().count() > 500 || description.chars().any(char::is_control) {
            return Err(AppError::invalid(
                "description",
                "at most 500 characters, no control characters",
            ));
        }
        let before = self.db.pools().await?.into_iter().find(|p| p.name == name);
        self.engine.save_pool(name, slots, description).await?;
        self.audit_action(
            actor,
            "pool.save",
            name.to_string(),
            serde_json::json!({"slots": slots, "previous_slots": before.map(|p| p.slots)}),
        )
        .await?;
        self.list_pools()
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| AppError::NotFound(format!("Pool `{name}`")))
    }

    async fn delete_pool(&self, actor: &CurrentUser, name: &str) -> Result<(), AppError> {
        let pool = self
            .db
            .pools()
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| AppError::NotFound(format!("Pool `{name}`")))?;
        if pool.builtin {
            return Err(AppError::Conflict(format!(
                "{name} is built in and cannot be deleted."
            )));
        }
        // Tasks naming a missing pool would wait forever.
        for p in self.engine.catalog.all() {
            if let Some((task, _)) = p.spec.tasks.iter().find(|(_, t)| t.pool == name) {
                return Err(AppError::Conflict(format!(
                    "{name} is used by task {task} of pipeline {}.",
                    p.id()
                )));
            }
        }
        let (running, queued) = self
            .db
            .pool_occupancy()
            .await?
            .get(name)
            .copied()
            .unwrap_or_default();
        if running + queued > 0 {
            return Err(AppError::Conflict(format!(
                "{name} has {running} running and {queued} queued instances."
            )));
        }
        self.db.delete_pool(name).await?;
        self.audit_action(
            actor,
            "pool.delete",
            name.to_string(),
            serde_json::json!({}),
        )
        .await
    }

    async fn list_flows(&self) -> Result<Vec<FlowInfo>, AppError> {
        self.flows_list().await
    }

    async fn get_flow(&self, project: &str, name: &str) -> Result<FlowDetail, AppError> {
        self.flow_detail(project, name).await
    }

    async fn register_flow(
        &self,
        actor: &CurrentUser,
        project: &str,
        source: &str,
    ) -> Result<FlowRegistered, AppError> {
        self.flow_register(actor, project, source).await
    }

    async fn validate_flow(&self, project: &str, source: &str) -> Result<String, AppError> {
        self.flow_validate(project, source).await
    }

    async fn run_flow(
        &self,
        actor: &CurrentUser,
        flow: &str,
        parameters: Map<String, Value>,
        options: FlowRunOptions,
    ) -> Result<i64, AppError> {
        self.flow_run(actor, flow, parameters, options).await
    }

    async fn run_and_return(
        &self,
        actor: &CurrentUser,
        flow: &str,
        parameters: Map<String, Value>,
        task: Option<String>,
        options: FlowRunOptions,
    ) -> Result<Value, AppError> {
        self.flow_run_and_return(actor, flow, parameters, task, options)
            .await
    }

    async fn audit_log(
        &self,
        action_prefix: Option<String>,
        page: u32,
    ) -> Result<AuditPage, AppError> {
        let page = page.max(1);
        let prefix = action_prefix.filter(|p| !p.trim().is_empty());
        let mut entries = self
            .db
            .audit_page(
                prefix.as_deref(),
                AUDIT_PAGE + 1,
                i64::from(page - 1) * AUDIT_PAGE,
            )
            .await?;
        let has_next = entries.len() as i64 > AUDIT_PAGE;
        entries.truncate(AUDIT_PAGE as usize);
        let report = self.db.verify_audit().await?;
        let secrets = self.shown();
        Ok(AuditPage {
            entries: entries
                .into_iter()
                .map(|e| AuditInfo {
                    id: e.id,
                    at: e.at,
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    detail: secrets.text(&e.detail),
                    hash: e.hash,
                })
                .collect(),
            chain: AuditChain {
                entries: report.entries,
                unchained: report.unchained,
                head: report.head,
                broken_at: report.broken.as_ref().map(|b| b.id),
                reason: report.broken.map(|b| b.reason),
            },
            page,
            has_next,
        })
    }
}

/// One line for an instance's output: rows, bytes and path of an export, or the error.
fn summarize(output: Option<&str>, error: Option<&str>) -> String {
    if let Some(e) = error {
        return e.lines().next().unwrap_or_default().to_string();
    }
    let Some(out) = output.and_then(|o| serde_json::from_str::<Value>(o).ok()) else {
        return String::new();
    };
    match (&out["rows"], &out["bytes"], &out["path"]) {
        (Value::Number(rows), Value::Number(bytes), path) => {
            format!(
                "{rows} rows, {bytes} bytes → {}",
                path.as_str().unwrap_or("")
            )
        }
        _ => {
            let text = out.to_string();
            match text.char_indices().nth(120) {
                Some((i, _)) => format!("{}…", &text[..i]),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_text_becomes_the_parameter_type() {
        assert_eq!(typed_value(ParamType::Integer, " 42 "), Ok(Value::from(42)));
        assert!(
            typed_value(ParamType::Integer, "4.5")
                .unwrap_err()
                .contains("whole number")
        );
        assert_eq!(typed_value(ParamType::Boolean, "on"), Ok(Value::Bool(true)));
        assert_eq!(
            typed_value(ParamType::Object, "{\"index\": false}"),
            Ok(serde_json::json!({"index": false}))
        );
        assert_eq!(
            typed_value(ParamType::Object, "[1]").unwrap_err(),
            "must be a JSON object"
        );
        assert!(
            typed_value(ParamType::Array, "[1,")
                .unwrap_err()
                .starts_with("is not JSON")
        );
        assert_eq!(
            typed_value(ParamType::String, "csv"),
            Ok(Value::String("csv".into()))
        );
    }

    #[test]
    fn dates_name_the_field_and_expected_shape() {
        assert_eq!(date_ms("since", "1970-01-02"), Ok(86_400_000));
        let err = date_ms("until", "22/11/2026").unwrap_err();
        assert_eq!(
            err.for_field("until").as_deref(),
            Some("'22/11/2026' is not a date like 2026-11-22")
        );
    }

    #[test]
    fn export_results_summarise_as_rows_bytes_path() {
        let out = r#"{"rows": 3, "bytes": 120, "path": "/x/DEMO.csv"}"#;
        assert_eq!(
            summarize(Some(out), None),
            "3 rows, 120 bytes → /x/DEMO.csv"
        );
        assert_eq!(summarize(Some(out), Some("boom\nmore")), "boom");
    }
}
