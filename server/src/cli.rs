//! The command line: one binary, several modes.
use crate::bootstrap;
use crate::config::{ServeArgs, StorageArgs};
use crate::engine::Engine;
use crate::operators::OperatorRegistry;
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
    /// Start a run of a pipeline.
    Trigger {
        pipeline: String,
        /// Parameters as a JSON object, e.g. '{"export_root": "out"}'.
        #[arg(long, default_value = "{}")]
        conf: String,
        /// Wait until the run ends and exit non-zero unless it succeeded.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        engine: crate::config::EngineArgs,
    },
    /// List recent runs.
    Runs {
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Show one run: its tasks and their instances.
    Run {
        id: i64,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Check or list pipelines.
    Pipelines {
        #[command(subcommand)]
        action: PipelinesCommand,
    },
    /// Flows and flows of flows: register (versioned), list, validate, run and return results.
    Flows {
        #[command(subcommand)]
        action: FlowsCommand,
    },
    /// Connections: list them (secrets as ***) and rotate the key that encrypts their secrets.
    Connections {
        #[command(subcommand)]
        action: ConnectionsCommand,
    },
    /// Re-hash an export's files against its manifest.json: a local folder or s3://bucket/prefix/.
    VerifyExport {
        target: String,
        /// The connection to read S3 with.
        #[arg(long, default_value = "aws_default")]
        aws_conn_id: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// The audit log: verify its hash chain, export it with the chain.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Run tasks for a scheduler elsewhere (PostgreSQL only): any number of these, on any machines.
    Worker {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        engine: crate::config::EngineArgs,
    },
    /// Ask a running server's /healthz; exits 0 when it and its database answer (container
    /// healthchecks: the image needs no curl).
    Healthcheck {
        /// Default: /healthz on the loopback address of TRIALFLOW_ADDR.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, env = "TRIALFLOW_ADDR", default_value = "127.0.0.1:3000")]
        addr: std::net::SocketAddr,
    },
    /// Serve the iMednet REST API simulator on its own (prints `LISTENING <port>` once bound).
    Simulate(SimulateArgs),
    /// Measure performance; prints JSON.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

impl Command {
    /// Whether this command may run tasks, servers or child processes (not a one-shot query).
    pub fn runs_tasks(&self) -> bool {
        matches!(
            self,
            Command::Serve(_)
                | Command::Trigger { .. }
                | Command::Flows { .. }
                | Command::Worker { .. }
                | Command::Simulate(_)
                | Command::Bench { .. }
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every entry's hash and link; exit non-zero naming the first entry that does not verify.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Write every entry, oldest first, with its link and hash (JSON also carries the verification).
    Export {
        #[arg(long, value_enum, default_value = "json")]
        format: crate::audit::ExportFormat,
        /// File to write (default: standard output).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// List connections with their settings and which secrets are configured.
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Print one connection as the provider's describe_connection() JSON.
    Describe {
        conn_id: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Add a new active key to <data dir>/secret.key and re-encrypt every stored secret with it.
    /// Running servers pick the new key up on their next use of a re-encrypted value.
    RotateKey {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Re-encrypt every secret not under the active key (after putting a new key first in
    /// TRIALFLOW_SECRET_KEY).
    Reencrypt {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PipelinesCommand {
    /// Validate pipeline files; prints each error as file:line: message.
    Check { files: Vec<std::path::PathBuf> },
    /// List the pipelines this installation knows.
    List {
        #[command(flatten)]
        storage: StorageArgs,
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
pub enum FlowsCommand {
    /// Register a pipeline (into --project) or a flow of flows from a YAML file; an unchanged
    /// flow keeps its version, a changed one gets the next.
    Register {
        file: std::path::PathBuf,
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Check a YAML file without registering it.
    Validate {
        file: std::path::PathBuf,
        #[arg(long, default_value = "default")]
        project: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Register the example flows shipped in the binary (project trials).
    InstallExamples {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// The newest version of every registered flow.
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Run a flow. With --wait (or --task), wait and print its results as JSON; a running server
    /// executes it.
    Run {
        flow: String,
        /// Parameters as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Print only this task's result (implies --wait).
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(long, default_value_t = 10)]
        poll_interval: u64,
        /// Only workers with all these labels run it.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        /// RFC 3339 time before which the run does not start.
        #[arg(long)]
        start_at: Option<String>,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Simulator pages/s and client records/s streaming one study, with peak memory.
    Imednet {
        /// Records in the benchmark study.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
    },
    /// Engine throughput (10,000 mapped no-ops), a 100-task chain's hop latency, worker scaling.
    Engine {
        #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
        backend: String,
        /// PostgreSQL server for --backend postgres (a fresh database is created on it).
        #[arg(
            long,
            env = "TRIALFLOW_BENCH_POSTGRES",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        postgres: String,
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        #[arg(long, default_value_t = 100)]
        chain: usize,
        /// Worker process counts to compare (PostgreSQL only).
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        worker_processes: Vec<usize>,
    },
    /// Export records/s and peak memory per format and study size (each export in its own
    /// process, so peaks are comparable), and the Python SDK's export_to_csv for a ratio.
    Export(crate::export::bench::BenchOptions),
    /// The run page of a 10,000-instance run: server render time and first payload, and the
    /// live stream's message rate while the instances finish.
    Console(crate::http::bench::ConsoleBenchOptions),
    /// One export in this process (used by `bench export`); prints JSON.
    #[command(hide = true)]
    ExportWorker {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        study: String,
        #[arg(long)]
        format: String,
        #[arg(long)]
        output: std::path::PathBuf,
        /// Export options as JSON (the operator's `export_kwargs`).
        #[arg(long, default_value = "{}")]
        options: String,
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
        Command::Trigger {
            pipeline,
            conf,
            wait,
            storage,
            engine,
        } => trigger(&pipeline, &conf, wait, &storage, &engine).await,
        Command::Runs {
            pipeline,
            state,
            limit,
            storage,
        } => runs(pipeline, state, limit, &storage).await,
        Command::Run { id, storage } => show_run(id, &storage).await,
        Command::Pipelines { action } => pipelines(action).await,
        Command::Worker { storage, engine } => worker(&storage, &engine).await,
        Command::Flows { action } => flows(action).await,
        Command::Connections { action } => connections(action).await,
        Command::Audit { action } => audit(action).await,
        Command::VerifyExport {
            target,
            aws_conn_id,
            storage,
        } => verify_export(&target, &aws_conn_id, &storage).await,
        Command::Bench { target } => bench(target).await,
        Command::Healthcheck { url, addr } => healthcheck(url, addr).await,
    }
}

async fn healthcheck(url: Option<String>, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use anyhow::Context;
    let url =
        url.unwrap_or_else(|| format!("http://{}/healthz", crate::config::local_address_of(addr)));
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    println!("{url}: {status} {body}");
    Ok(())
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

async fn verify_export(
    target: &str,
    aws_conn_id: &str,
    storage: &StorageArgs,
) -> anyhow::Result<()> {
    use crate::export::provenance;
    let checks = if target.starts_with("s3://") {
        let (_, conns) = open_connections(storage).await?;
        let store = conns.aws(aws_conn_id).await?.store()?;
        provenance::verify_s3(&store, target).await?
    } else {
        provenance::verify_dir(std::path::Path::new(target))?
    };
    for c in &checks {
        println!("{:<15} {}", c.outcome, c.name);
    }
    let bad = checks.iter().filter(|c| c.outcome != "ok").count();
    anyhow::ensure!(
        bad == 0,
        "{bad} of {} files do not match the manifest",
        checks.len()
    );
    println!("All {} files match the manifest.", checks.len());
    Ok(())
}

async fn audit(action: AuditCommand) -> anyhow::Result<()> {
    match action {
        AuditCommand::Verify { json, storage } => {
            let report = open(&storage).await?.verify_audit().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            match &report.broken {
                None => {
                    if !json {
                        println!(
                            "Audit chain intact: {} entries ({} from before the chain), head {}.",
                            report.entries, report.unchained, report.head
                        );
                    }
                    Ok(())
                }
                Some(b) if b.id == 0 => anyhow::bail!("audit chain broken: {}", b.reason),
                Some(b) => anyhow::bail!("audit chain broken at entry {}: {}", b.id, b.reason),
            }
        }
        AuditCommand::Export {
            format,
            output,
            storage,
        } => {
            let (db, conns) = open_connections(&storage).await?;
            conns.learn_secrets().await?;
            let body = crate::audit::export(&db, &conns.known_secrets(), format).await?;
            match output {
                Some(path) => {
                    std::fs::write(&path, &body)?;
                    eprintln!("Wrote {} ({} bytes).", path.display(), body.len());
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&body)?;
                }
            }
            Ok(())
        }
    }
}

async fn connections(action: ConnectionsCommand) -> anyhow::Result<()> {
    let storage = match &action {
        ConnectionsCommand::List { storage }
        | ConnectionsCommand::Describe { storage, .. }
        | ConnectionsCommand::RotateKey { storage }
        | ConnectionsCommand::Reencrypt { storage } => storage,
    };
    let (db, conns) = open_connections(storage).await?;
    match action {
        ConnectionsCommand::List { .. } => {
            for c in conns.list().await? {
                let secrets: Vec<String> = c
                    .secrets
                    .iter()
                    .map(|s| match s.configured {
                        true => format!("{}=*** ({})", s.field, s.source),
                        false => format!("{}=(not configured)", s.field),
                    })
                    .collect();
                let settings: Vec<String> = c
                    .settings
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "{:<24} {:<8} {} {}",
                    c.conn_id,
                    c.kind,
                    settings.join(" "),
                    secrets.join(" ")
                );
            }
        }
        ConnectionsCommand::Describe { conn_id, .. } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&conns.describe(&conn_id).await?)?
            );
        }
        ConnectionsCommand::RotateKey { .. } => {
            let (key_id, count) = conns.rotate_key().await?;
            db.audit(
                "cli",
                "secrets.rotate_key",
                &key_id,
                serde_json::json!({"reencrypted": count}),
            )
            .await?;
            println!("New active key {key_id}; re-encrypted {count} secret values.");
        }
        ConnectionsCommand::Reencrypt { .. } => {
            let count = conns.reencrypt_all().await?;
            db.audit(
                "cli",
                "secrets.reencrypt",
                "all",
                serde_json::json!({"reencrypted": count}),
            )
            .await?;
            println!("Re-encrypted {count} secret values with the active key.");
        }
    }
    Ok(())
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

async fn trigger(
    pipeline: &str,
    conf: &str,
    wait: bool,
    storage: &StorageArgs,
    engine_args: &crate::config::EngineArgs,
) -> anyhow::Result<()> {
    let conf: serde_json::Value =
        serde_json::from_str(conf).map_err(|e| anyhow::anyhow!("--conf is not JSON: {e}"))?;
    let Some(conf) = conf.as_object().cloned() else {
        anyhow::bail!("--conf must be a JSON object of parameters");
    };
    let db = open(storage).await?;
    // No scheduler or workers here: the running server picks the run up.
    let mut config = engine_args.config(&storage.data_dir, false);
    config.workers = 0;
    let engine = Engine::start(db.clone(), config, OperatorRegistry::with_builtin()).await?;
    let detail = engine
        .connections()
        .known_secrets()
        .redact_json(&conf.clone().into());
    let run_id = engine.trigger(pipeline, conf, "cli", Vec::new()).await?;
    db.audit(
        "cli",
        "run.trigger",
        &format!("{pipeline} run {run_id}"),
        detail,
    )
    .await?;
    println!("Run {run_id} of {pipeline} is queued.");
    if wait {
        let state = engine
            .wait_for_run(run_id, std::time::Duration::from_secs(24 * 3600))
            .await?;
        println!("Run {run_id} ended: {state}.");
        print_run_files(&db, run_id).await?;
        if state != app::state::RunState::Success {
            anyhow::bail!("run {run_id} ended {state}");
        }
    }
    engine.stop().await;
    Ok(())
}

/// The files a finished run wrote, one line each: where, rows, size and SHA-256.
async fn print_run_files(db: &Db, run_id: i64) -> anyhow::Result<()> {
    let files = db.run_artifacts(run_id).await?;
    if files.is_empty() {
        return Ok(());
    }
    println!("Files:");
    for f in files {
        let rows = f
            .rows_written
            .map(|r| format!("{r} rows, "))
            .unwrap_or_default();
        println!("  {} ({rows}{} bytes, sha256 {})", f.uri, f.bytes, f.sha256);
    }
    Ok(())
}

async fn runs(
    pipeline: Option<String>,
    state: Option<String>,
    limit: i64,
    storage: &StorageArgs,
) -> anyhow::Result<()> {
    let state = state
        .map(|s| s.parse::<app::state::RunState>())
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let db = open(storage).await?;
    let filter = crate::store::engine::RunFilter {
        pipeline_id: pipeline,
        state,
        limit,
        ..Default::default()
    };
    println!(
        "{:>6}  {:<32} {:<9} {:<8} queued at (UTC)",
        "run", "pipeline", "state", "trigger"
    );
    for r in db.list_runs(&filter).await? {
        let queued = chrono::DateTime::from_timestamp_millis(r.queued_at).map_or_else(
            || r.queued_at.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        );
        println!(
            "{:>6}  {:<32} {:<9} {:<8} {queued}",
            r.id, r.pipeline_id, r.state, r.run_trigger
        );
    }
    Ok(())
}

async fn show_run(id: i64, storage: &StorageArgs) -> anyhow::Result<()> {
    let db = open(storage).await?;
    let run = db
        .run_row(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no run {id}"))?;
    println!(
        "Run {} of {}: {} (conf {})",
        run.id, run.pipeline_id, run.state, run.conf
    );
    let mut by_task: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> =
        Default::default();
    for (task, state, n) in db.task_state_counts(id).await? {
        *by_task.entry(task).or_default().entry(state).or_default() += n;
    }
    for (task, counts) in &by_task {
        let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!("  {task}: {}", summary.join(", "));
        let instances = db.instances(id, task).await?;
        for ti in instances.iter().take(50) {
            let key = ti.map_key.clone().unwrap_or_else(|| "-".into());
            let detail = ti
                .error
                .clone()
                .or_else(|| ti.output.clone())
                .unwrap_or_default();
            println!(
                "    [{:>4}] {:<24} {:<16} try {}  {}",
                ti.map_index,
                key,
                ti.state,
                ti.try_number,
                detail.chars().take(100).collect::<String>()
            );
        }
        if instances.len() > 50 {
            println!("    … {} more", instances.len() - 50);
        }
    }
    Ok(())
}

async fn pipelines(action: PipelinesCommand) -> anyhow::Result<()> {
    match action {
        PipelinesCommand::Check { files } => {
            let registry = OperatorRegistry::with_builtin();
            let mut failed = 0;
            for file in &files {
                let name = file.display().to_string();
                let source = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("{name}: cannot read: {e}"))?;
                match crate::engine::spec::parse_pipeline(&name, &source, &registry) {
                    Ok(p) => println!("{name}: ok ({} tasks)", p.order.len()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{e}");
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} pipeline files have errors", files.len());
            }
        }
        PipelinesCommand::List { storage } => {
            let db = open(&storage).await?;
            for row in db.pipeline_rows().await? {
                println!(
                    "{:<40} {:<8} {}",
                    row.id,
                    row.origin,
                    if row.paused { "paused" } else { "" }
                );
            }
        }
    }
    Ok(())
}

async fn worker(
    storage: &StorageArgs,
    engine_args: &crate::config::EngineArgs,
) -> anyhow::Result<()> {
    if !storage
        .database_url
        .as_deref()
        .is_some_and(crate::store::is_postgres_url)
    {
        anyhow::bail!(
            "`trialflow worker` needs PostgreSQL (set DATABASE_URL=postgres://…). With SQLite, `trialflow serve` runs all tasks itself."
        );
    }
    let db = open(storage).await?;
    let config = engine_args.config(&storage.data_dir, false);
    let engine = Engine::start(db, config, OperatorRegistry::with_builtin()).await?;
    println!(
        "worker {} started with {} slots",
        engine.config.worker_id, engine.config.workers
    );
    crate::startup::shutdown_signal().await;
    engine.stop().await;
    Ok(())
}

async fn bench(target: BenchTarget) -> anyhow::Result<()> {
    match target {
        BenchTarget::Imednet { records } => {
            let mut out = crate::imednet::bench::bench(records).await;
            out["large"] = crate::imednet::bench::large_last_page().await;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchTarget::Engine {
            backend,
            postgres,
            instances,
            chain,
            worker_processes,
        } => {
            let opts = crate::engine::bench::BenchOptions {
                postgres: (backend == "postgres").then_some(postgres),
                instances,
                chain,
                worker_processes,
            };
            let out = crate::engine::bench::run(opts).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchTarget::Console(opts) => {
            let out = crate::http::bench::run(opts).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchTarget::Export(opts) => {
            let out = crate::export::bench::run(opts).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchTarget::ExportWorker {
            base_url,
            study,
            format,
            output,
            options,
        } => {
            let options: serde_json::Value = serde_json::from_str(&options)
                .map_err(|e| anyhow::anyhow!("--options is not JSON: {e}"))?;
            let out =
                crate::export::bench::export_once(&base_url, &study, &format, output, &options)
                    .await?;
            println!("{out}");
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

/// An engine that neither schedules nor runs tasks: the running server does.
async fn client_engine(storage: &StorageArgs) -> anyhow::Result<std::sync::Arc<Engine>> {
    let db = open(storage).await?;
    let mut config = crate::config::EngineArgs::default().config(&storage.data_dir, false);
    config.workers = 0;
    Ok(Engine::start(db, config, OperatorRegistry::with_builtin()).await?)
}

async fn flows(action: FlowsCommand) -> anyhow::Result<()> {
    use crate::flows::{registry, runner};
    match action {
        FlowsCommand::Register {
            file,
            project,
            storage,
        } => {
            let source = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let engine = client_engine(&storage).await?;
            let name = file.display().to_string();
            let r = registry::register(&engine, &project, &name, &source, "cli", true).await;
            engine.stop().await;
            let r = r.map_err(|e| anyhow::anyhow!("{e}"))?;
            engine
                .db
                .audit(
                    "cli",
                    "flow.register",
                    &format!("{}/{} v{}", r.project, r.name, r.version),
                    serde_json::json!({"kind": r.kind, "created": r.created, "flow_id": r.flow_id}),
                )
                .await?;
            let what = if r.created { "registered" } else { "unchanged" };
            println!(
                "{}/{} version {} ({}, flow id {}) {what}",
                r.project, r.name, r.version, r.kind, r.flow_id
            );
        }
        FlowsCommand::Validate {
            file,
            project,
            storage,
        } => {
            let source = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let engine = client_engine(&storage).await?;
            let name = file.display().to_string();
            let result = if registry::is_composition(&source) {
                registry::validate_composition(&engine, &name, &source)
                    .await
                    .map(|c| {
                        format!(
                            "flow of flows {}/{}: {} children",
                            c.project,
                            c.name,
                            c.children.len()
                        )
                    })
                    .map_err(|e| anyhow::anyhow!("{e}"))
            } else {
                crate::engine::spec::parse_pipeline(&name, &source, &engine.registry)
                    .map(|p| format!("flow {project}/{}: {} tasks", p.id(), p.spec.tasks.len()))
                    .map_err(|e| anyhow::anyhow!("{e}"))
            };
            engine.stop().await;
            println!("{} is valid: {}", file.display(), result?);
        }
        FlowsCommand::InstallExamples { storage } => {
            let engine = client_engine(&storage).await?;
            let done = registry::install_examples(&engine, "cli").await;
            engine.stop().await;
            for r in done.map_err(|e| anyhow::anyhow!("{e}"))? {
                println!(
                    "{}/{} version {} ({})",
                    r.project, r.name, r.version, r.kind
                );
            }
        }
        FlowsCommand::List { storage } => {
            let db = open(&storage).await?;
            for f in db.latest_flows().await? {
                println!(
                    "{:>5}  {}/{} v{}  {}  by {}",
                    f.id, f.project, f.name, f.version, f.kind, f.created_by
                );
            }
        }
        FlowsCommand::Run {
            flow,
            params,
            task,
            wait,
            timeout,
            poll_interval,
            labels,
            name,
            start_at,
            storage,
        } => {
            let params: serde_json::Value = serde_json::from_str(&params)
                .map_err(|e| anyhow::anyhow!("--params is not JSON: {e}"))?;
            let Some(params) = params.as_object().cloned() else {
                anyhow::bail!("--params must be a JSON object");
            };
            let start_after = start_at
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .map(|t| t.timestamp_millis())
                        .map_err(|_| anyhow::anyhow!("--start-at '{t}' is not an RFC 3339 time"))
                })
                .transpose()?;
            let options = crate::engine::RunOptions {
                labels,
                run_name: name,
                start_after,
            };
            let engine = client_engine(&storage).await?;
            let detail = engine
                .connections()
                .known_secrets()
                .redact_json(&params.clone().into());
            engine
                .db
                .audit("cli", "run.trigger", &format!("{flow} (cli)"), detail)
                .await?;
            let outcome = if wait || task.is_some() {
                runner::run_and_return(
                    &engine,
                    &flow,
                    params,
                    "cli",
                    options,
                    task.as_deref(),
                    runner::Waiting {
                        timeout: std::time::Duration::from_secs(timeout.max(1)),
                        poll: std::time::Duration::from_secs(poll_interval.max(1)),
                    },
                )
                .await
                .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("{}: {e}", e.kind()))
            } else {
                engine
                    .trigger_with(&flow, params, "cli", options)
                    .await
                    .map(|id| format!("Run {id} of {flow} is queued."))
                    .map_err(|e| anyhow::anyhow!("{e}"))
            };
            engine.stop().await;
            println!("{}", outcome?);
        }
    }
    Ok(())
}

async fn open(storage: &StorageArgs) -> anyhow::Result<Db> {
    Ok(Db::connect(storage.database_url.as_deref(), &storage.data_dir).await?)
}

/// The database and the connections stored in it, with the key ring of the data directory.
async fn open_connections(
    storage: &StorageArgs,
) -> anyhow::Result<(Db, crate::connections::Connections)> {
    use crate::connections::{Connections, EnvFallback};
    let db = open(storage).await?;
    let keys = crate::secrets::KeyRing::load_or_create(&storage.data_dir)?;
    Ok((
        db.clone(),
        Connections::new(db, keys, EnvFallback::from_process()),
    ))
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
