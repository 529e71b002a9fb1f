//! Killing processes mid-run loses nothing: real `trialflow` processes, SIGKILL, restart.
//! Attempts that were cut off are retried and counted; no instance completes twice.
//! (Other processes cannot be awaited through events, so these tests poll the database.)
use crate::helpers::{Backend, fresh_database};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trialflow::store::Db;

const PIPELINE: &str = "id: crash\nmax_active_tasks: 4\ntasks:\n  work:\n    operator: sleep\n    retries: 2\n    retry_delay: 100ms\n    expand_kwargs: [{seconds: 1.5}, {seconds: 1.5}, {seconds: 1.5}, {seconds: 1.5}, {seconds: 0.2}, {seconds: 0.2}]\n  after: { operator: noop, upstream: [work] }\n";

/// The binary `cargo leptos build` (or `cargo build`) produced next to this test binary.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("TRIALFLOW_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("trialflow");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p trialflow)",
        bin.display()
    );
    bin
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn sigkill(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        let _ = self.0.wait();
    }
}

struct Setup {
    dir: tempfile::TempDir,
    url: Option<String>,
}

impl Setup {
    fn spawn(&self, args: &[&str]) -> Proc {
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .env("TRIALFLOW_DATA_DIR", self.dir.path())
            .env("TRIALFLOW_PIPELINES_DIR", self.dir.path().join("pipelines"))
            .env("TRIALFLOW_ADMIN_PASSWORD", "crash-test-password")
            .env("TRIALFLOW_LEASE_SECONDS", "2")
            .env("TRIALFLOW_HEARTBEAT_SECONDS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.url {
            Some(url) => cmd.env("DATABASE_URL", url),
            None => cmd.env_remove("DATABASE_URL"),
        };
        Proc(cmd.spawn().expect("spawn trialflow"))
    }

    fn serve(&self, workers: &str) -> Proc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        self.spawn(&[
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--workers",
            workers,
        ])
    }

    async fn db(&self) -> Db {
        Db::connect(self.url.as_deref(), self.dir.path())
            .await
            .expect("db")
    }
}

async fn setup(backend: Backend) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(dir.path().join("pipelines/crash.yaml"), PIPELINE).unwrap();
    Setup {
        url: fresh_database(backend).await,
        dir,
    }
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn running(db: &Db, run: i64) -> usize {
    db.run_instances(run)
        .await
        .unwrap()
        .iter()
        .filter(|t| t.state == "running")
        .count()
}

/// Every instance succeeded once; cut-off attempts were retried and are on record.
async fn assert_recovered(db: &Db, run: i64) {
    let run_row = db.run_row(run).await.unwrap().unwrap();
    assert_eq!(run_row.state, "success");
    let mut cut_off = 0;
    for ti in db.run_instances(run).await.unwrap() {
        assert_eq!(ti.state, "success", "{} [{}]", ti.task_id, ti.map_index);
        let attempts = db.attempts(ti.id).await.unwrap();
        assert_eq!(
            attempts.iter().filter(|a| a.state == "success").count(),
            1,
            "{} [{}] completed once",
            ti.task_id,
            ti.map_index
        );
        assert_eq!(
            ti.try_number as usize,
            attempts.len(),
            "every attempt counts as a try"
        );
        cut_off += attempts.iter().filter(|a| a.state == "failed").count();
    }
    assert!(cut_off >= 1, "the killed attempts were retried");
}

async fn trigger(s: &Setup) -> i64 {
    let out = Command::new(binary())
        .args(["trigger", "crash"])
        .env("TRIALFLOW_DATA_DIR", s.dir.path())
        .env("TRIALFLOW_PIPELINES_DIR", s.dir.path().join("pipelines"))
        .envs(s.url.iter().map(|u| ("DATABASE_URL", u.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("run id in {text:?}"))
}

#[tokio::test]
async fn sigkill_of_the_server_mid_run_loses_nothing_on_sqlite() {
    let s = setup(Backend::Sqlite).await;
    let mut server = s.serve("4");
    let db = s.db().await;
    wait_until("the pipeline to load", Duration::from_secs(30), || async {
        db.pipeline_row("crash").await.unwrap().is_some()
    })
    .await;
    let run = trigger(&s).await;
    wait_until("tasks to run", Duration::from_secs(30), || async {
        running(&db, run).await >= 2
    })
    .await;
    server.sigkill();

    let _server = s.serve("4");
    wait_until(
        "the run to finish after restart",
        Duration::from_secs(60),
        || async {
            db.run_row(run)
                .await
                .unwrap()
                .is_some_and(|r| r.state != "running" && r.state != "queued")
        },
    )
    .await;
    assert_recovered(&db, run).await;
}

#[tokio::test]
async fn sigkill_of_a_worker_mid_run_loses_nothing_on_postgres() {
    let s = setup(Backend::Postgres).await;
    let mut leader = s.serve("0");
    let db = s.db().await;
    wait_until("the pipeline to load", Duration::from_secs(30), || async {
        db.pipeline_row("crash").await.unwrap().is_some()
    })
    .await;
    let mut doomed = s.spawn(&["worker", "--workers", "4"]);
    let run = trigger(&s).await;
    wait_until(
        "the doomed worker to run tasks",
        Duration::from_secs(30),
        || async { running(&db, run).await >= 2 },
    )
    .await;
    doomed.sigkill();
    // A second worker takes over once the killed one's leases lapse (2 s here).
    let _survivor = s.spawn(&["worker", "--workers", "4"]);
    wait_until("the run to finish", Duration::from_secs(60), || async {
        db.run_row(run)
            .await
            .unwrap()
            .is_some_and(|r| r.state != "running" && r.state != "queued")
    })
    .await;
    assert_recovered(&db, run).await;

    // Kill the leading scheduler mid-run: a standby server takes the lock and finishes the run.
    let _standby = s.serve("0");
    let run2 = trigger(&s).await;
    wait_until(
        "tasks of the second run",
        Duration::from_secs(30),
        || async { running(&db, run2).await >= 1 },
    )
    .await;
    leader.sigkill();
    wait_until(
        "the second run to finish",
        Duration::from_secs(60),
        || async {
            db.run_row(run2)
                .await
                .unwrap()
                .is_some_and(|r| r.state != "running" && r.state != "queued")
        },
    )
    .await;
    assert_eq!(db.run_row(run2).await.unwrap().unwrap().state, "success");
}
