//! Engine events: published in-process after each commit, and across processes on PostgreSQL
//! through LISTEN/NOTIFY (the events themselves are read from the `engine_events` table).
use crate::store::Db;
use crate::store::engine::EngineEvent;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::{Notify, broadcast, watch};

pub struct EventBus {
    events: broadcast::Sender<EngineEvent>,
    /// Wakes the scheduler (a stored permit survives until it waits again).
    scheduler: Notify,
    /// Bumped when work is queued; every worker sees a change since it last looked.
    work: watch::Sender<u64>,
    /// Ids published lately, so events seen both locally and via NOTIFY go out once.
    recent: Mutex<VecDeque<i64>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            events: broadcast::channel(16_384).0,
            scheduler: Notify::new(),
            work: watch::channel(0).0,
            recent: Mutex::new(VecDeque::with_capacity(4096)),
        }
    }
}

impl EventBus {
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.events.subscribe()
    }

    pub fn work_signal(&self) -> watch::Receiver<u64> {
        self.work.subscribe()
    }

    pub fn publish(&self, events: Vec<EngineEvent>) {
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        for event in events {
            if recent.contains(&event.id) {
                continue;
            }
            if recent.len() == recent.capacity() {
                recent.pop_front();
            }
            recent.push_back(event.id);
            // No subscriber is fine: nobody is watching.
            let _ = self.events.send(event);
        }
    }

    pub fn wake_scheduler(&self) {
        self.scheduler.notify_one();
    }

    pub async fn scheduler_woken(&self) {
        self.scheduler.notified().await;
    }

    pub fn wake_workers(&self) {
        self.work.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// On PostgreSQL: wakes local workers and scheduler on other processes' news, and republishes
/// their events locally (so every server can stream every run).
pub fn spawn_listener(
    db: Db,
    bus: std::sync::Arc<EventBus>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(mut news) = db.listen_to_others() else {
        return;
    };
    tokio::spawn(async move {
        let mut cursor = db.last_event_id().await.unwrap_or(0);
        loop {
            let what = tokio::select! {
                () = shutdown.cancelled() => return,
                what = news.recv() => match what {
                    Some(what) => what,
                    None => return,
                },
            };
            match what {
                crate::store::notify::News::Work => bus.wake_workers(),
                crate::store::notify::News::Done => bus.wake_scheduler(),
            }
            if let Ok(events) = db.events_since(cursor, 10_000).await {
                if let Some(last) = events.last() {
                    cursor = last.id;
                }
                bus.publish(events);
            }
        }
    });
}
