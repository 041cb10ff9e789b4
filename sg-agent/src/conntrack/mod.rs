//! The tracked flows as the agent sees them: `sg-agent conntrack list|flush` (read from, and cut
//! in, the pinned conntrack map, whether or not an agent runs; interface names come from this
//! node's network namespace, instance names from the live policy when an agent answers) and
//! garbage collection ([`gc`]).

pub mod gc;

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};
use sg_common::{
    conntrack::{CtState, is_expired_for, timeout_secs_for},
    maps::{CtEntry, CtKey, IfaceTimeouts, Settings, addr_to_ip},
    orientation::{Hook, Role},
};

use crate::{
    clock::monotonic_ns,
    datapath::{DatapathError, Maps, ifname},
    policy::Protocol,
};

/// Which flows a `list` or `flush` applies to; every given filter must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Interface the flow was tracked on.
    pub interface: Option<String>,
    /// Either endpoint's address.
    pub address: Option<IpAddr>,
    /// Either endpoint's port (TCP/UDP).
    pub port: Option<u16>,
    /// tcp, udp, icmp, icmpv6, or a number.
    pub protocol: Option<u8>,
}

/// A tracked flow, as the initiator saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub interface: String,
    pub ifindex: u32,
    pub instance: Option<String>,
    pub protocol: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP/UDP ports; the echo identifier for ICMP echo (as `src_port`).
    pub src_port: u16,
    pub dst_port: u16,
    /// Whether the instance received (inbound) or sent (outbound) the first packet.
    pub direction: String,
    pub state: String,
    pub replied: bool,
    /// Seconds since the last packet, and until the entry expires.
    pub idle_secs: u64,
    pub expires_in_secs: u64,
    /// Index of the rule that admitted the flow, in the generation that admitted it.
    pub rule: Option<u32>,
}

/// A protocol's name (`tcp`, ...) or number.
pub fn protocol_name(proto: u8) -> String {
    Protocol::from_number(proto).to_string()
}

/// Parses a protocol name or number for a filter.
pub fn parse_protocol(text: &str) -> Result<u8, String> {
    Protocol::from_name(text)
        .and_then(Protocol::number)
        .ok_or_else(|| format!("{text:?} is not a protocol (tcp, udp, icmp, icmpv6 or 0-255)"))
}

fn matches(filter: &Filter, key: &CtKey, interface: &str) -> bool {
    let far = addr_to_ip(key.family, &key.far_addr);
    let near = addr_to_ip(key.family, &key.near_addr);
    filter.interface.as_deref().is_none_or(|i| i == interface)
        && filter.address.is_none_or(|a| a == far || a == near)
        && filter.port.is_none_or(|p| (key.proto == 6 || key.proto == 17) && (p == key.far_port || p == key.near_port))
        && filter.protocol.is_none_or(|p| p == key.proto)
}

/// `ifindex → (role, instance name)` of the live policy, for orientation and display.
pub type Interfaces = BTreeMap<u32, (u8, Option<String>)>;

/// The live interfaces and their roles, with instance names if `names` knows them.
pub fn live_interfaces(maps: &Maps, names: &BTreeMap<String, String>) -> Result<Interfaces, DatapathError> {
    Ok(maps
        .live_ifaces()?
        .into_iter()
        .map(|(ifindex, cfg)| (ifindex, (cfg.role, names.get(&ifname(ifindex)).cloned())))
        .collect())
}

/// Each live interface's own conntrack timeouts (its instance's; 0 = the agent's), as the
/// datapath applies them: listing and garbage collection use the same.
pub fn iface_timeouts(maps: &Maps) -> std::collections::HashMap<u32, IfaceTimeouts> {
    maps.live_ifaces().unwrap_or_default().into_iter().map(|(ifindex, cfg)| (ifindex, cfg.timeouts)).collect()
}

fn flow(key: &CtKey, entry: &CtEntry, ifaces: &Interfaces, settings: &Settings, own: &IfaceTimeouts, now: u64) -> Flow {
    let interface = ifname(key.ifindex);
    let (role, instance) = ifaces.get(&key.ifindex).cloned().unwrap_or((0, None));
    let far = addr_to_ip(key.family, &key.far_addr);
    let near = addr_to_ip(key.family, &key.near_addr);
    let origin = sg_common::conntrack::origin(entry);
    // The initiator sent the first packet: received on the interface = from the far end.
    let (src, sport, dst, dport) = match origin {
        Hook::Receive => (far, key.far_port, near, key.near_port),
        Hook::Transmit => (near, key.near_port, far, key.far_port),
    };
    let (src_port, dst_port) = if key.proto == 6 || key.proto == 17 { (sport, dport) } else { (key.far_port, 0) };
    // A workload interface receives what its instance sends; a host NIC receives what comes in.
    let inbound = (Role::from_u8(role) == Role::Host) == (origin == Hook::Receive);
    let idle = u64::from(sg_common::conntrack::seconds(now).saturating_sub(entry.last_seen));
    let timeout = u64::from(timeout_secs_for(entry, key.proto, settings, own));
    Flow {
        interface,
        ifindex: key.ifindex,
        instance,
        protocol: protocol_name(key.proto),
        src,
        dst,
        src_port,
        dst_port,
        direction: if inbound { "inbound" } else { "outbound" }.into(),
        state: if key.proto == 6 { CtState::from_u8(entry.state).name().into() } else { "open".into() },
        replied: entry.flags & sg_common::maps::CT_F_REPLIED != 0
            || (key.proto == 6 && CtState::from_u8(entry.state) != CtState::SynSent),
        idle_secs: idle,
        expires_in_secs: timeout.saturating_sub(idle),
        rule: (entry.rule != sg_common::maps::CT_RULE_UNKNOWN).then_some(u32::from(entry.rule)),
    }
}

fn settings(maps: &Maps) -> Settings {
    maps.read_settings().ok().filter(|s| s.tcp_established != 0).unwrap_or(Settings::DEFAULT)
}

/// Live (unexpired) flows matching `filter`.
pub fn list(maps: &Maps, ifaces: &Interfaces, filter: &Filter) -> Vec<Flow> {
    let settings = settings(maps);
    let own = iface_timeouts(maps);
    let own_of = |ifindex: u32| own.get(&ifindex).copied().unwrap_or_default();
    let now = monotonic_ns();
    let mut flows: Vec<Flow> = maps
        .conntrack_entries()
        .iter()
        .filter(|(k, e)| !is_expired_for(e, k.proto, &settings, &own_of(k.ifindex), now))
        .filter(|(k, _)| matches(filter, k, &ifname(k.ifindex)))
        .map(|(k, e)| flow(k, e, ifaces, &settings, &own_of(k.ifindex), now))
        .collect();
    flows.sort_by(|a, b| (&a.interface, a.src, a.src_port).cmp(&(&b.interface, b.src, b.src_port)));
    flows
}

/// Removes the entries matching `filter`; returns how many. Packets of a flushed flow are
/// judged by the rules again: a flow the rules still allow is picked up again at once.
pub fn flush(maps: &mut Maps, filter: &Filter) -> usize {
    let keys: Vec<CtKey> = maps
        .conntrack_entries()
        .into_iter()
        .filter(|(k, _)| matches(filter, k, &ifname(k.ifindex)))
        .map(|(k, _)| k)
        .collect();
    keys.iter().filter(|k| maps.conntrack.remove(k).is_ok()).count()
}

/// One line per flow for humans.
pub fn format_human(flows: &[Flow]) -> String {
    let mut out = String::new();
    for f in flows {
        let endpoint = |a: IpAddr, p: u16, with_port: bool| {
            if !with_port {
                a.to_string()
            } else if a.is_ipv6() {
                format!("[{a}]:{p}")
            } else {
                format!("{a}:{p}")
            }
        };
        let ports = f.protocol == "tcp" || f.protocol == "udp";
        out.push_str(&format!(
            "{:<6} {:<40} -> {:<40} {:<8} {:<11} {} on {}{}  idle {}s, expires in {}s\n",
            f.protocol,
            endpoint(f.src, f.src_port, ports),
            endpoint(f.dst, f.dst_port, ports),
            f.direction,
            f.state,
            if f.replied { "replied" } else { "unreplied" },
            f.interface,
            f.instance.as_ref().map(|i| format!(" ({i})")).unwrap_or_default(),
            f.idle_secs,
            f.expires_in_secs,
        ));
    }
    out
}
