//! Read queries behind the operator console: one page of a run's instances with filter, search
//! and sort done in SQL (a 10,000-instance run is never loaded whole), a run's events for the
//! live stream, pool occupancy, workers and the audit log.
use super::engine::{EngineEvent, TI_COLUMNS, TiRow};
use super::{Db, StoreResult, now_ms, on_pool};
use serde_json::Value;
use std::collections::HashMap;

/// The columns an instance table may be sorted by. SQL is chosen from this list, never from input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstanceSort {
    #[default]
    MapIndex,
    MapKey,
    State,
    Try,
    Started,
    Duration,
}

impl InstanceSort {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "" | "index" => Self::MapIndex,
            "key" => Self::MapKey,
            "state" => Self::State,
            "try" => Self::Try,
            "started" => Self::Started,
            "duration" => Self::Duration,
            _ => return None,
        })
    }

    fn sql(self) -> &'static str {
        match self {
            Self::MapIndex => "task_id, map_index",
            Self::MapKey => "map_key",
            Self::State => "state",
            Self::Try => "try_number",
            Self::Started => "started_at",
            // Running instances count up to now ($7).
            Self::Duration => "(COALESCE(ended_at, $7) - started_at)",
        }
    }
}

/// One page of one run's instances.
#[derive(Debug, Clone, Default)]
pub struct InstanceQuery {
    pub run_id: i64,
    pub task_id: Option<String>,
    pub state: Option<String>,
    /// Case-insensitive substring of the map key.
    pub search: Option<String>,
    pub sort: InstanceSort,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub labels: String,
    pub concurrency: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
}

/// Escapes `%`, `_` and `\` so a search for them matches them literally.
fn like_pattern(search: &str) -> String {
    let mut out = String::with_capacity(search.len() + 2);
    out.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Db {
    /// Changes when anything shown on a run's page changes: its newest event (state changes,
    /// actions, files recorded before their instance ends) and its alert deliveries' attempts.
    /// Two index lookups, cheap enough to ask on every page load.
    pub async fn run_page_version(&self, run_id: i64) -> StoreResult<(i64, i64)> {
        let version: (i64, i64) = on_pool!(self, pool => sqlx::query_as(
            "SELECT COALESCE((SELECT MAX(id) FROM engine_events WHERE run_id = $1), 0), \
             (SELECT CAST(COUNT(*) + COALESCE(SUM(attempts), 0) AS BIGINT) FROM alert_deliveries WHERE run_id = $1)")
            .bind(run_id).fetch_one(pool).await)?;
        Ok(version)
    }

    /// The instances matching `q` (mapped placeholders left out) and how many match in all.
    pub async fn instance_page(&self, q: &InstanceQuery) -> StoreResult<(Vec<TiRow>, i64)> {
        const FILTER: &str = "run_id = $1 AND state <> 'removed' AND ($2 IS NULL OR task_id = $2) \
            AND ($3 IS NULL OR state = $3) AND ($4 IS NULL OR LOWER(COALESCE(map_key, '')) LIKE $4 ESCAPE '\\')";
        let direction = if q.descending { "DESC" } else { "ASC" };
        // Ties (and NULL starts) fall back to a stable order so paging never repeats a row.
        let sql = format!(
            "SELECT {TI_COLUMNS} FROM task_instances WHERE {FILTER} \
             ORDER BY {} {direction}, id {direction} LIMIT $5 OFFSET $6",
            q.sort.sql()
        );
        let pattern = q
            .search
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(like_pattern);
        let limit = q.limit.clamp(1, 500);
        let rows = on_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, TiRow>(&sql)
                .bind(q.run_id).bind(&q.task_id).bind(&q.state).bind(&pattern)
                .bind(limit).bind(q.offset.max(0));
            if q.sort == InstanceSort::Duration {
                query = query.bind(now_ms());
            }
            query.fetch_all(pool).await
        })?;
        let total: i64 = on_pool!(self, pool => sqlx::query_scalar(
            &format!("SELECT COUNT(*) FROM task_instances WHERE {FILTER}"))
            .bind(q.run_id).bind(&q.task_id).bind(&q.state).bind(&pattern)
            .fetch_one(pool).await)?;
        Ok((rows, total))
    }

    /// A run's events after `after_id`, oldest first.
    pub async fn run_events_since(
        &self,
        run_id: i64,
        after_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<EngineEvent>> {
        let rows: Vec<(i64, i64, Option<i64>, String, String)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, at, run_id, kind, payload FROM engine_events WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3")
            .bind(run_id).bind(after_id).bind(limit).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(id, at, run_id, kind, payload)| EngineEvent {
                id,
                at,
                run_id,
                kind,
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
            })
            .collect())
    }

    /// Per pool: (running, queued) instances.
    pub async fn pool_occupancy(&self) -> StoreResult<HashMap<String, (i64, i64)>> {
        let rows: Vec<(String, String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT pool, state, COUNT(*) FROM task_instances WHERE state IN ('queued', 'running') \
             GROUP BY pool, state").fetch_all(pool).await)?;
        let mut out: HashMap<String, (i64, i64)> = HashMap::new();
        for (pool, state, n) in rows {
            let entry = out.entry(pool).or_default();
            if state == "running" {
                entry.0 += n;
            } else {
                entry.1 += n;
            }
        }
        Ok(out)
    }

    /// Workers seen in the last `since_ms` (stopped ones included), newest heartbeat first.
    pub async fn recent_workers(&self, since_ms: i64) -> StoreResult<Vec<WorkerRow>> {
        Ok(on_pool!(self, pool => sqlx::query_as::<_, WorkerRow>(
            "SELECT id, host, labels, concurrency, started_at, heartbeat_at, stopped_at FROM workers \
             WHERE heartbeat_at >= $1 ORDER BY heartbeat_at DESC LIMIT 50")
            .bind(now_ms() - since_ms).fetch_all(pool).await)?)
    }

    /// Per run: (finished, all) live instances, for progress bars.
    pub async fn run_progress(&self, run_id: i64) -> StoreResult<(i64, i64)> {
        let (done, all): (Option<i64>, i64) = on_pool!(self, pool => sqlx::query_as(
            "SELECT CAST(SUM(CASE WHEN state IN ('success', 'failed', 'skipped', 'upstream_failed') THEN 1 ELSE 0 END) AS BIGINT), \
                    COUNT(*) FROM task_instances WHERE run_id = $1 AND state <> 'removed'")
            .bind(run_id).fetch_one(pool).await)?;
        Ok((done.unwrap_or(0), all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_match_wildcards_literally() {
        assert_eq!(like_pattern("Ab"), "%ab%");
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn only_listed_sort_names_parse() {
        assert_eq!(
            InstanceSort::parse("duration"),
            Some(InstanceSort::Duration)
        );
        assert_eq!(InstanceSort::parse(""), Some(InstanceSort::MapIndex));
        assert_eq!(InstanceSort::parse("id; DROP TABLE runs"), None);
    }
}
