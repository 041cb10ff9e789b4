//! `cargo xtask`: the project's two commands and their helpers.
//!
//! - `cargo xtask run` — build everything and demonstrate enforcement on a namespace topology
//!   (`cargo xtask run --fleet`: three nodes following one etcd; `cargo xtask run -- ARGS` runs
//!   `sg-agent ARGS` as root instead).
//! - `cargo xtask test` — install what the tests need and run every test, privileged ones
//!   included (they fail rather than skip if they cannot run).
//! - `cargo xtask setup` — only the toolchain set-up.
//! - `cargo xtask modules` — the import graph between modules (no two may import each other).
//! - `cargo xtask bench`, `cargo xtask soak` — benchmarks and the soak (sg-lab's runners).
//!
//! Each installs what is missing first (`scripts/setup-toolchain.sh`), saying what it does.

mod demo;
mod fleet_demo;
mod modules;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain and test tools (idempotent).
    Setup,
    /// Build, then demo enforcement on namespaces; with `-- ARGS`, run `sg-agent ARGS` as root.
    Run {
        /// The fleet demo instead: one etcd, three nodes with an agent each.
        #[arg(long)]
        fleet: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks (root): writes docs/benchmarks.md, docs/benchmarks.png, bench/results.json.
    Bench {
        /// Arguments for the runner: --quick, --rounds N, --no-e2e, --no-fleet, --only PARTS.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Soak (root): applies, SIGHUPs, interface churn and traffic for 30 minutes; writes
    /// docs/soak.md.
    Soak {
        /// Arguments for the runner: --minutes M, --links N.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every fuzz target for a bounded time on the committed corpus (cargo-fuzz, nightly).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// The import graph between each crate's modules; fails on a cycle.
    Modules,
    /// The demo alone, with an agent already built (what `run` does after building; for tests).
    #[command(hide = true)]
    Demo {
        /// The sg-agent binary.
        #[arg(long)]
        agent: std::path::PathBuf,
    },
    /// Set up, then run every test as root (privileged tests must run, not skip).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Task::Setup => {
            setup()?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Run { fleet, args } => {
            require_root("load BPF programs and create network namespaces")?;
            setup()?;
            let agent = build_agent()?;
            if fleet {
                fleet_demo::run(&agent)?;
                Ok(ExitCode::SUCCESS)
            } else if args.is_empty() {
                demo::run(&agent)?;
                Ok(ExitCode::SUCCESS)
            } else {
                let status = Command::new(&agent).args(&args).status().context("running sg-agent")?;
                Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
            }
        }
        Task::Demo { agent } => {
            require_root("load BPF programs and create network namespaces")?;
            demo::run(&agent)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Bench { args } => {
            require_root("benchmarks load BPF programs and create network namespaces")?;
            // The runner (with its own build of the kernel programs, baseline included) and the
            // agent it starts for the end-to-end figures, as shipped.
            run_lab_binary("sg-bench", &args)
        }
        Task::Soak { args } => {
            require_root("the soak loads BPF programs and creates network namespaces")?;
            run_lab_binary("sg-soak", &args)
        }
        Task::Modules => {
            modules::check(&workspace_root(), true)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Fuzz { seconds } => {
            setup()?;
            fuzz(seconds)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Test { args } => {
            require_root("the privileged tests load BPF programs and create network namespaces")?;
            setup()?;
            if args.is_empty() {
                // Formatting and lints first: quick, and a red here needs no test run to see.
                // rustfmt.toml groups imports (std / external / crate) with nightly-only options:
                // format with the pinned nightly the eBPF build uses.
                let status = Command::new("cargo")
                    .arg(format!("+{}", ebpf_toolchain()?))
                    .args(["fmt", "--all", "--check"])
                    .current_dir(workspace_root())
                    .status()
                    .context("running cargo fmt")?;
                if !status.success() {
                    bail!("cargo fmt --check failed: run `cargo +$(cat sg-ebpf/toolchain) fmt --all`");
                }
                modules::check(&workspace_root(), false)?;
                cargo(&["clippy", "--workspace", "--all-targets", "--exclude", "sg-ebpf", "--", "-D", "warnings"])?;
            }
            let status = Command::new(env!("CARGO"))
                .args(["test", "--workspace"])
                .args(&args)
                .current_dir(workspace_root())
                .env("SG_REQUIRE_PRIVILEGED", "1")
                .status()
                .context("running cargo test")?;
            Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this needs root ({why}); run it with sudo, e.g. `sudo -E cargo xtask ...`");
    }
    Ok(())
}

/// Runs the idempotent set-up script (quick when everything is there).
fn setup() -> Result<()> {
    let script = workspace_root().join("scripts/setup-toolchain.sh");
    let status = Command::new("bash").arg(&script).status().with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed", script.display());
    }
    Ok(())
}

/// The fuzz targets (fuzz/fuzz_targets).
const FUZZ_TARGETS: [&str; 3] = ["policy", "aws_policy", "packet"];

/// Runs each fuzz target for `seconds` on a copy of its committed corpus (so a run never edits
/// the repository); any crash fails, leaving the reproducer under fuzz/artifacts.
fn fuzz(seconds: u64) -> Result<()> {
    let root = workspace_root();
    let toolchain = ebpf_toolchain()?;
    if Command::new("cargo").args(["fuzz", "--version"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("xtask: installing cargo-fuzz (about a minute and a half)");
        let status = Command::new(env!("CARGO")).args(["install", "--locked", "cargo-fuzz"]).status()?;
        if !status.success() {
            bail!("installing cargo-fuzz failed");
        }
    }
    let scratch = std::env::temp_dir().join(format!("sg-fuzz-corpus-{}", std::process::id()));
    for target in FUZZ_TARGETS {
        let corpus = scratch.join(target);
        std::fs::create_dir_all(&corpus)?;
        for entry in std::fs::read_dir(root.join("fuzz/corpus").join(target))? {
            let entry = entry?;
            std::fs::copy(entry.path(), corpus.join(entry.file_name()))?;
        }
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let status = Command::new("cargo")
            .arg(format!("+{toolchain}"))
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .current_dir(root.join("fuzz"))
            // The fuzz targets need the agent's logic, not its kernel object.
            .env("AYA_BUILD_SKIP", "1")
            .status()?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&scratch);
            bail!("fuzz target {target} failed (reproducer in fuzz/artifacts/{target})");
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Builds (release) the sg-lab runner `name` and the agent as shipped, and runs the runner on
/// the workspace with that agent.
fn run_lab_binary(name: &str, args: &[String]) -> Result<ExitCode> {
    setup()?;
    cargo(&["build", "--release", "-p", "sg-lab", "--bin", name, "-p", "sg-agent", "--bin", "sg-agent"])?;
    let target = workspace_root().join("target/release");
    let status = Command::new(target.join(name))
        .arg("--out")
        .arg(workspace_root())
        .arg("--agent")
        .arg(target.join("sg-agent"))
        .args(args)
        .status()
        .with_context(|| format!("running {name}"))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The pinned nightly of the eBPF build (sg-ebpf/toolchain).
fn ebpf_toolchain() -> Result<String> {
    let path = workspace_root().join("sg-ebpf/toolchain");
    Ok(std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned())
}

fn cargo(args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO")).args(args).current_dir(workspace_root()).status()?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// Builds the agent (user space and kernel programs) and returns its path.
fn build_agent() -> Result<PathBuf> {
    eprintln!("xtask: building sg-agent (kernel programs included)");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--package", "sg-agent"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building sg-agent failed");
    }
    let binary = workspace_root().join("target/debug/sg-agent");
    if !binary.exists() {
        bail!("{} missing after the build", binary.display());
    }
    Ok(binary)
}
