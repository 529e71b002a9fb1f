//! Alerts on both backends: signed webhooks retried with backoff against a real HTTP listener,
//! mail to a real SMTP server process (aiosmtpd from the repository's venv), SLA misses while
//! a run is still running, and what the run page shows about each delivery.
use crate::helpers::{BACKENDS, Backend, TestApp};
use app::model::{ConnectionInput, Role};
use app::state::RunState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trialflow::store::alerts::DeliveryRow;

const SIGNING_SECRET: &str = "whsec-alert-signing-secret-never-shown";
/// Part of a webhook URL, as chat webhooks carry their token: a secret too.
const URL_TOKEN: &str = "url-token-3f9a-never-shown";

const PIPELINES: &[(&str, &str)] = &[
    (
        "alert_fail.yaml",
        r#"
id: alert_fail
alerts:
  on_failure: [ops_hook, gone_hook, dead_hook, nobody]
tasks:
  work:
    operator: fail
    args: { message: "study CV-3 export failed: HTTP 500", fatal: true }
"#,
    ),
    (
        "alert_ok.yaml",
        r#"
id: alert_ok
alerts:
  on_success: [ops_hook]
  on_failure: [ops_hook]
tasks:
  work: { operator: noop }
"#,
    ),
    (
        "alert_slow.yaml",
        r#"
id: alert_slow
sla: 1s
alerts:
  on_sla_miss: [ops_hook]
tasks:
  work:
    operator: sleep
    args: { seconds: 4 }
"#,
    ),
    (
        "alert_in_time.yaml",
        r#"
id: alert_in_time
sla: 1h
alerts:
  on_sla_miss: [ops_hook]
tasks:
  work: { operator: noop }
"#,
    ),
    (
        "alert_mail.yaml",
        r#"
id: alert_mail
alerts:
  on_failure: [ops_mail]
tasks:
  work:
    operator: fail
    args: { message: "site 12 has 3 open queries", fatal: true }
"#,
    ),
];

/// One request the webhook listener received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: String,
    /// The run's state in the database when the request arrived.
    run_state: Option<String>,
}

#[derive(Clone, Default)]
struct Hooks {
    received: Arc<Mutex<Vec<Received>>>,
    db: Arc<Mutex<Option<trialflow::store::Db>>>,
}

/// `/hook/...` answers 503 to its first two calls, then 200; `/gone` always 404.
async fn listen(hooks: Hooks) -> String {
    async fn handle(
        State(hooks): State<Hooks>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        let run_id = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["run_id"].as_i64());
        let db = hooks.db.lock().unwrap().clone();
        let run_state = match (db, run_id) {
            (Some(db), Some(id)) => db.run_row(id).await.ok().flatten().map(|r| r.state),
            _ => None,
        };
        let mut received = hooks.received.lock().unwrap();
        received.push(Received {
            path: uri.path().to_string(),
            headers,
            body,
            run_state,
        });
        let hook_calls = received
            .iter()
            .filter(|r| r.path.starts_with("/hook"))
            .count();
        match uri.path() {
            p if p.starts_with("/hook") && hook_calls <= 2 => StatusCode::SERVICE_UNAVAILABLE,
            p if p.starts_with("/hook") => StatusCode::OK,
            _ => StatusCode::NOT_FOUND,
        }
    }
    let app = axum::Router::new()
        .fallback(axum::routing::post(handle))
        .with_state(hooks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn alert_app(backend: Backend) -> TestApp {
    // Retries after 0.2 s, then 0.8 s; three attempts in all.
    crate::exports::demo_app_configured(backend, PIPELINES, |args| {
        args.engine.alert_retry_seconds = 0.2;
        args.engine.alert_attempts = 3;
    })
    .await
}

fn webhook(conn_id: &str, url: &str, signing_secret: Option<&str>) -> ConnectionInput {
    ConnectionInput {
        conn_id: conn_id.into(),
        kind: "webhook".into(),
        create: true,
        url: Some(url.into()),
        signing_secret: signing_secret.map(Into::into),
        ..ConnectionInput::default()
    }
}

async fn trigger(app: &TestApp, pipeline: &str) -> i64 {
    app.engine
        .trigger(pipeline, Map::new(), "alert-tester", Vec::new())
        .await
        .unwrap()
}

async fn run_to_end(app: &TestApp, pipeline: &str) -> (i64, RunState) {
    let run = trigger(app, pipeline).await;
    let state = app
        .engine
        .wait_for_run(run, Duration::from_secs(60))
        .await
        .unwrap();
    (run, state)
}

/// Waits until `count` deliveries of the run exist and none is pending any more.
async fn settled(app: &TestApp, run: i64, count: usize) -> Vec<DeliveryRow> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let rows = app.db.run_deliveries(run).await.unwrap();
        if rows.len() == count && rows.iter().all(|d| d.state != "pending") {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries of run {run} did not settle: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn by_target<'a>(rows: &'a [DeliveryRow], conn_id: &str) -> &'a DeliveryRow {
    rows.iter()
        .find(|d| d.conn_id == conn_id)
        .unwrap_or_else(|| panic!("no delivery to {conn_id}: {rows:#?}"))
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{name} missing on {r:?}"))
}

fn expected_signature(timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[tokio::test]
async fn webhooks_are_signed_retried_with_backoff_and_shown_on_the_run_page() {
    for backend in BACKENDS {
        let hooks = Hooks::default();
        let base = listen(hooks.clone()).await;
        let app = alert_app(backend).await;
        *hooks.db.lock().unwrap() = Some(app.db.clone());
        let connections = app.engine.connections();
        let hook_url = format!("{base}/hook/{URL_TOKEN}");
        for input in [
            webhook("ops_hook", &hook_url, Some(SIGNING_SECRET)),
            webhook("gone_hook", &format!("{base}/gone"), None),
            // Nothing listens on port 1: every attempt fails to connect.
            webhook(
                "dead_hook",
                &format!("http://127.0.0.1:1/{URL_TOKEN}"),
                None,
            ),
        ] {
            connections.save(&input, "tester").await.unwrap();
        }

        let (run, state) = run_to_end(&app, "alert_fail").await;
        assert_eq!(state, RunState::Failed, "{backend:?}");
        let rows = settled(&app, run, 4).await;

        // 503, 503, 200: delivered on the third attempt, same body and id each time.
        let ops = by_target(&rows, "ops_hook");
        assert_eq!(
            (ops.state.as_str(), ops.attempts),
            ("delivered", 3),
            "{ops:#?}"
        );
        assert_eq!(ops.event, "failure");
        let calls: Vec<Received> = hooks
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with("/hook"))
            .cloned()
            .collect();
        assert_eq!(calls.len(), 3, "{backend:?}: {calls:#?}");
        for call in &calls {
            assert_eq!(call.body, calls[0].body);
            assert_eq!(header(call, "x-trialflow-delivery"), ops.id.to_string());
            assert_eq!(header(call, "x-trialflow-event"), "failure");
            assert_eq!(header(call, "content-type"), "application/json");
            let signature = expected_signature(header(call, "x-trialflow-timestamp"), &call.body);
            assert_eq!(header(call, "x-trialflow-signature"), signature);
        }
        let body: Value = serde_json::from_str(&calls[0].body).unwrap();
        assert_eq!(body["event"], "failure");
        assert_eq!(body["run_id"], run);
        assert_eq!(body["pipeline_id"], "alert_fail");
        assert_eq!(body["state"], "failed");
        assert_eq!(body["triggered_by"], "alert-tester");
        assert_eq!(body["run_path"], format!("/runs/{run}"));
        assert_eq!(body["failed_instances"][0]["task_id"], "work");
        assert!(
            body["failed_instances"][0]["error"]
                .as_str()
                .unwrap()
                .contains("study CV-3 export failed"),
            "{body}"
        );
        // Retries waited: 0.2 s, then 0.8 s.
        let first = header(&calls[0], "x-trialflow-timestamp")
            .parse::<i64>()
            .unwrap();
        let last = header(&calls[2], "x-trialflow-timestamp")
            .parse::<i64>()
            .unwrap();
        assert!(last - first <= 3, "retries took {}s", last - first);

        // A refusal is final; unreachable and missing targets use up their attempts.
        let gone = by_target(&rows, "gone_hook");
        assert_eq!(
            (gone.state.as_str(), gone.attempts),
            ("failed", 1),
            "{gone:#?}"
        );
        assert_eq!(
            gone.last_error.as_deref(),
            Some("webhook answered HTTP 404 (not retried)")
        );
        let dead = by_target(&rows, "dead_hook");
        assert_eq!(
            (dead.state.as_str(), dead.attempts),
            ("failed", 3),
            "{dead:#?}"
        );
        let dead_error = dead.last_error.clone().unwrap();
        assert!(
            dead_error.starts_with("webhook not reached"),
            "{dead_error}"
        );
        let nobody = by_target(&rows, "nobody");
        assert_eq!((nobody.state.as_str(), nobody.attempts), ("failed", 3));
        assert!(
            nobody
                .last_error
                .as_deref()
                .unwrap()
                .contains("`nobody` does not exist"),
            "{nobody:#?}"
        );

        // The run page lists every delivery; the secrets appear nowhere.
        let viewer = app.client_as(Role::Viewer).await;
        let page = app.page_text(&viewer, &format!("/runs/{run}")).await;
        assert!(
            page.contains("data-testid=\"run-alerts\""),
            "no alert table"
        );
        for text in [
            "ops_hook",
            "gone_hook",
            "dead_hook",
            "delivered",
            "gave up",
            "HTTP 404",
        ] {
            assert!(page.contains(text), "{backend:?}: run page lacks {text}");
        }
        for (what, text) in [
            ("page", page.as_str()),
            ("error", dead_error.as_str()),
            ("body", &calls[0].body),
        ] {
            assert!(
                !text.contains(URL_TOKEN),
                "{what} shows the webhook URL token"
            );
            assert!(
                !text.contains(SIGNING_SECRET),
                "{what} shows the signing secret"
            );
        }

        // Success goes to on_success, on the first try now that the hook answers 200; the
        // run page of a pipeline without alerts has no alert table.
        let (ok_run, state) = run_to_end(&app, "alert_ok").await;
        assert_eq!(state, RunState::Success);
        let ok_rows = settled(&app, ok_run, 1).await;
        assert_eq!(
            (
                ok_rows[0].event.as_str(),
                ok_rows[0].state.as_str(),
                ok_rows[0].attempts
            ),
            ("success", "delivered", 1)
        );
        let (quiet_run, _) = run_to_end(&app, "example_mapped").await;
        let page = app.page_text(&viewer, &format!("/runs/{quiet_run}")).await;
        assert!(!page.contains("run-alerts"));
        let page = app.page_text(&viewer, "/pipelines/alert_ok").await;
        assert!(
            page.contains("on_success → ops_hook"),
            "pipeline page lacks its alerts"
        );
    }
}

#[tokio::test]
async fn an_sla_miss_is_announced_while_the_run_is_still_running_and_only_once() {
    for backend in BACKENDS {
        let hooks = Hooks::default();
        let base = listen(hooks.clone()).await;
        let app = alert_app(backend).await;
        *hooks.db.lock().unwrap() = Some(app.db.clone());
        app.engine
            .connections()
            .save(
                &webhook(
                    "ops_hook",
                    &format!("{base}/hook/sla"),
                    Some(SIGNING_SECRET),
                ),
                "t",
            )
            .await
            .unwrap();

        // Due after 1 s; the task sleeps 4 s. With two 503s first, the third attempt lands at
        // about 2 s, still before the run ends.
        let run = trigger(&app, "alert_slow").await;
        let rows = settled(&app, run, 1).await;
        assert_eq!(rows[0].event, "sla_miss");
        assert_eq!(rows[0].state, "delivered");
        let state = app
            .engine
            .wait_for_run(run, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(state, RunState::Success);
        let calls = hooks.received.lock().unwrap().clone();
        let delivered = calls.last().unwrap();
        assert_eq!(
            delivered.run_state.as_deref(),
            Some("running"),
            "{backend:?}: the SLA alert should arrive while the run runs"
        );
        let body: Value = serde_json::from_str(&delivered.body).unwrap();
        assert_eq!(body["event"], "sla_miss");
        assert_eq!(body["sla_seconds"], 1.0);
        assert!(
            body["sla_due_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );

        // The run's end owes nothing more, and a run that ends in time misses nothing.
        let (in_time, _) = run_to_end(&app, "alert_in_time").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !app
            .db
            .runs_to_announce(i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "runs still owe alerts");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(app.db.run_deliveries(run).await.unwrap().len(), 1);
        assert!(app.db.run_deliveries(in_time).await.unwrap().is_empty());
    }
}

/// A real SMTP server: aiosmtpd writing every message it accepts into a maildir.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    fn start() -> SmtpServer {
        let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        assert!(
            python.exists(),
            "{} not found — run scripts/test.sh (it creates .venv with aiosmtpd)",
            python.display()
        );
        let port = crate::s3::free_port();
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpServer {
            child,
            port,
            maildir,
        }
    }

    fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail/new");
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp(conn_id: &str, port: u16) -> ConnectionInput {
    ConnectionInput {
        conn_id: conn_id.into(),
        kind: "smtp".into(),
        create: true,
        host: Some("127.0.0.1".into()),
        port: Some(port.to_string()),
        security: Some("none".into()),
        from: Some("trialflow@example.org".into()),
        to: Some("ops@example.org, Data Manager <dm@example.org>".into()),
        ..ConnectionInput::default()
    }
}

#[tokio::test]
async fn failure_mail_reaches_a_real_smtp_server_and_the_connection_test_talks_to_it() {
    let server = SmtpServer::start();
    for backend in BACKENDS {
        let app = alert_app(backend).await;
        let connections = app.engine.connections();
        connections
            .save(&smtp("ops_mail", server.port), "tester")
            .await
            .unwrap();
        let test = connections.test("ops_mail").await.unwrap();
        assert!(test.ok, "{test:?}");
        connections
            .save(&smtp("closed_mail", crate::s3::free_port()), "tester")
            .await
            .unwrap();
        let test = connections.test("closed_mail").await.unwrap();
        assert!(
            !test.ok && test.message.contains("mail server 127.0.0.1"),
            "{test:?}"
        );

        let before = server.messages().len();
        let (run, state) = run_to_end(&app, "alert_mail").await;
        assert_eq!(state, RunState::Failed);
        let rows = settled(&app, run, 1).await;
        assert_eq!(
            (rows[0].state.as_str(), rows[0].attempts),
            ("delivered", 1),
            "{rows:#?}"
        );
        let messages = server.messages();
        assert_eq!(messages.len(), before + 1, "{backend:?}");
        let mail = messages
            .iter()
            .find(|m| m.contains(&format!("alert_mail run {run} failed")))
            .unwrap_or_else(|| panic!("no mail for run {run}: {messages:#?}"));
        assert!(
            mail.contains(&format!("Subject: [trialflow] alert_mail run {run} failed")),
            "{mail}"
        );
        assert!(mail.contains("From: trialflow@example.org"), "{mail}");
        assert!(
            mail.contains("ops@example.org") && mail.contains("dm@example.org"),
            "{mail}"
        );
        assert!(mail.contains("work: site 12 has 3 open queries"), "{mail}");
        assert!(mail.contains(&format!("Run: /runs/{run}")), "{mail}");
    }
}

#[tokio::test]
async fn alert_targets_and_alert_settings_are_checked_with_errors_that_name_the_field() {
    let app = alert_app(Backend::Sqlite).await;
    let connections = app.engine.connections();
    let refused = |input: ConnectionInput| async move {
        connections.save(&input, "t").await.unwrap_err().to_string()
    };
    let e = refused(webhook(
        "h1",
        &format!("ftp://example.org/{URL_TOKEN}"),
        None,
    ))
    .await;
    assert_eq!(e, "url: is not an http:// or https:// URL");
    let e = refused(ConnectionInput {
        port: Some("70000".into()),
        ..smtp("m1", 25)
    })
    .await;
    assert!(e.starts_with("port: `70000` is not a port number"), "{e}");
    let e = refused(ConnectionInput {
        security: Some("ssl3".into()),
        ..smtp("m2", 25)
    })
    .await;
    assert_eq!(e, "security: `ssl3` is not starttls, tls or none");
    let e = refused(ConnectionInput {
        to: Some("ops@example.org, not an address".into()),
        ..smtp("m3", 25)
    })
    .await;
    assert!(
        e.starts_with("to: `not an address` is not an email address"),
        "{e}"
    );

    // A pipeline that asks for SLA alerts without an SLA is refused at its line.
    let err = app
        .engine
        .catalog
        .register(
            &app.db,
            &app.engine.registry,
            "late.yaml",
            "id: late\nalerts:\n  on_sla_miss: [ops_hook]\ntasks:\n  work: { operator: noop }\n",
            "api",
            true,
        )
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "late.yaml:3: alerts.on_sla_miss needs an `sla` (e.g. sla: 2h)"
    );
}
