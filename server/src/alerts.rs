//! Alerts: a pipeline's `alerts` tell webhook and mail targets when a run fails, succeeds or
//! misses its `sla`.
//!
//! Two steps, both safe to run in any number of processes. The sweep looks at runs that ended
//! with their end unannounced, or whose SLA has come due, and queues one delivery per event
//! and target, with the JSON body fixed at that moment. The sender claims due deliveries,
//! sends them and records the answer; failures are retried with growing delays until the
//! attempts run out. Every error text is scrubbed of known secrets before it is stored.
use crate::connections::Connections;
use crate::connections::KnownSecrets;
use crate::connections::targets::{Alert, SendError, webhook_client};
use crate::engine::spec::Pipeline;
use crate::store::alerts::{
    Announcement, DeliveryOutcome, DeliveryRow, NewDelivery, RunToAnnounce,
};
use crate::store::engine::EngineEvent;
use crate::store::{Db, StoreError, now_ms, utc_text};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a sender holds a claimed delivery; longer than one send may take.
const CLAIM_MS: i64 = 60_000;
/// Deliveries sent per pass, and runs swept per pass.
const BATCH: i64 = 32;
/// Failed instances an alert lists (the count is always complete).
const LISTED_FAILURES: i64 = 20;
/// Longest the loop sleeps without news: SLAs fall due without any event announcing them.
const IDLE: Duration = Duration::from_secs(2);
/// Longest wait between two attempts, however many came before.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Where people open the console; alerts link to the run under it.
    pub public_url: Option<String>,
    /// Wait before the first retry; each further retry waits four times longer.
    pub retry_delay: Duration,
    /// Attempts per delivery, the first one included.
    pub max_attempts: u32,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            public_url: None,
            retry_delay: Duration::from_secs(10),
            max_attempts: 6,
        }
    }
}

impl AlertConfig {
    /// The wait after the `attempts`-th failed attempt.
    pub fn retry_delay_after(&self, attempts: u32) -> Duration {
        let factor = 4u32.saturating_pow(attempts.saturating_sub(1));
        self.retry_delay
            .saturating_mul(factor)
            .min(MAX_RETRY_DELAY.max(self.retry_delay))
    }
}

pub struct Dispatcher {
    db: Db,
    connections: Arc<Connections>,
    secrets: KnownSecrets,
    http: reqwest::Client,
    config: AlertConfig,
}

impl Dispatcher {
    pub fn new(db: Db, connections: Arc<Connections>, config: AlertConfig) -> Dispatcher {
        Dispatcher {
            db,
            secrets: connections.known_secrets(),
            connections,
            http: webhook_client(),
            config,
        }
    }

    /// Sweeps and sends until shut down; woken early by run events.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        mut events: tokio::sync::broadcast::Receiver<EngineEvent>,
    ) {
        loop {
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "alert sweep failed; trying again");
            }
            if let Err(e) = self.send_due().await {
                tracing::warn!(error = %e, "sending alerts failed; trying again");
            }
            let wait = match self.next_due().await {
                Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
                _ => IDLE,
            }
            .min(IDLE);
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = &mut sleep => break,
                    event = events.recv() => match event {
                        Ok(e) if e.kind == "run" => break,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        }
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let delivery = self.db.next_delivery_at().await?;
        let sla = self.db.next_sla_due().await?;
        Ok([delivery, sla].into_iter().flatten().min())
    }

    /// Queues what runs owe their targets. Returns how many deliveries were queued.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut queued = 0;
        for run in self.db.runs_to_announce(now, BATCH).await? {
            let pipeline: Option<Pipeline> = serde_json::from_str(&run.spec).ok();
            let alerts = pipeline.as_ref().map(|p| &p.spec.alerts);
            let mut events = Vec::new();
            let end_done = run.alerts_pending && run.ended_at.is_some();
            if end_done {
                match run.state.as_str() {
                    "failed" => events.push("failure"),
                    "success" => events.push("success"),
                    _ => {}
                }
            }
            // Decided once the run has ended, or once the SLA has passed while it runs.
            let sla_missed = match (run.sla_due_at, run.ended_at) {
                (Some(due), Some(end)) => Some(end > due),
                (Some(due), None) if due <= now => Some(true),
                _ => None,
            };
            if sla_missed == Some(true) {
                events.push("sla_miss");
            }
            let sla_done = sla_missed.is_some();
            let mut payloads = Vec::new();
            for event in events {
                let targets = alerts.map(|a| a.targets(event)).unwrap_or_default();
                if targets.is_empty() {
                    continue;
                }
                let body = self.payload(&run, pipeline.as_ref(), event, now).await?;
                payloads.push((event, targets, body.to_string()));
            }
            let deliveries = payloads
                .iter()
                .flat_map(|(event, targets, payload)| {
                    targets.iter().map(move |conn_id| NewDelivery {
                        event,
                        conn_id,
                        payload,
                    })
                })
                .collect::<Vec<_>>();
            queued += deliveries.len();
            self.db
                .announce(&Announcement {
                    run_id: run.id,
                    pipeline_id: &run.pipeline_id,
                    end_done,
                    sla_done,
                    deliveries,
                })
                .await?;
        }
        Ok(queued)
    }

    async fn payload(
        &self,
        run: &RunToAnnounce,
        pipeline: Option<&Pipeline>,
        event: &str,
        now: i64,
    ) -> Result<Value, StoreError> {
        let failed = match run.state.as_str() {
            "failed" => self.db.failed_instances(run.id, LISTED_FAILURES).await?,
            _ => Vec::new(),
        };
        let failed: Vec<Value> = failed
            .into_iter()
            .map(|f| {
                json!({
                    "task_id": f.task_id,
                    "map_key": f.map_key,
                    "error": f.error.map(|e| self.secrets.redact_text(&e)),
                })
            })
            .collect();
        let time = |t: Option<i64>| t.map(utc_text);
        let path = format!("/runs/{}", run.id);
        Ok(json!({
            "event": event,
            "pipeline_id": run.pipeline_id,
            "run_id": run.id,
            "run_name": run.run_name,
            "state": run.state,
            "triggered_by": run.triggered_by,
            "queued_at": utc_text(run.queued_at),
            "started_at": time(run.started_at),
            "ended_at": time(run.ended_at),
            "duration_seconds": run.started_at.map(|s| (run.ended_at.unwrap_or(now) - s) as f64 / 1000.0),
            "sla_seconds": pipeline.and_then(|p| p.spec.sla).map(|d| d.0.as_secs_f64()),
            "sla_due_at": time(run.sla_due_at),
            "failed_instances": failed,
            "run_path": path,
            "run_url": self.config.public_url.as_ref().map(|u| format!("{}{path}", u.trim_end_matches('/'))),
        }))
    }

    /// Sends every due delivery once. Returns how many were sent successfully.
    pub async fn send_due(&self) -> Result<usize, StoreError> {
        let mut delivered = 0;
        loop {
            let claimed = self.db.claim_deliveries(now_ms(), CLAIM_MS, BATCH).await?;
            if claimed.is_empty() {
                return Ok(delivered);
            }
            for d in claimed {
                let outcome = self.send(&d).await;
                let attempts = u32::try_from(d.attempts).unwrap_or(u32::MAX);
                let error;
                let record = match &outcome {
                    Ok(answer) => {
                        tracing::info!(delivery = d.id, run_id = d.run_id, event = %d.event, target = %d.conn_id, %answer, "alert delivered");
                        delivered += 1;
                        DeliveryOutcome::Delivered
                    }
                    Err(e) => {
                        error = self.secrets.redact_text(e.message());
                        let retry =
                            matches!(e, SendError::Retry(_)) && attempts < self.config.max_attempts;
                        tracing::warn!(delivery = d.id, run_id = d.run_id, event = %d.event, target = %d.conn_id,
                            attempt = attempts, retry, error = %error, "alert not delivered");
                        match retry {
                            true => {
                                let wait = self.config.retry_delay_after(attempts);
                                let at = now_ms()
                                    + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                                DeliveryOutcome::RetryAt { at, error: &error }
                            }
                            false => DeliveryOutcome::Failed { error: &error },
                        }
                    }
                };
                self.db.finish_delivery(d.id, record).await?;
            }
        }
    }

    async fn send(&self, d: &DeliveryRow) -> Result<String, SendError> {
        let target = self
            .connections
            .alert_target(&d.conn_id)
            .await
            // A missing or misconfigured target may be fixed before the next attempt.
            .map_err(|e| SendError::Retry(e.to_string()))?;
        let (subject, text) = mail_text(&d.payload);
        target
            .send(
                &self.http,
                &Alert {
                    delivery_id: d.id,
                    event: &d.event,
                    body: &d.payload,
                    subject: &subject,
                    text: &text,
                },
            )
            .await
    }
}

/// The subject and plain-text body of the mail for one queued payload.
pub fn mail_text(payload: &str) -> (String, String) {
    let p: Value = serde_json::from_str(payload).unwrap_or_default();
    let s = |key: &str| p.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let pipeline = s("pipeline_id");
    let run_id = p.get("run_id").and_then(Value::as_i64).unwrap_or_default();
    let what = match s("event").as_str() {
        "failure" => "failed".to_string(),
        "success" => "succeeded".to_string(),
        "sla_miss" => format!("missed its SLA (due {})", s("sla_due_at")),
        other => other.to_string(),
    };
    let subject = format!("[trialflow] {pipeline} run {run_id} {what}");
    let mut text = format!(
        "Pipeline {pipeline}, run {run_id} {what}.\n\nState: {}\nTriggered by: {}\nQueued: {}\nStarted: {}\nEnded: {}\n",
        s("state"),
        s("triggered_by"),
        s("queued_at"),
        p.get("started_at").and_then(Value::as_str).unwrap_or("-"),
        p.get("ended_at").and_then(Value::as_str).unwrap_or("-"),
    );
    if let Some(failed) = p
        .get("failed_instances")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
    {
        text.push_str("\nFailed:\n");
        for f in failed {
            let name = match f.get("map_key").and_then(Value::as_str) {
                Some(key) => format!("{}[{key}]", f["task_id"].as_str().unwrap_or("")),
                None => f["task_id"].as_str().unwrap_or("").to_string(),
            };
            let error = f.get("error").and_then(Value::as_str).unwrap_or("");
            text.push_str(&format!("  {name}: {error}\n"));
        }
    }
    let link = p
        .get("run_url")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| s("run_path"));
    text.push_str(&format!("\nRun: {link}\n"));
    (subject, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_four_times_longer_each_time_up_to_an_hour() {
        let c = AlertConfig {
            retry_delay: Duration::from_secs(10),
            ..AlertConfig::default()
        };
        assert_eq!(c.retry_delay_after(1), Duration::from_secs(10));
        assert_eq!(c.retry_delay_after(2), Duration::from_secs(40));
        assert_eq!(c.retry_delay_after(3), Duration::from_secs(160));
        assert_eq!(c.retry_delay_after(30), Duration::from_secs(3600));
    }

    #[test]
    fn mail_names_the_run_the_outcome_and_each_failure() {
        let payload = json!({
            "event": "failure", "pipeline_id": "nightly", "run_id": 7, "state": "failed",
            "triggered_by": "ana", "queued_at": "2026-12-07T08:00:00Z",
            "failed_instances": [{"task_id": "export", "map_key": "STUDY-1", "error": "HTTP 500"}],
            "run_path": "/runs/7", "run_url": "https://tf.example.org/runs/7",
        })
        .to_string();
        let (subject, text) = mail_text(&payload);
        assert_eq!(subject, "[trialflow] nightly run 7 failed");
        assert!(text.contains("export[STUDY-1]: HTTP 500"), "{text}");
        assert!(
            text.contains("Run: https://tf.example.org/runs/7"),
            "{text}"
        );
    }
}
