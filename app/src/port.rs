//! The port through which server functions reach the engine and storage. The `server` crate
//! implements [`Backend`] and puts an [`AppState`] into the router state.
use crate::error::AppError;
use crate::model::{
    AuditPage, AuthContext, ConnectionInfo, ConnectionInput, ConnectionTest, CurrentUser,
    DashboardInfo, FlowDetail, FlowInfo, FlowRegistered, Health, InstanceDetail, InstancePage,
    InstanceQuery, PasswordReset, PipelineDetail, PipelineSummary, PoolInfo, Role, RunAction,
    RunDetail, RunList, RunListQuery, UserInfo,
};
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use leptos::prelude::*;
use std::sync::Arc;

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn health(&self) -> Health;
    async fn list_users(&self) -> Result<Vec<UserInfo>, AppError>;
    async fn create_user(
        &self,
        actor: &CurrentUser,
        username: &str,
        role: Role,
        password: &str,
    ) -> Result<UserInfo, AppError>;
    async fn set_user_role(
        &self,
        actor: &CurrentUser,
        user_id: i64,
        role: Role,
    ) -> Result<UserInfo, AppError>;
    async fn set_user_disabled(
        &self,
        actor: &CurrentUser,
        user_id: i64,
        disabled: bool,
    ) -> Result<UserInfo, AppError>;
    /// Sets a new password; `None` generates one and returns it once.
    async fn reset_password(
        &self,
        actor: &CurrentUser,
        user_id: i64,
        password: Option<String>,
    ) -> Result<PasswordReset, AppError>;

    async fn list_connections(&self) -> Result<Vec<ConnectionInfo>, AppError>;
    async fn describe_connection(&self, conn_id: &str) -> Result<serde_json::Value, AppError>;
    async fn save_connection(
        &self,
        actor: &CurrentUser,
        input: ConnectionInput,
    ) -> Result<ConnectionInfo, AppError>;
    async fn delete_connection(&self, actor: &CurrentUser, conn_id: &str) -> Result<(), AppError>;
    async fn test_connection(
        &self,
        actor: &CurrentUser,
        conn_id: &str,
    ) -> Result<ConnectionTest, AppError>;
}

/// The operator console: pipelines, runs, instances, actions, pools and the audit log.
#[async_trait::async_trait]
pub trait Console: Send + Sync + 'static {
    async fn dashboard(&self) -> Result<DashboardInfo, AppError>;
    async fn list_pipelines(&self) -> Result<Vec<PipelineSummary>, AppError>;
    async fn get_pipeline(&self, pipeline_id: &str) -> Result<PipelineDetail, AppError>;
    async fn list_runs(&self, query: RunListQuery) -> Result<RunList, AppError>;
    /// `covering`: the newest event the caller knows of; the answer reflects at least that.
    async fn get_run(&self, run_id: i64, covering: Option<i64>) -> Result<RunDetail, AppError>;
    async fn list_instances(
        &self,
        run_id: i64,
        query: InstanceQuery,
        covering: Option<i64>,
    ) -> Result<InstancePage, AppError>;
    async fn get_instance(&self, ti_id: i64) -> Result<InstanceDetail, AppError>;

    /// Queues a run; returns its id.
    async fn trigger_run(
        &self,
        actor: &CurrentUser,
        pipeline_id: &str,
        conf: serde_json::Map<String, serde_json::Value>,
    ) -> Result<i64, AppError>;
    /// Queues a run from the trigger form's text fields, typed by the pipeline's parameters.
    async fn trigger_from_form(
        &self,
        actor: &CurrentUser,
        pipeline_id: &str,
        fields: std::collections::HashMap<String, String>,
    ) -> Result<i64, AppError>;
    /// A new run of the same pipeline with the same parameters.
    async fn retrigger(&self, actor: &CurrentUser, run_id: i64) -> Result<i64, AppError>;
    /// Cancel, clear or mark; returns what was done, in words.
    async fn run_action(
        &self,
        actor: &CurrentUser,
        run_id: i64,
        action: RunAction,
        task_id: Option<String>,
        ti_id: Option<i64>,
    ) -> Result<String, AppError>;

    async fn list_pools(&self) -> Result<Vec<PoolInfo>, AppError>;
    async fn save_pool(
        &self,
        actor: &CurrentUser,
        name: &str,
        slots: i64,
        description: &str,
    ) -> Result<PoolInfo, AppError>;
    async fn delete_pool(&self, actor: &CurrentUser, name: &str) -> Result<(), AppError>;
    async fn audit_log(
        &self,
        action_prefix: Option<String>,
        page: u32,
    ) -> Result<AuditPage, AppError>;

    async fn list_flows(&self) -> Result<Vec<FlowInfo>, AppError>;
    async fn get_flow(&self, project: &str, name: &str) -> Result<FlowDetail, AppError>;
    /// Registers a pipeline (in `project`) or a flow of flows (its own project).
    async fn register_flow(
        &self,
        actor: &CurrentUser,
        project: &str,
        source: &str,
    ) -> Result<FlowRegistered, AppError>;
    /// Checks without storing; answers what would be registered.
    async fn validate_flow(&self, project: &str, source: &str) -> Result<String, AppError>;
    async fn run_flow(
        &self,
        actor: &CurrentUser,
        flow: &str,
        parameters: serde_json::Map<String, serde_json::Value>,
        options: FlowRunOptions,
    ) -> Result<i64, AppError>;
    /// Runs and waits; all results by task slug, or `task`'s.
    async fn run_and_return(
        &self,
        actor: &CurrentUser,
        flow: &str,
        parameters: serde_json::Map<String, serde_json::Value>,
        task: Option<String>,
        options: FlowRunOptions,
    ) -> Result<serde_json::Value, AppError>;
}

/// Run configuration for flows (LUME's FlowRunConfig, every field working).
#[derive(Debug, Clone, Default)]
pub struct FlowRunOptions {
    pub labels: Vec<String>,
    pub run_name: Option<String>,
    /// Epoch milliseconds.
    pub start_after: Option<i64>,
    pub timeout_seconds: u64,
    pub poll_interval_seconds: u64,
}

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub backend: Arc<dyn Backend>,
    pub console: Arc<dyn Console>,
}

/// The backend, from the state `leptos_axum` provides to every server function and route.
pub fn backend() -> Result<Arc<dyn Backend>, AppError> {
    use_context::<AppState>()
        .map(|s| s.backend)
        .ok_or_else(|| AppError::Internal("missing application state".into()))
}

/// The console side of the port.
pub fn console() -> Result<Arc<dyn Console>, AppError> {
    use_context::<AppState>()
        .map(|s| s.console)
        .ok_or_else(|| AppError::Internal("missing application state".into()))
}

/// What the authentication middleware put on this request.
pub fn auth_context() -> AuthContext {
    use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<AuthContext>().cloned())
        .unwrap_or_default()
}

/// Sets the HTTP status of the current response to match `err`, and passes it on.
pub fn respond(err: AppError) -> AppError {
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>()
        && let Ok(code) = axum::http::StatusCode::from_u16(err.status())
    {
        res.set_status(code);
    }
    err
}

/// The signed-in user if their role allows `needed`; otherwise the matching 401/403 error.
pub fn require(needed: Role) -> Result<CurrentUser, AppError> {
    let ctx = auth_context();
    match ctx.user {
        Some(user) if user.role.allows(needed) => Ok(user),
        Some(user) => Err(respond(AppError::Forbidden {
            needed,
            actual: user.role,
        })),
        None if ctx.session_expired => Err(respond(AppError::SessionExpired)),
        None => Err(respond(AppError::Unauthenticated)),
    }
}
