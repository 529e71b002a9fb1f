//! Web sessions in the application database, whichever backend it is.
//!
//! tower-sessions writes a session only when its data changes, so the stored expiry would
//! stay where sign-in put it and an active session would end `idle` after sign-in. Loading
//! therefore extends the stored expiry, with one UPDATE at most once per [`touch_slack`] per
//! session: it never writes the data and never brings back a session signed out meanwhile.
use super::{Db, execute_on};
use async_trait::async_trait;
use time::{Duration, OffsetDateTime};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

#[derive(Clone, Debug)]
pub struct DbSessionStore {
    db: Db,
    store: Store,
    /// A session ends after this long without a request.
    idle: Duration,
}

#[derive(Clone, Debug)]
enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// How far the stored expiry may lag behind "now + idle" before a load writes it again.
pub fn touch_slack(idle: Duration) -> Duration {
    (idle / 10_i32).min(Duration::minutes(1))
}

impl DbSessionStore {
    /// The table is created by our migrations, so the stores' own `migrate` is never called.
    pub fn new(db: Db, idle: Duration) -> Self {
        let store = match &db {
            Db::Sqlite(pool) => Store::Sqlite(SqliteStore::new(pool.clone())),
            Db::Postgres(pool) => Store::Postgres(
                PostgresStore::new(pool.clone())
                    .with_schema_name("public")
                    .and_then(|s| s.with_table_name("tower_sessions"))
                    .expect("constant session table names are valid identifiers"),
            ),
        };
        DbSessionStore { db, store, idle }
    }

    pub async fn delete_expired(&self) -> session_store::Result<()> {
        match &self.store {
            Store::Sqlite(s) => s.delete_expired().await,
            Store::Postgres(s) => s.delete_expired().await,
        }
    }

    /// Writes a loaded session's new expiry (in its column and in the record the store
    /// keeps, which is what a load returns); a session deleted meanwhile stays deleted.
    async fn extend(&self, record: &Record) -> session_store::Result<()> {
        let backend = |e: String| session_store::Error::Backend(e);
        let encoded = rmp_serde::to_vec(record).map_err(|e| backend(e.to_string()))?;
        let id = record.id.to_string();
        execute_on!(&self.db, pool => sqlx::query(
            "UPDATE tower_sessions SET data = $1, expiry_date = $2 WHERE id = $3",
        )
        .bind(encoded)
        .bind(record.expiry_date)
        .bind(id)
        .execute(pool)
        .await)
        .map(|_| ())
        .map_err(|e| backend(e.to_string()))
    }
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match &self.store {
            Store::Sqlite(s) => s.create(record).await,
            Store::Postgres(s) => s.create(record).await,
        }
    }
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match &self.store {
            Store::Sqlite(s) => s.save(record).await,
            Store::Postgres(s) => s.save(record).await,
        }
    }
    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let loaded = match &self.store {
            Store::Sqlite(s) => s.load(id).await?,
            Store::Postgres(s) => s.load(id).await?,
        };
        let Some(mut record) = loaded else {
            return Ok(None);
        };
        let due = OffsetDateTime::now_utc() + self.idle;
        if record.expiry_date < due - touch_slack(self.idle) {
            record.expiry_date = due;
            self.extend(&record).await?;
        }
        Ok(Some(record))
    }
    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match &self.store {
            Store::Sqlite(s) => s.delete(id).await,
            Store::Postgres(s) => s.delete(id).await,
        }
    }
}
