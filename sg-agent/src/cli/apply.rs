//! `sg-agent apply FILE`: hand a new document to the running agent; returns once it is live.

use std::path::PathBuf;

use super::{CliError, Location, call, decode, print_json, read_pair};
use crate::{agent::ApplySummary, compile, control::Request};

#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    /// With an AWS document: the native document holding `instances` (and `prefix_lists`).
    #[arg(long)]
    instances: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    location: Location,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let (document, instances) = read_pair(&args.file, args.instances.as_deref())?;
    // Validate here first: a clear error naming the file, and nothing sent.
    compile::prepare(&document, instances.as_deref())
        .map_err(|invalid| CliError::Invalid { file: args.file.clone(), invalid })?;
    let data = call(&args.location.socket, &Request::Apply { document, instances }).await?;
    let summary: ApplySummary = decode(data.clone())?;
    if args.json {
        print_json(&data);
    } else {
        println!("generation {} live ({:.1} ms): {}", summary.generation, summary.apply_ms, summary.counts);
        println!("{}", summary.changes);
    }
    Ok(())
}
