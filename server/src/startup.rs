//! Building and running the application; tests use the same path with port 0.
use crate::backend::ServerBackend;
use crate::config::ServeArgs;
use crate::engine::Engine;
use crate::http::{self, SessionSettings};
use crate::operators::OperatorRegistry;
use crate::store::Db;
use crate::store::sessions::DbSessionStore;
use anyhow::Context;
use app::port::AppState;
use leptos::config::{Env, LeptosOptions};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Where demo mode serves the iMednet simulator; a connection's base URL is `http://<addr>/sim`.
pub const DEMO_SIMULATOR_PATH: &str = "/sim";
/// Where demo mode serves its S3-compatible endpoint (buckets under `<data dir>/demo-s3`).
pub const DEMO_S3_PATH: &str = "/s3";

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    db: Db,
    engine: Arc<Engine>,
    first_admin_password: Option<String>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Opens storage (running migrations), creates the first admin if needed, binds the port.
    pub async fn build(args: ServeArgs) -> anyhow::Result<Application> {
        let db = Db::connect(args.storage.database_url.as_deref(), &args.storage.data_dir)
            .await
            .with_context(|| {
                format!(
                    "opening the database ({})",
                    crate::store::describe_target(
                        args.storage.database_url.as_deref(),
                        &args.storage.data_dir
                    )
                )
            })?;
        let first_admin_password = crate::bootstrap::ensure_first_admin(
            &db,
            std::env::var("TRIALFLOW_ADMIN_PASSWORD").ok(),
        )
        .await?;

        let engine = Engine::start(
            db.clone(),
            args.engine.config(&args.storage.data_dir, true),
            OperatorRegistry::with_builtin(),
        )
        .await
        .context("starting the engine")?;

        let listener = TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("binding {}", args.addr))?;
        let local = listener.local_addr()?;
        let site_root = args.resolve_site_root();
        let leptos_options = LeptosOptions::builder()
            .output_name("trialflow")
            .site_root(site_root.display().to_string())
            .site_pkg_dir("pkg")
            .site_addr(local)
            .env(Env::PROD)
            .build();
        let backend = Arc::new(ServerBackend::new(
            db.clone(),
            engine.clone(),
            engine.connections().clone(),
        ));
        let app_state = AppState {
            leptos_options,
            backend: backend.clone(),
            console: backend,
        };
        let mut router = http::router(
            app_state,
            db.clone(),
            SessionSettings {
                idle: args.session_idle(),
                secure_cookies: args.secure_cookies,
            },
            engine.clone(),
        );
        if args.demo {
            // Outside the session and sign-in layers: they check their own API keys.
            let sim = crate::imednet::SimState::new(crate::imednet::SimConfig::default());
            let demo_s3 =
                crate::objstore::demo_server::router(&args.storage.data_dir.join("demo-s3"))
                    .await
                    .context("creating the demo S3 folder")?;
            router = axum::Router::new()
                .nest(DEMO_SIMULATOR_PATH, crate::imednet::router(sim))
                .nest(DEMO_S3_PATH, demo_s3)
                .merge(router);
            // Tasks call both over loopback (even when serving on 0.0.0.0) unless workers
            // elsewhere need another address.
            let server_url = args.demo_url.as_deref().map_or_else(
                || format!("http://{}", crate::config::local_address_of(local)),
                |u| u.trim_end_matches('/').to_owned(),
            );
            let base_url = format!("{server_url}{DEMO_SIMULATOR_PATH}");
            let s3_endpoint = format!("{server_url}{DEMO_S3_PATH}/");
            engine
                .connections()
                .ensure_demo(&base_url, &s3_endpoint)
                .await
                .context("creating the demo connections")?;
            tracing::info!(%base_url, %s3_endpoint, "demo mode: imednet_default points at the simulator, aws_default at the demo S3 endpoint");
            crate::flows::registry::install_examples(&engine, "demo")
                .await
                .context("registering the example flows")?;
        }
        let background = vec![spawn_session_sweeper(db.clone())];
        tracing::info!(addr = %local, backend = db.backend_name(), site_root = %site_root.display(), "ready");
        Ok(Application {
            listener,
            router,
            db,
            engine,
            first_admin_password,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The generated password of the admin created at this start, if one was.
    pub fn first_admin_password(&self) -> Option<&str> {
        self.first_admin_password.as_deref()
    }

    /// Serves until `shutdown` resolves, then lets open requests finish and closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        for task in self.background {
            task.abort();
        }
        self.engine.stop().await;
        self.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Removes expired sessions every ten minutes.
fn spawn_session_sweeper(db: Db) -> tokio::task::JoinHandle<()> {
    // Sweeping never loads a session, so the idle time given here is never used.
    let store = DbSessionStore::new(db, time::Duration::hours(8));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = store.delete_expired().await {
                tracing::warn!(error = %e, "expired-session sweep failed");
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing open requests");
}
