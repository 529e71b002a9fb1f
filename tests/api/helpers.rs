//! Spawning the application and talking to it like a browser would.
use app::model::Role;
use std::sync::Arc;
use trialflow::config::ServeArgs;
use trialflow::startup::Application;
use trialflow::store::Db;

pub const PASSWORD: &str = "integration-test-password";

pub struct TestApp {
    pub base: String,
    pub db: Db,
    pub engine: Arc<trialflow::engine::Engine>,
    pub data_dir: std::path::PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

/// Which database a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// Base URL of the PostgreSQL server used for tests (each test gets its own fresh database).
fn postgres_admin_url() -> String {
    std::env::var("TRIALFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database URL for a brand-new, empty database (None = SQLite in the data dir).
pub async fn fresh_database(backend: Backend) -> Option<String> {
    match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            use sqlx::Connection;
            let admin = postgres_admin_url();
            let name = format!("trialflow_test_{:016x}", rand::random::<u64>());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is needed for the tests: {e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let base = admin
                .rsplit_once('/')
                .map_or(admin.as_str(), |(b, _)| b)
                .to_string();
            Some(format!("{base}/{name}"))
        }
    }
}

pub async fn fresh_db(backend: Backend) -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = fresh_database(backend).await;
    let db = Db::connect(url.as_deref(), dir.path())
        .await
        .expect("open database");
    (db, dir)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Sqlite).await
}

pub async fn spawn_app_on(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

/// The app as `serve --demo` starts it: the iMednet simulator mounted at /sim.
pub async fn spawn_demo_app() -> TestApp {
    spawn_with(Backend::Sqlite, |args| args.demo = true).await
}

pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = fresh_database(backend).await;
    let mut args = ServeArgs::for_tests(dir.path(), url);
    configure(&mut args);
    let app = Application::build(args).await.expect("application builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let db = app.db().clone();
    let engine = app.engine().clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        base,
        db,
        engine,
        data_dir: dir.path().to_path_buf(),
        _dir: Arc::new(dir),
    }
}

/// A client that keeps cookies and shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates `<role>-user` with [`PASSWORD`] and returns its name.
    pub async fn add_user(&self, role: Role) -> String {
        let name = format!("{role}-user");
        trialflow::bootstrap::add_user(&self.db, &name, role, Some(PASSWORD.to_string()))
            .await
            .expect("add user");
        name
    }

    pub async fn login(
        &self,
        client: &reqwest::Client,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        client
            .post(self.url("/auth/login"))
            .form(&[
                ("username", username),
                ("password", password),
                ("next", "/"),
            ])
            .send()
            .await
            .expect("login request")
    }

    /// A client signed in with a fresh user of `role`.
    pub async fn client_as(&self, role: Role) -> reqwest::Client {
        let name = self.add_user(role).await;
        let c = client();
        let res = self.login(&c, &name, PASSWORD).await;
        assert_eq!(
            location(&res),
            "/",
            "login as {name} should land on the dashboard"
        );
        c
    }

    /// The HTML of a page as `client` sees it (200 asserted).
    pub async fn page_text(&self, client: &reqwest::Client, path: &str) -> String {
        let res = client
            .get(self.url(path))
            .send()
            .await
            .expect("page request");
        assert_eq!(res.status(), 200, "{path}");
        res.text().await.expect("page body")
    }

    pub async fn call(
        &self,
        client: &reqwest::Client,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .expect("server fn request")
    }
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}
