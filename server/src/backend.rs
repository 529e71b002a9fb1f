//! The server's side of the UI's port: the one place where server functions meet storage.
use crate::bootstrap::normalize_username;
use crate::connections::{ConnectionError, Connections};
use crate::engine::{Engine, EngineError};
use crate::passwords;
use crate::store::{Db, StoreError};
use app::error::AppError;
use app::model::{
    ArtifactInfo, ConnectionInfo, ConnectionInput, ConnectionTest, CurrentUser, DatabaseHealth,
    Health, InstanceSummary, ParamInfo, PasswordReset, PipelineSummary, Role, RunDetail, UserInfo,
};
use app::port::Backend;
use std::sync::Arc;

pub struct ServerBackend {
    pub db: Db,
    pub engine: Arc<Engine>,
    pub connections: Arc<Connections>,
}

/// Logs the real cause and hands the browser a reference to find it.
fn internal(err: impl std::fmt::Display) -> AppError {
    let reference = format!("{:08x}", rand::random::<u32>());
    tracing::error!(%reference, error = %err, "request failed");
    AppError::Internal(reference)
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        internal(err)
    }
}

impl From<ConnectionError> for AppError {
    fn from(err: ConnectionError) -> Self {
        match err {
            ConnectionError::NotFound(id) => AppError::NotFound(format!("Connection `{id}`")),
            ConnectionError::Exists(_) => AppError::Conflict(err.to_string()),
            ConnectionError::Invalid { field, message } => AppError::Invalid { field, message },
            ConnectionError::WrongKind { .. } | ConnectionError::Missing { .. } => {
                AppError::Conflict(err.to_string())
            }
            ConnectionError::Secret(_) | ConnectionError::Store(_) => internal(err),
        }
    }
}

impl From<EngineError> for AppError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::NotFound(what) => AppError::NotFound(what),
            EngineError::Params(errors) => match errors.as_slice() {
                [one] => AppError::invalid(one.param.clone(), one.message.clone()),
                _ => AppError::invalid(
                    "conf",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            },
            EngineError::Invalid(message) => AppError::Conflict(message),
            other => internal(other),
        }
    }
}

impl ServerBackend {
    async fn audit(
        &self,
        actor: &CurrentUser,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), AppError> {
        self.db
            .audit(&actor.username, action, target, detail)
            .await?;
        Ok(())
    }

    /// Refuses changes that would leave no enabled admin.
    async fn keep_an_admin(&self, user_id: i64, losing_admin: bool) -> Result<(), AppError> {
        let Some(user) = self.db.user_by_id(user_id).await? else {
            return Err(AppError::NotFound(format!("User {user_id}")));
        };
        if losing_admin
            && user.role() == Role::Admin
            && !user.disabled
            && self.db.other_active_admins(user_id).await? == 0
        {
            return Err(AppError::Conflict(format!(
                "{} is the last enabled admin; make another admin first.",
                user.username
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for ServerBackend {
    async fn health(&self) -> Health {
        let database = match self.db.ping().await {
            Ok(latency) => DatabaseHealth {
                backend: self.db.backend_name().to_string(),
                ok: true,
                latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
                error: None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "database health check failed");
                DatabaseHealth {
                    backend: self.db.backend_name().to_string(),
                    ok: false,
                    latency_ms: 0,
                    error: Some("database unreachable".to_string()),
                }
            }
        };
        Health {
            status: if database.ok { "ok" } else { "degraded" }.to_string(),
            database,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    async fn list_users(&self) -> Result<Vec<UserInfo>, AppError> {
        Ok(self
            .db
            .list_users()
            .await?
            .iter()
            .map(|u| u.info())
            .collect())
    }

    async fn create_user(
        &self,
        actor: &CurrentUser,
        username: &str,
        role: Role,
        password: &str,
    ) -> Result<UserInfo, AppError> {
        let username =
            normalize_username(username).map_err(|m| AppError::invalid("Username", m))?;
        passwords::check_strength(password).map_err(|m| AppError::invalid("Password", m))?;
        let hash = passwords::hash(password.to_string())
            .await
            .map_err(internal)?;
        let row = match self.db.insert_user(&username, &hash, role).await {
            Ok(row) => row,
            Err(e) if e.is_unique_violation() => {
                return Err(AppError::Conflict(format!(
                    "A user named '{username}' already exists."
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.audit(
            actor,
            "user.create",
            &username,
            serde_json::json!({"role": role}),
        )
        .await?;
        Ok(row.info())
    }

    async fn set_user_role(
        &self,
        actor: &CurrentUser,
        user_id: i64,
        role: Role,
    ) -> Result<UserInfo, AppError> {
        self.keep_an_admin(user_id, role != Role::Admin).await?;
        let row = self
            .db
            .set_user_role(user_id, role)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("User {user_id}")))?;
        self.audit(
            actor,
            "user.set_role",
            &row.username,
            serde_json::json!({"role": role}),
        )
        .await?;
        Ok(row.info())
    }

    async fn set_user_disabled(
        &self,
        actor: &CurrentUser,
        user_id: i64,
        disabled: bool,
    ) -> Result<UserInfo, AppError> {
        if disabled && user_id == actor.id {
            return Err(AppError::Conflict(
                "You cannot disable your own account.".into(),
            ));
        }
        self.keep_an_admin(user_id, disabled).await?;
        let row = self
            .db
            .set_user_disabled(user_id, disabled)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("User {user_id}")))?;
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        self.audit(actor, action, &row.username, serde_json::json!({}))
            .await?;
        Ok(row.info())
    }

    async fn reset_password(
        &self,
        actor: &CurrentUser,
        user_id: i64,
        password: Option<String>,
    ) -> Result<PasswordReset, AppError> {
        let (password, generated) = match password {
            Some(p) => {
                passwords::check_strength(&p).map_err(|m| AppError::invalid("Password", m))?;
                (p, false)
            }
            None => (passwords::generate(), true),
        };
        let hash = passwords::hash(password.clone()).await.map_err(internal)?;
        let row = self
            .db
            .set_password_hash(user_id, &hash)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("User {user_id}")))?;
        self.audit(
            actor,
            "user.reset_password",
            &row.username,
            serde_json::json!({}),
        )
        .await?;
        Ok(PasswordReset {
            username: row.username,
            one_time_password: generated.then_some(password),
        })
    }

    async fn list_connections(&self) -> Result<Vec<ConnectionInfo>, AppError> {
        Ok(self.connections.list().await?)
    }

    async fn describe_connection(&self, conn_id: &str) -> Result<serde_json::Value, AppError> {
        Ok(self.connections.describe(conn_id).await?)
    }

    async fn save_connection(
        &self,
        actor: &CurrentUser,
        input: ConnectionInput,
    ) -> Result<ConnectionInfo, AppError> {
        let info = self.connections.save(&input, &actor.username).await?;
        // Which fields changed, never their values.
        let secrets_set: Vec<&str> = info
            .kind
            .fields()
            .iter()
            .filter(|f| f.secret && input.value(f.name).is_some_and(|v| !v.trim().is_empty()))
            .map(|f| f.name)
            .collect();
        let action = if input.create {
            "connection.create"
        } else {
            "connection.update"
        };
        self.audit(
            actor,
            action,
            &info.conn_id,
            serde_json::json!({"kind": info.kind, "secrets_set": secrets_set, "secrets_cleared": input.clear}),
        )
        .await?;
        Ok(info)
    }

    async fn delete_connection(&self, actor: &CurrentUser, conn_id: &str) -> Result<(), AppError> {
        self.connections.delete(conn_id).await?;
        self.audit(actor, "connection.delete", conn_id, serde_json::json!({}))
            .await
    }

    async fn test_connection(
        &self,
        actor: &CurrentUser,
        conn_id: &str,
    ) -> Result<ConnectionTest, AppError> {
        let result = self.connections.test(conn_id).await?;
        self.audit(
            actor,
            "connection.test",
            conn_id,
            serde_json::json!({"ok": result.ok, "latency_ms": result.latency_ms}),
        )
        .await?;
        Ok(result)
    }

    async fn trigger_run(
        &self,
        actor: &CurrentUser,
        pipeline_id: &str,
        conf: serde_json::Map<String, serde_json::Value>,
    ) -> Result<i64, AppError> {
        let detail = serde_json::Value::Object(conf.clone());
        let run_id = self
            .engine
            .trigger(pipeline_id, conf, &actor.username, Vec::new())
            .await?;
        self.audit(
            actor,
            "run.trigger",
            &format!("{pipeline_id} run {run_id}"),
            self.connections.known_secrets().redact_json(&detail),
        )
        .await?;
        Ok(run_id)
    }

    async fn list_pipelines(&self) -> Result<Vec<PipelineSummary>, AppError> {
        let mut list: Vec<PipelineSummary> = self
            .engine
            .catalog
            .all()
            .iter()
            .map(|p| PipelineSummary {
                id: p.id().to_string(),
                description: p.spec.description.trim().to_string(),
                tags: p.spec.tags.clone(),
                schedule: p.spec.schedule.clone(),
                tasks: p.spec.tasks.len(),
                params: p
                    .spec
                    .params
                    .iter()
                    .map(|(name, spec)| ParamInfo {
                        name: name.clone(),
                        ty: serde_json::to_value(spec.ty)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        default: spec.default.as_ref().map(|d| d.to_string()),
                        description: spec.description.clone(),
                    })
                    .collect(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    async fn get_run(&self, run_id: i64) -> Result<RunDetail, AppError> {
        /// The first page of instances; the console pages through the rest.
        const FIRST_PAGE: i64 = 200;
        let run = self
            .db
            .run_row(run_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("Run {run_id}")))?;
        let order: Vec<String> = self
            .engine
            .run_pipeline(&run)
            .map(|p| p.order.clone())
            .unwrap_or_default();
        let mut counts: std::collections::BTreeMap<String, Vec<(String, i64)>> = Default::default();
        let mut instance_count = 0;
        for (task, state, n) in self.db.task_state_counts(run_id).await? {
            if state != "removed" {
                instance_count += usize::try_from(n).unwrap_or(0);
            }
            counts.entry(task).or_default().push((state, n));
        }
        let mut tasks: Vec<(String, Vec<(String, i64)>)> = order
            .iter()
            .map(|t| (t.clone(), counts.remove(t).unwrap_or_default()))
            .collect();
        tasks.extend(counts);
        let secrets = self.connections.known_secrets();
        let instances = self
            .db
            .run_instances_page(run_id, FIRST_PAGE)
            .await?
            .iter()
            .map(|ti| InstanceSummary {
                id: ti.id,
                task_id: ti.task_id.clone(),
                map_key: ti.map_key.clone(),
                state: ti.state.clone(),
                try_number: ti.try_number,
                started_at: ti.started_at,
                ended_at: ti.ended_at,
                summary: secrets.redact_text(&summarize(ti.output.as_deref(), ti.error.as_deref())),
            })
            .collect();
        let artifacts = self
            .db
            .run_artifacts(run_id)
            .await?
            .into_iter()
            .map(|a| ArtifactInfo {
                downloadable: !a.uri.starts_with("s3://"),
                id: a.id,
                uri: a.uri,
                bytes: a.bytes,
                sha256: a.sha256,
                rows: a.rows_written,
            })
            .collect();
        Ok(RunDetail {
            id: run.id,
            pipeline_id: run.pipeline_id,
            state: run.state,
            conf: secrets.redact_text(&run.conf),
            triggered_by: run.triggered_by,
            queued_at: run.queued_at,
            started_at: run.started_at,
            ended_at: run.ended_at,
            tasks,
            instance_count,
            instances,
            artifacts,
        })
    }
}

/// One line about an instance's result: an export's rows, bytes and path, or the error.
fn summarize(output: Option<&str>, error: Option<&str>) -> String {
    if let Some(e) = error {
        return e.lines().next().unwrap_or_default().to_string();
    }
    let Some(out) = output.and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok()) else {
        return String::new();
    };
    match (&out["rows"], &out["bytes"], &out["path"]) {
        (serde_json::Value::Number(rows), serde_json::Value::Number(bytes), path) => {
            format!(
                "{rows} rows, {bytes} bytes → {}",
                path.as_str().unwrap_or("")
            )
        }
        _ => {
            let text = out.to_string();
            match text.char_indices().nth(120) {
                Some((i, _)) => format!("{}…", &text[..i]),
                None => text,
            }
        }
    }
}
