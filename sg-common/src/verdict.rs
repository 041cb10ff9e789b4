//! The verdict: given a parsed packet and the maps, pass or drop, and why.
//!
//! This is the one implementation of SPEC §3's decision. The kernel programs call [`judge`] with
//! their BPF maps behind the [`VerdictMaps`] trait; the agent calls it with an in-memory copy of
//! the compiled maps (`explain`, and the property test that checks the compiled policy against a
//! plain evaluator of the document).

use crate::{
    conntrack::{self, Tracked},
    maps::{
        ActivePolicy, CT_RULE_UNKNOWN, CtEntry, CtKey, FAMILY_V4, FragKey, FragVerdict, IFACE_AUDIT,
        IFACE_EGRESS_UNTRACKED, IFACE_INGRESS_UNTRACKED, IFACE_NODE_SERVICES, IFACE_SOURCE_DEST_CHECK, IfaceConfig,
        IfaceKey, IfaceTimeouts, OwnAddrKey, PeerKey, RULE_KEY_LOOKUP_BITS, RULE_UNTRACKED, RuleKey, RuleMatch,
        ServiceKey, Settings, family_bits, peer_key_bits,
    },
    orientation::{Direction, Hook, Role},
    packet::{FRAG_FIRST, FRAG_LATER, ICMP_ERROR, IPPROTO_TCP, IPPROTO_UDP, Packet},
};

/// Why a packet got its verdict; indexes `SG_COUNTERS`.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A rule of its direction allows it (a conntrack entry now tracks the flow).
    AllowedByRule = 0,
    /// It belongs to a tracked flow.
    AllowedTracked = 1,
    /// An ICMP error quoting a tracked flow.
    AllowedRelated = 2,
    /// A rule allows it and the flow is untracked (SPEC §3), so no entry was made.
    AllowedUntracked = 3,
    /// A later fragment of a first fragment that passed.
    AllowedFragment = 4,
    /// ARP or IPv6 neighbour discovery.
    PassedAddressResolution = 5,
    /// Host role: neither to nor from the host's own addresses (forwarded traffic), not judged.
    PassedNotJudged = 6,
    /// No tracked flow and no rule allows it.
    DroppedNoRule = 7,
    /// Source/destination check: the instance's side of the packet is not one of its addresses.
    DroppedSourceDestCheck = 8,
    /// Truncated or inconsistent headers.
    DroppedMalformed = 9,
    /// Neither IP nor address resolution.
    DroppedNonIp = 10,
    /// A rule allows it but the conntrack table is full (EC2's `conntrack_allowance_exceeded`).
    DroppedConntrackFull = 11,
    /// A later fragment whose first fragment was not seen or did not pass.
    DroppedFragment = 12,
    /// The interface has no instance in the live policy, or no policy is live yet.
    DroppedNoPolicy = 13,
    /// Audit (dry-run) mode: the policy would have dropped it; passed.
    AuditWouldDrop = 14,
    /// DHCP, or traffic to or from one of the node's service addresses: never judged (SPEC §3).
    PassedNodeService = 15,
}

pub const NUM_REASONS: u32 = 17;

/// `SG_COUNTERS` slot after the verdict reasons: flow-log events not emitted because the
/// per-CPU budget was spent (a flood), reported as the records' `SKIPDATA`.
pub const COUNTER_FLOW_EVENTS_SKIPPED: u32 = 16;

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::AllowedByRule,
        Reason::AllowedTracked,
        Reason::AllowedRelated,
        Reason::AllowedUntracked,
        Reason::AllowedFragment,
        Reason::PassedAddressResolution,
        Reason::PassedNotJudged,
        Reason::DroppedNoRule,
        Reason::DroppedSourceDestCheck,
        Reason::DroppedMalformed,
        Reason::DroppedNonIp,
        Reason::DroppedConntrackFull,
        Reason::DroppedFragment,
        Reason::DroppedNoPolicy,
        Reason::AuditWouldDrop,
        Reason::PassedNodeService,
    ];

    /// The reason with this number (`SG_COUNTERS` and `SG_IFACE_COUNTERS` index by it).
    pub fn from_u32(n: u32) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| *r as u32 == n)
    }

    #[inline(always)]
    pub const fn passes(self) -> bool {
        !matches!(
            self,
            Reason::DroppedNoRule
                | Reason::DroppedSourceDestCheck
                | Reason::DroppedMalformed
                | Reason::DroppedNonIp
                | Reason::DroppedConntrackFull
                | Reason::DroppedFragment
                | Reason::DroppedNoPolicy
        )
    }

    /// The name used by `status`, metrics and tests.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::AllowedByRule => "allowed_by_rule",
            Reason::AllowedTracked => "allowed_tracked",
            Reason::AllowedRelated => "allowed_related",
            Reason::AllowedUntracked => "allowed_untracked",
            Reason::AllowedFragment => "allowed_fragment",
            Reason::PassedAddressResolution => "passed_address_resolution",
            Reason::PassedNotJudged => "passed_not_judged",
            Reason::DroppedNoRule => "dropped_no_rule",
            Reason::DroppedSourceDestCheck => "dropped_source_dest_check",
            Reason::DroppedMalformed => "dropped_malformed",
            Reason::DroppedNonIp => "dropped_non_ip",
            Reason::DroppedConntrackFull => "conntrack_allowance_exceeded",
            Reason::DroppedFragment => "dropped_fragment",
            Reason::DroppedNoPolicy => "dropped_no_policy",
            Reason::AuditWouldDrop => "audit_would_drop",
            Reason::PassedNodeService => "passed_node_service",
        }
    }
}

/// The outcome for one packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    /// The allowing rule's index in its generation, for [`Reason::AllowedByRule`],
    /// [`Reason::AllowedUntracked`] and [`Reason::AllowedTracked`]; `u32::MAX` otherwise.
    pub rule: u32,
    /// Whether the packet passes. Equal to `reason.passes()` except in audit mode.
    pub pass: bool,
    /// The evaluated rule's hit counter (`RuleMatch::counter`); 0 if no rule was evaluated
    /// (tracked packets do not hit rules).
    pub counter: u64,
}

pub const NO_RULE: u32 = u32::MAX;

impl Verdict {
    #[inline(always)]
    pub const fn of(reason: Reason) -> Verdict {
        Verdict { reason, rule: NO_RULE, pass: reason.passes(), counter: 0 }
    }
    #[inline(always)]
    const fn tracked(rule: u32) -> Verdict {
        Verdict { reason: Reason::AllowedTracked, rule, pass: true, counter: 0 }
    }
    #[inline(always)]
    const fn by_rule(reason: Reason, rule: &RuleMatch) -> Verdict {
        Verdict { reason, rule: rule.rule, pass: reason.passes(), counter: rule.counter }
    }
}

/// The maps [`judge`] reads and writes. Implemented over BPF maps in the kernel and over
/// in-memory tables on the host.
pub trait VerdictMaps {
    fn active(&self) -> Option<ActivePolicy>;
    fn iface(&self, key: &IfaceKey) -> Option<IfaceConfig>;
    fn is_own_addr(&self, key: &OwnAddrKey) -> bool;
    /// Longest-prefix match in `SG_PEERS` with a key of `prefix_len` bits.
    fn peer_class(&self, key: &PeerKey, prefix_len: u32) -> Option<u32>;
    /// Longest-prefix match in `SG_RULES` with a key of `prefix_len` bits.
    fn rule(&self, key: &RuleKey, prefix_len: u32) -> Option<RuleMatch>;
    fn settings(&self) -> &Settings;
    /// Runs `f` on the flow's entry if there is one.
    fn ct_track<F: FnOnce(&mut CtEntry) -> Tracked>(&self, key: &CtKey, f: F) -> Option<Tracked>;
    fn ct_contains(&self, key: &CtKey) -> bool;
    /// Creates or replaces an entry; `false` if the table is full.
    fn ct_insert(&self, key: &CtKey, entry: &CtEntry) -> bool;
    fn fragment(&self, key: &FragKey) -> Option<FragVerdict>;
    fn remember_fragment(&self, key: &FragKey, verdict: &FragVerdict);
    /// Whether `SG_SERVICES` holds the key.
    fn is_node_service(&self, key: &ServiceKey) -> bool;

    /// The conntrack timeouts of the instance on `ifindex` in the live policy (all 0, the
    /// agent's, if it has none or there is no live policy).
    #[inline(always)]
    fn iface_timeouts(&self, ifindex: u32) -> IfaceTimeouts {
        match self.active() {
            Some(active) => {
                self.iface(&IfaceKey { slot: active.slot, ifindex }).map(|c| c.timeouts).unwrap_or_default()
            }
            None => IfaceTimeouts::default(),
        }
    }
}

/// Judges an IP packet seen at `hook` on interface `ifindex` at time `now_ns`.
#[inline(always)]
pub fn judge<D: VerdictMaps>(dp: &D, ifindex: u32, hook: Hook, pkt: &Packet, now_ns: u64) -> Verdict {
    if pkt.fragment == FRAG_LATER {
        return judge_later_fragment(dp, ifindex, pkt);
    }
    let verdict = judge_unfragmented(dp, ifindex, hook, pkt, now_ns);
    if pkt.fragment == FRAG_FIRST {
        let key = fragment_key(ifindex, pkt);
        let remembered =
            FragVerdict { last_seen_ns: now_ns, reason: verdict.reason as u32, pass: u32::from(verdict.pass) };
        dp.remember_fragment(&key, &remembered);
    }
    verdict
}

#[inline(always)]
fn fragment_key(ifindex: u32, pkt: &Packet) -> FragKey {
    FragKey { ifindex, id: pkt.frag_id, family: pkt.family, proto: pkt.proto, _pad: [0; 2], src: pkt.src, dst: pkt.dst }
}

#[inline(always)]
fn judge_later_fragment<D: VerdictMaps>(dp: &D, ifindex: u32, pkt: &Packet) -> Verdict {
    match dp.fragment(&fragment_key(ifindex, pkt)) {
        Some(first) if first.pass != 0 => Verdict::of(Reason::AllowedFragment),
        _ => Verdict::of(Reason::DroppedFragment),
    }
}

#[inline(always)]
fn judge_unfragmented<D: VerdictMaps>(dp: &D, ifindex: u32, hook: Hook, pkt: &Packet, now_ns: u64) -> Verdict {
    // Fast path: a tracked flow passes whatever the rules say now (SPEC §3).
    let key = conntrack::flow_key(ifindex, hook, pkt);
    let mut tracked_rule = NO_RULE;
    let tracked = dp.ct_track(&key, |entry| {
        tracked_rule = if entry.rule == CT_RULE_UNKNOWN { NO_RULE } else { u32::from(entry.rule) };
        conntrack::track(entry, pkt, hook, now_ns, || (dp.settings(), dp.iface_timeouts(ifindex)))
    });
    if tracked == Some(Tracked::Pass) {
        return Verdict::tracked(tracked_rule);
    }

    let Some(active) = dp.active() else {
        return Verdict::of(Reason::DroppedNoPolicy);
    };
    if active.valid == 0 {
        return Verdict::of(Reason::DroppedNoPolicy);
    }
    let slot = active.slot;
    let Some(cfg) = dp.iface(&IfaceKey { slot, ifindex }) else {
        return Verdict::of(Reason::DroppedNoPolicy);
    };
    let verdict = judge_by_policy(dp, slot, &cfg, ifindex, hook, pkt, &key, now_ns);
    if !verdict.pass && cfg.flags & IFACE_AUDIT != 0 {
        return Verdict { reason: Reason::AuditWouldDrop, rule: NO_RULE, pass: true, counter: 0 };
    }
    verdict
}

#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "internal step of judge; all are needed")]
fn judge_by_policy<D: VerdictMaps>(
    dp: &D,
    slot: u32,
    cfg: &IfaceConfig,
    ifindex: u32,
    hook: Hook,
    pkt: &Packet,
    key: &CtKey,
    now_ns: u64,
) -> Verdict {
    let role = Role::from_u8(cfg.role);
    let direction = Direction::of(role, hook);
    // Before the source/destination check: a booting VM asks for its address from 0.0.0.0.
    if is_node_service(dp, slot, cfg, direction, pkt) {
        return Verdict::of(Reason::PassedNodeService);
    }
    let (local, peer, table) = match direction {
        Direction::Ingress => (&pkt.dst, &pkt.src, cfg.ingress_table),
        Direction::Egress => (&pkt.src, &pkt.dst, cfg.egress_table),
    };
    let own = OwnAddrKey { slot, instance: cfg.instance, family: pkt.family, _pad: [0; 3], addr: *local };
    if role == Role::Host {
        // The node's NIC also carries traffic the node forwards to and from workloads; that is
        // judged by the workloads' own groups, not the node's.
        if !dp.is_own_addr(&own) {
            return Verdict::of(Reason::PassedNotJudged);
        }
    } else if cfg.flags & IFACE_SOURCE_DEST_CHECK != 0 && !dp.is_own_addr(&own) {
        return Verdict::of(Reason::DroppedSourceDestCheck);
    }

    if pkt.icmp == ICMP_ERROR && pkt.quoted.valid != 0 {
        let quoted = conntrack::quoted_flow_key(ifindex, hook, pkt.family, &pkt.quoted);
        if dp.ct_contains(&quoted) {
            return Verdict::of(Reason::AllowedRelated);
        }
    }

    let Some(rule) = lookup_rule(dp, slot, table, pkt.family, pkt.proto, pkt.dport, peer) else {
        return Verdict::of(Reason::DroppedNoRule);
    };
    let tcp_or_udp = pkt.proto == IPPROTO_TCP || pkt.proto == IPPROTO_UDP;
    if tcp_or_udp && rule.flags & RULE_UNTRACKED != 0 {
        return Verdict::by_rule(Reason::AllowedUntracked, &rule);
    }
    // The reply of an untracked flow of the other direction makes no entry either (SPEC §3).
    // It is one if the reversed packet would be allowed untracked by the other direction's
    // rules; only checked when that table has untracked entries at all.
    let (other_table, other_may_untrack) = match direction {
        Direction::Ingress => (cfg.egress_table, cfg.flags & IFACE_EGRESS_UNTRACKED != 0),
        Direction::Egress => (cfg.ingress_table, cfg.flags & IFACE_INGRESS_UNTRACKED != 0),
    };
    if tcp_or_udp && other_may_untrack {
        let reverse = lookup_rule(dp, slot, other_table, pkt.family, pkt.proto, pkt.sport, peer);
        if reverse.is_some_and(|r| r.flags & RULE_UNTRACKED != 0) {
            return Verdict::by_rule(Reason::AllowedUntracked, &rule);
        }
    }
    let entry = conntrack::new_entry(pkt, hook, rule.rule, now_ns);
    if !dp.ct_insert(key, &entry) {
        return Verdict::of(Reason::DroppedConntrackFull);
    }
    Verdict::by_rule(Reason::AllowedByRule, &rule)
}

const DHCP_SERVER: u16 = 67;
const DHCP_CLIENT: u16 = 68;
const DHCP6_CLIENT: u16 = 546;
const DHCP6_SERVER: u16 = 547;

/// Whether a packet is DHCP between the instance and the node, or traffic with one of the node's
/// service addresses (SPEC §3): neither is judged by security groups, as in EC2.
///
/// DHCP is the instance's client talking to a server on its link: DHCPv4 from port 68 to 67
/// broadcast (a booting client has no address yet and never knows the server's), DHCPv6 from
/// 546 to 547 at a link-local or link-scoped multicast address, and the server's answers (67 to
/// 68 sent by the node itself to a workload — not forwarded from elsewhere — or received by a
/// host instance from its link; 547 to 546 from a link-local address, which no router
/// forwards). DHCP with anything beyond the link is judged like any other traffic (a renewal
/// unicast to the node passes when the node's address is listed in `node_services`). Service addresses: the service side's address (and, for an entry with a
/// port, protocol and port) is looked up in the live slot's table — at most two lookups, made
/// only for packets no tracked flow has taken.
#[inline(always)]
fn is_node_service<D: VerdictMaps>(dp: &D, slot: u32, cfg: &IfaceConfig, direction: Direction, pkt: &Packet) -> bool {
    // The client side is the instance: its outbound traffic leaves from it, inbound comes to it.
    let (client_port, server_port, server_addr) = match direction {
        Direction::Egress => (pkt.sport, pkt.dport, &pkt.dst),
        Direction::Ingress => (pkt.dport, pkt.sport, &pkt.src),
    };
    if pkt.proto == IPPROTO_UDP {
        if pkt.family == FAMILY_V4 && client_port == DHCP_CLIENT && server_port == DHCP_SERVER {
            let from_the_node = pkt.local_origin != 0 || cfg.role == Role::Host as u8;
            let to_the_link = server_addr[..4] == [255, 255, 255, 255];
            match direction {
                Direction::Ingress if from_the_node => return true,
                Direction::Egress if to_the_link => return true,
                _ => {}
            }
        }
        if pkt.family != FAMILY_V4 && client_port == DHCP6_CLIENT && server_port == DHCP6_SERVER {
            // fe80::/10 (link-local unicast) or ff02::/16 (link-scoped multicast).
            let link_local = server_addr[0] == 0xfe && server_addr[1] & 0xc0 == 0x80;
            let link_multicast = server_addr[0] == 0xff && server_addr[1] == 0x02;
            if link_local || (direction == Direction::Egress && link_multicast) {
                return true;
            }
        }
    }
    if cfg.flags & IFACE_NODE_SERVICES == 0 {
        return false;
    }
    let mut key = ServiceKey { slot, family: pkt.family, proto: 0, port: 0, addr: *server_addr };
    if dp.is_node_service(&key) {
        return true;
    }
    if pkt.proto == IPPROTO_TCP || pkt.proto == IPPROTO_UDP {
        key.proto = pkt.proto;
        key.port = server_port;
        return dp.is_node_service(&key);
    }
    false
}

/// The rule lookup: peer address → peer class (LPM), then (class, protocol, port) → rule (LPM).
/// Two lookups whatever the number of rules.
#[inline(always)]
pub fn lookup_rule<D: VerdictMaps>(
    dp: &D,
    slot: u32,
    table: u32,
    family: u8,
    proto: u8,
    port: u16,
    peer: &[u8; 16],
) -> Option<RuleMatch> {
    let peer_key = PeerKey { slot, table, family, addr: *peer, _pad: [0; 3] };
    let class = dp.peer_class(&peer_key, peer_key_bits(family_bits(family)))?;
    let rule_key = RuleKey { slot, table, class, proto, port: port.to_be_bytes(), _pad: 0 };
    dp.rule(&rule_key, RULE_KEY_LOOKUP_BITS)
}
