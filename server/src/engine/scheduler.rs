//! The scheduler: one leader at a time decides what runs next.
//!
//! It starts queued runs within `max_active_runs`, decides each waiting task by its trigger rule,
//! renders arguments and expands mapped tasks, and is the only place that admits instances from
//! `scheduled` to `queued` — counting the run's, the task's and the pool's queued and running
//! instances — so the limits hold under every interleaving of workers.
use super::spec::{Pipeline, TaskSpec, TriggerRule};
use super::{Engine, EngineError, retry_at};
use crate::json::json_kind;
use crate::store::engine::{Candidate, Completion, NewTask, RunRow};
use crate::store::now_ms;
use app::state::{RunState, TaskState};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How a task's upstream tasks ended, as a trigger rule sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Success,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Wait,
    Run,
    Skip,
    UpstreamFailed,
}

fn decide(rule: TriggerRule, ups: &[Outcome]) -> Decision {
    let any = |o: Outcome| ups.contains(&o);
    let pending = any(Outcome::Pending);
    match rule {
        TriggerRule::AllSuccess if any(Outcome::Failed) => Decision::UpstreamFailed,
        TriggerRule::AllSuccess if pending => Decision::Wait,
        TriggerRule::AllSuccess if any(Outcome::Skipped) => Decision::Skip,
        TriggerRule::AllSuccess => Decision::Run,
        TriggerRule::AllFailed if any(Outcome::Success) || any(Outcome::Skipped) => Decision::Skip,
        TriggerRule::AllFailed if pending => Decision::Wait,
        TriggerRule::AllFailed => Decision::Run,
        TriggerRule::AllDone if pending => Decision::Wait,
        TriggerRule::AllDone => Decision::Run,
        TriggerRule::OneSuccess if any(Outcome::Success) => Decision::Run,
        TriggerRule::OneSuccess if pending => Decision::Wait,
        TriggerRule::OneSuccess if any(Outcome::Failed) => Decision::UpstreamFailed,
        TriggerRule::OneSuccess => Decision::Skip,
        TriggerRule::OneFailed if any(Outcome::Failed) => Decision::Run,
        TriggerRule::OneFailed if pending => Decision::Wait,
        TriggerRule::OneFailed => Decision::Skip,
        TriggerRule::NoneFailed if any(Outcome::Failed) => Decision::UpstreamFailed,
        TriggerRule::NoneFailed if pending => Decision::Wait,
        TriggerRule::NoneFailed => Decision::Run,
    }
}

/// Per-task counts of instances by state, for one run.
#[derive(Debug, Default, Clone)]
struct TaskCounts(HashMap<TaskState, i64>);

impl TaskCounts {
    fn get(&self, s: TaskState) -> i64 {
        self.0.get(&s).copied().unwrap_or(0)
    }
    fn active(&self) -> i64 {
        self.get(TaskState::Queued) + self.get(TaskState::Running)
    }
    fn outcome(&self) -> Outcome {
        let unfinished = self.0.iter().any(|(s, n)| *n > 0 && !s.is_terminal());
        if unfinished || self.0.values().all(|n| *n == 0) {
            Outcome::Pending
        } else if self.get(TaskState::Failed) + self.get(TaskState::UpstreamFailed) > 0 {
            Outcome::Failed
        } else if self.get(TaskState::Success) > 0 {
            Outcome::Success
        } else {
            Outcome::Skipped
        }
    }
}

/// The labels an instance needs, sorted and comma-joined.
pub fn labels_of(pipeline: &Pipeline, task: &TaskSpec, run_labels: &str) -> String {
    let mut all: Vec<&str> = pipeline
        .spec
        .labels
        .iter()
        .chain(task.labels.iter())
        .map(String::as_str)
        .collect();
    all.extend(run_labels.split(',').filter(|l| !l.is_empty()));
    all.sort_unstable();
    all.dedup();
    all.join(",")
}

/// The first instance of a task, as a run is created (or a mapped task is reset).
pub fn placeholder(
    pipeline: &Pipeline,
    task_id: &str,
    task: &TaskSpec,
    run_labels: &str,
) -> NewTask {
    NewTask {
        task_id: task_id.to_string(),
        map_index: -1,
        map_key: None,
        state: TaskState::None,
        max_tries: i64::from(task.retries) + 1,
        pool: task.pool.clone(),
        pool_slots: i64::from(task.pool_slots),
        priority: task.priority_weight,
        labels: labels_of(pipeline, task, run_labels),
        input: None,
        error: None,
    }
}

impl Engine {
    /// The scheduler loop; returns when the engine shuts down.
    pub(super) async fn scheduler_loop(self: Arc<Self>) {
        let mut leader = crate::store::leader::Leadership::new(self.db.clone());
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let mut wait = Duration::from_millis(self.config.idle_poll_ms);
            if leader.hold().await {
                match self.tick().await {
                    Ok(next) => {
                        if let Some(at) = next {
                            let ms = u64::try_from((at - now_ms()).max(0)).unwrap_or(0);
                            wait = wait.min(Duration::from_millis(ms));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "scheduler tick failed"),
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = self.bus.scheduler_woken() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        leader.release().await;
    }

    /// One pass over all active runs. Returns the earliest time something becomes due.
    pub async fn tick(&self) -> Result<Option<i64>, EngineError> {
        let mut next_due: Option<i64> = None;
        let mut earliest = |t: Option<i64>| {
            if let Some(t) = t {
                next_due = Some(next_due.map_or(t, |n: i64| n.min(t)));
            }
        };
        self.reap_expired_leases().await?;
        earliest(self.create_scheduled_runs().await?);

        let runs = self.db.active_runs().await?;
        let mut running_per_pipeline: HashMap<String, u32> = HashMap::new();
        for r in runs.iter().filter(|r| r.state() == RunState::Running) {
            *running_per_pipeline
                .entry(r.pipeline_id.clone())
                .or_default() += 1;
        }
        let mut running = Vec::new();
        for run in runs {
            match run.state() {
                RunState::Queued => {
                    if let Some(at) = run.start_after.filter(|at| *at > now_ms()) {
                        earliest(Some(at));
                        continue;
                    }
                    let pipeline = self.run_pipeline(&run)?;
                    let n = running_per_pipeline
                        .entry(run.pipeline_id.clone())
                        .or_default();
                    if *n < pipeline.spec.max_active_runs {
                        *n += 1;
                        let events = self
                            .db
                            .set_run_state(run.id, RunState::Queued, RunState::Running)
                            .await?;
                        self.bus.publish(events);
                        running.push(run);
                    }
                }
                RunState::Running => running.push(run),
                _ => {}
            }
        }

        let pools: HashMap<String, i64> = self
            .db
            .pools()
            .await?
            .into_iter()
            .map(|p| (p.name, p.slots))
            .collect();
        let mut pool_usage = self.db.pool_usage().await?;
        let mut queued_any = false;
        for run in &running {
            let (queued, due) = self.advance(run, &pools, &mut pool_usage).await?;
            queued_any |= queued;
            earliest(due);
        }
        if queued_any {
            self.bus.wake_workers();
            self.db
                .notify_others(crate::store::notify::News::Work)
                .await;
        }
        Ok(next_due)
    }

    /// Moves one running run forward. Returns whether anything was queued, and when a retry is due.
    async fn advance(
        &self,
        run: &RunRow,
        pools: &HashMap<String, i64>,
        pool_usage: &mut HashMap<String, i64>,
    ) -> Result<(bool, Option<i64>), EngineError> {
        let pipeline = self.run_pipeline(run)?;
        let now = now_ms();
        self.db.requeue_due(run.id, now).await?;

        let mut counts: HashMap<String, TaskCounts> = HashMap::new();
        let mut reload = true;
        while reload {
            reload = false;
            counts.clear();
            for (task, state, n) in self.db.task_state_counts(run.id).await? {
                if let Ok(s) = state.parse() {
                    *counts.entry(task).or_default().0.entry(s).or_default() += n;
                }
            }
            // Decide waiting tasks in dependency order; a decision may unblock the next task.
            for task_id in &pipeline.order {
                let c = counts.get(task_id).cloned().unwrap_or_default();
                if c.get(TaskState::None) == 0 {
                    continue;
                }
                let task = pipeline
                    .task(task_id)
                    .ok_or_else(|| EngineError::NotFound(format!("task {task_id}")))?;
                let ups: Vec<Outcome> = pipeline.upstream[task_id]
                    .iter()
                    .map(|u| counts.get(u).map_or(Outcome::Pending, TaskCounts::outcome))
                    .collect();
                let decision = decide(task.trigger_rule, &ups);
                if decision != Decision::Wait {
                    self.act_on(run, &pipeline, task_id, task, decision).await?;
                    reload = true;
                }
            }
        }

        // Finished when nothing is left to do.
        let unfinished = counts
            .values()
            .any(|c| c.0.iter().any(|(s, n)| *n > 0 && !s.is_terminal()));
        if !unfinished {
            crate::export::provenance::write_before_run_ends(&self.services, run.id).await;
            let events = self.db.finish_run(run.id).await?;
            self.bus.publish(events);
            self.db
                .notify_others(crate::store::notify::News::Done)
                .await;
            return Ok((false, None));
        }

        let queued = self
            .admit(run, &pipeline, &counts, pools, pool_usage)
            .await?;
        Ok((queued, self.db.next_due(run.id).await?))
    }

    /// Carries out a trigger-rule decision for a waiting task.
    async fn act_on(
        &self,
        run: &RunRow,
        pipeline: &Pipeline,
        task_id: &str,
        task: &TaskSpec,
        decision: Decision,
    ) -> Result<(), EngineError> {
        let waiting: Vec<_> = self
            .db
            .instances(run.id, task_id)
            .await?
            .into_iter()
            .filter(|ti| ti.state() == TaskState::None)
            .collect();
        for ti in waiting {
            let events = match decision {
                Decision::Wait => continue,
                Decision::Skip => {
                    self.db
                        .decide_instance(ti.id, TaskState::None, TaskState::Skipped, None, None)
                        .await?
                }
                Decision::UpstreamFailed => {
                    self.db
                        .decide_instance(
                            ti.id,
                            TaskState::None,
                            TaskState::UpstreamFailed,
                            None,
                            Some("an upstream task failed"),
                        )
                        .await?
                }
                Decision::Run if task.is_mapped() && ti.map_index < 0 => {
                    self.expand(run, pipeline, task_id, task, ti.id).await?
                }
                Decision::Run => {
                    // An unmapped task, or a cleared instance whose arguments are rendered again.
                    let ctx = self.template_context(run, pipeline, task_id).await?;
                    let rendered = self.templates.render(
                        &Value::Object(task.base_args()),
                        &ctx,
                        &format!("tasks.{task_id}.args"),
                    );
                    match rendered.and_then(|args| self.validate_args(task, &args).map(|()| args)) {
                        Ok(args) => {
                            self.db
                                .decide_instance(
                                    ti.id,
                                    TaskState::None,
                                    TaskState::Scheduled,
                                    Some(&args.to_string()),
                                    None,
                                )
                                .await?
                        }
                        Err(message) => {
                            self.db
                                .decide_instance(
                                    ti.id,
                                    TaskState::None,
                                    TaskState::Failed,
                                    None,
                                    Some(&message),
                                )
                                .await?
                        }
                    }
                }
            };
            self.bus.publish(events);
        }
        Ok(())
    }

    fn validate_args(&self, task: &TaskSpec, args: &Value) -> Result<(), String> {
        let op = self.registry.get(&task.operator).ok_or_else(|| {
            format!(
                "operator '{}' is not installed on this server",
                task.operator
            )
        })?;
        op.validate(args)
            .map_err(|e| format!("{}: {e}", task.operator))
    }

    /// Params, run metadata, and the results of the task's upstream tasks (a mapped upstream
    /// gives the list of its instances' results, in map order).
    async fn template_context(
        &self,
        run: &RunRow,
        pipeline: &Pipeline,
        task_id: &str,
    ) -> Result<Value, EngineError> {
        let conf: Value = serde_json::from_str(&run.conf).unwrap_or(Value::Object(Map::new()));
        let mut tasks = Map::new();
        for up in &pipeline.upstream[task_id] {
            let outputs = self.db.task_outputs(run.id, up).await?;
            let mapped = pipeline.task(up).is_some_and(TaskSpec::is_mapped);
            let parse = |o: &Option<String>| {
                o.as_deref()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Value::Null)
            };
            let output = if mapped {
                Value::Array(outputs.iter().map(|(_, o)| parse(o)).collect())
            } else {
                outputs
                    .first()
                    .map(|(_, o)| parse(o))
                    .unwrap_or(Value::Null)
            };
            tasks.insert(up.clone(), json!({ "output": output }));
        }
        Ok(json!({
            "params": conf,
            "run": {
                "id": run.id, "pipeline_id": run.pipeline_id, "conf": conf, "logical_date": run.logical_date,
                "trigger": run.run_trigger, "triggered_by": run.triggered_by,
            },
            "tasks": tasks,
            "task": { "id": task_id },
        }))
    }

    /// Turns a mapped task's placeholder into one instance per input element.
    async fn expand(
        &self,
        run: &RunRow,
        pipeline: &Pipeline,
        task_id: &str,
        task: &TaskSpec,
        placeholder_id: i64,
    ) -> Result<Vec<crate::store::engine::EngineEvent>, EngineError> {
        let ctx = self.template_context(run, pipeline, task_id).await?;
        let fail = |message: String| async move {
            self.db
                .decide_instance(
                    placeholder_id,
                    TaskState::None,
                    TaskState::Failed,
                    None,
                    Some(&message),
                )
                .await
        };
        let items = match self.mapping_items(task, task_id, &ctx) {
            Ok(items) => items,
            Err(message) => return Ok(fail(message).await?),
        };
        if items.is_empty() {
            return Ok(self
                .db
                .decide_instance(
                    placeholder_id,
                    TaskState::None,
                    TaskState::Skipped,
                    None,
                    Some("nothing to map over"),
                )
                .await?);
        }
        let base = match self.templates.render(
            &Value::Object(task.base_args()),
            &ctx,
            &format!("tasks.{task_id}.partial"),
        ) {
            Ok(Value::Object(m)) => m,
            Ok(_) => Map::new(),
            Err(message) => return Ok(fail(message).await?),
        };
        let template = placeholder(pipeline, task_id, task, &run.labels);
        let mut instances = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let mut args = base.clone();
            let mut error = None;
            for (k, v) in &item {
                if args.contains_key(k) {
                    error = Some(format!("mapped argument '{k}' is also given in partial"));
                }
                args.insert(k.clone(), v.clone());
            }
            let map_key = match &task.map_key {
                Some(t) => {
                    let mut item_ctx = ctx.clone();
                    item_ctx["item"] = Value::Object(item.clone());
                    item_ctx["map_index"] = json!(index);
                    match self.templates.render(
                        &Value::String(t.clone()),
                        &item_ctx,
                        &format!("tasks.{task_id}.map_key"),
                    ) {
                        Ok(Value::String(s)) => s,
                        Ok(other) => other.to_string(),
                        Err(message) => {
                            error.get_or_insert(message);
                            index.to_string()
                        }
                    }
                }
                None => default_map_key(&item, index),
            };
            let args = Value::Object(args);
            if error.is_none()
                && let Err(message) = self.validate_args(task, &args)
            {
                error = Some(message);
            }
            instances.push(NewTask {
                map_index: i64::try_from(index).unwrap_or(i64::MAX),
                map_key: Some(map_key),
                state: if error.is_some() {
                    TaskState::Failed
                } else {
                    TaskState::Scheduled
                },
                input: Some(args.to_string()),
                error,
                ..template.clone()
            });
        }
        Ok(self
            .db
            .expand_task(run.id, placeholder_id, task_id, &instances)
            .await?)
    }

    /// The per-instance argument sets of a mapped task.
    fn mapping_items(
        &self,
        task: &TaskSpec,
        task_id: &str,
        ctx: &Value,
    ) -> Result<Vec<Map<String, Value>>, String> {
        let limit = self.config.max_map_length;
        let too_many = |n: usize| {
            format!(
                "task '{task_id}' expands to {n} instances, over the limit of {limit} (raise it with --max-map-length)"
            )
        };
        if let Some(kwargs) = &task.expand_kwargs {
            let value =
                self.templates
                    .render(kwargs, ctx, &format!("tasks.{task_id}.expand_kwargs"))?;
            let Value::Array(list) = value else {
                return Err(format!(
                    "expand_kwargs of '{task_id}' must be a list of objects, got {}",
                    json_kind(&value)
                ));
            };
            if list.len() > limit {
                return Err(too_many(list.len()));
            }
            return list
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(m) => Ok(m),
                    other => Err(format!(
                        "expand_kwargs of '{task_id}': element {i} is {}, not an object",
                        json_kind(&other)
                    )),
                })
                .collect();
        }
        let Some(expand) = &task.expand else {
            return Ok(Vec::new());
        };
        let mut lists = Vec::new();
        let mut total: usize = 1;
        for (name, source) in expand {
            let value =
                self.templates
                    .render(source, ctx, &format!("tasks.{task_id}.expand.{name}"))?;
            let Value::Array(list) = value else {
                return Err(format!(
                    "expand.{name} of '{task_id}' must be a list, got {}",
                    json_kind(&value)
                ));
            };
            total = total.saturating_mul(list.len());
            lists.push((name.clone(), list));
        }
        if total > limit {
            return Err(too_many(total));
        }
        // Cross product, the first list varying slowest.
        let mut items = vec![Map::new()];
        for (name, list) in lists {
            items = items
                .into_iter()
                .flat_map(|base| {
                    let name = &name;
                    list.iter().map(move |v| {
                        let mut m = base.clone();
                        m.insert(name.clone(), v.clone());
                        m
                    })
                })
                .collect();
        }
        Ok(items)
    }

    /// Admits scheduled instances of a run to the queue, within every limit.
    async fn admit(
        &self,
        run: &RunRow,
        pipeline: &Pipeline,
        counts: &HashMap<String, TaskCounts>,
        pools: &HashMap<String, i64>,
        pool_usage: &mut HashMap<String, i64>,
    ) -> Result<bool, EngineError> {
        let run_active: i64 = counts.values().map(TaskCounts::active).sum();
        let run_room = i64::from(pipeline.spec.max_active_tasks) - run_active;
        let scheduled: i64 = counts.values().map(|c| c.get(TaskState::Scheduled)).sum();
        if run_room <= 0 || scheduled == 0 {
            return Ok(false);
        }
        let mut task_active: HashMap<&str, i64> = counts
            .iter()
            .map(|(t, c)| (t.as_str(), c.active()))
            .collect();
        let candidates: Vec<Candidate> = self
            .db
            .scheduled_candidates(run.id, (run_room * 4).min(4000))
            .await?;
        let mut chosen = Vec::new();
        for c in &candidates {
            if chosen.len() as i64 >= run_room {
                break;
            }
            let Some(task) = pipeline.task(&c.task_id) else {
                continue;
            };
            let active = task_active.get(c.task_id.as_str()).copied().unwrap_or(0);
            if task
                .max_active_tis_per_dagrun
                .is_some_and(|cap| active >= i64::from(cap))
            {
                continue;
            }
            let Some(&slots) = pools.get(&c.pool) else {
                self.fail_unschedulable(
                    c.id,
                    run.id,
                    format!(
                        "pool '{}' does not exist; create it on the Pools page",
                        c.pool
                    ),
                )
                .await?;
                continue;
            };
            if c.pool_slots > slots {
                self.fail_unschedulable(
                    c.id,
                    run.id,
                    format!(
                        "needs {} slots but pool '{}' has {slots}",
                        c.pool_slots, c.pool
                    ),
                )
                .await?;
                continue;
            }
            let used = pool_usage.entry(c.pool.clone()).or_default();
            if *used + c.pool_slots > slots {
                continue;
            }
            *used += c.pool_slots;
            *task_active.entry(c.task_id.as_str()).or_default() += 1;
            chosen.push(c.id);
        }
        if chosen.is_empty() {
            return Ok(false);
        }
        let events = self.db.queue_instances(run.id, &chosen).await?;
        self.bus.publish(events);
        Ok(true)
    }

    async fn fail_unschedulable(
        &self,
        ti_id: i64,
        run_id: i64,
        message: String,
    ) -> Result<(), EngineError> {
        tracing::warn!(run_id, ti_id, %message, "instance cannot be scheduled");
        let events = self
            .db
            .decide_instance(
                ti_id,
                TaskState::Scheduled,
                TaskState::Failed,
                None,
                Some(&message),
            )
            .await?;
        self.bus.publish(events);
        Ok(())
    }

    /// Attempts whose worker stopped renewing its lease count as failed tries.
    async fn reap_expired_leases(&self) -> Result<(), EngineError> {
        for lease in self.db.expired_leases(now_ms()).await? {
            let crate::store::engine::ExpiredLease {
                ti_id,
                fence,
                run_id,
                try_number,
                max_tries,
                attempt_id,
            } = lease;
            let error =
                "the worker running this attempt stopped answering (lease expired)".to_string();
            let retry = if try_number < max_tries {
                let run = self.db.run_row(run_id).await?;
                let ti = self.db.instance(ti_id).await?;
                match (run, ti) {
                    (Some(run), Some(ti)) => {
                        let pipeline = self.run_pipeline(&run)?;
                        pipeline.task(&ti.task_id).map(|t| retry_at(t, try_number))
                    }
                    _ => None,
                }
            } else {
                None
            };
            tracing::warn!(
                ti_id,
                attempt_id,
                try_number,
                "reclaiming an attempt whose lease expired"
            );
            if let Some(events) = self
                .db
                .complete_attempt(
                    ti_id,
                    fence,
                    attempt_id,
                    &Completion::Failed {
                        error,
                        retry_at: retry,
                    },
                )
                .await?
            {
                self.bus.publish(events);
            }
        }
        Ok(())
    }

    /// Creates the runs of cron schedules that are due (no catch-up: one run per due tick at most).
    async fn create_scheduled_runs(&self) -> Result<Option<i64>, EngineError> {
        let now = now_ms();
        let mut next_due = None;
        for row in self.db.pipeline_rows().await? {
            let Some(pipeline) = self.catalog.get(&row.id) else {
                continue;
            };
            let Some(cron) = &pipeline.spec.schedule else {
                continue;
            };
            if row.paused {
                continue;
            }
            let next = |after: i64| next_tick(cron, after);
            match row.next_run_at {
                None => self.db.set_next_run_at(&row.id, next(now)).await?,
                Some(at) if at <= now => {
                    let conf = Map::new();
                    self.create_run(
                        &pipeline,
                        conf,
                        "schedule",
                        "scheduler",
                        at,
                        Default::default(),
                    )
                    .await?;
                    let following = next(now);
                    self.db.set_next_run_at(&row.id, following).await?;
                    next_due = following.or(next_due);
                }
                Some(at) => next_due = Some(next_due.map_or(at, |n: i64| n.min(at))),
            }
        }
        Ok(next_due)
    }
}

/// The next cron tick strictly after `after_ms`.
pub fn next_tick(cron: &str, after_ms: i64) -> Option<i64> {
    let parsed = croner::Cron::new(cron)
        .with_seconds_optional()
        .parse()
        .ok()?;
    let after = chrono::DateTime::from_timestamp_millis(after_ms)?;
    parsed
        .find_next_occurrence(&after, false)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn default_map_key(item: &Map<String, Value>, index: usize) -> String {
    match item.values().next() {
        Some(Value::String(s)) if item.len() == 1 => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) if item.len() == 1 => v.to_string(),
        _ => index.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    #[test]
    fn trigger_rules_follow_airflow() {
        assert_eq!(decide(TriggerRule::AllSuccess, &[]), Decision::Run);
        assert_eq!(
            decide(TriggerRule::AllSuccess, &[Success, Pending]),
            Decision::Wait
        );
        assert_eq!(
            decide(TriggerRule::AllSuccess, &[Failed, Pending]),
            Decision::UpstreamFailed
        );
        assert_eq!(
            decide(TriggerRule::AllSuccess, &[Success, Skipped]),
            Decision::Skip
        );
        assert_eq!(
            decide(TriggerRule::AllDone, &[Failed, Success]),
            Decision::Run
        );
        assert_eq!(
            decide(TriggerRule::AllDone, &[Failed, Pending]),
            Decision::Wait
        );
        assert_eq!(
            decide(TriggerRule::OneFailed, &[Failed, Pending]),
            Decision::Run
        );
        assert_eq!(
            decide(TriggerRule::OneFailed, &[Success, Success]),
            Decision::Skip
        );
        assert_eq!(
            decide(TriggerRule::OneSuccess, &[Pending, Success]),
            Decision::Run
        );
        assert_eq!(
            decide(TriggerRule::AllFailed, &[Failed, Failed]),
            Decision::Run
        );
        assert_eq!(
            decide(TriggerRule::NoneFailed, &[Success, Skipped]),
            Decision::Run
        );
    }

    #[test]
    fn map_keys_default_to_the_single_value() {
        let item = serde_json::json!({"study": "ONC-202"});
        assert_eq!(default_map_key(item.as_object().unwrap(), 3), "ONC-202");
        let two = serde_json::json!({"a": 1, "b": 2});
        assert_eq!(default_map_key(two.as_object().unwrap(), 3), "3");
    }

    #[test]
    fn cron_ticks_come_after_the_given_time() {
        let t = next_tick("0 * * * *", 0).unwrap();
        assert_eq!(t, 3_600_000);
        assert!(next_tick("nonsense", 0).is_none());
    }
}
