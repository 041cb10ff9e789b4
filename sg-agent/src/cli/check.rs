//! `sg-agent check FILE`: validate offline, print every problem.

use std::path::PathBuf;

use super::{CliError, read_pair};
use crate::compile::{self, PolicyCounts};

#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    /// With an AWS document: the native document holding `instances` (and `prefix_lists`).
    #[arg(long)]
    instances: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let (document, instances) = read_pair(&args.file, args.instances.as_deref())?;
    let (doc, compiled) = compile::prepare(&document, instances.as_deref())
        .map_err(|invalid| CliError::Invalid { file: args.file.clone(), invalid })?;
    println!("{}: ok: {}", args.file.display(), PolicyCounts::of(&doc, &compiled));
    Ok(())
}
