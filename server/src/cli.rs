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
