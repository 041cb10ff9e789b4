//! `sg-agent wait-protected IFNAME`: returns once the interface is attached with the live
//! generation — the point an orchestration hook (libvirt, CNI) waits for before bringing the
//! link up, so that no packet crosses it unjudged.

use std::time::{Duration, Instant};

use super::{CliError, Location, call, decode};
use crate::{agent::InterfaceState, control::Request};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The interface (as a local instance's `interface` names it).
    interface: String,
    /// Give up after this many seconds (exit 1).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    #[command(flatten)]
    location: Location,
}

/// How often to ask; attaching takes milliseconds, so a short poll adds little.
const POLL: Duration = Duration::from_millis(20);

pub async fn run(args: Args) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0));
    loop {
        let request = Request::Interface { name: args.interface.clone() };
        let state: InterfaceState = decode(call(&args.location.socket, &request).await?)?;
        match state {
            InterfaceState::Protected { ifindex, generation } => {
                println!("{}: protected (interface index {ifindex}, generation {generation})", args.interface);
                return Ok(());
            }
            InterfaceState::NotInPolicy => {
                return Err(CliError::Usage(format!(
                    "no local instance of the live policy has interface {:?}",
                    args.interface
                )));
            }
            InterfaceState::Waiting if Instant::now() >= deadline => {
                return Err(CliError::NotProtected(format!(
                    "{} did not become protected within {} s (the agent is still waiting for it)",
                    args.interface, args.timeout
                )));
            }
            InterfaceState::Waiting => tokio::time::sleep(POLL).await,
        }
    }
}
