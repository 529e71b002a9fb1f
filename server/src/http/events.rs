//! Server-sent events for the console (signed-in users, see `super::plain_routes`): one stream
//! per run, one for the dashboard and one per running attempt's log.
//!
//! The `engine_events` table is the source of truth; the in-process bus only says "look now".
//! Each message carries the id of the last event it covers, so a reconnect with `Last-Event-ID`
//! resumes exactly after it. Bursts are coalesced: after a wake-up the stream waits a moment and
//! then sends one message for everything that happened, so a 10,000-instance run sends a few
//! messages a second, not 10,000.
use super::HttpState;
use super::run_watch::RunSnapshot;
use crate::store::engine::EngineEvent;
use app::model::{InstanceChange, LogLineInfo, RunUpdate, STATE_ORDER};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How long a stream gathers a burst before sending it.
pub const RUN_COALESCE: Duration = Duration::from_millis(300);
const DASHBOARD_COALESCE: Duration = Duration::from_secs(1);
/// A stream looks at the database this often even when the bus is silent.
pub(super) const FALLBACK_WAKE: Duration = Duration::from_secs(15);
const LOG_WAKE: Duration = Duration::from_millis(500);
pub(super) const BACKLOG_LIMIT: i64 = 10_000;
const CHANGED_LIMIT: usize = 200;
/// How far below its cursor a run stream looks again for events committed late.
pub(super) const LATE_COMMIT_LOOKBACK: i64 = 1_000;

#[derive(serde::Deserialize, Default)]
pub struct Resume {
    /// Where to start when there is no `Last-Event-ID` (the page's snapshot).
    after: Option<i64>,
}

#[derive(serde::Deserialize)]
pub struct LogQuery {
    attempt: i64,
    after: Option<i64>,
}

fn last_event_id(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    Sse::new(stream.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Waits until the bus reports something `wanted`, the bus lags (something happened), or the
/// fallback period passes. `false` when the bus is gone (the server is stopping).
pub(super) async fn wait_for(
    rx: &mut broadcast::Receiver<EngineEvent>,
    wanted: impl Fn(&EngineEvent) -> bool,
    fallback: Duration,
) -> bool {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(ev) if wanted(&ev) => return true,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    };
    tokio::time::timeout(fallback, wait).await.unwrap_or(true)
}

/// Empties what queued up while the stream was asleep (the database read covers it).
pub(super) fn drain(rx: &mut broadcast::Receiver<EngineEvent>) {
    while !matches!(
        rx.try_recv(),
        Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
    ) {}
}

/// `GET /events/runs/{id}`: coalesced [`RunUpdate`]s.
pub async fn run_events(
    State(state): State<HttpState>,
    Path(run_id): Path<i64>,
    Query(resume): Query<Resume>,
    headers: HeaderMap,
) -> Response {
    match state.db.run_row(run_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::NOT_FOUND, "No such run.").into_response(),
        Err(e) => {
            tracing::error!(error = %e, run_id, "run lookup failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "Run lookup failed.").into_response();
        }
    }
    let cursor = match last_event_id(&headers).or(resume.after) {
        Some(id) => id,
        None => state.db.last_event_id().await.unwrap_or(0),
    };
    // One producer per run reads and serialises each change once (run_watch.rs); this
    // stream forwards its updates, or catches up on its own where it is not at their start.
    let snapshots = state.watches.watch(&state, run_id, cursor);
    let stream = stream::unfold(
        RunStream {
            state,
            snapshots,
            cursor,
            caught_up: BTreeSet::new(),
        },
        move |mut s| async move {
            let event = s.next(run_id).await?;
            Some((event, s))
        },
    );
    sse(stream)
}

/// One client's position in a run's updates.
struct RunStream {
    state: HttpState,
    snapshots: watch::Receiver<Arc<RunSnapshot>>,
    cursor: i64,
    /// Ids this stream sent while catching up on its own. On PostgreSQL an event committed
    /// late can reach the shared producer after the catch-up already read it: it must not
    /// go out twice.
    caught_up: BTreeSet<i64>,
}

impl RunStream {
    async fn next(&mut self, run_id: i64) -> Option<Event> {
        loop {
            let snapshot = self.snapshots.borrow_and_update().clone();
            if snapshot.cursor > self.cursor {
                if let Some(json) = snapshot
                    .json
                    .as_ref()
                    .filter(|_| snapshot.from <= self.cursor)
                {
                    self.cursor = snapshot.cursor;
                    match self.shared(run_id, &snapshot, json).await {
                        Some(event) => return Some(event),
                        None => continue,
                    }
                }
                match catch_up(&self.state, run_id, self.cursor, snapshot.cursor).await {
                    Ok(Some((to, events, json))) => {
                        self.cursor = to;
                        self.caught_up.extend(events);
                        return Some(update_event(self.cursor, &json));
                    }
                    // Nothing of this run before the shared update: take that one.
                    Ok(None) => self.cursor = self.cursor.max(snapshot.from),
                    Err(e) => {
                        tracing::warn!(error = %e, run_id, "catching up on run events failed");
                        tokio::time::sleep(RUN_COALESCE).await;
                        continue;
                    }
                }
            }
            self.snapshots.changed().await.ok()?;
        }
    }

    /// The shared update as this stream sends it (its cursor already moved past it): as
    /// serialised, or rebuilt without what its own catch-up sent; `None` if nothing is left.
    async fn shared(&mut self, run_id: i64, snapshot: &RunSnapshot, json: &str) -> Option<Event> {
        self.caught_up = self
            .caught_up
            .split_off(&(self.cursor - LATE_COMMIT_LOOKBACK));
        let sent_before = |e: &EngineEvent| self.caught_up.contains(&e.id);
        if self.caught_up.is_empty() || !snapshot.events.iter().any(sent_before) {
            return Some(update_event(self.cursor, json));
        }
        let events: Vec<EngineEvent> = snapshot
            .events
            .iter()
            .filter(|e| !sent_before(e))
            .cloned()
            .collect();
        if events.is_empty() {
            return None;
        }
        match build_update(&self.state, run_id, &events).await {
            Ok(update) => Some(update_event(
                self.cursor,
                &serde_json::to_string(&update).unwrap_or_default(),
            )),
            Err(e) => {
                tracing::warn!(error = %e, run_id, "building a run update failed");
                None
            }
        }
    }
}

fn update_event(cursor: i64, json: &str) -> Event {
    Event::default()
        .id(cursor.to_string())
        .event("update")
        .data(json)
}

/// The update for one stream's events after `after` up to `until` (a backlog at a time): where
/// it ends, the ids it covers and the serialised update.
async fn catch_up(
    state: &HttpState,
    run_id: i64,
    after: i64,
    until: i64,
) -> Result<Option<(i64, Vec<i64>, String)>, crate::store::StoreError> {
    let events: Vec<EngineEvent> = state
        .db
        .run_events_since(run_id, after, BACKLOG_LIMIT)
        .await?
        .into_iter()
        .filter(|e| e.id <= until)
        .collect();
    let Some(last) = events.last().map(|e| e.id) else {
        return Ok(None);
    };
    let to = if events.len() as i64 == BACKLOG_LIMIT {
        last
    } else {
        until
    };
    let update = build_update(state, run_id, &events).await?;
    Ok(Some((
        to,
        events.iter().map(|e| e.id).collect(),
        serde_json::to_string(&update).unwrap_or_default(),
    )))
}

pub(super) async fn build_update(
    state: &HttpState,
    run_id: i64,
    events: &[EngineEvent],
) -> Result<RunUpdate, crate::store::StoreError> {
    let run_state = state
        .db
        .run_row(run_id)
        .await?
        .map(|r| r.state)
        .unwrap_or_default();
    let mut by_task: BTreeMap<String, HashMap<String, i64>> = BTreeMap::new();
    for (task, st, n) in state.db.task_state_counts(run_id).await? {
        if st != "removed" {
            by_task.entry(task).or_default().insert(st, n);
        }
    }
    let tasks = by_task
        .into_iter()
        .map(|(task, counts)| {
            let ordered = STATE_ORDER
                .iter()
                .filter_map(|s| counts.get(*s).map(|n| (s.to_string(), *n)))
                .collect();
            (task, ordered)
        })
        .collect();
    // The last change of each instance, newest last.
    let mut changed: Vec<InstanceChange> = Vec::new();
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for ev in events.iter().filter(|e| e.kind == "ti") {
        let p = &ev.payload;
        let Some(ti_id) = p["ti_id"].as_i64() else {
            continue;
        };
        let change = InstanceChange {
            ti_id,
            task_id: p["task_id"].as_str().unwrap_or_default().to_string(),
            map_key: p["map_key"].as_str().map(str::to_string),
            state: p["state"].as_str().unwrap_or_default().to_string(),
            try_number: p["try_number"].as_i64().unwrap_or_default(),
        };
        match seen.get(&ti_id) {
            Some(&i) => changed[i] = change,
            None => {
                seen.insert(ti_id, changed.len());
                changed.push(change);
            }
        }
    }
    let changed_truncated = changed.len() > CHANGED_LIMIT;
    if changed_truncated {
        changed.drain(..changed.len() - CHANGED_LIMIT);
    }
    Ok(RunUpdate {
        run_id,
        run_state,
        tasks,
        changed,
        changed_truncated,
        events: events.len(),
        last_event_id: events.iter().map(|e| e.id).max().unwrap_or(0),
    })
}

/// `GET /events/dashboard`: "something changed" at most once a second, with the last event id.
pub async fn dashboard_events(
    State(state): State<HttpState>,
    Query(resume): Query<Resume>,
    headers: HeaderMap,
) -> Response {
    let rx = state.engine.subscribe();
    let cursor = match last_event_id(&headers).or(resume.after) {
        Some(id) => id,
        None => state.db.last_event_id().await.unwrap_or(0),
    };
    let stream = stream::unfold(
        (state, rx, cursor, true),
        |(state, mut rx, cursor, look_now)| async move {
            let mut look_now = look_now;
            loop {
                if !look_now {
                    if !wait_for(&mut rx, |_| true, FALLBACK_WAKE).await {
                        return None;
                    }
                    tokio::time::sleep(DASHBOARD_COALESCE).await;
                    drain(&mut rx);
                }
                look_now = false;
                let Ok(last) = state.db.last_event_id().await else {
                    continue;
                };
                if last <= cursor {
                    continue;
                }
                let event = Event::default()
                    .id(last.to_string())
                    .event("update")
                    .data(format!("{{\"last_event_id\":{last}}}"));
                return Some((event, (state, rx, last, false)));
            }
        },
    );
    sse(stream)
}

/// `GET /events/instances/{ti}/log?attempt=<id>&after=<line id>`: an attempt's log lines as they
/// are written (secrets scrubbed), then `end` once the attempt is over and its log is sent.
pub async fn log_events(
    State(state): State<HttpState>,
    Path(ti_id): Path<i64>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(attempts) = state.db.attempts(ti_id).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "Attempt lookup failed.").into_response();
    };
    if !attempts.iter().any(|a| a.id == q.attempt) {
        return (StatusCode::NOT_FOUND, "No such attempt of this instance.").into_response();
    }
    let run_id = state
        .db
        .instance(ti_id)
        .await
        .ok()
        .flatten()
        .map(|t| t.run_id);
    let rx = state.engine.subscribe();
    let cursor = last_event_id(&headers).or(q.after).unwrap_or(0);
    let attempt = q.attempt;
    let stream = stream::unfold(Some((state, rx, cursor)), move |st| async move {
        let (state, mut rx, mut cursor) = st?;
        loop {
            // Whether it had ended before the read: then an empty read means nothing is left.
            let ended = state
                .db
                .attempts(ti_id)
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|a| a.id == attempt))
                .is_none_or(|a| a.ended_at.is_some());
            let lines = state
                .db
                .task_log(attempt, cursor, 500)
                .await
                .unwrap_or_default();
            if !lines.is_empty() {
                let shown = crate::backend::shown::Shown::for_engine(&state.engine);
                cursor = lines.last().map(|l| l.id).unwrap_or(cursor);
                let events: Vec<Event> = lines
                    .into_iter()
                    .map(|l| {
                        let info = LogLineInfo {
                            id: l.id,
                            at: l.at,
                            stream: l.stream,
                            line: shown.text(&l.line),
                        };
                        Event::default()
                            .id(l.id.to_string())
                            .event("log")
                            .json_data(&info)
                            .unwrap_or_default()
                    })
                    .collect();
                return Some((events, Some((state, rx, cursor))));
            }
            if ended {
                let end = Event::default().event("end").data("{}");
                return Some((vec![end], None));
            }
            wait_for(&mut rx, |ev| ev.run_id == run_id, LOG_WAKE).await;
        }
    })
    .flat_map(stream::iter);
    sse(stream)
}
