//! `sg-agent check FILE`: validate offline, print every problem.

use std::path::PathBuf;

use super::{CliError, invalid_in, print_warnings, read_inputs};
use crate::compile::{self, PolicyCounts};

#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    /// With an AWS document: a native document holding `instances` (and `prefix_lists`), or
    /// `aws ec2 describe-instances` output; may be given more than once.
    #[arg(long)]
    instances: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let (document, instances) = read_inputs(&args.file, &args.instances)?;
    let (doc, compiled) =
        compile::prepare_all(&document, &instances).map_err(invalid_in(&args.file, &args.instances))?;
    print_warnings(&doc.warnings, &args.file, &args.instances);
    println!("{}: ok: {}", args.file.display(), PolicyCounts::of(&doc, &compiled));
    Ok(())
}
