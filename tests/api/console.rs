//! The operator console over HTTP, on both backends: instance paging/filter/sort/search done by
//! the server, run actions with roles and audit, the generated trigger form's field errors,
//! pools, the audit log, pages with JavaScript off, and the live event streams (coalesced,
//! resumable with Last-Event-ID, signed-in only).
use crate::helpers::{BACKENDS, Backend, TestApp, client, spawn_app_on};
use app::model::{AuditPage, InstancePage, PoolInfo, Role, RunDetail, RunList};
use app::state::RunState;
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

const FANOUT: &str = r#"
id: fanout
params:
  n: { type: integer, default: 120, minimum: 1, maximum: 1000 }
  label: { type: string, default: "S" }
tasks:
  export:
    operator: echo
    partial: { rows: 7 }
    expand: { i: "{{ range(1000, 1000 + params.n) | list }}" }
    map_key: "{{ params.label }}-{{ item.i }}"
  summary:
    operator: echo
    args: { value: "{{ tasks.export.output | length }}" }
"#;

async fn register(app: &TestApp, yaml: &str) {
    app.engine
        .catalog
        .register(
            &app.db,
            &app.engine.registry,
            "test.yaml",
            yaml,
            "api",
            true,
        )
        .await
        .unwrap_or_else(|e| panic!("pipeline is valid: {e}"));
}

async fn finished_run(app: &TestApp, user: &reqwest::Client) -> i64 {
    let res = app
        .call(user, "/api/user/trigger_run", &[("pipeline_id", "fanout")])
        .await;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let run_id: i64 = res.json().await.expect("run id");
    let state = app
        .engine
        .wait_for_run(run_id, Duration::from_secs(60))
        .await
        .expect("run ends");
    assert_eq!(state, RunState::Success);
    run_id
}

async fn page(
    app: &TestApp,
    c: &reqwest::Client,
    run_id: i64,
    query: &[(&str, &str)],
) -> reqwest::Response {
    let run = run_id.to_string();
    let mut form = vec![("run_id", run.as_str())];
    form.extend(query.iter().copied());
    app.call(c, "/api/viewer/list_instances", &form).await
}

async fn instances(
    app: &TestApp,
    c: &reqwest::Client,
    run_id: i64,
    query: &[(&str, &str)],
) -> InstancePage {
    let res = page(app, c, run_id, query).await;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    res.json().await.expect("instance page")
}

fn keys(p: &InstancePage) -> Vec<String> {
    p.rows
        .iter()
        .map(|r| r.map_key.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn instance_table_is_paged_filtered_sorted_and_searched_on_the_server() {
    for backend in BACKENDS {
        let app = spawn_app_on(backend).await;
        register(&app, FANOUT).await;
        let user = app.client_as(Role::User).await;
        let run_id = finished_run(&app, &user).await;
        let viewer = app.client_as(Role::Viewer).await;

        let first = instances(&app, &viewer, run_id, &[("query[task]", "export")]).await;
        assert_eq!(
            (first.total, first.rows.len(), first.page),
            (120, 50, 1),
            "{backend:?}"
        );
        assert_eq!(keys(&first)[..3], ["S-1000", "S-1001", "S-1002"]);
        assert_eq!(
            first.rows[0].rows,
            Some(7),
            "the output summary carries rows"
        );

        let last = instances(
            &app,
            &viewer,
            run_id,
            &[("query[task]", "export"), ("query[page]", "3")],
        )
        .await;
        assert_eq!(last.rows.len(), 20);
        assert_eq!(keys(&last).last().map(String::as_str), Some("S-1119"));

        let found = instances(&app, &viewer, run_id, &[("query[q]", "s-101")]).await;
        assert_eq!(
            found.total, 10,
            "search is a case-insensitive substring of the key"
        );
        assert!(keys(&found).iter().all(|k| k.starts_with("S-101")));

        // `%` and `_` are literal in a search, not wildcards.
        let none = instances(&app, &viewer, run_id, &[("query[q]", "S_10")]).await;
        assert_eq!(none.total, 0);

        let desc = instances(
            &app,
            &viewer,
            run_id,
            &[
                ("query[task]", "export"),
                ("query[sort]", "key"),
                ("query[dir]", "desc"),
            ],
        )
        .await;
        assert_eq!(keys(&desc)[0], "S-1119");

        let both_tasks = instances(&app, &viewer, run_id, &[("query[state]", "success")]).await;
        assert_eq!(both_tasks.total, 121, "120 exports and the summary");

        for (field, query) in [
            ("sort", ("query[sort]", "id; DROP TABLE runs")),
            ("state", ("query[state]", "exploded")),
            ("dir", ("query[dir]", "sideways")),
        ] {
            let res = page(&app, &viewer, run_id, &[query]).await;
            assert_eq!(res.status(), 400);
            let body = res.text().await.unwrap_or_default();
            assert!(body.contains(field), "the error names {field}: {body}");
        }
        let missing = page(&app, &viewer, 999_999, &[]).await;
        assert_eq!(missing.status(), 404);

        // The run summary counts per task without loading instances.
        let res = app
            .call(
                &viewer,
                "/api/viewer/get_run",
                &[("run_id", &run_id.to_string())],
            )
            .await;
        let run: RunDetail = res.json().await.expect("run");
        let export = run
            .tasks
            .iter()
            .find(|t| t.task_id == "export")
            .expect("export task");
        assert_eq!((export.total, export.done, export.mapped), (120, 120, true));
        assert_eq!(run.instance_count, 121);
    }
}

#[tokio::test]
async fn actions_check_roles_change_state_and_are_audited() {
    for backend in BACKENDS {
        let app = spawn_app_on(backend).await;
        register(&app, FANOUT).await;
        let user = app.client_as(Role::User).await;
        let viewer = app.client_as(Role::Viewer).await;
        let run_id = finished_run(&app, &user).await;
        let run = run_id.to_string();
        let target = instances(&app, &viewer, run_id, &[("query[q]", "S-1042")])
            .await
            .rows[0]
            .clone();
        let ti = target.id.to_string();

        // A viewer is refused on the server, whatever the page shows.
        for (path, form) in [
            (
                "/api/user/run_action",
                vec![
                    ("run_id", run.as_str()),
                    ("action", "mark_failed"),
                    ("ti_id", ti.as_str()),
                ],
            ),
            ("/api/user/retrigger_run", vec![("run_id", run.as_str())]),
            ("/api/user/trigger_form", vec![("pipeline_id", "fanout")]),
        ] {
            let res = app.call(&viewer, path, &form).await;
            assert_eq!(res.status(), 403, "{path} as viewer");
        }
        let res = app
            .call(
                &user,
                "/api/user/run_action",
                &[("run_id", &run), ("action", "explode")],
            )
            .await;
        assert_eq!(res.status(), 400);
        assert!(
            res.text()
                .await
                .unwrap_or_default()
                .contains("clear_failed"),
            "unknown actions list the known ones"
        );

        let res = app
            .call(
                &user,
                "/api/user/run_action",
                &[("run_id", &run), ("action", "mark_failed"), ("ti_id", &ti)],
            )
            .await;
        assert_eq!(
            res.status(),
            200,
            "{}",
            res.text().await.unwrap_or_default()
        );
        let state = app
            .engine
            .wait_for_run(run_id, Duration::from_secs(30))
            .await
            .expect("run ends");
        assert_eq!(
            state,
            RunState::Failed,
            "{backend:?}: a failed instance fails the run"
        );
        let failed = instances(&app, &viewer, run_id, &[("query[state]", "failed")]).await;
        assert_eq!(keys(&failed), ["S-1042"]);

        let res = app
            .call(
                &user,
                "/api/user/run_action",
                &[("run_id", &run), ("action", "clear_failed")],
            )
            .await;
        assert_eq!(
            res.status(),
            200,
            "{}",
            res.text().await.unwrap_or_default()
        );
        let message: String = res.json().await.expect("message");
        assert!(message.contains("Cleared 1 failed"), "{message}");
        let state = app
            .engine
            .wait_for_run(run_id, Duration::from_secs(30))
            .await
            .expect("run ends");
        assert_eq!(state, RunState::Success);
        let again = instances(&app, &viewer, run_id, &[("query[q]", "S-1042")])
            .await
            .rows[0]
            .clone();
        assert_eq!(
            again.try_number,
            target.try_number + 1,
            "only the cleared instance ran again"
        );
        let untouched = instances(&app, &viewer, run_id, &[("query[q]", "S-1041")])
            .await
            .rows[0]
            .clone();
        assert_eq!(untouched.try_number, 1);

        // Nothing failed any more: clearing failed instances says so.
        let res = app
            .call(
                &user,
                "/api/user/run_action",
                &[("run_id", &run), ("action", "clear_failed")],
            )
            .await;
        assert_eq!(res.status(), 409);

        let res = app
            .call(&user, "/api/user/retrigger_run", &[("run_id", &run)])
            .await;
        let new_run: i64 = res.json().await.expect("new run id");
        assert_ne!(new_run, run_id);
        app.engine
            .wait_for_run(new_run, Duration::from_secs(60))
            .await
            .expect("ends");
        let conf = |id: i64| {
            let db = app.db.clone();
            async move { db.run_row(id).await.expect("row").expect("run").conf }
        };
        assert_eq!(conf(new_run).await, conf(run_id).await, "same parameters");

        let admin = app.client_as(Role::Admin).await;
        let res = app
            .call(&admin, "/api/admin/audit_log", &[("action", "run.")])
            .await;
        let audit: AuditPage = res.json().await.expect("audit page");
        let actions: Vec<&str> = audit.entries.iter().map(|e| e.action.as_str()).collect();
        for wanted in [
            "run.mark_failed",
            "run.clear_failed",
            "run.retrigger",
            "run.trigger",
        ] {
            assert!(actions.contains(&wanted), "{wanted} in {actions:?}");
        }
        assert!(audit.entries.iter().all(|e| e.actor == "user-user"));
        let res = app.call(&user, "/api/admin/audit_log", &[]).await;
        assert_eq!(res.status(), 403, "only admins read the audit log");
    }
}

#[tokio::test]
async fn the_trigger_form_types_fields_and_names_each_wrong_one() {
    let app = spawn_app_on(Backend::Sqlite).await;
    register(&app, FANOUT).await;
    let user = app.client_as(Role::User).await;
    let res = app
        .call(
            &user,
            "/api/user/trigger_form",
            &[
                ("pipeline_id", "fanout"),
                ("fields[n]", "many"),
                ("fields[colour]", "red"),
            ],
        )
        .await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.expect("error json");
    let fields = err["Fields"].as_array().expect("several field errors");
    let named: Vec<&str> = fields.iter().filter_map(|f| f["field"].as_str()).collect();
    assert_eq!(named, ["colour", "n"], "{err}");
    assert!(
        fields[1]["message"]
            .as_str()
            .unwrap_or("")
            .contains("whole number")
    );

    let res = app
        .call(
            &user,
            "/api/user/trigger_form",
            &[("pipeline_id", "fanout"), ("fields[n]", "5000")],
        )
        .await;
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap_or_default();
    assert!(body.contains("\"n\""), "the range error is at n: {body}");

    let res = app
        .call(
            &user,
            "/api/user/trigger_form",
            &[
                ("pipeline_id", "fanout"),
                ("fields[n]", " 3 "),
                ("fields[label]", "CV"),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    let run_id: i64 = res.json().await.expect("run id");
    app.engine
        .wait_for_run(run_id, Duration::from_secs(30))
        .await
        .expect("ends");
    let viewer = app.client_as(Role::Viewer).await;
    let p = instances(&app, &viewer, run_id, &[("query[task]", "export")]).await;
    assert_eq!(
        keys(&p),
        ["CV-1000", "CV-1001", "CV-1002"],
        "typed values reached the run"
    );
}

#[tokio::test]
async fn pools_are_read_by_all_and_changed_by_ops() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let viewer = app.client_as(Role::Viewer).await;
    let op = app.client_as(Role::Op).await;
    let res = app.call(&viewer, "/api/viewer/list_pools", &[]).await;
    let pools: Vec<PoolInfo> = res.json().await.expect("pools");
    assert!(
        pools
            .iter()
            .any(|p| p.name == "imednet_exports" && p.slots == 4)
    );

    let res = app
        .call(
            &viewer,
            "/api/op/save_pool",
            &[("name", "x"), ("slots", "2")],
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .call(
            &op,
            "/api/op/save_pool",
            &[("name", "imednet_exports"), ("slots", "lots")],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap_or_default().contains("slots"));
    let res = app
        .call(
            &op,
            "/api/op/save_pool",
            &[("name", "bad name!"), ("slots", "2")],
        )
        .await;
    assert_eq!(res.status(), 400);

    let res = app
        .call(
            &op,
            "/api/op/save_pool",
            &[
                ("name", "imednet_exports"),
                ("slots", "9"),
                ("description", "wider"),
            ],
        )
        .await;
    let saved: PoolInfo = res.json().await.expect("pool");
    assert_eq!((saved.slots, saved.description.as_str()), (9, "wider"));
    let res = app
        .call(
            &op,
            "/api/op/save_pool",
            &[("name", "scratch"), ("slots", "1")],
        )
        .await;
    assert_eq!(res.status(), 200);

    let res = app
        .call(&op, "/api/op/delete_pool", &[("name", "default_pool")])
        .await;
    assert_eq!(res.status(), 409, "built in");
    let res = app
        .call(&op, "/api/op/delete_pool", &[("name", "imednet_exports")])
        .await;
    assert_eq!(res.status(), 409, "built in with the reference pipeline");
    register(
        &app,
        "id: uses_shared\ntasks:\n  t: { operator: noop, pool: shared }\n",
    )
    .await;
    let res = app
        .call(
            &op,
            "/api/op/save_pool",
            &[("name", "shared"), ("slots", "2")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .call(&op, "/api/op/delete_pool", &[("name", "shared")])
        .await;
    assert_eq!(res.status(), 409, "a pipeline's tasks would wait forever");
    let body = res.text().await.unwrap_or_default();
    assert!(body.contains("task t of pipeline uses_shared"), "{body}");
    let res = app
        .call(&op, "/api/op/delete_pool", &[("name", "scratch")])
        .await;
    assert_eq!(res.status(), 200);
    let entries = app.db.audit_entries(10).await.expect("audit");
    assert!(entries.iter().any(|e| e.action == "pool.save"
        && e.target == "imednet_exports"
        && e.detail.contains("\"previous_slots\":4")));
    assert!(
        entries
            .iter()
            .any(|e| e.action == "pool.delete" && e.target == "scratch")
    );
}

#[tokio::test]
async fn console_pages_render_on_the_server() {
    let app = spawn_app_on(Backend::Sqlite).await;
    register(&app, FANOUT).await;
    let user = app.client_as(Role::User).await;
    let run_id = finished_run(&app, &user).await;
    let admin = app.client_as(Role::Admin).await;
    let ti = app.db.instances(run_id, "export").await.expect("tis")[7].id;
    let pages = [
        ("/".to_string(), "Running and queued"),
        ("/runs".to_string(), &*format!("#{run_id}")),
        ("/runs?state=success&pipeline=fanout".to_string(), "fanout"),
        (format!("/runs/{run_id}"), "S-1049"),
        (format!("/runs/{run_id}?page=3&task=export"), "S-1119"),
        (format!("/runs/{run_id}?q=S-1007"), "S-1007"),
        (format!("/runs/{run_id}/instances/{ti}"), "S-1007"),
        ("/pipelines".to_string(), "fanout"),
        ("/pipelines/fanout".to_string(), "Task graph"),
        ("/pools".to_string(), "imednet_exports"),
        ("/audit".to_string(), "run.trigger"),
    ];
    for (path, wanted) in pages {
        let res = admin.get(app.url(&path)).send().await.expect("page");
        assert_eq!(res.status(), 200, "{path}");
        let html = res.text().await.expect("html");
        assert!(html.contains(wanted), "{path} shows {wanted}");
    }
    let html = admin
        .get(app.url(&format!("/runs/{run_id}/instances/{ti}")))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(
        html.contains("\"rows\": 7") || html.contains("&quot;rows&quot;: 7"),
        "the result is shown"
    );
    assert!(
        html.contains("\"i\": 1007") || html.contains("&quot;i&quot;: 1007"),
        "the input is shown"
    );
    // The first page of a run lists 50 instances, not all of them.
    let html = admin
        .get(app.url(&format!("/runs/{run_id}")))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert_eq!(html.matches("data-instance=").count(), 50);
    assert!(!html.contains("S-1050"));
    // A bad filter is a message on the page, not a crash.
    let res = admin
        .get(app.url(&format!("/runs/{run_id}?sort=nonsense")))
        .send()
        .await
        .expect("page");
    assert!(
        res.text()
            .await
            .expect("html")
            .contains("expected one of index, key")
    );
}

/// Reads server-sent events from `res` until `wait` passes, or until one second after `stop`
/// first says so (stragglers of the same burst still arrive); returns (id, event, data) triples.
async fn read_events(
    res: reqwest::Response,
    wait: Duration,
    stop: impl Fn(&str, &str) -> bool,
) -> Vec<(Option<i64>, String, String)> {
    let mut body = res.bytes_stream();
    let mut pending = String::new();
    let mut out = Vec::new();
    let mut deadline = tokio::time::Instant::now() + wait;
    let mut stopping = false;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            _ => return out,
        };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let message: String = pending.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in message.lines() {
                if let Some(v) = line
                    .strip_prefix("id: ")
                    .or_else(|| line.strip_prefix("id:"))
                {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line
                    .strip_prefix("event: ")
                    .or_else(|| line.strip_prefix("event:"))
                {
                    event = v.trim().to_string();
                } else if let Some(v) = line
                    .strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("data:"))
                {
                    data.push_str(v);
                }
            }
            if event.is_empty() {
                continue; // keep-alive comments
            }
            if !stopping && stop(&event, &data) {
                stopping = true;
                deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            }
            out.push((id, event, data));
        }
    }
}

#[tokio::test]
async fn watchers_of_a_run_share_each_update_and_late_joiners_miss_nothing() {
    for backend in BACKENDS {
        let app = spawn_app_on(backend).await;
        register(&app, FANOUT).await;
        let user = app.client_as(Role::User).await;
        let res = app
            .call(
                &user,
                "/api/user/trigger_form",
                &[("pipeline_id", "fanout"), ("fields[n]", "400")],
            )
            .await;
        let run_id: i64 = res.json().await.expect("run id");
        let follow = |delay: Duration| {
            let (user, url) = (
                user.clone(),
                app.url(&format!("/events/runs/{run_id}?after=0")),
            );
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let res = user.get(url).send().await.expect("stream");
                read_events(res, Duration::from_secs(60), |_, data| {
                    data.contains("\"run_state\":\"success\"")
                })
                .await
            })
        };
        // Three from the start, two joining while the run is under way.
        let streams: Vec<_> = [0, 0, 0, 250, 600]
            .into_iter()
            .map(|ms| follow(Duration::from_millis(ms)))
            .collect();
        let mut seen = Vec::new();
        for s in streams {
            seen.push(s.await.expect("stream task"));
        }
        let all_events = app
            .db
            .run_events_since(run_id, 0, 100_000)
            .await
            .expect("events")
            .len() as u64;
        for (i, messages) in seen.iter().enumerate() {
            let covered: u64 = messages
                .iter()
                .map(|(_, _, d)| {
                    serde_json::from_str::<Value>(d)
                        .map_or(0, |v| v["events"].as_u64().unwrap_or(0))
                })
                .sum();
            assert_eq!(
                covered, all_events,
                "{backend:?}: stream {i} covers every event once"
            );
            let ids: Vec<i64> = messages.iter().filter_map(|(id, _, _)| *id).collect();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "stream {i}: ids increase"
            );
            assert!(
                messages
                    .last()
                    .is_some_and(|(_, _, d)| d.contains("\"run_state\":\"success\""))
            );
        }
        // The streams that started together received the very same updates: produced once.
        assert_eq!(seen[0], seen[1], "{backend:?}");
        assert_eq!(seen[0], seen[2], "{backend:?}");
        // A late one that joined while the run ran ends on the same shared update.
        for late in &seen[3..] {
            if late.len() > 1 {
                assert_eq!(late.last(), seen[0].last(), "{backend:?}");
            }
        }
    }
}

#[tokio::test]
async fn run_events_are_coalesced_resumable_and_need_a_session() {
    for backend in BACKENDS {
        let app = spawn_app_on(backend).await;
        register(&app, FANOUT).await;
        let user = app.client_as(Role::User).await;
        let res = client()
            .get(app.url("/events/runs/1"))
            .send()
            .await
            .expect("anonymous");
        assert_eq!(res.status(), 401);

        let res = app
            .call(
                &user,
                "/api/user/trigger_form",
                &[("pipeline_id", "fanout"), ("fields[n]", "300")],
            )
            .await;
        let run_id: i64 = res.json().await.expect("run id");
        let res = user
            .get(app.url(&format!("/events/runs/{run_id}?after=0")))
            .send()
            .await
            .expect("stream");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let messages = read_events(res, Duration::from_secs(60), |_, data| {
            data.contains("\"run_state\":\"success\"")
        })
        .await;
        let last: Value =
            serde_json::from_str(&messages.last().expect("a message").2).expect("json");
        assert_eq!(last["run_state"], "success", "{backend:?}");
        let events: u64 = messages
            .iter()
            .map(|(_, _, d)| {
                serde_json::from_str::<Value>(d).map_or(0, |v| v["events"].as_u64().unwrap_or(0))
            })
            .sum();
        let all_events = app
            .db
            .run_events_since(run_id, 0, 100_000)
            .await
            .expect("events")
            .len() as u64;
        assert_eq!(events, all_events, "every event is covered exactly once");
        assert!(
            messages.len() * 5 < all_events as usize,
            "{} messages for {all_events} events: coalesced",
            messages.len()
        );
        let export: Vec<(String, i64)> = serde_json::from_value(
            last["tasks"]
                .as_array()
                .expect("tasks")
                .iter()
                .find(|t| t[0] == "export")
                .expect("export")[1]
                .clone(),
        )
        .expect("counts");
        assert_eq!(export, [("success".to_string(), 300)]);
        let ids: Vec<i64> = messages.iter().filter_map(|(id, _, _)| *id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");

        // Reconnecting from a message in the middle replays what came after it, at once.
        let middle = ids[ids.len() / 2];
        let res = user
            .get(app.url(&format!("/events/runs/{run_id}")))
            .header("Last-Event-ID", middle.to_string())
            .send()
            .await
            .expect("resume");
        let resumed = read_events(res, Duration::from_secs(5), |_, _| true).await;
        let data: Value = serde_json::from_str(&resumed[0].2).expect("json");
        let after_middle = app
            .db
            .run_events_since(run_id, middle, 100_000)
            .await
            .expect("events")
            .len();
        assert_eq!(data["events"].as_u64(), Some(after_middle as u64));
        assert_eq!(resumed[0].0, ids.last().copied());

        // From the last id there is nothing to send.
        let res = user
            .get(app.url(&format!("/events/runs/{run_id}")))
            .header("Last-Event-ID", ids[ids.len() - 1].to_string())
            .send()
            .await
            .expect("resume");
        assert!(
            read_events(res, Duration::from_millis(1500), |_, _| true)
                .await
                .is_empty()
        );

        // An attempt's log stream sends its lines, then says it has ended.
        let ti = app.db.instances(run_id, "export").await.expect("tis")[0].id;
        let attempt = app.db.attempts(ti).await.expect("attempts")[0].id;
        let res = user
            .get(app.url(&format!("/events/instances/{ti}/log?attempt={attempt}")))
            .send()
            .await
            .expect("log");
        let log = read_events(res, Duration::from_secs(5), |event, _| event == "end").await;
        assert_eq!(log.last().map(|(_, e, _)| e.as_str()), Some("end"));
        let res = user
            .get(app.url(&format!("/events/instances/{ti}/log?attempt=999999")))
            .send()
            .await
            .expect("log");
        assert_eq!(res.status(), 404);
    }
}

#[tokio::test]
async fn the_dashboard_stream_reports_changes_once_a_second_at_most() {
    let app = spawn_app_on(Backend::Sqlite).await;
    register(&app, FANOUT).await;
    let viewer = app.client_as(Role::Viewer).await;
    let user = app.client_as(Role::User).await;
    let res = viewer
        .get(app.url("/events/dashboard"))
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status(), 200);
    let reader = tokio::spawn(read_events(res, Duration::from_secs(4), |_, _| false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run_id = finished_run(&app, &user).await;
    let updates = reader.await.expect("reader");
    assert!(!updates.is_empty(), "the run's events were reported");
    assert!(updates.len() <= 5, "{} updates in 4 s", updates.len());
    let last_id = app.db.last_event_id().await.expect("id");
    let last: Value = serde_json::from_str(&updates.last().expect("update").2).expect("json");
    assert!(last["last_event_id"].as_i64().expect("id") <= last_id);
    let res = app
        .call(
            &viewer,
            "/api/viewer/list_runs",
            &[("query[pipeline]", "fanout"), ("query[state]", "success")],
        )
        .await;
    let list: RunList = res.json().await.expect("runs");
    assert_eq!(list.runs.iter().map(|r| r.id).collect::<Vec<_>>(), [run_id]);
    assert_eq!((list.runs[0].done, list.runs[0].total), (121, 121));
    let res = app
        .call(
            &viewer,
            "/api/viewer/list_runs",
            &[("query[since]", "yesterday")],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap_or_default().contains("since"));
}

/// `<rect` elements inside the element with this test id (the charts draw nothing else).
fn rects_in(html: &str, testid: &str) -> usize {
    let start = html
        .find(&format!("data-testid=\"{testid}\""))
        .unwrap_or_else(|| panic!("no {testid} in the page"));
    let end = start + html[start..].find("</figure>").expect("figure ends");
    html[start..end].matches("<rect").count()
}

#[tokio::test]
async fn history_and_timeline_charts_are_drawn_on_the_server_and_aggregate_when_dense() {
    for backend in BACKENDS {
        let app = spawn_app_on(backend).await;
        register(&app, FANOUT).await;
        let user = app.client_as(Role::User).await;
        let viewer = app.client_as(Role::Viewer).await;
        // A small run: one lane per instance, each try its own bar, lanes link to instances.
        let res = app
            .call(
                &user,
                "/api/user/trigger_run",
                &[("pipeline_id", "fanout"), ("conf", r#"{"n": 3}"#)],
            )
            .await;
        let small: i64 = res.json().await.expect("run id");
        app.engine
            .wait_for_run(small, Duration::from_secs(60))
            .await
            .unwrap();
        let html = app.page_text(&viewer, &format!("/runs/{small}")).await;
        assert!(html.contains("data-aggregated=\"false\""), "{backend:?}");
        for key in ["S-1000", "S-1001", "S-1002"] {
            assert!(html.contains(&format!("data-lane=\"{key}\"")), "{key}");
        }
        let ti = app.db.instances(small, "export").await.unwrap()[0].id;
        assert!(html.contains(&format!("data-instance=\"{ti}\"")));
        // 4 instances, each queued then one try: at most 8 bars.
        let bars = rects_in(&html, "run-timeline");
        assert!((4..=8).contains(&bars), "{backend:?}: {bars} bars");

        // A dense run: a lane per task, at most one bar per interval, whatever the count.
        let big = finished_run(&app, &user).await; // 120 mapped instances
        let html = app.page_text(&viewer, &format!("/runs/{big}")).await;
        assert!(html.contains("data-aggregated=\"true\""), "{backend:?}");
        assert!(html.contains("data-lane=\"export\"") && html.contains("data-lane=\"summary\""));
        assert!(rects_in(&html, "run-timeline") <= 2 * 80, "{backend:?}");

        // The pipeline page: one bar per run, oldest first, each linking to its run.
        let html = app.page_text(&viewer, "/pipelines/fanout").await;
        assert_eq!(rects_in(&html, "run-history"), 2, "{backend:?}");
        let first = html
            .find(&format!("data-run=\"{small}\""))
            .expect("small run bar");
        let second = html
            .find(&format!("data-run=\"{big}\""))
            .expect("big run bar");
        assert!(first < second, "oldest first");
        assert!(html.contains("class=\"bar s-success\""));
    }
}
