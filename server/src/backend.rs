//! The server's side of the UI's port: the one place where server functions meet storage.
use crate::bootstrap::normalize_username;
use crate::connections::{ConnectionError, Connections};
use crate::engine::{Engine, EngineError};
use crate::passwords;
use crate::store::{Db, StoreError};
use app::error::{AppError, FieldError};
use app::model::{
    ConnectionInfo, ConnectionInput, ConnectionTest, CurrentUser, DatabaseHealth, Health,
    PasswordReset, Role, UserInfo,
};
use app::port::Backend;
use std::sync::Arc;

mod console;
mod flows;
mod run_page;
pub mod shown;
mod snapshots;
mod timeline;

pub struct ServerBackend {
    pub db: Db,
    pub engine: Arc<Engine>,
    pub connections: Arc<Connections>,
    /// Run pages' shared snapshots.
    snapshots: snapshots::RunSnapshots,
}

/// Logs the real cause and hands the browser a reference to find it.
pub(crate) fn internal(err: impl std::fmt::Display) -> AppError {
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
                _ => AppError::Fields(
                    errors
                        .into_iter()
                        .map(|e| FieldError {
                            field: e.param,
                            message: e.message,
                        })
                        .collect(),
                ),
            },
            EngineError::Invalid(message) => AppError::Conflict(message),
            other => internal(other),
        }
    }
}

impl ServerBackend {
    pub fn new(db: Db, engine: Arc<Engine>, connections: Arc<Connections>) -> ServerBackend {
        ServerBackend {
            db,
            engine,
            connections,
            snapshots: snapshots::RunSnapshots::default(),
        }
    }

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
}
