//! Throughput benchmark: simulator pages/s and client records/s over a generated study.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde_json::{Value, json};

use super::client::{ClientConfig, ImednetClient, ListParams};
use super::generator::Profile;
use super::simulator::{SimConfig, SimState, router};

/// Peak resident set size of this process in kB (`VmHWM`), when /proc is available.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Serve a `records`-record study (60 variables per record) in-process, then measure
/// (1) raw simulator pages/s at size 500 and (2) client records/s streaming the whole study.
/// Errors are reported in the returned JSON (`"error"`), never panics.
pub async fn bench(records: usize) -> Value {
    match run(records).await {
        Ok(v) => v,
        Err(e) => json!({"records": records, "error": e}),
    }
}

async fn run(records: usize) -> Result<Value, String> {
    let rss_start = peak_rss_kb();
    let t = Instant::now();
    let state = SimState::new(SimConfig {
        profile: Profile::bench(records, 60),
        ..SimConfig::default()
    });
    let setup = t.elapsed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let base = format!("http://{addr}");

    // Raw simulator throughput: sequential GETs of every page, body read but not parsed.
    let http = reqwest::Client::new();
    let pages = records.div_ceil(500);
    let (mut bytes, t) = (0usize, Instant::now());
    for page in 0..pages {
        let body = http
            .get(format!("{base}/api/v1/edc/studies/BENCH/records"))
            .query(&[("page", page.to_string()), ("size", "500".into())])
            .header("x-api-key", "demo-api-key")
            .header("x-imn-security-key", "demo-security-key")
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.without_url().to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        bytes += body.len();
    }
    let sim_secs = t.elapsed().as_secs_f64();

    // Client: typed streaming of the whole study.
    let client = ImednetClient::new(ClientConfig::new(
        &base,
        "demo-api-key",
        "demo-security-key",
    ))
    .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let (count, values) = client
        .records("BENCH", ListParams::default())
        .try_fold((0usize, 0usize), |(n, v), r| async move {
            Ok((n + 1, v + r.record_data.len()))
        })
        .await
        .map_err(|e| e.to_string())?;
    let client_secs = t.elapsed().as_secs_f64();
    server.abort();
    Ok(json!({
        "records": records,
        "variablesPerRecord": 60,
        "setupMs": setup.as_millis() as u64,
        "pages": pages,
        "simSecs": round(sim_secs),
        "simPagesPerSec": round(pages as f64 / sim_secs.max(1e-9)),
        "simMbPerSec": round(bytes as f64 / 1e6 / sim_secs.max(1e-9)),
        "clientRecords": count,
        "clientValues": values,
        "clientSecs": round(client_secs),
        "clientRecordsPerSec": round(count as f64 / client_secs.max(1e-9)),
        "peakRssKbAtStart": rss_start,
        "peakRssKb": peak_rss_kb(),
    }))
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Time to serve the last page of the 1,000,000-record `LARGE` study (O(page), no scan).
pub async fn large_last_page() -> Value {
    let state = SimState::new(SimConfig {
        profile: Profile::large(),
        ..SimConfig::default()
    });
    let app = router(state);
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
        return json!({"error": "bind failed"});
    };
    let Ok(addr) = listener.local_addr() else {
        return json!({"error": "no address"});
    };
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let t = Instant::now();
    let res = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/v1/edc/studies/LARGE/records?page=1999&size=500"
        ))
        .header("x-api-key", "demo-api-key")
        .header("x-imn-security-key", "demo-security-key")
        .timeout(Duration::from_secs(60))
        .send()
        .await;
    let ms = t.elapsed().as_millis() as u64;
    server.abort();
    let body: Value = match res {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(e) => return json!({"error": e.without_url().to_string()}),
    };
    json!({
        "lastPageMs": ms,
        "lastRecordId": body["data"].as_array().and_then(|d| d.last()).map(|r| r["recordId"].clone()),
        "totalElements": body["pagination"]["totalElements"],
        "peakRssKb": peak_rss_kb(),
    })
}
