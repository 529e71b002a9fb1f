//! The engine on both backends: mapping, limits, retries, timeouts, sensors, trigger rules,
//! operator actions and fencing. Runs are awaited through engine events, never by sleeping.
use crate::helpers::{BACKENDS, Backend, fresh_db};
use app::state::{RunState, TaskState};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use trialflow::engine::{ClearRequest, Engine, EngineConfig, EngineError};
use trialflow::operators::OperatorRegistry;
use trialflow::store::Db;
use trialflow::store::engine::TiRow;

pub struct TestEngine {
    pub engine: Arc<Engine>,
    pub db: Db,
    pub dir: tempfile::TempDir,
}

pub async fn start_engine(
    backend: Backend,
    configure: impl FnOnce(&mut EngineConfig),
) -> TestEngine {
    let (db, dir) = fresh_db(backend).await;
    let mut config = EngineConfig::new(dir.path().to_path_buf());
    config.idle_poll_ms = 200;
    configure(&mut config);
    let engine = Engine::start(db.clone(), config, OperatorRegistry::with_builtin())
        .await
        .expect("engine starts");
    TestEngine { engine, db, dir }
}

impl TestEngine {
    pub async fn register(&self, yaml: &str) {
        self.engine
            .catalog
            .register(
                &self.db,
                &self.engine.registry,
                "test.yaml",
                yaml,
                "api",
                true,
            )
            .await
            .unwrap_or_else(|e| panic!("pipeline is valid: {e}"));
    }

    pub async fn run(&self, pipeline: &str, conf: Value) -> (i64, RunState) {
        let id = self
            .engine
            .trigger(
                pipeline,
                conf.as_object().cloned().unwrap_or_default(),
                "tester",
                vec![],
            )
            .await
            .expect("trigger");
        let state = self
            .engine
            .wait_for_run(id, Duration::from_secs(60))
            .await
            .expect("run ends");
        (id, state)
    }

    pub async fn tis(&self, run_id: i64, task: &str) -> Vec<TiRow> {
        self.db.instances(run_id, task).await.expect("instances")
    }
}

fn states(tis: &[TiRow]) -> Vec<TaskState> {
    tis.iter().map(TiRow::state).collect()
}

const MAPPED: &str = r#"
id: mapped
params:
  studies: { type: array, default: [{study_key: "CV 3/B"}, {study_key: DEMO}, {study_key: ONC-202}] }
tasks:
  discover:
    operator: echo
    args: { value: "{{ params.studies }}" }
  export:
    operator: echo
    partial: { root: out }
    expand_kwargs: "{{ tasks.discover.output }}"
    map_key: "{{ item.study_key }}"
  summary:
    operator: echo
    args: { value: "{{ tasks.export.output | length }}" }
"#;

#[tokio::test]
async fn mapped_tasks_expand_one_instance_per_element_keyed_by_name() {
    for backend in BACKENDS {
        let t = start_engine(backend, |_| {}).await;
        t.register(MAPPED).await;
        let (run, state) = t.run("mapped", json!({})).await;
        assert_eq!(state, RunState::Success, "{backend:?}");
        let export = t.tis(run, "export").await;
        let keys: Vec<_> = export
            .iter()
            .map(|ti| ti.map_key.clone().unwrap_or_default())
            .collect();
        assert_eq!(keys, ["CV 3/B", "DEMO", "ONC-202"]);
        assert_eq!(
            export.iter().map(|t| t.map_index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let first: Value = serde_json::from_str(export[0].input.as_deref().unwrap()).unwrap();
        assert_eq!(first, json!({"root": "out", "study_key": "CV 3/B"}));
        let summary = t.tis(run, "summary").await;
        assert_eq!(
            summary[0].output.as_deref(),
            Some("3"),
            "downstream sees the list of mapped results"
        );

        // Empty input: the mapped task is skipped, and so is what needs it.
        let (run, state) = t.run("mapped", json!({"studies": []})).await;
        assert_eq!(state, RunState::Success);
        assert_eq!(states(&t.tis(run, "export").await), [TaskState::Skipped]);
        assert_eq!(states(&t.tis(run, "summary").await), [TaskState::Skipped]);
        t.engine.stop().await;
    }
}

#[tokio::test]
async fn expand_crosses_lists_and_refuses_oversized_maps() {
    let t = start_engine(Backend::Sqlite, |c| c.max_map_length = 5).await;
    t.register(
        "id: cross\ntasks:\n  pair:\n    operator: echo\n    expand: { a: [1, 2], b: [x, y] }\n",
    )
    .await;
    let (run, state) = t.run("cross", json!({})).await;
    assert_eq!(state, RunState::Success);
    let inputs: Vec<Value> = t
        .tis(run, "pair")
        .await
        .iter()
        .map(|ti| serde_json::from_str(ti.input.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(
        inputs,
        [
            json!({"a": 1, "b": "x"}),
            json!({"a": 1, "b": "y"}),
            json!({"a": 2, "b": "x"}),
            json!({"a": 2, "b": "y"})
        ]
    );

    t.register(
        "id: big\ntasks:\n  many:\n    operator: echo\n    expand: { a: [1, 2, 3], b: [x, y] }\n",
    )
    .await;
    let (run, state) = t.run("big", json!({})).await;
    assert_eq!(state, RunState::Failed);
    let ti = &t.tis(run, "many").await[0];
    assert_eq!(
        ti.error.as_deref(),
        Some(
            "task 'many' expands to 6 instances, over the limit of 5 (raise it with --max-map-length)"
        )
    );
    t.engine.stop().await;
}

#[tokio::test]
async fn retries_back_off_and_count_every_try() {
    for backend in BACKENDS {
        let t = start_engine(backend, |_| {}).await;
        t.register("id: flaky\ntasks:\n  f:\n    operator: fail\n    args: { times: 2 }\n    retries: 3\n    retry_delay: 50ms\n    retry_exponential_backoff: true\n  fatal:\n    operator: fail\n    args: { fatal: true }\n    retries: 5\n    retry_delay: 10ms\n").await;
        let (run, state) = t.run("flaky", json!({})).await;
        assert_eq!(
            state,
            RunState::Failed,
            "{backend:?}: the fatal task fails the run"
        );
        let f = &t.tis(run, "f").await[0];
        assert_eq!((f.state(), f.try_number), (TaskState::Success, 3));
        let attempts = t.db.attempts(f.id).await.unwrap();
        assert_eq!(
            attempts
                .iter()
                .map(|a| a.state.as_str())
                .collect::<Vec<_>>(),
            ["failed", "failed", "success"]
        );
        let gap = attempts[2].started_at - attempts[1].ended_at.unwrap();
        assert!(
            gap >= 25,
            "second retry waited at least half of 100 ms: {gap}"
        );
        let fatal = &t.tis(run, "fatal").await[0];
        assert_eq!(
            (fatal.state(), fatal.try_number),
            (TaskState::Failed, 1),
            "fatal errors are not retried"
        );
        t.engine.stop().await;
    }
}

#[tokio::test]
async fn execution_timeout_cancels_the_attempt_and_retries() {
    let t = start_engine(Backend::Sqlite, |_| {}).await;
    t.register("id: slow\ntasks:\n  s:\n    operator: sleep\n    args: { seconds: 30 }\n    execution_timeout: 200ms\n    retries: 1\n    retry_delay: 10ms\n").await;
    let started = std::time::Instant::now();
    let (run, state) = t.run("slow", json!({})).await;
    assert_eq!(state, RunState::Failed);
    assert!(started.elapsed() < Duration::from_secs(10));
    let ti = &t.tis(run, "s").await[0];
    assert_eq!(ti.try_number, 2);
    assert_eq!(
        ti.error.as_deref(),
        Some("timed out after 200ms (execution_timeout)")
    );
    t.engine.stop().await;
}

#[tokio::test]
async fn trigger_rules_and_upstream_failed_propagate() {
    let t = start_engine(Backend::Sqlite, |_| {}).await;
    t.register(
        "id: rules\ntasks:\n  bad: { operator: fail, args: { fatal: true } }\n  next: { operator: noop, upstream: [bad] }\n  after_next: { operator: noop, upstream: [next] }\n  cleanup: { operator: noop, upstream: [bad], trigger_rule: all_done }\n  alert: { operator: noop, upstream: [bad], trigger_rule: one_failed }\n",
    )
    .await;
    let (run, state) = t.run("rules", json!({})).await;
    assert_eq!(state, RunState::Failed);
    assert_eq!(
        states(&t.tis(run, "next").await),
        [TaskState::UpstreamFailed]
    );
    assert_eq!(
        states(&t.tis(run, "after_next").await),
        [TaskState::UpstreamFailed]
    );
    assert_eq!(states(&t.tis(run, "cleanup").await), [TaskState::Success]);
    assert_eq!(states(&t.tis(run, "alert").await), [TaskState::Success]);
    t.engine.stop().await;
}

#[tokio::test]
async fn sensors_reschedule_time_out_without_retry_and_soft_fail() {
    for backend in BACKENDS {
        let t = start_engine(backend, |_| {}).await;
        let flag = t.dir.path().join("flag");
        t.register(&format!(
            "id: sense\ntasks:\n  wait:\n    operator: file.exists\n    args: {{ path: \"{}\" }}\n    mode: reschedule\n    poke_interval: 50ms\n    timeout: 20s\n",
            flag.display()
        ))
        .await;
        let run = t
            .engine
            .trigger("sense", Default::default(), "tester", vec![])
            .await
            .unwrap();
        // Let it poke a few times, holding no slot in between, then create the file.
        let mut events = t.engine.subscribe();
        let mut reschedules = 0;
        while reschedules < 2 {
            let e = events.recv().await.unwrap();
            if e.run_id == Some(run) && e.payload["state"] == "up_for_reschedule" {
                reschedules += 1;
            }
        }
        std::fs::write(&flag, b"x").unwrap();
        assert_eq!(
            t.engine
                .wait_for_run(run, Duration::from_secs(30))
                .await
                .unwrap(),
            RunState::Success,
            "{backend:?}"
        );
        let ti = &t.tis(run, "wait").await[0];
        assert_eq!(ti.try_number, 1, "pokes are not tries");
        assert!(
            t.db.attempts(ti.id)
                .await
                .unwrap()
                .iter()
                .filter(|a| a.state == "rescheduled")
                .count()
                >= 2
        );

        t.register("id: timeout\ntasks:\n  w: { operator: file.exists, args: { path: /nonexistent/x }, poke_interval: 20ms, timeout: 100ms, retries: 3 }\n  soft: { operator: file.exists, args: { path: /nonexistent/y }, poke_interval: 20ms, timeout: 100ms, soft_fail: true }\n").await;
        let (run, state) = t.run("timeout", json!({})).await;
        assert_eq!(state, RunState::Failed);
        let w = &t.tis(run, "w").await[0];
        assert_eq!(
            (w.state(), w.try_number),
            (TaskState::Failed, 1),
            "a sensor timeout is not retried"
        );
        assert!(
            w.error
                .as_deref()
                .unwrap()
                .starts_with("sensor timed out after 100ms")
        );
        assert_eq!(states(&t.tis(run, "soft").await), [TaskState::Skipped]);
        t.engine.stop().await;
    }
}

#[tokio::test]
async fn params_are_validated_at_trigger() {
    let t = start_engine(Backend::Sqlite, |_| {}).await;
    t.register(
        "id: p\nparams:\n  n: { type: integer, minimum: 1 }\ntasks:\n  a: { operator: noop }\n",
    )
    .await;
    let err = t
        .engine
        .trigger(
            "p",
            json!({"n": 0, "x": 1}).as_object().cloned().unwrap(),
            "t",
            vec![],
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("n: must be at least 1") && text.contains("x: unknown parameter"),
        "{text}"
    );
    assert!(matches!(
        t.engine
            .trigger("nope", Default::default(), "t", vec![])
            .await,
        Err(EngineError::NotFound(_))
    ));
    t.engine.stop().await;
}

#[tokio::test]
async fn cancel_clear_and_mark() {
    for backend in BACKENDS {
        let t = start_engine(backend, |_| {}).await;
        t.register("id: long\ntasks:\n  s: { operator: sleep, args: { seconds: 30 } }\n  after: { operator: noop, upstream: [s] }\n").await;
        let run = t
            .engine
            .trigger("long", Default::default(), "tester", vec![])
            .await
            .unwrap();
        let mut events = t.engine.subscribe();
        while !matches!(t.tis(run, "s").await[0].state(), TaskState::Running) {
            let _ = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        }
        t.engine.cancel_run(run, "tester").await.unwrap();
        assert_eq!(
            t.engine
                .wait_for_run(run, Duration::from_secs(10))
                .await
                .unwrap(),
            RunState::Canceled
        );
        assert_eq!(states(&t.tis(run, "s").await), [TaskState::Failed]);
        assert_eq!(states(&t.tis(run, "after").await), [TaskState::Skipped]);

        // One study fails; clearing only the failed instances re-runs just that one.
        t.register("id: some_fail\ntasks:\n  work:\n    operator: fail\n    expand_kwargs: [{times: 0}, {times: 5}, {times: 0}]\n  done: { operator: noop, upstream: [work] }\n").await;
        let (run, state) = t.run("some_fail", json!({})).await;
        assert_eq!(state, RunState::Failed, "{backend:?}");
        assert_eq!(
            states(&t.tis(run, "work").await),
            [TaskState::Success, TaskState::Failed, TaskState::Success]
        );
        assert_eq!(
            states(&t.tis(run, "done").await),
            [TaskState::UpstreamFailed]
        );
        let before: Vec<i64> = t
            .tis(run, "work")
            .await
            .iter()
            .map(|ti| ti.try_number)
            .collect();
        let n = t
            .engine
            .clear(
                run,
                &ClearRequest {
                    task_id: "work".into(),
                    only_failed: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(n, 2, "the failed instance and the blocked downstream task");
        assert_eq!(
            t.engine
                .wait_for_run(run, Duration::from_secs(30))
                .await
                .unwrap(),
            RunState::Failed,
            "it fails again: times 5"
        );
        let after: Vec<i64> = t
            .tis(run, "work")
            .await
            .iter()
            .map(|ti| ti.try_number)
            .collect();
        assert_eq!(
            (after[0], after[2]),
            (before[0], before[2]),
            "the successful instances did not run again"
        );
        assert_eq!(after[1], before[1] + 1);

        t.engine
            .mark(run, "work", Some(1), TaskState::Success, "tester")
            .await
            .unwrap();
        let end = t
            .engine
            .wait_for_run(run, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            end,
            RunState::Success,
            "{backend:?} work={:?} done={:?}",
            states(&t.tis(run, "work").await),
            t.tis(run, "done").await
        );
        assert_eq!(states(&t.tis(run, "done").await), [TaskState::Success]);
        t.engine.stop().await;
    }
}

#[tokio::test]
async fn a_stale_fence_is_rejected() {
    use trialflow::store::engine::Completion;
    let t = start_engine(Backend::Sqlite, |c| c.workers = 0).await;
    t.register("id: f\ntasks:\n  a: { operator: noop }\n").await;
    let run = t
        .engine
        .trigger("f", Default::default(), "tester", vec![])
        .await
        .unwrap();
    t.engine.tick().await.unwrap();
    let (claimed, _) = t.db.claim("w1", &[], 1, 30_000).await.unwrap();
    let c = &claimed[0];
    assert_eq!(c.run_id, run);
    // An operator marks it while "w1" still runs it; w1's result then arrives late.
    t.engine
        .mark(run, "a", None, TaskState::Failed, "tester")
        .await
        .unwrap();
    let late =
        t.db.complete_attempt(
            c.id,
            c.fence,
            c.attempt_id,
            &Completion::Success { output: json!(1) },
        )
        .await
        .unwrap();
    assert!(late.is_none(), "the late write is rejected");
    let ti = &t.tis(run, "a").await[0];
    assert_eq!(ti.state(), TaskState::Failed);
    assert_eq!(t.db.attempts(ti.id).await.unwrap()[0].state, "superseded");
    t.engine.stop().await;
}

#[tokio::test]
async fn max_active_runs_queues_extra_runs() {
    let t = start_engine(Backend::Sqlite, |_| {}).await;
    t.register("id: one_at_a_time\nmax_active_runs: 1\ntasks:\n  s: { operator: sleep, args: { seconds: 0.2 } }\n").await;
    let a = t
        .engine
        .trigger("one_at_a_time", Default::default(), "t", vec![])
        .await
        .unwrap();
    let b = t
        .engine
        .trigger("one_at_a_time", Default::default(), "t", vec![])
        .await
        .unwrap();
    t.engine
        .wait_for_run(b, Duration::from_secs(30))
        .await
        .unwrap();
    let ra = t.db.run_row(a).await.unwrap().unwrap();
    let rb = t.db.run_row(b).await.unwrap().unwrap();
    assert!(
        rb.started_at.unwrap() >= ra.ended_at.unwrap(),
        "b started only after a ended"
    );
    t.engine.stop().await;
}

#[tokio::test]
async fn command_operator_runs_a_process() {
    let t = start_engine(Backend::Sqlite, |_| {}).await;
    let script = r#"read input; echo "got $input" >&2; echo "{\"n\": $(echo "$TRIALFLOW_ARGS" | wc -c), \"task\": \"$TRIALFLOW_TASK_ID\"}""#;
    t.register(&format!(
        "id: cmd\ntasks:\n  run:\n    operator: command\n    args: {{ argv: [sh, -c, {}], input: {{ hello: world }} }}\n  hang:\n    operator: command\n    args: {{ argv: [sh, -c, \"sleep 60 & sleep 60\"] }}\n    execution_timeout: 300ms\n",
        serde_json::to_string(script).unwrap()
    ))
    .await;
    let (run, state) = t.run("cmd", json!({})).await;
    assert_eq!(state, RunState::Failed, "the hanging one times out");
    let ti = &t.tis(run, "run").await[0];
    let out: Value = serde_json::from_str(ti.output.as_deref().unwrap()).unwrap();
    assert_eq!(out["task"], "run");
    let attempt = &t.db.attempts(ti.id).await.unwrap()[0];
    let log: Vec<String> =
        t.db.task_log(attempt.id, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
    assert!(
        log.iter().any(|l| l == r#"got {"hello":"world"}"#),
        "{log:?}"
    );
    let hang = &t.tis(run, "hang").await[0];
    assert_eq!(
        hang.error.as_deref(),
        Some("timed out after 300ms (execution_timeout)")
    );
    // The whole process group was killed: no stray `sleep 60` of this test remains.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 60 & sleep 60"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "process group killed"
    );
    t.engine.stop().await;
}

#[tokio::test]
async fn labelled_tasks_run_only_on_matching_workers() {
    let t = start_engine(Backend::Postgres, |c| {
        c.worker_labels = vec!["general".into()]
    })
    .await;
    t.register("id: gpu\ntasks:\n  any: { operator: noop }\n  needs_gpu: { operator: noop, labels: [gpu] }\n").await;
    let run = t
        .engine
        .trigger("gpu", Default::default(), "t", vec![])
        .await
        .unwrap();
    let mut events = t.engine.subscribe();
    while t.tis(run, "any").await[0].state() != TaskState::Success {
        let _ = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    }
    // The general worker leaves the gpu task queued…
    t.engine.tick().await.unwrap();
    assert_eq!(states(&t.tis(run, "needs_gpu").await), [TaskState::Queued]);
    // …until a worker with that label joins (another process would do the same).
    let mut config = EngineConfig::new(t.dir.path().to_path_buf());
    config.scheduler = false;
    config.worker_labels = vec!["gpu".into()];
    let gpu = Engine::start(t.db.clone(), config, OperatorRegistry::with_builtin())
        .await
        .unwrap();
    assert_eq!(
        t.engine
            .wait_for_run(run, Duration::from_secs(30))
            .await
            .unwrap(),
        RunState::Success
    );
    let ti = &t.tis(run, "needs_gpu").await[0];
    assert_eq!(
        t.db.attempts(ti.id).await.unwrap()[0].worker,
        gpu.config.worker_id
    );
    gpu.stop().await;
    t.engine.stop().await;
}

#[tokio::test]
async fn cron_schedules_create_runs() {
    let t = start_engine(Backend::Sqlite, |_| {}).await;
    t.register("id: every_second\nschedule: \"* * * * * *\"\ntasks:\n  a: { operator: noop }\n")
        .await;
    let mut events = t.engine.subscribe();
    let run_id = loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("a scheduled run")
            .unwrap();
        if e.kind == "run" && e.payload["state"] == "queued" {
            break e.run_id.unwrap();
        }
    };
    let run = t.db.run_row(run_id).await.unwrap().unwrap();
    assert_eq!(
        (run.pipeline_id.as_str(), run.run_trigger.as_str()),
        ("every_second", "schedule")
    );
    assert!(
        t.db.set_pipeline_paused("every_second", true)
            .await
            .unwrap()
    );
    t.engine.stop().await;
}

#[tokio::test]
async fn only_admins_register_command_pipelines_and_the_default_pool_stays() {
    let t = start_engine(Backend::Sqlite, |_| {}).await;
    let yaml = "id: shell\ntasks:\n  run: { operator: command, args: { argv: [\"true\"] } }\n";
    let err = t
        .engine
        .catalog
        .register(&t.db, &t.engine.registry, "shell.yaml", yaml, "api", false)
        .await
        .unwrap_err();
    assert!(err.message.contains("only admins may register it"), "{err}");
    assert!(
        t.engine
            .catalog
            .register(&t.db, &t.engine.registry, "shell.yaml", yaml, "api", true)
            .await
            .is_ok()
    );

    assert!(
        !t.db.delete_pool("default_pool").await.unwrap(),
        "the default pool cannot be deleted"
    );
    let pools = t.db.pools().await.unwrap();
    assert!(
        pools
            .iter()
            .any(|p| p.name == "default_pool" && p.slots == 128 && p.builtin)
    );
    t.engine.stop().await;
}
