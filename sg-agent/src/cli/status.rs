//! `sg-agent status [--rules]`: what is enforced, from the running agent or, without one, from
//! the pinned state.

use super::{CliError, Location, accepted, call, call_if_running, decode, print_json};
use crate::{
    agent::RuleHits,
    control::Request,
    datapath::{Maps, PinLayout},
    status::{self, Status},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// Every rule of the live policy with its hits (packets the rule admitted when evaluated:
    /// the first packet of each tracked flow, every packet of untracked flows).
    #[arg(long)]
    rules: bool,
    #[command(flatten)]
    location: Location,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    if args.rules { rules(&args).await } else { status(&args).await }
}

async fn status(args: &Args) -> Result<(), CliError> {
    let status: Status = match call_if_running(&args.location.socket, &Request::Status).await {
        Some(response) => decode(accepted(response)?)?,
        // No agent: read what is pinned.
        None => {
            let pins = PinLayout::new(&args.location.pin_path);
            Maps::from_pins(&pins).and_then(|m| status::collect(&m, &pins, None)).map_err(|e| {
                CliError::NotEnforcing(format!(
                    "no agent at {} and no pinned state ({e})",
                    args.location.socket.display()
                ))
            })?
        }
    };
    if args.json {
        print_json(&status);
    } else {
        print!("{}", status::format_human(&status));
    }
    if status.enforcing {
        Ok(())
    } else {
        Err(CliError::NotEnforcing(format!("no policy is live under {}", status.pin_path)))
    }
}

async fn rules(args: &Args) -> Result<(), CliError> {
    let rules: Vec<RuleHits> = decode(call(&args.location.socket, &Request::Rules).await?)?;
    if args.json {
        print_json(&rules);
    } else {
        println!("{:<20} {:<14} {:>12} {:>14}  rule", "group", "rule", "packets", "bytes");
        for r in &rules {
            println!("{:<20} {:<14} {:>12} {:>14}  {}", r.group, r.rule_id, r.packets, r.bytes, r.rule);
        }
    }
    Ok(())
}
