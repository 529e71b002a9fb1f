//! One producer per watched run, shared by every client following it.
//!
//! Reading a run's new events, counting its instances per state and serialising the update is
//! the expensive part of a live run page. Done per client, 100 watchers meant 100 times the
//! queries on the engine's database and slowed the run tenfold; here it is done once per change
//! and the same serialised update goes to every stream. A client whose cursor is not where the
//! shared update starts (it joined later, reconnected with an older `Last-Event-ID`, or fell
//! behind and missed an update) gets a catch-up built for it alone, so none misses an event.
use super::HttpState;
use super::events::{
    BACKLOG_LIMIT, FALLBACK_WAKE, LATE_COMMIT_LOOKBACK, RUN_COALESCE, build_update, drain, wait_for,
};
use crate::store::engine::EngineEvent;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// An update covering the run's events after `from` up to `cursor`.
#[derive(Debug)]
pub struct RunSnapshot {
    pub from: i64,
    pub cursor: i64,
    /// The serialised `RunUpdate`; `None` before the first one.
    pub json: Option<Arc<str>>,
    /// The events it covers, for a stream that already sent some of them while catching up.
    pub events: Vec<EngineEvent>,
}

type Channel = Arc<watch::Sender<Arc<RunSnapshot>>>;

/// The runs being watched, each with its producer's channel.
#[derive(Clone, Default)]
pub struct RunWatches(Arc<Mutex<HashMap<i64, Channel>>>);

impl RunWatches {
    /// Follows `run_id`: joins its producer, or starts one reading after `start`.
    pub fn watch(
        &self,
        state: &HttpState,
        run_id: i64,
        start: i64,
    ) -> watch::Receiver<Arc<RunSnapshot>> {
        let Ok(mut runs) = self.0.lock() else {
            // A poisoned lock: serve this client on its own rather than not at all.
            return self.start_producer(state, run_id, start, None);
        };
        if let Some(channel) = runs.get(&run_id) {
            return channel.subscribe();
        }
        self.start_producer(state, run_id, start, Some(&mut runs))
    }

    fn start_producer(
        &self,
        state: &HttpState,
        run_id: i64,
        start: i64,
        runs: Option<&mut HashMap<i64, Channel>>,
    ) -> watch::Receiver<Arc<RunSnapshot>> {
        let first = Arc::new(RunSnapshot {
            from: start,
            cursor: start,
            json: None,
            events: Vec::new(),
        });
        let (tx, rx) = watch::channel(first);
        let channel: Channel = Arc::new(tx);
        if let Some(runs) = runs {
            runs.insert(run_id, channel.clone());
        }
        tokio::spawn(produce(state.clone(), self.clone(), run_id, start, channel));
        rx
    }

    /// Ends the producer's entry if nobody listens; decided under the lock that `watch` takes,
    /// so a client joining at that moment is never left with a producer that stopped.
    fn leave_if_unwatched(&self, run_id: i64, channel: &Channel) -> bool {
        let Ok(mut runs) = self.0.lock() else {
            return channel.receiver_count() == 0;
        };
        if channel.receiver_count() > 0 {
            return false;
        }
        if runs.get(&run_id).is_some_and(|c| Arc::ptr_eq(c, channel)) {
            runs.remove(&run_id);
        }
        true
    }
}

async fn produce(state: HttpState, watches: RunWatches, run_id: i64, start: i64, channel: Channel) {
    let mut rx = state.engine.subscribe();
    let (mut cursor, mut look_now, mut sent) = (start, true, BTreeSet::new());
    loop {
        if !look_now {
            tokio::select! {
                () = channel.closed() => {
                    if watches.leave_if_unwatched(run_id, &channel) {
                        return;
                    }
                    continue;
                }
                woke = wait_for(&mut rx, |ev| ev.run_id == Some(run_id), FALLBACK_WAKE) => {
                    if !woke {
                        return;
                    }
                }
            }
            tokio::time::sleep(RUN_COALESCE).await;
            drain(&mut rx);
        }
        // On PostgreSQL ids are handed out before commit, so an event can appear after a
        // higher id was read: look back a little and skip what was already sent.
        let from = start.max(cursor - LATE_COMMIT_LOOKBACK);
        let events = match state.db.run_events_since(run_id, from, BACKLOG_LIMIT).await {
            Ok(events) => {
                // A full backlog means more is waiting: publish this, then read on at once.
                look_now = events.len() as i64 == BACKLOG_LIMIT;
                events
                    .into_iter()
                    .filter(|e| !sent.contains(&e.id))
                    .collect::<Vec<_>>()
            }
            Err(e) => {
                tracing::warn!(error = %e, run_id, "reading run events failed");
                look_now = false;
                continue;
            }
        };
        if events.is_empty() {
            continue;
        }
        let previous = cursor;
        cursor = cursor.max(events.iter().map(|e| e.id).max().unwrap_or(cursor));
        sent.extend(events.iter().map(|e| e.id));
        // Only ids inside the look-back window can come round again.
        sent = sent.split_off(&(cursor - LATE_COMMIT_LOOKBACK));
        let json = match build_update(&state, run_id, &events)
            .await
            .map(|u| serde_json::to_string(&u))
        {
            Ok(Ok(json)) => json,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, run_id, "serialising a run update failed");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, run_id, "building a run update failed");
                continue;
            }
        };
        channel.send_replace(Arc::new(RunSnapshot {
            from: previous,
            cursor,
            json: Some(json.into()),
            events,
        }));
    }
}
