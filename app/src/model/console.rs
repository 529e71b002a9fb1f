//! What the operator console shows: pipelines, runs, task instances, pools, workers, the audit
//! log, and the live updates streamed to a run page.
use super::Health;
use serde::{Deserialize, Serialize};

/// A pipeline as the Pipelines page lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSummary {
    pub id: String,
    pub description: String,
    pub tags: Vec<String>,
    pub schedule: Option<String>,
    pub tasks: usize,
    pub params: Vec<ParamInfo>,
    pub paused: bool,
    pub next_run_at: Option<i64>,
    /// The newest run: (id, state).
    pub last_run: Option<(i64, String)>,
}

/// One trigger parameter: what the form needs to draw its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamInfo {
    pub name: String,
    /// string, integer, number, boolean, array, object or connection.
    pub ty: String,
    /// Default as JSON text.
    pub default: Option<String>,
    pub description: String,
    /// Allowed values as JSON text (a select).
    pub allowed: Vec<String>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    /// Connection kind for `connection` parameters.
    pub kind: Option<String>,
}

impl ParamInfo {
    /// The text a form field starts with: a string default without its quotes.
    pub fn initial_text(&self) -> String {
        let Some(default) = &self.default else {
            return String::new();
        };
        match serde_json::from_str::<serde_json::Value>(default) {
            Ok(serde_json::Value::String(s)) => s,
            _ => default.clone(),
        }
    }
}

/// A pipeline's page: its graph, parameters, source and recent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDetail {
    pub summary: PipelineSummary,
    /// The YAML as written.
    pub source: String,
    pub origin: String,
    pub graph: Vec<TaskNode>,
    pub runs: Vec<RunListItem>,
    /// The last runs (up to 50), oldest first, for the history chart.
    pub history: Vec<RunBar>,
    /// The expected longest run, as written (e.g. `2h`).
    pub sla: Option<String>,
    /// Alert targets per event, e.g. `on_failure → ops_hook, ops_mail`.
    pub alerts: Vec<String>,
}

/// One run in a pipeline's history chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunBar {
    pub id: i64,
    pub state: String,
    pub queued_at: i64,
    /// Start to end (or to now while running); none before it starts.
    pub duration_ms: Option<i64>,
}

/// A run's instances over time, computed on the server: one lane per instance (each queued
/// wait and every attempt a segment, so retries show), or past [`TIMELINE_LANES_MAX`]
/// instances one lane per task whose segments count the instances running in each interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimeline {
    pub start: i64,
    pub end: i64,
    pub aggregated: bool,
    pub lanes: Vec<TimelineLane>,
}

pub const TIMELINE_LANES_MAX: usize = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineLane {
    pub label: String,
    /// The instance page it links to (per-instance lanes).
    pub ti_id: Option<i64>,
    pub segments: Vec<TimelineSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSegment {
    pub from: i64,
    pub to: i64,
    /// `queued` for the wait, else the attempt's state (`running`, `success`, `failed`…).
    pub state: String,
    pub try_number: i64,
    /// Instances this segment stands for (1 per instance; more when aggregated).
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNode {
    pub id: String,
    pub operator: String,
    pub upstream: Vec<String>,
    pub mapped: bool,
    pub pool: String,
}

/// One line of the runs list (and the dashboard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunListItem {
    pub id: i64,
    pub pipeline_id: String,
    pub state: String,
    pub run_trigger: String,
    pub triggered_by: String,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// Finished and all instances (progress).
    pub done: i64,
    pub total: i64,
}

/// The runs list's filters, as the page's query string carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunListQuery {
    pub pipeline: Option<String>,
    pub state: Option<String>,
    /// Dates `YYYY-MM-DD` (UTC), inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    /// 1-based.
    pub page: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunList {
    pub runs: Vec<RunListItem>,
    pub page: u32,
    pub has_next: bool,
    /// Pipeline ids for the filter.
    pub pipelines: Vec<String>,
}

/// One run: its tasks with per-state counts, and the files it wrote. Instances come a page at a
/// time from [`InstancePage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    pub id: i64,
    pub pipeline_id: String,
    pub state: String,
    /// Parameters as JSON text, secrets masked.
    pub conf: String,
    pub run_trigger: String,
    pub triggered_by: String,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub tasks: Vec<TaskProgress>,
    pub instance_count: i64,
    pub artifacts: Vec<ArtifactInfo>,
    /// Artifacts in all (`artifacts` holds at most the first 200).
    pub artifact_count: usize,
    /// The live stream resumes after this event.
    pub last_event_id: i64,
    /// For a flow of flows: each child flow's run and what it was given.
    pub children: Vec<ChildRun>,
    pub timeline: RunTimeline,
    /// What the run told its pipeline's alert targets, oldest first.
    pub alerts: Vec<AlertDeliveryInfo>,
}

/// One alert of a run to one webhook or mail target, and how its delivery went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDeliveryInfo {
    pub id: i64,
    /// `failure`, `success` or `sla_miss`.
    pub event: String,
    pub conn_id: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<i64>,
}

/// One child of a flow-of-flows run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRun {
    pub task_id: String,
    pub flow: String,
    pub state: String,
    /// Set once the child run has finished successfully (its id is in the log before).
    pub run_id: Option<i64>,
    /// The parameters the child received, as pretty JSON (secrets masked).
    pub parameters: String,
    /// What was mapped (file references, result references with their index), as pretty JSON.
    pub references: String,
    pub error: Option<String>,
}

/// One task of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskProgress {
    pub task_id: String,
    pub mapped: bool,
    /// (state, count), states in a fixed order.
    pub counts: Vec<(String, i64)>,
    pub total: i64,
    pub done: i64,
    /// An unmapped task's one instance.
    pub single: Option<InstanceSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSummary {
    pub id: i64,
    pub run_id: i64,
    pub task_id: String,
    pub map_index: i64,
    pub map_key: Option<String>,
    pub state: String,
    pub try_number: i64,
    pub max_tries: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// From an export's result.
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub path: Option<String>,
    /// A one-line output or error summary.
    pub summary: String,
}

/// The run page's instance table: filter, search, sort and page, all done on the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceQuery {
    pub task: Option<String>,
    pub state: Option<String>,
    /// Substring of the map key (the study).
    pub q: Option<String>,
    /// index, key, state, try, started or duration.
    pub sort: Option<String>,
    /// asc or desc.
    pub dir: Option<String>,
    /// 1-based.
    pub page: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancePage {
    pub rows: Vec<InstanceSummary>,
    /// Instances matching the filter.
    pub total: i64,
    pub page: u32,
    pub page_size: u32,
}

/// An instance with everything it had and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDetail {
    pub instance: InstanceSummary,
    pub pipeline_id: String,
    pub run_state: String,
    /// The rendered input as pretty JSON, secrets masked.
    pub input: Option<String>,
    /// The result as pretty JSON, secrets masked.
    pub output: Option<String>,
    pub error: Option<String>,
    pub queued_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub attempts: Vec<AttemptInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptInfo {
    pub id: i64,
    pub try_number: i64,
    pub worker: String,
    pub state: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub error: Option<String>,
    pub log: Vec<LogLineInfo>,
    /// More lines exist than were sent; the live log stream sends them.
    pub log_more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLineInfo {
    pub id: i64,
    pub at: i64,
    pub stream: String,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    pub id: i64,
    pub uri: String,
    pub bytes: i64,
    pub sha256: String,
    pub rows: Option<i64>,
    /// Local files are served at `/artifacts/<id>/download`; S3 objects stay where they are.
    pub downloadable: bool,
}

/// One coalesced message of a run's live stream (`/events/runs/<id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunUpdate {
    pub run_id: i64,
    pub run_state: String,
    /// Per task: (state, count).
    pub tasks: Vec<(String, Vec<(String, i64)>)>,
    /// Instances whose state changed since the previous message (at most 200).
    pub changed: Vec<InstanceChange>,
    pub changed_truncated: bool,
    /// Engine events this message stands for.
    pub events: usize,
    /// The newest of them: a page refetching on this message asks for data at least as new.
    pub last_event_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceChange {
    pub ti_id: i64,
    pub task_id: String,
    pub map_key: Option<String>,
    pub state: String,
    pub try_number: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardInfo {
    pub health: Health,
    /// Queued and running runs, oldest first.
    pub active: Vec<RunListItem>,
    /// Failed runs of the last 24 hours, newest first.
    pub failures: Vec<RunListItem>,
    pub pools: Vec<PoolInfo>,
    pub workers: Vec<WorkerInfo>,
    pub last_event_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub name: String,
    pub slots: i64,
    pub description: String,
    /// Built-in pools cannot be deleted.
    pub builtin: bool,
    pub running: i64,
    pub queued: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub labels: String,
    pub concurrency: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
    /// Heartbeat recent enough to count as alive.
    pub alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditInfo {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    /// This entry's link in the hash chain (empty for entries from before the chain).
    pub hash: String,
}

/// The audit chain as verified when the page was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChain {
    pub entries: i64,
    pub unchained: i64,
    pub head: String,
    /// The first entry that does not verify (0: the newest entries were removed).
    pub broken_at: Option<i64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditInfo>,
    pub page: u32,
    pub has_next: bool,
    pub chain: AuditChain,
}

/// The actions a run page offers. Parsed on the server from the form's `action` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunAction {
    Cancel,
    /// One instance (`ti_id`).
    ClearInstance,
    /// A task's failed and upstream-failed instances (`task_id`).
    ClearFailed,
    /// A whole task and everything downstream of it (`task_id`).
    ClearDownstream,
    /// One instance (`ti_id`).
    MarkSuccess,
    MarkFailed,
}

impl RunAction {
    pub const ALL: [RunAction; 6] = [
        RunAction::Cancel,
        RunAction::ClearInstance,
        RunAction::ClearFailed,
        RunAction::ClearDownstream,
        RunAction::MarkSuccess,
        RunAction::MarkFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunAction::Cancel => "cancel",
            RunAction::ClearInstance => "clear_instance",
            RunAction::ClearFailed => "clear_failed",
            RunAction::ClearDownstream => "clear_downstream",
            RunAction::MarkSuccess => "mark_success",
            RunAction::MarkFailed => "mark_failed",
        }
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        RunAction::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<_> = RunAction::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "unknown action '{name}': expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// States in the order counts and filters show them.
pub const STATE_ORDER: [&str; 12] = [
    "running",
    "queued",
    "scheduled",
    "up_for_retry",
    "up_for_reschedule",
    "deferred",
    "none",
    "success",
    "failed",
    "upstream_failed",
    "skipped",
    "restarting",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_and_unknown_names_are_listed() {
        for a in RunAction::ALL {
            assert_eq!(RunAction::parse(a.as_str()), Ok(a));
        }
        let err = RunAction::parse("delete").unwrap_err();
        assert!(
            err.contains("'delete'") && err.contains("clear_failed"),
            "{err}"
        );
    }

    #[test]
    fn string_defaults_start_the_field_without_quotes() {
        let mut p = ParamInfo {
            name: "root".into(),
            ty: "string".into(),
            default: Some("\"reference\"".into()),
            description: String::new(),
            allowed: vec![],
            minimum: None,
            maximum: None,
            kind: None,
        };
        assert_eq!(p.initial_text(), "reference");
        p.default = Some("{\"a\":1}".into());
        assert_eq!(p.initial_text(), "{\"a\":1}");
        p.default = None;
        assert_eq!(p.initial_text(), "");
    }
}
