//! Proofs under faults, with real processes; each prints one JSON object per backend.
//!
//! `kill`: runs 500-instance mapped pipelines on `trialflow serve` (and, on PostgreSQL, three
//! `trialflow worker` processes beside it), SIGKILLs a random one of them at random moments and
//! restarts it, then checks every run: the right final state, no instance lost, none with two
//! successful attempts, every cut-off attempt on record as a failed try with its reason, and
//! each reclaim within lease + heartbeat (+ the scheduler's idle poll).
//!
//! `db`: during such a run the database fails under the engine: on SQLite another process holds
//! the file's write lock for a while; on PostgreSQL every connection of the database is cut,
//! three times (and, with `--restart-postgres`, the server is restarted). `/healthz` must report
//! the outage (503), the server's log must say what failed, and the run must carry on by itself
//! to its correct end with nothing lost or done twice.
//!
//! `cargo run -p tests --example proof -- kill|db [--backend sqlite|postgres|both] [--kills 10]
//!  [--instances 500] [--work-ms 300] [--restart-postgres]` (scripts/proof.sh runs it).
use rand::Rng;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trialflow::store::{Db, now_ms};

const LEASE_SECONDS: i64 = 4;
const HEARTBEAT_SECONDS: i64 = 1;
/// The scheduler looks at leases at least this often.
const IDLE_POLL_MS: i64 = 1_000;
/// Worker processes beside the server on PostgreSQL.
const WORKERS: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Proof {
    Kill,
    Db,
}

/// How long the SQLite proof holds the write lock.
const LOCK_SECONDS: f64 = 6.0;

struct Options {
    proof: Proof,
    restart_postgres: bool,
    backends: Vec<&'static str>,
    kills: usize,
    instances: usize,
    work_ms: u64,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let proof = match args.next().as_deref() {
        Some("kill") => Proof::Kill,
        Some("db") => Proof::Db,
        other => return Err(format!("unknown proof {other:?}; known: kill, db")),
    };
    let mut o = Options {
        proof,
        restart_postgres: false,
        backends: vec!["sqlite", "postgres"],
        kills: 10,
        instances: 500,
        work_ms: 300,
    };
    while let Some(flag) = args.next() {
        if flag == "--restart-postgres" {
            o.restart_postgres = true;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: `{value}` is not a number"))
        };
        match flag.as_str() {
            "--backend" => {
                o.backends = match value.as_str() {
                    "sqlite" => vec!["sqlite"],
                    "postgres" => vec!["postgres"],
                    "both" => vec!["sqlite", "postgres"],
                    _ => {
                        return Err(format!(
                            "--backend: `{value}` is not sqlite, postgres or both"
                        ));
                    }
                }
            }
            "--kills" => o.kills = number()?,
            "--instances" => o.instances = number()?,
            "--work-ms" => o.work_ms = number()? as u64,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(o)
}

fn binary() -> PathBuf {
    std::env::var_os("TRIALFLOW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/trialflow")
        })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Role {
    Serve,
    Worker,
}

struct Proc {
    role: Role,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    /// The server's port, the same across restarts.
    port: u16,
    dir: tempfile::TempDir,
    url: Option<String>,
    procs: Vec<Proc>,
}

impl Cluster {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .env("TRIALFLOW_DATA_DIR", self.dir.path())
            .env("TRIALFLOW_PIPELINES_DIR", self.dir.path().join("pipelines"))
            .env("TRIALFLOW_ADMIN_PASSWORD", "proof-kill-password")
            .env("TRIALFLOW_LEASE_SECONDS", LEASE_SECONDS.to_string())
            .env("TRIALFLOW_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS.to_string())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.url {
            Some(url) => cmd.env("DATABASE_URL", url),
            None => cmd.env_remove("DATABASE_URL"),
        };
        cmd
    }

    fn start(&mut self, role: Role) {
        let mut cmd = match role {
            Role::Serve => {
                let addr = format!("127.0.0.1:{}", self.port);
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("serve.log"))
                    .expect("server log");
                let mut cmd = self.command(&["serve", "--addr", &addr, "--workers", "16"]);
                cmd.env("RUST_LOG", "warn").stderr(Stdio::from(log));
                cmd
            }
            Role::Worker => self.command(&["worker", "--workers", "16"]),
        };
        let child = cmd.spawn().expect("spawn trialflow");
        self.procs.push(Proc { role, child });
    }

    async fn db(&self) -> Db {
        Db::connect(self.url.as_deref(), self.dir.path())
            .await
            .expect("open the database")
    }

    /// Triggers through the CLI, as an operator would; retried while the server registers the
    /// pipeline on its first start.
    async fn trigger(&self, instances: usize) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let conf = json!({ "n": instances }).to_string();
            let out = self
                .command(&["trigger", "proof_kill", "--conf", &conf])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .expect("run trialflow trigger");
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(id) = out
                .status
                .success()
                .then(|| text.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
                .flatten()
            {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "trigger failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn pipeline(work_ms: u64) -> String {
    format!(
        "id: proof_kill
max_active_tasks: 64
params:
  n: {{ type: integer, default: 500 }}
tasks:
  items:
    operator: echo
    args: {{ value: \"{{{{ range(params.n) | list }}}}\" }}
  work:
    operator: sleep
    retries: 20
    retry_delay: 100ms
    partial: {{ seconds: {} }}
    expand: {{ label: \"{{{{ tasks.items.output }}}}\" }}
    map_key: \"{{{{ item.label }}}}\"
  after: {{ operator: noop, upstream: [work] }}
",
        work_ms as f64 / 1000.0
    )
}

async fn fresh_database(backend: &str) -> Option<String> {
    if backend == "sqlite" {
        return None;
    }
    use sqlx::Connection;
    let admin = std::env::var("TRIALFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("trialflow_proof_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create the proof database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

struct Kill {
    at: i64,
    pid: u32,
    role: Role,
}

/// A fresh database and data directory with the proof pipeline; one `serve`, and on
/// PostgreSQL the worker processes beside it.
async fn start_cluster(backend: &str, o: &Options) -> (Cluster, Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("pipelines dir");
    std::fs::write(
        dir.path().join("pipelines/proof_kill.yaml"),
        pipeline(o.work_ms),
    )
    .expect("write the pipeline");
    let mut cluster = Cluster {
        port: free_port(),
        url: fresh_database(backend).await,
        dir,
        procs: Vec::new(),
    };
    cluster.start(Role::Serve);
    if backend == "postgres" {
        for _ in 0..WORKERS {
            cluster.start(Role::Worker);
        }
    }
    let db = cluster.db().await;
    (cluster, db)
}

async fn kill_loop(backend: &'static str, o: &Options) -> Value {
    let (mut cluster, db) = start_cluster(backend, o).await;
    let started = Instant::now();
    let mut runs = vec![cluster.trigger(o.instances).await];
    let mut kills: Vec<Kill> = Vec::new();
    let mut rng = rand::thread_rng();
    while kills.len() < o.kills {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(700..2_500))).await;
        // Keep a run in flight so every kill cuts work off.
        let last = db.run_row(*runs.last().unwrap_or(&0)).await.ok().flatten();
        if last.is_none_or(|r| r.ended_at.is_some()) {
            runs.push(cluster.trigger(o.instances).await);
            continue;
        }
        let victim = rng.gen_range(0..cluster.procs.len());
        let mut proc = cluster.procs.swap_remove(victim);
        let pid = proc.child.id();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = proc.child.wait();
        kills.push(Kill {
            at: now_ms(),
            pid,
            role: proc.role,
        });
        let role = proc.role;
        drop(proc);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..1_000))).await;
        cluster.start(role);
    }

    // Every run must end; then each is checked instance by instance.
    let deadline = Instant::now() + Duration::from_secs(600);
    for run in &runs {
        while db
            .run_row(*run)
            .await
            .ok()
            .flatten()
            .is_none_or(|r| r.ended_at.is_none())
        {
            assert!(Instant::now() < deadline, "run {run} did not end");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let Checked {
        completed,
        checked,
        lost,
        duplicates,
        cut_off,
        unexplained,
        reclaim_ms,
        mut problems,
    } = check_runs(&db, &runs, o.instances, &kills).await;
    let worst = reclaim_ms.iter().copied().max().unwrap_or(0);
    let bound = (LEASE_SECONDS + HEARTBEAT_SECONDS) * 1000 + IDLE_POLL_MS;
    // On SQLite the restarted server reclaims at once; the bound is for a silent worker.
    if worst > bound && backend == "postgres" {
        problems.push(format!("worst reclaim took {worst} ms, over {bound} ms"));
    }
    if cut_off == 0 {
        problems.push("no kill cut an attempt off: the proof proved nothing".into());
    }
    json!({
        "proof": "kill",
        "backend": backend,
        "machine": host_name(),
        "date": trialflow::store::utc_text(now_ms()),
        "processes": if backend == "postgres" { format!("1 serve + {WORKERS} workers") } else { "1 serve".into() },
        "instances_per_run": o.instances,
        "work_ms": o.work_ms,
        "lease_seconds": LEASE_SECONDS,
        "heartbeat_seconds": HEARTBEAT_SECONDS,
        "kills": kills.len(),
        "kills_of_serve": kills.iter().filter(|k| k.role == Role::Serve).count(),
        "runs": runs.len(),
        "runs_completed": completed,
        "instances_checked": checked,
        "lost": lost,
        "duplicates": duplicates,
        "cut_off_attempts": cut_off,
        "failed_attempts_not_from_a_kill": unexplained,
        "worst_reclaim_ms": worst,
        "reclaim_bound_ms": bound,
        "elapsed_seconds": (elapsed * 10.0).round() / 10.0,
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

/// What the runs' records say after a proof.
struct Checked {
    completed: usize,
    checked: usize,
    lost: usize,
    duplicates: usize,
    cut_off: usize,
    unexplained: usize,
    reclaim_ms: Vec<i64>,
    problems: Vec<String>,
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Every run ended `success`; every instance succeeded exactly once; every failed attempt of a
/// killed process is closed with its reason (others are counted as `unexplained`).
async fn check_runs(db: &Db, runs: &[i64], instances_per_run: usize, kills: &[Kill]) -> Checked {
    let o_instances = instances_per_run;
    let mut problems = Vec::new();
    let (mut checked, mut lost, mut duplicates, mut cut_off, mut unexplained) = (0, 0, 0, 0, 0);
    let mut reclaim_ms: Vec<i64> = Vec::new();
    let mut completed = 0;
    for run in runs {
        let row = db.run_row(*run).await.ok().flatten().expect("run row");
        if row.state == "success" {
            completed += 1;
        } else {
            problems.push(format!("run {run} ended {}", row.state));
        }
        let instances = db.run_instances(*run).await.expect("instances");
        let mapped = instances
            .iter()
            .filter(|t| t.task_id == "work" && t.map_index >= 0)
            .count();
        if mapped != o_instances {
            problems.push(format!(
                "run {run} has {mapped} work instances, not {}",
                o_instances
            ));
        }
        for ti in instances.iter().filter(|t| t.state != "removed") {
            checked += 1;
            if ti.state != "success" {
                lost += 1;
                problems.push(format!(
                    "run {run}: {}[{}] ended {}",
                    ti.task_id, ti.map_index, ti.state
                ));
            }
            let attempts = db.attempts(ti.id).await.expect("attempts");
            let successes = attempts.iter().filter(|a| a.state == "success").count();
            if successes > 1 {
                duplicates += 1;
                problems.push(format!(
                    "run {run}: {}[{}] succeeded {successes} times",
                    ti.task_id, ti.map_index
                ));
            }
            for a in attempts.iter().filter(|a| a.state != "success") {
                let killed = kills
                    .iter()
                    .find(|k| a.worker.split(':').nth(1) == Some(&k.pid.to_string()));
                match (killed, a.ended_at) {
                    (Some(k), Some(end)) => {
                        cut_off += 1;
                        reclaim_ms.push(end - k.at);
                        if a.error
                            .as_deref()
                            .is_none_or(|e| !e.contains("lease expired"))
                        {
                            problems.push(format!(
                                "attempt {} was cut off without saying so: {:?}",
                                a.id, a.error
                            ));
                        }
                    }
                    (Some(_), None) => {
                        lost += 1;
                        problems.push(format!("attempt {} of a killed process never ended", a.id));
                    }
                    (None, _) => unexplained += 1,
                }
            }
        }
    }
    Checked {
        completed,
        checked,
        lost,
        duplicates,
        cut_off,
        unexplained,
        reclaim_ms,
        problems,
    }
}

/// The log without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Cuts every connection to the proof's PostgreSQL database; returns how many were cut.
async fn cut_connections(url: &str) -> i64 {
    use sqlx::Connection;
    let (base, name) = url.rsplit_once('/').expect("database URL");
    let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await else {
        return 0;
    };
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()) AS cut",
    )
    .bind(name)
    .fetch_one(&mut admin)
    .await
    .unwrap_or(0)
}

fn restart_postgres() -> Result<(), String> {
    let version = std::fs::read_dir("/etc/postgresql")
        .map_err(|e| format!("no /etc/postgresql: {e}"))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .ok_or("no PostgreSQL cluster found")?;
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .map_err(|e| format!("pg_ctlcluster: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or(format!("pg_ctlcluster restart: {status}"))
}

async fn db_faults(backend: &'static str, o: &Options) -> Value {
    let (cluster, db) = start_cluster(backend, o).await;
    let health_url = format!("http://127.0.0.1:{}/healthz", cluster.port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let started = Instant::now();
    let run = cluster.trigger(o.instances).await;
    // Let the run get going before the database fails under it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = db
            .instances(run, "work")
            .await
            .map(|tis| tis.iter().filter(|t| t.state == "success").count())
            .unwrap_or(0);
        if done >= o.instances / 10 {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // /healthz every 200 ms from now until the run has ended: (ms since the fault, status).
    let fault_at = now_ms();
    let probes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, u16)>::new()));
    let poller = {
        let (http, url, probes) = (http.clone(), health_url.clone(), probes.clone());
        tokio::spawn(async move {
            loop {
                let status = match http.get(&url).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                if let Ok(mut p) = probes.lock() {
                    p.push((now_ms() - fault_at, status));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut fault = Vec::new();
    match &cluster.url {
        None => {
            // Another process takes SQLite's write lock and keeps it.
            let file = cluster.dir.path().join("trialflow.db");
            let script = format!(
                "import sqlite3, time\nc = sqlite3.connect({:?}, isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\ntime.sleep({LOCK_SECONDS})\nc.execute('ROLLBACK')\n",
                file.display().to_string()
            );
            let status = Command::new("python3").args(["-c", &script]).status();
            fault.push(format!(
                "write lock held by another process for {LOCK_SECONDS} s: {status:?}"
            ));
        }
        Some(url) => {
            // The restart first, while the run is surely still going.
            if o.restart_postgres {
                let restarted = restart_postgres();
                fault.push(format!("PostgreSQL restarted: {restarted:?}"));
            }
            for _ in 0..3 {
                let cut = cut_connections(url).await;
                fault.push(format!("cut {cut} connections"));
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        }
    }
    let fault_ms = now_ms() - fault_at;

    let deadline = Instant::now() + Duration::from_secs(600);
    let run_end_ms;
    loop {
        // The proof's own handle may have lost its connections too; a failed read is retried.
        if let Ok(Some(ended)) = db.run_row(run).await.map(|r| r.and_then(|r| r.ended_at)) {
            run_end_ms = ended - fault_at;
            break;
        }
        assert!(Instant::now() < deadline, "run {run} did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    poller.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let probes = probes.lock().map(|p| p.clone()).unwrap_or_default();
    let unhealthy: Vec<i64> = probes
        .iter()
        .filter(|(_, s)| *s != 200)
        .map(|(t, _)| *t)
        .collect();
    let first_503 = probes.iter().find(|(_, s)| *s == 503).map(|(t, _)| *t);
    let healthy_again = unhealthy
        .last()
        .and_then(|last| probes.iter().find(|(t, s)| t > last && *s == 200))
        .map(|(t, _)| *t - fault_ms);
    let log = std::fs::read_to_string(cluster.dir.path().join("serve.log")).unwrap_or_default();
    let plain = strip_ansi(&log);
    let log_lines: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();

    // A fresh handle: the fault cut this one's connections too.
    db.close().await;
    let db = cluster.db().await;
    let Checked {
        completed,
        checked,
        lost,
        duplicates,
        unexplained,
        mut problems,
        ..
    } = check_runs(&db, &[run], o.instances, &[]).await;
    // A held SQLite lock is an outage that lasts; cut PostgreSQL connections are replaced at
    // once, and a quick restart may be absorbed by the pool's wait (reported, not required).
    let lasting = cluster.url.is_none();
    if lasting && first_503.is_none() {
        problems.push("/healthz never reported the outage".into());
    }
    if probes.last().is_none_or(|(_, s)| *s != 200) {
        problems.push("/healthz did not recover".into());
    }
    if log_lines.is_empty() {
        problems.push("the server's log says nothing about the outage".into());
    }
    json!({
        "proof": "db",
        "backend": backend,
        "machine": host_name(),
        "date": trialflow::store::utc_text(now_ms()),
        "processes": if backend == "postgres" { format!("1 serve + {WORKERS} workers") } else { "1 serve".into() },
        "instances": o.instances,
        "work_ms": o.work_ms,
        "fault": fault,
        "fault_ms": fault_ms,
        "healthz_probes": probes.len(),
        "healthz_not_200": unhealthy.len(),
        "first_503_after_fault_ms": first_503,
        "healthz_200_again_after_fault_ended_ms": healthy_again,
        "run_ended_after_fault_ms": run_end_ms,
        "run_completed": completed == 1,
        "instances_checked": checked,
        "lost": lost,
        "duplicates": duplicates,
        "retried_attempts": unexplained,
        "log_warnings": log_lines.len(),
        "first_log_warning": log_lines.first().map(|l| l.chars().take(240).collect::<String>()),
        "elapsed_seconds": (elapsed * 10.0).round() / 10.0,
        "ok": problems.is_empty(),
        "problems": problems,
    })
}

#[tokio::main]
async fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("proof: {e}");
            std::process::exit(2);
        }
    };
    if !Path::new(&binary()).exists() {
        eprintln!(
            "proof: {} is missing; build it first (cargo run -p xtask -- build)",
            binary().display()
        );
        std::process::exit(2);
    }
    let mut ok = true;
    for backend in o.backends.clone() {
        let report = match o.proof {
            Proof::Kill => kill_loop(backend, &o).await,
            Proof::Db => db_faults(backend, &o).await,
        };
        ok &= report["ok"] == true;
        println!("{report}");
    }
    std::process::exit(if ok { 0 } else { 1 });
}
