//! What `sg-agent status` reports, collected from the maps (and the agent, when it runs), and
//! its human form.

use std::{collections::BTreeMap, fmt::Write as _, time::SystemTime};

use serde::{Deserialize, Serialize};
use sg_common::{
    maps::{CtEntry, CtKey, IFACE_AUDIT, IFACE_SOURCE_DEST_CHECK, IfaceConfig},
    orientation::Role,
};

use crate::{
    clock,
    compile::PolicyCounts,
    conntrack::gc::GcStats,
    datapath::{Attachment, DatapathError, Maps, PinLayout, ProgramInfo, TcAttached, XdpAttached, ifname},
    policy::ConntrackTimeouts,
    store::follow::{Connection, StoreHealth},
};

/// What only a running agent knows, handed to [`collect`] as plain data.
#[derive(Debug, Clone, Default)]
pub struct AgentView {
    pub applied_at: Option<SystemTime>,
    /// By interface name: the instance, and how the interface is attached.
    pub interfaces: BTreeMap<String, InterfaceView>,
    pub policy: Option<PolicyCounts>,
    pub gc: Option<GcStats>,
    pub programs: Vec<ProgramInfo>,
    /// Fleet mode: the store this agent follows, and how that goes.
    pub store: Option<StoreHealth>,
    /// How long this agent's applies took.
    pub apply_seconds: ApplyHistogram,
}

/// Apply durations (validate, compile, write, swap) as a Prometheus histogram: cumulative
/// counts per upper bound, their sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyHistogram {
    /// Observations at or below each of [`ApplyHistogram::BOUNDS`].
    pub buckets: [u64; 12],
    pub sum: f64,
    pub count: u64,
}

impl ApplyHistogram {
    /// Upper bounds in seconds: a small document applies in a millisecond, 10,000 rules in tens
    /// of milliseconds (SPEC §6 asks for well under a second).
    pub const BOUNDS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

    pub fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(Self::BOUNDS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// The agent's view for readers outside the agent thread (metrics), refreshed after every job.
pub type SharedView = std::sync::Arc<std::sync::RwLock<AgentView>>;

#[derive(Debug, Clone)]
pub struct InterfaceView {
    pub instance: String,
    pub attachment: Option<Attachment>,
    /// The interface does not exist (yet).
    pub waiting: bool,
    /// What the policy says about it (role, flags).
    pub config: IfaceConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Whether a policy is live in the kernel.
    pub enforcing: bool,
    /// Whether an agent answered (false when read straight from the pins).
    pub agent_running: bool,
    pub generation: u64,
    /// Seconds since the epoch of the last apply by the running agent.
    pub applied_at: Option<u64>,
    pub pin_path: String,
    pub interfaces: Vec<InterfaceStatus>,
    pub policy: Option<PolicyCounts>,
    pub conntrack: ConntrackStatus,
    /// Packets and bytes by verdict reason.
    pub counters: BTreeMap<String, CounterValue>,
    /// The running agent's programs and the verifier's instruction count for each.
    #[serde(default)]
    pub programs: Vec<ProgramInfo>,
    /// Fleet mode: the store the agent follows (connection, revision, content, errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub interface: String,
    /// `attached`, or `waiting` (a local instance's interface that does not exist yet: it is
    /// protected the moment it appears).
    pub state: String,
    /// 0 while waiting.
    pub ifindex: u32,
    pub instance: Option<String>,
    pub role: String,
    pub source_dest_check: bool,
    pub audit: bool,
    pub xdp: Option<XdpAttached>,
    pub tc: Option<TcAttached>,
    /// The instance's own conntrack timeouts (the agent's apply where absent).
    #[serde(default, skip_serializing_if = "ConntrackTimeouts::is_empty")]
    pub conntrack_timeouts: ConntrackTimeouts,
    /// Packets and bytes judged on this interface, by verdict reason (reasons with none left
    /// out).
    #[serde(default)]
    pub counters: BTreeMap<String, CounterValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConntrackStatus {
    pub entries: usize,
    /// Flows each table can hold (IPv4 and IPv6 alike).
    pub capacity: u32,
    /// Kernel memory of both tables.
    pub memory_bytes: Option<u64>,
    /// Of the IPv4 table, per entry of capacity.
    pub bytes_per_entry: Option<u64>,
    /// Each table: IPv4 (compact keys, preallocated) and IPv6 (allocated as flows arrive).
    #[serde(default)]
    pub tables: Vec<ConntrackTable>,
    /// Timeouts in force, seconds.
    pub timeouts: sg_common::maps::Settings,
    /// The running agent's garbage collector.
    pub gc: Option<GcStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConntrackTable {
    /// `ipv4` or `ipv6`.
    pub family: String,
    pub entries: usize,
    pub capacity: u32,
    /// Kernel memory charged for it: all of it for the preallocated IPv4 table.
    pub memory_bytes: Option<u64>,
    pub preallocated: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}

/// Reads the status from the maps; `agent` adds what only the running agent knows.
pub fn collect(maps: &Maps, pins: &PinLayout, agent: Option<&AgentView>) -> Result<Status, DatapathError> {
    let live = maps.live()?;
    let mut by_iface = maps.iface_counters();
    let mut counters_of = |ifindex: u32| -> BTreeMap<String, CounterValue> {
        by_iface
            .remove(&ifindex)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), CounterValue { packets: v.packets, bytes: v.bytes }))
            .collect()
    };
    let mut interfaces: Vec<InterfaceStatus> = maps
        .live_ifaces()?
        .into_iter()
        .map(|(ifindex, cfg)| {
            let interface = ifname(ifindex);
            let view = agent.and_then(|a| a.interfaces.get(&interface));
            let attached = view.and_then(|v| v.attachment.as_ref());
            let instance = view.map(|v| v.instance.clone());
            InterfaceStatus {
                interface,
                state: "attached".to_owned(),
                ifindex,
                instance,
                role: Role::from_u8(cfg.role).name().to_owned(),
                source_dest_check: cfg.flags & IFACE_SOURCE_DEST_CHECK != 0,
                audit: cfg.flags & IFACE_AUDIT != 0,
                xdp: attached.map(|a| a.xdp),
                tc: attached.map(|a| a.tc),
                conntrack_timeouts: own_timeouts(&cfg),
                counters: counters_of(ifindex),
            }
        })
        .collect();
    let waiting = agent.iter().flat_map(|a| &a.interfaces).filter(|(_, v)| v.waiting);
    interfaces.extend(waiting.map(|(interface, v)| InterfaceStatus {
        interface: interface.clone(),
        state: "waiting".to_owned(),
        ifindex: 0,
        instance: Some(v.instance.clone()),
        role: Role::from_u8(v.config.role).name().to_owned(),
        source_dest_check: v.config.flags & IFACE_SOURCE_DEST_CHECK != 0,
        audit: v.config.flags & IFACE_AUDIT != 0,
        xdp: None,
        tc: None,
        conntrack_timeouts: own_timeouts(&v.config),
        counters: BTreeMap::new(),
    }));
    interfaces.sort_by(|a, b| a.interface.cmp(&b.interface));
    let policy = agent.and_then(|a| a.policy);
    let counters = maps
        .counters()?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), CounterValue { packets: v.packets, bytes: v.bytes }))
        .collect();
    let entries: Vec<(CtKey, CtEntry)> = maps.conntrack_entries();
    Ok(Status {
        enforcing: live.is_some(),
        agent_running: agent.is_some(),
        generation: live.map_or(0, |l| l.generation),
        applied_at: agent.and_then(|a| a.applied_at).map(clock::unix_seconds),
        pin_path: pins.root().display().to_string(),
        interfaces,
        policy,
        conntrack: {
            let (v4, v6) = maps.conntrack.sizes();
            let v4_entries = entries.iter().filter(|(k, _)| sg_common::maps::CtKey4::of(k).is_some()).count();
            let s = maps.read_settings().ok().filter(|s| s.tcp_established != 0).unwrap_or_default();
            ConntrackStatus {
                entries: entries.len(),
                capacity: v4.capacity,
                memory_bytes: v4.memory_bytes.zip(v6.memory_bytes).map(|(a, b)| a + b),
                bytes_per_entry: v4.memory_bytes.map(|m| m / u64::from(v4.capacity.max(1))),
                tables: vec![
                    ConntrackTable {
                        family: "ipv4".into(),
                        entries: v4_entries,
                        capacity: v4.capacity,
                        memory_bytes: v4.memory_bytes,
                        preallocated: true,
                    },
                    ConntrackTable {
                        family: "ipv6".into(),
                        entries: entries.len() - v4_entries,
                        capacity: v6.capacity,
                        memory_bytes: v6.memory_bytes,
                        preallocated: false,
                    },
                ],
                gc: agent.and_then(|a| a.gc.clone()),
                timeouts: s,
            }
        },
        counters,
        programs: agent.map(|a| a.programs.clone()).unwrap_or_default(),
        store: agent.and_then(|a| a.store.clone()),
    })
}

/// An interface's own conntrack timeouts, as the policy wrote them.
fn own_timeouts(cfg: &IfaceConfig) -> ConntrackTimeouts {
    let t = cfg.timeouts;
    ConntrackTimeouts {
        tcp_established: (t.tcp_established != 0).then_some(t.tcp_established),
        udp: (t.udp != 0).then_some(u32::from(t.udp)),
        udp_stream: (t.udp_stream != 0).then_some(u32::from(t.udp_stream)),
    }
}

/// The human form of `status`.
pub fn format_human(s: &Status) -> String {
    let mut out = String::new();
    let state = match (s.enforcing, s.agent_running) {
        (true, true) => "enforcing",
        (true, false) => "enforcing (no agent running: pinned state in force)",
        (false, _) => "NOT enforcing",
    };
    let _ = writeln!(out, "state:       {state}");
    let _ = writeln!(out, "generation:  {}", s.generation);
    if let Some(t) = s.applied_at {
        let now = clock::unix_seconds(SystemTime::now());
        let ago = clock::age(std::time::Duration::from_secs(now.saturating_sub(t)));
        let _ = writeln!(out, "applied at:  {}, {ago} ago", clock::rfc3339(t));
    }
    let _ = writeln!(out, "pin path:    {}", s.pin_path);
    if let Some(store) = &s.store {
        format_store(&mut out, store);
    }
    if let Some(p) = &s.policy {
        let _ = writeln!(out, "policy:      {p}");
    }
    let _ = writeln!(
        out,
        "conntrack:   {} / {} entries{}; timeouts tcp {} s, udp {}/{} s (stream), icmp {} s",
        s.conntrack.entries,
        s.conntrack.capacity,
        match (s.conntrack.memory_bytes, s.conntrack.bytes_per_entry) {
            (Some(m), Some(b)) => format!(" ({:.1} MiB, {b} bytes per IPv4 entry)", m as f64 / 1048576.0),
            _ => String::new(),
        },
        s.conntrack.timeouts.tcp_established,
        s.conntrack.timeouts.udp,
        s.conntrack.timeouts.udp_stream,
        s.conntrack.timeouts.icmp,
    );
    let _ = writeln!(out, "interfaces:");
    for i in &s.interfaces {
        let modes = match (i.xdp, i.tc) {
            _ if i.state == "waiting" => "WAITING for the interface to appear".to_owned(),
            (Some(x), Some(t)) => format!("{x}, {t}"),
            _ => "attached".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<15} {:<10} {:<9} {}{}{}",
            i.interface,
            i.instance.as_deref().unwrap_or("-"),
            i.role,
            modes,
            if i.source_dest_check { ", source/dest check" } else { "" },
            if i.audit { ", AUDIT MODE" } else { "" }
        );
        let t = &i.conntrack_timeouts;
        if !t.is_empty() {
            let show = |v: Option<u32>| v.map_or("agent's".to_owned(), |s| format!("{s} s"));
            let _ = writeln!(
                out,
                "  {:<15} own timeouts: tcp {}, udp {}, udp stream {}",
                "",
                show(t.tcp_established),
                show(t.udp),
                show(t.udp_stream)
            );
        }
        for (reason, c) in &i.counters {
            let _ = writeln!(out, "  {:<15} {reason:<32} {:>12} {:>14}", "", c.packets, c.bytes);
        }
    }
    for p in &s.programs {
        let _ = writeln!(
            out,
            "program:     {} (id {}), {} instructions verified",
            p.name,
            p.id,
            p.verified_instructions.map_or("?".to_owned(), |n| n.to_string())
        );
    }
    let _ = writeln!(out, "verdicts:    {:<32} {:>12} {:>14}", "reason", "packets", "bytes");
    for (reason, c) in &s.counters {
        if c.packets > 0 {
            let _ = writeln!(out, "             {reason:<32} {:>12} {:>14}", c.packets, c.bytes);
        }
    }
    out
}

/// The fleet lines of `status`: where the policy comes from, and whether it can be followed.
fn format_store(out: &mut String, h: &StoreHealth) {
    let now = clock::unix_seconds(SystemTime::now());
    let ago = |t: u64| clock::age(std::time::Duration::from_secs(now.saturating_sub(t)));
    let connection = match h.connection {
        Connection::Connecting => "connecting",
        Connection::Connected => "connected",
        Connection::Unreachable => "UNREACHABLE",
    };
    let _ = writeln!(out, "store:       {} prefix {} as node {}", h.store, h.prefix, h.node);
    let _ = writeln!(
        out,
        "             {connection} since {} ({} ago); following revision {}",
        clock::rfc3339(h.since),
        ago(h.since),
        h.revision
    );
    match h.generation {
        Some(g) => {
            let _ = writeln!(out, "             generation {g} is the store's revision {}", h.applied_revision);
        }
        None => {
            let _ = writeln!(out, "             no document from the store is live yet");
        }
    }
    if !h.content_valid {
        let since = h.invalid_since.map_or(String::new(), |t| format!(" since {} ({} ago)", clock::rfc3339(t), ago(t)));
        let _ = writeln!(
            out,
            "             the store's content is INVALID{since}; the last good generation stays in force:"
        );
        for p in &h.problems {
            let _ = writeln!(out, "               {p}");
        }
    }
    if let (Some(e), Some(at)) = (&h.last_error, h.last_error_at) {
        let _ = writeln!(out, "             last error {} ago: {e}", ago(at));
    }
    let _ = writeln!(
        out,
        "             {} snapshots, {} watch restarts, {} compactions followed",
        h.snapshots, h.watch_restarts, h.compactions
    );
}
