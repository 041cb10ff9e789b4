//! The command line (SPEC §5). Exit codes: 0 success, 1 runtime failure, 2 invalid input.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use sg_common::maps::{Settings, capacity};

use crate::{
    agent::{self, RunOptions},
    conntrack,
    control::{self, DEFAULT_SOCKET, Request, Response},
    datapath::{self, LoadOptions, Maps, PinLayout, TcModeChoice, XdpModeChoice, pins::DEFAULT_PIN_PATH},
    explain::{Explanation, Query},
    policy::{self, Direction, aws, json::Problems, native},
    status,
};

#[derive(Debug, Parser)]
#[command(name = "sg-agent", version, about = "Enforces AWS-style security groups in the kernel with eBPF")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the running agent and its pinned state are.
#[derive(Debug, Clone, Args)]
pub struct Location {
    /// bpffs directory for pinned programs, links and maps.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
    /// Control socket of the running agent (root only).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Conntrack timeouts, in seconds, within EC2's ranges (SPEC §3).
#[derive(Debug, Clone, Args)]
pub struct Timeouts {
    /// Established TCP (60-432000).
    #[arg(long, default_value_t = Settings::DEFAULT.tcp_established, value_parser = clap::value_parser!(u32).range(60..=432_000))]
    pub tcp_established_timeout: u32,
    /// UDP one-way or a single exchange (30-60).
    #[arg(long, default_value_t = Settings::DEFAULT.udp, value_parser = clap::value_parser!(u32).range(30..=60))]
    pub udp_timeout: u32,
    /// UDP stream: more than one exchange (60-180).
    #[arg(long, default_value_t = Settings::DEFAULT.udp_stream, value_parser = clap::value_parser!(u32).range(60..=180))]
    pub udp_stream_timeout: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, attach and enforce; re-apply on SIGHUP or `apply`.
    Run {
        /// Policy document (native, or AWS describe-security-groups JSON with --instances).
        #[arg(long)]
        policy: PathBuf,
        /// With an AWS document: the native document holding `instances` (and `prefix_lists`).
        #[arg(long)]
        instances: Option<PathBuf>,
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
    },
    /// Hand a new document to the running agent; prints the new generation.
    Apply {
        file: PathBuf,
        #[arg(long)]
        instances: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        location: Location,
    },
    /// Validate a document offline (no root needed); print every problem.
    Check {
        file: PathBuf,
        #[arg(long)]
        instances: Option<PathBuf>,
    },
    /// Interfaces, generation, counts and verdict counters.
    Status {
        #[arg(long)]
        json: bool,
        /// Every rule of the live policy with its hits (packets the rule admitted when
        /// evaluated: the first packet of each tracked flow, every packet of untracked flows).
        #[arg(long)]
        rules: bool,
        #[command(flatten)]
        location: Location,
    },
    /// Which group and rule allow a packet, or that none does: offline from `--policy FILE`,
    /// else against the running agent's live policy.
    Explain {
        #[arg(long)]
        instance: String,
        /// ingress or egress, as seen by the instance.
        #[arg(long)]
        direction: Direction,
        /// tcp, udp, icmp, icmpv6 or a protocol number.
        #[arg(long)]
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
        #[arg(long)]
        instances: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        location: Location,
    },
    /// Stream flow-log records (VPC Flow Logs fields, plus instance, group and rule), one
    /// aggregation window at a time, until interrupted.
    Flows {
        /// json: one JSON object per line; text: the space-separated default format.
        #[arg(long, value_enum, default_value = "text")]
        format: FlowFormat,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<usize>,
        #[command(flatten)]
        location: Location,
    },
    /// Inspect or cut tracked flows.
    Conntrack {
        #[command(subcommand)]
        action: ConntrackAction,
    },
    /// Detach everything and remove the pinned state (stops a running agent).
    Teardown {
        #[command(flatten)]
        location: Location,
    },
    /// Convert `aws ec2 describe-security-groups` JSON to a native document.
    ImportAws {
        file: PathBuf,
        /// Native document with `instances` (and `prefix_lists`) to include.
        #[arg(long)]
        instances: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum ConntrackAction {
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
#[derive(Debug, Clone, Args)]
pub struct FlowFilter {
    /// Instance id (needs the running agent to map it to its interface).
    #[arg(long)]
    pub instance: Option<String>,
    #[arg(long)]
    pub interface: Option<String>,
    /// Either endpoint's address.
    #[arg(long)]
    pub address: Option<std::net::IpAddr>,
    /// Either endpoint's port.
    #[arg(long)]
    pub port: Option<u16>,
    /// tcp, udp, icmp, icmpv6 or a number.
    #[arg(long)]
    pub protocol: Option<String>,
}

/// Runs the command line; returns the exit code.
pub fn main() -> u8 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(dispatch(cli.command))
}

fn read(path: &Path) -> Result<String, u8> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: reading {}: {e}", path.display());
        1
    })
}

fn read_pair(file: &Path, instances: Option<&Path>) -> Result<(String, Option<String>), u8> {
    Ok((read(file)?, instances.map(read).transpose()?))
}

async fn dispatch(command: Command) -> u8 {
    match command {
        Command::Run {
            policy,
            instances,
            location,
            conntrack_max,
            timeouts,
            xdp_mode,
            tc_mode,
            gc_interval,
            flow_window,
            metrics,
        } => {
            let settings = Settings {
                tcp_established: timeouts.tcp_established_timeout,
                udp: timeouts.udp_timeout,
                udp_stream: timeouts.udp_stream_timeout,
                ..Settings::DEFAULT
            };
            agent::run(RunOptions {
                policy,
                instances,
                pins: PinLayout::new(location.pin_path),
                socket: location.socket,
                load: LoadOptions { conntrack_max, xdp_mode, tc_mode },
                settings,
                gc_interval: Duration::from_secs(gc_interval.max(1)),
                flow_window: Duration::from_secs(flow_window.max(1)),
                metrics,
            })
            .await
        }
        Command::Check { file, instances } => {
            let (document, instances_text) = match read_pair(&file, instances.as_deref()) {
                Ok(x) => x,
                Err(code) => return code,
            };
            match agent::prepare(&document, instances_text.as_deref()) {
                Ok((doc, compiled)) => {
                    println!(
                        "{}: ok: {} security groups, {} rules, {} instances ({} with an interface); {} peer and {} rule map entries",
                        file.display(),
                        doc.security_groups.len(),
                        compiled.rules.len(),
                        doc.instances.len(),
                        compiled.ifaces.len(),
                        compiled.peers.len(),
                        compiled.rule_entries.len()
                    );
                    0
                }
                Err(e) => {
                    eprintln!("{}", status::format_invalid(&file, &e));
                    2
                }
            }
        }
        Command::Apply { file, instances, json, location } => {
            let (document, instances_text) = match read_pair(&file, instances.as_deref()) {
                Ok(x) => x,
                Err(code) => return code,
            };
            // Validate locally first: a clear error with the file name, and nothing sent.
            if let Err(e) = agent::prepare(&document, instances_text.as_deref()) {
                eprintln!("{}", status::format_invalid(&file, &e));
                return 2;
            }
            let request = Request::Apply { document, instances: instances_text };
            match call(&location.socket, &request).await {
                Ok(r) if r.exit_code == 0 => match serde_json::from_value::<agent::ApplySummary>(r.data.clone()) {
                    Ok(_) if json => {
                        println!("{}", serde_json::to_string_pretty(&r.data).unwrap_or_default());
                        0
                    }
                    Ok(s) => {
                        println!(
                            "generation {} live ({:.1} ms): {} groups, {} rules, {} instances ({} here)",
                            s.generation, s.apply_ms, s.security_groups, s.rules, s.instances, s.local_instances
                        );
                        println!("{}", s.changes);
                        0
                    }
                    Err(e) => {
                        eprintln!("error: unexpected answer from the agent: {e}");
                        1
                    }
                },
                Ok(r) => report(&r),
                Err(code) => code,
            }
        }
        Command::Status { json, rules: true, location } => rules_command(&location, json).await,
        Command::Status { json, rules: false, location } => status_command(&location, json).await,
        Command::Flows { format, count, location } => flows_command(&location, format, count).await,
        Command::Conntrack { action } => conntrack_command(action).await,
        Command::Explain {
            instance,
            direction,
            protocol,
            peer,
            port,
            icmp_type,
            icmp_code,
            policy,
            instances,
            json,
            location,
        } => {
            let query = Query { instance, direction, protocol, peer, port, icmp_type, icmp_code };
            let answer = match policy {
                Some(file) => {
                    let (document, instances_text) = match read_pair(&file, instances.as_deref()) {
                        Ok(x) => x,
                        Err(code) => return code,
                    };
                    match crate::policy::load(&document, instances_text.as_deref())
                        .and_then(|doc| crate::explain::explain(&doc, &query))
                    {
                        Ok(e) => e,
                        Err(e) => {
                            eprintln!("{}", status::format_invalid(&file, &e));
                            return 2;
                        }
                    }
                }
                None => match call(&location.socket, &Request::Explain { query }).await {
                    Ok(r) if r.exit_code == 0 => match serde_json::from_value::<Explanation>(r.data) {
                        Ok(e) => e,
                        Err(e) => {
                            eprintln!("error: unexpected answer from the agent: {e}");
                            return 1;
                        }
                    },
                    Ok(r) => return report(&r),
                    Err(code) => return code,
                },
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
            } else {
                println!("{}", answer.summary);
            }
            0
        }
        Command::Teardown { location } => match call_quiet(&location.socket, &Request::Teardown).await {
            Some(r) if r.exit_code == 0 => {
                println!("agent stopped; enforcement removed: {}", r.data);
                0
            }
            Some(r) => report(&r),
            None => match datapath::teardown(&PinLayout::new(&location.pin_path)) {
                Ok(detached) => {
                    println!("no agent running; enforcement removed from: {}", detached.join(", "));
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            },
        },
        Command::ImportAws { file, instances } => {
            let (document, instances_text) = match read_pair(&file, instances.as_deref()) {
                Ok(x) => x,
                Err(code) => return code,
            };
            import_aws(&file, &document, instances_text.as_deref())
        }
    }
}

fn import_aws(file: &Path, document: &str, instances: Option<&str>) -> u8 {
    let result = (|| {
        let json = native::parse_json(document)?;
        if !aws::is_aws(&json) {
            return Err(policy::Invalid::one(
                "",
                "not an AWS describe-security-groups document (no SecurityGroups key)",
            ));
        }
        let groups = aws::convert_groups(&json)?;
        let (lists, insts) = match instances.map(native::parse_json).transpose()? {
            None => (Vec::new(), Vec::new()),
            Some(doc) => {
                let mut p = Problems::default();
                let (l, i) = aws::read_instances_document(&mut p, &doc);
                if !p.is_empty() {
                    return Err(policy::Invalid { problems: p.list });
                }
                (l.into_iter().map(|x| x.list).collect(), i.into_iter().map(|x| x.instance).collect())
            }
        };
        // The result must be a valid document on its own (references resolve).
        let out = native::write_document(&groups, &lists, &insts);
        let text = serde_json::to_string_pretty(&out).unwrap_or_default();
        policy::load(&text, None)?;
        Ok(text)
    })();
    match result {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("{}", status::format_invalid(file, &e));
            2
        }
    }
}

async fn status_command(location: &Location, json: bool) -> u8 {
    let status = match call_quiet(&location.socket, &Request::Status).await {
        Some(r) if r.exit_code == 0 => match serde_json::from_value::<status::Status>(r.data) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: unexpected status from the agent: {e}");
                return 1;
            }
        },
        Some(r) => return report(&r),
        // No agent: read what is pinned.
        None => {
            let pins = PinLayout::new(&location.pin_path);
            match Maps::from_pins(&pins).and_then(|m| status::collect(&m, &pins, None)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("not enforcing: no agent at {} and no pinned state ({e})", location.socket.display());
                    return 1;
                }
            }
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
    } else {
        print!("{}", status::format_human(&status));
    }
    if status.enforcing { 0 } else { 1 }
}

async fn rules_command(location: &Location, json: bool) -> u8 {
    let r = match call(&location.socket, &Request::Rules).await {
        Ok(r) if r.exit_code == 0 => r,
        Ok(r) => return report(&r),
        Err(code) => return code,
    };
    let Ok(rules) = serde_json::from_value::<Vec<agent::RuleHits>>(r.data) else {
        eprintln!("error: unexpected answer from the agent");
        return 1;
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rules).unwrap_or_default());
    } else {
        println!("{:<20} {:<14} {:>12} {:>14}  rule", "group", "rule", "packets", "bytes");
        for r in &rules {
            println!("{:<20} {:<14} {:>12} {:>14}  {}", r.group, r.rule_id, r.packets, r.bytes, r.rule);
        }
    }
    0
}

async fn flows_command(location: &Location, format: FlowFormat, count: Option<usize>) -> u8 {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let stream = match tokio::net::UnixStream::connect(&location.socket).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot reach the agent at {}: {e}", location.socket.display());
            return 1;
        }
    };
    let mut stream = tokio::io::BufReader::new(stream);
    let mut request = serde_json::to_vec(&Request::Flows).unwrap_or_default();
    request.push(b'\n');
    if stream.get_mut().write_all(&request).await.is_err() {
        eprintln!("error: the agent went away");
        return 1;
    }
    let mut lines = stream.lines();
    match lines.next_line().await {
        Ok(Some(first)) => match serde_json::from_str::<Response>(&first) {
            Ok(r) if r.exit_code == 0 => {}
            Ok(r) => return report(&r),
            Err(e) => {
                eprintln!("error: unexpected answer from the agent: {e}");
                return 1;
            }
        },
        _ => {
            eprintln!("error: the agent closed the stream");
            return 1;
        }
    }
    let mut printed = 0usize;
    while count.is_none_or(|c| printed < c) {
        let Ok(Some(line)) = lines.next_line().await else { return 1 };
        match format {
            FlowFormat::Json => println!("{line}"),
            FlowFormat::Text => match serde_json::from_str::<crate::flows::FlowRecord>(&line) {
                Ok(record) => println!("{}", record.default_format()),
                Err(_) => continue,
            },
        }
        printed += 1;
    }
    0
}

/// Interface → instance names, from the running agent (empty if none answers).
async fn instance_names(location: &Location) -> std::collections::BTreeMap<String, String> {
    let Some(r) = call_quiet(&location.socket, &Request::Status).await else { return Default::default() };
    let Ok(s) = serde_json::from_value::<status::Status>(r.data) else { return Default::default() };
    s.interfaces.into_iter().filter_map(|i| Some((i.interface, i.instance?))).collect()
}

async fn conntrack_command(action: ConntrackAction) -> u8 {
    let (filter, location) = match &action {
        ConntrackAction::List { filter, location, .. } | ConntrackAction::Flush { filter, location } => {
            (filter.clone(), location.clone())
        }
    };
    let names = instance_names(&location).await;
    let protocol = match filter.protocol.as_deref().map(conntrack::parse_protocol).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --protocol: {e}");
            return 2;
        }
    };
    let mut interface = filter.interface.clone();
    if let Some(instance) = &filter.instance {
        match names.iter().find(|(_, i)| *i == instance) {
            Some((iface, _)) => interface = Some(iface.clone()),
            None if names.is_empty() => {
                eprintln!("error: --instance needs a running agent to know interfaces by instance; use --interface");
                return 1;
            }
            None => {
                eprintln!("error: no instance {instance:?} with an interface on this node");
                return 2;
            }
        }
    }
    let filter = conntrack::Filter { interface, address: filter.address, port: filter.port, protocol };
    let pins = PinLayout::new(&location.pin_path);
    let mut maps = match Maps::from_pins(&pins) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: no pinned conntrack table under {}: {e}", location.pin_path.display());
            return 1;
        }
    };
    match action {
        ConntrackAction::List { json, .. } => {
            let ifaces = match conntrack::live_interfaces(&maps, &names) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            };
            let flows = conntrack::list(&maps, &ifaces, &filter);
            if json {
                println!("{}", serde_json::to_string_pretty(&flows).unwrap_or_default());
            } else {
                print!("{}", conntrack::format_human(&flows));
                println!("{} tracked flows", flows.len());
            }
            0
        }
        ConntrackAction::Flush { .. } => {
            let n = conntrack::flush(&mut maps, &filter);
            println!("flushed {n} tracked flows");
            0
        }
    }
}

/// Calls the agent; prints and maps connection errors to exit code 1.
async fn call(socket: &Path, request: &Request) -> Result<Response, u8> {
    control::call(socket, request, Duration::from_secs(120)).await.map_err(|e| {
        eprintln!("error: {e}");
        1
    })
}

/// Calls the agent; `None` if none answers.
async fn call_quiet(socket: &Path, request: &Request) -> Option<Response> {
    control::call(socket, request, Duration::from_secs(120)).await.ok()
}

fn report(r: &Response) -> u8 {
    eprintln!("error: {}", r.error.as_deref().unwrap_or("unknown error"));
    r.exit_code.max(1)
}
