//! The flow registry (every registered version of every flow) and the result store.
use super::{Db, StoreResult, execute_on, now_ms, on_pool};

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct FlowRow {
    pub id: i64,
    pub project: String,
    pub name: String,
    pub version: i64,
    pub kind: String,
    pub source: String,
    pub spec: String,
    pub hash: String,
    pub labels: String,
    pub parameters: String,
    pub task_slugs: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A flow version to record.
pub struct NewFlow<'a> {
    pub project: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub source: &'a str,
    pub spec: &'a str,
    pub hash: &'a str,
    pub labels: &'a str,
    pub parameters: &'a str,
    pub task_slugs: &'a str,
    pub created_by: &'a str,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResultRow {
    pub project_name: String,
    pub flow_id: String,
    pub inputs: String,
    pub outputs: String,
    pub date_modified: i64,
    pub unique_hash: String,
    pub result_type_string: String,
}

const FLOW_COLUMNS: &str = "id, project, name, version, kind, source, spec, hash, labels, parameters, \
    task_slugs, created_at, created_by";

impl Db {
    /// Records `flow` unless its latest version has the same hash. Returns the version's row and
    /// whether it is new.
    pub async fn register_flow_version(&self, flow: &NewFlow<'_>) -> StoreResult<(FlowRow, bool)> {
        if let Some(latest) = self.latest_flow(flow.project, flow.name).await?
            && latest.hash == flow.hash
        {
            return Ok((latest, false));
        }
        let sql = format!(
            "INSERT INTO flows (project, name, version, kind, source, spec, hash, labels, parameters, task_slugs, \
               created_at, created_by) \
             VALUES ($1, $2, (SELECT COALESCE(MAX(version), 0) + 1 FROM flows WHERE project = $1 AND name = $2), \
               $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (project, name, hash) DO NOTHING RETURNING {FLOW_COLUMNS}"
        );
        let inserted: Option<FlowRow> = on_pool!(self, pool => sqlx::query_as::<_, FlowRow>(&sql)
            .bind(flow.project).bind(flow.name).bind(flow.kind).bind(flow.source).bind(flow.spec)
            .bind(flow.hash).bind(flow.labels).bind(flow.parameters).bind(flow.task_slugs)
            .bind(now_ms()).bind(flow.created_by)
            .fetch_optional(pool).await)?;
        match inserted {
            Some(row) => Ok((row, true)),
            // An older version had this exact definition: registering it again is a new version
            // only if something changed since, which the hash says it did not.
            None => {
                let sql = format!(
                    "SELECT {FLOW_COLUMNS} FROM flows WHERE project = $1 AND name = $2 AND hash = $3"
                );
                let row = on_pool!(self, pool => sqlx::query_as::<_, FlowRow>(&sql)
                    .bind(flow.project).bind(flow.name).bind(flow.hash).fetch_one(pool).await)?;
                Ok((row, false))
            }
        }
    }

    pub async fn latest_flow(&self, project: &str, name: &str) -> StoreResult<Option<FlowRow>> {
        let sql = format!(
            "SELECT {FLOW_COLUMNS} FROM flows WHERE project = $1 AND name = $2 ORDER BY version DESC LIMIT 1"
        );
        Ok(on_pool!(self, pool => sqlx::query_as::<_, FlowRow>(&sql)
            .bind(project).bind(name).fetch_optional(pool).await)?)
    }

    /// The newest version of every flow, by project and name.
    pub async fn latest_flows(&self) -> StoreResult<Vec<FlowRow>> {
        let sql = format!(
            "SELECT {FLOW_COLUMNS} FROM flows f WHERE version = \
               (SELECT MAX(version) FROM flows g WHERE g.project = f.project AND g.name = f.name) \
             ORDER BY project, name"
        );
        Ok(on_pool!(self, pool => sqlx::query_as::<_, FlowRow>(&sql).fetch_all(pool).await)?)
    }

    /// Stores a result unless one with the same hash exists in the project (then that one stays).
    pub async fn save_result(&self, r: &ResultRow) -> StoreResult<bool> {
        let n = execute_on!(self, pool => sqlx::query(
            "INSERT INTO flow_results (project_name, flow_id, inputs, outputs, date_modified, unique_hash, result_type_string) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (project_name, unique_hash) DO NOTHING")
            .bind(&r.project_name).bind(&r.flow_id).bind(&r.inputs).bind(&r.outputs)
            .bind(r.date_modified).bind(&r.unique_hash).bind(&r.result_type_string)
            .execute(pool).await)?;
        Ok(n > 0)
    }

    pub async fn result_by_hash(
        &self,
        project: &str,
        unique_hash: &str,
    ) -> StoreResult<Option<ResultRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, ResultRow>(
            "SELECT project_name, flow_id, inputs, outputs, date_modified, unique_hash, result_type_string \
             FROM flow_results WHERE project_name = $1 AND unique_hash = $2")
            .bind(project).bind(unique_hash).fetch_optional(pool).await)?)
    }
}
