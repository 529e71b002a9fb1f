//! Storage of alerts: which runs still owe their targets news, and the delivery queue.
//!
//! Queueing is idempotent (one row per run, event and target), so any number of processes
//! may sweep the same runs. Sending is claimed with a lease that is checked again on the row
//! itself, so two processes never send the same delivery at once; a sender that dies leaves
//! its claim to expire and the delivery is sent again (at least once, never lost).
use super::{Db, StoreResult, execute_on, now_ms, on_pool, transaction};
use serde::Serialize;

/// A run whose end or SLA is due to be announced.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunToAnnounce {
    pub id: i64,
    pub pipeline_id: String,
    pub state: String,
    pub spec: String,
    pub run_name: Option<String>,
    pub triggered_by: String,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub sla_due_at: Option<i64>,
    pub alerts_pending: bool,
}

/// A failed instance, as an alert lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailedInstance {
    pub task_id: String,
    pub map_key: Option<String>,
    pub error: Option<String>,
}

pub struct NewDelivery<'a> {
    pub event: &'a str,
    pub conn_id: &'a str,
    pub payload: &'a str,
}

/// What the sweep decided about one run.
pub struct Announcement<'a> {
    pub run_id: i64,
    pub pipeline_id: &'a str,
    /// The run's end was looked at.
    pub end_done: bool,
    /// The run's SLA was decided (missed or kept).
    pub sla_done: bool,
    pub deliveries: Vec<NewDelivery<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub run_id: i64,
    pub pipeline_id: String,
    pub event: String,
    pub conn_id: String,
    pub payload: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str = "id, run_id, pipeline_id, event, conn_id, payload, state, attempts, next_attempt_at, \
     last_error, created_at, delivered_at";

/// How a send attempt ended.
pub enum DeliveryOutcome<'a> {
    Delivered,
    RetryAt { at: i64, error: &'a str },
    Failed { error: &'a str },
}

impl Db {
    /// Runs that ended with their end unannounced, or whose SLA can be decided by `now`.
    pub async fn runs_to_announce(&self, now: i64, limit: i64) -> StoreResult<Vec<RunToAnnounce>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT id, pipeline_id, state, spec, run_name, triggered_by, queued_at, started_at, ended_at, \
               sla_due_at, alerts_pending FROM runs \
             WHERE (alerts_pending = TRUE AND ended_at IS NOT NULL) \
                OR (sla_due_at IS NOT NULL AND (sla_due_at <= $1 OR ended_at IS NOT NULL)) \
             ORDER BY id LIMIT $2")
            .bind(now).bind(limit).fetch_all(pool).await)?)
    }

    pub async fn failed_instances(
        &self,
        run_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<FailedInstance>> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT task_id, map_key, error FROM task_instances \
             WHERE run_id = $1 AND state IN ('failed', 'upstream_failed') ORDER BY id LIMIT $2")
            .bind(run_id).bind(limit).fetch_all(pool).await)?)
    }

    /// Queues the deliveries and settles the run's flags in one transaction.
    pub async fn announce(&self, a: &Announcement<'_>) -> StoreResult<()> {
        let now = now_ms();
        transaction!(self, tx => {
            for d in &a.deliveries {
                sqlx::query(
                    "INSERT INTO alert_deliveries (run_id, pipeline_id, event, conn_id, payload, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (run_id, event, conn_id) DO NOTHING")
                    .bind(a.run_id).bind(a.pipeline_id).bind(d.event).bind(d.conn_id).bind(d.payload).bind(now)
                    .execute(&mut *tx).await?;
            }
            sqlx::query(
                "UPDATE runs SET alerts_pending = CASE WHEN $2 THEN FALSE ELSE alerts_pending END, \
                   sla_due_at = CASE WHEN $3 THEN NULL ELSE sla_due_at END WHERE id = $1")
                .bind(a.run_id).bind(a.end_done).bind(a.sla_done).execute(&mut *tx).await?;
        });
        Ok(())
    }

    /// Claims up to `limit` deliveries that are due, for `lease_ms`; counts the attempt.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRow>> {
        // The outer conditions are checked again on the row itself when another process
        // updated it first (PostgreSQL re-reads the row), so a delivery has one sender.
        let sql = format!(
            "UPDATE alert_deliveries SET lease_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM alert_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
                            AND (lease_until IS NULL OR lease_until < $1) ORDER BY next_attempt_at LIMIT $3) \
               AND state = 'pending' AND (lease_until IS NULL OR lease_until < $1) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql)
            .bind(now).bind(now + lease_ms).bind(limit).fetch_all(pool).await)?)
    }

    pub async fn finish_delivery(&self, id: i64, outcome: DeliveryOutcome<'_>) -> StoreResult<()> {
        let now = now_ms();
        match outcome {
            DeliveryOutcome::Delivered => execute_on!(self, pool => sqlx::query(
                "UPDATE alert_deliveries SET state = 'delivered', delivered_at = $2, lease_until = NULL, \
                   last_error = NULL WHERE id = $1")
                .bind(id).bind(now).execute(pool).await)?,
            DeliveryOutcome::RetryAt { at, error } => execute_on!(self, pool => sqlx::query(
                "UPDATE alert_deliveries SET next_attempt_at = $2, lease_until = NULL, last_error = $3 WHERE id = $1")
                .bind(id).bind(at).bind(error).execute(pool).await)?,
            DeliveryOutcome::Failed { error } => execute_on!(self, pool => sqlx::query(
                "UPDATE alert_deliveries SET state = 'failed', lease_until = NULL, last_error = $2 WHERE id = $1")
                .bind(id).bind(error).execute(pool).await)?,
        };
        Ok(())
    }

    /// When the next pending delivery is due, if any.
    pub async fn next_delivery_at(&self) -> StoreResult<Option<i64>> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM alert_deliveries WHERE state = 'pending'")
            .fetch_one(pool).await)?)
    }

    /// The earliest SLA still to be decided.
    pub async fn next_sla_due(&self) -> StoreResult<Option<i64>> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT MIN(sla_due_at) FROM runs WHERE sla_due_at IS NOT NULL")
            .fetch_one(pool).await)?)
    }

    pub async fn run_deliveries(&self, run_id: i64) -> StoreResult<Vec<DeliveryRow>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE run_id = $1 ORDER BY id"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(&sql).bind(run_id).fetch_all(pool).await)?)
    }
}
