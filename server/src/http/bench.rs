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
}

const PASSWORD: &str = "bench-console-password";

fn pipeline_yaml(n: usize) -> String {
    // Echo results look like an export's (rows), so the table shows an output summary.
    format!(
        "id: bench_console\nmax_active_tasks: 64\ntasks:\n  export:\n    operator: echo\n    partial: {{ rows: 60 }}\n    expand: {{ study: \"{{{{ range({n}) | list }}}}\" }}\n    map_key: \"STUDY-{{{{ item.study }}}}\"\n"
    )
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
    let trigger = client
        .post(format!("{base}/api/user/trigger_run"))
        .form(&[("pipeline_id", "bench_console")])
        .send()
        .await?;
    anyhow::ensure!(
        trigger.status().is_success(),
        "trigger answered {}",
        trigger.status()
    );
    let run_id: i64 = trigger.json().await?;
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
    Ok(json!({
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
