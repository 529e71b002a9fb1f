//! Who did what, when: every state-changing action of a signed-in user.
use super::{Db, StoreResult, execute_on, now_ms, on_pool};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl Db {
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(now_ms()).bind(actor).bind(action).bind(target).bind(detail.to_string())
            .execute(pool).await)?;
        Ok(())
    }

    /// Newest first.
    pub async fn audit_entries(&self, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        self.audit_page(None, limit, 0).await
    }

    /// Newest first, optionally only one action prefix (`run.`, `connection.`…).
    pub async fn audit_page(
        &self,
        action_prefix: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        let prefix = action_prefix.map(|p| format!("{p}%"));
        let rows = on_pool!(self, pool => sqlx::query_as::<_, AuditEntry>(
            "SELECT id, at, actor, action, target, detail FROM audit_log \
             WHERE ($1 IS NULL OR action LIKE $1) ORDER BY id DESC LIMIT $2 OFFSET $3")
            .bind(&prefix).bind(limit).bind(offset).fetch_all(pool).await)?;
        Ok(rows)
    }
}
