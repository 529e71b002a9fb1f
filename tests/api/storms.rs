//! The reference multi-study export under a storm of simulator faults: 429 with Retry-After,
//! 5xx in the middle of a study, a stalled page, malformed JSON from one study onwards and a
//! random share of 502s. Retries follow the policy, every study gets its own outcome, and a
//! scanner watching the destination the whole time never sees a partial file under a final
//! name, on local disk and on S3 (moto). A POST under a 5xx is sent exactly once.
use crate::exports::{demo_app_with, failure, run_to_end, sha256_hex};
use crate::helpers::{Backend, TestApp};
use crate::s3::Moto;
use app::model::{ConnectionInput, Role};
use app::state::RunState;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trialflow::objstore::S3Store;

const BUCKET: &str = "storm-exports";

/// The reference pipeline itself, with retry delays short enough for a test.
fn storm_pipeline() -> String {
    include_str!("../../server/pipelines/imednet_multi_study_reference.yaml")
        .replace("id: imednet_multi_study_reference", "id: storm_export")
        .replace("retries: 3", "retries: 2")
        .replace("retry_delay: 10m", "retry_delay: 200ms")
        .replace("retry_delay: 2m", "retry_delay: 200ms")
        .replace("max_active_runs: 1", "max_active_runs: 2")
}

const SUBMIT: &str = r#"
id: storm_submit
tasks:
  submit:
    operator: imednet.submit_records
    retries: 2
    args:
      imednet_conn_id: imednet_storm
      study_key: DEMO
      records: [{ formKey: DM, subjectKey: "01-001", intervalName: Baseline, data: { DM_text1: "once" } }]
"#;

/// Faults for one storm (the client's timeout is 1 s and its pages 40 records, see below).
fn storm() -> Value {
    json!({
        "errorShare": 0.03,
        "errorStatus": 502,
        "rules": [
            // Rate limited at the start of the small study.
            {"study": "CV 3/B", "endpoint": "records", "method": "GET", "kind": {"type": "status", "status": 429, "retryAfterSecs": 1}, "count": 2},
            // DEMO (12 pages): two 503s after three pages, then a stalled page after six more.
            {"study": "DEMO", "endpoint": "records", "method": "GET", "kind": {"type": "status", "status": 503}, "after": 3, "count": 2},
            {"study": "DEMO", "endpoint": "records", "method": "GET", "kind": {"type": "stall", "ms": 1500}, "after": 6, "count": 1},
            // ONC-202 (5 pages): broken JSON from its third page on, for good.
            {"study": "ONC-202", "endpoint": "records", "method": "GET", "kind": {"type": "malformed"}, "after": 2},
            // A submission answered 503.
            {"method": "POST", "kind": {"type": "status", "status": 503}, "count": 1},
        ]
    })
}

async fn sim(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, app.url(&format!("/sim{path}")))
        .header("x-api-key", "demo-api-key")
        .header("x-imn-security-key", "demo-security-key");
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap_or(Value::Null)
}

/// `imednet_storm`: the demo simulator with a 1 s timeout and 40-record pages.
async fn storm_connection(app: &TestApp) {
    app.engine
        .connections()
        .save(
            &ConnectionInput {
                conn_id: "imednet_storm".into(),
                kind: "imednet".into(),
                create: true,
                base_url: Some(app.url("/sim")),
                api_key: Some("demo-api-key".into()),
                security_key: Some("demo-security-key".into()),
                extra: Some(r#"{"timeout_seconds": 1, "page_size": 40}"#.into()),
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
}

/// What the scanner saw under final names: name → every distinct SHA-256 seen.
type Sightings = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

fn note(seen: &Sightings, name: String, bytes: &[u8]) {
    let sha = sha256_hex(bytes);
    let mut seen = seen.lock().unwrap();
    let shas = seen.entry(name).or_default();
    if !shas.contains(&sha) {
        shas.push(sha);
    }
}

/// Hashes every file not named like a temp file (`.name.tmp-…`) under `root`.
fn scan_local_once(root: &std::path::Path, seen: &Sightings) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if name != ".staging" {
                    stack.push(path);
                }
            } else if !name.starts_with('.')
                && let Ok(bytes) = std::fs::read(&path)
            {
                note(seen, path.display().to_string(), &bytes);
            }
        }
    }
}

/// Lists the bucket and hashes each object it shows.
async fn scan_s3_once(store: &S3Store, seen: &Sightings) {
    if let Ok(list) = store.client().list_objects_v2().bucket(BUCKET).send().await {
        for object in list.contents() {
            let key = object.key().unwrap_or_default().to_string();
            if let Ok(bytes) = store.get_bytes(BUCKET, &key).await {
                note(seen, format!("s3://{BUCKET}/{key}"), &bytes);
            }
        }
    }
}

/// Scans the destination over and over while the run goes; the caller scans once more at the
/// end (the last file may land between two passes).
fn keep_scanning(
    destination: Destination,
    seen: Sightings,
    passes: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            destination.scan(&seen).await;
            passes.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[derive(Clone)]
enum Destination {
    Local(std::path::PathBuf),
    S3(S3Store),
}

impl Destination {
    async fn scan(&self, seen: &Sightings) {
        match self {
            Destination::Local(root) => scan_local_once(root, seen),
            Destination::S3(store) => scan_s3_once(store, seen).await,
        }
    }
}

/// Per study: the export instance's final state, attempts and error.
async fn outcomes(app: &TestApp, run: i64) -> BTreeMap<String, (String, i64, String)> {
    app.db
        .instances(run, "export_records")
        .await
        .unwrap()
        .into_iter()
        .map(|ti| {
            (
                ti.map_key.clone().unwrap_or_default(),
                (ti.state, ti.try_number, ti.error.unwrap_or_default()),
            )
        })
        .collect()
}

/// Every file seen under a final name was, every time it was seen, the complete file the run
/// recorded (manifests, rewritten as studies finish, must at least always be whole JSON).
async fn assert_only_whole_files(app: &TestApp, run: i64, seen: &Sightings) {
    let artifacts: BTreeMap<String, String> = app
        .db
        .run_artifacts(run)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.uri, a.sha256))
        .collect();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.keys().any(|k| k.contains("DEMO")),
        "the scanner saw the exports: {seen:?}"
    );
    for (name, shas) in &seen {
        if name.ends_with("manifest.json") {
            continue;
        }
        assert!(
            !name.contains("ONC-202"),
            "the failed study left {name} under a final name"
        );
        let recorded = artifacts
            .get(name)
            .unwrap_or_else(|| panic!("{name} appeared but the run recorded no such file"));
        assert_eq!(
            shas,
            &vec![recorded.clone()],
            "{name} was seen with other contents than its final ones"
        );
    }
}

/// The figures RELIABILITY.md quotes (`cargo test … storms -- --nocapture`).
fn report(destination: &str, passes: &AtomicUsize, seen: &Sightings) {
    let seen = seen.lock().unwrap();
    let versions: usize = seen.values().map(Vec::len).sum();
    eprintln!(
        "storm {destination}: {} scanner passes, {} final names seen ({versions} contents), partial: 0",
        passes.load(Ordering::Relaxed),
        seen.len()
    );
}

async fn storm_run(app: &TestApp, export_root: &str) -> i64 {
    sim(app, reqwest::Method::PUT, "/__sim/faults", Some(storm())).await;
    let conf = json!({"connection": "imednet_storm", "export_root": export_root});
    let (run, state) = run_to_end(app, "storm_export", conf).await;
    assert_eq!(state, RunState::Failed, "{}", failure(app, run).await);
    // Every counted fault fired: what is left is the endless one and the POST's.
    let left = sim(app, reqwest::Method::GET, "/__sim/faults", None).await;
    let left: Vec<Value> = left["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["study"], r["method"], r["after"]]))
        .collect();
    assert_eq!(
        left,
        [json!(["ONC-202", "GET", 0]), json!([null, "POST", 0])],
        "faults not used up"
    );
    run
}

fn assert_outcomes(outcomes: &BTreeMap<String, (String, i64, String)>) {
    let keys: Vec<&str> = outcomes.keys().map(String::as_str).collect();
    assert_eq!(keys, ["CV 3/B", "DEMO", "ONC-202"]);
    // The client absorbed 429s, 5xx and the stall: one attempt each.
    for study in ["CV 3/B", "DEMO"] {
        let (state, tries, error) = &outcomes[study];
        assert_eq!(state, "success", "{study}: {error}");
        assert_eq!(*tries, 1, "{study} needed a task retry");
    }
    // Broken JSON is retried by the task (twice), then the study fails with the reason.
    let (state, tries, error) = &outcomes["ONC-202"];
    assert_eq!(state, "failed");
    assert_eq!(*tries, 3, "ONC-202 attempts");
    assert!(
        error.contains("ONC-202") && error.contains("cannot decode response"),
        "{error}"
    );
}

#[tokio::test]
async fn a_multi_study_export_rides_out_a_storm_without_partial_files() {
    let moto = Moto::start();
    moto.store().create_bucket(BUCKET).await.unwrap();
    let pipeline = storm_pipeline();
    let app = demo_app_with(
        Backend::Sqlite,
        &[
            ("storm_export.yaml", &pipeline),
            ("storm_submit.yaml", SUBMIT),
        ],
    )
    .await;
    storm_connection(&app).await;
    app.engine
        .connections()
        .save(&moto.replacing_demo_connection(Some(BUCKET)), "test")
        .await
        .unwrap();

    // Local files.
    let seen: Sightings = Arc::default();
    let local = Destination::Local(app.data_dir.join("exports"));
    let passes = Arc::new(AtomicUsize::new(0));
    let scanner = keep_scanning(local.clone(), seen.clone(), passes.clone());
    let run = storm_run(&app, "storm").await;
    scanner.abort();
    local.scan(&seen).await;
    assert_outcomes(&outcomes(&app, run).await);
    assert_only_whole_files(&app, run, &seen).await;
    report("local", &passes, &seen);
    let export_dir = app.data_dir.join(format!("exports/storm/run-{run}"));
    let left: Vec<String> = std::fs::read_dir(&export_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        left.iter().all(|n| !n.starts_with('.')),
        "temp files left behind: {left:?}"
    );

    // The same storm, exporting to S3.
    let seen: Sightings = Arc::default();
    let s3 = Destination::S3(moto.store());
    let passes = Arc::new(AtomicUsize::new(0));
    let scanner = keep_scanning(s3.clone(), seen.clone(), passes.clone());
    let run = storm_run(&app, &format!("s3://{BUCKET}/storm")).await;
    scanner.abort();
    s3.scan(&seen).await;
    assert_outcomes(&outcomes(&app, run).await);
    assert_only_whole_files(&app, run, &seen).await;
    report("s3", &passes, &seen);
    let uploads = moto
        .store()
        .client()
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "unfinished uploads left");

    // The run page shows each study's outcome.
    let viewer = app.client_as(Role::Viewer).await;
    let html = app.page_text(&viewer, &format!("/runs/{run}")).await;
    for study in ["CV 3/B", "DEMO", "ONC-202"] {
        assert!(html.contains(study), "{study} missing from the run page");
    }

    // A submission answered 503 is not sent again, by the client or by a task retry.
    let before = sim(&app, reqwest::Method::GET, "/__sim/stats", None).await["posts"]
        .as_u64()
        .unwrap();
    sim(&app, reqwest::Method::PUT, "/__sim/faults", Some(storm())).await;
    let (run, state) = run_to_end(&app, "storm_submit", json!({})).await;
    assert_eq!(state, RunState::Failed);
    let after = sim(&app, reqwest::Method::GET, "/__sim/stats", None).await["posts"]
        .as_u64()
        .unwrap();
    assert_eq!(
        after - before,
        1,
        "the POST was sent {} times",
        after - before
    );
    let error = failure(&app, run).await;
    assert!(
        error.contains("503") && error.contains("not retried automatically"),
        "{error}"
    );
}
