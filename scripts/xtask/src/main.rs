//! The project's build tool: builds the browser bundle and the server with cargo alone.
//!
//! `cargo run -p xtask -- build [--release]` compiles the `app` crate for
//! `wasm32-unknown-unknown` (feature `hydrate`), generates the JS glue with the
//! wasm-bindgen library at the version pinned in Cargo.lock, lays the site out in
//! `target/<profile>/site/pkg/` and builds the `trialflow` binary beside it. Nothing
//! needs installing first (no cargo-leptos, no wasm-bindgen CLI); release builds run
//! `wasm-opt` when one is found (`WASM_OPT`, or `.tools/node_modules/.bin/wasm-opt`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The name the server's hydration script loads: `pkg/trialflow.js` and `pkg/trialflow_bg.wasm`.
const OUTPUT_NAME: &str = "trialflow";
const WASM_TARGET: &str = "wasm32-unknown-unknown";

const USAGE: &str = "usage: xtask build [--release] | xtask site [--release]
  build   the browser bundle, then the trialflow binary
  site    the browser bundle only (target/<profile>/site/pkg)";

#[derive(Clone, Copy)]
enum Mode {
    Debug,
    Release,
}

impl Mode {
    /// Folder under target/ where cargo puts the server binary (and we put its site).
    fn dir(self) -> &'static str {
        match self {
            Mode::Debug => "debug",
            Mode::Release => "release",
        }
    }

    /// Cargo profile the wasm is built with: the release one is size-optimised.
    fn wasm_profile(self) -> &'static str {
        match self {
            Mode::Debug => "dev",
            Mode::Release => "wasm-release",
        }
    }

    fn wasm_profile_dir(self) -> &'static str {
        match self {
            Mode::Debug => "debug",
            Mode::Release => "wasm-release",
        }
    }
}

fn main() {
    if let Err(err) = run(std::env::args().skip(1).collect()) {
        eprintln!("xtask: {err:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let mut mode = Mode::Debug;
    let mut command = None;
    for arg in &args {
        match arg.as_str() {
            "--release" => mode = Mode::Release,
            "build" | "site" if command.is_none() => command = Some(arg.clone()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    let root = workspace_root();
    match command.as_deref() {
        Some("site") => build_site(&root, mode),
        Some("build") => {
            build_site(&root, mode)?;
            build_server(&root, mode)
        }
        _ => bail!("no command given\n{USAGE}"),
    }
}

/// This crate lives at `<root>/scripts/xtask`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A cargo command without the variables `cargo run` set for this process: build scripts
/// (ring's, for one) track some of them, and a difference rebuilds half the tree.
fn cargo() -> Command {
    let mut command =
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE";
        if set_by_cargo_run {
            command.env_remove(name.as_ref());
        }
    }
    command
}

fn run_step(what: &str, mut command: Command) -> Result<()> {
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("could not start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    eprintln!(
        "xtask: {what} done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn build_server(root: &Path, mode: Mode) -> Result<()> {
    let mut command = cargo();
    command
        .current_dir(root)
        .args(["build", "-p", "trialflow", "--bin", "trialflow"]);
    if let Mode::Release = mode {
        command.arg("--release");
    }
    run_step("server build", command)
}

fn build_site(root: &Path, mode: Mode) -> Result<()> {
    let mut command = cargo();
    command.current_dir(root).args([
        "build",
        "-p",
        "app",
        "--lib",
        "--target",
        WASM_TARGET,
        "--no-default-features",
        "--features",
        "hydrate",
        "--profile",
        mode.wasm_profile(),
    ]);
    run_step("wasm build", command)?;

    let wasm = root
        .join("target")
        .join(WASM_TARGET)
        .join(mode.wasm_profile_dir())
        .join("app.wasm");
    let site = root.join("target").join(mode.dir()).join("site");
    let pkg = site.join("pkg");
    std::fs::create_dir_all(&pkg).with_context(|| format!("creating {}", pkg.display()))?;

    let stamp = pkg.join(".built-from");
    let fingerprint = fingerprint(&wasm)?;
    let glue_current = std::fs::read_to_string(&stamp).is_ok_and(|s| s == fingerprint)
        && pkg.join(format!("{OUTPUT_NAME}.js")).is_file()
        && pkg.join(format!("{OUTPUT_NAME}_bg.wasm")).is_file();
    if glue_current {
        eprintln!("xtask: JS glue is up to date");
    } else {
        generate_glue(&wasm, &pkg, mode)?;
        std::fs::write(&stamp, &fingerprint)
            .with_context(|| format!("writing {}", stamp.display()))?;
    }

    copy_file(
        &root.join("style/main.css"),
        &pkg.join(format!("{OUTPUT_NAME}.css")),
    )?;
    copy_file(&root.join("style/favicon.svg"), &pkg.join("favicon.svg"))?;
    eprintln!("xtask: site ready in {}", site.display());
    Ok(())
}

/// Size and modification time of the compiled wasm: enough to tell a fresh cargo output.
fn fingerprint(wasm: &Path) -> Result<String> {
    let meta = std::fs::metadata(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    Ok(format!("{} {} {modified}", wasm.display(), meta.len()))
}

fn generate_glue(wasm: &Path, pkg: &Path, mode: Mode) -> Result<()> {
    let started = Instant::now();
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen
        .input_path(wasm)
        .out_name(OUTPUT_NAME)
        .web(true)?
        .typescript(false)
        .debug(matches!(mode, Mode::Debug))
        .keep_debug(false)
        .remove_name_section(true)
        .remove_producers_section(matches!(mode, Mode::Release));
    bindgen
        .generate(pkg)
        .with_context(|| format!("generating the JS glue for {}", wasm.display()))?;
    eprintln!(
        "xtask: JS glue generated in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if let Mode::Release = mode {
        optimise_wasm(&pkg.join(format!("{OUTPUT_NAME}_bg.wasm")))?;
    }
    Ok(())
}

/// Shrinks the release wasm with binaryen's wasm-opt when one is available. Debian's
/// binaryen (108) produces a module that fails to hydrate, so only an explicit `WASM_OPT`
/// or the project's own `.tools/` copy (binaryen from npm) is used.
fn optimise_wasm(wasm: &Path) -> Result<()> {
    let tool = std::env::var_os("WASM_OPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/node_modules/.bin/wasm-opt"));
    if !tool.is_file() {
        eprintln!(
            "xtask: wasm-opt not found at {} (run scripts/run.sh --release to install it); \
             the bundle stays unoptimised",
            tool.display()
        );
        return Ok(());
    }
    let before = std::fs::metadata(wasm)?.len();
    let mut command = Command::new(&tool);
    command.arg("-Oz").arg(wasm).arg("-o").arg(wasm);
    run_step("wasm-opt", command)?;
    let after = std::fs::metadata(wasm)?.len();
    eprintln!("xtask: wasm {} KiB -> {} KiB", before / 1024, after / 1024);
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}
