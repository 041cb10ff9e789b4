//! Every BPF map's key and value, declared once for the kernel programs and the agent.
//!
//! Rules for this file (see aya's integration-common): `#[repr(C)]`, no `bool`, no implicit
//! padding (explicit `_pad` fields instead, so that the bytes the kernel hashes or compares are
//! always the bytes we wrote), and every size pinned by a `const` assertion.
//!
//! Policy maps are double-buffered: every policy key starts with a `slot` (0 or 1) and
//! [`ActivePolicy::slot`] says which one packets read. The agent fills the idle slot, flips
//! `SG_ACTIVE` with one map update, waits for an RCU grace period, and only then may touch the
//! old slot again (see `sg-agent`'s `datapath::swap`).

use core::mem::size_of;

/// An address as every map stores it: IPv6 in full; IPv4 in the first four bytes with the other
/// twelve zero. The family always travels beside it, so `::/0` never matches an IPv4 packet.
pub type Addr = [u8; 16];

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Map names, as the kernel object declares them and bpffs pins them.
pub mod names {
    pub const ACTIVE: &str = "SG_ACTIVE";
    pub const IFACES: &str = "SG_IFACES";
    pub const OWN_ADDRS: &str = "SG_OWN_ADDRS";
    pub const PEERS: &str = "SG_PEERS";
    pub const RULES: &str = "SG_RULES";
    /// IPv6 flows (and IPv4 flows of an interface whose index needs more than 24 bits).
    pub const CONNTRACK: &str = "SG_CONNTRACK";
    /// IPv4 flows, with the compact key.
    pub const CONNTRACK4: &str = "SG_CONNTRACK4";
    pub const FRAGMENTS: &str = "SG_FRAGMENTS";
    pub const COUNTERS: &str = "SG_COUNTERS";
    pub const SETTINGS: &str = "SG_SETTINGS";
    pub const RULE_COUNTERS: &str = "SG_RULE_COUNTERS";
    pub const FLOW_EVENTS: &str = "SG_FLOW_EVENTS";
    pub const FLOW_CONFIG: &str = "SG_FLOW_CONFIG";
    pub const SERVICES: &str = "SG_SERVICES";
    pub const IFACE_COUNTERS: &str = "SG_IFACE_COUNTERS";
    /// Program names.
    pub const PROG_XDP: &str = "sg_xdp";
    pub const PROG_TC: &str = "sg_tc";
}

/// Capacities of the maps whose size is fixed at build time. The conntrack table's size is set
/// by the agent at load time (`--conntrack-max`).
pub mod capacity {
    /// Interfaces per slot (one per local instance).
    pub const IFACES: u32 = 4096;
    /// Own addresses per slot, over all local instances.
    pub const OWN_ADDRS: u32 = 65_536;
    /// Peer prefixes per slot, over all rule tables.
    pub const PEERS: u32 = 1 << 20;
    /// Rule entries per slot, over all rule tables.
    pub const RULES: u32 = 1 << 21;
    /// Default conntrack size: EC2-scale, 1M flows.
    pub const CONNTRACK_DEFAULT: u32 = 1 << 20;
    /// IPv4/IPv6 fragment trains being reassembled somewhere downstream at once.
    pub const FRAGMENTS: u32 = 16_384;
    /// Rules with hit counters (counters of rules gone from the policy are removed by the agent).
    pub const RULE_COUNTERS: u32 = 262_144;
    /// Flow-log ring buffer, bytes (a power of two): about 18,000 events.
    pub const FLOW_EVENTS_BYTES: u32 = 1 << 20;
    /// Node service entries per slot (`node_services` is at most 64 entries).
    pub const SERVICES: u32 = 256;
}

/// The IP address an [`Addr`] of `family` holds.
pub fn addr_to_ip(family: u8, addr: &Addr) -> core::net::IpAddr {
    if family == FAMILY_V4 {
        core::net::IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    } else {
        core::net::IpAddr::from(*addr)
    }
}

/// The (family, [`Addr`]) of an IP address.
pub fn ip_to_addr(ip: core::net::IpAddr) -> (u8, Addr) {
    match ip {
        core::net::IpAddr::V4(v4) => {
            let mut addr = [0u8; 16];
            let [a, b, c, d] = v4.octets();
            addr[0] = a;
            addr[1] = b;
            addr[2] = c;
            addr[3] = d;
            (FAMILY_V4, addr)
        }
        core::net::IpAddr::V6(v6) => (FAMILY_V6, v6.octets()),
    }
}

/// `SG_ACTIVE[0]`: which slot of the policy maps is live, and its generation number.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivePolicy {
    /// 0 or 1: the slot of the policy maps that packets read.
    pub slot: u32,
    /// Non-zero once a policy has been applied; until then every judged packet is dropped.
    pub valid: u32,
    pub generation: u64,
}
const _: () = assert!(size_of::<ActivePolicy>() == 16);

/// `SG_IFACES` key: an interface in one slot.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfaceKey {
    pub slot: u32,
    pub ifindex: u32,
}
const _: () = assert!(size_of::<IfaceKey>() == 8);

/// [`IfaceConfig::flags`]: drop packets whose own-side address is not the instance's.
pub const IFACE_SOURCE_DEST_CHECK: u8 = 1 << 0;
/// [`IfaceConfig::flags`]: audit (dry-run) mode; count what would be dropped, pass it.
pub const IFACE_AUDIT: u8 = 1 << 1;
/// [`IfaceConfig::flags`]: the ingress table has untracked entries, so an outbound packet may
/// be the reply of an untracked inbound flow (and must not create an entry).
pub const IFACE_INGRESS_UNTRACKED: u8 = 1 << 2;
/// [`IfaceConfig::flags`]: the egress table has untracked entries.
pub const IFACE_EGRESS_UNTRACKED: u8 = 1 << 3;
/// [`IfaceConfig::flags`]: the slot has node service entries (`SG_SERVICES`) to look up.
pub const IFACE_NODE_SERVICES: u8 = 1 << 4;

/// An instance's own conntrack timeouts (EC2 sets them per network interface), in seconds;
/// 0 means the agent's ([`Settings`]).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceTimeouts {
    pub tcp_established: u32,
    pub udp: u16,
    pub udp_stream: u16,
}
const _: () = assert!(size_of::<IfaceTimeouts>() == 8);

/// `SG_IFACES` value: what the datapath needs to judge a packet seen on an interface.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceConfig {
    /// Index of the instance within the slot; keys `SG_OWN_ADDRS`.
    pub instance: u32,
    /// Rule table judging the instance's inbound traffic.
    pub ingress_table: u32,
    /// Rule table judging the instance's outbound traffic.
    pub egress_table: u32,
    /// [`crate::orientation::Role`] as u8.
    pub role: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    /// The instance's conntrack timeouts. In the slot, so they change with the generation.
    pub timeouts: IfaceTimeouts,
}
const _: () = assert!(size_of::<IfaceConfig>() == 24);

/// `SG_SERVICES` key: one of the node's service addresses in one slot (SPEC §3). `proto` and
/// `port` are 0 for "any protocol and port"; else TCP/UDP and the service's port. The value is
/// unused (`1`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub slot: u32,
    pub family: u8,
    pub proto: u8,
    pub port: u16,
    pub addr: Addr,
}
const _: () = assert!(size_of::<ServiceKey>() == 24);

/// `SG_IFACE_COUNTERS` key (per-CPU values): one verdict reason on one interface.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfaceCounterKey {
    pub ifindex: u32,
    /// [`crate::verdict::Reason`] as u32.
    pub reason: u32,
}
const _: () = assert!(size_of::<IfaceCounterKey>() == 8);

/// `SG_OWN_ADDRS` key: one of an instance's own addresses. The value is unused (`1`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnAddrKey {
    pub slot: u32,
    pub instance: u32,
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: Addr,
}
const _: () = assert!(size_of::<OwnAddrKey>() == 28);

/// `SG_PEERS` (LPM trie) key data: a peer prefix of one rule table.
///
/// The longest match for a packet's peer address yields a *peer class*: the set of all the
/// table's prefixes that contain the address. (Prefixes are either nested or disjoint, so the
/// prefixes containing an address are exactly the longest match and its ancestors; the agent
/// gives each distinct longest match its own class.) This is how a rule lookup stays one LPM
/// lookup per dimension however many CIDRs the rules name.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub slot: u32,
    pub table: u32,
    pub family: u8,
    pub addr: Addr,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<PeerKey>() == 28);

/// Bits of [`PeerKey`] before the address: slot, table, family.
pub const PEER_KEY_FIXED_BITS: u32 = 32 + 32 + 8;

/// Prefix length of a [`PeerKey`] holding a `prefix_len`-bit prefix of an address.
#[inline(always)]
pub const fn peer_key_bits(prefix_len: u32) -> u32 {
    PEER_KEY_FIXED_BITS + prefix_len
}

/// Address bits of a family: 32 or 128.
#[inline(always)]
pub const fn family_bits(family: u8) -> u32 {
    if family == FAMILY_V4 { 32 } else { 128 }
}

/// `SG_RULES` (LPM trie) key data: (table, peer class) exact, then protocol, then the port.
///
/// For TCP/UDP the port is the destination port; for ICMP/ICMPv6 it is `type << 8 | code`
/// (so "type 3, any code" is an 8-bit port prefix); for other protocols it is 0. A port range
/// becomes at most 30 prefixes, never one entry per port. "All protocols" is an entry that stops
/// before the protocol byte. Port bytes are big-endian because LPM compares bytes MSB first.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    pub slot: u32,
    pub table: u32,
    pub class: u32,
    pub proto: u8,
    pub port: [u8; 2],
    pub _pad: u8,
}
const _: () = assert!(size_of::<RuleKey>() == 16);

/// Bits of [`RuleKey`] before the protocol: slot, table, class.
pub const RULE_KEY_FIXED_BITS: u32 = 32 + 32 + 32;
/// Prefix length of a [`RuleKey`] matching one protocol and a `port_bits`-bit port prefix.
#[inline(always)]
pub const fn rule_key_bits(port_bits: u32) -> u32 {
    RULE_KEY_FIXED_BITS + 8 + port_bits
}
/// Prefix length of a full-length [`RuleKey`], as lookups use.
pub const RULE_KEY_LOOKUP_BITS: u32 = rule_key_bits(16);

/// [`RuleMatch::flags`]: the flow is untracked (SPEC §3): allowed for `0.0.0.0/0` or `::/0`
/// while the other direction allows all response traffic; no conntrack entry is made.
pub const RULE_UNTRACKED: u32 = 1 << 0;

/// `SG_RULES` value: the allowing rule (its index in the generation's rule table, for counters
/// and `explain`) and flags.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleMatch {
    pub rule: u32,
    pub flags: u32,
    /// Key of the rule's hit counter in `SG_RULE_COUNTERS`: a hash of what the rule says (group,
    /// direction, protocol, ports, peer), so an unchanged rule keeps its counter across policy
    /// swaps and agent restarts.
    pub counter: u64,
}
const _: () = assert!(size_of::<RuleMatch>() == 16);

/// `SG_CONNTRACK` key: one flow as seen on one interface.
///
/// Oriented by the interface, not by who started the flow: `far` is the endpoint reached
/// through the interface (the source of frames it receives), `near` the endpoint on the node's
/// side (the source of frames it transmits). Both directions of a flow therefore build the same
/// key without sorting, and the same flow on another interface (another instance) is another
/// entry, as EC2 tracks per network interface.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    pub ifindex: u32,
    pub family: u8,
    pub proto: u8,
    /// TCP/UDP port of the far endpoint; ICMP echo identifier; 0 otherwise.
    pub far_port: u16,
    /// TCP/UDP port of the near endpoint; [`CT_ICMP_ECHO`] for ICMP echo flows; 0 otherwise.
    pub near_port: u16,
    pub _pad: u16,
    pub far_addr: Addr,
    pub near_addr: Addr,
}
const _: () = assert!(size_of::<CtKey>() == 44);

/// `SG_CONNTRACK4` key: an IPv4 flow, in 16 bytes instead of [`CtKey`]'s 44 — the same fields,
/// with IPv4 addresses and the interface index and protocol in one word. Hashing and comparing
/// it is cheaper on every packet, and an entry costs 88 bytes instead of 120 (16-byte key,
/// 8-byte value, the kernel's 48-byte element header and 16-byte bucket).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey4 {
    /// `ifindex << 8 | proto`: interface indexes below 2^24 (see [`CtKey4::of`]).
    pub ifindex_proto: u32,
    pub far_port: u16,
    pub near_port: u16,
    pub far_addr: [u8; 4],
    pub near_addr: [u8; 4],
}
const _: () = assert!(size_of::<CtKey4>() == 16);

impl CtKey4 {
    /// The compact form of an IPv4 key; `None` for IPv6, or for an interface index too large to
    /// share a word with the protocol (such flows stay in the wide table).
    #[inline(always)]
    pub fn of(key: &CtKey) -> Option<CtKey4> {
        if key.family != FAMILY_V4 || key.ifindex >= 1 << 24 {
            return None;
        }
        Some(CtKey4 {
            ifindex_proto: key.ifindex << 8 | u32::from(key.proto),
            far_port: key.far_port,
            near_port: key.near_port,
            far_addr: [key.far_addr[0], key.far_addr[1], key.far_addr[2], key.far_addr[3]],
            near_addr: [key.near_addr[0], key.near_addr[1], key.near_addr[2], key.near_addr[3]],
        })
    }

    /// The full key this compact one stands for.
    pub fn widen(&self) -> CtKey {
        let mut far_addr = [0u8; 16];
        let mut near_addr = [0u8; 16];
        far_addr[..4].copy_from_slice(&self.far_addr);
        near_addr[..4].copy_from_slice(&self.near_addr);
        CtKey {
            ifindex: self.ifindex_proto >> 8,
            family: FAMILY_V4,
            proto: self.ifindex_proto as u8,
            far_port: self.far_port,
            near_port: self.near_port,
            _pad: 0,
            far_addr,
            near_addr,
        }
    }
}

/// [`CtKey::near_port`] of an ICMP echo flow (request/reply by identifier), which keeps it
/// apart from the "other ICMP" flow between the same two addresses.
pub const CT_ICMP_ECHO: u16 = 1;

/// `SG_CONNTRACK` value. Eight bytes on purpose: with the 44-byte key and the kernel's
/// 48-byte element header and 16-byte bucket, an entry costs 120 bytes, so 1M flows fit in
/// 120 MiB (a 16-byte value would make it exactly 128 MiB plus the map header).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtEntry {
    /// CLOCK_MONOTONIC seconds (`bpf_ktime_get_ns() / 1e9`) of the last packet that refreshed
    /// the entry. Timeouts are whole seconds, and refreshing at most once a second keeps the
    /// entry's cache line from bouncing between CPUs.
    pub last_seen: u32,
    /// The rule that admitted the flow (index in the generation that admitted it);
    /// [`CT_RULE_UNKNOWN`] if it does not fit.
    pub rule: u16,
    /// [`crate::conntrack::CtState`] as u8.
    pub state: u8,
    /// `CT_F_*` bits, the origin hook included.
    pub flags: u8,
}
const _: () = assert!(size_of::<CtEntry>() == 8);

/// [`CtEntry::rule`] of a flow admitted by a rule whose index does not fit in 16 bits.
pub const CT_RULE_UNKNOWN: u16 = u16::MAX;

/// [`CtEntry::flags`]: a packet from the responder has been seen.
pub const CT_F_REPLIED: u8 = 1 << 0;
/// [`CtEntry::flags`]: UDP with more than one exchange: the stream timeout applies.
pub const CT_F_STREAM: u8 = 1 << 1;
/// [`CtEntry::flags`]: the flow's originator sent a FIN.
pub const CT_F_FIN_ORIGIN: u8 = 1 << 2;
/// [`CtEntry::flags`]: the responder sent a FIN.
pub const CT_F_FIN_REPLY: u8 = 1 << 3;
/// [`CtEntry::flags`]: the flow's first packet was seen on transmit (else on receive).
pub const CT_F_ORIGIN_TRANSMIT: u8 = 1 << 4;

/// `SG_FRAGMENTS` key: a fragment train (IPv4 identification is 16 bits, IPv6's 32).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub ifindex: u32,
    pub id: u32,
    pub family: u8,
    pub proto: u8,
    pub _pad: [u8; 2],
    pub src: Addr,
    pub dst: Addr,
}
const _: () = assert!(size_of::<FragKey>() == 44);

/// `SG_FRAGMENTS` value: the verdict the first fragment got.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragVerdict {
    pub last_seen_ns: u64,
    /// [`crate::verdict::Reason`] of the first fragment, as u32.
    pub reason: u32,
    /// Non-zero if the first fragment passed.
    pub pass: u32,
}
const _: () = assert!(size_of::<FragVerdict>() == 16);

/// `SG_COUNTERS` value (per CPU, indexed by [`crate::verdict::Reason`]).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

/// `SG_SETTINGS[0]`: conntrack timeouts in seconds, read by the datapath on every expiry check,
/// so a change takes effect at once for every flow.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Settings {
    pub tcp_established: u32,
    /// Handshake not finished yet.
    pub tcp_syn: u32,
    /// One side has sent a FIN.
    pub tcp_fin: u32,
    /// Both sides sent FIN, or a RST was seen.
    pub tcp_closed: u32,
    pub udp: u32,
    pub udp_stream: u32,
    pub icmp: u32,
    pub other: u32,
}
const _: () = assert!(size_of::<Settings>() == 32);

impl Settings {
    /// EC2's defaults (SPEC §3); the TCP handshake and closing timeouts follow Linux and Cilium.
    pub const DEFAULT: Settings = Settings {
        tcp_established: 432_000,
        tcp_syn: 60,
        tcp_fin: 120,
        tcp_closed: 10,
        udp: 30,
        udp_stream: 180,
        icmp: 600,
        other: 600,
    };
}

impl Default for Settings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `SG_FLOW_CONFIG[0]`: flow logging. Off (0) unless a `sg-agent flows` reader is attached, so
/// the datapath pays nothing for it otherwise.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowConfig {
    /// Events per second per CPU (a token bucket); 0 = off.
    pub events_per_sec: u32,
    pub _pad: u32,
    /// Per-CPU bucket state, kept in the same per-CPU array slot: tokens left, and when it was
    /// last refilled (ns).
    pub tokens: u64,
    pub refilled_ns: u64,
}
const _: () = assert!(size_of::<FlowConfig>() == 24);

/// One judged packet, for flow logs (`SG_FLOW_EVENTS` ring buffer).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub ifindex: u32,
    /// Frame length.
    pub bytes: u32,
    /// Index of the allowing rule in its generation, or `u32::MAX`.
    pub rule: u32,
    pub family: u8,
    pub proto: u8,
    /// Non-zero if the packet passed.
    pub pass: u8,
    /// [`crate::verdict::Reason`].
    pub reason: u8,
    pub sport: u16,
    pub dport: u16,
    /// [`crate::orientation::Hook`]: 0 received, 1 transmitted.
    pub hook: u8,
    pub _pad: [u8; 3],
    pub src: Addr,
    pub dst: Addr,
}
const _: () = assert!(size_of::<FlowEvent>() == 56);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `#[repr(C)]`, contain only integers and byte arrays, and have no
    // implicit padding (sizes asserted above), so every bit pattern is valid.
    unsafe impl aya::Pod for ActivePolicy {}
    unsafe impl aya::Pod for IfaceKey {}
    unsafe impl aya::Pod for IfaceConfig {}
    unsafe impl aya::Pod for IfaceTimeouts {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for IfaceCounterKey {}
    unsafe impl aya::Pod for OwnAddrKey {}
    unsafe impl aya::Pod for PeerKey {}
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for RuleMatch {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtKey4 {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragVerdict {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for FlowConfig {}
    unsafe impl aya::Pod for FlowEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compact_key_round_trips_and_refuses_what_it_cannot_hold() {
        let mut key = CtKey {
            ifindex: 0x00ab_cdef,
            family: FAMILY_V4,
            proto: 17,
            far_port: 53,
            near_port: 40000,
            _pad: 0,
            far_addr: [0; 16],
            near_addr: [0; 16],
        };
        key.far_addr[..4].copy_from_slice(&[192, 0, 2, 1]);
        key.near_addr[..4].copy_from_slice(&[10, 0, 1, 10]);
        let compact = CtKey4::of(&key).unwrap();
        assert_eq!(compact.widen(), key);
        assert_eq!(CtKey4::of(&CtKey { ifindex: 1 << 24, ..key }), None, "the index needs its 24 bits");
        assert_eq!(CtKey4::of(&CtKey { family: FAMILY_V6, ..key }), None);
        // Keys differing only in protocol or interface stay apart.
        assert_ne!(CtKey4::of(&CtKey { proto: 6, ..key }), Some(compact));
        assert_ne!(CtKey4::of(&CtKey { ifindex: 0x00ab_cdee, ..key }), Some(compact));
    }
}
