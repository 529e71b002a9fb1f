//! `trialflow bench engine`: end-to-end throughput of a 10,000-instance mapped no-op task, the
//! per-hop latency of a 100-task chain, and (PostgreSQL) scaling over worker processes.
use super::{Engine, EngineConfig};
use crate::operators::OperatorRegistry;
use crate::store::Db;
use app::state::RunState;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub struct BenchOptions {
    pub postgres: Option<String>,
    pub instances: usize,
    pub chain: usize,
    pub worker_processes: Vec<usize>,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}

async fn fresh_db(
    postgres: Option<&str>,
    dir: &std::path::Path,
) -> anyhow::Result<(Db, Option<String>)> {
    match postgres {
        None => Ok((Db::connect(None, dir).await?, None)),
        Some(admin) => {
            use sqlx::Connection;
            let name = format!("trialflow_bench_{:08x}", rand::random::<u32>());
            let mut conn = sqlx::PgConnection::connect(admin).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await?;
            let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
            let url = format!("{base}/{name}");
            Ok((Db::connect(Some(&url), dir).await?, Some(url)))
        }
    }
}

fn mapped_yaml(n: usize) -> String {
    format!(
        "id: bench_mapped\nmax_active_tasks: 512\ntasks:\n  fan:\n    operator: noop\n    expand: {{ i: \"{{{{ range({n}) | list }}}}\" }}\n"
    )
}

fn chain_yaml(n: usize) -> String {
    let mut y = String::from("id: bench_chain\ntasks:\n");
    for i in 0..n {
        if i == 0 {
            y.push_str("  t0: { operator: noop }\n");
        } else {
            y.push_str(&format!(
                "  t{i}: {{ operator: noop, upstream: [t{}] }}\n",
                i - 1
            ));
        }
    }
    y
}

async fn start(
    db: &Db,
    dir: &std::path::Path,
    workers: usize,
) -> anyhow::Result<std::sync::Arc<Engine>> {
    let mut config = EngineConfig::new(dir.to_path_buf());
    config.workers = workers;
    config.claim_batch = 128;
    let engine = Engine::start(db.clone(), config, OperatorRegistry::with_builtin()).await?;
    Ok(engine)
}

async fn register(engine: &Engine, yaml: &str) -> anyhow::Result<()> {
    engine
        .catalog
        .register(
            &engine.db,
            &engine.registry,
            "bench.yaml",
            yaml,
            "api",
            true,
        )
        .await?;
    Ok(())
}

async fn timed_run(engine: &Engine, pipeline: &str) -> anyhow::Result<(i64, Duration)> {
    let started = Instant::now();
    let id = engine
        .trigger(pipeline, Default::default(), "bench", Vec::new())
        .await?;
    let state = engine.wait_for_run(id, Duration::from_secs(600)).await?;
    anyhow::ensure!(state == RunState::Success, "bench run {id} ended {state}");
    Ok((id, started.elapsed()))
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub async fn run(opts: BenchOptions) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let (db, url) = fresh_db(opts.postgres.as_deref(), dir.path()).await?;
    let engine = start(&db, dir.path(), 32).await?;
    register(&engine, &mapped_yaml(opts.instances)).await?;
    register(&engine, &chain_yaml(opts.chain)).await?;

    let (_, mapped) = timed_run(&engine, "bench_mapped").await?;
    let (chain_id, chain) = timed_run(&engine, "bench_chain").await?;
    // Hop: from one task's end to the next one's end (scheduling + queueing + claiming + running).
    let mut ends: Vec<(usize, i64)> = Vec::new();
    for ti in db.run_instances(chain_id).await? {
        let index: usize = ti.task_id.trim_start_matches('t').parse().unwrap_or(0);
        ends.push((index, ti.ended_at.unwrap_or(0)));
    }
    ends.sort_unstable();
    let mut hops: Vec<i64> = ends.windows(2).map(|w| w[1].1 - w[0].1).collect();
    hops.sort_unstable();
    engine.stop().await;

    let mut out = json!({
        "backend": db.backend_name(),
        "mapped_instances": opts.instances,
        "mapped_ms": mapped.as_millis(),
        "mapped_per_s": (opts.instances as f64 / mapped.as_secs_f64()).round(),
        "chain_tasks": opts.chain,
        "chain_total_ms": chain.as_millis(),
        "hop_p50_ms": percentile(&hops, 50.0),
        "hop_p99_ms": percentile(&hops, 99.0),
        "peak_rss_mb": peak_rss_mb(),
        "in_process_workers": 32,
    });

    if let Some(url) = url {
        let mut scaling = Vec::new();
        for &procs in &opts.worker_processes {
            scaling.push(scale_run(&db, dir.path(), &url, procs, opts.instances).await?);
        }
        out["scaling"] = Value::Array(scaling);
    }
    Ok(out)
}

/// The mapped run with the scheduler here and `procs` separate `trialflow worker` processes.
async fn scale_run(
    db: &Db,
    dir: &std::path::Path,
    url: &str,
    procs: usize,
    instances: usize,
) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..procs {
        children.push(
            tokio::process::Command::new(&exe)
                .args(["worker", "--workers", "32"])
                .env("DATABASE_URL", url)
                .env("TRIALFLOW_DATA_DIR", dir)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    // Workers announce themselves in the workers table; wait until all have.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = db.live_workers().await?;
        if live >= i64::try_from(procs).unwrap_or(i64::MAX) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let engine = start(db, dir, 0).await?;
    let (_, took) = timed_run(&engine, "bench_mapped").await?;
    engine.stop().await;
    for mut c in children {
        let _ = c.kill().await;
    }
    db.mark_all_workers_stopped().await?;
    Ok(
        json!({"worker_processes": procs, "mapped_per_s": (instances as f64 / took.as_secs_f64()).round(), "mapped_ms": took.as_millis()}),
    )
}
