//! All persistent state, behind one handle with a SQLite and a PostgreSQL implementation.
//!
//! Queries are written once in SQL both engines accept (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`, integer milliseconds for time) and run on either pool through [`on_pool!`].
//! Engine-specific work (locking, notifications) lives in the backend's own module.
pub mod alerts;
pub mod audit;
pub mod connections;
pub mod console;
pub mod engine;
pub mod flows;
pub mod leader;
pub mod notify;
pub mod sessions;
pub mod throttle;
pub mod users;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long a SQLite statement waits for another writer before it fails.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the health probe waits for SQLite's write lock.
const WRITE_PROBE_WAIT: Duration = Duration::from_millis(1000);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Runs the same expression against whichever pool the store holds.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Like [`on_pool!`] for statements: evaluates to the number of rows affected.
macro_rules! execute_on {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body.map(|r| r.rows_affected()),
            $crate::store::Db::Postgres($pool) => $body.map(|r| r.rows_affected()),
        }
    };
}
pub(crate) use execute_on;

/// Runs a block inside a write transaction on either backend. SQLite takes the write lock up
/// front (`BEGIN IMMEDIATE`) so a read-then-write transaction cannot fail half-way.
macro_rules! transaction {
    ($db:expr, $tx:ident => $body:block) => {
        match $db {
            $crate::store::Db::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::store::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}
pub(crate) use transaction;

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("cannot lock {path} for migrations: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

impl StoreError {
    /// True when the error is a unique-constraint violation (used for "already exists" answers).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where the database lives: a PostgreSQL URL, or a SQLite file under the data directory.
pub fn describe_target(database_url: Option<&str>, data_dir: &Path) -> String {
    match database_url {
        Some(url) if is_postgres_url(url) => "postgres".to_string(),
        Some(url) => url.to_string(),
        None => format!("sqlite:{}", data_dir.join("trialflow.db").display()),
    }
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Db {
    /// Opens the database and brings its schema up to date.
    pub async fn connect(database_url: Option<&str>, data_dir: &Path) -> StoreResult<Db> {
        let options = match database_url {
            Some(url) if is_postgres_url(url) => {
                let options =
                    PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                // sqlx serialises PostgreSQL migrations itself (advisory lock).
                let db = Db::Postgres(pool);
                db.migrate().await?;
                return Ok(db);
            }
            Some(url) => {
                SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?
            }
            None => {
                std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
                    path: data_dir.display().to_string(),
                    source,
                })?;
                SqliteConnectOptions::new().filename(data_dir.join("trialflow.db"))
            }
        };
        // Opening (which switches the file to WAL) and migrating must not overlap with another
        // process doing the same, e.g. a server and a CLI command starting on a new database.
        // sqlx has no cross-process migration lock for SQLite, so a lock file serialises them.
        let file = options.get_filename().to_path_buf();
        let _guard = match file != Path::new(":memory:") {
            true => Some(lock_file(file.with_extension("db.migrate-lock")).await?),
            false => None,
        };
        let db = Db::Sqlite(open_sqlite(options).await?);
        db.migrate().await?;
        Ok(db)
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        match self {
            Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// SQLite is one node: no other process can be running work from this database.
    pub fn is_single_node(&self) -> bool {
        matches!(self, Db::Sqlite(_))
    }

    /// A round trip to the database, timed.
    ///
    /// On SQLite a read answers even while another process holds the file's write lock, so
    /// the probe asks for the write lock too (and gives it back at once), waiting at most
    /// [`WRITE_PROBE_WAIT`]: a locked database is reported, not only an unreadable one.
    pub async fn ping(&self) -> StoreResult<Duration> {
        let started = Instant::now();
        match self {
            Db::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Db::Sqlite(pool) => {
                // Every connection may be waiting for the lock itself: that is an outage too.
                let mut conn = tokio::time::timeout(WRITE_PROBE_WAIT, pool.acquire())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??;
                let wait = WRITE_PROBE_WAIT.as_millis();
                sqlx::query(&format!("PRAGMA busy_timeout = {wait}"))
                    .execute(&mut *conn)
                    .await?;
                let probe = match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
                    Ok(_) => sqlx::query("ROLLBACK")
                        .execute(&mut *conn)
                        .await
                        .map(|_| ()),
                    Err(e) => Err(e),
                };
                let restore = format!("PRAGMA busy_timeout = {}", SQLITE_BUSY_TIMEOUT.as_millis());
                sqlx::query(&restore).execute(&mut *conn).await?;
                probe?;
            }
        }
        Ok(started.elapsed())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// An exclusive advisory lock on `path`, held until the returned guard is dropped.
async fn lock_file(path: std::path::PathBuf) -> StoreResult<nix::fcntl::Flock<std::fs::File>> {
    let describe = path.display().to_string();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| std::io::Error::from(errno))
    })
    .await
    .map_err(|e| StoreError::Lock {
        path: describe.clone(),
        source: std::io::Error::other(e),
    })?
    .map_err(|source| StoreError::Lock {
        path: describe,
        source,
    })
}

async fn open_sqlite(options: SqliteConnectOptions) -> StoreResult<SqlitePool> {
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let in_memory = options.get_filename() == Path::new(":memory:");
    let pool = SqlitePoolOptions::new()
        // An in-memory database exists per connection: keep exactly one, forever.
        .max_connections(if in_memory { 1 } else { 8 })
        .idle_timeout(if in_memory {
            None
        } else {
            Some(Duration::from_secs(600))
        })
        .max_lifetime(if in_memory {
            None
        } else {
            Some(Duration::from_secs(3600))
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Milliseconds since the Unix epoch: the one time representation stored by both backends.
/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds (exports, manifests).
pub fn utc_text(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
