//! Pipelines and runs: listing, starting and reading them.
use crate::error::AppError;
use crate::model::{PipelineSummary, RunDetail};
use leptos::prelude::*;

#[server(prefix = "/api/viewer", endpoint = "list_pipelines")]
pub async fn list_pipelines() -> Result<Vec<PipelineSummary>, AppError> {
    use crate::model::Role;
    use crate::port::{backend, require, respond};
    require(Role::Viewer)?;
    backend()?.list_pipelines().await.map_err(respond)
}

#[server(prefix = "/api/viewer", endpoint = "get_run")]
pub async fn get_run(run_id: i64) -> Result<RunDetail, AppError> {
    use crate::model::Role;
    use crate::port::{backend, require, respond};
    require(Role::Viewer)?;
    backend()?.get_run(run_id).await.map_err(respond)
}

/// Starts a run of `pipeline_id` with `conf`, a JSON object of parameters (blank = defaults).
/// Parameter errors come back as `Invalid` naming the parameter.
#[server(prefix = "/api/user", endpoint = "trigger_run")]
pub async fn trigger_run(pipeline_id: String, conf: Option<String>) -> Result<i64, AppError> {
    use crate::model::Role;
    use crate::port::{backend, require, respond};
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
    backend()?
        .trigger_run(&actor, &pipeline_id, conf)
        .await
        .map_err(respond)
}
