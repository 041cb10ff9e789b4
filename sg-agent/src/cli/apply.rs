//! `sg-agent apply FILE`: hand a new document to the running agent; returns once it is live.

use std::path::PathBuf;

use super::{CALL_TIMEOUT, CliError, Location, accepted, decode, invalid_in, print_json, print_warnings, read_inputs};
use crate::{
    agent::ApplySummary,
    control::{self, ClientError, Request},
    datapath::{Maps, PinLayout},
    policy::Invalid,
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
    let pins = PinLayout::new(&args.location.pin_path);
    let before = live_generation(&pins);
    // Validated once, by the agent: its problems come back with their JSON paths, and are
    // printed here with the file's name, as `check` prints them.
    let request = Request::Apply { document, instances };
    let response = match control::call(&args.location.socket, &request, CALL_TIMEOUT).await {
        Err(e @ (ClientError::NoAnswer | ClientError::Io(_))) => {
            return Err(interrupted(&e, before, live_generation(&pins)));
        }
        other => other?,
    };
    if !response.problems.is_empty() {
        return Err(invalid_in(&args.file, &args.instances)(Invalid { problems: response.problems }));
    }
    let data = accepted(response)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_apply_says_which_generation_is_live() {
        let said = |before, after| interrupted(&ClientError::NoAnswer, before, after).to_string();
        assert!(said(Some(4), Some(5)).contains("generation 5 went live before it stopped"));
        assert!(said(Some(4), Some(4)).contains("generation 4 (the one before this apply) stays in force"));
        assert!(said(None, None).contains("no pinned state could be read"));
    }
}
