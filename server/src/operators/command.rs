//! Runs a process: arguments as JSON on stdin and in `TRIALFLOW_ARGS`, stdout JSON is the
//! result, stderr lines go to the task log. A timeout or cancellation kills its whole process
//! group, so grandchildren do not outlive the task. Only admins may register pipelines using it.
use super::{Operator, TaskContext, TaskError, typed};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandArgs {
    /// Program and its arguments; no shell is involved.
    argv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
    /// Handed to the process on stdin and in TRIALFLOW_ARGS.
    #[serde(default)]
    input: Value,
}

pub struct Command;

/// Kills the process group when the attempt ends early (timeout, cancel, shutdown).
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[async_trait]
impl Operator for Command {
    fn name(&self) -> &'static str {
        "command"
    }
    fn admin_only(&self) -> bool {
        true
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        let a: CommandArgs = typed(args)?;
        if a.argv.first().is_none_or(|p| p.trim().is_empty()) {
            return Err("argv must name a program".into());
        }
        Ok(())
    }
    async fn execute(&self, ctx: &TaskContext) -> Result<Value, TaskError> {
        let a: CommandArgs = typed(&ctx.args).map_err(TaskError::Fatal)?;
        let input = serde_json::to_string(&a.input).map_err(|e| TaskError::Fatal(e.to_string()))?;
        let mut cmd = tokio::process::Command::new(&a.argv[0]);
        cmd.args(&a.argv[1..])
            .envs(&a.env)
            .env("TRIALFLOW_ARGS", &input)
            .env("TRIALFLOW_RUN_ID", ctx.run_id.to_string())
            .env("TRIALFLOW_TASK_ID", &ctx.task_id)
            .env("TRIALFLOW_MAP_INDEX", ctx.map_index.to_string())
            .env("TRIALFLOW_TRY_NUMBER", ctx.try_number.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &a.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| TaskError::Fatal(format!("cannot start {}: {e}", a.argv[0])))?;
        let mut guard = GroupGuard {
            pgid: child.id().and_then(|id| i32::try_from(id).ok()),
        };
        ctx.log
            .info(format!(
                "started {} (pid {})",
                a.argv.join(" "),
                child.id().unwrap_or(0)
            ))
            .await;

        if let Some(mut stdin) = child.stdin.take() {
            // A program that ignores stdin may close it early; that is not an error.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| TaskError::Fatal("no stdout".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| TaskError::Fatal("no stderr".into()))?;
        let log = ctx.log.clone();
        let stderr_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.stderr(line).await;
            }
        });
        let mut out = Vec::new();
        let status = tokio::select! {
            res = async {
                stdout.read_to_end(&mut out).await?;
                child.wait().await
            } => res.map_err(|e| TaskError::Retryable(format!("waiting for the process failed: {e}")))?,
            () = ctx.cancel.cancelled() => {
                return Err(TaskError::Retryable("cancelled; process group killed".into()));
            }
        };
        guard.pgid = None;
        let _ = stderr_task.await;
        if !status.success() {
            return Err(TaskError::Retryable(format!(
                "{} exited with {status}",
                a.argv[0]
            )));
        }
        let text = String::from_utf8_lossy(&out);
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(text.trim()).map_err(|e| {
            TaskError::Fatal(format!(
                "stdout is not JSON ({e}): {}",
                text.chars().take(200).collect::<String>()
            ))
        })
    }
}
