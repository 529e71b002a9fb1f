//! The `trialflow` binary: parse the command line, then run the chosen mode.
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = trialflow::cli::Cli::parse();
    trialflow::telemetry::init();
    match trialflow::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
