//! Only one scheduler at a time: on PostgreSQL the holder of a session-level advisory lock,
//! kept on a connection taken out of the pool (if the process dies, the lock goes with it).
//! SQLite is single-node: its one server always schedules.
use super::Db;
use sqlx::Connection;

const LOCK_KEY: i64 = 0x7472_6961_6c66; // "trialf"

pub struct Leadership {
    db: Db,
    conn: Option<sqlx::PgConnection>,
}

impl Leadership {
    pub fn new(db: Db) -> Self {
        Leadership { db, conn: None }
    }

    /// Whether this process schedules now; tries to take the lock when it does not.
    pub async fn hold(&mut self) -> bool {
        let Db::Postgres(pool) = &self.db else {
            return true;
        };
        if let Some(conn) = &mut self.conn {
            if conn.ping().await.is_ok() {
                return true;
            }
            tracing::warn!("lost the scheduler lock's connection; standing down");
            self.conn = None;
        }
        let Ok(conn) = pool.acquire().await else {
            return false;
        };
        let mut conn = conn.detach();
        match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await
        {
            Ok(true) => {
                tracing::info!("this process is now the scheduler");
                self.conn = Some(conn);
                true
            }
            _ => false,
        }
    }

    pub async fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LOCK_KEY)
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}
