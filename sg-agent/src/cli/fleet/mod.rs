//! `sg-agent fleet ...`: the store side of fleet mode (SPEC §8), one file per subcommand.

/// `println!` through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::fleet::emit(&format!($($arg)*))
    };
}

mod apply;
mod export;
mod status;

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Validate the store's content with FILE's objects put over it (and, with --prune,
    /// without the objects FILE lacks), then write it in guarded transactions, each leaving a
    /// valid document.
    Apply(apply::Args),
    /// Print the store's objects as one native document.
    Export(export::Args),
    /// Every node: the store revision and generation it enforces, who is behind, whose lease
    /// expired.
    Status(status::Args),
}

/// Prints `text` and a newline; a reader that went away (`| head`) ends the command quietly.
/// (SIGPIPE is ignored for the fleet commands: see `cli::main`.)
pub(super) fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

pub async fn run(args: Args) -> Result<(), CliError> {
    match args.command {
        Command::Apply(args) => apply::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Status(args) => status::run(args).await,
    }
}
