//! Connections over HTTP: create, edit (blank secret keeps the value), describe, test, delete,
//! role checks, and the page with JavaScript off. Secrets never come back.
use crate::helpers::{TestApp, spawn_demo_app};
use app::model::Role;
use serde_json::Value;

const API_KEY: &str = "conn-test-api-key-7f3a";
const SECURITY_KEY: &str = "conn-test-security-key-91c2";

async fn save(app: &TestApp, c: &reqwest::Client, fields: &[(&str, &str)]) -> reqwest::Response {
    let form: Vec<(String, &str)> = fields
        .iter()
        .map(|(k, v)| (format!("input[{k}]"), *v))
        .collect();
    c.post(app.url("/api/op/save_connection"))
        .form(&form)
        .send()
        .await
        .expect("save")
}

fn assert_no_secret(text: &str, what: &str) {
    for secret in [API_KEY, SECURITY_KEY, "demo-api-key", "demo-security-key"] {
        assert!(!text.contains(secret), "{what} leaked a secret: {text}");
    }
}

#[tokio::test]
async fn ops_manage_connections_and_never_see_a_secret() {
    let app = spawn_demo_app().await;
    let op = app.client_as(Role::Op).await;

    // The demo connection exists and reaches the mounted simulator.
    let res = app
        .call(
            &op,
            "/api/op/test_connection",
            &[("conn_id", "imednet_default")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert_no_secret(&body, "test_connection");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(t["count"], 3, "{t}");

    // Create, pointing at the same simulator with wrong keys.
    let sim = format!("{}/sim", app.base);
    let res = save(
        &app,
        &op,
        &[
            ("conn_id", "study_api"),
            ("kind", "imednet"),
            ("create", "true"),
            ("description", "A second account"),
            ("base_url", &sim),
            ("api_key", API_KEY),
            ("security_key", SECURITY_KEY),
            ("extra", r#"{"timeout_seconds": 10}"#),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert_no_secret(&body, "save_connection");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["conn_id"], "study_api");
    assert_eq!(info["secrets"][0]["configured"], true);

    // Describe has the provider's shape.
    let d: Value = app
        .call(
            &op,
            "/api/op/describe_connection",
            &[("conn_id", "study_api")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["conn_id"], "study_api");
    assert_eq!(d["base_url"], sim);
    assert_eq!(d["api_key"], "***");
    assert_eq!(d["security_key"], "***");
    assert_eq!(d["api_key_configured"], true);
    assert_eq!(d["security_key_configured"], true);

    // Wrong keys: the test reports the API's refusal, not the keys.
    let t: Value = app
        .call(&op, "/api/op/test_connection", &[("conn_id", "study_api")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["ok"], false, "{t}");
    assert!(t["message"].as_str().unwrap().contains("forbidden"), "{t}");

    // Edit with blank secrets keeps them; the stored value is still the original.
    let res = save(
        &app,
        &op,
        &[
            ("conn_id", "study_api"),
            ("kind", "imednet"),
            ("create", "false"),
            ("description", "renamed"),
            ("base_url", &sim),
            ("api_key", ""),
            ("security_key", ""),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let settings = app.engine.connections().imednet("study_api").await.unwrap();
    assert_eq!(settings.client_config().unwrap().api_key.expose(), API_KEY);

    // Bad input names the field.
    let res = save(
        &app,
        &op,
        &[
            ("conn_id", "bad one"),
            ("kind", "imednet"),
            ("create", "true"),
        ],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("conn_id"));
    let res = save(
        &app,
        &op,
        &[
            ("conn_id", "x"),
            ("kind", "imednet"),
            ("create", "true"),
            ("extra", r#"{"colour": 1}"#),
        ],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("unknown option `colour`")
    );

    // The page (server-rendered) lists both, with *** and no values.
    let page = op.get(app.url("/connections")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("study_api") && html.contains("imednet_default"));
    assert!(html.contains("api_key: ***"));
    assert_no_secret(&html, "connections page");
    let page = op
        .get(app.url("/connections?edit=study_api"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data-testid=\"edit-connection\"") && page.contains("value=\"study_api\"")
    );
    assert!(page.contains("leave blank to keep"));
    assert_no_secret(&page, "edit form");

    // Audit: who changed what, never the values.
    let audit = app.db.audit_entries(20).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert!(actions.contains(&"connection.create") && actions.contains(&"connection.update"));
    for a in &audit {
        assert_no_secret(&a.detail, "audit log");
    }

    // Delete.
    let res = app
        .call(
            &op,
            "/api/op/delete_connection",
            &[("conn_id", "study_api")],
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .call(
            &op,
            "/api/op/describe_connection",
            &[("conn_id", "study_api")],
        )
        .await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn only_ops_and_admins_reach_connections() {
    let app = spawn_demo_app().await;
    for role in [Role::Viewer, Role::User] {
        let c = app.client_as(role).await;
        let res = app.call(&c, "/api/op/list_connections", &[]).await;
        assert_eq!(res.status(), 403, "{role}");
        let res = app
            .call(
                &c,
                "/api/op/describe_connection",
                &[("conn_id", "imednet_default")],
            )
            .await;
        assert_eq!(res.status(), 403, "{role}");
        let page = c.get(app.url("/connections")).send().await.unwrap();
        assert_eq!(page.status(), 403, "{role}");
        assert_no_secret(&page.text().await.unwrap(), "refused page");
    }
    let admin = app.client_as(Role::Admin).await;
    let res = app.call(&admin, "/api/op/list_connections", &[]).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn secret_fields_can_be_erased_from_the_form() {
    let app = spawn_demo_app().await;
    let op = app.client_as(Role::Op).await;
    let res = save(
        &app,
        &op,
        &[
            ("conn_id", "erase_me"),
            ("kind", "imednet"),
            ("create", "true"),
            ("api_key", API_KEY),
            ("security_key", SECURITY_KEY),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    // The form's checkboxes send `input[clear][]=<field>`.
    let res = op
        .post(app.url("/api/op/save_connection"))
        .form(&[
            ("input[conn_id]", "erase_me"),
            ("input[kind]", "imednet"),
            ("input[create]", "false"),
            ("input[clear][]", "api_key"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let d = app.engine.connections().describe("erase_me").await.unwrap();
    assert_eq!(d["api_key_configured"], false);
    assert_eq!(d["security_key_configured"], true);
}
