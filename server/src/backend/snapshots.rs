//! Run pages served from a shared snapshot instead of a fresh set of queries per load.
//!
//! A run page's data (counts per task and state, timeline, files, alerts, a page of instances)
//! costs several scans of the run's instances. A hundred people reloading the page of a busy
//! run would run those scans a hundred times a second, on the same database the engine writes
//! to. Instead each run keeps one snapshot, rebuilt by one caller at a time (the others wait
//! for it) when it is out of date:
//!
//! - it is current while the run's page version (its newest event and its alert attempts)
//!   has not moved, which one index lookup tells;
//! - while the run is still going it also stays good for [`LIVE_SNAPSHOT_AGE`] after it was
//!   taken: the page's live stream resumes from the snapshot's `last_event_id`, so whatever
//!   happened since arrives within moments, exactly as the stream coalesces changes anyway —
//!   unless the caller says it was already told of a newer event (`covering`: a live update
//!   makes the page refetch, and the answer must include what the update announced).
use app::model::{InstancePage, InstanceQuery, RunDetail};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How stale a running run's snapshot may be (the live stream's own coalescing window).
pub const LIVE_SNAPSHOT_AGE: Duration = crate::http::events::RUN_COALESCE;
/// Snapshots not read for this long are dropped.
const IDLE: Duration = Duration::from_secs(60);
/// Instance pages kept per snapshot (filters and sort orders people are looking at).
const PAGES_KEPT: usize = 32;

/// A run's page version: see [`crate::store::Db::run_page_version`].
pub type Version = (i64, i64);

struct Snapshot {
    version: Version,
    taken: Instant,
    running: bool,
    detail: Arc<RunDetail>,
    pages: HashMap<String, Arc<InstancePage>>,
}

impl Snapshot {
    /// Good without asking the database: a running run's young snapshot that covers what the
    /// caller was told of (`covering`).
    fn live(&self, covering: Option<i64>) -> bool {
        self.running
            && self.taken.elapsed() < LIVE_SNAPSHOT_AGE
            && covering.is_none_or(|c| self.detail.last_event_id >= c)
    }
}

/// Whether the slot's snapshot serves this caller, asking for the run's version only when
/// the snapshot is not [`Snapshot::live`].
async fn current<V, VFut, E>(
    snapshot: &Option<Snapshot>,
    covering: Option<i64>,
    version: &mut Option<Version>,
    read_version: &V,
) -> Result<bool, E>
where
    V: Fn() -> VFut,
    VFut: std::future::Future<Output = Result<Version, E>>,
{
    let Some(s) = snapshot else {
        return Ok(false);
    };
    if s.live(covering) {
        return Ok(true);
    }
    let v = read_version().await?;
    *version = Some(v);
    Ok(s.version == v)
}

#[derive(Default)]
struct Slot {
    snapshot: tokio::sync::Mutex<Option<Snapshot>>,
    last_read: Mutex<Option<Instant>>,
}

/// Every run's snapshot, built on demand.
#[derive(Default)]
pub struct RunSnapshots {
    slots: Mutex<HashMap<i64, Arc<Slot>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn page_key(query: &InstanceQuery) -> String {
    serde_json::to_string(query).unwrap_or_default()
}

impl RunSnapshots {
    fn slot(&self, run_id: i64) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        if slots.len() > 256 {
            slots.retain(|_, slot| {
                lock(&slot.last_read).is_some_and(|t| t.elapsed() < IDLE)
                    || Arc::strong_count(slot) > 1
            });
        }
        let slot = slots.entry(run_id).or_default().clone();
        *lock(&slot.last_read) = Some(Instant::now());
        slot
    }

    /// Drops the run's snapshot (an action of this process changed the run).
    pub fn forget(&self, run_id: i64) {
        lock(&self.slots).remove(&run_id);
    }

    /// The run's detail: the snapshot's if current, else from `build` (one caller builds,
    /// concurrent ones wait for its result).
    pub async fn detail<V, VFut, F, Fut, E>(
        &self,
        run_id: i64,
        covering: Option<i64>,
        read_version: V,
        build: F,
    ) -> Result<Arc<RunDetail>, E>
    where
        V: Fn() -> VFut,
        VFut: std::future::Future<Output = Result<Version, E>>,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<RunDetail, E>>,
    {
        let slot = self.slot(run_id);
        let mut snapshot = slot.snapshot.lock().await;
        let mut version = None;
        if current(&snapshot, covering, &mut version, &read_version).await?
            && let Some(s) = snapshot.as_ref()
        {
            return Ok(s.detail.clone());
        }
        // Read before building: a change during the build makes the next caller rebuild.
        let version = match version {
            Some(v) => v,
            None => read_version().await?,
        };
        let detail = Arc::new(build().await?);
        let running = detail
            .state
            .parse::<app::state::RunState>()
            .map_or(true, |s| !s.is_terminal());
        *snapshot = Some(Snapshot {
            version,
            taken: Instant::now(),
            running,
            detail: detail.clone(),
            pages: HashMap::new(),
        });
        Ok(detail)
    }

    /// A page of the run's instances: kept with the snapshot while it is current, else built
    /// afresh (and not kept: only a rebuilt detail starts a new snapshot).
    pub async fn page<V, VFut, F, Fut, E>(
        &self,
        run_id: i64,
        covering: Option<i64>,
        query: &InstanceQuery,
        read_version: V,
        build: F,
    ) -> Result<Arc<InstancePage>, E>
    where
        V: Fn() -> VFut,
        VFut: std::future::Future<Output = Result<Version, E>>,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<InstancePage, E>>,
    {
        let slot = self.slot(run_id);
        let mut snapshot = slot.snapshot.lock().await;
        let key = page_key(query);
        let is_current = current(&snapshot, covering, &mut None, &read_version).await?;
        match snapshot.as_mut().filter(|_| is_current) {
            Some(s) => {
                if let Some(page) = s.pages.get(&key) {
                    return Ok(page.clone());
                }
                let page = Arc::new(build().await?);
                if s.pages.len() >= PAGES_KEPT {
                    s.pages.clear();
                }
                s.pages.insert(key, page.clone());
                Ok(page)
            }
            None => {
                drop(snapshot);
                Ok(Arc::new(build().await?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn detail(state: &str, last_event_id: i64) -> RunDetail {
        RunDetail {
            timeline: Default::default(),
            children: Vec::new(),
            alerts: Vec::new(),
            id: 1,
            pipeline_id: "p".into(),
            state: state.into(),
            conf: "{}".into(),
            run_trigger: "manual".into(),
            triggered_by: "test".into(),
            queued_at: 0,
            started_at: None,
            ended_at: None,
            tasks: Vec::new(),
            instance_count: 0,
            artifacts: Vec::new(),
            artifact_count: 0,
            last_event_id,
        }
    }

    #[tokio::test]
    async fn a_snapshot_is_shared_until_the_run_changes() {
        let snapshots = RunSnapshots::default();
        let builds = AtomicUsize::new(0);
        let build = |state: &'static str, id| {
            builds.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ()>(detail(state, id)) }
        };
        // A finished run: the same version is served from the snapshot, a new one rebuilds.
        let a = snapshots
            .detail(1, None, || async { Ok((5, 0)) }, || build("success", 5))
            .await
            .unwrap();
        let b = snapshots
            .detail(1, None, || async { Ok((5, 0)) }, || build("success", 5))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = snapshots
            .detail(1, None, || async { Ok((6, 0)) }, || build("success", 6))
            .await
            .unwrap();
        assert_eq!(c.last_event_id, 6);
        let d = snapshots
            .detail(1, None, || async { Ok((6, 1)) }, || build("success", 6))
            .await
            .unwrap();
        assert!(
            !Arc::ptr_eq(&c, &d),
            "an alert attempt makes the snapshot stale"
        );
        assert_eq!(builds.load(Ordering::SeqCst), 3);

        // A running run: newer events within the live window still get the snapshot (its
        // stream catches up from last_event_id); after the window they rebuild.
        let e = snapshots
            .detail(2, None, || async { Ok((10, 0)) }, || build("running", 10))
            .await
            .unwrap();
        let f = snapshots
            .detail(2, None, || async { Ok((11, 0)) }, || build("running", 11))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&e, &f));
        // ...unless the caller was told of a newer event (a live update): then it rebuilds.
        let told = snapshots
            .detail(
                2,
                Some(11),
                || async { Ok((11, 0)) },
                || build("running", 11),
            )
            .await
            .unwrap();
        assert_eq!(told.last_event_id, 11);
        tokio::time::sleep(LIVE_SNAPSHOT_AGE + Duration::from_millis(20)).await;
        let g = snapshots
            .detail(2, None, || async { Ok((12, 0)) }, || build("running", 12))
            .await
            .unwrap();
        assert_eq!(g.last_event_id, 12);
        assert_eq!(builds.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn pages_live_and_die_with_their_snapshot() {
        let snapshots = RunSnapshots::default();
        let builds = AtomicUsize::new(0);
        let page = |total| {
            builds.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, ()>(InstancePage {
                    rows: Vec::new(),
                    total,
                    page: 1,
                    page_size: 50,
                })
            }
        };
        let q = InstanceQuery::default();
        // No snapshot yet: built, not kept.
        snapshots
            .page(1, None, &q, || async { Ok((1, 0)) }, || page(1))
            .await
            .unwrap();
        snapshots
            .page(1, None, &q, || async { Ok((1, 0)) }, || page(1))
            .await
            .unwrap();
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        snapshots
            .detail(
                1,
                None,
                || async { Ok((1, 0)) },
                || async { Ok::<_, ()>(detail("success", 1)) },
            )
            .await
            .unwrap();
        snapshots
            .page(1, None, &q, || async { Ok((1, 0)) }, || page(1))
            .await
            .unwrap();
        let kept = snapshots
            .page(1, None, &q, || async { Ok((1, 0)) }, || page(9))
            .await
            .unwrap();
        assert_eq!((kept.total, builds.load(Ordering::SeqCst)), (1, 3));
        let newer = snapshots
            .page(1, None, &q, || async { Ok((2, 0)) }, || page(2))
            .await
            .unwrap();
        assert_eq!(newer.total, 2);
    }
}
