//! `sg-agent apply FILE`: hand a new document to the running agent; returns once it is live.

use std::path::PathBuf;

use super::{CliError, Location, call, decode, invalid_in, print_json, print_warnings, read_inputs};
use crate::{
    agent::ApplySummary,
    compile,
    control::{ClientError, Request},
    datapath::{Maps, PinLayout},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    /// With an AWS document: a native document holding `instances` (and `prefix_lists`), or
    /// `aws ec2 describe-instances` output; may be given more than once.
    #[arg(long)]
    instances: Vec<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    location: Location,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let (document, instances) = read_inputs(&args.file, &args.instances)?;
    // Validate here first: a clear error naming the file, and nothing sent.
    compile::prepare_all(&document, &instances).map_err(invalid_in(&args.file, &args.instances))?;
    let pins = PinLayout::new(&args.location.pin_path);
    let before = live_generation(&pins);
    let data = match call(&args.location.socket, &Request::Apply { document, instances }).await {
        Err(CliError::Client(e @ (ClientError::NoAnswer | ClientError::Io(_)))) => {
            return Err(interrupted(&e, before, live_generation(&pins)));
        }
        other => other?,
    };
    let summary: ApplySummary = decode(data.clone())?;
    if args.json {
        print_json(&data);
    } else {
        print_warnings(&summary.warnings, &args.file, &args.instances);
        println!("generation {} live ({:.1} ms): {}", summary.generation, summary.apply_ms, summary.counts);
        println!("{}", summary.changes);
        if !summary.waiting.is_empty() {
            println!(
                "waiting for interfaces (their instances are protected the moment they appear): {}",
                summary.waiting.join(", ")
            );
        }
    }
    Ok(())
}

/// The live generation in the pinned state, if it can be read.
fn live_generation(pins: &PinLayout) -> Option<u64> {
    Maps::from_pins(pins).ok()?.live().ok()?.map(|l| l.generation)
}

/// What is known when the agent went away mid-apply: whether a new generation went live.
fn interrupted(e: &ClientError, before: Option<u64>, after: Option<u64>) -> CliError {
    let outcome = match (before, after) {
        (Some(b), Some(a)) if a > b => {
            format!("generation {a} went live before it stopped: this document is in force")
        }
        (_, Some(a)) => format!("generation {a} (the one before this apply) stays in force"),
        (_, None) => "no pinned state could be read to say what is in force (see `sg-agent status`)".to_owned(),
    };
    CliError::Interrupted(format!("{e}; {outcome}"))
}
