//! Tracing, initialised once per process.
use tracing_subscriber::{EnvFilter, fmt};

/// `RUST_LOG` picks levels (default info); `TRIALFLOW_LOG_FORMAT=json` switches to JSON lines.
/// Logs go to stderr so stdout carries only a command's answer (JSON of `bench`, `describe` …).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,tower_sessions=warn,tower_sessions_core=warn")
    });
    let json = std::env::var("TRIALFLOW_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    // A second init (tests start many apps in one process) is harmless; ignore it.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
