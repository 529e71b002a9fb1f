//! News between processes sharing a PostgreSQL database (LISTEN/NOTIFY): "work was queued" and
//! "an attempt ended or a run changed". The news only says "look now"; what happened is read
//! from `engine_events`. SQLite is one process, which has nobody to tell.
use super::Db;

const CHANNEL: &str = "trialflow_engine";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum News {
    /// Instances were queued: workers should look.
    Work,
    /// An attempt ended or a run changed: the scheduler should look.
    Done,
}

impl News {
    fn payload(self) -> &'static str {
        match self {
            News::Work => "work",
            News::Done => "done",
        }
    }
}

impl Db {
    /// Tells the other processes; on failure they notice on their next poll.
    pub async fn notify_others(&self, news: News) {
        if let Db::Postgres(pool) = self
            && let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(news.payload())
                .execute(pool)
                .await
        {
            tracing::warn!(error = %e, "NOTIFY failed; other processes will notice on their next poll");
        }
    }

    /// Other processes' news, reconnecting whenever the listening connection drops; `None` on
    /// SQLite. Listening stops when the receiver is dropped.
    pub fn listen_to_others(&self) -> Option<tokio::sync::mpsc::Receiver<News>> {
        let Db::Postgres(pool) = self.clone() else {
            return None;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                    continue;
                }
                loop {
                    tokio::select! {
                        () = tx.closed() => return,
                        msg = listener.recv() => match msg {
                            Ok(n) => {
                                let news = if n.payload() == "work" { News::Work } else { News::Done };
                                if tx.send(news).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
        });
        Some(rx)
    }
}
