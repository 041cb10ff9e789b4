//! `sg-agent explain`: which group and rule allow a packet, or that none does.

use std::path::PathBuf;

use super::{CliError, Location, call, decode, invalid_in, print_json, read_inputs};
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
    /// tcp, udp, icmp, icmpv6 or a protocol number (explain judges one concrete packet, so
    /// not `all`/`-1`).
    #[arg(long, allow_hyphen_values = true)]
    protocol: String,
    /// The other end: source of inbound, destination of outbound traffic.
    #[arg(long, value_parser = crate::policy::address::parse_ip_arg)]
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
    /// With an AWS `--policy`: its instances documents (native, or describe-instances output).
    #[arg(long)]
    instances: Vec<PathBuf>,
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
    // Options that do not fit the protocol are invalid input, whichever policy is asked.
    query.check().map_err(CliError::Usage)?;
    let answer: Explanation = match &args.policy {
        Some(file) => {
            let (document, instances) = read_inputs(file, &args.instances)?;
            policy::load_all(&document, &instances)
                .and_then(|doc| explain::explain(&doc, &query))
                .map_err(invalid_in(file, &args.instances))?
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
