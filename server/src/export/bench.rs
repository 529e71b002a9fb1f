//! `trialflow bench export`: records/s and peak memory per format and study size, each export
//! in a fresh child process (peak RSS is per process), against an in-process simulator; then
//! the Python SDK's `export_to_csv` on the same study for a ratio.
use super::{ExportFormat, ExportOptions, ExportSchema, RecordFilter, export_stream};
use crate::imednet::bench::peak_rss_kb;
use crate::imednet::generator::Profile;
use crate::imednet::{
    ClientConfig, DEMO_API_KEY, DEMO_SECURITY_KEY, ImednetClient, ListParams, SimConfig, SimState,
    router,
};
use anyhow::Context;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct BenchOptions {
    /// Study sizes in records.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "csv,parquet")]
    pub formats: Vec<String>,
    /// Variables answered per record.
    #[arg(long, default_value_t = 60)]
    pub variables: usize,
    /// Study size the SDK exports (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub sdk_records: usize,
    /// Python with the imednet SDK installed.
    #[arg(long, default_value = ".venv/bin/python")]
    pub python: PathBuf,
    #[arg(long, default_value = "tests/sdk/bench_export.py")]
    pub sdk_script: PathBuf,
    /// Exports per format and size; the figures are their medians (single runs of a few
    /// seconds vary by ~10 % in speed and a few MB in peak memory here).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
}

const STUDY: &str = "BENCH";

pub async fn run(opts: BenchOptions) -> anyhow::Result<Value> {
    for f in &opts.formats {
        f.parse::<ExportFormat>().map_err(anyhow::Error::msg)?;
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let scratch = tempfile::tempdir().context("scratch folder")?;
    let mut results = Vec::new();
    let mut sizes = opts.sizes.clone();
    if opts.sdk_records > 0 && !sizes.contains(&opts.sdk_records) {
        sizes.push(opts.sdk_records);
    }
    sizes.sort_unstable();
    for &records in &sizes {
        let (base, server) = serve(records, opts.variables).await?;
        for format in &opts.formats {
            let output = scratch.path().join(format!("{records}.{format}"));
            let mut runs = Vec::new();
            for _ in 0..opts.repeat {
                runs.push(export_in_child(&exe, &base, format, &output).await?);
                let _ = std::fs::remove_file(&output);
            }
            let mut entry = runs[0].clone();
            for key in ["records_per_s", "peak_rss_mb", "seconds"] {
                let mut values: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
                values.sort_by(f64::total_cmp);
                if let Some(median) = values.get(values.len() / 2) {
                    entry[key] = json!(median);
                }
                if opts.repeat > 1 {
                    entry[format!("{key}_runs")] = json!(values);
                }
            }
            entry["format"] = json!(format);
            entry["variables"] = json!(opts.variables);
            if format == "csv" && records == opts.sdk_records {
                let sdk = sdk_export(&opts, &base, &scratch.path().join("sdk.csv")).await;
                for key in ["sdk_records_per_s", "sdk_peak_rss_mb", "error"] {
                    if let Some(v) = sdk.get(key) {
                        entry[if key == "error" { "sdk_error" } else { key }] = v.clone();
                    }
                }
                if let (Some(ours), Some(theirs)) = (
                    entry["records_per_s"].as_f64(),
                    sdk["sdk_records_per_s"].as_f64(),
                ) {
                    entry["speedup_vs_sdk"] = json!(round(ours / theirs.max(1e-9)));
                }
                if let (Some(ours), Some(theirs)) = (
                    entry["peak_rss_mb"].as_f64(),
                    sdk["sdk_peak_rss_mb"].as_f64(),
                ) {
                    entry["memory_ratio_vs_sdk"] = json!(round(theirs / ours.max(1e-9)));
                }
            }
            results.push(entry);
        }
        server.abort();
    }
    Ok(json!({"study": STUDY, "results": results}))
}

/// One export in a fresh process (so its peak RSS is its own); the child prints its figures.
async fn export_in_child(
    exe: &Path,
    base: &str,
    format: &str,
    output: &Path,
) -> anyhow::Result<Value> {
    let child = tokio::process::Command::new(exe)
        .args([
            "bench",
            "export-worker",
            "--base-url",
            base,
            "--study",
            STUDY,
        ])
        .args(["--format", format, "--output"])
        .arg(output)
        .output()
        .await
        .context("running the export worker")?;
    if !child.status.success() {
        anyhow::bail!(
            "export worker ({format}, {}) failed: {}",
            output.display(),
            String::from_utf8_lossy(&child.stderr)
        );
    }
    serde_json::from_slice(&child.stdout).context("export worker printed no JSON")
}

/// A simulator serving one generated study of `records` records on a free port.
async fn serve(
    records: usize,
    variables: usize,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let state = SimState::new(SimConfig {
        profile: Profile::bench(records, variables),
        ..SimConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router(state)).await;
    });
    Ok((format!("http://{addr}"), server))
}

async fn sdk_export(opts: &BenchOptions, base: &str, output: &Path) -> Value {
    if !opts.python.exists() || !opts.sdk_script.exists() {
        return json!({"error": format!(
            "{} or {} is missing (scripts/test.sh creates the venv)",
            opts.python.display(),
            opts.sdk_script.display()
        )});
    }
    let out = tokio::process::Command::new(&opts.python)
        .arg(&opts.sdk_script)
        .args([base, STUDY])
        .arg(output)
        .output()
        .await;
    let _ = std::fs::remove_file(output);
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| json!({"error": format!("SDK printed no JSON: {e}")})),
        Ok(o) => {
            json!({"error": String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("failed").to_string()})
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// One export of `study` in this process, through the same writers as `imednet.export`;
/// returns records, records/s and this process's peak memory.
pub async fn export_once(
    base_url: &str,
    study: &str,
    format: &str,
    output: PathBuf,
    options: &Value,
) -> anyhow::Result<Value> {
    let format: ExportFormat = format.parse().map_err(anyhow::Error::msg)?;
    let client = ImednetClient::new(ClientConfig::new(base_url, DEMO_API_KEY, DEMO_SECURITY_KEY))?;
    let started = Instant::now();
    let variables = ImednetClient::collect(client.variables(study, ListParams::default())).await?;
    let options = ExportOptions::from_json(options).map_err(anyhow::Error::msg)?;
    let forms = ImednetClient::collect(client.forms(study, ListParams::default())).await?;
    let schema = ExportSchema::build(&variables, &forms, &options);
    let filter = RecordFilter::new(&options, None)?;
    let outcome = export_stream(
        format,
        output,
        schema,
        filter,
        client.records(study, ListParams::default()),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let rows = outcome.result.rows;
    Ok(json!({
        "records": rows,
        "seconds": round(seconds),
        "records_per_s": round(rows as f64 / seconds.max(1e-9)),
        "peak_rss_mb": peak_rss_kb().map(|kb| round(kb as f64 / 1024.0)),
        "bytes": outcome.result.bytes,
    }))
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
