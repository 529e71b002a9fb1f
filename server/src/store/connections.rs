//! Connections (secrets stored only as AEAD values), export watermarks and run artifacts.
use super::{Db, StoreResult, execute_on, now_ms, on_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRow {
    pub conn_id: String,
    pub kind: String,
    pub description: String,
    /// Non-secret fields, a JSON object.
    pub settings: String,
    /// Field name → encrypted value, a JSON object.
    pub secrets: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub updated_by: String,
}

const CONNECTION_COLUMNS: &str =
    "conn_id, kind, description, settings, secrets, created_at, updated_at, updated_by";

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ArtifactRow {
    pub id: i64,
    pub run_id: i64,
    pub task_instance_id: i64,
    pub uri: String,
    pub bytes: i64,
    pub sha256: String,
    pub rows_written: Option<i64>,
    pub created_at: i64,
}

/// Whose incremental watermark: one pipeline's task exporting one study through one connection.
pub struct WatermarkKey<'a> {
    pub pipeline_id: &'a str,
    pub task_id: &'a str,
    pub conn_id: &'a str,
    pub study_key: &'a str,
}

/// What a task reports about a file it wrote.
#[derive(Debug, Clone)]
pub struct NewArtifact<'a> {
    pub run_id: i64,
    pub task_instance_id: i64,
    pub uri: &'a str,
    pub bytes: i64,
    pub sha256: &'a str,
    pub rows_written: Option<i64>,
}

impl Db {
    pub async fn list_connection_rows(&self) -> StoreResult<Vec<ConnectionRow>> {
        let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY conn_id");
        let rows =
            on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(&sql).fetch_all(pool).await)?;
        Ok(rows)
    }

    pub async fn connection_row(&self, conn_id: &str) -> StoreResult<Option<ConnectionRow>> {
        let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE conn_id = $1");
        let row = on_pool!(self, pool => sqlx::query_as::<_, ConnectionRow>(&sql)
            .bind(conn_id).fetch_optional(pool).await)?;
        Ok(row)
    }

    /// Inserts a new connection; a taken id is a unique violation.
    pub async fn insert_connection_row(&self, row: &ConnectionRow) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query(
            "INSERT INTO connections (conn_id, kind, description, settings, secrets, created_at, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)")
            .bind(&row.conn_id).bind(&row.kind).bind(&row.description).bind(&row.settings)
            .bind(&row.secrets).bind(now_ms()).bind(&row.updated_by)
            .execute(pool).await)?;
        Ok(())
    }

    /// Replaces a connection's fields; false when it no longer exists.
    pub async fn update_connection_row(&self, row: &ConnectionRow) -> StoreResult<bool> {
        let n = execute_on!(self, pool => sqlx::query(
            "UPDATE connections SET description = $2, settings = $3, secrets = $4, updated_at = $5, updated_by = $6 \
             WHERE conn_id = $1")
            .bind(&row.conn_id).bind(&row.description).bind(&row.settings).bind(&row.secrets)
            .bind(now_ms()).bind(&row.updated_by)
            .execute(pool).await)?;
        Ok(n == 1)
    }

    /// Swaps the encrypted values only if nobody changed them since they were read (key rotation).
    pub async fn swap_connection_secrets(
        &self,
        conn_id: &str,
        old: &str,
        new: &str,
    ) -> StoreResult<bool> {
        let n = execute_on!(self, pool => sqlx::query(
            "UPDATE connections SET secrets = $3 WHERE conn_id = $1 AND secrets = $2")
            .bind(conn_id).bind(old).bind(new).execute(pool).await)?;
        Ok(n == 1)
    }

    pub async fn delete_connection_row(&self, conn_id: &str) -> StoreResult<bool> {
        let n = execute_on!(self, pool => sqlx::query("DELETE FROM connections WHERE conn_id = $1")
            .bind(conn_id).execute(pool).await)?;
        Ok(n == 1)
    }

    /// The newest watermark an earlier run of this pipeline's task stored for the study.
    pub async fn task_watermark(
        &self,
        key: &WatermarkKey<'_>,
        before_run: i64,
    ) -> StoreResult<Option<(i64, String)>> {
        let w = on_pool!(self, pool => sqlx::query_as::<_, (i64, String)>(
            "SELECT run_id, watermark FROM task_watermarks WHERE pipeline_id = $1 AND task_id = $2 \
             AND conn_id = $3 AND study_key = $4 AND run_id < $5 ORDER BY run_id DESC LIMIT 1")
            .bind(key.pipeline_id).bind(key.task_id).bind(key.conn_id).bind(key.study_key).bind(before_run)
            .fetch_optional(pool).await)?;
        Ok(w)
    }

    /// Stores this run's watermark; a run exporting the study more than once keeps the newest.
    pub async fn set_task_watermark(
        &self,
        key: &WatermarkKey<'_>,
        run_id: i64,
        watermark: &str,
    ) -> StoreResult<()> {
        execute_on!(self, pool => sqlx::query(
            "INSERT INTO task_watermarks (pipeline_id, task_id, conn_id, study_key, run_id, watermark, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (pipeline_id, task_id, conn_id, study_key, run_id) DO UPDATE \
             SET watermark = CASE WHEN excluded.watermark > task_watermarks.watermark \
               THEN excluded.watermark ELSE task_watermarks.watermark END, updated_at = excluded.updated_at")
            .bind(key.pipeline_id).bind(key.task_id).bind(key.conn_id).bind(key.study_key)
            .bind(run_id).bind(watermark).bind(now_ms())
            .execute(pool).await)?;
        Ok(())
    }

    /// Records a file the run rewrites (its manifest): the old row for that place goes.
    pub async fn replace_artifact(&self, a: &NewArtifact<'_>) -> StoreResult<i64> {
        execute_on!(self, pool => sqlx::query("DELETE FROM artifacts WHERE run_id = $1 AND uri = $2")
            .bind(a.run_id).bind(a.uri).execute(pool).await)?;
        self.insert_artifact(a).await
    }

    pub async fn insert_artifact(&self, a: &NewArtifact<'_>) -> StoreResult<i64> {
        let id = on_pool!(self, pool => sqlx::query_scalar::<_, i64>(
            "INSERT INTO artifacts (run_id, task_instance_id, uri, bytes, sha256, rows_written, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
            .bind(a.run_id).bind(a.task_instance_id).bind(a.uri).bind(a.bytes).bind(a.sha256)
            .bind(a.rows_written).bind(now_ms()).fetch_one(pool).await)?;
        Ok(id)
    }

    pub async fn run_artifacts(&self, run_id: i64) -> StoreResult<Vec<ArtifactRow>> {
        let rows = on_pool!(self, pool => sqlx::query_as::<_, ArtifactRow>(
            "SELECT id, run_id, task_instance_id, uri, bytes, sha256, rows_written, created_at \
             FROM artifacts WHERE run_id = $1 ORDER BY id")
            .bind(run_id).fetch_all(pool).await)?;
        Ok(rows)
    }

    pub async fn artifact(&self, id: i64) -> StoreResult<Option<ArtifactRow>> {
        let row = on_pool!(self, pool => sqlx::query_as::<_, ArtifactRow>(
            "SELECT id, run_id, task_instance_id, uri, bytes, sha256, rows_written, created_at \
             FROM artifacts WHERE id = $1")
            .bind(id).fetch_optional(pool).await)?;
        Ok(row)
    }
}
