//! `sg-agent run`: the daemon (see [`crate::daemon`]).

use std::{path::PathBuf, time::Duration};

use sg_common::maps::{Settings, capacity};

use super::{CliError, Location, store_args::StoreArgs};
use crate::{
    api::{self, ApiOptions},
    daemon::{self, FleetOptions, RunOptions},
    datapath::{LoadOptions, PinLayout, TcModeChoice, XdpModeChoice},
    policy::native::valid_node_name,
    store::StoreError,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy document (native, or AWS describe-security-groups JSON with --instances).
    #[arg(long, required_unless_present = "store", conflicts_with = "store")]
    policy: Option<PathBuf>,
    /// With an AWS document: a native document holding `instances` (and `prefix_lists`), or
    /// `aws ec2 describe-instances` output; may be given more than once.
    #[arg(long, conflicts_with = "store")]
    instances: Vec<PathBuf>,
    /// This node's name (required with --store): instances whose `node` names another node are
    /// remote members here, even if they give an interface.
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Seconds this node's record in the store outlives the agent (its lease).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(2..=3600))]
    store_lease_ttl: i64,
    #[command(flatten)]
    location: Location,
    /// Conntrack table size (flows).
    #[arg(long, default_value_t = capacity::CONNTRACK_DEFAULT)]
    conntrack_max: u32,
    #[command(flatten)]
    timeouts: Timeouts,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpModeChoice,
    /// TC attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    tc_mode: TcModeChoice,
    /// Seconds between conntrack garbage collections.
    #[arg(long, default_value_t = 10)]
    gc_interval: u64,
    /// Flow-log aggregation window, seconds.
    #[arg(long, default_value_t = 10)]
    flow_window: u64,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9101). Off by default.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Serve the EC2 security-group API (for the AWS CLI's --endpoint-url) on this address;
    /// `--api` alone listens on 127.0.0.1:8787. Changes are written back to the --policy file,
    /// which must be a native document.
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = api::DEFAULT_LISTEN,
        requires = "api_credentials",
        conflicts_with = "store"
    )]
    api: Option<std::net::SocketAddr>,
    /// The key pairs the API accepts: an AWS CLI credentials file ([profile] sections with
    /// aws_access_key_id and aws_secret_access_key), private to its owner (mode 0600).
    #[arg(long, requires = "api")]
    api_credentials: Option<PathBuf>,
}

/// Conntrack timeouts, in seconds, within EC2's ranges (SPEC §3).
#[derive(Debug, Clone, clap::Args)]
struct Timeouts {
    /// Established TCP (60-432000).
    #[arg(long, default_value_t = Settings::DEFAULT.tcp_established, value_parser = clap::value_parser!(u32).range(60..=432_000))]
    tcp_established_timeout: u32,
    /// UDP one-way or a single exchange (30-60).
    #[arg(long, default_value_t = Settings::DEFAULT.udp, value_parser = clap::value_parser!(u32).range(30..=60))]
    udp_timeout: u32,
    /// UDP stream: more than one exchange (60-180).
    #[arg(long, default_value_t = Settings::DEFAULT.udp_stream, value_parser = clap::value_parser!(u32).range(60..=180))]
    udp_stream_timeout: u32,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    if let Some(node) = &args.node {
        valid_node_name(node).map_err(|why| CliError::Usage(format!("--node {node:?}: {why}")))?;
    }
    let store = args.store.options()?;
    if store.is_some() && args.node.is_none() {
        return Err(StoreError::Usage("--store needs --node NAME (this node's name in the fleet)".to_owned()).into());
    }
    let settings = Settings {
        tcp_established: args.timeouts.tcp_established_timeout,
        udp: args.timeouts.udp_timeout,
        udp_stream: args.timeouts.udp_stream_timeout,
        ..Settings::DEFAULT
    };
    daemon::run(RunOptions {
        policy: args.policy.unwrap_or_default(),
        instances: args.instances,
        fleet: store.map(|store| FleetOptions { store, lease_ttl: args.store_lease_ttl }),
        node: args.node,
        pins: PinLayout::new(args.location.pin_path),
        socket: args.location.socket,
        load: LoadOptions { conntrack_max: args.conntrack_max, xdp_mode: args.xdp_mode, tc_mode: args.tc_mode },
        settings,
        gc_interval: Duration::from_secs(args.gc_interval.max(1)),
        flow_window: Duration::from_secs(args.flow_window.max(1)),
        metrics: args.metrics,
        api: args.api.zip(args.api_credentials).map(|(listen, credentials)| ApiOptions { listen, credentials }),
    })
    .await?;
    Ok(())
}
