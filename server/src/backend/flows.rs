//! The console's flows: the registry, registration and validation, and running flows.
use super::ServerBackend;
use crate::engine::RunOptions;
use crate::flows::registry::{self, RegistryError, is_composition};
use crate::flows::runner::{self, FlowRunError};
use crate::flows::spec::Composition;
use crate::store::flows::FlowRow;
use app::error::AppError;
use app::model::{ChildInfo, CurrentUser, FlowDetail, FlowInfo, FlowRegistered, MappingInfo, Role};
use app::port::FlowRunOptions;
use serde_json::{Map, Value};
use std::time::Duration;

impl From<RegistryError> for AppError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Spec(_) => AppError::invalid("source", err.to_string()),
            RegistryError::Conflict(message) => AppError::Conflict(message),
            RegistryError::Store(e) => e.into(),
        }
    }
}

impl From<FlowRunError> for AppError {
    fn from(err: FlowRunError) -> Self {
        match err {
            FlowRunError::Start(e) => e.into(),
            other => AppError::FlowRun {
                kind: other.kind().to_string(),
                message: other.to_string(),
            },
        }
    }
}

fn info(row: &FlowRow) -> FlowInfo {
    FlowInfo {
        flow_id: row.id,
        project: row.project.clone(),
        name: row.name.clone(),
        version: row.version,
        kind: row.kind.clone(),
        labels: row.labels.clone(),
        parameters: row.parameters.clone(),
        created_at: row.created_at,
        created_by: row.created_by.clone(),
    }
}

fn children(spec: &str) -> Vec<ChildInfo> {
    let Ok(c) = serde_json::from_str::<Composition>(spec) else {
        return Vec::new();
    };
    c.children
        .iter()
        .map(|child| ChildInfo {
            name: child.name.clone(),
            project: child.project.clone(),
            mappings: child
                .mappings
                .iter()
                .map(|(param, m)| MappingInfo {
                    param: param.clone(),
                    parent_flow: m.parent_flow.clone(),
                    parent_task: m.parent_task.clone(),
                    map_type: m.map_type.as_str().to_string(),
                    attribute_index: Value::from(m.attribute_index.clone()).to_string(),
                })
                .collect(),
            exposed: child
                .exposed_params
                .iter()
                .map(|e| e.top_level_name.clone())
                .collect(),
        })
        .collect()
}

fn run_options(options: &FlowRunOptions) -> RunOptions {
    RunOptions {
        labels: options.labels.clone(),
        run_name: options.run_name.clone(),
        start_after: options.start_after,
    }
}

impl ServerBackend {
    pub(super) async fn flows_list(&self) -> Result<Vec<FlowInfo>, AppError> {
        Ok(self.db.latest_flows().await?.iter().map(info).collect())
    }

    pub(super) async fn flow_detail(
        &self,
        project: &str,
        name: &str,
    ) -> Result<FlowDetail, AppError> {
        let row = self
            .db
            .latest_flow(project, name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("Flow {project}/{name}")))?;
        Ok(FlowDetail {
            info: info(&row),
            children: if row.kind == "composition" {
                children(&row.spec)
            } else {
                Vec::new()
            },
            source: row.source,
        })
    }

    pub(super) async fn flow_register(
        &self,
        actor: &CurrentUser,
        project: &str,
        source: &str,
    ) -> Result<FlowRegistered, AppError> {
        let r = registry::register(
            &self.engine,
            project,
            "flow.yaml",
            source,
            &actor.username,
            actor.role.allows(Role::Admin),
        )
        .await?;
        self.db
            .audit(
                &actor.username,
                "flow.register",
                &format!("{}/{} v{}", r.project, r.name, r.version),
                serde_json::json!({"kind": r.kind, "created": r.created, "flow_id": r.flow_id}),
            )
            .await?;
        Ok(FlowRegistered {
            flow_id: r.flow_id,
            project: r.project,
            name: r.name,
            version: r.version,
            kind: r.kind,
            created: r.created,
        })
    }

    pub(super) async fn flow_validate(
        &self,
        project: &str,
        source: &str,
    ) -> Result<String, AppError> {
        if is_composition(source) {
            let c = registry::validate_composition(&self.engine, "flow.yaml", source).await?;
            let chain: Vec<&str> = c.children.iter().map(|ch| ch.name.as_str()).collect();
            return Ok(format!(
                "flow of flows {}/{}: {}",
                c.project,
                c.name,
                chain.join(" → ")
            ));
        }
        let p = crate::engine::spec::parse_pipeline("flow.yaml", source, &self.engine.registry)
            .map_err(|e| AppError::invalid("source", e.to_string()))?;
        Ok(format!(
            "flow {project}/{} with {} tasks",
            p.id(),
            p.spec.tasks.len()
        ))
    }

    pub(super) async fn flow_run(
        &self,
        actor: &CurrentUser,
        flow: &str,
        parameters: Map<String, Value>,
        options: FlowRunOptions,
    ) -> Result<i64, AppError> {
        let detail = self
            .connections
            .known_secrets()
            .redact_json(&Value::Object(parameters.clone()));
        let run_id = self
            .engine
            .trigger_with(flow, parameters, &actor.username, run_options(&options))
            .await?;
        self.db
            .audit(
                &actor.username,
                "run.trigger",
                &format!("{flow} run {run_id}"),
                detail,
            )
            .await?;
        Ok(run_id)
    }

    pub(super) async fn flow_run_and_return(
        &self,
        actor: &CurrentUser,
        flow: &str,
        parameters: Map<String, Value>,
        task: Option<String>,
        options: FlowRunOptions,
    ) -> Result<Value, AppError> {
        let detail = self
            .connections
            .known_secrets()
            .redact_json(&Value::Object(parameters.clone()));
        self.db
            .audit(
                &actor.username,
                "run.trigger",
                &format!("{flow} (run and return)"),
                detail,
            )
            .await?;
        let value = runner::run_and_return(
            &self.engine,
            flow,
            parameters,
            &actor.username,
            run_options(&options),
            task.as_deref(),
            runner::Waiting {
                timeout: Duration::from_secs(options.timeout_seconds.max(1)),
                poll: Duration::from_secs(options.poll_interval_seconds.max(1)),
            },
        )
        .await?;
        Ok(self.connections.known_secrets().redact_json(&value))
    }
}
