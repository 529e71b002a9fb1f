//! The command line: one binary, several modes.
use crate::bootstrap;
use crate::config::{ServeArgs, StorageArgs};
use crate::startup::Application;
use crate::store::Db;
use app::model::Role;
use clap::{Parser, Subcommand};
use std::io::Read;

#[derive(Debug, Parser)]
#[command(
    name = "trialflow",
    version,
    about = "Clinical-trial data exports and pipelines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the web dashboard and run the engine.
    Serve(ServeArgs),
    /// Manage users from the shell.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Serve the iMednet REST API simulator on its own (prints `LISTENING <port>` once bound).
    Simulate(SimulateArgs),
    /// Measure performance; prints JSON.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Address to bind (loopback unless you mean otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Data size: demo (3 studies), large (adds a 1,000,000-record study), or bench:RECORDSxVARIABLES.
    #[arg(long, default_value = "demo", value_parser = parse_profile)]
    pub profile: crate::imednet::Profile,
    /// Seed of the deterministic data generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Milliseconds until a submitted job completes (it is running after a quarter of that).
    #[arg(long, default_value_t = 400)]
    pub job_ms: u64,
    /// Faults from the start, as the JSON that `PUT /__sim/faults` takes, e.g.
    /// '{"latencyMs":50,"rateLimitRps":20,"errorShare":0.1}'.
    #[arg(long, value_parser = parse_faults)]
    pub faults: Option<crate::imednet::Faults>,
}

impl SimulateArgs {
    pub fn config(&self) -> crate::imednet::SimConfig {
        crate::imednet::SimConfig {
            seed: self.seed,
            profile: self.profile.clone(),
            job_done_after: std::time::Duration::from_millis(self.job_ms),
            job_running_after: std::time::Duration::from_millis(self.job_ms / 4),
            faults: self.faults.clone().unwrap_or_default(),
            ..crate::imednet::SimConfig::default()
        }
    }
}

fn parse_profile(s: &str) -> Result<crate::imednet::Profile, String> {
    crate::imednet::Profile::parse(s).ok_or_else(|| {
        format!("unknown profile '{s}': expected demo, large or bench:RECORDSxVARIABLES")
    })
}

fn parse_faults(s: &str) -> Result<crate::imednet::Faults, String> {
    serde_json::from_str(s).map_err(|e| format!("invalid faults JSON: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Simulator pages/s and client records/s streaming one study, with peak memory.
    Imednet {
        /// Records in the benchmark study.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user. Without --password-stdin a password is generated and printed once.
    Add {
        username: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Set a new password (generated unless --password-stdin) and end the user's sessions.
    ResetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// List users with their roles.
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::User { action } => user(action).await,
        Command::Simulate(args) => simulate(args).await,
        Command::Bench { target } => bench(target).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = Application::build(args).await?;
    let url = format!("http://{}", app.local_addr());
    println!("trialflow is listening on {url}");
    match app.first_admin_password() {
        Some(password) => println!(
            "First start: sign in as 'admin' with the one-time password {password}\n\
             (it is shown only now; change it with `trialflow user reset-password admin`)"
        ),
        None => println!("Sign in at {url}/login with an existing account."),
    }
    app.run_until_stopped(crate::startup::shutdown_signal())
        .await
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host, args.port)).await?;
    let addr = listener.local_addr()?;
    println!("LISTENING {}", addr.port());
    eprintln!(
        "iMednet simulator at http://{addr} (keys demo-api-key / demo-security-key; faults at /__sim/faults)"
    );
    let router = crate::imednet::router(crate::imednet::SimState::new(args.config()));
    axum::serve(listener, router)
        .with_graceful_shutdown(crate::startup::shutdown_signal())
        .await?;
    Ok(())
}

async fn bench(target: BenchTarget) -> anyhow::Result<()> {
    match target {
        BenchTarget::Imednet { records } => {
            let mut out = crate::imednet::bench::bench(records).await;
            out["large"] = crate::imednet::bench::large_last_page().await;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}

async fn user(action: UserCommand) -> anyhow::Result<()> {
    match action {
        UserCommand::Add {
            username,
            role,
            password_stdin,
            storage,
        } => {
            let db = open(&storage).await?;
            let password = read_password(password_stdin)?;
            let generated = bootstrap::add_user(&db, &username, role, password).await?;
            println!("Added {} with role {role}.", username.trim().to_lowercase());
            if let Some(p) = generated {
                println!("One-time password (shown only now): {p}");
            }
        }
        UserCommand::ResetPassword {
            username,
            password_stdin,
            storage,
        } => {
            let db = open(&storage).await?;
            let password = read_password(password_stdin)?;
            let generated = bootstrap::reset_password(&db, &username, password).await?;
            println!(
                "Password of {} changed; their sessions have ended.",
                username.trim().to_lowercase()
            );
            if let Some(p) = generated {
                println!("One-time password (shown only now): {p}");
            }
        }
        UserCommand::List { storage } => {
            let db = open(&storage).await?;
            for u in db.list_users().await? {
                let state = if u.disabled { "disabled" } else { "active" };
                println!("{:<32} {:<7} {state}", u.username, u.role);
            }
        }
    }
    Ok(())
}

async fn open(storage: &StorageArgs) -> anyhow::Result<Db> {
    Ok(Db::connect(storage.database_url.as_deref(), &storage.data_dir).await?)
}

fn read_password(from_stdin: bool) -> anyhow::Result<Option<String>> {
    if !from_stdin {
        return Ok(None);
    }
    let mut buf = String::new();
    std::io::stdin().read_to_string(&mut buf)?;
    Ok(Some(buf.trim_end_matches(['\r', '\n']).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulate_takes_faults_at_start() {
        let cli = Cli::try_parse_from([
            "trialflow",
            "simulate",
            "--faults",
            r#"{"latencyMs":5,"rules":[{"study":"DEMO","kind":{"type":"status","status":503}}]}"#,
        ])
        .expect("parses");
        let Command::Simulate(args) = cli.command else {
            panic!("simulate expected")
        };
        let cfg = args.config();
        assert_eq!(cfg.faults.latency_ms, 5);
        assert_eq!(cfg.faults.rules.len(), 1);
    }

    #[test]
    fn bad_faults_json_is_named() {
        let err = Cli::try_parse_from(["trialflow", "simulate", "--faults", "{nope"])
            .expect_err("refused");
        assert!(err.to_string().contains("invalid faults JSON"), "{err}");
    }
}
