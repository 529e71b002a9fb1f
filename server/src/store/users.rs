//! Users and their credentials.
use super::{Db, StoreResult, now_ms, on_pool};
use app::model::{Role, UserInfo};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
    pub session_epoch: i64,
    pub created_at: i64,
}

impl UserRow {
    /// The stored role; a value outside the CHECK constraint cannot occur, so fall back to the least power.
    pub fn role(&self) -> Role {
        self.role.parse().unwrap_or(Role::Viewer)
    }

    pub fn info(&self) -> UserInfo {
        UserInfo {
            id: self.id,
            username: self.username.clone(),
            role: self.role(),
            disabled: self.disabled,
            created_at: self.created_at,
        }
    }
}

const COLUMNS: &str = "id, username, password_hash, role, disabled, session_epoch, created_at";

impl Db {
    pub async fn user_count(&self) -> StoreResult<i64> {
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await)?;
        Ok(n)
    }

    pub async fn insert_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> StoreResult<UserRow> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO users (username, password_hash, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) RETURNING {COLUMNS}"
        );
        let row = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql)
            .bind(username).bind(password_hash).bind(role.as_str()).bind(now)
            .fetch_one(pool).await)?;
        Ok(row)
    }

    pub async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRow>> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE username = $1");
        let row = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql).bind(username).fetch_optional(pool).await)?;
        Ok(row)
    }

    pub async fn user_by_id(&self, id: i64) -> StoreResult<Option<UserRow>> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        let row = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(row)
    }

    pub async fn list_users(&self) -> StoreResult<Vec<UserRow>> {
        let sql = format!("SELECT {COLUMNS} FROM users ORDER BY username");
        let rows =
            on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// Changes the role and ends the user's existing sessions.
    pub async fn set_user_role(&self, id: i64, role: Role) -> StoreResult<Option<UserRow>> {
        let sql = format!(
            "UPDATE users SET role = $2, session_epoch = session_epoch + 1, updated_at = $3 \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let row = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql)
            .bind(id).bind(role.as_str()).bind(now_ms()).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// Disables or enables; disabling ends the user's existing sessions.
    pub async fn set_user_disabled(&self, id: i64, disabled: bool) -> StoreResult<Option<UserRow>> {
        let sql = format!(
            "UPDATE users SET disabled = $2, session_epoch = session_epoch + 1, updated_at = $3 \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let row = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql)
            .bind(id).bind(disabled).bind(now_ms()).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// Replaces the password hash and ends the user's existing sessions.
    pub async fn set_password_hash(
        &self,
        id: i64,
        password_hash: &str,
    ) -> StoreResult<Option<UserRow>> {
        let sql = format!(
            "UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1, updated_at = $3 \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let row = on_pool!(self, pool => sqlx::query_as::<_, UserRow>(&sql)
            .bind(id).bind(password_hash).bind(now_ms()).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// Number of enabled admins other than `except` (guards against locking everyone out).
    pub async fn other_active_admins(&self, except: i64) -> StoreResult<i64> {
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND NOT disabled AND id <> $1")
            .bind(except).fetch_one(pool).await)?;
        Ok(n)
    }
}
