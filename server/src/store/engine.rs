//! Storage of the job engine: pipelines, pools, runs, task instances, attempts, logs, events.
//!
//! Every state transition and result write happens in one transaction together with the event
//! that announces it. Workers' writes are fenced: a completion names the fence it was claimed
//! with, and a stale fence (the attempt was reclaimed, cancelled or cleared) changes nothing.
use super::{Db, StoreResult, execute_on, now_ms, on_pool, transaction};
use app::state::{RunState, TaskState};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// Inserts an event in the current transaction and remembers it for publishing after commit.
macro_rules! push_event {
    ($tx:ident, $events:ident, $run_id:expr, $kind:expr, $payload:expr) => {{
        let at = now_ms();
        let payload: Value = $payload;
        let run_id: Option<i64> = $run_id;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO engine_events (at, run_id, kind, payload) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(at)
        .bind(run_id)
        .bind($kind)
        .bind(payload.to_string())
        .fetch_one(&mut *$tx)
        .await?;
        $events.push(EngineEvent { id, at, run_id, kind: $kind.to_string(), payload });
    }};
}

/// Inserts one task instance inside a transaction.
macro_rules! insert_instance {
    ($tx:ident, $run_id:expr, $t:expr) => {{
        let t: &NewTask = $t;
        sqlx::query(
            "INSERT INTO task_instances (run_id, task_id, map_index, map_key, state, max_tries, pool, pool_slots, \
             priority, labels, input, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind($run_id).bind(&t.task_id).bind(t.map_index).bind(&t.map_key).bind(t.state.as_str())
        .bind(t.max_tries).bind(&t.pool).bind(t.pool_slots).bind(t.priority).bind(&t.labels)
        .bind(&t.input).bind(&t.error)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Resets instances inside a transaction (shared by clear and mark).
macro_rules! apply_clear {
    ($tx:ident, $run_id:expr, $reschedule:expr, $reset_tasks:expr) => {{
        let run_id: i64 = $run_id;
            for (id, fresh_tries) in $reschedule {
                sqlx::query(
                    "UPDATE task_instances SET state = CASE WHEN map_index >= 0 AND input IS NOT NULL THEN 'scheduled' ELSE 'none' END, \
                       max_tries = try_number + $3, output = NULL, error = NULL, started_at = NULL, ended_at = NULL, next_attempt_at = NULL, \
                       sensor_started_at = NULL, fence = fence + 1, lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $1 AND run_id = $2")
                    .bind(id).bind(run_id).bind(fresh_tries).execute(&mut *$tx).await?;
            }
            for (task_id, placeholder) in $reset_tasks {
                sqlx::query("DELETE FROM task_instances WHERE run_id = $1 AND task_id = $2")
                    .bind(run_id).bind(task_id).execute(&mut *$tx).await?;
                sqlx::query(
                    "INSERT INTO task_instances (run_id, task_id, map_index, map_key, state, max_tries, pool, pool_slots, \
                     priority, labels) VALUES ($1, $2, -1, NULL, 'none', $3, $4, $5, $6, $7)")
                    .bind(run_id).bind(task_id).bind(placeholder.max_tries).bind(&placeholder.pool)
                    .bind(placeholder.pool_slots).bind(placeholder.priority).bind(&placeholder.labels)
                    .execute(&mut *$tx).await?;
            }
    }};
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineEvent {
    pub id: i64,
    pub at: i64,
    pub run_id: Option<i64>,
    pub kind: String,
    pub payload: Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PipelineRow {
    pub id: String,
    pub source: String,
    pub origin: String,
    pub spec: String,
    pub paused: bool,
    pub next_run_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PoolRow {
    pub name: String,
    pub slots: i64,
    pub description: String,
    pub builtin: bool,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    pub pipeline_id: String,
    pub state: String,
    pub conf: String,
    pub run_trigger: String,
    pub triggered_by: String,
    pub logical_date: i64,
    pub labels: String,
    pub spec: String,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub run_name: Option<String>,
    /// A queued run does not start before this time.
    pub start_after: Option<i64>,
}

impl RunRow {
    pub fn state(&self) -> RunState {
        self.state.parse().unwrap_or(RunState::Failed)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TiRow {
    pub id: i64,
    pub run_id: i64,
    pub task_id: String,
    pub map_index: i64,
    pub map_key: Option<String>,
    pub state: String,
    pub try_number: i64,
    pub max_tries: i64,
    pub pool: String,
    pub pool_slots: i64,
    pub priority: i64,
    pub labels: String,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub sensor_started_at: Option<i64>,
    pub fence: i64,
    pub lease_owner: Option<String>,
}

impl TiRow {
    pub fn state(&self) -> TaskState {
        self.state.parse().unwrap_or(TaskState::Failed)
    }
}

pub(super) const RUN_COLUMNS: &str = "id, pipeline_id, state, conf, run_trigger, triggered_by, logical_date, labels, spec, \
    queued_at, started_at, ended_at, run_name, start_after";

/// A running attempt whose worker stopped renewing its lease.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExpiredLease {
    pub ti_id: i64,
    pub fence: i64,
    pub run_id: i64,
    pub try_number: i64,
    pub max_tries: i64,
    pub attempt_id: i64,
}

pub(super) const TI_COLUMNS: &str = "id, run_id, task_id, map_index, map_key, state, try_number, max_tries, pool, \
    pool_slots, priority, labels, input, output, error, queued_at, started_at, ended_at, next_attempt_at, \
    sensor_started_at, fence, lease_owner";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceSpan {
    pub id: i64,
    pub task_id: String,
    pub map_index: i64,
    pub map_key: Option<String>,
    pub state: String,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptBucket {
    pub task_id: String,
    /// 1 for retries (try > 1).
    pub retry: i64,
    pub first: i64,
    pub last: i64,
    /// 1 for failed attempts.
    pub failed: i64,
    pub n: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptSpan {
    pub ti_id: i64,
    pub try_number: i64,
    pub state: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: i64,
    pub ti_id: i64,
    pub try_number: i64,
    pub fence: i64,
    pub worker: String,
    pub state: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LogLine {
    pub id: i64,
    pub at: i64,
    pub stream: String,
    pub line: String,
}

/// A task instance to create.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub task_id: String,
    pub map_index: i64,
    pub map_key: Option<String>,
    pub state: TaskState,
    pub max_tries: i64,
    pub pool: String,
    pub pool_slots: i64,
    pub priority: i64,
    pub labels: String,
    pub input: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub pipeline_id: String,
    pub conf: Value,
    pub trigger: String,
    pub triggered_by: String,
    pub logical_date: i64,
    pub labels: String,
    pub spec: String,
    pub run_name: Option<String>,
    pub start_after: Option<i64>,
    /// When the run misses its SLA unless it has ended.
    pub sla_due_at: Option<i64>,
    /// The pipeline has targets for the run's end.
    pub alerts_pending: bool,
}

/// A task instance a worker has claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub run_id: i64,
    pub task_id: String,
    pub map_index: i64,
    pub map_key: Option<String>,
    pub try_number: i64,
    pub max_tries: i64,
    pub fence: i64,
    pub input: Option<String>,
    pub sensor_started_at: Option<i64>,
    #[sqlx(skip)]
    pub attempt_id: i64,
}

/// A queueable instance and what it needs from the limits.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: i64,
    pub task_id: String,
    pub pool: String,
    pub pool_slots: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Completion {
    Success {
        output: Value,
    },
    /// `retry_at` set: up for retry then; otherwise failed for good.
    Failed {
        error: String,
        retry_at: Option<i64>,
    },
    /// A sensor that timed out with `soft_fail`.
    Skipped {
        reason: String,
    },
    /// A sensor in reschedule mode: poke again at `at`, holding no slot meanwhile.
    Reschedule {
        at: i64,
    },
}

/// Instances to run again: `reschedule` pairs an instance with the tries it gets afresh (its
/// task's retries + 1) and keeps its input; `reset_tasks` deletes a mapped task's instances and
/// restores its placeholder, so it is expanded again from fresh upstream results.
#[derive(Debug, Clone, Default)]
pub struct Resets {
    pub reschedule: Vec<(i64, i64)>,
    pub reset_tasks: Vec<(String, NewTask)>,
}

impl Resets {
    pub fn is_empty(&self) -> bool {
        self.reschedule.is_empty() && self.reset_tasks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.reschedule.len() + self.reset_tasks.len()
    }

    pub fn extend(&mut self, other: Resets) {
        self.reschedule.extend(other.reschedule);
        self.reset_tasks.extend(other.reset_tasks);
    }
}

/// Filters for the runs list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub pipeline_id: Option<String>,
    pub state: Option<RunState>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

fn ti_event(ti: &TiRow) -> Value {
    serde_json::json!({
        "ti_id": ti.id, "task_id": ti.task_id, "map_index": ti.map_index, "map_key": ti.map_key,
        "state": ti.state, "try_number": ti.try_number,
    })
}

impl Db {
    // ---- pipelines ------------------------------------------------------------------------

    pub async fn upsert_pipeline(
        &self,
        id: &str,
        source: &str,
        origin: &str,
        spec: &str,
    ) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query(
            "INSERT INTO pipelines (id, source, origin, spec, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET source = excluded.source, origin = excluded.origin, \
             spec = excluded.spec, updated_at = excluded.updated_at")
            .bind(id).bind(source).bind(origin).bind(spec).bind(now_ms()).execute(pool).await)?;
        Ok(())
    }

    pub async fn pipeline_rows(&self) -> StoreResult<Vec<PipelineRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, PipelineRow>(
            "SELECT id, source, origin, spec, paused, next_run_at, updated_at FROM pipelines ORDER BY id")
            .fetch_all(pool).await)?)
    }

    pub async fn pipeline_row(&self, id: &str) -> StoreResult<Option<PipelineRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, PipelineRow>(
            "SELECT id, source, origin, spec, paused, next_run_at, updated_at FROM pipelines WHERE id = $1")
            .bind(id).fetch_optional(pool).await)?)
    }

    pub async fn set_next_run_at(&self, id: &str, at: Option<i64>) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query("UPDATE pipelines SET next_run_at = $2 WHERE id = $1")
            .bind(id).bind(at).execute(pool).await)?;
        Ok(())
    }

    pub async fn set_pipeline_paused(&self, id: &str, paused: bool) -> StoreResult<bool> {
        let n = execute_on!(self, pool => sqlx::query("UPDATE pipelines SET paused = $2 WHERE id = $1")
            .bind(id).bind(paused).execute(pool).await)?;
        Ok(n > 0)
    }

    // ---- pools ----------------------------------------------------------------------------

    pub async fn pools(&self) -> StoreResult<Vec<PoolRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, PoolRow>(
            "SELECT name, slots, description, builtin FROM pools ORDER BY name").fetch_all(pool).await)?)
    }

    /// Creates a pool unless one of that name exists (its slots are then left as an operator set them).
    pub async fn ensure_pool(&self, name: &str, slots: i64, description: &str) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query(
            "INSERT INTO pools (name, slots, description) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name).bind(slots).bind(description).execute(pool).await)?;
        Ok(())
    }

    pub async fn set_pool(&self, name: &str, slots: i64, description: &str) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query(
            "INSERT INTO pools (name, slots, description) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET slots = excluded.slots, description = excluded.description")
            .bind(name).bind(slots).bind(description).execute(pool).await)?;
        Ok(())
    }

    /// Deletes a pool that is not built in; returns whether one was deleted.
    pub async fn delete_pool(&self, name: &str) -> StoreResult<bool> {
        let n = execute_on!(self, pool => sqlx::query("DELETE FROM pools WHERE name = $1 AND NOT builtin")
            .bind(name).execute(pool).await)?;
        Ok(n > 0)
    }

    /// Slots held by queued and running instances, per pool.
    pub async fn pool_usage(&self) -> StoreResult<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT pool, CAST(SUM(pool_slots) AS BIGINT) FROM task_instances \
             WHERE state IN ('queued', 'running') GROUP BY pool").fetch_all(pool).await)?;
        Ok(rows.into_iter().collect())
    }

    // ---- runs -----------------------------------------------------------------------------

    /// Creates a queued run and the first instance of each of its tasks.
    pub async fn create_run(
        &self,
        run: &NewRun,
        tasks: &[NewTask],
    ) -> StoreResult<(i64, Vec<EngineEvent>)> {
        let now = now_ms();
        let conf = run.conf.to_string();
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            let run_id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (pipeline_id, state, conf, run_trigger, triggered_by, logical_date, labels, spec, queued_at, \
                   run_name, start_after, sla_due_at, alerts_pending) \
                 VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id")
                .bind(&run.pipeline_id).bind(&conf).bind(&run.trigger).bind(&run.triggered_by)
                .bind(run.logical_date).bind(&run.labels).bind(&run.spec).bind(now)
                .bind(&run.run_name).bind(run.start_after).bind(run.sla_due_at).bind(run.alerts_pending)
                .fetch_one(&mut *tx).await?;
            for t in tasks {
                insert_instance!(tx, run_id, t);
            }
            push_event!(tx, events, Some(run_id), "run", serde_json::json!({
                "run_id": run_id, "pipeline_id": run.pipeline_id, "state": "queued"}));
            (run_id, events)
        }))
    }

    pub async fn run_row(&self, id: i64) -> StoreResult<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        Ok(
            on_pool!(self, pool => sqlx::query_as::<_, RunRow>(&sql).bind(id).fetch_optional(pool).await)?,
        )
    }

    /// Runs that are queued or running, oldest first.
    pub async fn active_runs(&self) -> StoreResult<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state IN ('queued', 'running') ORDER BY id"
        );
        Ok(on_pool!(self, pool => sqlx::query_as::<_, RunRow>(&sql).fetch_all(pool).await)?)
    }

    pub async fn list_runs(&self, f: &RunFilter) -> StoreResult<Vec<RunRow>> {
        let limit = if f.limit <= 0 { 50 } else { f.limit.min(500) };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs \
             WHERE ($1 IS NULL OR pipeline_id = $1) AND ($2 IS NULL OR state = $2) \
               AND ($3 IS NULL OR queued_at >= $3) AND ($4 IS NULL OR queued_at < $4) \
             ORDER BY id DESC LIMIT $5 OFFSET $6"
        );
        Ok(on_pool!(self, pool => sqlx::query_as::<_, RunRow>(&sql)
            .bind(&f.pipeline_id).bind(f.state.map(|s| s.as_str())).bind(f.since).bind(f.until)
            .bind(limit).bind(f.offset.max(0))
            .fetch_all(pool).await)?)
    }

    pub async fn set_run_state(
        &self,
        run_id: i64,
        from: RunState,
        to: RunState,
    ) -> StoreResult<Vec<EngineEvent>> {
        let now = now_ms();
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            let n = sqlx::query(
                "UPDATE runs SET state = $3, \
                   started_at = CASE WHEN $3 = 'running' THEN COALESCE(started_at, $4) ELSE started_at END, \
                   ended_at = CASE WHEN $3 IN ('success', 'failed', 'canceled') THEN $4 ELSE NULL END \
                 WHERE id = $1 AND state = $2")
                .bind(run_id).bind(from.as_str()).bind(to.as_str()).bind(now)
                .execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                push_event!(tx, events, Some(run_id), "run", serde_json::json!({"run_id": run_id, "state": to}));
            }
            events
        }))
    }

    /// Ends a running run if, at commit time, none of its instances is unfinished: failed when
    /// any failed, success otherwise. Deciding in one statement keeps a concurrent clear or mark
    /// from being overtaken by a stale decision.
    pub async fn finish_run(&self, run_id: i64) -> StoreResult<Vec<EngineEvent>> {
        let now = now_ms();
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            let state: Option<String> = sqlx::query_scalar(
                "UPDATE runs SET ended_at = $2, state = CASE WHEN EXISTS (SELECT 1 FROM task_instances \
                   WHERE run_id = $1 AND state IN ('failed', 'upstream_failed')) THEN 'failed' ELSE 'success' END \
                 WHERE id = $1 AND state = 'running' AND NOT EXISTS (SELECT 1 FROM task_instances WHERE run_id = $1 \
                   AND state NOT IN ('success', 'failed', 'skipped', 'upstream_failed', 'removed')) \
                 RETURNING state")
                .bind(run_id).bind(now).fetch_optional(&mut *tx).await?;
            if let Some(state) = state {
                push_event!(tx, events, Some(run_id), "run", serde_json::json!({"run_id": run_id, "state": state}));
            }
            events
        }))
    }

    // ---- task instances: scheduling -------------------------------------------------------

    /// (task_id, state, count) for one run.
    pub async fn task_state_counts(&self, run_id: i64) -> StoreResult<Vec<(String, String, i64)>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT task_id, state, COUNT(*) FROM task_instances WHERE run_id = $1 GROUP BY task_id, state")
            .bind(run_id).fetch_all(pool).await)?)
    }

    pub async fn instances(&self, run_id: i64, task_id: &str) -> StoreResult<Vec<TiRow>> {
        let sql = format!(
            "SELECT {TI_COLUMNS} FROM task_instances WHERE run_id = $1 AND task_id = $2 ORDER BY map_index"
        );
        Ok(
            on_pool!(self, pool => sqlx::query_as::<_, TiRow>(&sql).bind(run_id).bind(task_id).fetch_all(pool).await)?,
        )
    }

    pub async fn run_instances(&self, run_id: i64) -> StoreResult<Vec<TiRow>> {
        let sql = format!("SELECT {TI_COLUMNS} FROM task_instances WHERE run_id = $1 ORDER BY id");
        Ok(
            on_pool!(self, pool => sqlx::query_as::<_, TiRow>(&sql).bind(run_id).fetch_all(pool).await)?,
        )
    }

    /// The first `limit` live instances of a run (mapped placeholders left out), by id.
    pub async fn run_instances_page(&self, run_id: i64, limit: i64) -> StoreResult<Vec<TiRow>> {
        let sql = format!(
            "SELECT {TI_COLUMNS} FROM task_instances WHERE run_id = $1 AND state <> 'removed' ORDER BY id LIMIT $2"
        );
        Ok(
            on_pool!(self, pool => sqlx::query_as::<_, TiRow>(&sql).bind(run_id).bind(limit).fetch_all(pool).await)?,
        )
    }

    pub async fn instance(&self, ti_id: i64) -> StoreResult<Option<TiRow>> {
        let sql = format!("SELECT {TI_COLUMNS} FROM task_instances WHERE id = $1");
        Ok(
            on_pool!(self, pool => sqlx::query_as::<_, TiRow>(&sql).bind(ti_id).fetch_optional(pool).await)?,
        )
    }

    /// Successful outputs of the given tasks, ordered by map index.
    pub async fn task_outputs(
        &self,
        run_id: i64,
        task_id: &str,
    ) -> StoreResult<Vec<(i64, Option<String>)>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT map_index, output FROM task_instances WHERE run_id = $1 AND task_id = $2 AND state = 'success' \
             ORDER BY map_index").bind(run_id).bind(task_id).fetch_all(pool).await)?)
    }

    /// Sets the state of instances still in `from` (scheduling decisions), with input or error.
    pub async fn decide_instance(
        &self,
        ti_id: i64,
        from: TaskState,
        to: TaskState,
        input: Option<&str>,
        error: Option<&str>,
    ) -> StoreResult<Vec<EngineEvent>> {
        let now = now_ms();
        let sql = format!(
            "UPDATE task_instances SET state = $3, input = COALESCE($4, input), error = $5, \
               ended_at = CASE WHEN $3 IN ('success', 'failed', 'skipped', 'upstream_failed', 'removed') THEN $6 ELSE ended_at END \
             WHERE id = $1 AND state = $2 RETURNING {TI_COLUMNS}"
        );
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            let row: Option<TiRow> = sqlx::query_as(&sql).bind(ti_id).bind(from.as_str()).bind(to.as_str())
                .bind(input).bind(error).bind(now).fetch_optional(&mut *tx).await?;
            if let Some(ti) = row {
                push_event!(tx, events, Some(ti.run_id), "ti", ti_event(&ti));
            }
            events
        }))
    }

    /// Replaces a mapped task's placeholder with its instances.
    pub async fn expand_task(
        &self,
        run_id: i64,
        placeholder_id: i64,
        task_id: &str,
        instances: &[NewTask],
    ) -> StoreResult<Vec<EngineEvent>> {
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            let n = sqlx::query("DELETE FROM task_instances WHERE id = $1 AND state = 'none'")
                .bind(placeholder_id).execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                for t in instances {
                    insert_instance!(tx, run_id, t);
                }
                push_event!(tx, events, Some(run_id), "expanded", serde_json::json!({
                    "run_id": run_id, "task_id": task_id, "count": instances.len()}));
            }
            events
        }))
    }

    /// Instances whose retry or reschedule time has come go back to scheduled.
    pub async fn requeue_due(&self, run_id: i64, now: i64) -> StoreResult<u64> {
        Ok(execute_on!(self, pool => sqlx::query(
            "UPDATE task_instances SET state = 'scheduled', next_attempt_at = NULL \
             WHERE run_id = $1 AND state IN ('up_for_retry', 'up_for_reschedule') AND next_attempt_at <= $2")
            .bind(run_id).bind(now).execute(pool).await)?)
    }

    /// The earliest pending retry or reschedule time of a run.
    pub async fn next_due(&self, run_id: i64) -> StoreResult<Option<i64>> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM task_instances WHERE run_id = $1 AND state IN ('up_for_retry', 'up_for_reschedule')")
            .bind(run_id).fetch_one(pool).await)?)
    }

    pub async fn scheduled_candidates(
        &self,
        run_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<Candidate>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, Candidate>(
            "SELECT id, task_id, pool, pool_slots FROM task_instances WHERE run_id = $1 AND state = 'scheduled' \
             ORDER BY priority DESC, map_index, id LIMIT $2").bind(run_id).bind(limit).fetch_all(pool).await)?)
    }

    /// Admits scheduled instances to the queue.
    pub async fn queue_instances(&self, run_id: i64, ids: &[i64]) -> StoreResult<Vec<EngineEvent>> {
        let now = now_ms();
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            let mut queued = 0u64;
            for chunk in ids.chunks(400) {
                let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                let sql = format!(
                    "UPDATE task_instances SET state = 'queued', queued_at = $1 WHERE state = 'scheduled' AND id IN ({list})");
                queued += sqlx::query(&sql).bind(now).execute(&mut *tx).await?.rows_affected();
            }
            if queued > 0 {
                push_event!(tx, events, Some(run_id), "queued", serde_json::json!({
                    "run_id": run_id, "count": queued, "ti_ids": ids}));
            }
            events
        }))
    }

    // ---- task instances: workers ------------------------------------------------------------

    /// Claims up to `limit` queued instances whose labels this worker has.
    pub async fn claim(
        &self,
        worker: &str,
        worker_labels: &[String],
        limit: i64,
        lease_ms: i64,
    ) -> StoreResult<(Vec<Claimed>, Vec<EngineEvent>)> {
        let now = now_ms();
        let select = match self {
            Db::Sqlite(_) => {
                "SELECT id, labels FROM task_instances WHERE state = 'queued' ORDER BY priority DESC, id LIMIT $1"
            }
            Db::Postgres(_) => {
                "SELECT id, labels FROM task_instances WHERE state = 'queued' ORDER BY priority DESC, id LIMIT $1 \
                                FOR UPDATE SKIP LOCKED"
            }
        };
        let claim_sql = "UPDATE task_instances SET state = 'running', try_number = try_number + 1, fence = fence + 1, \
              lease_owner = $2, lease_expires_at = $3, started_at = $4, ended_at = NULL, \
              sensor_started_at = COALESCE(sensor_started_at, $4) \
            WHERE id = $1 AND state = 'queued' \
            RETURNING id, run_id, task_id, map_index, map_key, try_number, max_tries, fence, input, sensor_started_at";
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            let rows: Vec<(i64, String)> = sqlx::query_as(select).bind(limit * 4).fetch_all(&mut *tx).await?;
            let mut claimed = Vec::new();
            for (id, labels) in rows {
                if claimed.len() as i64 >= limit {
                    break;
                }
                if !labels.split(',').filter(|l| !l.is_empty()).all(|l| worker_labels.iter().any(|w| w == l)) {
                    continue;
                }
                let row: Option<Claimed> = sqlx::query_as(claim_sql).bind(id).bind(worker).bind(now + lease_ms).bind(now)
                    .fetch_optional(&mut *tx).await?;
                let Some(mut c) = row else { continue };
                c.attempt_id = sqlx::query_scalar(
                    "INSERT INTO task_attempts (ti_id, try_number, fence, worker, state, started_at) \
                     VALUES ($1, $2, $3, $4, 'running', $5) RETURNING id")
                    .bind(c.id).bind(c.try_number).bind(c.fence).bind(worker).bind(now)
                    .fetch_one(&mut *tx).await?;
                push_event!(tx, events, Some(c.run_id), "ti", serde_json::json!({
                    "ti_id": c.id, "task_id": c.task_id, "map_index": c.map_index, "map_key": c.map_key,
                    "state": "running", "try_number": c.try_number, "worker": worker}));
                claimed.push(c);
            }
            (claimed, events)
        }))
    }

    /// Extends the leases of this worker's running instances; returns the ids it still owns.
    pub async fn heartbeat(&self, worker: &str, lease_ms: i64) -> StoreResult<Vec<i64>> {
        let now = now_ms();
        execute_on!(self, pool => sqlx::query(
            "UPDATE task_instances SET lease_expires_at = $2 WHERE lease_owner = $1 AND state = 'running'")
            .bind(worker).bind(now + lease_ms).execute(pool).await)?;
        execute_on!(self, pool => sqlx::query("UPDATE workers SET heartbeat_at = $2 WHERE id = $1")
            .bind(worker).bind(now).execute(pool).await)?;
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM task_instances WHERE lease_owner = $1 AND state = 'running'")
            .bind(worker).fetch_all(pool).await)?)
    }

    /// Records how an attempt ended. `None` when the fence is stale: the write is rejected.
    pub async fn complete_attempt(
        &self,
        ti_id: i64,
        fence: i64,
        attempt_id: i64,
        outcome: &Completion,
    ) -> StoreResult<Option<Vec<EngineEvent>>> {
        let now = now_ms();
        let (state, output, error, next_at, try_back) = match outcome {
            Completion::Success { output } => {
                (TaskState::Success, Some(output.to_string()), None, None, 0)
            }
            Completion::Failed {
                error,
                retry_at: Some(at),
            } => (
                TaskState::UpForRetry,
                None,
                Some(error.clone()),
                Some(*at),
                0,
            ),
            Completion::Failed {
                error,
                retry_at: None,
            } => (TaskState::Failed, None, Some(error.clone()), None, 0),
            Completion::Skipped { reason } => {
                (TaskState::Skipped, None, Some(reason.clone()), None, 0)
            }
            // A reschedule is not a new try: the next poke counts as the same one.
            Completion::Reschedule { at } => (TaskState::UpForReschedule, None, None, Some(*at), 1),
        };
        let attempt_state = match outcome {
            Completion::Success { .. } => "success",
            Completion::Failed { .. } => "failed",
            Completion::Skipped { .. } => "skipped",
            Completion::Reschedule { .. } => "rescheduled",
        };
        let ended = if state.is_terminal() { Some(now) } else { None };
        let sql = format!(
            "UPDATE task_instances SET state = $3, output = $4, error = $5, ended_at = $6, next_attempt_at = $7, \
               lease_owner = NULL, lease_expires_at = NULL, try_number = try_number - $8 \
             WHERE id = $1 AND fence = $2 AND state = 'running' RETURNING {TI_COLUMNS}"
        );
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            let row: Option<TiRow> = sqlx::query_as(&sql).bind(ti_id).bind(fence).bind(state.as_str()).bind(&output)
                .bind(&error).bind(ended).bind(next_at).bind(try_back).fetch_optional(&mut *tx).await?;
            match row {
                Some(ti) => {
                    sqlx::query("UPDATE task_attempts SET state = $2, ended_at = $3, error = $4 WHERE id = $1")
                        .bind(attempt_id).bind(attempt_state).bind(now).bind(&error).execute(&mut *tx).await?;
                    push_event!(tx, events, Some(ti.run_id), "ti", ti_event(&ti));
                    Some(events)
                }
                None => {
                    // The attempt lost its claim (reclaimed, cancelled or cleared): keep its record honest.
                    sqlx::query("UPDATE task_attempts SET state = 'superseded', ended_at = COALESCE(ended_at, $2) \
                                 WHERE id = $1 AND state = 'running'")
                        .bind(attempt_id).bind(now).execute(&mut *tx).await?;
                    None
                }
            }
        }))
    }

    /// Running instances whose worker stopped renewing the lease.
    pub async fn expired_leases(&self, now: i64) -> StoreResult<Vec<ExpiredLease>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT ti.id AS ti_id, ti.fence, ti.run_id, ti.try_number, ti.max_tries, a.id AS attempt_id FROM task_instances ti \
             JOIN task_attempts a ON a.ti_id = ti.id AND a.fence = ti.fence \
             WHERE ti.state = 'running' AND ti.lease_expires_at < $1").bind(now).fetch_all(pool).await)?)
    }

    // ---- operator actions -------------------------------------------------------------------

    /// Cancels a run: waiting instances are skipped, running ones fail with the reason and their
    /// fences move on, so a late result from their worker is rejected.
    pub async fn cancel_run(&self, run_id: i64, reason: &str) -> StoreResult<Vec<EngineEvent>> {
        let now = now_ms();
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            let n = sqlx::query("UPDATE runs SET state = 'canceled', ended_at = $2 WHERE id = $1 AND state IN ('queued', 'running')")
                .bind(run_id).bind(now).execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                sqlx::query("UPDATE task_instances SET state = 'failed', error = $2, ended_at = $3, fence = fence + 1, \
                               lease_owner = NULL, lease_expires_at = NULL WHERE run_id = $1 AND state = 'running'")
                    .bind(run_id).bind(reason).bind(now).execute(&mut *tx).await?;
                sqlx::query("UPDATE task_attempts SET state = 'canceled', ended_at = $2, error = $3 \
                             WHERE state = 'running' AND ti_id IN (SELECT id FROM task_instances WHERE run_id = $1)")
                    .bind(run_id).bind(now).bind(reason).execute(&mut *tx).await?;
                sqlx::query("UPDATE task_instances SET state = 'skipped', ended_at = $2 WHERE run_id = $1 \
                             AND state IN ('none', 'scheduled', 'queued', 'up_for_retry', 'up_for_reschedule', 'deferred')")
                    .bind(run_id).bind(now).execute(&mut *tx).await?;
                push_event!(tx, events, Some(run_id), "run", serde_json::json!({"run_id": run_id, "state": "canceled"}));
            }
            events
        }))
    }

    /// Resets instances so they run again (see [`Resets`]); the run is running again afterwards.
    pub async fn clear_instances(
        &self,
        run_id: i64,
        resets: &Resets,
    ) -> StoreResult<Vec<EngineEvent>> {
        let now = now_ms();
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            apply_clear!(tx, run_id, &resets.reschedule, &resets.reset_tasks);
            let n = sqlx::query("UPDATE runs SET state = 'running', ended_at = NULL, started_at = COALESCE(started_at, $2) \
                                 WHERE id = $1 AND state <> 'running'")
                .bind(run_id).bind(now).execute(&mut *tx).await?.rows_affected();
            push_event!(tx, events, Some(run_id), "cleared", serde_json::json!({
                "run_id": run_id, "ti_ids": resets.reschedule.iter().map(|(id, _)| id).collect::<Vec<_>>(), "tasks": resets.reset_tasks.iter().map(|(t, _)| t).collect::<Vec<_>>()}));
            if n > 0 {
                push_event!(tx, events, Some(run_id), "run", serde_json::json!({"run_id": run_id, "state": "running"}));
            }
            events
        }))
    }

    /// Sets instances to success or failed by hand; a running attempt's late result is rejected.
    /// `unblock` resets downstream instances in the same transaction (see `clear_instances`).
    pub async fn mark_instances(
        &self,
        run_id: i64,
        ids: &[i64],
        state: TaskState,
        by: &str,
        unblock: &Resets,
    ) -> StoreResult<Vec<EngineEvent>> {
        let now = now_ms();
        let note = format!("marked {state} by {by}");
        let sql = format!(
            "UPDATE task_instances SET state = $3, error = CASE WHEN $3 = 'failed' THEN $4 ELSE NULL END, ended_at = $5, \
               fence = fence + 1, lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = NULL \
             WHERE id = $1 AND run_id = $2 RETURNING {TI_COLUMNS}"
        );
        Ok(transaction!(self, tx => {
            let mut events = Vec::new();
            for id in ids {
                let row: Option<TiRow> = sqlx::query_as(&sql).bind(id).bind(run_id).bind(state.as_str()).bind(&note)
                    .bind(now).fetch_optional(&mut *tx).await?;
                if let Some(ti) = row {
                    sqlx::query("UPDATE task_attempts SET state = 'superseded', ended_at = $2 WHERE ti_id = $1 AND state = 'running'")
                        .bind(ti.id).bind(now).execute(&mut *tx).await?;
                    push_event!(tx, events, Some(run_id), "ti", ti_event(&ti));
                }
            }
            apply_clear!(tx, run_id, &unblock.reschedule, &unblock.reset_tasks);
            let n = sqlx::query("UPDATE runs SET state = 'running', ended_at = NULL WHERE id = $1 AND state IN ('success', 'failed')")
                .bind(run_id).execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                push_event!(tx, events, Some(run_id), "run", serde_json::json!({"run_id": run_id, "state": "running"}));
            }
            events
        }))
    }

    // ---- attempts, logs, events, workers -----------------------------------------------------

    /// Every live instance of a run with only what a timeline needs, by id.
    pub async fn run_instance_spans(&self, run_id: i64) -> StoreResult<Vec<InstanceSpan>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, InstanceSpan>(
            "SELECT id, task_id, map_index, map_key, state, queued_at, started_at, ended_at \
             FROM task_instances WHERE run_id = $1 AND state <> 'removed' ORDER BY id")
            .bind(run_id).fetch_all(pool).await)?)
    }

    /// Every attempt of a run's instances, oldest first.
    pub async fn run_attempt_spans(&self, run_id: i64) -> StoreResult<Vec<AttemptSpan>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, AttemptSpan>(
            "SELECT a.ti_id, a.try_number, a.state, a.started_at, a.ended_at FROM task_attempts a \
             JOIN task_instances t ON t.id = a.ti_id WHERE t.run_id = $1 ORDER BY a.id")
            .bind(run_id).fetch_all(pool).await)?)
    }

    /// A run's attempts counted by task, first try or retry, the intervals of `width` ms
    /// (from `start`) they began and ended in, and whether they failed: a few hundred rows
    /// however many instances the run has. Unfinished attempts end at `now`.
    pub async fn run_attempt_buckets(
        &self,
        run_id: i64,
        start: i64,
        width: i64,
        now: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, AttemptBucket>(
            "SELECT t.task_id, CAST(CASE WHEN a.try_number > 1 THEN 1 ELSE 0 END AS BIGINT) AS retry, \
               (a.started_at - $2) / $3 AS first, (COALESCE(a.ended_at, $4) - $2) / $3 AS last, \
               CAST(CASE WHEN a.state = 'failed' THEN 1 ELSE 0 END AS BIGINT) AS failed, COUNT(*) AS n \
             FROM task_attempts a JOIN task_instances t ON t.id = a.ti_id WHERE t.run_id = $1 \
             GROUP BY t.task_id, 2, 3, 4, 5")
            .bind(run_id).bind(start).bind(width.max(1)).bind(now).fetch_all(pool).await)?)
    }

    pub async fn attempts(&self, ti_id: i64) -> StoreResult<Vec<AttemptRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, AttemptRow>(
            "SELECT id, ti_id, try_number, fence, worker, state, started_at, ended_at, error FROM task_attempts \
             WHERE ti_id = $1 ORDER BY id").bind(ti_id).fetch_all(pool).await)?)
    }

    pub async fn append_task_log(
        &self,
        attempt_id: i64,
        stream: &str,
        line: &str,
    ) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query("INSERT INTO task_logs (attempt_id, at, stream, line) VALUES ($1, $2, $3, $4)")
            .bind(attempt_id).bind(now_ms()).bind(stream).bind(line).execute(pool).await)?;
        Ok(())
    }

    pub async fn task_log(
        &self,
        attempt_id: i64,
        after_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<LogLine>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, LogLine>(
            "SELECT id, at, stream, line FROM task_logs WHERE attempt_id = $1 AND id > $2 ORDER BY id LIMIT $3")
            .bind(attempt_id).bind(after_id).bind(limit).fetch_all(pool).await)?)
    }

    pub async fn events_since(&self, after_id: i64, limit: i64) -> StoreResult<Vec<EngineEvent>> {
        let rows: Vec<(i64, i64, Option<i64>, String, String)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, at, run_id, kind, payload FROM engine_events WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after_id).bind(limit).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(id, at, run_id, kind, payload)| EngineEvent {
                id,
                at,
                run_id,
                kind,
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
            })
            .collect())
    }

    pub async fn last_event_id(&self) -> StoreResult<i64> {
        let id: Option<i64> = on_pool!(self, pool => sqlx::query_scalar("SELECT MAX(id) FROM engine_events").fetch_one(pool).await)?;
        Ok(id.unwrap_or(0))
    }

    /// Worker processes that have announced themselves and not stopped.
    pub async fn live_workers(&self) -> StoreResult<i64> {
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM workers WHERE stopped_at IS NULL").fetch_one(pool).await)?;
        Ok(n)
    }

    /// Marks every worker stopped (a benchmark's killed worker processes could not say so).
    pub async fn mark_all_workers_stopped(&self) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query(
            "UPDATE workers SET stopped_at = 1 WHERE stopped_at IS NULL").execute(pool).await)?;
        Ok(())
    }

    pub async fn register_worker(
        &self,
        id: &str,
        host: &str,
        labels: &str,
        concurrency: i64,
    ) -> StoreResult<()> {
        let now = now_ms();
        execute_on!(self, pool => sqlx::query(
            "INSERT INTO workers (id, host, labels, concurrency, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL")
            .bind(id).bind(host).bind(labels).bind(concurrency).bind(now).execute(pool).await)?;
        Ok(())
    }

    pub async fn worker_stopped(&self, id: &str) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query("UPDATE workers SET stopped_at = $2 WHERE id = $1")
            .bind(id).bind(now_ms()).execute(pool).await)?;
        Ok(())
    }
}

impl Db {
    /// Makes every running instance's lease lapse (single-node restart: their worker is gone).
    pub async fn expire_all_leases(&self) -> StoreResult<u64> {
        Ok(execute_on!(self, pool => sqlx::query(
            "UPDATE task_instances SET lease_expires_at = 0 WHERE state = 'running'").execute(pool).await)?)
    }
}
