//! The iMednet operators through the engine against the demo simulator: the reference pipeline
//! on both backends, every export format, S3 outputs (moto), record submission with the job
//! sensor, and incremental exports.
use crate::helpers::{BACKENDS, Backend, TestApp, spawn_with};
use crate::s3::Moto;
use app::model::Role;
use app::state::RunState;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use trialflow::imednet::{ClientConfig, ImednetClient, ListParams};

/// The demo app with extra pipelines from YAML sources.
pub async fn demo_app_with(backend: Backend, pipelines: &[(&str, &str)]) -> TestApp {
    demo_app_configured(backend, pipelines, |_| {}).await
}

/// [`demo_app_with`], with further settings.
pub async fn demo_app_configured(
    backend: Backend,
    pipelines: &[(&str, &str)],
    configure: impl FnOnce(&mut trialflow::config::ServeArgs),
) -> TestApp {
    let pipelines: Vec<(String, String)> = pipelines
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    spawn_with(backend, move |args| {
        args.demo = true;
        let dir = args.storage.data_dir.join("pipelines");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, source) in &pipelines {
            std::fs::write(dir.join(name), source).unwrap();
        }
        args.engine.pipelines_dir = Some(dir);
        configure(args);
    })
    .await
}

pub async fn run_to_end(app: &TestApp, pipeline: &str, conf: Value) -> (i64, RunState) {
    let conf: Map<String, Value> = conf.as_object().cloned().unwrap_or_default();
    let run = app
        .engine
        .trigger(pipeline, conf, "test", Vec::new())
        .await
        .unwrap();
    let state = app
        .engine
        .wait_for_run(run, Duration::from_secs(120))
        .await
        .unwrap();
    (run, state)
}

async fn outputs(app: &TestApp, run: i64, task: &str) -> Vec<(Option<String>, Value)> {
    let mut out: Vec<(Option<String>, Value)> = app
        .db
        .instances(run, task)
        .await
        .unwrap()
        .into_iter()
        .map(|ti| {
            let output = ti
                .output
                .as_deref()
                .map(|o| serde_json::from_str(o).unwrap())
                .unwrap_or(Value::Null);
            (ti.map_key, output)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub async fn failure(app: &TestApp, run: i64) -> String {
    app.db
        .run_instances(run)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|ti| ti.error)
        .collect::<Vec<_>>()
        .join(" | ")
}

fn sim_client(app: &TestApp) -> ImednetClient {
    ImednetClient::new(ClientConfig::new(
        &format!("{}/sim", app.base),
        "demo-api-key",
        "demo-security-key",
    ))
    .unwrap()
}

async fn live_records(app: &TestApp, study: &str) -> usize {
    let c = sim_client(app);
    ImednetClient::collect(c.records(study, ListParams::default()))
        .await
        .unwrap()
        .iter()
        .filter(|r| !r.deleted)
        .count()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn the_reference_pipeline_exports_every_study_on_both_backends() {
    for backend in BACKENDS {
        let app = demo_app_with(backend, &[]).await;
        let (run, state) = run_to_end(&app, "imednet_multi_study_reference", json!({})).await;
        assert_eq!(
            state,
            RunState::Success,
            "{backend:?}: {}",
            failure(&app, run).await
        );

        let targets = outputs(&app, run, "discover_studies").await;
        let targets = targets[0].1.as_array().unwrap().clone();
        let paths: Vec<&str> = targets
            .iter()
            .map(|t| t["output_path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            // The API lists studies by studyKey.
            [
                format!("reference/run-{run}/CV_3_B.csv"),
                format!("reference/run-{run}/DEMO.csv"),
                format!("reference/run-{run}/ONC-202.csv"),
            ]
        );

        let exports = outputs(&app, run, "export_records").await;
        let keys: Vec<&str> = exports.iter().map(|(k, _)| k.as_deref().unwrap()).collect();
        assert_eq!(keys, ["CV 3/B", "DEMO", "ONC-202"], "{backend:?}");
        let artifacts = app.db.run_artifacts(run).await.unwrap();
        // The three studies, then the run's manifest.
        assert_eq!(artifacts.len(), 4);
        assert!(
            artifacts[3]
                .uri
                .ends_with(&format!("reference/run-{run}/manifest.json"))
        );
        for (key, out) in &exports {
            let key = key.as_deref().unwrap();
            let path = out["path"].as_str().unwrap();
            assert!(path.starts_with(app.data_dir.join("exports/reference").to_str().unwrap()));
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(out["bytes"], bytes.len() as u64);
            assert_eq!(out["sha256"], sha256_hex(&bytes));
            let text = String::from_utf8(bytes).unwrap();
            assert!(
                text.starts_with("recordId,subjectKey,visitId,formId,recordStatus,dateCreated,"),
                "{}",
                &text[..80]
            );
            let expected = live_records(&app, key).await;
            assert_eq!(out["rows"], expected as u64, "{key}");
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            assert_eq!(reader.records().count(), expected, "{key}");
            let artifact = artifacts.iter().find(|a| a.uri == path).unwrap();
            assert_eq!(artifact.sha256, out["sha256"].as_str().unwrap());
            assert_eq!(artifact.rows_written, Some(expected as i64));
        }
        // No temp files left behind.
        for entry in
            std::fs::read_dir(app.data_dir.join(format!("exports/reference/run-{run}"))).unwrap()
        {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                (name.ends_with(".csv") || name == "manifest.json") && !name.starts_with('.'),
                "{name}"
            );
        }

        // The provenance manifest names every file with its study, connection and hash.
        let dir = app.data_dir.join(format!("exports/reference/run-{run}"));
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["format"], "trialflow-export-manifest-v1");
        assert_eq!(manifest["pipeline"], "imednet_multi_study_reference");
        assert_eq!(manifest["run_id"], run);
        assert_eq!(manifest["run_state"], "success");
        assert_eq!(manifest["software"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(manifest["conf"]["format"], "csv");
        let files = manifest["files"].as_array().unwrap();
        assert_eq!(files.len(), 3, "{backend:?}");
        for (key, out) in &exports {
            let name = out["path"].as_str().unwrap().rsplit('/').next().unwrap();
            let f = files.iter().find(|f| f["name"] == name).unwrap();
            assert_eq!(f["study_key"], key.as_deref().unwrap());
            assert_eq!(f["map_key"], key.as_deref().unwrap());
            assert_eq!(f["connection_id"], "imednet_default");
            assert_eq!(f["sha256"], out["sha256"]);
            assert_eq!(f["rows"], out["rows"]);
            assert_eq!(f["task_id"], "export_records");
            assert!(f["started_at"].is_string() && f["ended_at"].is_string());
        }
        let text = manifest.to_string();
        assert!(!text.contains("demo-api-key") && !text.contains(app.data_dir.to_str().unwrap()));
    }
}

/// Triggers the reference pipeline through the server function, as the trigger form does,
/// and waits for it to succeed.
async fn reference_run_over_http(app: &TestApp, user: &reqwest::Client) -> i64 {
    let res = app
        .call(
            user,
            "/api/user/trigger_run",
            &[
                ("pipeline_id", "imednet_multi_study_reference"),
                ("conf", "{}"),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    let run: i64 = res.text().await.unwrap().trim().parse().unwrap();
    let state = app
        .engine
        .wait_for_run(run, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(state, RunState::Success);
    run
}

#[tokio::test]
async fn verify_export_rehashes_files_against_the_manifest() {
    let app = demo_app_with(Backend::Sqlite, &[]).await;
    // Triggered over HTTP, so an audit entry records it and the manifest names that entry.
    let user = app.client_as(Role::User).await;
    let run = reference_run_over_http(&app, &user).await;
    let dir = app.data_dir.join(format!("exports/reference/run-{run}"));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let audit = app
        .db
        .audit_hash_of(
            "run.trigger",
            &format!("imednet_multi_study_reference run {run}"),
        )
        .await
        .unwrap()
        .expect("trigger audited");
    assert_eq!(manifest["trigger_audit_hash"], audit);
    assert_eq!(manifest["triggered_by"], "user-user");

    let verify = || {
        std::process::Command::new(crate::crash::binary())
            .args(["verify-export", dir.to_str().unwrap()])
            .env("TRIALFLOW_DATA_DIR", &app.data_dir)
            .output()
            .unwrap()
    };
    let ok = verify();
    let stdout = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("All 3 files match"), "{stdout}");

    // One changed byte, one file gone: both named.
    let demo = dir.join("DEMO.csv");
    let mut bytes = std::fs::read(&demo).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&demo, bytes).unwrap();
    std::fs::remove_file(dir.join("ONC-202.csv")).unwrap();
    let bad = verify();
    assert!(!bad.status.success());
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(stdout.contains("sha256 differs  DEMO.csv"), "{stdout}");
    assert!(stdout.contains("missing         ONC-202.csv"), "{stdout}");
    assert!(stdout.contains("ok              CV_3_B.csv"), "{stdout}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("2 of 3 files do not match"));
}

const EVERY_FORMAT: &str = r#"
id: every_format
tasks:
  export:
    operator: imednet.export
    partial: { study_key: "ONC-202" }
    expand_kwargs:
      - { format: csv, output_path: "formats/onc.csv" }
      - { format: json, output_path: "formats/onc.json" }
      - { format: parquet, output_path: "formats/onc.parquet" }
      - { format: xlsx, output_path: "formats/onc.xlsx" }
      - { format: sqlite, output_path: "formats/onc.sqlite" }
      - { format: sqlite_by_form, output_path: "formats/onc-by-form.sqlite" }
      - { format: long_sqlite, output_path: "formats/onc-long.sqlite" }
      - { format: csv, output_path: "formats/onc-labels.csv", export_kwargs: { use_labels_as_columns: true } }
    map_key: "{{ item.format }}:{{ item.output_path }}"
  keys:
    operator: imednet.list_study_keys
  metadata:
    operator: imednet.list_studies_metadata
"#;

async fn sqlite_count(path: &str, sql: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}?mode=ro"))
        .await
        .unwrap();
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
}

#[tokio::test]
async fn every_format_is_written_and_readable() {
    let app = demo_app_with(Backend::Sqlite, &[("every_format.yaml", EVERY_FORMAT)]).await;
    let (run, state) = run_to_end(&app, "every_format", json!({})).await;
    assert_eq!(state, RunState::Success, "{}", failure(&app, run).await);
    let expected = live_records(&app, "ONC-202").await as u64;
    assert_eq!(
        outputs(&app, run, "keys").await[0].1,
        json!(["CV 3/B", "DEMO", "ONC-202"])
    );
    let metadata = outputs(&app, run, "metadata").await[0].1.clone();
    let metadata = metadata.as_array().unwrap();
    assert_eq!(metadata.len(), 3);
    assert_eq!(metadata[1]["studyKey"], "DEMO");
    assert_eq!(metadata[1]["studyName"], "Demo Study");
    let root = app.data_dir.join("exports/formats");
    let out: std::collections::HashMap<String, Value> = outputs(&app, run, "export")
        .await
        .into_iter()
        .map(|(k, v)| (k.unwrap().split(':').nth(1).unwrap().to_string(), v))
        .collect();
    for (file, o) in &out {
        let on_disk = std::fs::metadata(app.data_dir.join("exports").join(file)).unwrap();
        assert_eq!(o["bytes"], on_disk.len(), "{file}");
        assert!(on_disk.len() > 0, "{file}");
    }
    for file in [
        "formats/onc.csv",
        "formats/onc.json",
        "formats/onc.parquet",
        "formats/onc.xlsx",
        "formats/onc.sqlite",
    ] {
        assert_eq!(out[file]["rows"], expected, "{file}");
    }
    let json: Vec<Value> =
        serde_json::from_slice(&std::fs::read(root.join("onc.json")).unwrap()).unwrap();
    assert_eq!(json.len() as u64, expected);
    assert!(json[0].get("recordId").is_some() && json[0].get("dateCreated").is_some());
    let wide = root.join("onc.sqlite");
    assert_eq!(
        sqlite_count(wide.to_str().unwrap(), "SELECT COUNT(*) FROM records").await as u64,
        expected
    );
    let by_form = root.join("onc-by-form.sqlite");
    let forms = sqlite_count(
        by_form.to_str().unwrap(),
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
    )
    .await;
    assert!(forms >= 3, "one table per form, got {forms}");
    let long = root.join("onc-long.sqlite");
    let long_rows = sqlite_count(long.to_str().unwrap(), "SELECT COUNT(*) FROM records").await;
    assert!(
        long_rows as u64 > expected,
        "long format has a row per value"
    );
    let labels = std::fs::read_to_string(root.join("onc-labels.csv")).unwrap();
    let plain = std::fs::read_to_string(root.join("onc.csv")).unwrap();
    assert_ne!(
        labels.lines().next(),
        plain.lines().next(),
        "labels replace names"
    );
}

const TO_S3: &str = r#"
id: to_s3
tasks:
  export_csv:
    operator: imednet.export
    args: { study_key: "CV 3/B", output_path: "s3://trial-exports/wide/cv3b.csv" }
  records_json:
    operator: imednet.to_s3
    args: { study_key: "CV 3/B", s3_key: "raw/cv3b-records.json" }
  sites_json:
    operator: imednet.to_s3
    args: { study_key: "CV 3/B", s3_bucket: trial-exports, s3_key: "raw/sites.json", endpoint: sites }
"#;

#[tokio::test]
async fn exports_and_endpoint_dumps_reach_s3() {
    let moto = Moto::start();
    moto.store().create_bucket("trial-exports").await.unwrap();
    let app = demo_app_with(Backend::Sqlite, &[("to_s3.yaml", TO_S3)]).await;
    app.engine
        .connections()
        .save(
            &moto.replacing_demo_connection(Some("trial-exports")),
            "test",
        )
        .await
        .unwrap();
    let (run, state) = run_to_end(&app, "to_s3", json!({})).await;
    assert_eq!(state, RunState::Success, "{}", failure(&app, run).await);
    let expected = live_records(&app, "CV 3/B").await;

    let store = moto.store();
    let csv = store
        .get_bytes("trial-exports", "wide/cv3b.csv")
        .await
        .unwrap();
    let export = &outputs(&app, run, "export_csv").await[0].1;
    assert_eq!(export["path"], "s3://trial-exports/wide/cv3b.csv");
    assert_eq!(export["sha256"], sha256_hex(&csv));
    assert_eq!(
        csv::Reader::from_reader(&csv[..]).records().count(),
        expected
    );
    // The manifest went to the same prefix, and verifies over S3.
    let manifest: Value = serde_json::from_slice(
        &store
            .get_bytes("trial-exports", "wide/manifest.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["files"][0]["name"], "cv3b.csv");
    assert_eq!(manifest["files"][0]["sha256"], sha256_hex(&csv));
    let checks = trialflow::export::provenance::verify_s3(&store, "s3://trial-exports/wide/")
        .await
        .unwrap();
    assert!(checks.iter().all(|c| c.outcome == "ok"), "{checks:?}");
    // The local staging copy is gone.
    let staging = app.data_dir.join("exports/.staging");
    assert_eq!(
        std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0),
        0
    );

    let raw = store
        .get_bytes("trial-exports", "raw/cv3b-records.json")
        .await
        .unwrap();
    let items: Vec<Value> = serde_json::from_slice(&raw).unwrap();
    // Every item the endpoint lists, deleted records included: a raw dump, not an export.
    let all = ImednetClient::collect(sim_client(&app).records("CV 3/B", ListParams::default()))
        .await
        .unwrap();
    assert_eq!(items.len(), all.len());
    assert!(
        items
            .iter()
            .all(|i| i["recordId"].is_number() && i["dateCreated"].is_string())
    );
    let sites: Vec<Value> = serde_json::from_slice(
        &store
            .get_bytes("trial-exports", "raw/sites.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sites.len(), 2);
}

const SUBMIT: &str = r#"
id: submit_and_wait
params:
  subject: { type: string, default: "01-001" }
tasks:
  submit:
    operator: imednet.submit_records
    args:
      study_key: "CV 3/B"
      records: [{ formKey: DM, subjectKey: "{{ params.subject }}", intervalName: Baseline, data: { DM_text1: "from trialflow" } }]
  wait:
    operator: imednet.job_sensor
    upstream: [submit]
    poke_interval: 100ms
    timeout: 30s
    args: { study_key: "CV 3/B", batch_id: "{{ tasks.submit.output.batch_id }}" }
"#;

const INCREMENTAL: &str = r#"
id: incremental
tasks:
  export:
    operator: imednet.export
    args: { study_key: "CV 3/B", output_path: "incremental/cv3b.csv", export_kwargs: { incremental: true } }
"#;

#[tokio::test]
async fn submitted_records_are_awaited_and_incremental_exports_pick_up_only_changes() {
    let app = demo_app_with(
        Backend::Sqlite,
        &[("submit.yaml", SUBMIT), ("incremental.yaml", INCREMENTAL)],
    )
    .await;
    let all = live_records(&app, "CV 3/B").await as u64;
    let (run, state) = run_to_end(&app, "incremental", json!({})).await;
    assert_eq!(state, RunState::Success, "{}", failure(&app, run).await);
    assert_eq!(outputs(&app, run, "export").await[0].1["rows"], all);
    let (run, _) = run_to_end(&app, "incremental", json!({})).await;
    assert_eq!(
        outputs(&app, run, "export").await[0].1["rows"],
        0,
        "nothing changed"
    );

    // Submissions are timestamped to the second: step past the watermark's second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (run, state) = run_to_end(&app, "submit_and_wait", json!({})).await;
    assert_eq!(state, RunState::Success, "{}", failure(&app, run).await);
    let submitted = &outputs(&app, run, "submit").await[0].1;
    assert!(
        submitted["batch_id"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
    );
    let job = &outputs(&app, run, "wait").await[0].1;
    assert_eq!(
        job["state"]
            .as_str()
            .map(str::to_ascii_uppercase)
            .as_deref(),
        Some("COMPLETED")
    );

    let (run, _) = run_to_end(&app, "incremental", json!({})).await;
    let out = &outputs(&app, run, "export").await[0].1;
    assert_eq!(out["rows"], 1, "only the updated record: {out}");
    let text = std::fs::read_to_string(out["path"].as_str().unwrap()).unwrap();
    assert!(text.contains("from trialflow"));

    // A job that fails: the sensor fails naming the state, and is not retried.
    let (run, state) = run_to_end(&app, "submit_and_wait", json!({"subject": "99-999"})).await;
    assert_eq!(state, RunState::Failed);
    let error = failure(&app, run).await;
    assert!(error.contains("ended in state FAILED"), "{error}");
}

/// Rows per study of one run of the reference pipeline.
async fn rows_by_study(app: &TestApp, run: i64) -> Vec<(String, u64)> {
    outputs(app, run, "export_records")
        .await
        .into_iter()
        .map(|(k, o)| {
            (
                k.unwrap_or_default(),
                o["rows"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

#[tokio::test]
async fn incremental_reference_runs_export_only_changes_and_full_refresh_starts_over() {
    for backend in BACKENDS {
        let app = demo_app_with(backend, &[("submit.yaml", SUBMIT)]).await;
        let reference = "imednet_multi_study_reference";
        let incremental = json!({"incremental": true});
        let mut full = Vec::new();
        for key in ["CV 3/B", "DEMO", "ONC-202"] {
            full.push((key.to_string(), live_records(&app, key).await as u64));
        }
        // First run: no watermark yet, everything. Each run writes to its own folder, and the
        // watermark still carries over: it belongs to (pipeline, task, connection, study).
        let (run, state) = run_to_end(&app, reference, incremental.clone()).await;
        assert_eq!(
            state,
            RunState::Success,
            "{backend:?}: {}",
            failure(&app, run).await
        );
        assert_eq!(rows_by_study(&app, run).await, full, "{backend:?}");
        let (run, _) = run_to_end(&app, reference, incremental.clone()).await;
        let nothing: Vec<(String, u64)> = full.iter().map(|(k, _)| (k.clone(), 0)).collect();
        assert_eq!(
            rows_by_study(&app, run).await,
            nothing,
            "{backend:?}: nothing changed"
        );

        // One record of CV 3/B changes.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (submit, state) = run_to_end(&app, "submit_and_wait", json!({})).await;
        assert_eq!(state, RunState::Success, "{}", failure(&app, submit).await);
        let (run, _) = run_to_end(&app, reference, incremental.clone()).await;
        let changed: Vec<(String, u64)> = full
            .iter()
            .map(|(k, _)| (k.clone(), u64::from(k == "CV 3/B")))
            .collect();
        assert_eq!(rows_by_study(&app, run).await, changed, "{backend:?}");
        let text = std::fs::read_to_string(
            app.data_dir
                .join(format!("exports/reference/run-{run}/CV_3_B.csv")),
        )
        .unwrap();
        assert!(text.contains("from trialflow"));

        // The trigger form's switch: everything again, then a fresh watermark.
        let (run, _) = run_to_end(
            &app,
            reference,
            json!({"incremental": true, "full_refresh": true}),
        )
        .await;
        let mut now_full = full.clone();
        now_full[0].1 = live_records(&app, "CV 3/B").await as u64;
        assert_eq!(rows_by_study(&app, run).await, now_full, "{backend:?}");
        let (run, _) = run_to_end(&app, reference, incremental.clone()).await;
        assert_eq!(rows_by_study(&app, run).await, nothing, "{backend:?}");

        // Without the switch on, an export is complete whatever was stored.
        let (run, _) = run_to_end(&app, reference, json!({})).await;
        assert_eq!(rows_by_study(&app, run).await, now_full, "{backend:?}");
    }
}

#[tokio::test]
async fn a_user_triggers_the_reference_pipeline_and_downloads_a_study_over_http() {
    let app = demo_app_with(Backend::Sqlite, &[]).await;
    let user = app.client_as(Role::User).await;
    let pipelines = user.get(app.url("/pipelines")).send().await.unwrap();
    assert_eq!(pipelines.status(), 200);
    assert!(
        pipelines
            .text()
            .await
            .unwrap()
            .contains("imednet_multi_study_reference")
    );

    let run = reference_run_over_http(&app, &user).await;

    // Bad parameters are named.
    let res = app
        .call(
            &user,
            "/api/user/trigger_run",
            &[
                ("pipeline_id", "imednet_multi_study_reference"),
                ("conf", r#"{"format": "docx"}"#),
            ],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("format"));

    // The run page (server-rendered) lists every study and links its file.
    let viewer = app.client_as(Role::Viewer).await;
    let page = viewer
        .get(app.url(&format!("/runs/{run}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for key in ["CV 3/B", "DEMO", "ONC-202"] {
        assert!(html.contains(key), "{key} missing from the run page");
    }
    let artifacts = app.db.run_artifacts(run).await.unwrap();
    let demo = artifacts
        .iter()
        .find(|a| a.uri.ends_with("/DEMO.csv"))
        .unwrap();
    let link = format!("/artifacts/{}/download", demo.id);
    assert!(html.contains(&link));
    // Files are named relative to the export root: a viewer never learns server paths.
    let server_dir = std::path::absolute(&app.data_dir).unwrap();
    let server_dir = server_dir.to_str().unwrap();
    assert!(
        !html.contains(server_dir),
        "the run page names {server_dir}"
    );
    let instance = viewer
        .get(app.url(&format!("/runs/{run}/instances/{}", demo.task_instance_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(instance.status(), 200);
    let instance_html = instance.text().await.unwrap();
    assert!(instance_html.contains(&format!("reference/run-{run}/DEMO.csv")));
    assert!(
        !instance_html.contains(server_dir),
        "the instance page names {server_dir}"
    );

    let file = viewer.get(app.url(&link)).send().await.unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["content-type"], "text/csv");
    assert!(
        file.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("DEMO.csv")
    );
    let bytes = file.bytes().await.unwrap();
    assert_eq!(sha256_hex(&bytes), demo.sha256);
    assert!(bytes.starts_with(b"recordId,subjectKey,"));

    // Signed out: sent to sign in; unknown ids: 404.
    let anonymous = crate::helpers::client();
    let res = anonymous.get(app.url(&link)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let res = viewer
        .get(app.url("/artifacts/999999/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// `trialflow bench export` end to end on a small study: one entry per format, each the median
/// of its repeated child-process runs, and a Parquet file's peak that a real export produced.
#[test]
fn bench_export_reports_the_median_of_repeated_runs() {
    let out = std::process::Command::new(crate::crash::binary())
        .args([
            "bench",
            "export",
            "--sizes",
            "1500",
            "--formats",
            "csv,parquet",
        ])
        .args(["--sdk-records", "0", "--repeat", "3"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let results = report["results"].as_array().expect("results");
    let formats: Vec<&str> = results
        .iter()
        .map(|r| r["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["csv", "parquet"]);
    for r in results {
        // The generator deletes ~2 % of records and exports skip them.
        let records = r["records"].as_u64().unwrap();
        assert!((1400..1500).contains(&records), "{r}");
        assert!(r["bytes"].as_u64().unwrap() > 0, "{r}");
        for key in ["records_per_s", "peak_rss_mb"] {
            let runs: Vec<f64> = r[format!("{key}_runs")]
                .as_array()
                .unwrap_or_else(|| panic!("{key}_runs in {r}"))
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(runs.len(), 3, "{r}");
            assert!(
                runs.windows(2).all(|w| w[0] <= w[1]) && runs[0] > 0.0,
                "{r}"
            );
            assert_eq!(r[key].as_f64(), Some(runs[1]), "{key} is the median: {r}");
        }
    }
    let bad = std::process::Command::new(crate::crash::binary())
        .args(["bench", "export", "--repeat", "0"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--repeat"));
}
