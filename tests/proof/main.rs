//! Proofs under faults, with real processes; each prints one JSON object per backend.
//!
//! `kill`: runs 500-instance mapped pipelines on `trialflow serve` (and, on PostgreSQL, three
//! `trialflow worker` processes beside it), SIGKILLs a random one of them at random moments and
//! restarts it, then checks every run: the right final state, no instance lost, none with two
//! successful attempts, every cut-off attempt on record as a failed try with its reason, and
//! each reclaim within lease + heartbeat (+ the scheduler's idle poll).
//!
//! `cargo run -p tests --example proof -- kill [--backend sqlite|postgres|both] [--kills 10]
//!  [--instances 500] [--work-ms 300]` (scripts/proof.sh runs it with the debug build).
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

struct Options {
    backends: Vec<&'static str>,
    kills: usize,
    instances: usize,
    work_ms: u64,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("kill") => {}
        other => return Err(format!("unknown proof {other:?}; known: kill")),
    }
    let mut o = Options {
        backends: vec!["sqlite", "postgres"],
        kills: 10,
        instances: 500,
        work_ms: 300,
    };
    while let Some(flag) = args.next() {
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
            Role::Serve => self.command(&["serve", "--addr", "127.0.0.1:0", "--workers", "16"]),
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

async fn kill_loop(backend: &'static str, o: &Options) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("pipelines dir");
    std::fs::write(
        dir.path().join("pipelines/proof_kill.yaml"),
        pipeline(o.work_ms),
    )
    .expect("write the pipeline");
    let mut cluster = Cluster {
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
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let mut problems = Vec::new();
    let (mut checked, mut lost, mut duplicates, mut cut_off, mut unexplained) = (0, 0, 0, 0, 0);
    let mut reclaim_ms: Vec<i64> = Vec::new();
    let mut completed = 0;
    for run in &runs {
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
        if mapped != o.instances {
            problems.push(format!(
                "run {run} has {mapped} work instances, not {}",
                o.instances
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
        "machine": host,
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
        let report = kill_loop(backend, &o).await;
        ok &= report["ok"] == true;
        println!("{report}");
    }
    std::process::exit(if ok { 0 } else { 1 });
}
