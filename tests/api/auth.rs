use crate::helpers::{Backend, PASSWORD, client, location, spawn_app, spawn_app_on};
use app::model::Role;

#[tokio::test]
async fn sign_in_sets_a_protected_cookie_and_rotates_the_session_id() {
    let app = spawn_app().await;
    let admin = app.add_user(Role::Admin).await;
    let viewer = app.add_user(Role::Viewer).await;
    let c = client();

    let first = app.login(&c, &viewer, PASSWORD).await;
    assert_eq!(first.status(), 303);
    let cookie = first
        .headers()
        .get("set-cookie")
        .expect("session cookie")
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(cookie.starts_with("trialflow_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let first_id = cookie.split(';').next().expect("pair").to_string();

    // Signing in again on the same session must issue a new id and retire the old one.
    let second = app.login(&c, &admin, PASSWORD).await;
    let cookie2 = second
        .headers()
        .get("set-cookie")
        .expect("new cookie")
        .to_str()
        .expect("ascii")
        .to_string();
    let second_id = cookie2.split(';').next().expect("pair").to_string();
    assert_ne!(first_id, second_id);

    let stale = reqwest::Client::new()
        .get(app.url("/"))
        .header("cookie", &first_id)
        .send()
        .await
        .expect("request");
    assert!(stale.url().path().starts_with("/login") || stale.status().is_success());
    let body = stale.text().await.expect("body");
    assert!(
        body.contains("Your session has expired"),
        "old session id must be dead"
    );

    let me: serde_json::Value = c
        .post(app.url("/api/public/whoami"))
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("json");
    assert_eq!(me["username"], "admin-user");
    assert_eq!(me["role"], "admin");
}

#[tokio::test]
async fn wrong_password_is_refused_with_a_clear_message() {
    let app = spawn_app().await;
    let name = app.add_user(Role::User).await;
    let c = client();
    let res = app.login(&c, &name, "not-the-password").await;
    assert_eq!(res.status(), 303);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "no session for a failed sign-in"
    );
    let target = location(&res);
    assert!(target.starts_with("/login?error=invalid"), "{target}");
    let page = c
        .get(app.url(&target))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("The username or password is wrong."),
        "{page}"
    );
    // The same message for an account that does not exist.
    let res = app.login(&c, "nobody", "whatever-password").await;
    assert!(location(&res).starts_with("/login?error=invalid"));
}

#[tokio::test]
async fn repeated_failures_lock_the_account_with_the_wait_named() {
    let app = spawn_app().await;
    let name = app.add_user(Role::User).await;
    let c = client();
    for _ in 0..4 {
        let res = app.login(&c, &name, "wrong-password-x").await;
        assert!(location(&res).contains("error=invalid"));
    }
    let fifth = app.login(&c, &name, "wrong-password-x").await;
    let target = location(&fifth);
    assert!(
        target.contains("error=throttled") && target.contains("retry=30"),
        "{target}"
    );
    // While locked, even the right password waits.
    let right = app.login(&c, &name, PASSWORD).await;
    assert!(location(&right).contains("error=throttled"));
    let page = c
        .get(app.url(&location(&right)))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("Too many failed sign-in attempts. Wait"),
        "{page}"
    );
    // Another account from elsewhere is not affected by this account's lock.
    let other = app.add_user(Role::Viewer).await;
    assert_eq!(location(&app.login(&client(), &other, PASSWORD).await), "/");
}

/// A cookie-keeping client whose connections come from `source` (any 127.x address is loopback).
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from(source))
        .build()
        .expect("client")
}

#[tokio::test]
async fn repeated_failures_from_one_address_lock_that_address_only() {
    let app = spawn_app().await;
    let guessing = client_from([127, 0, 0, 2]);
    // Twenty guesses spread over ten names: no account reaches its own limit of five, but the
    // address reaches its limit of twenty.
    for i in 0..19 {
        let res = app
            .login(&guessing, &format!("guess-{}", i % 10), "wrong-password-x")
            .await;
        assert!(
            location(&res).contains("error=invalid"),
            "guess {i}: {}",
            location(&res)
        );
    }
    let twentieth = app.login(&guessing, "guess-9", "wrong-password-x").await;
    let target = location(&twentieth);
    assert!(
        target.contains("error=throttled") && target.contains("retry=30"),
        "{target}"
    );
    // From that address even a real account with its right password waits...
    let name = app.add_user(Role::User).await;
    let right = app.login(&guessing, &name, PASSWORD).await;
    assert!(
        location(&right).contains("error=throttled"),
        "{}",
        location(&right)
    );
    // ...while the same account signs in from another address, and its own count is untouched.
    let elsewhere = client_from([127, 0, 0, 3]);
    assert_eq!(location(&app.login(&elsewhere, &name, PASSWORD).await), "/");
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let app = spawn_app().await;
    let c = app.client_as(Role::Viewer).await;
    assert_eq!(
        c.get(app.url("/")).send().await.expect("dash").status(),
        200
    );
    let out = c
        .post(app.url("/auth/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(location(&out), "/login?reason=signed_out");
    let after = c.get(app.url("/")).send().await.expect("dash");
    assert_eq!(after.status(), 303);
    assert!(
        location(&after).starts_with("/login?reason=required"),
        "{}",
        location(&after)
    );
}

#[tokio::test]
async fn pages_need_a_session_and_say_when_it_expired() {
    let app = spawn_app().await;
    let anon = client()
        .get(app.url("/runs?state=failed"))
        .send()
        .await
        .expect("page");
    assert_eq!(anon.status(), 303);
    assert_eq!(
        location(&anon),
        "/login?reason=required&next=/runs%3Fstate%3Dfailed"
    );

    let stale = client()
        .get(app.url("/runs"))
        .header("cookie", "trialflow_session=bm90LWEtc2Vzc2lvbg")
        .send()
        .await
        .expect("page");
    assert!(location(&stale).starts_with("/login?reason=expired"));
    let api = client()
        .post(app.url("/api/viewer/system_health"))
        .header("cookie", "trialflow_session=bm90LWEtc2Vzc2lvbg")
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 401);
    assert_eq!(
        api.json::<serde_json::Value>().await.expect("json"),
        serde_json::json!("SessionExpired")
    );
}

#[tokio::test]
async fn resetting_a_password_ends_that_users_sessions() {
    let app = spawn_app().await;
    let c = app.client_as(Role::User).await;
    assert_eq!(
        c.get(app.url("/runs")).send().await.expect("page").status(),
        200
    );
    trialflow::bootstrap::reset_password(
        &app.db,
        "user-user",
        Some("another-long-password".into()),
    )
    .await
    .expect("reset");
    let res = c.get(app.url("/runs")).send().await.expect("page");
    assert!(
        location(&res).starts_with("/login?reason=expired"),
        "{}",
        location(&res)
    );
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let app = spawn_app().await;
    let c = app.client_as(Role::Admin).await;
    let form = [
        ("username", "mallory"),
        ("role", "admin"),
        ("password", "mallory-password-1"),
    ];
    let evil = c
        .post(app.url("/api/admin/create_user"))
        .header("origin", "http://evil.example")
        .form(&form)
        .send()
        .await
        .expect("post");
    assert_eq!(evil.status(), 403);
    assert!(
        evil.text()
            .await
            .expect("body")
            .contains("cross-site request refused")
    );
    let marked = c
        .post(app.url("/auth/logout"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("post");
    assert_eq!(marked.status(), 403);
    assert!(
        app.db
            .user_by_name("mallory")
            .await
            .expect("lookup")
            .is_none()
    );
    // The same request from our own origin goes through.
    let ours = c
        .post(app.url("/api/admin/create_user"))
        .header("origin", app.base.clone())
        .form(&form)
        .send()
        .await
        .expect("post");
    assert_eq!(ours.status(), 200);
}

#[tokio::test]
async fn malformed_requests_get_clear_messages() {
    let app = spawn_app().await;
    let res = client()
        .post(app.url("/auth/login"))
        .body("garbage")
        .send()
        .await
        .expect("post");
    assert_eq!(location(&res), "/login?error=malformed");

    let c = app.client_as(Role::Admin).await;
    let res = app
        .call(
            &c,
            "/api/admin/set_user_role",
            &[("user_id", "not-a-number"), ("role", "op")],
        )
        .await;
    assert_eq!(res.status(), 400);
    let body = res.text().await.expect("body");
    assert!(body.contains("malformed request"), "{body}");
    assert!(!body.contains("panicked"), "{body}");

    let res = app
        .call(
            &c,
            "/api/admin/create_user",
            &[
                ("username", "bob"),
                ("role", "root"),
                ("password", "long-enough-pw"),
            ],
        )
        .await;
    assert_eq!(res.status(), 400, "unknown role is refused");
    let res = app
        .call(
            &c,
            "/api/admin/create_user",
            &[("username", "bob"), ("role", "op"), ("password", "short")],
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<serde_json::Value>().await.expect("json"),
        serde_json::json!({"Invalid": {"field": "Password", "message": "must be at least 12 characters long"}})
    );
}

#[tokio::test]
async fn admins_manage_users_and_every_change_is_audited() {
    let app = spawn_app().await;
    let c = app.client_as(Role::Admin).await;
    let created: serde_json::Value = app
        .call(
            &c,
            "/api/admin/create_user",
            &[
                ("username", "Carol"),
                ("role", "op"),
                ("password", "carol-password-1"),
            ],
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(created["username"], "carol");
    let id = created["id"].as_i64().expect("id").to_string();
    let dup = app
        .call(
            &c,
            "/api/admin/create_user",
            &[
                ("username", "carol"),
                ("role", "op"),
                ("password", "carol-password-1"),
            ],
        )
        .await;
    assert_eq!(dup.status(), 409);

    let res = app
        .call(
            &c,
            "/api/admin/set_user_role",
            &[("user_id", &id), ("role", "viewer")],
        )
        .await;
    assert_eq!(
        res.json::<serde_json::Value>().await.expect("json")["role"],
        "viewer"
    );
    let res = app
        .call(
            &c,
            "/api/admin/set_user_disabled",
            &[("user_id", &id), ("disabled", "true")],
        )
        .await;
    assert_eq!(
        res.json::<serde_json::Value>().await.expect("json")["disabled"],
        true
    );
    let disabled_login = app.login(&client(), "carol", "carol-password-1").await;
    assert!(location(&disabled_login).contains("error=disabled"));

    let reset: serde_json::Value = app
        .call(&c, "/api/admin/reset_user_password", &[("user_id", &id)])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(reset["one_time_password"].as_str().map(str::len), Some(20));

    let actions: Vec<String> = app
        .db
        .audit_entries(50)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    for expected in [
        "user.create",
        "user.set_role",
        "user.disable",
        "user.reset_password",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted_or_disabled() {
    let app = spawn_app().await;
    let c = app.client_as(Role::Admin).await;
    // The first-start admin exists too; disable it so admin-user is the last one.
    let first = app
        .db
        .user_by_name("admin")
        .await
        .expect("lookup")
        .expect("first admin");
    app.db
        .set_user_disabled(first.id, true)
        .await
        .expect("disable");
    let me = app
        .db
        .user_by_name("admin-user")
        .await
        .expect("lookup")
        .expect("me");
    let res = app
        .call(
            &c,
            "/api/admin/set_user_role",
            &[("user_id", &me.id.to_string()), ("role", "op")],
        )
        .await;
    assert_eq!(res.status(), 409);
    assert!(
        res.text()
            .await
            .expect("body")
            .contains("last enabled admin")
    );
}

#[tokio::test]
async fn pages_render_for_their_roles() {
    let app = spawn_app().await;
    let viewer = app.client_as(Role::Viewer).await;
    let dash = viewer.get(app.url("/")).send().await.expect("dash");
    assert_eq!(dash.status(), 200);
    let html = dash.text().await.expect("html");
    assert!(
        html.contains("Dashboard") && html.contains("viewer-user"),
        "{html}"
    );
    assert!(
        !html.contains("href=\"/users\""),
        "viewers get no Users link"
    );

    let users = viewer.get(app.url("/users")).send().await.expect("users");
    assert_eq!(users.status(), 403);
    assert!(
        users
            .text()
            .await
            .expect("html")
            .contains("This needs the admin role; you are signed in as viewer.")
    );

    let admin = app.client_as(Role::Admin).await;
    let users = admin.get(app.url("/users")).send().await.expect("users");
    assert_eq!(users.status(), 200);
    let html = users.text().await.expect("html");
    assert!(
        html.contains("viewer-user") && html.contains("<tbody"),
        "{html}"
    );
    assert!(
        !html.contains("argon2"),
        "password hashes never reach a page"
    );

    let missing = admin
        .get(app.url("/no-such-page"))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn health_reports_the_database() {
    for backend in crate::helpers::BACKENDS {
        let app = spawn_app_on(backend).await;
        let res = client()
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["database"]["ok"], true);
        let expected = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        assert_eq!(body["database"]["backend"], expected);
    }
}

#[tokio::test]
async fn sessions_work_on_postgres() {
    let app = spawn_app_on(Backend::Postgres).await;
    let c = app.client_as(Role::Op).await;
    let me: serde_json::Value = c
        .post(app.url("/api/public/whoami"))
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("json");
    assert_eq!(me["role"], "op");
    c.post(app.url("/auth/logout"))
        .send()
        .await
        .expect("logout");
    let me: serde_json::Value = c
        .post(app.url("/api/public/whoami"))
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("json");
    assert_eq!(me, serde_json::Value::Null);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413_and_normal_ones_pass() {
    let app = spawn_app().await;
    let admin = app.client_as(Role::Admin).await;
    let big = "x".repeat(trialflow::http::MAX_REQUEST_BODY + 1);
    for path in ["/api/op/register_flow", "/auth/login"] {
        let res = admin
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("source={big}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 413, "{path}");
    }
    // The same request under the limit reaches the function, which names what is wrong.
    let res = app
        .call(
            &admin,
            "/api/op/register_flow",
            &[("source", "not: [valid")],
        )
        .await;
    assert_ne!(res.status(), 413);
    assert!(res.status().is_client_error(), "{}", res.status());
}
