//! Property test: random pipelines (mapped and not, pools, per-run and per-task caps, several
//! runs) never exceed a limit at any instant. "Any instant" is checked by replaying the engine's
//! event log — every transition is written with its event in one transaction — and asserting
//! the limits after every single event.
use crate::engine::start_engine;
use crate::helpers::Backend;
use app::state::TaskState;
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone)]
struct TaskPlan {
    mapped: Option<usize>,
    pool: usize,
    pool_slots: u32,
    per_run_cap: Option<u32>,
    upstream: bool,
}

#[derive(Debug, Clone)]
struct Plan {
    max_active_tasks: u32,
    max_active_runs: u32,
    pools: Vec<u32>,
    tasks: Vec<TaskPlan>,
    runs: usize,
}

fn plan() -> impl Strategy<Value = Plan> {
    let task = (
        proptest::option::of(0usize..25),
        0usize..2,
        1u32..3,
        proptest::option::of(1u32..4),
        any::<bool>(),
    )
        .prop_map(
            |(mapped, pool, pool_slots, per_run_cap, upstream)| TaskPlan {
                mapped,
                pool,
                pool_slots,
                per_run_cap,
                upstream,
            },
        );
    (
        1u32..6,
        1u32..3,
        prop::collection::vec(2u32..5, 2),
        prop::collection::vec(task, 1..4),
        1usize..4,
    )
        .prop_map(
            |(max_active_tasks, max_active_runs, pools, tasks, runs)| Plan {
                max_active_tasks,
                max_active_runs,
                pools,
                tasks,
                runs,
            },
        )
}

fn yaml(p: &Plan) -> String {
    let mut y = format!(
        "id: prop\nmax_active_tasks: {}\nmax_active_runs: {}\ntasks:\n",
        p.max_active_tasks, p.max_active_runs
    );
    for (i, t) in p.tasks.iter().enumerate() {
        y.push_str(&format!(
            "  t{i}:\n    operator: sleep\n    pool: prop_pool_{}\n    pool_slots: {}\n",
            t.pool, t.pool_slots
        ));
        if let Some(cap) = t.per_run_cap {
            y.push_str(&format!("    max_active_tis_per_dagrun: {cap}\n"));
        }
        if t.upstream && i > 0 {
            y.push_str(&format!("    upstream: [t{}]\n", i - 1));
        }
        match t.mapped {
            Some(n) => {
                let items: Vec<String> = (0..n)
                    .map(|k| format!("{{seconds: 0.0{}}}", 1 + k % 3))
                    .collect();
                y.push_str(&format!("    expand_kwargs: [{}]\n", items.join(", ")));
            }
            None => y.push_str("    args: { seconds: 0.02 }\n"),
        }
    }
    y
}

async fn check(plan: Plan, backend: Backend) {
    let t = start_engine(backend, |c| c.workers = 12).await;
    for (i, slots) in plan.pools.iter().enumerate() {
        t.db.set_pool(&format!("prop_pool_{i}"), i64::from(*slots), "")
            .await
            .unwrap();
    }
    t.register(&yaml(&plan)).await;
    let mut runs = Vec::new();
    for _ in 0..plan.runs {
        runs.push(
            t.engine
                .trigger("prop", Default::default(), "prop", vec![])
                .await
                .unwrap(),
        );
    }
    for r in &runs {
        t.engine
            .wait_for_run(*r, Duration::from_secs(120))
            .await
            .unwrap();
    }
    t.engine.stop().await;

    // Who is who: instance → (run, task, pool, slots).
    let mut info = HashMap::new();
    for r in &runs {
        for ti in t.db.run_instances(*r).await.unwrap() {
            info.insert(
                ti.id,
                (
                    ti.run_id,
                    ti.task_id.clone(),
                    ti.pool.clone(),
                    ti.pool_slots,
                ),
            );
        }
    }
    let mut state: HashMap<i64, TaskState> = HashMap::new();
    let mut run_state: HashMap<i64, String> = HashMap::new();
    for e in t.db.events_since(0, 1_000_000).await.unwrap() {
        match e.kind.as_str() {
            "queued" => {
                for id in e.payload["ti_ids"].as_array().unwrap() {
                    let id = id.as_i64().unwrap();
                    // A queue event lists the candidates; only those still scheduled moved.
                    if state
                        .get(&id)
                        .is_none_or(|s| *s == TaskState::Scheduled || *s == TaskState::None)
                    {
                        state.insert(id, TaskState::Queued);
                    }
                }
            }
            "ti" => {
                let id = e.payload["ti_id"].as_i64().unwrap();
                state.insert(id, e.payload["state"].as_str().unwrap().parse().unwrap());
            }
            "run" => {
                run_state.insert(
                    e.payload["run_id"].as_i64().unwrap(),
                    e.payload["state"].as_str().unwrap().to_string(),
                );
            }
            _ => {}
        }
        // The limits, after this event.
        let mut per_run: HashMap<i64, i64> = HashMap::new();
        let mut per_task: HashMap<(i64, String), i64> = HashMap::new();
        let mut per_pool: HashMap<String, i64> = HashMap::new();
        for (id, s) in &state {
            if !s.holds_slot() {
                continue;
            }
            let Some((run, task, pool, slots)) = info.get(id) else {
                continue;
            };
            *per_run.entry(*run).or_default() += 1;
            *per_task.entry((*run, task.clone())).or_default() += 1;
            *per_pool.entry(pool.clone()).or_default() += slots;
        }
        for (run, n) in &per_run {
            assert!(
                *n <= i64::from(plan.max_active_tasks),
                "run {run}: {n} active > max_active_tasks at event {}",
                e.id
            );
        }
        for ((run, task), n) in &per_task {
            let i: usize = task.trim_start_matches('t').parse().unwrap();
            if let Some(cap) = plan.tasks[i].per_run_cap {
                assert!(
                    *n <= i64::from(cap),
                    "run {run} task {task}: {n} active > {cap} at event {}",
                    e.id
                );
            }
        }
        for (pool, used) in &per_pool {
            let i: usize = pool.trim_start_matches("prop_pool_").parse().unwrap();
            assert!(
                *used <= i64::from(plan.pools[i]),
                "pool {pool}: {used} slots used > {} at event {}",
                plan.pools[i],
                e.id
            );
        }
        let running_runs = run_state.values().filter(|s| *s == "running").count();
        assert!(
            running_runs <= plan.max_active_runs as usize,
            "{running_runs} runs running > max_active_runs at event {}",
            e.id
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn limits_hold_at_every_instant_on_sqlite(p in plan()) {
        tokio::runtime::Runtime::new().unwrap().block_on(check(p, Backend::Sqlite));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn limits_hold_at_every_instant_on_postgres(p in plan()) {
        tokio::runtime::Runtime::new().unwrap().block_on(check(p, Backend::Postgres));
    }
}
