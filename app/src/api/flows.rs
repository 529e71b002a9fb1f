//! Flows of flows over HTTP: list and read (viewer), register and validate (op), run and
//! run-and-return (user). Parameters travel as JSON text.
use crate::error::AppError;
use crate::model::{FlowDetail, FlowInfo, FlowRegistered};
use leptos::prelude::*;

#[server(prefix = "/api/viewer", endpoint = "list_flows")]
pub async fn list_flows() -> Result<Vec<FlowInfo>, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?.list_flows().await.map_err(respond)
}

#[server(prefix = "/api/viewer", endpoint = "get_flow")]
pub async fn get_flow(project: String, name: String) -> Result<FlowDetail, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?.get_flow(&project, &name).await.map_err(respond)
}

/// Registers the YAML: a pipeline into `project`, or a flow of flows (which names its project).
#[server(prefix = "/api/op", endpoint = "register_flow")]
pub async fn register_flow(
    source: String,
    project: Option<String>,
) -> Result<FlowRegistered, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    let actor = require(Role::Op)?;
    let project = project.filter(|p| !p.trim().is_empty());
    console()?
        .register_flow(&actor, project.as_deref().unwrap_or("default"), &source)
        .await
        .map_err(respond)
}

/// Checks the YAML without registering it; every error names its line.
#[server(prefix = "/api/op", endpoint = "validate_flow")]
pub async fn validate_flow(source: String, project: Option<String>) -> Result<String, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Op)?;
    let project = project.filter(|p| !p.trim().is_empty());
    console()?
        .validate_flow(project.as_deref().unwrap_or("default"), &source)
        .await
        .map_err(respond)
}

#[cfg(feature = "ssr")]
fn options(
    labels: Option<String>,
    run_name: Option<String>,
    scheduled_start_time: Option<String>,
    timeout_seconds: Option<u64>,
    poll_interval_seconds: Option<u64>,
) -> Result<crate::port::FlowRunOptions, AppError> {
    let start_after = match scheduled_start_time.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|_| {
                    AppError::invalid(
                        "scheduled_start_time",
                        format!("'{text}' is not an RFC 3339 time like 2026-11-22T18:00:00Z"),
                    )
                })?,
        ),
    };
    Ok(crate::port::FlowRunOptions {
        labels: labels
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        run_name: run_name.filter(|n| !n.trim().is_empty()),
        start_after,
        timeout_seconds: timeout_seconds.unwrap_or(600),
        poll_interval_seconds: poll_interval_seconds.unwrap_or(10),
    })
}

#[cfg(feature = "ssr")]
fn parameters(
    text: Option<String>,
) -> Result<serde_json::Map<String, serde_json::Value>, AppError> {
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(serde_json::Map::new()),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(_) => Err(AppError::invalid("parameters", "must be a JSON object")),
            Err(e) => Err(AppError::invalid("parameters", format!("is not JSON: {e}"))),
        },
    }
}

/// Starts a run of `flow`; answers its id at once.
#[server(prefix = "/api/user", endpoint = "run_flow")]
pub async fn run_flow(
    flow: String,
    parameters: Option<String>,
    labels: Option<String>,
    run_name: Option<String>,
    scheduled_start_time: Option<String>,
) -> Result<i64, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    let actor = require(Role::User)?;
    let params = self::parameters(parameters).map_err(respond)?;
    let opts = options(labels, run_name, scheduled_start_time, None, None).map_err(respond)?;
    console()?
        .run_flow(&actor, &flow, params, opts)
        .await
        .map_err(respond)
}

/// Runs `flow` and waits (checking every `poll_interval_seconds`, canceling the run after
/// `timeout_seconds`); answers every task's result by slug, or `task_name`'s.
#[server(prefix = "/api/user", endpoint = "run_and_return")]
pub async fn run_and_return(
    flow: String,
    parameters: Option<String>,
    task_name: Option<String>,
    timeout_seconds: Option<u64>,
    poll_interval_seconds: Option<u64>,
    labels: Option<String>,
    run_name: Option<String>,
) -> Result<serde_json::Value, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    let actor = require(Role::User)?;
    let params = self::parameters(parameters).map_err(respond)?;
    let opts = options(
        labels,
        run_name,
        None,
        timeout_seconds,
        poll_interval_seconds,
    )
    .map_err(respond)?;
    console()?
        .run_and_return(
            &actor,
            &flow,
            params,
            task_name.filter(|t| !t.is_empty()),
            opts,
        )
        .await
        .map_err(respond)
}
