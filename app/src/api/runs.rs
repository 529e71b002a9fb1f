//! Pipelines, runs and task instances: reading them (viewer), starting and acting on them (user).
use crate::error::AppError;
use crate::model::{
    InstanceDetail, InstancePage, InstanceQuery, PipelineDetail, PipelineSummary, RunDetail,
    RunList, RunListQuery,
};
use leptos::prelude::*;
use std::collections::HashMap;

#[server(prefix = "/api/viewer", endpoint = "list_pipelines")]
pub async fn list_pipelines() -> Result<Vec<PipelineSummary>, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?.list_pipelines().await.map_err(respond)
}

#[server(prefix = "/api/viewer", endpoint = "get_pipeline")]
pub async fn get_pipeline(pipeline_id: String) -> Result<PipelineDetail, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?.get_pipeline(&pipeline_id).await.map_err(respond)
}

#[server(prefix = "/api/viewer", endpoint = "list_runs")]
pub async fn list_runs(query: Option<RunListQuery>) -> Result<RunList, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?
        .list_runs(query.unwrap_or_default())
        .await
        .map_err(respond)
}

/// A run's detail. `covering`: the newest event the caller has been told of (a live update's
/// `last_event_id`); the answer reflects at least that much.
#[server(prefix = "/api/viewer", endpoint = "get_run")]
pub async fn get_run(run_id: i64, covering: Option<i64>) -> Result<RunDetail, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?.get_run(run_id, covering).await.map_err(respond)
}

/// One page of a run's instances, filtered, searched and sorted on the server.
#[server(prefix = "/api/viewer", endpoint = "list_instances")]
pub async fn list_instances(
    run_id: i64,
    query: Option<InstanceQuery>,
    covering: Option<i64>,
) -> Result<InstancePage, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?
        .list_instances(run_id, query.unwrap_or_default(), covering)
        .await
        .map_err(respond)
}

#[server(prefix = "/api/viewer", endpoint = "get_instance")]
pub async fn get_instance(ti_id: i64) -> Result<InstanceDetail, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?.get_instance(ti_id).await.map_err(respond)
}

/// Starts a run of `pipeline_id` with `conf`, a JSON object of parameters (blank = defaults).
/// Parameter errors come back as `Invalid` naming the parameter.
#[server(prefix = "/api/user", endpoint = "trigger_run")]
pub async fn trigger_run(pipeline_id: String, conf: Option<String>) -> Result<i64, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    let actor = require(Role::User)?;
    let conf = match conf.as_deref().map(str::trim) {
        None | Some("") => serde_json::Map::new(),
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(respond(AppError::invalid("conf", "must be a JSON object"))),
            Err(e) => {
                return Err(respond(AppError::invalid(
                    "conf",
                    format!("is not JSON: {e}"),
                )));
            }
        },
    };
    console()?
        .trigger_run(&actor, &pipeline_id, conf)
        .await
        .map_err(respond)
}

/// The generated trigger form: one text field per parameter (`fields[<name>]`), typed on the
/// server; every wrong field is named in the error.
#[server(prefix = "/api/user", endpoint = "trigger_form")]
pub async fn trigger_form(
    pipeline_id: String,
    fields: Option<HashMap<String, String>>,
) -> Result<i64, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    let actor = require(Role::User)?;
    console()?
        .trigger_from_form(&actor, &pipeline_id, fields.unwrap_or_default())
        .await
        .map_err(respond)
}

/// A new run with the same pipeline and parameters as `run_id`.
#[server(prefix = "/api/user", endpoint = "retrigger_run")]
pub async fn retrigger_run(run_id: i64) -> Result<i64, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    let actor = require(Role::User)?;
    console()?.retrigger(&actor, run_id).await.map_err(respond)
}

/// Cancel, clear (one instance, a task's failed instances, a task and its downstream) or mark.
#[server(prefix = "/api/user", endpoint = "run_action")]
pub async fn run_action(
    run_id: i64,
    action: String,
    task_id: Option<String>,
    ti_id: Option<i64>,
) -> Result<String, AppError> {
    use crate::model::{Role, RunAction};
    use crate::port::{console, require, respond};
    let actor = require(Role::User)?;
    let action = RunAction::parse(&action).map_err(|e| respond(AppError::invalid("action", e)))?;
    console()?
        .run_action(&actor, run_id, action, task_id, ti_id)
        .await
        .map_err(respond)
}
