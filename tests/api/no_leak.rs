//! No secret byte leaves the server. A real `trialflow serve --demo` process goes through a
//! whole journey over HTTP (create, edit, test connections; trigger runs that succeed, fail and
//! write to S3), then every response, page, event, task log, result, audit entry, exported
//! file, S3 object, database file and line the process printed is searched for every secret,
//! as written, base64-encoded (at every alignment) and percent-encoded. Alert targets are in
//! the journey too: a webhook whose URL carries a token and a mail server with a password,
//! both unreachable, so their errors are stored and shown.
use crate::crash::binary;
use crate::s3::Moto;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trialflow::store::Db;

const ADMIN_PASSWORD: &str = "journey-admin-password";
const BAD_API_KEY: &str = "journey-bad-api-key-5e1d";
const BAD_SECURITY_KEY: &str = "journey-bad-security-key-0c4b";
const AWS_KEY_ID: &str = "AKIDJOURNEY7788";
const AWS_SECRET: &str = "journey-aws-secret-8a2f";
const HOOK_TOKEN: &str = "journey-hook-url-token-91c3";
const HOOK_SIGNING_SECRET: &str = "journey-hook-signing-secret-77e0";
const SMTP_PASSWORD: &str = "journey-smtp-password-4d21";
/// The demo simulator's keys: public, but still secrets as far as trialflow is concerned.
const DEMO_KEYS: [&str; 2] = ["demo-api-key", "demo-security-key"];

const S3_PIPELINE: &str = r#"
id: journey_s3
tasks:
  export:
    operator: imednet.export
    args: { study_key: "ONC-202", output_path: "s3://journey-bucket/onc.parquet", format: parquet, imednet_conn_id: journey_ok, aws_conn_id: journey_s3 }
  raw:
    operator: imednet.to_s3
    args: { study_key: "ONC-202", s3_key: "raw/records.json", imednet_conn_id: journey_ok, aws_conn_id: journey_s3 }
"#;

const ALERT_PIPELINE: &str = r#"
id: journey_alerts
alerts:
  on_failure: [journey_hook, journey_mail]
tasks:
  work:
    operator: fail
    args: { fatal: true }
"#;

struct Server {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(pipelines.join("journey_s3.yaml"), S3_PIPELINE).unwrap();
    std::fs::write(pipelines.join("journey_alerts.yaml"), ALERT_PIPELINE).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.path().join("process.log")).unwrap();
    let child = Command::new(binary())
        .args(["serve", "--demo", "--addr", &format!("127.0.0.1:{port}")])
        .env("TRIALFLOW_DATA_DIR", dir.path().join("data"))
        .env("TRIALFLOW_PIPELINES_DIR", &pipelines)
        .env("TRIALFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "info,trialflow=debug")
        .env("TRIALFLOW_ALERT_RETRY_SECONDS", "0.1")
        .env("TRIALFLOW_ALERT_ATTEMPTS", "2")
        .env_remove("DATABASE_URL")
        .env_remove("TRIALFLOW_SECRET_KEY")
        .env_remove("IMEDNET_API_KEY")
        .env_remove("IMEDNET_SECURITY_KEY")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        dir,
    }
}

/// Every byte a browser or API client received.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    /// An event stream: everything received within `wait` (streams do not end by themselves).
    async fn keep_stream(&mut self, what: &str, res: reqwest::Response, wait: Duration) -> u16 {
        use futures::StreamExt;
        let status = res.status().as_u16();
        let mut body = res.bytes_stream();
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        self.0.push(format!("== {what} ({status})\n{text}"));
        status
    }

    async fn keep(&mut self, what: &str, res: reqwest::Response) -> (u16, String) {
        let status = res.status().as_u16();
        let headers: Vec<String> = res
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let body = res.text().await.unwrap();
        self.0.push(format!(
            "== {what} ({status})\n{}\n{body}",
            headers.join("\n")
        ));
        (status, body)
    }
}

async fn post(
    seen: &mut Seen,
    c: &reqwest::Client,
    base: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let res = c
        .post(format!("{base}{path}"))
        .form(form)
        .send()
        .await
        .unwrap();
    seen.keep(path, res).await
}

async fn wait_for_end(db: &Db, run: i64) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = db.run_row(run).await.unwrap().unwrap().state;
        if matches!(state.as_str(), "success" | "failed") {
            return state;
        }
        assert!(Instant::now() < deadline, "run {run} still {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The forms a secret could leave in: as is, percent-encoded, and the part of its base64 that
/// any base64 text containing it must contain, for each of the three alignments.
fn encodings(secret: &str) -> Vec<(String, String)> {
    use base64::Engine;
    let mut out = vec![("as written".to_string(), secret.to_string())];
    let percent: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    if percent != secret {
        out.push(("percent-encoded".into(), percent));
    }
    for shift in 0..3 {
        let mut bytes = vec![0u8; shift];
        bytes.extend_from_slice(secret.as_bytes());
        let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
        // Characters that hold prefix bits, and the last group (padding), vary with context.
        let skip = (shift * 8).div_ceil(6);
        let stable = &text[skip..text.len().saturating_sub(4)];
        out.push((format!("base64 at offset {shift}"), stable.to_string()));
    }
    out
}

#[tokio::test]
async fn a_whole_journey_leaks_no_secret_anywhere() {
    let moto = Moto::start();
    moto.store().create_bucket("journey-bucket").await.unwrap();
    let server = start_server();
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen = Seen::default();
    let res = http
        .post(format!("{base}/auth/login"))
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    seen.keep("login", res).await;

    let sim = format!("{base}/sim");
    let moto_url = moto.endpoint();
    let save = |fields: Vec<(&'static str, String)>| {
        fields
            .into_iter()
            .map(|(k, v)| (format!("input[{k}]"), v))
            .collect::<Vec<_>>()
    };
    let connections = [
        save(vec![
            ("conn_id", "journey_ok".into()),
            ("kind", "imednet".into()),
            ("create", "true".into()),
            ("base_url", sim.clone()),
            ("api_key", DEMO_KEYS[0].into()),
            ("security_key", DEMO_KEYS[1].into()),
        ]),
        save(vec![
            ("conn_id", "journey_bad".into()),
            ("kind", "imednet".into()),
            ("create", "true".into()),
            ("base_url", sim.clone()),
            ("api_key", BAD_API_KEY.into()),
            ("security_key", BAD_SECURITY_KEY.into()),
        ]),
        save(vec![
            ("conn_id", "journey_s3".into()),
            ("kind", "aws".into()),
            ("create", "true".into()),
            ("access_key_id", AWS_KEY_ID.into()),
            ("secret_access_key", AWS_SECRET.into()),
            ("endpoint_url", moto_url.clone()),
            ("path_style", "on".into()),
            ("bucket", "journey-bucket".into()),
        ]),
        save(vec![
            ("conn_id", "journey_hook".into()),
            ("kind", "webhook".into()),
            ("create", "true".into()),
            // Nothing listens on port 9: every attempt fails, and the error is stored.
            ("url", format!("http://127.0.0.1:9/hooks/{HOOK_TOKEN}")),
            ("signing_secret", HOOK_SIGNING_SECRET.into()),
        ]),
        save(vec![
            ("conn_id", "journey_mail".into()),
            ("kind", "smtp".into()),
            ("create", "true".into()),
            ("host", "127.0.0.1".into()),
            ("port", "9".into()),
            ("security", "none".into()),
            ("username", "journey".into()),
            ("password", SMTP_PASSWORD.into()),
            ("from", "trialflow@example.org".into()),
            ("to", "ops@example.org".into()),
        ]),
        // An edit with blank secrets.
        save(vec![
            ("conn_id", "journey_bad".into()),
            ("kind", "imednet".into()),
            ("create", "false".into()),
            ("description", "edited".into()),
            ("base_url", sim.clone()),
        ]),
    ];
    for form in &connections {
        let res = http
            .post(format!("{base}/api/op/save_connection"))
            .form(form)
            .send()
            .await
            .unwrap();
        let (status, body) = seen.keep("save_connection", res).await;
        assert_eq!(status, 200, "{body}");
    }
    for id in [
        "journey_ok",
        "journey_bad",
        "journey_s3",
        "journey_hook",
        "journey_mail",
    ] {
        let (status, body) = post(
            &mut seen,
            &http,
            &base,
            "/api/op/test_connection",
            &[("conn_id", id)],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body.contains("\"ok\":true"),
            matches!(id, "journey_ok" | "journey_s3"),
            "{id}: {body}"
        );
        post(
            &mut seen,
            &http,
            &base,
            "/api/op/describe_connection",
            &[("conn_id", id)],
        )
        .await;
    }
    post(&mut seen, &http, &base, "/api/op/list_connections", &[]).await;
    for page in [
        "/",
        "/connections",
        "/connections?edit=journey_bad",
        "/connections?edit=journey_s3",
        "/connections?edit=journey_hook",
        "/connections?edit=journey_mail",
    ] {
        let res = http.get(format!("{base}{page}")).send().await.unwrap();
        let (status, _) = seen.keep(page, res).await;
        assert_eq!(status, 200, "{page}");
    }

    let trigger =
        |pipeline: &'static str, conf: &'static str| [("pipeline_id", pipeline), ("conf", conf)];
    let mut runs = Vec::new();
    for (pipeline, conf) in [
        (
            "imednet_multi_study_reference",
            r#"{"connection": "journey_ok"}"#,
        ),
        (
            "imednet_multi_study_reference",
            r#"{"connection": "journey_bad"}"#,
        ),
        ("journey_s3", ""),
        ("journey_alerts", ""),
    ] {
        let (status, body) = post(
            &mut seen,
            &http,
            &base,
            "/api/user/trigger_run",
            &trigger(pipeline, conf),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        runs.push(body.trim().parse::<i64>().unwrap());
    }
    let data = server.dir.path().join("data");
    let db = Db::connect(None, &data).await.unwrap();
    let states = [
        wait_for_end(&db, runs[0]).await,
        wait_for_end(&db, runs[1]).await,
        wait_for_end(&db, runs[2]).await,
        wait_for_end(&db, runs[3]).await,
    ];
    assert_eq!(states, ["success", "failed", "success", "failed"]);
    // Both alerts use up their two attempts; their errors are what the run page shows.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let deliveries = db.run_deliveries(runs[3]).await.unwrap();
        if deliveries.len() == 2 && deliveries.iter().all(|d| d.state == "failed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alerts did not settle: {deliveries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The console: run pages, instance pages with input, result, error and logs, the instance
    // table, and the live streams of runs and logs.
    for run in &runs {
        for page in [format!("/runs/{run}"), format!("/runs/{run}?state=failed")] {
            let res = http.get(format!("{base}{page}")).send().await.unwrap();
            assert_eq!(seen.keep(&page, res).await.0, 200, "{page}");
        }
        let run_text = run.to_string();
        post(
            &mut seen,
            &http,
            &base,
            "/api/viewer/get_run",
            &[("run_id", &run_text)],
        )
        .await;
        post(
            &mut seen,
            &http,
            &base,
            "/api/viewer/list_instances",
            &[("run_id", &run_text)],
        )
        .await;
        let path = format!("/events/runs/{run}?after=0");
        let res = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(
            seen.keep_stream(&path, res, Duration::from_secs(2)).await,
            200
        );
        for ti in db.run_instances(*run).await.unwrap() {
            let page = format!("/runs/{run}/instances/{}", ti.id);
            let res = http.get(format!("{base}{page}")).send().await.unwrap();
            assert_eq!(seen.keep(&page, res).await.0, 200, "{page}");
            post(
                &mut seen,
                &http,
                &base,
                "/api/viewer/get_instance",
                &[("ti_id", &ti.id.to_string())],
            )
            .await;
            for attempt in db.attempts(ti.id).await.unwrap() {
                let path = format!("/events/instances/{}/log?attempt={}", ti.id, attempt.id);
                let res = http.get(format!("{base}{path}")).send().await.unwrap();
                seen.keep_stream(&path, res, Duration::from_millis(700))
                    .await;
            }
        }
    }
    let res = http.get(format!("{base}/audit")).send().await.unwrap();
    seen.keep("/audit", res).await;
    post(&mut seen, &http, &base, "/api/admin/audit_log", &[]).await;

    // What the server stored and will show: events, task logs, results, errors, audit.
    let mut stored: Vec<String> = Vec::new();
    for e in db.events_since(0, 100_000).await.unwrap() {
        stored.push(format!("event {} {}", e.kind, e.payload));
    }
    let mut failure_seen = false;
    for run in &runs {
        stored.push(format!("{:?}", db.run_row(*run).await.unwrap()));
        for ti in db.run_instances(*run).await.unwrap() {
            failure_seen |= ti.error.as_deref().is_some_and(|e| e.contains("forbidden"));
            stored.push(format!("{ti:?}"));
            for attempt in db.attempts(ti.id).await.unwrap() {
                stored.push(format!("{attempt:?}"));
                for line in db.task_log(attempt.id, 0, 100_000).await.unwrap() {
                    stored.push(line.line);
                }
            }
        }
    }
    assert!(failure_seen, "the failing run failed for the right reason");
    for d in db.run_deliveries(runs[3]).await.unwrap() {
        stored.push(format!("{d:?}"));
    }
    for a in db.audit_entries(1000).await.unwrap() {
        stored.push(format!("{a:?}"));
    }
    let s3 = moto.store();
    let parquet = s3.get_bytes("journey-bucket", "onc.parquet").await.unwrap();
    let raw = s3
        .get_bytes("journey-bucket", "raw/records.json")
        .await
        .unwrap();
    assert!(!parquet.is_empty() && raw.starts_with(b"["));
    db.close().await;

    // Every file the server wrote (database, WAL, exports, its own log), except the key file.
    let mut files = Vec::new();
    files_under(server.dir.path(), &mut files);
    let key_file = data.join("secret.key");
    let master_keys: Vec<String> = std::fs::read_to_string(&key_file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(':'))
        .map(|l| l.split_once(':').unwrap().1.trim().to_string())
        .collect();
    assert!(!master_keys.is_empty());
    let exports = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "csv"))
        .count();
    assert_eq!(exports, 3, "the successful reference run wrote three CSVs");

    let hook_url = format!("http://127.0.0.1:9/hooks/{HOOK_TOKEN}");
    let mut secrets: Vec<&str> = vec![
        BAD_API_KEY,
        BAD_SECURITY_KEY,
        AWS_KEY_ID,
        AWS_SECRET,
        HOOK_TOKEN,
        HOOK_SIGNING_SECRET,
        SMTP_PASSWORD,
        &hook_url,
    ];
    secrets.extend(DEMO_KEYS);
    secrets.extend(master_keys.iter().map(String::as_str));
    let forms: Vec<(String, String)> = secrets
        .iter()
        .flat_map(|s| {
            encodings(s)
                .into_iter()
                .map(move |(how, text)| (format!("{s:?} {how}"), text))
        })
        .collect();
    let mut blobs: Vec<(String, Vec<u8>)> =
        vec![("S3 parquet".into(), parquet), ("S3 json".into(), raw)];
    blobs.extend(
        seen.0
            .iter()
            .map(|s| ("HTTP".to_string(), s.clone().into_bytes())),
    );
    blobs.extend(
        stored
            .iter()
            .map(|s| ("stored".to_string(), s.clone().into_bytes())),
    );
    for f in files.iter().filter(|f| **f != key_file) {
        blobs.push((f.display().to_string(), std::fs::read(f).unwrap()));
    }
    let log = std::fs::read_to_string(server.dir.path().join("process.log")).unwrap();
    assert!(
        log.contains("listening"),
        "the process log was captured: {log}"
    );
    for (what, bytes) in &blobs {
        for (secret, text) in &forms {
            assert!(
                !contains(bytes, text.as_bytes()),
                "{what} contains the secret {secret}"
            );
        }
    }
}
