//! Every registered server function, called over plain HTTP by each role. The list comes from
//! the server-function registry itself, so functions added later are covered without edits here.
use crate::helpers::{client, spawn_app};
use app::model::Role;
use leptos::server_fn::axum::server_fn_paths;

/// Paths anonymous callers may reach. Adding one is a deliberate, reviewed change.
const PUBLIC: [&str; 1] = ["/api/public/whoami"];

fn required_role(path: &str) -> Option<Role> {
    path.strip_prefix("/api/")?.split('/').next()?.parse().ok()
}

#[tokio::test]
async fn every_server_function_refuses_callers_below_its_role() {
    let app = spawn_app().await;
    let anonymous = client();
    let mut clients = Vec::new();
    for role in Role::ALL {
        clients.push((role, app.client_as(role).await));
    }

    let registered: Vec<(&str, _)> = server_fn_paths().collect();
    assert!(
        registered.len() >= 7,
        "the registry lists the server functions: {registered:?}"
    );

    for (path, method) in registered {
        if PUBLIC.contains(&path) {
            continue;
        }
        let needed = required_role(path).unwrap_or_else(|| {
            panic!("{path} is not under /api/<role>/ — classify it (see app::api)")
        });
        let send = |c: &reqwest::Client| c.request(method.clone(), app.url(path)).send();

        let res = send(&anonymous).await.expect("request");
        assert_eq!(res.status(), 401, "anonymous call to {path}");
        let body: serde_json::Value = res.json().await.expect("error body is JSON");
        assert_eq!(body, serde_json::json!("Unauthenticated"), "{path}");

        for (role, c) in &clients {
            let res = send(c).await.expect("request");
            if role.allows(needed) {
                assert!(
                    res.status() != 401 && res.status() != 403,
                    "{role} may call {path}, got {}",
                    res.status()
                );
            } else {
                assert_eq!(res.status(), 403, "{role} calling {path}");
            }
        }
    }
}

#[tokio::test]
async fn public_functions_are_exactly_the_listed_ones() {
    let public: Vec<&str> = server_fn_paths()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(app::api::PUBLIC_PREFIX))
        .collect();
    assert_eq!(public, PUBLIC.to_vec());
}
