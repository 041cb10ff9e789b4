//! `sg-agent explain`: which group and rule allow a packet, or that none does.

use std::path::PathBuf;

use super::{CliError, Location, call, decode, print_json, read_pair};
use crate::{
    control::Request,
    explain::{self, Explanation, Query},
    policy::{self, Direction},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    instance: String,
    /// ingress or egress, as seen by the instance.
    #[arg(long)]
    direction: Direction,
    /// tcp, udp, icmp, icmpv6 or a protocol number.
    #[arg(long, allow_hyphen_values = true)]
    protocol: String,
    /// The other end: source of inbound, destination of outbound traffic.
    #[arg(long)]
    peer: std::net::IpAddr,
    /// TCP/UDP destination port.
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    icmp_type: Option<u8>,
    #[arg(long)]
    icmp_code: Option<u8>,
    /// Explain against this document instead of the running agent.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// With an AWS `--policy`: the native document holding `instances`.
    #[arg(long)]
    instances: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    location: Location,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let query = Query {
        instance: args.instance,
        direction: args.direction,
        protocol: args.protocol,
        peer: args.peer,
        port: args.port,
        icmp_type: args.icmp_type,
        icmp_code: args.icmp_code,
    };
    let answer: Explanation = match &args.policy {
        Some(file) => {
            let (document, instances) = read_pair(file, args.instances.as_deref())?;
            policy::load(&document, instances.as_deref())
                .and_then(|doc| explain::explain(&doc, &query))
                .map_err(|invalid| CliError::Invalid { file: file.clone(), invalid })?
        }
        None => decode(call(&args.location.socket, &Request::Explain { query }).await?)?,
    };
    if args.json {
        print_json(&answer);
    } else {
        println!("{}", answer.summary);
    }
    Ok(())
}
