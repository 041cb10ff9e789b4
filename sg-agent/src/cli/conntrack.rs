//! `sg-agent conntrack list|flush`: inspect or cut tracked flows, in the pinned conntrack table.

use std::collections::BTreeMap;

use super::{CliError, Location, call_if_running, print_json};
use crate::{
    conntrack::{self, Filter},
    control::Request,
    datapath::{Maps, PinLayout},
    status::Status,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List tracked flows (as their initiator saw them).
    List {
        #[command(flatten)]
        filter: FlowFilter,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        location: Location,
    },
    /// Remove tracked flows: their next packets are judged by the rules again.
    Flush {
        #[command(flatten)]
        filter: FlowFilter,
        #[command(flatten)]
        location: Location,
    },
}

/// Which flows (every given filter must match).
#[derive(Debug, Clone, clap::Args)]
struct FlowFilter {
    /// Instance id (needs the running agent to map it to its interface).
    #[arg(long)]
    instance: Option<String>,
    #[arg(long)]
    interface: Option<String>,
    /// Either endpoint's address.
    #[arg(long, value_parser = crate::policy::address::parse_ip_arg)]
    address: Option<std::net::IpAddr>,
    /// Either endpoint's port.
    #[arg(long)]
    port: Option<u16>,
    /// tcp, udp, icmp, icmpv6 or a number.
    #[arg(long)]
    protocol: Option<String>,
}

/// Interface → instance names, from the running agent (empty if none answers).
async fn instance_names(location: &Location) -> BTreeMap<String, String> {
    let Some(response) = call_if_running(&location.socket, &Request::Status).await else { return BTreeMap::new() };
    let Ok(status) = serde_json::from_value::<Status>(response.data) else { return BTreeMap::new() };
    status.interfaces.into_iter().filter_map(|i| Some((i.interface, i.instance?))).collect()
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let (filter, location) = match &args.action {
        Action::List { filter, location, .. } | Action::Flush { filter, location } => (filter, location),
    };
    let names = instance_names(location).await;
    let protocol = filter
        .protocol
        .as_deref()
        .map(conntrack::parse_protocol)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--protocol: {e}")))?;
    let mut interface = filter.interface.clone();
    if let Some(instance) = &filter.instance {
        match names.iter().find(|(_, i)| *i == instance) {
            Some((iface, _)) => interface = Some(iface.clone()),
            None if names.is_empty() => {
                return Err(CliError::Usage(
                    "--instance needs a running agent to know interfaces by instance; use --interface".into(),
                ));
            }
            None => return Err(CliError::Usage(format!("no instance {instance:?} with an interface on this node"))),
        }
    }
    let filter = Filter { interface, address: filter.address, port: filter.port, protocol };
    let mut maps = Maps::from_pins(&PinLayout::new(&location.pin_path))?;
    match args.action {
        Action::List { json, .. } => {
            let ifaces = conntrack::live_interfaces(&maps, &names)?;
            let flows = conntrack::list(&maps, &ifaces, &filter);
            if json {
                print_json(&flows);
            } else {
                print!("{}", conntrack::format_human(&flows));
                println!("{} tracked flows", flows.len());
            }
        }
        Action::Flush { .. } => {
            let n = conntrack::flush(&mut maps, &filter);
            println!("flushed {n} tracked flows");
        }
    }
    Ok(())
}
