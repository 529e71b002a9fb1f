//! Flows of flows on both backends: the acceptance points of docs/flows.md (a composed
//! flow1 → flow2 → flow3 whose flow3 receives the mapped value), run_and_return and its errors,
//! registration versions, and run options (name, start time).
use crate::helpers::{BACKENDS, Backend, TestApp, spawn_app_on};
use app::state::RunState;
use serde_json::{Map, Value, json};
use std::time::Duration;
use trialflow::engine::RunOptions;
use trialflow::flows::registry::{Registered, RegistryError, register};
use trialflow::flows::runner::{FlowRunError, Waiting, run_and_return};

const FLOW1: &str = r#"
id: flow1
params:
  text1: { type: string }
  text2: { type: string }
  filename: { type: string }
tasks:
  append_text:
    operator: echo
    args: { value: "{{ params.text1 }}{{ params.text2 }}" }
  save_text:
    operator: file.save
    args: { content: "{{ tasks.append_text.output }}", filename: "{{ params.filename }}", file_type: text }
"#;

const FLOW2: &str = r#"
id: flow2
params:
  file_rep: { type: object }
tasks:
  load_text:
    operator: file.load
    args: { file: "{{ params.file_rep }}" }
  save_db_result:
    operator: results.save
    args:
      project: trials
      inputs: { input1: "{{ tasks.load_text.output }}" }
      outputs: { output1: "{{ tasks.load_text.output }}" }
"#;

const FLOW3: &str = r#"
id: flow3
params:
  text1: { type: string }
  text2: { type: string }
tasks:
  check_equal:
    operator: assert.equal
    args: { left: "{{ params.text1 }}", right: "{{ params.text2 }}" }
"#;

const COMPOSED: &str = r#"
name: greeting_chain
project_name: trials
labels: []
composing_flows:
  - name: flow1
    project_name: trials
  - name: flow2
    project_name: trials
    mapped_parameters:
      file_rep:
        parent_flow_name: flow1
        parent_task_name: save_text
        map_type: file
  - name: flow3
    project_name: trials
    mapped_parameters:
      text1:
        parent_flow_name: flow2
        parent_task_name: save_db_result
        map_type: db
        attribute_index: [outputs, output1]
"#;

const ODD_FLOWS: &str = r#"
id: odd_flows
params:
  fail: { type: boolean, default: false }
  nap: { type: number, default: 0 }
tasks:
  nothing:
    operator: noop
  nap:
    operator: sleep
    args: { seconds: "{{ params.nap }}" }
  maybe_fail:
    operator: fail
    args: { times: "{{ 100 if params.fail else 0 }}" }
"#;

async fn reg(app: &TestApp, source: &str) -> Registered {
    register(&app.engine, "trials", "test.yaml", source, "tester", false)
        .await
        .unwrap_or_else(|e| panic!("registers: {e}"))
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn rr(
    app: &TestApp,
    flow: &str,
    p: Value,
    task: Option<&str>,
    timeout: Duration,
) -> Result<Value, FlowRunError> {
    run_and_return(
        &app.engine,
        flow,
        params(p),
        "tester",
        RunOptions::default(),
        task,
        Waiting {
            timeout,
            poll: Duration::from_millis(200),
        },
    )
    .await
}

const SECS_30: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_composed_flow_passes_file_and_stored_result_to_its_children() {
    for backend in BACKENDS {
        let app = spawn_app_on(backend).await;
        let f1 = reg(&app, FLOW1).await;
        let f2 = reg(&app, FLOW2).await;
        reg(&app, FLOW3).await;
        assert_eq!((f1.version, f1.created), (1, true));

        // 1. flow1 saves a text file; its result is the file reference.
        let file = rr(
            &app,
            "flow1",
            json!({"text1": "hey", "text2": " you", "filename": "greeting.txt"}),
            Some("save_text"),
            SECS_30,
        )
        .await
        .expect("flow1 runs");
        assert_eq!(
            file,
            json!({"filename": "greeting.txt", "file_type_string": "trialflow:File[Text]", "filesystem_identifier": "local"}),
            "{backend:?}"
        );
        let written =
            std::fs::read_to_string(app.data_dir.join("files/greeting.txt")).expect("file");
        assert_eq!(written, "hey you");

        // 2. flow2 loads it and stores a result; the reference resolves to the text and flow id.
        let reference = rr(
            &app,
            "flow2",
            json!({"file_rep": file}),
            Some("save_db_result"),
            SECS_30,
        )
        .await
        .expect("flow2 runs");
        assert_eq!(reference["project_name"], "trials");
        let output = trialflow::operators::flows::resolve_result(
            &app.db,
            &reference,
            &[json!("outputs"), json!("output1")],
        )
        .await
        .expect("resolves");
        assert_eq!(output, "hey you");
        let flow_id =
            trialflow::operators::flows::resolve_result(&app.db, &reference, &[json!("flow_id")])
                .await
                .expect("flow id");
        assert_eq!(flow_id, f2.flow_id.to_string());

        // 3. flow3 checks equality.
        assert!(
            rr(
                &app,
                "flow3",
                json!({"text1": "a", "text2": "a"}),
                None,
                SECS_30
            )
            .await
            .is_ok()
        );
        let err = rr(
            &app,
            "flow3",
            json!({"text1": "a", "text2": "b"}),
            None,
            SECS_30,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), "flow_failed", "{err}");

        // 4. The composition: flow3 receives text1 from flow2's stored result.
        let composed = reg(&app, COMPOSED).await;
        assert_eq!(composed.kind, "composition");
        let pipeline = app.engine.catalog.get("greeting_chain").expect("compiled");
        let exposed: Vec<&String> = pipeline.spec.params.keys().collect();
        assert_eq!(
            exposed,
            [
                "flow1-filename",
                "flow1-text1",
                "flow1-text2",
                "flow3-text2"
            ]
        );
        let conf = json!({"flow1-text1": "hey", "flow1-text2": " you", "flow1-filename": "chain.txt", "flow3-text2": "hey you"});
        let results = rr(
            &app,
            "greeting_chain",
            conf.clone(),
            None,
            Duration::from_secs(60),
        )
        .await
        .expect("composed run succeeds");
        let flow3 = &results["flow3"];
        assert_eq!(
            flow3["parameters"]["text1"], "hey you",
            "flow3 received the mapped value: {results}"
        );
        assert_eq!(
            flow3["references"]["text1"]["attribute_index"],
            json!(["outputs", "output1"])
        );
        let child = flow3["run_id"].as_i64().expect("child run");
        let child_conf: Value =
            serde_json::from_str(&app.db.run_row(child).await.unwrap().unwrap().conf).unwrap();
        assert_eq!(child_conf["text1"], "hey you");
        assert_eq!(
            results["flow2"]["parameters"]["file_rep"]["filename"],
            "chain.txt"
        );

        // A different expected text fails flow3, which fails the composed run.
        let mut wrong = conf.clone();
        wrong["flow3-text2"] = json!("someone else");
        let err = rr(&app, "greeting_chain", wrong, None, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "flow_failed");
        assert!(err.to_string().contains("flow3"), "{err}");

        // A failing child stops the chain: later children never start.
        let runs = app.db.list_runs(&Default::default()).await.unwrap();
        let failed_chain = runs
            .iter()
            .find(|r| r.pipeline_id == "greeting_chain" && r.state == "failed")
            .expect("failed chain");
        assert_eq!(failed_chain.state(), RunState::Failed);
    }
}

#[tokio::test]
async fn run_and_return_answers_each_failure_with_its_own_error() {
    let app = spawn_app_on(Backend::Sqlite).await;
    reg(&app, FLOW1).await;
    reg(&app, ODD_FLOWS).await;
    let all = rr(
        &app,
        "flow1",
        json!({"text1": "a", "text2": "b", "filename": "ab.txt"}),
        None,
        SECS_30,
    )
    .await
    .expect("all results");
    assert_eq!(
        all["append-text"], "ab",
        "results are keyed by task slug: {all}"
    );
    assert_eq!(all["save-text"]["filename"], "ab.txt");

    let err = rr(&app, "flow1", json!({}), Some("no_such_task"), SECS_30)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "task_not_in_flow");
    assert!(err.to_string().contains("append_text, save_text"), "{err}");
    let err = rr(&app, "odd_flows", json!({}), Some("nothing"), SECS_30)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "empty_result", "{err}");
    let err = rr(
        &app,
        "odd_flows",
        json!({"fail": true}),
        Some("maybe_fail"),
        SECS_30,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "flow_failed", "{err}");
    let err = rr(
        &app,
        "odd_flows",
        json!({"nap": 30}),
        None,
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    let FlowRunError::Timeout { run_id, .. } = err else {
        unreachable!()
    };
    let state = app
        .engine
        .wait_for_run(run_id, SECS_30)
        .await
        .expect("ends");
    assert_eq!(state, RunState::Canceled, "a timed-out run is canceled");
    let err = rr(&app, "no_such_flow", json!({}), None, SECS_30)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_started");
}

#[tokio::test]
async fn registering_is_idempotent_and_changes_make_versions() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let first = reg(&app, FLOW3).await;
    let again = reg(&app, FLOW3).await;
    assert_eq!(
        (again.flow_id, again.version, again.created),
        (first.flow_id, 1, false)
    );
    let changed = reg(&app, &FLOW3.replace("check_equal", "compare")).await;
    assert_eq!((changed.version, changed.created), (2, true));
    assert_ne!(changed.flow_id, first.flow_id);

    // A composition naming a flow that is not registered is refused with the line.
    let bad = COMPOSED.replace("- name: flow2", "- name: flow9");
    let err = register(&app.engine, "trials", "chain.yaml", &bad, "tester", false)
        .await
        .unwrap_err();
    let RegistryError::Spec(errors) = err else {
        panic!("spec errors")
    };
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().starts_with("chain.yaml:") && e.message.contains("flow9")),
        "{errors:?}"
    );
    // A flow name belongs to one project.
    let err = register(&app.engine, "other", "f.yaml", FLOW3, "tester", false)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
}

#[tokio::test]
async fn runs_can_be_named_and_scheduled() {
    let app = spawn_app_on(Backend::Sqlite).await;
    reg(&app, ODD_FLOWS).await;
    let start = trialflow::store::now_ms() + 1500;
    let run_id = app
        .engine
        .trigger_with(
            "odd_flows",
            Map::new(),
            "tester",
            RunOptions {
                run_name: Some("nightly".into()),
                start_after: Some(start),
                ..Default::default()
            },
        )
        .await
        .expect("trigger");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = app.db.run_row(run_id).await.unwrap().unwrap();
    assert_eq!(
        (run.state.as_str(), run.run_name.as_deref()),
        ("queued", Some("nightly"))
    );
    let state = app
        .engine
        .wait_for_run(run_id, SECS_30)
        .await
        .expect("ends");
    assert_eq!(state, RunState::Success);
    let run = app.db.run_row(run_id).await.unwrap().unwrap();
    assert!(
        run.started_at.expect("started") >= start,
        "it did not start early"
    );

    // Labels route a run's tasks to workers that advertise them (this app's worker has none, so
    // the run waits).
    let labelled = app
        .engine
        .trigger_with(
            "odd_flows",
            Map::new(),
            "tester",
            RunOptions {
                labels: vec!["gpu".into()],
                ..Default::default()
            },
        )
        .await
        .expect("trigger");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let tis = app.db.run_instances(labelled).await.unwrap();
    assert!(
        tis.iter()
            .all(|ti| ti.labels.contains("gpu") && ti.state != "success"),
        "{tis:?}"
    );
    app.engine
        .cancel_run(labelled, "tester")
        .await
        .expect("cancel");
}

#[tokio::test]
async fn flows_over_http_check_roles_and_answer_typed_errors() {
    use app::model::{FlowDetail, FlowInfo, FlowRegistered, Role};
    let app = spawn_app_on(Backend::Sqlite).await;
    let op = app.client_as(Role::Op).await;
    let user = app.client_as(Role::User).await;
    let viewer = app.client_as(Role::Viewer).await;
    let res = app
        .call(&viewer, "/api/op/register_flow", &[("source", FLOW1)])
        .await;
    assert_eq!(res.status(), 403);
    for source in [FLOW1, FLOW2, FLOW3] {
        let res = app
            .call(
                &op,
                "/api/op/register_flow",
                &[("source", source), ("project", "trials")],
            )
            .await;
        assert_eq!(
            res.status(),
            200,
            "{}",
            res.text().await.unwrap_or_default()
        );
    }
    let res = app
        .call(&op, "/api/op/validate_flow", &[("source", COMPOSED)])
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("flow1 → flow2 → flow3"));
    let bad = COMPOSED.replace("parent_task_name: save_text", "parent_task_name: save_txt");
    let res = app
        .call(&op, "/api/op/validate_flow", &[("source", &bad)])
        .await;
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert!(
        body.contains("flow.yaml:") && body.contains("save_txt"),
        "the error names the line and task: {body}"
    );
    let res = app
        .call(&op, "/api/op/register_flow", &[("source", COMPOSED)])
        .await;
    let registered: FlowRegistered = res.json().await.expect("registered");
    assert_eq!(
        (
            registered.kind.as_str(),
            registered.version,
            registered.created
        ),
        ("composition", 1, true)
    );

    let flows: Vec<FlowInfo> = app
        .call(&viewer, "/api/viewer/list_flows", &[])
        .await
        .json()
        .await
        .expect("flows");
    assert_eq!(flows.len(), 4);
    let detail: FlowDetail = app
        .call(
            &viewer,
            "/api/viewer/get_flow",
            &[("project", "trials"), ("name", "greeting_chain")],
        )
        .await
        .json()
        .await
        .expect("detail");
    let flow3 = detail
        .children
        .iter()
        .find(|c| c.name == "flow3")
        .expect("flow3");
    assert_eq!(flow3.mappings[0].map_type, "db");
    assert_eq!(
        flow3.mappings[0].attribute_index,
        r#"["outputs","output1"]"#
    );
    assert_eq!(flow3.exposed, ["flow3-text2"]);

    let conf = r#"{"flow1-text1": "hey", "flow1-text2": " you", "flow1-filename": "http.txt", "flow3-text2": "hey you"}"#;
    let res = app
        .call(
            &user,
            "/api/user/run_and_return",
            &[
                ("flow", "greeting_chain"),
                ("parameters", conf),
                ("task_name", "flow3"),
                ("poll_interval_seconds", "1"),
            ],
        )
        .await;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let flow3_result: Value = res.json().await.expect("json");
    assert_eq!(flow3_result["parameters"]["text1"], "hey you");

    let res = app
        .call(
            &user,
            "/api/user/run_and_return",
            &[("flow", "flow3"), ("task_name", "nope")],
        )
        .await;
    assert_eq!(res.status(), 404);
    let err: Value = res.json().await.expect("error");
    assert_eq!(err["FlowRun"]["kind"], "task_not_in_flow");
    let res = app
        .call(
            &user,
            "/api/user/run_flow",
            &[
                ("flow", "flow3"),
                ("parameters", r#"{"text1": "a", "text2": "a"}"#),
                ("run_name", "by hand"),
                ("scheduled_start_time", "tomorrow"),
            ],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("scheduled_start_time"));
    let res = app
        .call(
            &user,
            "/api/user/run_flow",
            &[
                ("flow", "flow3"),
                ("parameters", r#"{"text1": "a", "text2": "a"}"#),
                ("run_name", "by hand"),
                ("labels", ""),
            ],
        )
        .await;
    let run_id: i64 = res.json().await.expect("run id");
    assert_eq!(
        app.db
            .run_row(run_id)
            .await
            .unwrap()
            .unwrap()
            .run_name
            .as_deref(),
        Some("by hand")
    );
}

#[tokio::test]
async fn the_cli_registers_lists_and_validates_flows() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let file = dir.path().join("flow3.yaml");
    std::fs::write(&file, FLOW3).expect("write");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(crate::crash::binary())
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let path = file.to_str().expect("path");
    let (ok, text) = run(&["flows", "register", path, "--project", "trials"]);
    assert!(ok && text.contains("trials/flow3 version 1"), "{text}");
    let (ok, text) = run(&["flows", "register", path, "--project", "trials"]);
    assert!(ok && text.contains("unchanged"), "{text}");
    let (ok, text) = run(&["flows", "list"]);
    assert!(ok && text.contains("trials/flow3 v1"), "{text}");
    std::fs::write(&file, "id: broken\ntasks:\n  a: { operator: nope }\n").expect("write");
    let (ok, text) = run(&["flows", "validate", path]);
    assert!(!ok && text.contains("nope"), "{text}");
}

#[tokio::test]
async fn the_shipped_example_exports_summarises_and_publishes_with_the_mapped_total() {
    use crate::s3::Moto;
    let moto = Moto::start();
    moto.store().create_bucket("nightly").await.expect("bucket");
    // Demo mode registers the example flows and points imednet_default at the simulator
    // (and aws_default at its own S3 endpoint: here moto takes its place).
    let app = crate::helpers::spawn_demo_app().await;
    app.engine
        .connections()
        .save(&moto.replacing_demo_connection(Some("nightly")), "test")
        .await
        .expect("aws connection");
    let results = rr(
        &app,
        "nightly_exports",
        json!({}),
        None,
        Duration::from_secs(120),
    )
    .await
    .expect("the example succeeds");
    let exports = results["export-studies"]["results"]["export_records"]
        .as_array()
        .expect("exports")
        .clone();
    assert_eq!(exports.len(), 3, "one export per demo study");
    let total: i64 = exports
        .iter()
        .map(|e| e["rows"].as_i64().expect("rows"))
        .sum();
    let publish = &results["publish-exports"];
    assert_eq!(
        publish["parameters"]["total_rows"], total,
        "the total came from the stored summary"
    );
    assert!(publish["references"]["total_rows"]["$result"]["query"]["unique_hash"].is_string());
    let manifest_key = publish["results"]["publish"]["manifest_key"]
        .as_str()
        .expect("manifest key");
    let manifest: Value = serde_json::from_slice(
        &moto
            .store()
            .get_bytes("nightly", manifest_key)
            .await
            .expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["total_rows"], total);
    assert_eq!(manifest["files"].as_array().map(Vec::len), Some(3));
    for file in manifest["files"].as_array().expect("files") {
        let key = file["key"].as_str().expect("key");
        let bytes = moto
            .store()
            .get_bytes("nightly", key)
            .await
            .expect("object");
        assert_eq!(bytes.len() as i64, file["bytes"].as_i64().expect("bytes"));
    }
}

const ROUND_TRIP: &str = r#"
id: round_trip
params:
  filesystem: { type: string }
  filename: { type: string }
tasks:
  save:
    operator: file.save
    args: { content: { a: [1, 2] }, filename: "{{ params.filename }}", file_type: yaml, filesystem: "{{ params.filesystem }}" }
  load:
    operator: file.load
    args: { file: "{{ tasks.save.output }}" }
"#;

#[tokio::test]
async fn file_references_work_on_mounted_and_s3_filesystems_and_stay_inside() {
    use crate::s3::Moto;
    let moto = Moto::start();
    moto.store().create_bucket("lake").await.expect("bucket");
    let host = tempfile::tempdir().expect("host dir");
    let mount = format!("data=mounted:{}:/data", host.path().display());
    let app = crate::helpers::spawn_with(Backend::Sqlite, |args| {
        args.engine.filesystems = vec![mount, "lake=s3:lake/flows".into()];
    })
    .await;
    app.engine
        .connections()
        .save(&moto.connection(None), "test")
        .await
        .expect("aws connection");
    reg(&app, ROUND_TRIP).await;
    let loaded = rr(
        &app,
        "round_trip",
        json!({"filesystem": "data", "filename": "/data/out/x.yaml"}),
        Some("load"),
        SECS_30,
    )
    .await
    .expect("mounted round trip");
    assert_eq!(loaded, json!({"a": [1, 2]}));
    assert!(
        host.path().join("out/x.yaml").exists(),
        "written under the host path"
    );
    let loaded = rr(
        &app,
        "round_trip",
        json!({"filesystem": "lake", "filename": "y.yaml"}),
        Some("load"),
        SECS_30,
    )
    .await
    .expect("s3 round trip");
    assert_eq!(loaded, json!({"a": [1, 2]}));
    let object = moto
        .store()
        .get_bytes("lake", "flows/y.yaml")
        .await
        .expect("object");
    assert!(String::from_utf8_lossy(&object).contains("a:"));
    for (fs, name) in [
        ("data", "/etc/passwd"),
        ("data", "/data/../../etc/passwd"),
        ("local", "../secret.key"),
        ("nowhere", "x"),
    ] {
        let err = rr(
            &app,
            "round_trip",
            json!({"filesystem": fs, "filename": name}),
            None,
            SECS_30,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), "flow_failed", "{fs}:{name} is refused: {err}");
        assert!(
            err.to_string().contains(name.trim_start_matches("../")) || fs == "nowhere",
            "the error names the file: {err}"
        );
    }
}

#[tokio::test]
async fn a_failing_child_stops_the_later_ones_and_the_run_page_shows_children() {
    use app::model::{Role, RunDetail};
    let app = spawn_app_on(Backend::Sqlite).await;
    for source in [FLOW1, FLOW2, FLOW3, COMPOSED] {
        reg(&app, source).await;
    }
    // flow1 cannot write outside its filesystem: it fails, flow2 and flow3 never start.
    let conf = json!({"flow1-text1": "a", "flow1-text2": "b", "flow1-filename": "../escape.txt", "flow3-text2": "ab"});
    let err = rr(&app, "greeting_chain", conf, None, Duration::from_secs(60))
        .await
        .unwrap_err();
    let FlowRunError::FlowFailed { run_id, .. } = err else {
        panic!("flow failed: {err}")
    };
    let states: Vec<(String, String)> = app
        .db
        .run_instances(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|ti| (ti.task_id, ti.state))
        .collect();
    assert_eq!(
        states,
        [
            ("flow1".to_string(), "failed".to_string()),
            ("flow2".into(), "upstream_failed".into()),
            ("flow3".into(), "upstream_failed".into())
        ]
    );

    let conf = json!({"flow1-text1": "hey", "flow1-text2": " you", "flow1-filename": "page.txt", "flow3-text2": "hey you"});
    let run_id = app
        .engine
        .trigger("greeting_chain", params(conf), "tester", vec![])
        .await
        .expect("trigger");
    assert_eq!(
        app.engine
            .wait_for_run(run_id, Duration::from_secs(60))
            .await
            .expect("ends"),
        RunState::Success
    );
    let viewer = app.client_as(Role::Viewer).await;
    let run: RunDetail = app
        .call(
            &viewer,
            "/api/viewer/get_run",
            &[("run_id", &run_id.to_string())],
        )
        .await
        .json()
        .await
        .expect("run");
    let flows: Vec<&str> = run.children.iter().map(|c| c.flow.as_str()).collect();
    assert_eq!(flows, ["flow1", "flow2", "flow3"]);
    let flow3 = &run.children[2];
    assert!(flow3.run_id.is_some());
    assert!(
        flow3.parameters.contains("\"text1\": \"hey you\""),
        "{}",
        flow3.parameters
    );
    assert!(flow3.references.contains("$result"), "{}", flow3.references);
}
