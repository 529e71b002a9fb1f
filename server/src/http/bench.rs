//! `trialflow bench console`: the run page of a run with many mapped instances, measured through
//! the real HTTP stack (sign-in, session, SSR), and the live stream while those instances finish.
//!
//! Prints JSON: `render_ms` (median server render of `/runs/<id>` with the run finished),
//! `render_ms_p95`, `payload_bytes` (the first HTML payload), `render_running_ms` (the same page
//! while the run is in flight), `instances_page_ms` (one sorted, filtered table page), and for
//! the stream `sse_messages`, `sse_bytes`, `sse_messages_per_s` and `run_seconds`.
use crate::config::ServeArgs;
use crate::startup::Application;
use app::model::Role;
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ConsoleBenchOptions {
    /// Mapped instances in the benchmark run.
    #[arg(long, default_value_t = 10_000)]
    pub instances: usize,
    /// Page renders to time.
    #[arg(long, default_value_t = 30)]
    pub renders: usize,
    /// Then the same run three more times, side by side: unwatched, with this many clients
    /// holding its event stream, and with clients reloading its page (`--page-loads`).
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Run-page loads per second in the third of those runs.
    #[arg(long, default_value_t = 100)]
    pub page_loads: u32,
}

const PASSWORD: &str = "bench-console-password";

fn pipeline_yaml(n: usize) -> String {
    // Echo results look like an export's (rows), so the table shows an output summary.
    format!(
        "id: bench_console\nmax_active_tasks: 64\ntasks:\n  export:\n    operator: echo\n    partial: {{ rows: 60 }}\n    expand: {{ study: \"{{{{ range({n}) | list }}}}\" }}\n    map_key: \"STUDY-{{{{ item.study }}}}\"\n"
    )
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Starts a run of the benchmark pipeline as the signed-in user; returns its id.
async fn trigger(client: &reqwest::Client, base: &str) -> anyhow::Result<i64> {
    let res = client
        .post(format!("{base}/api/user/trigger_run"))
        .form(&[("pipeline_id", "bench_console")])
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "trigger answered {}",
        res.status()
    );
    Ok(res.json().await?)
}

/// One run of the benchmark pipeline to its end, with `during` started beside it (and stopped
/// when it ends): wall seconds and CPU seconds used meanwhile.
async fn timed_run(
    client: &reqwest::Client,
    base: &str,
    engine: &crate::engine::Engine,
    during: impl FnOnce(i64) -> Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<(f64, f64)> {
    let run_id = trigger(client, base).await?;
    let (cpu, started) = (cpu_seconds(), Instant::now());
    let helpers = during(run_id);
    let state = engine
        .wait_for_run(run_id, Duration::from_secs(900))
        .await?;
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    anyhow::ensure!(
        state == app::state::RunState::Success,
        "run {run_id} ended {state}"
    );
    for h in helpers {
        h.abort();
    }
    Ok((wall, cpu))
}

/// The same run unwatched, with `watchers` held event streams, and with the run page loaded
/// `page_loads` times a second; throughput and CPU of each, side by side in one process.
async fn watch_load(
    client: &reqwest::Client,
    base: &str,
    engine: &crate::engine::Engine,
    watchers: usize,
    page_loads: u32,
    instances: usize,
) -> anyhow::Result<Value> {
    let (alone_s, alone_cpu) = timed_run(client, base, engine, |_| Vec::new()).await?;
    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let messages = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (watched_s, watched_cpu) = timed_run(client, base, engine, |run_id| {
        (0..watchers)
            .map(|_| {
                let (client, errors, messages) = (client.clone(), errors.clone(), messages.clone());
                let url = format!("{base}/events/runs/{run_id}");
                tokio::spawn(async move {
                    let res = match client.get(url).send().await {
                        Ok(res) if res.status().is_success() => res,
                        _ => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return;
                        }
                    };
                    let mut body = res.bytes_stream();
                    while let Some(Ok(chunk)) = body.next().await {
                        let n = chunk.windows(13).filter(|w| w == b"event: update").count();
                        messages.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect()
    })
    .await?;
    let load_errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load_times = std::sync::Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let (loaded_s, loaded_cpu) = timed_run(client, base, engine, |run_id| {
        // Loaders share the rate; each waits for its answer, as a browser tab would.
        let loaders = 16u32.min(page_loads.max(1));
        let period = Duration::from_secs_f64(f64::from(loaders) / f64::from(page_loads.max(1)));
        (0..loaders)
            .map(|_| {
                let (client, errors, times) =
                    (client.clone(), load_errors.clone(), load_times.clone());
                let url = format!("{base}/runs/{run_id}");
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        let t = Instant::now();
                        match client.get(&url).send().await {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes().await;
                                if let Ok(mut times) = times.lock() {
                                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                                }
                            }
                            _ => {
                                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect()
    })
    .await?;
    let mut times = load_times.lock().map(|t| t.clone()).unwrap_or_default();
    times.sort_by(f64::total_cmp);
    let per_s = |secs: f64| round1(instances as f64 / secs);
    let slowdown = |secs: f64| round1((secs / alone_s - 1.0) * 100.0);
    Ok(json!({
        "watchers": watchers,
        "unwatched": { "seconds": round1(alone_s), "instances_per_s": per_s(alone_s), "cpu_seconds": round1(alone_cpu) },
        "streams_held": {
            "seconds": round1(watched_s), "instances_per_s": per_s(watched_s), "slowdown_pct": slowdown(watched_s),
            "cpu_seconds": round1(watched_cpu),
            "extra_cpu_pct_of_one_core": round1((watched_cpu - alone_cpu) / watched_s * 100.0),
            "messages": messages.load(std::sync::atomic::Ordering::Relaxed),
            "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
        },
        "page_loads": {
            "target_per_s": page_loads,
            "seconds": round1(loaded_s), "instances_per_s": per_s(loaded_s), "slowdown_pct": slowdown(loaded_s),
            "cpu_seconds": round1(loaded_cpu),
            "loads": times.len(),
            "loads_per_s": round1(times.len() as f64 / loaded_s),
            "p50_ms": percentile(&times, 0.5),
            "p99_ms": percentile(&times, 0.99),
            "errors": load_errors.load(std::sync::atomic::Ordering::Relaxed),
        },
        "peak_rss_mib": peak_rss_mib(),
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[i] * 10.0).round() / 10.0
}

async fn time_page(
    client: &reqwest::Client,
    url: &str,
    n: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let res = client.get(url).send().await?;
        anyhow::ensure!(res.status().is_success(), "{url} answered {}", res.status());
        let body = res.bytes().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
    }
    times.sort_by(f64::total_cmp);
    Ok((times, bytes))
}

pub async fn run(opts: ConsoleBenchOptions) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines)?;
    std::fs::write(
        pipelines.join("bench_console.yaml"),
        pipeline_yaml(opts.instances),
    )?;
    let mut args = ServeArgs::for_tests(dir.path(), None);
    args.engine.pipelines_dir = Some(pipelines);
    args.engine.max_map_length = opts.instances.max(10_000);
    let app = Application::build(args).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    crate::bootstrap::add_user(app.db(), "bench", Role::User, Some(PASSWORD.into())).await?;
    let db = app.db().clone();
    let engine = app.engine().clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = client
        .post(format!("{base}/auth/login"))
        .form(&[("username", "bench"), ("password", PASSWORD), ("next", "/")])
        .send()
        .await?;
    anyhow::ensure!(login.status().is_redirection(), "sign-in failed");
    let run_id = trigger(&client, &base).await?;
    let started = Instant::now();

    // Follow the live stream until the run is over, counting what a browser would receive.
    let stream_client = client.clone();
    let events_url = format!("{base}/events/runs/{run_id}?after=0");
    let stream = tokio::spawn(async move {
        let res = stream_client.get(events_url).send().await?;
        let mut body = res.bytes_stream();
        let (mut messages, mut bytes) = (0usize, 0usize);
        let mut pending = String::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            bytes += chunk.len();
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let message: String = pending.drain(..end + 2).collect();
                if message.contains("event: update") {
                    messages += 1;
                    let done = message.contains("\"run_state\":\"success\"")
                        || message.contains("\"run_state\":\"failed\"");
                    if done {
                        return anyhow::Ok((messages, bytes));
                    }
                }
            }
        }
        anyhow::bail!("the event stream ended before the run")
    });

    // The page while the run is in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let run_url = format!("{base}/runs/{run_id}");
    let (running_times, _) = time_page(&client, &run_url, 5).await?;

    let (sse_messages, sse_bytes) = tokio::time::timeout(Duration::from_secs(900), stream)
        .await
        .map_err(|_| anyhow::anyhow!("the run did not finish within 15 minutes"))???;
    let run_seconds = started.elapsed().as_secs_f64();
    let run = db
        .run_row(run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
    if run.state != "success" {
        let why = db
            .run_instances(run_id)
            .await?
            .into_iter()
            .find_map(|ti| ti.error)
            .unwrap_or_default();
        anyhow::bail!("the benchmark run ended {}: {why}", run.state);
    }
    let instances = db.instances(run_id, "export").await?.len();
    anyhow::ensure!(
        instances == opts.instances,
        "the run mapped {instances} instances, not {}",
        opts.instances
    );

    let (times, payload_bytes) = time_page(&client, &run_url, opts.renders).await?;
    let page_url =
        format!("{base}/runs/{run_id}?state=success&q=STUDY-99&sort=duration&dir=desc&page=2");
    let (page_times, _) = time_page(&client, &page_url, opts.renders).await?;
    let watched = match opts.watchers {
        0 => Value::Null,
        n => watch_load(&client, &base, &engine, n, opts.page_loads, opts.instances).await?,
    };
    Ok(json!({
        "watched": watched,
        "instances": opts.instances,
        "render_ms": percentile(&times, 0.5),
        "render_ms_p95": percentile(&times, 0.95),
        "payload_bytes": payload_bytes,
        "render_running_ms": percentile(&running_times, 0.5),
        "instances_page_ms": percentile(&page_times, 0.5),
        "sse_messages": sse_messages,
        "sse_bytes": sse_bytes,
        "sse_messages_per_s": ((sse_messages as f64 / run_seconds) * 10.0).round() / 10.0,
        "run_seconds": (run_seconds * 10.0).round() / 10.0,
    }))
}
