//! End to end on veth: sender → node (the filter) → receiver, in namespaces made here.
//!
//! Filters compared, with the same security group (N rules; the traffic matches the last ones):
//! none; sg-agent (the receiver is a workload instance); nftables with conntrack in the node's
//! forward chain, written as one rule per rule, and in its best form (a concatenated interval
//! set). On 2 cores the sender, the node and the receiver share the CPUs, so a rate dilutes the
//! filter's cost: every configuration is paired with no-filter runs in the same round (ABBA) and
//! reported as added time per packet, Δ = 1/rate − 1/rate_none, as well as the ratio. For
//! sg-agent the programs' own cost under that traffic is read from `kernel.bpf_stats_enabled`.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{Stats, report::Target};
use crate::lab::{Agent, Netns, Topology, sh};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Traffic {
    /// Small UDP packets from 256 source ports.
    UdpManyFlows,
    /// Small UDP packets on one flow.
    UdpOneFlow,
    /// New TCP connections (connect, then reset).
    TcpConnections,
}

impl Traffic {
    fn name(self) -> &'static str {
        match self {
            Traffic::UdpManyFlows => "UDP, 256 flows",
            Traffic::UdpOneFlow => "UDP, 1 flow",
            Traffic::TcpConnections => "new TCP connections",
        }
    }
    fn unit(self) -> &'static str {
        if self == Traffic::TcpConnections { "conn/s" } else { "pkt/s" }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct E2eResult {
    pub filter: String,
    pub rules: usize,
    pub traffic: Traffic,
    /// Rate with the filter and without, per round (paired).
    pub rate: Stats,
    pub rate_none: Stats,
    /// rate / rate_none, per round.
    pub ratio: Stats,
    /// Added time per packet (or connection), ns: 1/rate − 1/rate_none, per round.
    pub added_ns: Stats,
    /// sg-agent only: its programs' run time per run under this traffic (XDP + TC).
    pub program_ns_per_run: Option<Stats>,
}

const SEND_PORT_UDP: u16 = 9000;
const PORT_TCP: u16 = 9001;

/// The receiver's group: `rules` rules; the traffic matches the last two (UDP 9000 and TCP 9001
/// from the sender's /24), the others are TCP rules for other /24s and ports.
fn sg_policy(rules: usize) -> String {
    let mut ingress: Vec<String> = (0..rules.saturating_sub(2))
        .map(|i| {
            format!(
                r#"{{ "protocol": "tcp", "from_port": {p}, "to_port": {p}, "cidrs": ["10.{a}.{b}.0/24"] }}"#,
                p = 10_000 + (i % 50_000),
                a = 100 + ((i >> 8) & 0x7f),
                b = i & 0xff
            )
        })
        .collect();
    ingress.push(format!(
        r#"{{ "protocol": "udp", "from_port": {SEND_PORT_UDP}, "to_port": {SEND_PORT_UDP}, "cidrs": ["10.0.1.0/24"] }}"#
    ));
    ingress.push(format!(
        r#"{{ "protocol": "tcp", "from_port": {PORT_TCP}, "to_port": {PORT_TCP}, "cidrs": ["10.0.1.0/24"] }}"#
    ));
    format!(
        r#"{{ "security_groups": [ {{ "id": "sg-recv", "ingress": [{}] }} ],
             "instances": [ {{ "id": "recv", "interface": "veth-recv", "addresses": ["10.0.2.10"], "security_groups": ["sg-recv"] }} ] }}"#,
        ingress.join(",")
    )
}

const NO_INSTANCES: &str = r#"{ "instances": [] }"#;

/// The same group in nftables on the node's forward chain, with conntrack.
fn nft_ruleset(rules: usize, sets: bool) -> String {
    let mut s = String::from("flush ruleset\ntable inet sg {\n");
    let filler: Vec<(String, u16)> = (0..rules.saturating_sub(2))
        .map(|i| (format!("10.{}.{}.0/24", 100 + ((i >> 8) & 0x7f), i & 0xff), 10_000 + (i % 50_000) as u16))
        .collect();
    if sets {
        let mut elements: Vec<String> = filler.iter().map(|(p, port)| format!("{p} . tcp . {port}")).collect();
        elements.push(format!("10.0.1.0/24 . udp . {SEND_PORT_UDP}"));
        elements.push(format!("10.0.1.0/24 . tcp . {PORT_TCP}"));
        let _ = writeln!(
            s,
            "  set allow {{ type ipv4_addr . inet_proto . inet_service; flags interval; elements = {{ {} }} }}",
            elements.join(", ")
        );
    }
    s.push_str("  chain forward {\n    type filter hook forward priority 0; policy accept;\n");
    s.push_str("    ct state established,related accept\n");
    if sets {
        s.push_str("    ip daddr 10.0.2.10 ip saddr . meta l4proto . th dport @allow accept\n");
    } else {
        for (p, port) in &filler {
            let _ = writeln!(s, "    ip daddr 10.0.2.10 ip saddr {p} tcp dport {port} accept");
        }
        let _ = writeln!(s, "    ip daddr 10.0.2.10 ip saddr 10.0.1.0/24 udp dport {SEND_PORT_UDP} accept");
        let _ = writeln!(s, "    ip daddr 10.0.2.10 ip saddr 10.0.1.0/24 tcp dport {PORT_TCP} accept");
    }
    s.push_str("    ip daddr 10.0.2.10 drop\n  }\n}\n");
    s
}

/// One timed run of `traffic` from sender to receiver; returns the rate.
fn run_traffic(topo: &Topology, traffic: Traffic, duration: Duration) -> f64 {
    let sender = &topo.host("veth-send").ns;
    let receiver = &topo.host("veth-recv").ns;
    let dst: IpAddr = "10.0.2.10".parse().expect("address");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let (stop, count) = (stop.clone(), count.clone());
        receiver.spawn(move || match traffic {
            Traffic::TcpConnections => {
                let listener = TcpListener::bind(SocketAddr::new(dst, PORT_TCP)).expect("bind");
                listener.set_nonblocking(true).expect("nonblocking");
                let _ = ready_tx.send(());
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_micros(50)),
                    }
                }
            }
            _ => {
                let socket = UdpSocket::bind(SocketAddr::new(dst, SEND_PORT_UDP)).expect("bind");
                socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
                let _ = ready_tx.send(());
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if socket.recv(&mut buf).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    let measuring = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, count, measuring) = (stop.clone(), count.clone(), measuring.clone());
        sender.spawn(move || match traffic {
            Traffic::TcpConnections => {
                let to = SocketAddr::new(dst, PORT_TCP);
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(s) = TcpStream::connect_timeout(&to, Duration::from_millis(200)) {
                        // Reset rather than close: no TIME_WAIT to run out of ports.
                        reset_on_close(&s);
                        if measuring.load(Ordering::Relaxed) {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Traffic::UdpManyFlows | Traffic::UdpOneFlow => {
                let flows = if traffic == Traffic::UdpManyFlows { 256 } else { 1 };
                let sockets: Vec<UdpSocket> = (0..flows)
                    .filter_map(|_| {
                        let s = UdpSocket::bind("10.0.1.10:0").ok()?;
                        s.connect(SocketAddr::new(dst, SEND_PORT_UDP)).ok()?;
                        Some(s)
                    })
                    .collect();
                let payload = [0u8; 18]; // 14 + 20 + 8 + 18 = a 60-byte frame
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(s) = sockets.get(i % sockets.len().max(1)) {
                        let _ = s.send(&payload);
                    }
                    i += 1;
                }
            }
        })
    };
    // Warm up (ARP, conntrack entries), then count over `duration`.
    std::thread::sleep(Duration::from_millis(200));
    let before = count.load(Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(duration);
    let counted = count.load(Ordering::Relaxed) - if traffic == Traffic::TcpConnections { 0 } else { before };
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    let _ = server.join();
    counted as f64 / elapsed.as_secs_f64()
}

fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket and a properly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

/// (run time, run count) of the agent's programs attached to veth-recv.
fn program_stats(agent: &Agent) -> Option<(Duration, u64)> {
    let mut total = (Duration::ZERO, 0u64);
    for link in ["xdp-veth-recv", "tc-veth-recv"] {
        let pinned = aya::programs::links::PinnedLink::from_pin(agent.pins.join("v1/links").join(link)).ok()?;
        let fd_link = aya::programs::links::FdLink::from(pinned);
        let id = fd_link.info().ok()?.program_id();
        let info = aya::programs::loaded_programs().filter_map(Result::ok).find(|p| p.id() == id)?;
        total.0 += info.run_time();
        total.1 += info.run_count();
    }
    Some(total)
}

enum Filter {
    None,
    Agent,
    NftChain,
    NftSets,
}

pub fn run(
    agent_binary: &Path,
    rule_counts: &[usize],
    rounds: usize,
    duration: Duration,
    log: &dyn Fn(&str),
) -> Vec<E2eResult> {
    let mut topo = Topology::new();
    topo.add("veth-send", 1, 10);
    topo.add("veth-recv", 2, 10);
    let node: &Netns = &topo.node;
    // The receiver's first packet of a flow must not wait on neighbour resolution mid-run.
    sh(&[
        "ip",
        "netns",
        "exec",
        &topo.host("veth-send").ns.name,
        "sysctl",
        "-qw",
        "net.ipv4.ip_local_port_range=1024 65000",
    ]);
    // BPF run-time statistics cost two clock reads per program run: on only for a separate run
    // of each round, never while rates are measured.
    let stats_was = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_else(|_| "0".into());
    let set_stats = |on: bool| {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", if on { "1" } else { "0" });
    };
    set_stats(false);

    let mut results = Vec::new();
    let agent = Agent::start(agent_binary, node, NO_INSTANCES, &[]);
    let set_filter = |filter: &Filter, rules: usize| match filter {
        Filter::None => {
            node.exec(&["nft", "flush", "ruleset"]);
            let _ = agent.apply(NO_INSTANCES);
        }
        Filter::Agent => {
            node.exec(&["nft", "flush", "ruleset"]);
            agent.apply_ok(&sg_policy(rules));
            // New flows from earlier runs must be new again.
            let _ = agent.cli(&["conntrack", "flush"]);
        }
        Filter::NftChain | Filter::NftSets => {
            let _ = agent.apply(NO_INSTANCES);
            let file = agent.dir.join("bench.nft");
            let _ = std::fs::write(&file, nft_ruleset(rules, matches!(filter, Filter::NftSets)));
            node.exec(&["nft", "-f", file.to_str().unwrap_or_default()]);
        }
    };
    for &rules in rule_counts {
        for (filter, name) in
            [(Filter::Agent, "sg-agent"), (Filter::NftSets, "nftables sets"), (Filter::NftChain, "nftables chain")]
        {
            for traffic in [Traffic::UdpManyFlows, Traffic::UdpOneFlow, Traffic::TcpConnections] {
                let mut rate = Vec::new();
                let mut rate_none = Vec::new();
                let mut ratio = Vec::new();
                let mut added = Vec::new();
                let mut program = Vec::new();
                for round in 0..rounds {
                    log(&format!("e2e {name}, {rules} rules, {}: round {}/{rounds}", traffic.name(), round + 1));
                    // ABBA: none, filter, filter, none.
                    set_filter(&Filter::None, rules);
                    let n1 = run_traffic(&topo, traffic, duration);
                    set_filter(&filter, rules);
                    let f1 = run_traffic(&topo, traffic, duration);
                    let f2 = run_traffic(&topo, traffic, duration);
                    if matches!(filter, Filter::Agent) {
                        set_stats(true);
                        let before = program_stats(&agent);
                        run_traffic(&topo, traffic, duration / 2);
                        if let (Some(b), Some(a)) = (before, program_stats(&agent)) {
                            let runs = a.1.saturating_sub(b.1);
                            if runs > 0 {
                                program.push((a.0.saturating_sub(b.0)).as_nanos() as f64 / runs as f64);
                            }
                        }
                        set_stats(false);
                    }
                    set_filter(&Filter::None, rules);
                    let n2 = run_traffic(&topo, traffic, duration);
                    let (rf, rn) = ((f1 + f2) / 2.0, (n1 + n2) / 2.0);
                    rate.push(rf);
                    rate_none.push(rn);
                    if rf > 0.0 && rn > 0.0 {
                        ratio.push(rf / rn);
                        added.push(1e9 / rf - 1e9 / rn);
                    }
                }
                results.push(E2eResult {
                    filter: name.to_owned(),
                    rules,
                    traffic,
                    rate: Stats::of(&rate),
                    rate_none: Stats::of(&rate_none),
                    ratio: Stats::of(&ratio),
                    added_ns: Stats::of(&added),
                    program_ns_per_run: matches!(filter, Filter::Agent).then(|| Stats::of(&program)),
                });
            }
        }
    }
    node.exec(&["nft", "flush", "ruleset"]);
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_was.trim());
    drop(agent);
    results
}

fn find<'a>(r: &'a [E2eResult], filter: &str, rules: usize, traffic: Traffic) -> Option<&'a E2eResult> {
    r.iter().find(|e| e.filter == filter && e.rules == rules && e.traffic == traffic)
}

pub fn targets(r: &[E2eResult]) -> Vec<Target> {
    let mut out = Vec::new();
    let rule_counts: Vec<usize> = {
        let mut v: Vec<usize> = r.iter().map(|e| e.rules).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    for &rules in rule_counts.iter().filter(|&&n| n >= 1000) {
        for traffic in [Traffic::UdpManyFlows, Traffic::UdpOneFlow] {
            if let (Some(ours), Some(nft)) =
                (find(r, "sg-agent", rules, traffic), find(r, "nftables sets", rules, traffic))
            {
                let (a, b) = (ours.added_ns.median, nft.added_ns.median);
                out.push(Target {
                    goal: format!("{rules} rules, {}: added time per packet ≤ 1/5 of nftables sets'", traffic.name()),
                    measured: format!("{a:.0} ns vs {b:.0} ns ({:.2} of it)", a / b),
                    met: a <= b / 5.0,
                });
            }
        }
    }
    let largest = rule_counts.last().and_then(|max| Some((max, find(r, "sg-agent", *max, Traffic::TcpConnections)?)));
    if let Some((max, ours)) = largest {
        out.push(Target {
            goal: format!("new TCP connections per second at {max} rules ≥ 0.95× no filter"),
            measured: format!(
                "{:.3}× ({:.0} vs {:.0} conn/s)",
                ours.ratio.median, ours.rate.median, ours.rate_none.median
            ),
            met: ours.ratio.median >= 0.95,
        });
    }
    out
}

pub fn markdown(r: &[E2eResult]) -> String {
    if r.is_empty() {
        return String::new();
    }
    let mut m = String::from(
        "\n## End to end on veth (sender → node → receiver)\n\n\
         Each configuration is run between two no-filter runs in the same round (ABBA). *Δ* is the time the filter \
         adds per packet (or connection): 1/rate − 1/rate_none. *program* is sg-agent's own XDP + TC run time per \
         invocation under that traffic (`kernel.bpf_stats_enabled`, on only for a separate run of each round: the statistics cost two clock reads per run).\n\n\
         | filter | rules | traffic | rate (median) | no filter | ratio min / med / max | Δ ns min / med / max | program ns |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for e in r {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {:.0} {} | {:.0} | {:.3} / {:.3} / {:.3} | {:.0} / {:.0} / {:.0} | {} |",
            e.filter,
            e.rules,
            e.traffic.name(),
            e.rate.median,
            e.traffic.unit(),
            e.rate_none.median,
            e.ratio.min,
            e.ratio.median,
            e.ratio.max,
            e.added_ns.min,
            e.added_ns.median,
            e.added_ns.max,
            e.program_ns_per_run.map_or("-".to_owned(), |s| format!("{:.0}", s.median)),
        );
    }
    m
}
