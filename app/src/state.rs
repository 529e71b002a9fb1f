//! Run and task-instance states, with Airflow's names.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Created with the run; waiting for its upstream tasks.
    None,
    /// Ready to run; waiting for a slot (run, task, pool limits).
    Scheduled,
    /// Admitted; waiting for a worker to claim it.
    Queued,
    Running,
    Success,
    Failed,
    Skipped,
    UpstreamFailed,
    /// Failed an attempt; runs again at `next_attempt_at`.
    UpForRetry,
    /// A sensor in reschedule mode between pokes; holds no slot.
    UpForReschedule,
    /// Reserved for deferrable operators (Airflow's name); unused by the shipped operators.
    Deferred,
    /// A mapped placeholder replaced by its expansion.
    Removed,
    /// Reserved: being cleared while running.
    Restarting,
}

impl TaskState {
    pub const ALL: [TaskState; 13] = [
        TaskState::None,
        TaskState::Scheduled,
        TaskState::Queued,
        TaskState::Running,
        TaskState::Success,
        TaskState::Failed,
        TaskState::Skipped,
        TaskState::UpstreamFailed,
        TaskState::UpForRetry,
        TaskState::UpForReschedule,
        TaskState::Deferred,
        TaskState::Removed,
        TaskState::Restarting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::None => "none",
            TaskState::Scheduled => "scheduled",
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::UpstreamFailed => "upstream_failed",
            TaskState::UpForRetry => "up_for_retry",
            TaskState::UpForReschedule => "up_for_reschedule",
            TaskState::Deferred => "deferred",
            TaskState::Removed => "removed",
            TaskState::Restarting => "restarting",
        }
    }

    /// Finished for good (until someone clears it).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failed
                | TaskState::Skipped
                | TaskState::UpstreamFailed
                | TaskState::Removed
        )
    }

    /// Counts against run, task and pool limits.
    pub fn holds_slot(self) -> bool {
        matches!(self, TaskState::Queued | TaskState::Running)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown task state '{s}'"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Success,
    Failed,
    Canceled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
            RunState::Canceled => "canceled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Success | RunState::Failed | RunState::Canceled
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RunState::Queued,
            RunState::Running,
            RunState::Success,
            RunState::Failed,
            RunState::Canceled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown run state '{s}'"))
    }
}
