//! The compiled policy against a plain reading of the document (SPEC §2, §3).
//!
//! `compile` turns a document into LPM map entries; the kernel judges packets with two lookups
//! over them (`sg_common::verdict::judge`). Here the same `judge` runs over the same entries
//! (`sg_agent::emulator::Emulator`) and its verdict for a *new* flow is compared with
//! [`naive`]: a direct, rule-by-rule, peer-by-peer evaluation of the validated document that
//! shares no code with the compiler. Documents are random but small and drawn from a small
//! address universe, so nested and overlapping CIDRs, overlapping port ranges, group references
//! and prefix lists collide often. Documents go through `sg_agent::policy::load` (JSON text) so
//! that the defaults are applied exactly as in production.
//!
//! What is compared per packet: the reason (allowed by rule / allowed untracked / dropped by no
//! rule / source-dest check / not judged / audit), the pass flag, and that the reported rule is
//! a rule of the instance that matches the packet and the first such rule in document order.
//! "Untracked" (SPEC §3) covers both the first packet of an untracked flow and a packet whose
//! reverse would be one (the replies of an untracked flow make no entry either).
//!
//! Runs without privileges. Deterministic tests at the end pin the hardest cases by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::{prelude::*, sample::select, test_runner::TestCaseError};
use serde_json::{Value, json};
use sg_agent::{
    compile::{Compiled, compile},
    emulator::Emulator,
    policy::{self, Direction, Document, Instance, Peer, Ports, Protocol, Role, Rule},
};
use sg_common::{
    maps::{FAMILY_V4, FAMILY_V6},
    orientation::Hook,
    packet::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_NONE, Packet, TCP_SYN, icmp_kind},
    verdict::{Reason, Verdict, judge},
};

// ---------------------------------------------------------------------------------------------
// The naive evaluator: SPEC §2 and §3 read literally, over the validated `Document`.
// ---------------------------------------------------------------------------------------------

/// A packet as the naive evaluator sees it: addresses, protocol, and the value rules filter on
/// (TCP/UDP destination port; ICMP `type << 8 | code`; 0 for other protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NPkt {
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    /// TCP/UDP source port, ICMP echo id (ignored by rules; makes the packet realistic).
    sport: u16,
}

impl NPkt {
    fn family(&self) -> u8 {
        if self.src.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
    }
}

/// SPEC §2 `role`: a workload interface receives what the instance sends (outbound) and
/// transmits what it receives (inbound); a host interface is the node's own NIC.
fn naive_direction(role: Role, hook: Hook) -> Direction {
    match (role, hook) {
        (Role::Workload, Hook::Receive) | (Role::Host, Hook::Transmit) => Direction::Egress,
        (Role::Workload, Hook::Transmit) | (Role::Host, Hook::Receive) => Direction::Ingress,
    }
}

/// SPEC §2 `protocol`: `icmp` is IPv4 protocol 1 only, `icmpv6` IPv6 protocol 58 only.
fn naive_protocol_matches(rule: Protocol, proto: u8, family: u8) -> bool {
    match rule {
        Protocol::All => true,
        Protocol::Tcp => proto == 6,
        Protocol::Udp => proto == 17,
        Protocol::Icmp => proto == 1 && family == FAMILY_V4,
        Protocol::Icmpv6 => proto == 58 && family == FAMILY_V6,
        Protocol::Number(n) => proto == n,
    }
}

/// SPEC §2 ports: TCP/UDP destination port in from..=to; ICMP type (any if none) and code
/// (any if none); ignored for `all` and other protocol numbers.
fn naive_ports_match(protocol: Protocol, ports: Ports, port: u16) -> bool {
    if !matches!(protocol, Protocol::Tcp | Protocol::Udp | Protocol::Icmp | Protocol::Icmpv6) {
        return true;
    }
    let (ty, code) = ((port >> 8) as u8, (port & 0xff) as u8);
    match ports {
        Ports::All => true,
        Ports::Range(lo, hi) => lo <= port && port <= hi,
        Ports::Icmp { ty: None, .. } => true,
        Ports::Icmp { ty: Some(t), code: None } => t == ty,
        Ports::Icmp { ty: Some(t), code: Some(c) } => t == ty && c == code,
    }
}

/// SPEC §2 peers: a CIDR; any CIDR of the prefix list; any address of any instance (local or
/// remote) that is a member of the group.
fn naive_peer_contains(doc: &Document, peer: &Peer, addr: IpAddr) -> bool {
    match peer {
        Peer::Cidr(net) => net.contains(&addr),
        Peer::PrefixList(id) => doc.prefix_list(id).expect("validated").cidrs.iter().any(|n| n.contains(&addr)),
        Peer::Group(id) => {
            doc.instances.iter().any(|i| i.security_groups.iter().any(|g| g == id) && i.addresses.contains(&addr))
        }
    }
}

/// Whether the peer names the all-addresses prefix of `family` (`0.0.0.0/0`, `::/0`), as a
/// CIDR or inside a prefix list.
fn naive_peer_is_everything(doc: &Document, peer: &Peer, family: u8) -> bool {
    let everything =
        |n: &IpNet| n.prefix_len() == 0 && matches!((n, family), (IpNet::V4(_), FAMILY_V4) | (IpNet::V6(_), FAMILY_V6));
    match peer {
        Peer::Cidr(net) => everything(net),
        Peer::PrefixList(id) => doc.prefix_list(id).expect("validated").cidrs.iter().any(everything),
        Peer::Group(_) => false,
    }
}

/// Whether `rule`'s `peer` matches the packet in direction `dir`.
fn naive_rule_peer_matches(doc: &Document, rule: &Rule, peer: &Peer, dir: Direction, p: &NPkt) -> bool {
    let far = match dir {
        Direction::Ingress => p.src,
        Direction::Egress => p.dst,
    };
    naive_protocol_matches(rule.protocol, p.proto, p.family())
        && naive_ports_match(rule.protocol, rule.ports, p.port)
        && naive_peer_contains(doc, peer, far)
}

/// Every (group, rule, peer) of the instance's groups in direction `dir` that matches.
fn naive_matches<'d>(doc: &'d Document, inst: &Instance, dir: Direction, p: &NPkt) -> Vec<(&'d Rule, &'d Peer)> {
    let mut out = Vec::new();
    for gid in &inst.security_groups {
        let group = doc.group(gid).expect("validated");
        for rule in group.rules(dir) {
            for peer in &rule.peers {
                if naive_rule_peer_matches(doc, rule, peer, dir, p) {
                    out.push((rule, peer));
                }
            }
        }
    }
    out
}

/// SPEC §3 untracked: an allowed TCP/UDP flow is untracked iff a matching rule is for the
/// family's all-addresses prefix and a rule of the other direction allows all responses: the
/// same protocol (or all) on every port 0-65535 to that all-addresses prefix. "Its replies make
/// none either": a packet whose reverse (same addresses and ports, swapped) would start an
/// untracked flow in the other direction is untracked as well.
fn naive_untracked(doc: &Document, inst: &Instance, dir: Direction, p: &NPkt) -> bool {
    let reverse = NPkt { src: p.dst, dst: p.src, port: p.sport, sport: p.port, ..*p };
    naive_starts_untracked(doc, inst, dir, p) || naive_starts_untracked(doc, inst, opposite(dir), &reverse)
}

/// Whether `p`, allowed by a rule of `dir`, starts an untracked flow.
fn naive_starts_untracked(doc: &Document, inst: &Instance, dir: Direction, p: &NPkt) -> bool {
    if p.proto != 6 && p.proto != 17 {
        return false;
    }
    let family = p.family();
    let for_everyone =
        naive_matches(doc, inst, dir, p).iter().any(|(_, peer)| naive_peer_is_everything(doc, peer, family));
    let responses = inst.security_groups.iter().any(|gid| {
        doc.group(gid).expect("validated").rules(opposite(dir)).iter().any(|r| {
            let proto_ok = match r.protocol {
                Protocol::All => true,
                Protocol::Tcp => p.proto == 6 && matches!(r.ports, Ports::All | Ports::Range(0, 65535)),
                Protocol::Udp => p.proto == 17 && matches!(r.ports, Ports::All | Ports::Range(0, 65535)),
                _ => false,
            };
            proto_ok && r.peers.iter().any(|peer| naive_peer_is_everything(doc, peer, family))
        })
    });
    for_everyone && responses
}

fn opposite(dir: Direction) -> Direction {
    match dir {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

/// SPEC §3: DHCP on the link (DHCPv4 68 → 67 broadcast, and the server's 67 → 68 from the node
/// itself — the packets here are forwarded ones, so only a host instance's — ; DHCPv6 546 → 547
/// at a link-local or link-scoped multicast address, and 547 → 546 from a link-local one) and
/// traffic with the node's service addresses are not judged.
fn naive_node_service(doc: &Document, inst: &Instance, dir: Direction, p: &NPkt) -> bool {
    let (server, server_port, client_port) = match dir {
        Direction::Egress => (p.dst, p.port, p.sport),
        Direction::Ingress => (p.src, p.sport, p.port),
    };
    if p.proto == 17 {
        let dhcp = match server {
            IpAddr::V4(a) => {
                client_port == 68
                    && server_port == 67
                    && match dir {
                        Direction::Ingress => inst.role == Role::Host,
                        Direction::Egress => a == Ipv4Addr::BROADCAST,
                    }
            }
            IpAddr::V6(a) => {
                let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
                let link_multicast = a.segments()[0] == 0xff02;
                client_port == 546 && server_port == 547 && (link_local || (dir == Direction::Egress && link_multicast))
            }
        };
        if dhcp {
            return true;
        }
    }
    doc.node_services.iter().any(|s| {
        s.addr == server
            && match s.port {
                None => true,
                Some((proto, port)) => proto == p.proto && port == server_port,
            }
    })
}

/// The naive verdict of a new flow's first packet on a local instance's interface.
fn naive(doc: &Document, inst: &Instance, hook: Hook, p: &NPkt) -> (Reason, bool) {
    let dir = naive_direction(inst.role, hook);
    if naive_node_service(doc, inst, dir, p) {
        return (Reason::PassedNodeService, true);
    }
    let local = match dir {
        Direction::Ingress => p.dst,
        Direction::Egress => p.src,
    };
    let own = inst.addresses.contains(&local);
    let reason = if inst.role == Role::Host && !own {
        Reason::PassedNotJudged
    } else if inst.role == Role::Workload && inst.source_dest_check && !own {
        Reason::DroppedSourceDestCheck
    } else if naive_matches(doc, inst, dir, p).is_empty() {
        Reason::DroppedNoRule
    } else if naive_untracked(doc, inst, dir, p) {
        Reason::AllowedUntracked
    } else {
        Reason::AllowedByRule
    };
    let dropped = matches!(reason, Reason::DroppedNoRule | Reason::DroppedSourceDestCheck);
    if dropped && inst.audit { (Reason::AuditWouldDrop, true) } else { (reason, !dropped) }
}

// ---------------------------------------------------------------------------------------------
// The compiled side: judge over the emulated maps.
// ---------------------------------------------------------------------------------------------

fn addr_bytes(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// The parsed headers the kernel would have for `p` (see `sg_common::packet::parse_l4`).
fn packet(p: &NPkt) -> Packet {
    let family = p.family();
    let is_icmp = (p.proto == 1 && family == FAMILY_V4) || (p.proto == 58 && family == FAMILY_V6);
    let icmp = if is_icmp { icmp_kind(family, (p.port >> 8) as u8) } else { ICMP_NONE };
    let (sport, dport) = match p.proto {
        6 | 17 => (p.sport, p.port),
        _ if is_icmp && (icmp == ICMP_ECHO_REQUEST || icmp == ICMP_ECHO_REPLY) => (p.sport, p.port),
        _ if is_icmp => (0, p.port),
        // Other protocols (and ICMP numbers of the other family) carry no ports.
        _ => (0, 0),
    };
    Packet {
        family,
        proto: p.proto,
        tcp_flags: if p.proto == 6 { TCP_SYN } else { 0 },
        icmp,
        src: addr_bytes(p.src),
        dst: addr_bytes(p.dst),
        sport,
        dport,
        ip_len: 60,
        ..Packet::default()
    }
}

/// Ifindex of the i-th compiled interface.
fn ifindex(i: usize) -> u32 {
    i as u32 + 1
}

struct Setup {
    doc: Document,
    compiled: Compiled,
    emulator: Emulator,
}

fn setup(json: &str) -> Result<Setup, String> {
    let doc = policy::load(json, None).map_err(|e| format!("generated document is invalid: {e}\n{json}"))?;
    let compiled = compile(&doc).map_err(|e| format!("compile failed: {e}\n{json}"))?;
    let local: Vec<&Instance> = doc.local_instances().collect();
    if compiled.ifaces.len() != local.len() || compiled.ifaces.iter().zip(&local).any(|(c, i)| c.instance != i.id) {
        return Err(format!("compiled interfaces do not follow the local instances\n{json}"));
    }
    let emulator = Emulator::new(&compiled, |i, _| ifindex(i));
    Ok(Setup { doc, compiled, emulator })
}

/// Judges `p` as a new flow on the `local_index`-th local instance, compares with the naive
/// verdict, and checks the reported rule. `Err` carries a full description.
fn check_packet(s: &Setup, local_index: usize, hook: Hook, p: &NPkt) -> Result<Verdict, String> {
    let inst = s.doc.local_instances().nth(local_index).expect("a local instance");
    s.emulator.conntrack.borrow_mut().clear();
    let pkt = packet(p);
    let got = judge(&s.emulator, ifindex(local_index), hook, &pkt, 1_000_000_000);
    let (want, want_pass) = naive(&s.doc, inst, hook, p);
    let describe = |why: &str| {
        let dir = naive_direction(inst.role, hook);
        format!(
            "{why}\n  instance {:?} ({:?}, {:?} hook = {} rules)\n  packet: proto {} {} -> {} port {} ({:#06x}) \
             sport {}\n  compiled verdict: {:?}{}\n  naive verdict: {:?} (pass {})\n  naive matches: {:?}\n  \
             Packet: {:?}\n  document (as loaded): {:#?}",
            inst.id,
            inst.role,
            hook,
            dir.name(),
            p.proto,
            p.src,
            p.dst,
            p.port,
            p.port,
            p.sport,
            got,
            s.compiled.rules.get(got.rule as usize).map(|r| format!(" = rule {r}")).unwrap_or_default(),
            want,
            want_pass,
            naive_matches(&s.doc, inst, dir, p)
                .iter()
                .map(|(r, peer)| format!("{} {} {peer}", r.protocol, r.ports))
                .collect::<Vec<_>>(),
            pkt,
            s.doc
        )
    };
    if got.reason != want || got.pass != want_pass {
        return Err(describe("compiled and naive verdicts differ"));
    }
    if matches!(got.reason, Reason::AllowedByRule | Reason::AllowedUntracked) {
        let dir = naive_direction(inst.role, hook);
        let matches_ref = |id: usize| -> bool {
            let Some(r) = s.compiled.rules.get(id) else { return false };
            if r.direction != dir || !inst.security_groups.contains(&r.group) {
                return false;
            }
            let rule = &s.doc.group(&r.group).expect("group").rules(r.direction)[r.rule_index];
            rule.peers.contains(&r.peer) && naive_rule_peer_matches(&s.doc, rule, &r.peer, dir, p)
        };
        if !matches_ref(got.rule as usize) {
            return Err(describe("the reported rule does not match the packet"));
        }
        if let Some(first) = (0..got.rule as usize).find(|&id| matches_ref(id)) {
            return Err(describe(&format!(
                "the reported rule is not the first matching one: rule {first} ({}) comes before it",
                s.compiled.rules[first]
            )));
        }
    }
    Ok(got)
}

// ---------------------------------------------------------------------------------------------
// Generators.
// ---------------------------------------------------------------------------------------------

// `/0` twice: rules for everyone are what makes flows untracked.
const V4_LENS: [u8; 9] = [0, 0, 8, 16, 20, 24, 28, 30, 32];
const V6_LENS: [u8; 8] = [0, 0, 64, 100, 112, 120, 126, 128];
const PORTS: [u16; 20] =
    [0, 1, 22, 53, 79, 80, 81, 443, 1023, 1024, 8080, 8081, 32768, 65534, 65535, 5353, 67, 68, 546, 547];
const ICMP_TYPES: [i16; 12] = [-1, 0, 1, 2, 3, 4, 8, 11, 128, 129, 135, 255];

fn small_byte(common: Vec<u8>) -> impl Strategy<Value = u8> {
    prop_oneof![3 => select(common), 1 => any::<u8>()]
}

/// 10.0.0.0/16, mostly a handful of subnets and hosts.
fn v4_addr() -> impl Strategy<Value = Ipv4Addr> {
    (small_byte(vec![0, 1, 2, 255]), small_byte(vec![0, 1, 2, 3, 4, 5, 15, 16, 17, 127, 128, 255]))
        .prop_map(|(x, y)| Ipv4Addr::new(10, 0, x, y))
}

/// fd00::/112, mostly a handful of subnets and hosts.
fn v6_addr() -> impl Strategy<Value = Ipv6Addr> {
    (small_byte(vec![0, 1, 2, 255]), small_byte(vec![0, 1, 2, 3, 4, 5, 15, 16, 17, 127, 128, 255]))
        .prop_map(|(x, y)| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(x) << 8 | u16::from(y)))
}

/// A CIDR of each family; a rule takes the one its protocol allows.
#[derive(Debug, Clone)]
struct GenCidr {
    v4: Ipv4Net,
    v6: Ipv6Net,
    prefer_v6: bool,
}

impl GenCidr {
    fn any(&self) -> IpNet {
        if self.prefer_v6 { IpNet::V6(self.v6) } else { IpNet::V4(self.v4) }
    }
    fn for_protocol(&self, kind: PKind) -> IpNet {
        match kind {
            PKind::Icmp => IpNet::V4(self.v4),
            PKind::Icmpv6 => IpNet::V6(self.v6),
            _ => self.any(),
        }
    }
}

fn cidr() -> impl Strategy<Value = GenCidr> {
    (v4_addr(), select(V4_LENS.to_vec()), v6_addr(), select(V6_LENS.to_vec()), any::<bool>()).prop_map(
        |(a4, l4, a6, l6, prefer_v6)| GenCidr {
            v4: Ipv4Net::new(a4, l4).unwrap().trunc(),
            v6: Ipv6Net::new(a6, l6).unwrap().trunc(),
            prefer_v6,
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PKind {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    All,
    Num(u8),
}

#[derive(Debug, Clone)]
struct GenPorts {
    mode: u8,
    a: u16,
    b: u16,
    ty: i16,
    code: i16,
}

#[derive(Debug, Clone)]
enum GenPeer {
    Cidr(GenCidr),
    /// Index into the groups; one past the end is `default`.
    Group(usize),
    /// Index into the prefix lists (a CIDR when there are none).
    List(usize, GenCidr),
}

#[derive(Debug, Clone)]
struct GenRule {
    kind: PKind,
    spelling: u8,
    ports: GenPorts,
    peers: Vec<GenPeer>,
}

#[derive(Debug, Clone)]
struct GenGroup {
    /// `None`: key absent.
    ingress: Option<Vec<GenRule>>,
    /// `None`: key absent (AWS's allow-all default).
    egress: Option<Vec<GenRule>>,
}

#[derive(Debug, Clone)]
struct GenInstance {
    local: bool,
    host: bool,
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    /// Indices into the groups; one past the end is `default`. Empty: member of `default`.
    groups: Vec<usize>,
    groups_key: bool,
    source_dest_check: Option<bool>,
    audit: bool,
}

#[derive(Debug, Clone)]
struct GenDoc {
    /// Group 0 is `default` (a redefinition) instead of `sg-0`.
    default_defined: bool,
    groups: Vec<GenGroup>,
    lists: Vec<Vec<GenCidr>>,
    instances: Vec<GenInstance>,
}

fn proto_kind() -> impl Strategy<Value = PKind> {
    prop_oneof![
        4 => Just(PKind::Tcp),
        3 => Just(PKind::Udp),
        2 => Just(PKind::Icmp),
        2 => Just(PKind::Icmpv6),
        2 => Just(PKind::All),
        1 => select(vec![47u8, 132, 50]).prop_map(PKind::Num),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![3 => select(PORTS.to_vec()), 1 => any::<u16>()]
}

fn ports() -> impl Strategy<Value = GenPorts> {
    (
        0u8..6,
        port(),
        port(),
        prop_oneof![3 => select(ICMP_TYPES.to_vec()), 1 => 0i16..=255],
        prop_oneof![3 => select(vec![-1i16, -1, 0, 1, 4, 255]), 1 => 0i16..=255],
    )
        .prop_map(|(mode, a, b, ty, code)| GenPorts { mode, a, b, ty, code })
}

fn peer() -> impl Strategy<Value = GenPeer> {
    prop_oneof![
        5 => cidr().prop_map(GenPeer::Cidr),
        2 => (0usize..6).prop_map(GenPeer::Group),
        2 => (0usize..4, cidr()).prop_map(|(i, c)| GenPeer::List(i, c)),
    ]
}

fn rule() -> impl Strategy<Value = GenRule> {
    (proto_kind(), 0u8..3, ports(), prop::collection::vec(peer(), 1..=3))
        .prop_map(|(kind, spelling, ports, peers)| GenRule { kind, spelling, ports, peers })
}

fn rules() -> impl Strategy<Value = Vec<GenRule>> {
    prop::collection::vec(rule(), 0..=6)
}

fn group() -> impl Strategy<Value = GenGroup> {
    (prop::option::weighted(0.85, rules()), prop::option::weighted(0.75, rules()))
        .prop_map(|(ingress, egress)| GenGroup { ingress, egress })
}

fn instance() -> impl Strategy<Value = GenInstance> {
    (
        any::<bool>(),
        prop::bool::weighted(0.25),
        prop_oneof![1 => Just(Vec::new()), 6 => prop::collection::vec(v4_addr(), 1..=2)],
        prop_oneof![1 => Just(Vec::new()), 6 => prop::collection::vec(v6_addr(), 1..=2)],
        prop::collection::vec(0usize..6, 0..=3),
        any::<bool>(),
        prop::option::of(prop::bool::weighted(0.7)),
        prop::bool::weighted(0.08),
    )
        .prop_map(|(local, host, v4, v6, groups, groups_key, source_dest_check, audit)| GenInstance {
            local,
            host,
            v4,
            v6,
            groups,
            groups_key,
            source_dest_check,
            audit,
        })
}

fn document() -> impl Strategy<Value = GenDoc> {
    (
        prop::bool::weighted(0.25),
        prop::collection::vec(group(), 1..=5),
        prop::collection::vec(prop::collection::vec(cidr(), 0..=4), 0..=3),
        prop::collection::vec(instance(), 1..=5),
    )
        .prop_map(|(default_defined, groups, lists, instances)| GenDoc {
            default_defined,
            groups,
            lists,
            instances,
        })
}

impl GenDoc {
    fn group_id(&self, index: usize) -> String {
        let i = index % (self.groups.len() + 1);
        if i == self.groups.len() || (i == 0 && self.default_defined) {
            "default".to_owned()
        } else {
            format!("sg-{i}")
        }
    }

    fn rule_json(&self, r: &GenRule) -> Value {
        let mut o = serde_json::Map::new();
        let protocol = match (r.kind, r.spelling) {
            (PKind::Tcp, 0) => json!("tcp"),
            (PKind::Tcp, 1) => json!(6),
            (PKind::Tcp, _) => json!("6"),
            (PKind::Udp, 0) => json!("udp"),
            (PKind::Udp, 1) => json!(17),
            (PKind::Udp, _) => json!("17"),
            (PKind::Icmp, 0) => json!("icmp"),
            (PKind::Icmp, 1) => json!(1),
            (PKind::Icmp, _) => json!("1"),
            (PKind::Icmpv6, 0) => json!("icmpv6"),
            (PKind::Icmpv6, 1) => json!(58),
            (PKind::Icmpv6, _) => json!("58"),
            (PKind::All, 0) => json!("all"),
            (PKind::All, 1) => json!(-1),
            (PKind::All, _) => json!("-1"),
            (PKind::Num(n), 0) => json!(n),
            (PKind::Num(n), _) => json!(n.to_string()),
        };
        o.insert("protocol".into(), protocol);
        let p = &r.ports;
        let (lo, hi) = (p.a.min(p.b), p.a.max(p.b));
        let ports: Option<(i64, i64)> = match r.kind {
            PKind::Tcp | PKind::Udp => match p.mode {
                0 => None,
                1 => Some((0, 65535)),
                2 => Some((p.a.into(), p.a.into())),
                3 => Some((lo.into(), hi.into())),
                4 => Some((0, p.a.into())),
                _ => Some((p.a.into(), 65535)),
            },
            PKind::Icmp | PKind::Icmpv6 => match (p.mode, p.ty) {
                (0, _) => None,
                (1, _) | (_, -1) => Some((-1, -1)),
                (2 | 3, ty) => Some((ty.into(), -1)),
                (_, ty) => Some((ty.into(), p.code.into())),
            },
            // Ignored for these protocols (SPEC §2), but accepted.
            PKind::All | PKind::Num(_) => match p.mode {
                0..=2 => None,
                3 => Some((-1, -1)),
                _ => Some((p.a.into(), p.b.into())),
            },
        };
        if let Some((from, to)) = ports {
            o.insert("from_port".into(), json!(from));
            o.insert("to_port".into(), json!(to));
        }
        let (mut cidrs, mut groups, mut lists) = (Vec::new(), Vec::new(), Vec::new());
        for peer in &r.peers {
            match peer {
                GenPeer::Cidr(c) => cidrs.push(json!(c.for_protocol(r.kind).to_string())),
                GenPeer::Group(i) => groups.push(json!(self.group_id(*i))),
                GenPeer::List(_, c) if self.lists.is_empty() => cidrs.push(json!(c.for_protocol(r.kind).to_string())),
                GenPeer::List(i, _) => lists.push(json!(format!("pl-{}", i % self.lists.len()))),
            }
        }
        for (key, list) in [("cidrs", cidrs), ("groups", groups), ("prefix_lists", lists)] {
            if !list.is_empty() {
                o.insert(key.into(), Value::Array(list));
            }
        }
        Value::Object(o)
    }

    fn json(&self) -> String {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let mut o = serde_json::Map::new();
                o.insert("id".into(), json!(self.group_id(i)));
                if let Some(rules) = &g.ingress {
                    o.insert("ingress".into(), rules.iter().map(|r| self.rule_json(r)).collect());
                }
                if let Some(rules) = &g.egress {
                    o.insert("egress".into(), rules.iter().map(|r| self.rule_json(r)).collect());
                }
                Value::Object(o)
            })
            .collect();
        let lists: Vec<Value> = self
            .lists
            .iter()
            .enumerate()
            .map(|(i, cidrs)| {
                let cidrs: Vec<String> = cidrs.iter().map(|c| c.any().to_string()).collect();
                json!({ "id": format!("pl-{i}"), "cidrs": cidrs })
            })
            .collect();
        let mut seen: Vec<IpAddr> = Vec::new();
        let instances: Vec<Value> = self
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| {
                let mut o = serde_json::Map::new();
                o.insert("id".into(), json!(format!("i-{i}")));
                // The first instance is always local, so there is something to judge.
                if inst.local || i == 0 {
                    o.insert("interface".into(), json!(format!("if{i}")));
                }
                if inst.host {
                    o.insert("role".into(), json!("host"));
                } else if i % 2 == 1 {
                    o.insert("role".into(), json!("workload"));
                }
                let mut addresses: Vec<IpAddr> = inst.v4.iter().map(|a| IpAddr::V4(*a)).collect();
                addresses.extend(inst.v6.iter().map(|a| IpAddr::V6(*a)));
                // An address belongs to one instance (validation).
                addresses.retain(|a| {
                    let new = !seen.contains(a);
                    seen.push(*a);
                    new
                });
                o.insert("addresses".into(), json!(addresses.iter().map(ToString::to_string).collect::<Vec<_>>()));
                let mut groups: Vec<String> = Vec::new();
                for g in &inst.groups {
                    let id = self.group_id(*g);
                    if !groups.contains(&id) {
                        groups.push(id);
                    }
                }
                if !groups.is_empty() || inst.groups_key {
                    o.insert("security_groups".into(), json!(groups));
                }
                // A local workload without addresses would drop everything with the check on:
                // an invalid document (SPEC §2), so such an instance goes without the check.
                let drops_everything = (inst.local || i == 0) && !inst.host && addresses.is_empty();
                if drops_everything {
                    o.insert("source_dest_check".into(), json!(false));
                } else if let Some(sdc) = inst.source_dest_check {
                    o.insert("source_dest_check".into(), json!(sdc));
                }
                if inst.audit {
                    o.insert("audit".into(), json!(true));
                }
                Value::Object(o)
            })
            .collect();
        serde_json::to_string_pretty(
            &json!({ "security_groups": groups, "prefix_lists": lists, "instances": instances }),
        )
        .unwrap()
    }
}

/// Where a packet address comes from.
#[derive(Debug, Clone)]
struct AddrSeed {
    /// 0: random in the universe; 1: at or just beside a CIDR of the document; 2: an instance
    /// address; 3: far outside the universe.
    kind: u8,
    idx: usize,
    offset: u8,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

/// Where a packet's port (ICMP `type << 8 | code`) comes from.
#[derive(Debug, Clone)]
struct PortSeed {
    /// 0: random; 1: at or just beside a rule boundary of the document; 2: a common port;
    /// 3: a common ICMP type with a small code.
    kind: u8,
    idx: usize,
    offset: u8,
    random: u16,
    icmp_type: u8,
    icmp_code: u8,
}

#[derive(Debug, Clone)]
struct PktSeed {
    v6: bool,
    proto: u8,
    instance: usize,
    transmit: bool,
    /// The instance's side of the packet is one of its own addresses (if it has one).
    local_own: bool,
    local: AddrSeed,
    peer: AddrSeed,
    port: PortSeed,
    /// The source port matters for replies of untracked flows (SPEC §3): it is the reverse
    /// packet's destination port.
    sport: PortSeed,
}

fn addr_seed() -> impl Strategy<Value = AddrSeed> {
    (
        prop_oneof![3 => Just(0u8), 5 => Just(1u8), 3 => Just(2u8), 1 => Just(3u8)],
        any::<usize>(),
        0u8..5,
        v4_addr(),
        v6_addr(),
    )
        .prop_map(|(kind, idx, offset, v4, v6)| AddrSeed { kind, idx, offset, v4, v6 })
}

fn port_seed() -> impl Strategy<Value = PortSeed> {
    (
        prop_oneof![2 => Just(0u8), 5 => Just(1u8), 2 => Just(2u8), 2 => Just(3u8)],
        any::<usize>(),
        0u8..4,
        any::<u16>(),
        select(vec![0u8, 1, 2, 3, 4, 8, 9, 11, 128, 129, 130, 135, 255]),
        select(vec![0u8, 0, 1, 3, 4, 255]),
    )
        .prop_map(|(kind, idx, offset, random, icmp_type, icmp_code)| PortSeed {
            kind,
            idx,
            offset,
            random,
            icmp_type,
            icmp_code,
        })
}

fn packet_seed() -> impl Strategy<Value = PktSeed> {
    (
        any::<bool>(),
        0u8..10,
        0usize..8,
        any::<bool>(),
        prop::bool::weighted(0.85),
        addr_seed(),
        addr_seed(),
        port_seed(),
        port_seed(),
    )
        .prop_map(|(v6, proto, instance, transmit, local_own, local, peer, port, sport)| PktSeed {
            v6,
            proto,
            instance,
            transmit,
            local_own,
            local,
            peer,
            port,
            sport,
        })
}

/// What the seeds are resolved against.
struct Universe {
    cidrs4: Vec<Ipv4Net>,
    cidrs6: Vec<Ipv6Net>,
    members4: Vec<Ipv4Addr>,
    members6: Vec<Ipv6Addr>,
    /// Inclusive ranges of the rules' port match (TCP/UDP ports, ICMP type/code).
    bounds: Vec<(u16, u16)>,
}

impl Universe {
    fn of(doc: &Document) -> Universe {
        let mut u = Universe {
            cidrs4: Vec::new(),
            cidrs6: Vec::new(),
            members4: Vec::new(),
            members6: Vec::new(),
            bounds: Vec::new(),
        };
        let add = |net: &IpNet, u: &mut Universe| match net {
            IpNet::V4(n) => u.cidrs4.push(*n),
            IpNet::V6(n) => u.cidrs6.push(*n),
        };
        for g in &doc.security_groups {
            for r in g.ingress.iter().chain(&g.egress) {
                for p in &r.peers {
                    if let Peer::Cidr(net) = p {
                        add(net, &mut u);
                    }
                }
                match r.ports {
                    Ports::All => {}
                    Ports::Range(lo, hi) => u.bounds.push((lo, hi)),
                    Ports::Icmp { ty: None, .. } => {}
                    Ports::Icmp { ty: Some(t), code: None } => {
                        u.bounds.push((u16::from(t) << 8, u16::from(t) << 8 | 0xff))
                    }
                    Ports::Icmp { ty: Some(t), code: Some(c) } => {
                        let v = u16::from(t) << 8 | u16::from(c);
                        u.bounds.push((v, v));
                    }
                }
            }
        }
        for l in &doc.prefix_lists {
            for net in &l.cidrs {
                add(net, &mut u);
            }
        }
        for i in &doc.instances {
            for a in &i.addresses {
                match a {
                    IpAddr::V4(a) => u.members4.push(*a),
                    IpAddr::V6(a) => u.members6.push(*a),
                }
            }
        }
        u
    }

    fn addr(&self, s: &AddrSeed, v6: bool) -> IpAddr {
        if v6 {
            let pick = match s.kind {
                1 if !self.cidrs6.is_empty() => {
                    let n = self.cidrs6[s.idx % self.cidrs6.len()];
                    let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
                    Some(match s.offset {
                        0 => first,
                        1 => last,
                        2 => first.wrapping_sub(1),
                        3 => last.wrapping_add(1),
                        _ => first.wrapping_add(1),
                    })
                }
                2 if !self.members6.is_empty() => Some(u128::from(self.members6[s.idx % self.members6.len()])),
                3 => Some(
                    [
                        u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                        0,
                        u128::MAX,
                        // A node service address, a link-local and the DHCPv6 servers' group.
                        u128::from(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
                        u128::from(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
                        u128::from(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2)),
                    ][s.idx % 6],
                ),
                _ => None,
            };
            IpAddr::V6(pick.map_or(s.v6, Ipv6Addr::from))
        } else {
            let pick = match s.kind {
                1 if !self.cidrs4.is_empty() => {
                    let n = self.cidrs4[s.idx % self.cidrs4.len()];
                    let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
                    Some(match s.offset {
                        0 => first,
                        1 => last,
                        2 => first.wrapping_sub(1),
                        3 => last.wrapping_add(1),
                        _ => first.wrapping_add(1),
                    })
                }
                2 if !self.members4.is_empty() => Some(u32::from(self.members4[s.idx % self.members4.len()])),
                3 => Some(
                    [
                        u32::from(Ipv4Addr::new(192, 0, 2, 1)),
                        0,
                        u32::MAX,
                        // Node service addresses.
                        u32::from(Ipv4Addr::new(169, 254, 169, 254)),
                        u32::from(Ipv4Addr::new(169, 254, 169, 253)),
                    ][s.idx % 5],
                ),
                _ => None,
            };
            IpAddr::V4(pick.map_or(s.v4, Ipv4Addr::from))
        }
    }

    fn port(&self, s: &PortSeed) -> u16 {
        match s.kind {
            1 if !self.bounds.is_empty() => {
                let (lo, hi) = self.bounds[s.idx % self.bounds.len()];
                match s.offset {
                    0 => lo.wrapping_sub(1),
                    1 => lo,
                    2 => hi,
                    _ => hi.wrapping_add(1),
                }
            }
            2 => PORTS[s.idx % PORTS.len()],
            3 => u16::from(s.icmp_type) << 8 | u16::from(s.icmp_code),
            _ => s.random,
        }
    }
}

/// Resolves a seed into (local instance index, hook, packet).
fn resolve(doc: &Document, u: &Universe, s: &PktSeed) -> (usize, Hook, NPkt) {
    let local: Vec<&Instance> = doc.local_instances().collect();
    let index = s.instance % local.len();
    let inst = local[index];
    let hook = if s.transmit { Hook::Transmit } else { Hook::Receive };
    let family_own: Vec<IpAddr> = inst.addresses.iter().copied().filter(|a| a.is_ipv6() == s.v6).collect();
    let local_addr = if s.local_own && !family_own.is_empty() {
        family_own[s.local.idx % family_own.len()]
    } else {
        u.addr(&s.local, s.v6)
    };
    let peer_addr = u.addr(&s.peer, s.v6);
    let (icmp, other_icmp) = if s.v6 { (58, 1) } else { (1, 58) };
    let proto = [6, 6, 6, 17, 17, icmp, icmp, other_icmp, 47, 132][usize::from(s.proto % 10)];
    let ported = matches!(proto, 6 | 17) || proto == icmp;
    let port = if ported { u.port(&s.port) } else { 0 };
    let (src, dst) = match naive_direction(inst.role, hook) {
        Direction::Ingress => (peer_addr, local_addr),
        Direction::Egress => (local_addr, peer_addr),
    };
    (index, hook, NPkt { proto, src, dst, port, sport: u.port(&s.sport) })
}

fn check_document(gen_doc: &GenDoc, seeds: &[PktSeed]) -> Result<(), String> {
    let json = gen_doc.json();
    let s = setup(&json)?;
    let u = Universe::of(&s.doc);
    for seed in seeds {
        let (index, hook, p) = resolve(&s.doc, &u, seed);
        check_packet(&s, index, hook, &p).map_err(|e| format!("{e}\n  document JSON:\n{json}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        // No regression files written next to the test; the deterministic tests below pin
        // the cases that matter.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compiled_policy_agrees_with_the_naive_evaluator(
        doc in document(),
        seeds in prop::collection::vec(packet_seed(), 25),
    ) {
        if let Err(msg) = check_document(&doc, &seeds) {
            return Err(TestCaseError::fail(msg));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// export-aws, then import-aws: the same verdicts as the native document.
// ---------------------------------------------------------------------------------------------

/// Exports the document to AWS's shape (groups + instances document), imports that back, and
/// judges every seed packet as a new flow under both: reason and pass must be the same.
fn check_aws_round_trip(gen_doc: &GenDoc, seeds: &[PktSeed]) -> Result<(), String> {
    let json = gen_doc.json();
    let native = setup(&json)?;
    let (aws, instances) = sg_agent::policy::export::to_aws(&native.doc);
    let doc = policy::load_all(&aws, &[instances.as_str()])
        .map_err(|e| format!("import of the export fails: {e}\n{aws}\n{instances}\n  native:\n{json}"))?;
    let compiled = compile(&doc).map_err(|e| format!("compile of the import fails: {e}"))?;
    let ids = |c: &Compiled| c.ifaces.iter().map(|i| i.instance.clone()).collect::<Vec<_>>();
    if ids(&compiled) != ids(&native.compiled) {
        return Err(format!("the import has other local instances\n{instances}\n  native:\n{json}"));
    }
    let imported = Emulator::new(&compiled, |i, _| ifindex(i));
    let u = Universe::of(&native.doc);
    for seed in seeds {
        let (index, hook, p) = resolve(&native.doc, &u, seed);
        native.emulator.conntrack.borrow_mut().clear();
        imported.conntrack.borrow_mut().clear();
        let pkt = packet(&p);
        let want = judge(&native.emulator, ifindex(index), hook, &pkt, 1_000_000_000);
        let got = judge(&imported, ifindex(index), hook, &pkt, 1_000_000_000);
        if (want.reason, want.pass) != (got.reason, got.pass) {
            return Err(format!(
                "verdicts differ after export-aws + import-aws: native {want:?}, imported {got:?}\n  packet {p:?} on \
                 local instance {index} ({hook:?})\n  native:\n{json}\n  AWS:\n{aws}\n  instances:\n{instances}"
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn export_aws_then_import_aws_gives_the_same_verdicts(
        doc in document(),
        seeds in prop::collection::vec(packet_seed(), 1..=40),
    ) {
        if let Err(msg) = check_aws_round_trip(&doc, &seeds) {
            return Err(TestCaseError::fail(msg));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Named cases.
// ---------------------------------------------------------------------------------------------

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(src: &str, dst: &str, port: u16) -> NPkt {
    NPkt { proto: 6, src: ip(src), dst: ip(dst), port, sport: 40000 }
}

fn udp(src: &str, dst: &str, port: u16) -> NPkt {
    NPkt { proto: 17, src: ip(src), dst: ip(dst), port, sport: 40000 }
}

fn icmp(src: &str, dst: &str, ty: u8, code: u8) -> NPkt {
    let proto = if ip(src).is_ipv4() { 1 } else { 58 };
    NPkt { proto, src: ip(src), dst: ip(dst), port: u16::from(ty) << 8 | u16::from(code), sport: 7 }
}

/// `p` from source port `sport`.
fn from_port(p: NPkt, sport: u16) -> NPkt {
    NPkt { sport, ..p }
}

fn proto(n: u8, src: &str, dst: &str) -> NPkt {
    NPkt { proto: n, src: ip(src), dst: ip(dst), port: 0, sport: 0 }
}

/// Judges each packet on the named local instance at `hook`; checks compiled == naive ==
/// `want` (so a regression names the case, and the naive evaluator is itself pinned).
fn expect(json: &str, instance: &str, hook: Hook, cases: &[(NPkt, Reason)]) {
    let s = setup(json).unwrap_or_else(|e| panic!("{e}"));
    let index = s.doc.local_instances().position(|i| i.id == instance).expect("local instance");
    for (p, want) in cases {
        let got = check_packet(&s, index, hook, p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.reason, *want, "{p:?} on {instance} at {hook:?}: got {got:?}, want {want:?}");
    }
}

/// The rule `judge` reports for `p`, as text.
fn reported_rule(json: &str, instance: &str, hook: Hook, p: &NPkt) -> String {
    let s = setup(json).unwrap();
    let index = s.doc.local_instances().position(|i| i.id == instance).unwrap();
    let got = check_packet(&s, index, hook, p).unwrap_or_else(|e| panic!("{e}"));
    s.compiled.rules[got.rule as usize].to_string()
}

const IN: Hook = Hook::Transmit; // workload: the interface transmits what the instance receives
const OUT: Hook = Hook::Receive;
const ME: &str = "10.0.9.9";
const ME6: &str = "fd00::9:9";

fn one_group(ingress: &str, egress: Option<&str>) -> String {
    let egress = egress.map(|e| format!(r#", "egress": {e}"#)).unwrap_or_default();
    format!(
        r#"{{ "security_groups": [{{ "id": "sg-a", "ingress": {ingress}{egress} }}],
             "instances": [{{ "id": "me", "interface": "veth0", "addresses": ["{ME}", "{ME6}"],
                             "security_groups": ["sg-a"] }}] }}"#
    )
}

#[test]
fn nested_cidrs_with_different_ports() {
    let doc = one_group(
        r#"[
        { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["10.0.0.0/16"] },
        { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["10.0.1.0/24"] },
        { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.1.5/32"] },
        { "protocol": "tcp", "from_port": 8000, "to_port": 8999, "cidrs": ["10.0.1.4/30"] },
        { "protocol": "udp", "from_port": 53, "to_port": 53, "cidrs": ["0.0.0.0/0"] }
    ]"#,
        Some("[]"),
    );
    use Reason::*;
    expect(
        &doc,
        "me",
        IN,
        &[
            (tcp("10.0.1.5", ME, 22), AllowedByRule),
            (tcp("10.0.1.5", ME, 80), AllowedByRule),
            (tcp("10.0.1.5", ME, 443), AllowedByRule),
            (tcp("10.0.1.5", ME, 8000), AllowedByRule),
            (tcp("10.0.1.5", ME, 8999), AllowedByRule),
            (tcp("10.0.1.5", ME, 7999), DroppedNoRule),
            (tcp("10.0.1.5", ME, 9000), DroppedNoRule),
            (tcp("10.0.1.5", ME, 53), DroppedNoRule),
            (udp("10.0.1.5", ME, 53), AllowedByRule),
            (tcp("10.0.1.6", ME, 22), DroppedNoRule),
            (tcp("10.0.1.7", ME, 8080), AllowedByRule),
            (tcp("10.0.1.8", ME, 8080), DroppedNoRule),
            (tcp("10.0.1.6", ME, 443), AllowedByRule),
            (tcp("10.0.1.6", ME, 80), AllowedByRule),
            (tcp("10.0.2.1", ME, 443), DroppedNoRule),
            (tcp("10.0.2.1", ME, 80), AllowedByRule),
            (tcp("10.0.255.255", ME, 80), AllowedByRule),
            (tcp("10.1.0.0", ME, 80), DroppedNoRule),
            (tcp("9.255.255.255", ME, 80), DroppedNoRule),
            (udp("192.0.2.1", ME, 53), AllowedByRule),
            (udp("192.0.2.1", ME, 54), DroppedNoRule),
            (tcp("fd00::1", ME6, 80), DroppedNoRule),
        ],
    );
}

#[test]
fn all_protocols_rule_beside_a_tcp_rule() {
    let doc = one_group(
        r#"[
        { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["10.0.0.0/16"] },
        { "protocol": "all", "cidrs": ["10.0.2.0/24"] },
        { "protocol": 47, "from_port": 1, "to_port": 2, "cidrs": ["10.0.3.0/24"] }
    ]"#,
        Some("[]"),
    );
    use Reason::*;
    expect(
        &doc,
        "me",
        IN,
        &[
            (tcp("10.0.2.3", ME, 80), AllowedByRule),
            (tcp("10.0.2.3", ME, 81), AllowedByRule),
            (udp("10.0.2.3", ME, 53), AllowedByRule),
            (proto(47, "10.0.2.3", ME), AllowedByRule),
            (proto(132, "10.0.2.3", ME), AllowedByRule),
            (icmp("10.0.2.3", ME, 8, 0), AllowedByRule),
            (tcp("10.0.3.1", ME, 80), AllowedByRule),
            (tcp("10.0.3.1", ME, 81), DroppedNoRule),
            (udp("10.0.3.1", ME, 80), DroppedNoRule),
            (proto(47, "10.0.3.1", ME), AllowedByRule),
            (proto(132, "10.0.3.1", ME), DroppedNoRule),
            (proto(47, "10.0.4.1", ME), DroppedNoRule),
        ],
    );
    // The first rule in document order is reported.
    assert_eq!(reported_rule(&doc, "me", IN, &tcp("10.0.2.3", ME, 80)), "sg-a ingress[0]: tcp 80 from 10.0.0.0/16");
    assert_eq!(reported_rule(&doc, "me", IN, &tcp("10.0.2.3", ME, 81)), "sg-a ingress[1]: all all from 10.0.2.0/24");
}

#[test]
fn icmp_type_only_and_type_code_rules() {
    let doc = one_group(
        r#"[
        { "protocol": "icmp", "from_port": 8, "to_port": -1, "cidrs": ["10.0.0.0/16"] },
        { "protocol": "icmp", "from_port": 3, "to_port": 4, "cidrs": ["10.0.0.0/16"] },
        { "protocol": "icmpv6", "from_port": 128, "to_port": -1, "cidrs": ["fd00::/112"] },
        { "protocol": "icmpv6", "from_port": -1, "to_port": -1, "cidrs": ["fd00::1:0/112"] }
    ]"#,
        Some("[]"),
    );
    use Reason::*;
    expect(
        &doc,
        "me",
        IN,
        &[
            (icmp("10.0.0.1", ME, 8, 0), AllowedByRule),
            (icmp("10.0.0.1", ME, 8, 255), AllowedByRule),
            (icmp("10.0.0.1", ME, 7, 255), DroppedNoRule),
            (icmp("10.0.0.1", ME, 9, 0), DroppedNoRule),
            (icmp("10.0.0.1", ME, 3, 4), AllowedByRule),
            (icmp("10.0.0.1", ME, 3, 3), DroppedNoRule),
            (icmp("10.0.0.1", ME, 3, 5), DroppedNoRule),
            (icmp("10.0.0.1", ME, 0, 0), DroppedNoRule),
            (icmp("10.1.0.1", ME, 8, 0), DroppedNoRule),
            (icmp("fd00::1", ME6, 128, 0), AllowedByRule),
            (icmp("fd00::1", ME6, 129, 0), DroppedNoRule),
            (icmp("fd00::1:1", ME6, 129, 0), AllowedByRule),
            (icmp("fd00::1:1", ME6, 1, 4), AllowedByRule),
            // icmp is IPv4 only: protocol 1 over IPv6, 58 over IPv4 match nothing here.
            (proto(1, "fd00::1", ME6), DroppedNoRule),
            (proto(58, "10.0.0.1", ME), DroppedNoRule),
            (tcp("10.0.0.1", ME, 8 << 8), DroppedNoRule),
        ],
    );
}

#[test]
fn group_reference_resolves_to_every_member() {
    let doc = r#"{
      "security_groups": [
        { "id": "sg-db", "ingress": [
            { "protocol": "tcp", "from_port": 5432, "to_port": 5432, "groups": ["sg-app"] },
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "groups": ["sg-db"] } ] },
        { "id": "sg-app" },
        { "id": "sg-x" }
      ],
      "instances": [
        { "id": "db", "interface": "veth-db", "addresses": ["10.0.9.9", "fd00::9:9"], "security_groups": ["sg-db"] },
        { "id": "app-1", "interface": "veth-app1", "addresses": ["10.0.1.1"], "security_groups": ["sg-app"] },
        { "id": "app-2", "addresses": ["10.0.1.2", "fd00::1:2"], "security_groups": ["sg-app", "sg-x"] },
        { "id": "app-3", "addresses": ["10.0.200.3", "10.0.1.3"], "security_groups": ["sg-x", "sg-app"] },
        { "id": "app-4", "addresses": ["fd00::1:4"], "security_groups": ["sg-app"] },
        { "id": "db-2", "addresses": ["10.0.9.10"], "security_groups": ["sg-db"] },
        { "id": "other", "addresses": ["10.0.1.5", "fd00::1:5"], "security_groups": ["sg-x"] }
      ]
    }"#;
    use Reason::*;
    expect(
        doc,
        "db",
        IN,
        &[
            (tcp("10.0.1.1", ME, 5432), AllowedByRule),
            (tcp("10.0.1.2", ME, 5432), AllowedByRule),
            (tcp("10.0.1.3", ME, 5432), AllowedByRule),
            (tcp("10.0.200.3", ME, 5432), AllowedByRule),
            (tcp("fd00::1:2", ME6, 5432), AllowedByRule),
            (tcp("fd00::1:4", ME6, 5432), AllowedByRule),
            (tcp("10.0.1.5", ME, 5432), DroppedNoRule),
            (tcp("fd00::1:5", ME6, 5432), DroppedNoRule),
            (tcp("10.0.1.4", ME, 5432), DroppedNoRule),
            (tcp("10.0.1.1", ME, 5433), DroppedNoRule),
            (tcp("10.0.1.1", ME, 22), DroppedNoRule),
            // Self-reference: members of sg-db, including the instance itself.
            (tcp("10.0.9.10", ME, 22), AllowedByRule),
            (tcp(ME, ME, 22), AllowedByRule),
            (tcp("10.0.9.10", ME, 5432), DroppedNoRule),
        ],
    );
}

#[test]
fn untracked_only_for_everyone_with_all_responses_allowed() {
    use Reason::*;
    let ingress = r#"[
        { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0", "::/0"] },
        { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/8"] },
        { "protocol": "udp", "from_port": 53, "to_port": 53, "prefix_lists": ["pl-all"] },
        { "protocol": "icmp", "from_port": -1, "to_port": -1, "cidrs": ["0.0.0.0/0"] }
    ]"#;
    let with = |egress: Option<&str>| {
        one_group(ingress, egress).replacen(
            r#""instances""#,
            r#""prefix_lists": [{ "id": "pl-all", "cidrs": ["0.0.0.0/0", "fd00::/64"] }], "instances""#,
            1,
        )
    };
    // Default egress (all to 0.0.0.0/0 and ::/0): responses all allowed.
    expect(
        &with(None),
        "me",
        IN,
        &[
            (tcp("192.0.2.1", ME, 443), AllowedUntracked),
            (tcp("2001:db8::1", ME6, 443), AllowedUntracked),
            (tcp("10.0.0.1", ME, 22), AllowedByRule),
            (udp("192.0.2.1", ME, 53), AllowedUntracked),
            // The prefix list's IPv6 member is not ::/0: tracked.
            (udp("fd00::1", ME6, 53), AllowedByRule),
            (icmp("192.0.2.1", ME, 8, 0), AllowedByRule),
        ],
    );
    // Replies of those untracked inbound flows make no entry either (SPEC §3): outbound
    // packets are allowed by the all-outbound rule, untracked iff their reverse is.
    expect(
        &with(None),
        "me",
        OUT,
        &[
            (from_port(tcp(ME, "192.0.2.1", 40000), 443), AllowedUntracked),
            (from_port(tcp(ME6, "2001:db8::1", 40000), 443), AllowedUntracked),
            (from_port(tcp(ME, "192.0.2.1", 40000), 444), AllowedByRule),
            (from_port(tcp(ME, "10.0.0.1", 40000), 22), AllowedByRule),
            (from_port(udp(ME, "192.0.2.1", 40000), 53), AllowedUntracked),
            (from_port(udp(ME6, "fd00::1", 40000), 53), AllowedByRule),
            (from_port(udp(ME, "192.0.2.1", 40000), 443), AllowedByRule),
        ],
    );
    // Responses allowed for IPv4 TCP only.
    expect(
        &with(Some(r#"[{ "protocol": "tcp", "from_port": 0, "to_port": 65535, "cidrs": ["0.0.0.0/0"] }]"#)),
        "me",
        IN,
        &[
            (tcp("192.0.2.1", ME, 443), AllowedUntracked),
            (tcp("2001:db8::1", ME6, 443), AllowedByRule),
            (udp("192.0.2.1", ME, 53), AllowedByRule),
            (udp("fd00::1", ME6, 53), AllowedByRule),
        ],
    );
    // Not every port: tracked.
    expect(
        &with(Some(r#"[{ "protocol": "tcp", "from_port": 1, "to_port": 65535, "cidrs": ["0.0.0.0/0", "::/0"] }]"#)),
        "me",
        IN,
        &[(tcp("192.0.2.1", ME, 443), AllowedByRule), (tcp("2001:db8::1", ME6, 443), AllowedByRule)],
    );
    // Every port, but not to everyone: tracked.
    expect(
        &with(Some(r#"[{ "protocol": "all", "cidrs": ["10.0.0.0/8", "fd00::/8"] }]"#)),
        "me",
        IN,
        &[(tcp("192.0.2.1", ME, 443), AllowedByRule), (tcp("2001:db8::1", ME6, 443), AllowedByRule)],
    );
    // UDP responses allowed, TCP not: only UDP is untracked.
    expect(
        &with(Some(r#"[{ "protocol": "udp", "prefix_lists": ["pl-all"] }]"#)),
        "me",
        IN,
        &[(tcp("192.0.2.1", ME, 443), AllowedByRule), (udp("192.0.2.1", ME, 53), AllowedUntracked)],
    );
    // The same, outbound: an egress rule to everyone with all inbound responses allowed.
    let out = one_group(
        r#"[{ "protocol": "all", "cidrs": ["0.0.0.0/0"] }]"#,
        Some(r#"[{ "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0", "::/0"] }]"#),
    );
    expect(
        &out,
        "me",
        OUT,
        &[
            (tcp(ME, "192.0.2.1", 80), AllowedUntracked),
            (tcp(ME6, "2001:db8::1", 80), AllowedByRule),
            (tcp(ME, "192.0.2.1", 81), DroppedNoRule),
        ],
    );
}

/// One flat rule (a prefix-list peer) with prefixes of both families: whether a flow is
/// untracked depends on the packet's family, not on which of the rule's prefixes came first.
#[test]
fn untracked_flag_follows_the_packet_family_within_one_prefix_list() {
    use Reason::*;
    let doc = |list: &str, egress: &str| {
        format!(
            r#"{{ "security_groups": [{{ "id": "sg-a",
                 "ingress": [{{ "protocol": "tcp", "from_port": 443, "to_port": 443, "prefix_lists": ["pl"] }}],
                 "egress": {egress} }}],
               "prefix_lists": [{{ "id": "pl", "cidrs": {list} }}],
               "instances": [{{ "id": "me", "interface": "veth0", "addresses": ["{ME}", "{ME6}"],
                               "security_groups": ["sg-a"] }}] }}"#
        )
    };
    let all_out = r#"[{ "protocol": "all", "cidrs": ["0.0.0.0/0", "::/0"] }]"#;
    let v4_out = r#"[{ "protocol": "all", "cidrs": ["0.0.0.0/0"] }]"#;
    expect(
        &doc(r#"["10.0.0.0/8", "::/0"]"#, all_out),
        "me",
        IN,
        &[(tcp("10.0.0.1", ME, 443), AllowedByRule), (tcp("fd00::1", ME6, 443), AllowedUntracked)],
    );
    expect(
        &doc(r#"["0.0.0.0/0", "fd00::/64"]"#, v4_out),
        "me",
        IN,
        &[(tcp("10.0.0.1", ME, 443), AllowedUntracked), (tcp("fd00::1", ME6, 443), AllowedByRule)],
    );
    expect(
        &doc(r#"["0.0.0.0/0", "::/0"]"#, v4_out),
        "me",
        IN,
        &[(tcp("10.0.0.1", ME, 443), AllowedUntracked), (tcp("fd00::1", ME6, 443), AllowedByRule)],
    );
}

#[test]
fn source_dest_check_and_host_role() {
    use Reason::*;
    let doc = format!(
        r#"{{ "security_groups": [{{ "id": "sg-a",
                                  "ingress": [{{ "protocol": "all", "cidrs": ["0.0.0.0/0", "::/0"] }}] }}],
             "instances": [
               {{ "id": "strict", "interface": "veth0", "addresses": ["{ME}"], "security_groups": ["sg-a"] }},
               {{ "id": "router", "interface": "veth1", "addresses": ["10.0.8.8"], "security_groups": ["sg-a"],
                  "source_dest_check": false }},
               {{ "id": "node", "interface": "eth0", "role": "host", "addresses": ["10.0.7.7"],
                  "security_groups": ["sg-a"], "source_dest_check": true }} ] }}"#
    );
    expect(
        &doc,
        "strict",
        IN,
        &[
            (tcp("10.0.0.1", ME, 80), AllowedUntracked),
            (tcp("10.0.0.1", "10.0.0.2", 80), DroppedSourceDestCheck),
            (tcp("fd00::1", ME6, 80), DroppedSourceDestCheck),
        ],
    );
    expect(
        &doc,
        "strict",
        OUT,
        &[(tcp(ME, "10.0.0.1", 80), AllowedUntracked), (tcp("10.0.0.5", "10.0.0.1", 80), DroppedSourceDestCheck)],
    );
    expect(
        &doc,
        "router",
        IN,
        &[(tcp("10.0.0.1", "10.0.0.2", 80), AllowedUntracked), (tcp("fd00::1", "fd00::2", 80), AllowedUntracked)],
    );
    // Host role: received = inbound; only traffic to its own addresses is judged.
    expect(
        &doc,
        "node",
        Hook::Receive,
        &[(tcp("10.0.0.1", "10.0.7.7", 80), AllowedUntracked), (tcp("10.0.0.1", "10.0.0.2", 80), PassedNotJudged)],
    );
    expect(
        &doc,
        "node",
        Hook::Transmit,
        &[(tcp("10.0.7.7", "10.0.0.1", 80), AllowedUntracked), (tcp("10.0.0.2", "10.0.0.1", 80), PassedNotJudged)],
    );
}

#[test]
fn default_group_when_an_instance_lists_none() {
    use Reason::*;
    let doc = format!(
        r#"{{ "security_groups": [{{ "id": "sg-a", "egress": [] }}],
             "instances": [
               {{ "id": "me", "interface": "veth0", "addresses": ["{ME}", "{ME6}"] }},
               {{ "id": "peer", "addresses": ["10.0.1.1"], "security_groups": [] }},
               {{ "id": "stranger", "addresses": ["10.0.1.2"], "security_groups": ["sg-a"] }} ] }}"#
    );
    expect(
        &doc,
        "me",
        IN,
        &[
            (tcp("10.0.1.1", ME, 80), AllowedByRule),
            (proto(47, "10.0.1.1", ME), AllowedByRule),
            (tcp(ME, ME, 80), AllowedByRule),
            (tcp("10.0.1.2", ME, 80), DroppedNoRule),
        ],
    );
    expect(&doc, "me", OUT, &[(tcp(ME, "192.0.2.1", 80), AllowedByRule), (udp(ME6, "2001:db8::1", 53), AllowedByRule)]);
}
