//! `sg-agent teardown`: remove enforcement deliberately (stopping a running agent).

use super::{CliError, Location, accepted, call_if_running};
use crate::{
    control::Request,
    datapath::{self, DatapathError, PinLayout, pins},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    location: Location,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    if let Some(response) = call_if_running(&args.location.socket, &Request::Teardown).await {
        let data = accepted(response)?;
        println!("agent stopped; enforcement removed: {data}");
        return Ok(());
    }
    let pins = PinLayout::new(&args.location.pin_path);
    // An agent that does not answer on this socket may still run on this pin path (with
    // another --socket): removing its state under it would leave it enforcing nothing.
    if let Some(pid) = pins::holder(&pins) {
        return Err(DatapathError::Locked { path: pins.root().to_path_buf(), pid }.into());
    }
    let detached = datapath::teardown(&pins)?;
    println!("no agent running; enforcement removed from: {}", detached.join(", "));
    Ok(())
}
