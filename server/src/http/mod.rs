//! The HTTP surface: routes, sessions, authentication, cross-site protection and health.
pub mod artifacts;
pub mod audit_export;
pub mod auth;
pub mod bench;
pub mod csrf;
pub mod events;
pub mod health;
pub mod run_watch;

use crate::store::Db;
use app::model::Role;
use app::port::AppState;
use axum::Router;
use axum::http::Method;
use axum::routing::{MethodRouter, get, post};
use leptos_axum::{LeptosRoutes, generate_route_list};
use std::time::Duration;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

/// Session settings the router needs.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub idle: Duration,
    pub secure_cookies: bool,
}

pub const SESSION_COOKIE: &str = "trialflow_session";

/// State for the handlers that live outside Leptos (login, logout, health).
#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub db: Db,
    /// Canonical export root: the only folder downloads are served from.
    pub export_root: std::path::PathBuf,
    pub engine: std::sync::Arc<crate::engine::Engine>,
    /// Live run pages: one producer per watched run.
    pub watches: run_watch::RunWatches,
}

pub fn router(
    app_state: AppState,
    db: Db,
    sessions: SessionSettings,
    engine: std::sync::Arc<crate::engine::Engine>,
) -> Router {
    let export_root = engine.export_root();
    let routes = generate_route_list(app::App);
    let options = app_state.leptos_options.clone();
    let leptos = Router::new()
        .leptos_routes_with_context(&app_state, routes, || {}, {
            let options = options.clone();
            move || app::shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(
            app::shell,
        ))
        .with_state(app_state.clone());

    let http_state = HttpState {
        app: app_state,
        db: db.clone(),
        export_root: std::fs::canonicalize(&export_root).unwrap_or(export_root),
        engine,
        watches: run_watch::RunWatches::default(),
    };
    let idle = time::Duration::try_from(sessions.idle).unwrap_or(time::Duration::hours(8));
    let session_layer =
        SessionManagerLayer::new(crate::store::sessions::DbSessionStore::new(db, idle))
            .with_name(SESSION_COOKIE)
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_secure(sessions.secure_cookies)
            .with_path("/")
            .with_expiry(Expiry::OnInactivity(idle));

    let mut plain = Router::new();
    for route in plain_routes() {
        let access = route.access;
        plain = plain.route(
            route.path,
            route
                .handler
                .route_layer(axum::middleware::from_fn(move |req, next| {
                    auth::require_access(access, req, next)
                })),
        );
    }
    plain
        .with_state(http_state.clone())
        .merge(leptos)
        .layer(axum::middleware::from_fn_with_state(
            http_state,
            auth::authenticate,
        ))
        .layer(session_layer)
        .layer(axum::middleware::from_fn(csrf::refuse_cross_site))
        // Nothing the console posts comes near this (a pasted pipeline is kilobytes); larger
        // bodies are refused with 413 (by Content-Length, or once a streamed body passes it).
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_REQUEST_BODY,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Who may use a route outside Leptos.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Signed out too: health, sign-in and sign-out.
    Anyone,
    /// Signed in with at least this role.
    AtLeast(Role),
}

/// A route outside Leptos: the router is built from these, and the role in each is enforced
/// for it, so no route can be added without saying who may use it.
pub struct PlainRoute {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<HttpState>,
}

fn plain_routes() -> Vec<PlainRoute> {
    use Access::{Anyone, AtLeast};
    let route = |method: Method, path, access, handler| PlainRoute {
        method,
        path,
        access,
        handler,
    };
    vec![
        route(Method::GET, "/healthz", Anyone, get(health::healthz)),
        route(Method::POST, "/auth/login", Anyone, post(auth::login)),
        route(Method::POST, "/auth/logout", Anyone, post(auth::logout)),
        route(
            Method::GET,
            "/artifacts/{id}/download",
            AtLeast(Role::Viewer),
            get(artifacts::download),
        ),
        route(
            Method::GET,
            "/audit/{file}",
            AtLeast(Role::Admin),
            get(audit_export::export),
        ),
        route(
            Method::GET,
            "/events/runs/{id}",
            AtLeast(Role::Viewer),
            get(events::run_events),
        ),
        route(
            Method::GET,
            "/events/dashboard",
            AtLeast(Role::Viewer),
            get(events::dashboard_events),
        ),
        route(
            Method::GET,
            "/events/instances/{ti}/log",
            AtLeast(Role::Viewer),
            get(events::log_events),
        ),
    ]
}

/// Method, path and access of every route outside Leptos, as the router has them.
pub fn plain_route_table() -> Vec<(Method, &'static str, Access)> {
    plain_routes()
        .into_iter()
        .map(|r| (r.method, r.path, r.access))
        .collect()
}

/// The paths of the console's pages (Leptos routes), as the router has them.
pub fn page_paths() -> Vec<String> {
    generate_route_list(app::App)
        .iter()
        .map(|r| r.path().to_string())
        .collect()
}

/// The largest request body the web server accepts (the demo S3 endpoint, mounted beside
/// this router, takes uploads of any size).
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;
