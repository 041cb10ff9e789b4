//! The command line (SPEC §5): one module per subcommand. Each returns `Result<(), CliError>`;
//! the error is printed here, once, and decides the exit code: 0 success, 1 runtime failure, 2
//! invalid input.

mod apply;
mod check;
mod conntrack;
mod explain;
mod export_aws;
mod fleet;
mod flows;
mod import_aws;
mod run;
mod status;
mod store_args;
mod teardown;
mod wait_protected;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    control::{self, ClientError, DEFAULT_SOCKET, Request, Response},
    daemon::RunError,
    datapath::{DatapathError, pins::DEFAULT_PIN_PATH},
    policy::{self, Invalid, ReadError},
};

#[derive(Debug, Parser)]
#[command(name = "sg-agent", version, about = "Enforces AWS-style security groups in the kernel with eBPF")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, attach and enforce; re-apply on SIGHUP or `apply`.
    Run(run::Args),
    /// Hand a new document to the running agent; prints the new generation.
    Apply(apply::Args),
    /// Validate a document offline (no root needed); print every problem.
    Check(check::Args),
    /// Interfaces, generation, counts and verdict counters.
    Status(status::Args),
    /// Which group and rule allow a packet, or that none does: offline from `--policy FILE`,
    /// else against the running agent's live policy.
    Explain(explain::Args),
    /// Stream flow-log records (VPC Flow Logs fields, plus instance, group and rule), one
    /// aggregation window at a time, until interrupted.
    Flows(flows::Args),
    /// Inspect or cut tracked flows.
    Conntrack(conntrack::Args),
    /// Detach everything and remove the pinned state (stops a running agent).
    Teardown(teardown::Args),
    /// Convert `aws ec2 describe-security-groups` (or `describe-security-group-rules`) JSON, with
    /// its instances documents, to a native document.
    ImportAws(import_aws::Args),
    /// Convert a native document to `aws ec2 describe-security-groups` JSON and the instances
    /// document it needs.
    ExportAws(export_aws::Args),
    /// Wait until an interface is attached with the live generation (for orchestration hooks:
    /// call it before bringing the link up).
    WaitProtected(wait_protected::Args),
    /// Fleet mode: write, export and watch over the policy in the store (etcd).
    Fleet(fleet::Args),
}

/// Where the running agent and its pinned state are.
#[derive(Debug, Clone, Args)]
pub struct Location {
    /// bpffs directory for pinned programs, links and maps.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    /// Control socket of the running agent (root only).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An input file could not be read (1), or is not acceptable text (2).
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    /// An input document is invalid: every problem on a line of its own, prefixed with the file
    /// it is in (the document or one of its instances files).
    #[error("{}", .invalid.in_files(.file, .instances))]
    Invalid { file: PathBuf, instances: Vec<PathBuf>, invalid: Invalid },
    /// Command-line values that do not fit together.
    #[error("{0}")]
    Usage(String),
    /// An output file could not be written.
    #[error("writing {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The running agent could not be reached, or its answer read.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The agent refused the request.
    #[error("{message}")]
    Refused { exit_code: u8, message: String },
    /// The kernel side (pinned state, maps) failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// `run` failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The store (fleet mode) could not be used, or refused a write.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// `status`: no policy is in force.
    #[error("not enforcing: {0}")]
    NotEnforcing(String),
    /// `wait-protected`: the interface did not become protected in time.
    #[error("{0}")]
    NotProtected(String),
    /// The agent went away while handling an apply; what is known about the outcome.
    #[error("{0}")]
    Interrupted(String),
    /// The async runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl CliError {
    /// SPEC §5: 1 runtime failure, 2 invalid input.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Read { source, .. } => source.exit_code(),
            CliError::Invalid { .. } | CliError::Usage(_) => 2,
            CliError::Refused { exit_code, .. } => (*exit_code).max(1),
            CliError::Run(e) => e.exit_code(),
            CliError::Store(e) => e.exit_code(),
            CliError::Client(_)
            | CliError::Datapath(_)
            | CliError::NotEnforcing(_)
            | CliError::NotProtected(_)
            | CliError::Interrupted(_)
            | CliError::Write { .. }
            | CliError::Runtime(_) => 1,
        }
    }

    /// Invalid documents are printed as `check` prints them (`file: path: problem` lines);
    /// everything else as one `error:` line.
    fn print(&self) {
        match self {
            CliError::Invalid { .. } | CliError::Run(RunError::Invalid { .. }) => eprintln!("{self}"),
            _ => eprintln!("error: {self}"),
        }
    }
}

/// Runs the command line; returns the exit code.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_) | Command::Fleet(_)) {
        // `sg-agent status | head -1`: stop quietly when the reader goes away, as Unix tools
        // do. (Not for the daemon, whose clients may vanish while it writes to them, nor for
        // the fleet commands, whose etcd connection may be closed under them: a TLS server
        // hangs up on a plaintext client. They handle a closed stdout themselves.)
        // SAFETY: restoring the default disposition of a signal has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|runtime| runtime.block_on(dispatch(cli.command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.print();
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Apply(args) => apply::run(args).await,
        Command::Check(args) => check::run(args),
        Command::Status(args) => status::run(args).await,
        Command::Explain(args) => explain::run(args).await,
        Command::Flows(args) => flows::run(args).await,
        Command::Conntrack(args) => conntrack::run(args).await,
        Command::Teardown(args) => teardown::run(args).await,
        Command::ImportAws(args) => import_aws::run(args),
        Command::ExportAws(args) => export_aws::run(args),
        Command::WaitProtected(args) => wait_protected::run(args).await,
        Command::Fleet(args) => fleet::run(args).await,
    }
}

/// A policy file as text.
fn read(path: &Path) -> Result<String, CliError> {
    policy::read_file(path).map_err(|source| CliError::Read { path: path.to_path_buf(), source })
}

/// A document and its instances files.
fn read_inputs(file: &Path, instances: &[PathBuf]) -> Result<(String, Vec<String>), CliError> {
    Ok((read(file)?, instances.iter().map(|p| read(p)).collect::<Result<_, _>>()?))
}

/// The error for an invalid document read from `file` with `instances`.
fn invalid_in(file: &Path, instances: &[PathBuf]) -> impl FnOnce(Invalid) -> CliError {
    let (file, instances) = (file.to_path_buf(), instances.to_vec());
    move |invalid| CliError::Invalid { file, instances, invalid }
}

/// Prints a document's warnings (to stderr: they are not the command's output).
fn print_warnings(warnings: &[policy::Problem], file: &Path, instances: &[PathBuf]) {
    for line in policy::warning_lines(warnings, file, instances) {
        eprintln!("{line}");
    }
}

/// How long a command waits for the agent (an apply of a large document included).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Calls the agent; an error answer becomes [`CliError::Refused`].
async fn call(socket: &Path, request: &Request) -> Result<serde_json::Value, CliError> {
    let response = control::call(socket, request, CALL_TIMEOUT).await?;
    accepted(response)
}

/// Calls the agent; `None` if none answers.
async fn call_if_running(socket: &Path, request: &Request) -> Option<Response> {
    control::call(socket, request, CALL_TIMEOUT).await.ok()
}

fn accepted(response: Response) -> Result<serde_json::Value, CliError> {
    if response.exit_code == 0 {
        Ok(response.data)
    } else {
        Err(CliError::Refused {
            exit_code: response.exit_code,
            message: response.error.unwrap_or_else(|| "unknown error".to_owned()),
        })
    }
}

/// The agent's answer as `T`.
fn decode<T: serde::de::DeserializeOwned>(data: serde_json::Value) -> Result<T, CliError> {
    serde_json::from_value(data).map_err(|e| ClientError::Garbled(e.to_string()).into())
}

/// Pretty JSON for `--json` output.
fn print_json<T: serde::Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}
