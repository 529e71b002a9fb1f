//! The `trialflow` binary: parse the command line, then run the chosen mode.
use clap::Parser;

fn main() -> std::process::ExitCode {
    tune_malloc();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let cli = trialflow::cli::Cli::parse();
        if !cli.command.runs_tasks() {
            die_quietly_on_closed_pipe();
        }
        trialflow::telemetry::init();
        match trialflow::cli::run(cli).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// glibc raises its mmap threshold to the size of each large block freed, so after the first
/// ~1 MB page body every later one is carved from a heap; and it opens up to 8 heaps per core
/// as threads come and go. Exports fetch, decode and write on different threads, so those
/// heaps fragmented and peak memory crept up with study size. A fixed threshold keeps large
/// transient buffers in their own mappings (returned on free) and 4 heaps are plenty for 2
/// busy threads per export (BENCHMARKS.md, exports: 1,000,000-record CSV 41 → 31 MB, same
/// speed).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator tunables; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Rust ignores SIGPIPE, so `trialflow runs | head` would panic on the next line printed.
/// Restoring the default ends the process quietly instead, as shell tools do. Only for
/// commands that run no tasks: a task's child process closing its stdin must not kill us.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: resets one signal disposition; no other code is using signals yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
