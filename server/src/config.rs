//! Typed configuration: command-line flags with environment-variable fallbacks.
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where state lives; shared by every subcommand that opens the database.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Directory for the SQLite database, key files and exports.
    #[arg(long, env = "TRIALFLOW_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…) for the scale-out backend; unset means SQLite in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[arg(long, env = "TRIALFLOW_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Folder with the built site (pkg/ with wasm, js, css). Found next to the binary when unset.
    #[arg(long, env = "TRIALFLOW_SITE_ROOT")]
    pub site_root: Option<PathBuf>,
    /// Minutes of inactivity after which a session ends.
    #[arg(long, env = "TRIALFLOW_SESSION_IDLE_MINUTES", default_value_t = 480)]
    pub session_idle_minutes: u32,
    /// Mark the session cookie Secure (set when served over HTTPS).
    #[arg(long, env = "TRIALFLOW_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Demo mode: serve the iMednet simulator at /sim so exports work without an account.
    #[arg(long, env = "TRIALFLOW_DEMO", default_value_t = false)]
    pub demo: bool,
    /// Demo mode: the URL other processes (workers elsewhere) reach this server at, for the
    /// demo connections. Default: --addr over loopback.
    #[arg(long, env = "TRIALFLOW_DEMO_URL")]
    pub demo_url: Option<String>,
}

impl ServeArgs {
    /// Defaults for a test or embedded start: port 0 and the given data directory.
    pub fn for_tests(data_dir: &Path, database_url: Option<String>) -> Self {
        ServeArgs {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage: StorageArgs {
                data_dir: data_dir.to_path_buf(),
                database_url,
            },
            site_root: None,
            session_idle_minutes: 480,
            secure_cookies: false,
            engine: EngineArgs::default(),
            demo: false,
            demo_url: None,
        }
    }

    pub fn session_idle(&self) -> Duration {
        Duration::from_secs(u64::from(self.session_idle_minutes.max(1)) * 60)
    }

    /// The site folder: as configured, else `site/` beside the binary or one level up
    /// (cargo-leptos puts the binary in target/<profile>/ and the site in target/site/).
    pub fn resolve_site_root(&self) -> PathBuf {
        if let Some(root) = &self.site_root {
            return root.clone();
        }
        if let Ok(root) = std::env::var("LEPTOS_SITE_ROOT") {
            return PathBuf::from(root);
        }
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        if let Some(dir) = exe_dir {
            for candidate in [dir.join("site"), dir.join("../site")] {
                if candidate.join("pkg").is_dir() {
                    return candidate;
                }
            }
        }
        PathBuf::from("target/site")
    }
}

/// Engine settings shared by `serve` and `worker`.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Folder of pipeline YAML files loaded beside the shipped ones.
    #[arg(long, env = "TRIALFLOW_PIPELINES_DIR")]
    pub pipelines_dir: Option<PathBuf>,
    /// Tasks this process runs at once (0: no worker in this process).
    #[arg(long, env = "TRIALFLOW_WORKERS", default_value_t = 16)]
    pub workers: usize,
    /// Labels this process's workers advertise (comma-separated).
    #[arg(long, env = "TRIALFLOW_WORKER_LABELS", value_delimiter = ',')]
    pub worker_labels: Vec<String>,
    /// Most instances one mapped task may expand to.
    #[arg(long, env = "TRIALFLOW_MAX_MAP_LENGTH", default_value_t = 10_000)]
    pub max_map_length: usize,
    /// Seconds after which an attempt whose worker stopped heartbeating is reclaimed.
    #[arg(long, env = "TRIALFLOW_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,
    /// Seconds between heartbeats.
    #[arg(long, env = "TRIALFLOW_HEARTBEAT_SECONDS", default_value_t = 5)]
    pub heartbeat_seconds: u64,
    /// Folder local exports are written under (default `<data dir>/exports`); output paths
    /// outside it are refused.
    #[arg(long, env = "TRIALFLOW_EXPORT_ROOT")]
    pub export_root: Option<PathBuf>,
    /// Filesystems flows' file references may name, besides `local` (`<data dir>/files`):
    /// `ID=local:/path`, `ID=mounted:/host/path:/alias` or `ID=s3:bucket/prefix` (comma-separated).
    #[arg(
        long = "filesystem",
        env = "TRIALFLOW_FILESYSTEMS",
        value_delimiter = ','
    )]
    pub filesystems: Vec<String>,
    /// The address people open the console at (e.g. https://trialflow.example.org); alerts
    /// link to the run under it.
    #[arg(long, env = "TRIALFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds before an undelivered alert is sent again; each further retry waits 4× longer
    /// (at most an hour).
    #[arg(long, env = "TRIALFLOW_ALERT_RETRY_SECONDS", default_value_t = 10.0)]
    pub alert_retry_seconds: f64,
    /// Attempts per alert delivery, the first one included.
    #[arg(long, env = "TRIALFLOW_ALERT_ATTEMPTS", default_value_t = 6)]
    pub alert_attempts: u32,
}

impl Default for EngineArgs {
    fn default() -> Self {
        EngineArgs {
            pipelines_dir: None,
            workers: 16,
            worker_labels: Vec::new(),
            max_map_length: 10_000,
            lease_seconds: 30,
            heartbeat_seconds: 5,
            export_root: None,
            filesystems: Vec::new(),
            public_url: None,
            alert_retry_seconds: 10.0,
            alert_attempts: 6,
        }
    }
}

impl EngineArgs {
    pub fn config(&self, data_dir: &Path, scheduler: bool) -> crate::engine::EngineConfig {
        let mut c = crate::engine::EngineConfig::new(data_dir.to_path_buf());
        c.scheduler = scheduler;
        c.workers = self.workers;
        c.worker_labels = self
            .worker_labels
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        c.max_map_length = self.max_map_length;
        c.lease_ms = i64::try_from(self.lease_seconds.max(1) * 1000).unwrap_or(30_000);
        c.heartbeat_ms = self.heartbeat_seconds.max(1) * 1000;
        c.pipelines_dir = self.pipelines_dir.clone();
        if let Some(root) = &self.export_root {
            c.export_root = root.clone();
        }
        c.filesystems = self.filesystems.clone();
        c.alerts = crate::alerts::AlertConfig {
            public_url: self.public_url.clone(),
            retry_delay: std::time::Duration::try_from_secs_f64(self.alert_retry_seconds)
                .unwrap_or(c.alerts.retry_delay),
            max_attempts: self.alert_attempts.max(1),
        };
        c
    }
}

/// The address a process on this machine reaches a server listening on `addr` at: a server
/// bound to 0.0.0.0 / :: is asked on loopback.
pub fn local_address_of(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}
