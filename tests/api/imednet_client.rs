//! Client against the in-process simulator (nested under `/sim`), with every fault kind.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde_json::json;
use trialflow::imednet::model::{Record, Site};
use trialflow::imednet::{
    ClientConfig, FaultKind, FaultRule, Faults, ImednetClient, ImednetError, ListParams, SimConfig,
    SimState, quote_value, router,
};

async fn spawn(cfg: SimConfig) -> (SimState, String) {
    let state = SimState::new(cfg);
    let app = axum::Router::new().nest("/sim", router(state.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // Trailing "/api/" checks base-URL normalisation.
    (state, format!("http://{addr}/sim/api/"))
}

fn config(base: &str) -> ClientConfig {
    let mut c = ClientConfig::new(base, "demo-api-key", "demo-security-key");
    c.min_backoff = Duration::from_millis(10);
    c.max_backoff = Duration::from_millis(50);
    c.timeout = Duration::from_secs(2);
    c
}

fn client(base: &str) -> ImednetClient {
    ImednetClient::new(config(base)).unwrap()
}

fn status(code: u16) -> FaultKind {
    FaultKind::Status {
        status: code,
        retry_after_secs: None,
    }
}

fn faults(rules: Vec<FaultRule>) -> Faults {
    Faults {
        rules,
        ..Faults::default()
    }
}

#[tokio::test]
async fn lists_every_endpoint_of_every_study() {
    let (sim, base) = spawn(SimConfig::default()).await;
    let c = client(&base);
    let studies = ImednetClient::collect(c.studies(ListParams::default()))
        .await
        .unwrap();
    assert_eq!(studies.len(), 3);
    for s in sim.study_keys() {
        let p = || ListParams {
            page_size: Some(7),
            ..ListParams::default()
        };
        assert!(
            !ImednetClient::collect(c.sites(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ImednetClient::collect(c.subjects(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ImednetClient::collect(c.record_revisions(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ImednetClient::collect(c.forms(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ImednetClient::collect(c.intervals(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ImednetClient::collect(c.variables(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ImednetClient::collect(c.queries(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ImednetClient::collect(c.codings(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ImednetClient::collect(c.users(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !ImednetClient::collect(c.visits(&s, p()))
                .await
                .unwrap()
                .is_empty()
        );
        let records = ImednetClient::collect(c.records(&s, p())).await.unwrap();
        let ids: Vec<i64> = records.iter().filter_map(|r| r.record_id).collect();
        assert_eq!(ids, (1..=records.len() as i64).collect::<Vec<_>>());
    }
    // Filters, quoting, sort and recordDataFilter.
    let sites: Vec<Site> = ImednetClient::collect(c.sites("DEMO", ListParams::default()))
        .await
        .unwrap();
    let name = sites[2].site_name.clone();
    let f = format!("siteName=={}", quote_value(&name));
    let found = ImednetClient::collect(c.sites("DEMO", ListParams::filter(f)))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let p = ListParams {
        sort: vec!["siteId,desc".into()],
        ..ListParams::default()
    };
    let desc = ImednetClient::collect(c.sites("DEMO", p)).await.unwrap();
    assert_eq!(desc[0].site_id, Some(sites.len() as i64));
    let p = ListParams {
        record_data_filter: Some("DM_text1==fever".into()),
        ..ListParams::default()
    };
    let hits: Vec<Record> = ImednetClient::collect(c.records("DEMO", p)).await.unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|r| r.record_data["DM_text1"] == "fever"));
}

#[tokio::test]
async fn typed_errors() {
    let (_sim, base) = spawn(SimConfig::default()).await;
    let c = client(&base);
    let err = ImednetClient::collect(c.sites("DEMO", ListParams::filter("nope==1")))
        .await
        .unwrap_err();
    let info = err.info().unwrap();
    assert!(matches!(err, ImednetError::BadRequest(_)));
    assert_eq!(info.code.as_deref(), Some("1000"));
    assert_eq!(info.attribute.as_deref(), Some("nope"));
    let err = ImednetClient::collect(c.sites("NO SUCH/STUDY", ListParams::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, ImednetError::NotFound(_)), "{err}");

    let mut cfg = config(&base);
    cfg.api_key = "leaky-api-key".into();
    cfg.security_key = "leaky-sec-key".into();
    let bad = ImednetClient::new(cfg).unwrap();
    let err = ImednetClient::collect(bad.studies(ListParams::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, ImednetError::Forbidden(_)));
    let shown = format!("{err} {err:?} {bad:?}");
    assert!(!shown.contains("leaky"), "{shown}");
}

#[tokio::test]
async fn get_recovers_from_5xx_and_fails_typed_when_persistent() {
    let (sim, base) = spawn(SimConfig::default()).await;
    let c = client(&base);
    sim.set_faults(faults(vec![FaultRule::any(status(503)).times(2)]));
    let sites = ImednetClient::collect(c.sites("DEMO", ListParams::default())).await;
    assert_eq!(sites.unwrap().len(), 4);

    // One study's records endpoint fails forever; others keep working.
    sim.set_faults(faults(vec![
        FaultRule::any(status(500))
            .study("DEMO")
            .endpoint("records"),
    ]));
    let before = sim.request_count();
    let err = ImednetClient::collect(c.records("DEMO", ListParams::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImednetError::Server(ref i) if i.status == 500),
        "{err}"
    );
    assert_eq!(sim.request_count() - before, 4, "1 attempt + 3 retries");
    assert!(
        ImednetClient::collect(c.records("ONC-202", ListParams::default()))
            .await
            .is_ok()
    );
    assert!(
        ImednetClient::collect(c.sites("DEMO", ListParams::default()))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn error_share_is_survived_with_retries() {
    let (sim, base) = spawn(SimConfig::default()).await;
    sim.set_faults(Faults {
        error_share: 0.2,
        error_status: Some(503),
        ..Faults::default()
    });
    let mut cfg = config(&base);
    cfg.max_retries = 8;
    let c = ImednetClient::new(cfg).unwrap();
    let p = ListParams {
        page_size: Some(10),
        ..ListParams::default()
    };
    let n = c
        .records("DEMO", p)
        .try_fold(0, |n, _| async move { Ok(n + 1) })
        .await;
    assert_eq!(n.unwrap(), 480);
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let (sim, base) = spawn(SimConfig::default()).await;
    let c = client(&base);
    sim.set_faults(faults(vec![
        FaultRule::any(FaultKind::Status {
            status: 429,
            retry_after_secs: Some(1),
        })
        .times(1),
    ]));
    let t = Instant::now();
    ImednetClient::collect(c.forms("DEMO", ListParams::default()))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );

    // Server-side rate limit per api key: the client waits and completes.
    sim.set_faults(Faults {
        rate_limit_rps: Some(4),
        ..Faults::default()
    });
    let mut cfg = config(&base);
    cfg.max_retries = 10;
    let c = ImednetClient::new(cfg).unwrap();
    let p = ListParams {
        page_size: Some(100),
        ..ListParams::default()
    };
    let all = ImednetClient::collect(c.records("DEMO", p)).await.unwrap();
    assert_eq!(all.len(), 480);

    // Client-side pacing avoids the 429s entirely.
    let before = sim.request_count();
    let mut cfg = config(&base);
    cfg.requests_per_second = Some(3.0);
    cfg.max_retries = 0;
    let c = ImednetClient::new(cfg).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let p = ListParams {
        page_size: Some(100),
        ..ListParams::default()
    };
    assert_eq!(
        ImednetClient::collect(c.records("DEMO", p))
            .await
            .unwrap()
            .len(),
        480
    );
    assert_eq!(sim.request_count() - before, 5);
}

#[tokio::test]
async fn stalled_get_retries_after_timeout_and_latency_is_tolerated() {
    let (sim, base) = spawn(SimConfig::default()).await;
    let mut cfg = config(&base);
    cfg.timeout = Duration::from_millis(300);
    let c = ImednetClient::new(cfg).unwrap();
    sim.set_faults(faults(vec![
        FaultRule::any(FaultKind::Stall { ms: 2000 }).times(1),
    ]));
    assert_eq!(
        ImednetClient::collect(c.sites("DEMO", ListParams::default()))
            .await
            .unwrap()
            .len(),
        4
    );
    sim.set_faults(Faults {
        latency_ms: 50,
        ..Faults::default()
    });
    assert_eq!(
        ImednetClient::collect(c.sites("DEMO", ListParams::default()))
            .await
            .unwrap()
            .len(),
        4
    );
    // Stalled forever → typed timeout.
    sim.set_faults(faults(vec![FaultRule::any(FaultKind::Stall { ms: 2000 })]));
    let err = ImednetClient::collect(c.sites("DEMO", ListParams::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImednetError::Network { timeout: true, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_and_truncated_bodies_are_decode_errors() {
    let (sim, base) = spawn(SimConfig::default()).await;
    let c = client(&base);
    for kind in [FaultKind::Malformed, FaultKind::Truncated] {
        sim.set_faults(faults(vec![FaultRule::any(kind).times(1)]));
        let err = ImednetClient::collect(c.sites("DEMO", ListParams::default()))
            .await
            .unwrap_err();
        assert!(matches!(err, ImednetError::Decode(_)), "{err}");
    }
}

fn ae_item(token: &str) -> serde_json::Value {
    json!({"formKey": "AE", "subjectKey": "01-001", "data": {"AE_memo5": token}})
}

#[tokio::test]
async fn post_is_never_sent_twice_on_5xx_or_timeout() {
    let (sim, base) = spawn(SimConfig::default()).await;
    let mut cfg = config(&base);
    cfg.timeout = Duration::from_millis(300);
    let c = ImednetClient::new(cfg).unwrap();

    sim.set_faults(faults(vec![FaultRule::any(status(503)).method("POST")]));
    let err = c
        .create_records("DEMO", &[ae_item("x")], None)
        .await
        .unwrap_err();
    assert!(matches!(err, ImednetError::Server(ref i) if i.status == 503));
    assert_eq!(sim.post_count("DEMO"), 1);

    sim.set_faults(faults(vec![
        FaultRule::any(FaultKind::Stall { ms: 1500 }).method("POST"),
    ]));
    let err = c
        .create_records("DEMO", &[ae_item("x")], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImednetError::Network { timeout: true, .. }),
        "{err}"
    );
    assert_eq!(sim.post_count("DEMO"), 2);

    // 429 means "not processed": one retry after Retry-After is allowed.
    sim.set_faults(faults(vec![
        FaultRule::any(FaultKind::Status {
            status: 429,
            retry_after_secs: Some(0),
        })
        .method("POST")
        .times(1),
    ]));
    let job = c
        .create_records("DEMO", &[ae_item("ok")], None)
        .await
        .unwrap();
    assert_eq!(job.state, "created");
    assert_eq!(sim.post_count("DEMO"), 4);
}

#[tokio::test]
async fn create_and_poll_jobs() {
    let cfg = SimConfig {
        job_running_after: Duration::from_millis(50),
        job_done_after: Duration::from_millis(200),
        ..SimConfig::default()
    };
    let (_sim, base) = spawn(cfg).await;
    let c = client(&base);
    let before = ImednetClient::collect(c.records("CV 3/B", ListParams::default()))
        .await
        .unwrap()
        .len();
    let item = json!({"formKey": "DM", "subjectKey": "01-001", "intervalName": "Baseline", "data": {"DM_text1": "hello"}});
    let job = c
        .create_records("CV 3/B", &[item], Some("a@example.org"))
        .await
        .unwrap();
    let first = c.job("CV 3/B", &job.batch_id).await.unwrap();
    assert!(!first.is_terminal());
    let done = c
        .poll_job(
            "CV 3/B",
            &job.batch_id,
            Duration::from_millis(50),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(done.is_successful());
    assert!(
        c.jobs("CV 3/B")
            .await
            .unwrap()
            .iter()
            .any(|j| j.batch_id == job.batch_id)
    );
    let after = ImednetClient::collect(c.records("CV 3/B", ListParams::default()))
        .await
        .unwrap();
    assert_eq!(after.len(), before + 1);
    assert_eq!(after.last().unwrap().record_data["DM_text1"], "hello");

    let bad = json!({"formKey": "DM", "subjectKey": "99-999", "data": {}});
    let job = c.create_records("CV 3/B", &[bad], None).await.unwrap();
    let err = c
        .poll_job(
            "CV 3/B",
            &job.batch_id,
            Duration::from_millis(50),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImednetError::JobFailed { .. }), "{err}");
    let err = c
        .create_records("CV 3/B", &[json!({})], Some("a\r\nb"))
        .await
        .unwrap_err();
    assert!(matches!(err, ImednetError::Invalid(_)));
}

#[tokio::test]
async fn concurrency_is_limited_per_client() {
    let (sim, base) = spawn(SimConfig::default()).await;
    sim.set_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    });
    let mut cfg = config(&base);
    cfg.max_concurrency = 2;
    let c = ImednetClient::new(cfg).unwrap();
    let t = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                ImednetClient::collect(c.forms("DEMO", ListParams::default())).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(
        t.elapsed() >= Duration::from_millis(440),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn faults_can_be_set_over_http() {
    let (sim, base) = spawn(SimConfig::default()).await;
    let root = base.trim_end_matches("/api/");
    let http = reqwest::Client::new();
    let keyed = |r: reqwest::RequestBuilder| {
        r.header("x-api-key", "demo-api-key")
            .header("x-imn-security-key", "demo-security-key")
    };
    let body = json!({"rules": [{"study": "DEMO", "endpoint": "records", "kind": {"type": "status", "status": 500}}]});
    let anonymous = http
        .put(format!("{root}/__sim/faults"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        403,
        "the control endpoints need the API keys"
    );
    assert!(sim.faults().rules.is_empty());

    let r = keyed(http.put(format!("{root}/__sim/faults")).json(&body))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(sim.faults().rules.len(), 1);
    let stats: serde_json::Value = keyed(http.get(format!("{root}/__sim/stats")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats.get("requests").is_some());
    let r = keyed(http.delete(format!("{root}/__sim/faults")))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(sim.faults().rules.is_empty());
}

#[tokio::test]
async fn profiles_start_fast_and_large_pages_are_computed_on_demand() {
    let t = Instant::now();
    let _demo = SimState::new(SimConfig::default());
    assert!(t.elapsed() < Duration::from_secs(1));
    let t = Instant::now();
    let (_sim, base) = spawn(SimConfig {
        profile: trialflow::imednet::Profile::large(),
        ..SimConfig::default()
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let root = base.trim_end_matches("/api/");
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{root}/api/v1/edc/studies/LARGE/records?page=1999&size=500&sort=recordId,asc"
        ))
        .header("x-api-key", "demo-api-key")
        .header("x-imn-security-key", "demo-security-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["pagination"]["totalElements"], 1_000_000);
    assert_eq!(body["data"][499]["recordId"], 1_000_000);
    large_pages_stay_small_in_a_process_of_their_own().await;
}

/// The same last page from a simulator in its own process, whose peak memory is its own (this
/// test binary's is shared with every other test running beside it).
async fn large_pages_stay_small_in_a_process_of_their_own() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(crate::crash::binary())
        .args(["simulate", "--profile", "large"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("simulator starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port line");
    let port = line.trim().trim_start_matches("LISTENING ").to_string();
    let res = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/edc/studies/LARGE/records?page=1999&size=500&sort=recordId,asc"
        ))
        .header("x-api-key", "demo-api-key")
        .header("x-imn-security-key", "demo-security-key")
        .send()
        .await
        .expect("page");
    assert_eq!(res.status(), 200);
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    // A million records materialised would take gigabytes; one computed page takes nothing.
    assert!(peak_kb < 200_000, "simulator peak RSS {peak_kb} kB");
}

#[tokio::test]
async fn demo_mode_serves_the_simulator_beside_the_app() {
    let app = crate::helpers::spawn_demo_app().await;
    let client = ImednetClient::new(config(&app.url("/sim"))).unwrap();
    let studies: Vec<_> = client
        .studies(ListParams::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(studies.len(), 3, "the demo profile has three studies");

    // iMednet's own key check applies, not the app's sign-in.
    let res = reqwest::get(app.url("/sim/api/v1/edc/studies"))
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"message": "Forbidden"})
    );

    let plain = crate::helpers::spawn_app().await;
    let res = reqwest::get(plain.url("/sim/api/v1/edc/studies"))
        .await
        .unwrap();
    assert_ne!(res.status(), 200, "without --demo there is no simulator");
}

/// Pages decoded ahead on another thread still arrive in page order, with or without
/// prefetching; and a page that fails to decode ends the list after every earlier page.
#[tokio::test]
async fn pages_decoded_ahead_keep_their_order_and_errors_their_place() {
    let (sim, base) = spawn(SimConfig::default()).await;
    let params = || ListParams {
        page_size: Some(10),
        ..ListParams::default()
    };
    let ids =
        |records: &[Record]| -> Vec<i64> { records.iter().map(|r| r.record_id.unwrap()).collect() };
    let mut one_at_a_time = config(&base);
    one_at_a_time.prefetch_pages = 0;
    let reference = ImednetClient::collect(
        ImednetClient::new(one_at_a_time)
            .unwrap()
            .records("DEMO", params()),
    )
    .await
    .unwrap();
    assert!(reference.len() > 50, "DEMO has several pages of records");
    let ahead = ImednetClient::collect(client(&base).records("DEMO", params()))
        .await
        .unwrap();
    assert_eq!(ids(&ahead), ids(&reference));
    assert_eq!(ahead, reference);

    let c = client(&base);
    let mut stream = std::pin::pin!(c.records("DEMO", params()));
    let mut seen = vec![stream.try_next().await.unwrap().unwrap()];
    // Pages already fetched are unaffected; the first one fetched from now on is malformed.
    sim.set_faults(faults(vec![FaultRule::any(FaultKind::Malformed)]));
    let err = loop {
        match stream.try_next().await {
            Ok(Some(r)) => seen.push(r),
            Ok(None) => panic!("the list ended without the malformed page"),
            Err(e) => break e,
        }
    };
    sim.set_faults(Faults::default());
    assert!(matches!(err, ImednetError::Decode(_)), "{err}");
    assert!(seen.len() >= 10 && seen.len() % 10 == 0, "{}", seen.len());
    assert_eq!(ids(&seen), ids(&reference[..seen.len()]));
}
