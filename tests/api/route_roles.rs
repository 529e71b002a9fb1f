//! Every HTTP route outside the server functions, called by each role and signed out: the plain
//! routes come from the table the router is built from (`trialflow::http::plain_route_table`) and
//! the pages from the router's own route list, so a route added later is covered without edits
//! here (a new path parameter fails loudly until it is given a value below).
use crate::exports::{demo_app_with, run_to_end};
use crate::helpers::{Backend, client, location};
use app::model::Role;
use app::state::RunState;
use serde_json::json;
use trialflow::http::{Access, page_paths, plain_route_table};
use trialflow::startup::{DEMO_S3_PATH, DEMO_SIMULATOR_PATH};

/// Real ids from a finished export, for the routes' path parameters.
struct Ids {
    run: i64,
    instance: i64,
    attempt: i64,
    artifact: i64,
}

/// `path` with each `{name}` / `:name` segment replaced by a real value.
fn concrete(path: &str, ids: &Ids) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    let mut out = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let Some(name) = segment
            .strip_prefix(':')
            .or_else(|| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        else {
            out.push(segment.to_string());
            continue;
        };
        let parent = if i > 0 { segments[i - 1] } else { "" };
        let value = match (parent, name) {
            ("artifacts", "id") => ids.artifact.to_string(),
            ("runs", "id") => ids.run.to_string(),
            ("pipelines", "id") => "imednet_multi_study_reference".to_string(),
            ("instances", "ti") => ids.instance.to_string(),
            ("audit", "file") => "export.csv".to_string(),
            ("flows", "project") => "trials".to_string(),
            (_, "name") => "nightly_exports".to_string(),
            _ => panic!("{path}: give the parameter `{name}` a value in route_roles.rs"),
        };
        out.push(value);
    }
    let mut path = out.join("/");
    if path.starts_with("/events/instances/") {
        path.push_str(&format!("?attempt={}", ids.attempt));
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

#[tokio::test]
async fn every_route_refuses_callers_below_its_role() {
    let app = demo_app_with(Backend::Sqlite, &[]).await;
    let (run, state) = run_to_end(&app, "imednet_multi_study_reference", json!({})).await;
    assert_eq!(state, RunState::Success);
    let artifact = app.db.run_artifacts(run).await.unwrap().remove(0);
    let attempt = app
        .db
        .attempts(artifact.task_instance_id)
        .await
        .unwrap()
        .remove(0);
    let ids = Ids {
        run,
        instance: artifact.task_instance_id,
        attempt: attempt.id,
        artifact: artifact.id,
    };
    let anonymous = client();
    let mut signed_in = Vec::new();
    for role in Role::ALL {
        signed_in.push((role, app.client_as(role).await));
    }

    let table = plain_route_table();
    assert!(
        table.len() >= 8,
        "the table lists the plain routes: {table:?}"
    );
    for (method, pattern, access) in table {
        let path = concrete(pattern, &ids);
        let send = |c: &reqwest::Client| c.request(method.clone(), app.url(&path)).send();
        let res = send(&anonymous).await.expect("request");
        match access {
            Access::Anyone => assert!(
                res.status().as_u16() < 400,
                "{method} {path} is open to anyone, got {}",
                res.status()
            ),
            Access::AtLeast(_) => assert!(
                res.status() == 401
                    || (res.status() == 303 && location(&res).starts_with("/login?")),
                "anonymous {method} {path}: {}",
                res.status()
            ),
        }
        if matches!(pattern, "/auth/login" | "/auth/logout") {
            continue; // they would change the clients' sessions; tests/api/auth.rs covers them
        }
        for (role, c) in &signed_in {
            let res = send(c).await.expect("request");
            let status = res.status();
            match access {
                Access::AtLeast(needed) if !role.allows(needed) => {
                    assert_eq!(status, 403, "{role} {method} {path}");
                    let body = res.text().await.unwrap();
                    assert!(
                        body.contains(&format!("needs the {needed} role")),
                        "{path}: {body}"
                    );
                }
                _ => assert_eq!(status, 200, "{role} {method} {path}"),
            }
        }
    }

    // Pages: signed out they send you to sign in; signed in, the server functions behind a page
    // decide what each role sees.
    let admin_name = "admin-user";
    let paths = page_paths();
    assert!(paths.len() >= 12, "the router lists the pages: {paths:?}");
    for pattern in paths {
        let path = concrete(&pattern, &ids);
        let res = anonymous.get(app.url(&path)).send().await.unwrap();
        if path == "/login" {
            assert_eq!(res.status(), 200);
            continue;
        }
        assert_eq!(res.status(), 303, "anonymous GET {path}");
        assert!(
            location(&res).starts_with("/login?reason=required&next="),
            "{path}: {}",
            location(&res)
        );
        // Each role gets the page, or a 403 page naming the role its data needs; once a role
        // may see it, every higher role may too, and admins see every page.
        let mut allowed = false;
        for (role, c) in &signed_in {
            let res = c.get(app.url(&path)).send().await.unwrap();
            let status = res.status().as_u16();
            let html = res.text().await.unwrap();
            match status {
                200 => allowed = true,
                403 => {
                    assert!(!allowed, "{role} refused {path} that a lower role may see");
                    assert!(
                        html.contains("needs the "),
                        "{role} {path}: 403 without why"
                    );
                }
                other => panic!("{role} GET {path}: {other}"),
            }
            if path == "/users" && *role != Role::Admin {
                assert!(
                    !html.contains(admin_name),
                    "{role} sees the user list on /users"
                );
            }
        }
        assert!(allowed, "no role may see {path}");
    }

    // The demo simulator and S3 endpoint sit outside sessions and check their own keys.
    let viewer = &signed_in[0].1;
    for c in [&anonymous, viewer] {
        let sim = c
            .get(app.url(&format!("{DEMO_SIMULATOR_PATH}/api/v1/edc/studies")))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(sim.status().as_u16(), 401 | 403),
            "simulator without an API key: {}",
            sim.status()
        );
        let s3 = c
            .get(app.url(&format!("{DEMO_S3_PATH}/exports/")))
            .send()
            .await
            .unwrap();
        assert_eq!(s3.status(), 403, "demo S3 without a signature");
    }
}
