//! Workers: claim queued instances, run their operators, renew leases, write results fenced.
use super::spec::{SensorMode, TaskSpec};
use super::{Engine, retry_at};
use crate::connections::KnownSecrets;
use crate::operators::{Operator, TaskContext, TaskError, TaskLog};
use crate::store::engine::{Claimed, Completion};
use crate::store::now_ms;
use futures::FutureExt;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

impl Engine {
    pub(super) async fn worker_loop(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.workers));
        let mut work = self.bus.work_signal();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            // Wait for a free slot, then claim as many instances as there are free slots.
            let first = tokio::select! {
                () = self.shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let free = i64::try_from(slots.available_permits() + 1)
                .unwrap_or(1)
                .min(self.config.claim_batch);
            let claimed = match self
                .db
                .claim(
                    &self.config.worker_id,
                    &self.config.worker_labels,
                    free,
                    self.config.lease_ms,
                )
                .await
            {
                Ok((claimed, events)) => {
                    self.bus.publish(events);
                    claimed
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming work failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(first);
                tokio::select! {
                    () = self.shutdown.cancelled() => break,
                    _ = work.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(self.config.idle_poll_ms)) => {}
                }
                continue;
            }
            let mut permits = vec![first];
            for _ in 1..claimed.len() {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            for (c, permit) in claimed.into_iter().zip(permits) {
                let engine = self.clone();
                let cancel = self.shutdown.child_token();
                if let Ok(mut running) = self.running.lock() {
                    running.insert(c.id, cancel.clone());
                }
                tokio::spawn(async move {
                    engine.execute(c, cancel).await;
                    drop(permit);
                });
            }
        }
    }

    /// Renews this worker's leases; stops local attempts the database no longer gives it
    /// (cancelled, marked or cleared by an operator).
    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.heartbeat_ms));
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self
                .db
                .heartbeat(&self.config.worker_id, self.config.lease_ms)
                .await
            {
                Ok(owned) => {
                    if let Ok(running) = self.running.lock() {
                        for (id, token) in running.iter() {
                            if !owned.contains(id) {
                                token.cancel();
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    async fn execute(self: Arc<Self>, c: Claimed, cancel: CancellationToken) {
        let outcome = scrub(self.run_attempt(&c, cancel).await, &self.services.secrets);
        if let Ok(mut running) = self.running.lock() {
            running.remove(&c.id);
        }
        match self
            .db
            .complete_attempt(c.id, c.fence, c.attempt_id, &outcome)
            .await
        {
            Ok(Some(events)) => {
                self.bus.publish(events);
                self.bus.wake_scheduler();
                self.db
                    .notify_others(crate::store::notify::News::Done)
                    .await;
            }
            Ok(None) => tracing::info!(
                ti_id = c.id,
                fence = c.fence,
                "result of a superseded attempt rejected"
            ),
            Err(e) => {
                tracing::error!(ti_id = c.id, error = %e, "recording the result failed; the lease will expire and the attempt retried")
            }
        }
    }

    async fn run_attempt(self: &Arc<Self>, c: &Claimed, cancel: CancellationToken) -> Completion {
        let prepared = async {
            let run = self
                .db
                .run_row(c.run_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("run vanished")?;
            let pipeline = self.run_pipeline(&run).map_err(|e| e.to_string())?;
            let task = pipeline
                .task(&c.task_id)
                .cloned()
                .ok_or_else(|| format!("task {} is not in the pipeline", c.task_id))?;
            let op = self.registry.get(&task.operator).ok_or_else(|| {
                format!(
                    "operator '{}' is not installed on this worker",
                    task.operator
                )
            })?;
            Ok::<_, String>((run, task, op))
        };
        let (run, task, op) = match prepared.await {
            Ok(p) => p,
            Err(error) => {
                return Completion::Failed {
                    error,
                    retry_at: None,
                };
            }
        };
        let args: Value = c
            .input
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let ctx = TaskContext {
            run_id: c.run_id,
            instance_id: c.id,
            pipeline_id: run.pipeline_id.clone(),
            task_id: c.task_id.clone(),
            map_index: c.map_index,
            try_number: c.try_number,
            args,
            log: TaskLog::new(self.db.clone(), c.attempt_id, self.services.secrets.clone()),
            cancel,
            services: self.services.clone(),
            launcher: self.clone(),
        };
        let work = async {
            if op.is_sensor() {
                self.sense(op.as_ref(), &task, &ctx, c).await
            } else {
                let result = AssertUnwindSafe(op.execute(&ctx))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(TaskError::Retryable(format!(
                            "operator {} panicked",
                            task.operator
                        )))
                    });
                to_completion(result, &task, c)
            }
        };
        match task.execution_timeout {
            Some(limit) => match tokio::time::timeout(limit.0, work).await {
                Ok(done) => done,
                Err(_) => {
                    ctx.cancel.cancel();
                    let message = format!("timed out after {limit} (execution_timeout)");
                    ctx.log.info(&message).await;
                    to_completion(Err(TaskError::Retryable(message)), &task, c)
                }
            },
            None => work.await,
        }
    }

    /// Pokes a sensor until it holds, times out (never retried) or, in reschedule mode, hands
    /// its slot back until the next poke.
    async fn sense(
        &self,
        op: &dyn Operator,
        task: &TaskSpec,
        ctx: &TaskContext,
        c: &Claimed,
    ) -> Completion {
        let started = c.sensor_started_at.unwrap_or_else(now_ms);
        let deadline = started.saturating_add(task.timeout.as_millis());
        loop {
            let poke = AssertUnwindSafe(op.poke(ctx))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(TaskError::Retryable(format!(
                        "sensor {} panicked",
                        task.operator
                    )))
                });
            match poke {
                Ok(Some(output)) => return Completion::Success { output },
                Ok(None) => {}
                Err(e) => return to_completion(Err(e), task, c),
            }
            let now = now_ms();
            if now >= deadline {
                let reason = format!("sensor timed out after {}", task.timeout);
                ctx.log.info(&reason).await;
                return if task.soft_fail {
                    Completion::Skipped {
                        reason: format!("{reason} (soft_fail)"),
                    }
                } else {
                    Completion::Failed {
                        error: reason,
                        retry_at: None,
                    }
                };
            }
            let mut wait = task.poke_interval.as_millis();
            if task.exponential_backoff {
                // Each wait about as long as the sensor has waited so far: geometric growth.
                wait = wait.max(now - started);
                if let Some(cap) = task.max_wait {
                    wait = wait.min(cap.as_millis());
                }
            }
            let next = (now + wait).min(deadline);
            match task.mode {
                SensorMode::Reschedule => return Completion::Reschedule { at: next },
                SensorMode::Poke => {
                    let pause = Duration::from_millis(u64::try_from(next - now).unwrap_or(0));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = ctx.cancel.cancelled() => {
                            return to_completion(Err(TaskError::Retryable("cancelled".into())), task, c);
                        }
                    }
                }
            }
        }
    }
}

/// Results and errors are stored and shown: no secret value or sensitive key may survive.
fn scrub(outcome: Completion, secrets: &KnownSecrets) -> Completion {
    match outcome {
        Completion::Success { output } => Completion::Success {
            output: secrets.redact_json(&output),
        },
        Completion::Failed { error, retry_at } => Completion::Failed {
            error: secrets.redact_text(&error),
            retry_at,
        },
        Completion::Skipped { reason } => Completion::Skipped {
            reason: secrets.redact_text(&reason),
        },
        other => other,
    }
}

/// Turns an operator's result into how the attempt ends, retrying when tries remain.
fn to_completion(result: Result<Value, TaskError>, task: &TaskSpec, c: &Claimed) -> Completion {
    match result {
        Ok(output) => Completion::Success { output },
        Err(TaskError::Fatal(error)) => Completion::Failed {
            error,
            retry_at: None,
        },
        Err(TaskError::Retryable(error)) => Completion::Failed {
            error,
            retry_at: (c.try_number < c.max_tries).then(|| retry_at(task, c.try_number)),
        },
    }
}
