//! Operators with no outside dependencies: for wiring, tests and benchmarks.
use super::{Operator, TaskContext, TaskError, typed};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Does nothing and returns null.
pub struct Noop;

#[async_trait]
impl Operator for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn validate(&self, _args: &Value) -> Result<(), String> {
        Ok(())
    }
    async fn execute(&self, _ctx: &TaskContext) -> Result<Value, TaskError> {
        Ok(Value::Null)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    seconds: f64,
    /// Ignored: tells the instances of a mapped sleep apart.
    #[serde(default, rename = "label")]
    _label: Option<Value>,
}

/// Waits `seconds`, stopping early when cancelled.
pub struct Sleep;

#[async_trait]
impl Operator for Sleep {
    fn name(&self) -> &'static str {
        "sleep"
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        let a: SleepArgs = typed(args)?;
        if !(a.seconds.is_finite() && a.seconds >= 0.0) {
            return Err("seconds must be zero or more".into());
        }
        Ok(())
    }
    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let a: SleepArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(a.seconds)) => Ok(json!({"slept": a.seconds})),
            () = ctx.cancel.cancelled() => Err(TaskError::Retryable("cancelled".into())),
        }
    }
}

/// Returns its arguments: `{value: …}` gives `…`, anything else gives the whole object.
pub struct Echo;

#[async_trait]
impl Operator for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn validate(&self, _args: &Value) -> Result<(), String> {
        Ok(())
    }
    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        Ok(match &ctx.args {
            Value::Object(m) if m.len() == 1 && m.contains_key("value") => m["value"].clone(),
            other => other.clone(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailArgs {
    /// Fail this many attempts, then succeed; absent: always fail.
    #[serde(default)]
    times: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    /// Fail without retrying.
    #[serde(default)]
    fatal: bool,
}

/// Fails N attempts, then succeeds (for testing retries).
pub struct Fail;

#[async_trait]
impl Operator for Fail {
    fn name(&self) -> &'static str {
        "fail"
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        typed::<FailArgs>(args).map(|_| ())
    }
    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let a: FailArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        if a.times.is_some_and(|n| ctx.try_number > n) {
            return Ok(json!({"succeeded_on_try": ctx.try_number}));
        }
        let message = a
            .message
            .unwrap_or_else(|| format!("failing on purpose (try {})", ctx.try_number));
        ctx.log.info(&message).await;
        Err(if a.fatal {
            TaskError::Fatal(message)
        } else {
            TaskError::Retryable(message)
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSensorArgs {
    path: String,
}

/// A sensor that is done when a file exists; returns its path and size.
pub struct FileSensor;

#[async_trait]
impl Operator for FileSensor {
    fn name(&self) -> &'static str {
        "file.exists"
    }
    fn is_sensor(&self) -> bool {
        true
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        typed::<FileSensorArgs>(args).map(|_| ())
    }
    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        self.poke(ctx)
            .await?
            .ok_or_else(|| TaskError::Retryable("file not there yet".into()))
    }
    async fn poke(&self, ctx: &TaskContext) -> Result<Option<Value>, TaskError> {
        let a: FileSensorArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        match tokio::fs::metadata(&a.path).await {
            Ok(m) => Ok(Some(json!({"path": a.path, "bytes": m.len()}))),
            Err(_) => Ok(None),
        }
    }
}
