//! Where a rule becomes map entries: [`Document`] → [`Compiled`].
//!
//! The kernel judges a new flow with two LPM lookups whatever the number of rules (see
//! `sg_common::maps::PeerKey` and `RuleKey`), so the work happens here:
//!
//! 1. **Rule tables.** Instances with the same set of groups share tables: one for inbound
//!    rules, one for outbound. A rule with several peers is several flat rules, each with an id
//!    (`RuleRef`) that the datapath reports for counters and `explain`.
//! 2. **Peers.** Every peer (CIDR, prefix-list CIDR, group member address) is a prefix. An
//!    address's longest matching prefix in a table identifies all the table's prefixes that
//!    contain the address (prefixes nest or are disjoint). The rules reachable from a prefix are
//!    the rules of it and its ancestors; prefixes that reach the same rule set share one *peer
//!    class*, so a thousand group members cost one class, not a thousand.
//! 3. **Ports.** Per (class, protocol) the rules' port ranges (ICMP: `type << 8 | code` ranges)
//!    are cut into segments with a constant verdict (first rule in document order, tracked or
//!    not), adjacent equal segments merged, and each segment written as at most 30 prefixes.
//!    `all`-protocol rules also get a protocol-wildcard entry.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ipnet::IpNet;
use sg_common::{
    maps::{
        IFACE_AUDIT, IFACE_EGRESS_UNTRACKED, IFACE_INGRESS_UNTRACKED, IFACE_NODE_SERVICES, IFACE_SOURCE_DEST_CHECK,
        IfaceConfig, IfaceTimeouts, OwnAddrKey, PeerKey, RULE_KEY_FIXED_BITS, RULE_UNTRACKED, RuleKey, RuleMatch,
        ServiceKey, capacity, peer_key_bits, rule_key_bits,
    },
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    ports::range_prefixes,
};

use crate::policy::{Direction, Document, Instance, Invalid, Peer, Ports, Protocol, Role};

/// One flat rule: a (group, direction, rule, peer) of the document. Its index in
/// [`Compiled::rules`] is the id the datapath reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub group: String,
    pub direction: Direction,
    /// Index of the rule in the group's list for that direction.
    pub rule_index: usize,
    pub protocol: Protocol,
    pub ports: Ports,
    pub peer: Peer,
}

impl RuleRef {
    /// The rule's hit-counter key: FNV-1a of what the rule says (not of its position), so a
    /// rule that stays the same keeps its counter across documents and restarts.
    pub fn counter_id(&self) -> u64 {
        use std::fmt::Write as _;
        // The same bytes as `format!("{group}\0{direction}\0{protocol}\0{ports}\0{peer}")`,
        // hashed as they are formatted (no allocation: this runs for every rule of a document).
        let mut h = Fnv1a::default();
        let _ =
            write!(h, "{}\0{}\0{}\0{}\0{}", self.group, self.direction.name(), self.protocol, self.ports, self.peer);
        // 0 means "no rule" to the datapath.
        h.0.max(1)
    }
}

/// FNV-1a: a fixed, seedless hash, so that a rule's counter key is the same in every agent
/// process (std's default hasher is randomly seeded).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl std::fmt::Write for Fnv1a {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        for b in text.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}[{}]: {} {} {} {}",
            self.group,
            self.direction.name(),
            self.rule_index,
            self.protocol,
            self.ports,
            if self.direction == Direction::Ingress { "from" } else { "to" },
            self.peer
        )
    }
}

/// A local instance's interface and what the datapath needs about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledIface {
    pub interface: String,
    pub instance: String,
    /// Without `slot`/`ifindex`: those are filled in when written.
    pub config: IfaceConfig,
}

/// A peer-prefix entry of `SG_PEERS` (slot 0; the writer sets the slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerEntry {
    pub key: PeerKey,
    pub prefix_len: u32,
    pub class: u32,
}

/// A rule entry of `SG_RULES` (slot 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleEntry {
    pub key: RuleKey,
    pub prefix_len: u32,
    pub value: RuleMatch,
}

/// Everything a document becomes in the kernel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compiled {
    pub rules: Vec<RuleRef>,
    pub ifaces: Vec<CompiledIface>,
    pub own_addrs: Vec<OwnAddrKey>,
    pub peers: Vec<PeerEntry>,
    pub rule_entries: Vec<RuleEntry>,
    /// The node's service addresses (slot 0), in the slot so that a change swaps with the rest.
    pub services: Vec<ServiceKey>,
    /// Number of distinct group sets (each has an ingress and an egress table).
    pub group_sets: usize,
}

/// Reads, validates and compiles a document: everything an apply does before touching the kernel.
pub fn prepare(document: &str, instances: Option<&str>) -> Result<(Document, Compiled), Invalid> {
    prepare_all(document, instances.as_slice())
}

/// [`prepare`] with any number of instances documents.
pub fn prepare_all<S: AsRef<str>>(document: &str, instances: &[S]) -> Result<(Document, Compiled), Invalid> {
    prepare_for_node(document, instances, None)
}

/// [`prepare_all`] for the agent of node `node`: instances of other nodes are remote members
/// ([`Document::for_node`]). Without a node, every instance with an interface is local.
pub fn prepare_for_node<S: AsRef<str>>(
    document: &str,
    instances: &[S],
    node: Option<&str>,
) -> Result<(Document, Compiled), Invalid> {
    let mut doc = crate::policy::load_all(document, instances)?;
    if let Some(node) = node {
        doc = doc.for_node(node);
    }
    let compiled = compile(&doc)?;
    Ok((doc, compiled))
}

/// The size of a compiled policy, as `apply`, `check` and `status` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyCounts {
    pub security_groups: usize,
    pub rules: usize,
    pub instances: usize,
    /// Instances with an interface on this node.
    pub local_instances: usize,
    pub peer_entries: usize,
    pub rule_entries: usize,
}

impl PolicyCounts {
    pub fn of(doc: &Document, compiled: &Compiled) -> PolicyCounts {
        PolicyCounts {
            security_groups: doc.security_groups.len(),
            rules: compiled.rules.len(),
            instances: doc.instances.len(),
            local_instances: compiled.ifaces.len(),
            peer_entries: compiled.peers.len(),
            rule_entries: compiled.rule_entries.len(),
        }
    }
}

impl std::fmt::Display for PolicyCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} groups, {} rules, {} instances ({} local); {} peer + {} rule map entries",
            self.security_groups,
            self.rules,
            self.instances,
            self.local_instances,
            self.peer_entries,
            self.rule_entries
        )
    }
}

/// Compiles a validated document. Fails only if the result does not fit the maps.
pub fn compile(doc: &Document) -> Result<Compiled, Invalid> {
    let services = doc
        .node_services
        .iter()
        .map(|s| {
            let (family, addr) = sg_common::maps::ip_to_addr(s.addr);
            let (proto, port) = s.port.unwrap_or((0, 0));
            ServiceKey { slot: 0, family, proto, port, addr }
        })
        .collect();
    let mut out = Compiled { services, ..Compiled::default() };
    let flat = flatten(doc, &mut out.rules);
    let counters: Vec<u64> = out.rules.iter().map(RuleRef::counter_id).collect();

    // Group sets of local instances → tables.
    let mut set_ids: HashMap<Vec<usize>, u32> = HashMap::new();
    let mut sets: Vec<Vec<usize>> = Vec::new();
    let group_index: HashMap<&str, usize> =
        doc.security_groups.iter().enumerate().map(|(i, g)| (g.id.as_str(), i)).collect();
    for (instance_index, instance) in doc.local_instances().enumerate() {
        let mut set: Vec<usize> =
            instance.security_groups.iter().filter_map(|g| group_index.get(g.as_str()).copied()).collect();
        set.sort_unstable();
        set.dedup();
        let set_id = *set_ids.entry(set.clone()).or_insert_with(|| {
            sets.push(set);
            (sets.len() - 1) as u32
        });
        let mut iface = compile_iface(instance, instance_index as u32, set_id);
        if !out.services.is_empty() {
            iface.config.flags |= IFACE_NODE_SERVICES;
        }
        out.ifaces.push(iface);
        for addr in &instance.addresses {
            let (family, bytes) = addr_key(&IpNet::from(*addr));
            out.own_addrs.push(OwnAddrKey {
                slot: 0,
                instance: instance_index as u32,
                family,
                _pad: [0; 3],
                addr: bytes,
            });
        }
    }
    out.group_sets = sets.len();
    let mut untracked_tables: HashSet<u32> = HashSet::new();

    for (set_id, set) in sets.iter().enumerate() {
        for direction in [Direction::Ingress, Direction::Egress] {
            let table = table_id(set_id as u32, direction);
            let rules_of = |d: Direction| -> Vec<&FlatRule> {
                set.iter().filter_map(|g| flat.get(*g)).flat_map(|g| g.rules(d)).collect()
            };
            let (rules, others) = (rules_of(direction), rules_of(direction.opposite()));
            let first_entry = out.rule_entries.len();
            compile_table(table, &rules, &others, &counters, &mut out);
            if out.rule_entries.iter().skip(first_entry).any(|e| e.value.flags & RULE_UNTRACKED != 0) {
                untracked_tables.insert(table);
            }
        }
    }

    for iface in &mut out.ifaces {
        if untracked_tables.contains(&iface.config.ingress_table) {
            iface.config.flags |= IFACE_INGRESS_UNTRACKED;
        }
        if untracked_tables.contains(&iface.config.egress_table) {
            iface.config.flags |= IFACE_EGRESS_UNTRACKED;
        }
    }

    if out.peers.len() > capacity::PEERS as usize || out.rule_entries.len() > capacity::RULES as usize {
        return Err(Invalid::one(
            "",
            format!(
                "the policy compiles to {} peer prefixes and {} rule entries; the datapath holds {} and {} \
                 (nested CIDRs with many different port rules multiply: each nested prefix inherits the rules of \
                 the prefixes around it)",
                out.peers.len(),
                out.rule_entries.len(),
                capacity::PEERS,
                capacity::RULES
            ),
        ));
    }
    Ok(out)
}

/// Table ids: two per group set.
pub fn table_id(set: u32, direction: Direction) -> u32 {
    set * 2 + u32::from(direction == Direction::Egress)
}

fn compile_iface(instance: &Instance, index: u32, set: u32) -> CompiledIface {
    let mut flags = 0;
    if instance.source_dest_check && instance.role == Role::Workload {
        flags |= IFACE_SOURCE_DEST_CHECK;
    }
    if instance.audit {
        flags |= IFACE_AUDIT;
    }
    CompiledIface {
        interface: instance.interface.clone().unwrap_or_default(),
        instance: instance.id.clone(),
        config: IfaceConfig {
            instance: index,
            ingress_table: table_id(set, Direction::Ingress),
            egress_table: table_id(set, Direction::Egress),
            role: instance.role as u8,
            flags,
            _pad: [0; 2],
            timeouts: IfaceTimeouts {
                tcp_established: instance.conntrack_timeouts.tcp_established.unwrap_or(0),
                // EC2's ranges (validated): at most 60 and 180 seconds.
                udp: instance.conntrack_timeouts.udp.map_or(0, |t| t.min(u32::from(u16::MAX)) as u16),
                udp_stream: instance.conntrack_timeouts.udp_stream.map_or(0, |t| t.min(u32::from(u16::MAX)) as u16),
            },
        },
    }
}

/// A flat rule with its peer resolved to prefixes.
struct FlatRule {
    id: u32,
    protocol: Protocol,
    range: (u16, u16),
    nets: Vec<IpNet>,
}

#[derive(Default)]
struct FlatGroup {
    ingress: Vec<FlatRule>,
    egress: Vec<FlatRule>,
}

impl FlatGroup {
    fn rules(&self, direction: Direction) -> &[FlatRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// Resolves every (group, direction, rule, peer) to prefixes, numbering them in document order.
fn flatten(doc: &Document, refs: &mut Vec<RuleRef>) -> Vec<FlatGroup> {
    // Group id → addresses of its members (any instance, local or not), kept current by
    // recompiling on every document.
    let mut members: HashMap<&str, Vec<IpNet>> = HashMap::new();
    for instance in &doc.instances {
        for g in &instance.security_groups {
            members.entry(g.as_str()).or_default().extend(instance.addresses.iter().map(|a| IpNet::from(*a)));
        }
    }
    let mut groups = Vec::with_capacity(doc.security_groups.len());
    for group in &doc.security_groups {
        let mut flat = FlatGroup::default();
        for direction in [Direction::Ingress, Direction::Egress] {
            for (rule_index, rule) in group.rules(direction).iter().enumerate() {
                for peer in &rule.peers {
                    let mut nets: Vec<IpNet> = match peer {
                        Peer::Cidr(net) => vec![*net],
                        Peer::Group(id) => members.get(id.as_str()).cloned().unwrap_or_default(),
                        Peer::PrefixList(id) => doc.prefix_list(id).map(|l| l.cidrs.clone()).unwrap_or_default(),
                    };
                    // icmp matches IPv4 only, icmpv6 IPv6 only: a group or prefix list
                    // contributes its addresses of the right family.
                    nets.retain(|n| match rule.protocol {
                        Protocol::Icmp => matches!(n, IpNet::V4(_)),
                        Protocol::Icmpv6 => matches!(n, IpNet::V6(_)),
                        _ => true,
                    });
                    let id = refs.len() as u32;
                    refs.push(RuleRef {
                        group: group.id.clone(),
                        direction,
                        rule_index,
                        protocol: rule.protocol,
                        ports: rule.ports,
                        peer: peer.clone(),
                    });
                    let flat_rule = FlatRule { id, protocol: rule.protocol, range: rule.ports.key_range(), nets };
                    match direction {
                        Direction::Ingress => flat.ingress.push(flat_rule),
                        Direction::Egress => flat.egress.push(flat_rule),
                    }
                }
            }
        }
        groups.push(flat);
    }
    groups
}

/// (family, address bytes) of a prefix's network address, as the maps store them.
pub fn addr_key(net: &IpNet) -> (u8, [u8; 16]) {
    sg_common::maps::ip_to_addr(net.network())
}

fn is_everything(net: &IpNet, family: u8) -> bool {
    net.prefix_len() == 0 && addr_key(net).0 == family
}

/// Whether `rules` (one direction of a group set) allow all response traffic of protocol
/// `proto` (TCP or UDP) for a family: that protocol or all, every port, to `0.0.0.0/0` / `::/0`.
fn allows_all_responses(rules: &[&FlatRule], proto: u8, family: u8) -> bool {
    rules.iter().any(|r| {
        let proto_ok = match r.protocol {
            Protocol::All => true,
            p => p.number() == Some(proto) && r.range == (0, u16::MAX),
        };
        proto_ok && r.nets.iter().any(|n| is_everything(n, family))
    })
}

fn compile_table(table: u32, rules: &[&FlatRule], others: &[&FlatRule], counters: &[u64], out: &mut Compiled) {
    // SPEC §3 untracked flows: per family and protocol, does the other direction allow every
    // response?
    let responses_allowed = |proto: u8, family: u8| allows_all_responses(others, proto, family);

    // Prefix → indices (into `rules`) of the rules naming it.
    let mut by_prefix: BTreeMap<IpNet, Vec<usize>> = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        for net in &r.nets {
            by_prefix.entry(*net).or_default().push(i);
        }
    }
    // Each prefix reaches its own rules and those of every prefix containing it. Classes are
    // per family: the untracked flag of a rule whose peer has prefixes of both families (a
    // prefix list, a group) depends on the packet's family (`0.0.0.0/0` vs `::/0`).
    let mut classes: HashMap<(u8, Vec<usize>), u32> = HashMap::new();
    // Only the prefix lengths the table uses can hold ancestors: a handful, not 33 or 129.
    let lengths: BTreeSet<(bool, u8)> = by_prefix.keys().map(|n| (n.addr().is_ipv4(), n.prefix_len())).collect();
    for net in by_prefix.keys() {
        let mut reach: Vec<usize> = Vec::new();
        let candidates = lengths.iter().filter(|(v4, len)| *v4 == net.addr().is_ipv4() && *len <= net.prefix_len());
        for &(_, len) in candidates {
            let ancestor = IpNet::new(net.addr(), len).map(|n| n.trunc());
            if let Some(rs) = ancestor.ok().and_then(|a| by_prefix.get(&a)) {
                reach.extend(rs.iter().copied());
            }
        }
        reach.sort_unstable();
        reach.dedup();
        let (family, addr) = addr_key(net);
        let next_class = classes.len() as u32;
        let class = *classes.entry((family, reach.clone())).or_insert_with(|| {
            emit_class_rules(table, next_class, family, &reach, rules, &responses_allowed, counters, out);
            next_class
        });
        out.peers.push(PeerEntry {
            key: PeerKey { slot: 0, table, family, addr, _pad: [0; 3] },
            prefix_len: peer_key_bits(u32::from(net.prefix_len())),
            class,
        });
    }
}

/// The verdict of a port segment: the first allowing rule, and whether the flow is untracked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct SegmentValue {
    rule: u32,
    untracked: bool,
}

#[expect(clippy::too_many_arguments, reason = "one step of compile_table, sharing its state")]
fn emit_class_rules(
    table: u32,
    class: u32,
    family: u8,
    reach: &[usize],
    rules: &[&FlatRule],
    responses_allowed: &dyn Fn(u8, u8) -> bool,
    counters: &[u64],
    out: &mut Compiled,
) {
    let counter_of = |id: u32| counters.get(id as usize).copied().unwrap_or(1);
    let reached: Vec<&FlatRule> = reach.iter().filter_map(|&i| rules.get(i).copied()).collect();
    let all_rules: Vec<&&FlatRule> = reached.iter().filter(|r| r.protocol == Protocol::All).collect();
    let mut protos: Vec<u8> = reached.iter().filter_map(|r| r.protocol.number()).collect();
    if !all_rules.is_empty() {
        // TCP and UDP get explicit entries whenever an all-protocol rule applies, so that their
        // untracked flag can differ from the wildcard's (other protocols are always tracked).
        protos.extend([IPPROTO_TCP, IPPROTO_UDP]);
        let first = all_rules.iter().map(|r| r.id).min().unwrap_or(u32::MAX);
        out.rule_entries.push(RuleEntry {
            key: RuleKey { slot: 0, table, class, proto: 0, port: [0; 2], _pad: 0 },
            prefix_len: RULE_KEY_FIXED_BITS,
            value: RuleMatch { rule: first, flags: 0, counter: counter_of(first) },
        });
    }
    protos.sort_unstable();
    protos.dedup();
    for proto in protos {
        let intervals: Vec<(u16, u16, SegmentValue)> = reached
            .iter()
            .filter(|r| r.protocol == Protocol::All || r.protocol.number() == Some(proto))
            .map(|r| {
                let range = if r.protocol == Protocol::All { (0, u16::MAX) } else { r.range };
                let untracked = (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
                    && r.nets.iter().any(|n| is_everything(n, family))
                    && responses_allowed(proto, family);
                (range.0, range.1, SegmentValue { rule: r.id, untracked })
            })
            .collect();
        for (lo, hi, value) in segments(&intervals) {
            for prefix in range_prefixes(lo, hi) {
                out.rule_entries.push(RuleEntry {
                    key: RuleKey { slot: 0, table, class, proto, port: prefix.value.to_be_bytes(), _pad: 0 },
                    prefix_len: rule_key_bits(u32::from(prefix.bits)),
                    value: RuleMatch {
                        rule: value.rule,
                        flags: if value.untracked { RULE_UNTRACKED } else { 0 },
                        counter: counter_of(value.rule),
                    },
                });
            }
        }
    }
}

/// Cuts overlapping intervals into disjoint segments, each with the lowest rule id covering it
/// and "untracked" if any covering rule makes the flow untracked; merges equal neighbours.
/// A sweep over interval ends: O(n log n) in the number of intervals.
fn segments(intervals: &[(u16, u16, SegmentValue)]) -> Vec<(u16, u16, SegmentValue)> {
    // The common case (a peer class with one rule for the protocol) needs no sweep.
    if let [single] = intervals {
        return vec![*single];
    }
    // (position, starts, interval index), at u32 positions so that `hi + 1` of 65535 fits;
    // sorted by position, so each run of equal positions is one step of the sweep.
    let mut events: Vec<(u32, bool, usize)> = Vec::with_capacity(intervals.len() * 2);
    for (i, (lo, hi, _)) in intervals.iter().enumerate() {
        events.push((u32::from(*lo), true, i));
        events.push((u32::from(*hi) + 1, false, i));
    }
    events.sort_unstable();
    let mut active_rules: BTreeMap<u32, usize> = BTreeMap::new();
    let mut active_untracked = 0usize;
    let mut out: Vec<(u16, u16, SegmentValue)> = Vec::new();
    let mut step = 0;
    while let Some(&(pos, _, _)) = events.get(step) {
        let step_end = events.iter().skip(step).position(|e| e.0 != pos).map_or(events.len(), |n| step + n);
        for &(_, start, i) in events.get(step..step_end).unwrap_or_default() {
            let Some(&(_, _, value)) = intervals.get(i) else { continue };
            if start {
                *active_rules.entry(value.rule).or_default() += 1;
                active_untracked += usize::from(value.untracked);
            } else {
                if let Some(c) = active_rules.get_mut(&value.rule) {
                    *c -= 1;
                    if *c == 0 {
                        active_rules.remove(&value.rule);
                    }
                }
                active_untracked -= usize::from(value.untracked);
            }
        }
        step = step_end;
        let Some(&first) = active_rules.keys().next() else { continue };
        // An interval is active, so one of its ends comes later.
        let Some(&(end, _, _)) = events.get(step) else { continue };
        let value = SegmentValue { rule: first, untracked: active_untracked > 0 };
        let (lo, hi) = (pos as u16, (end - 1) as u16);
        match out.last_mut() {
            Some(last) if last.2 == value && u32::from(last.1) + 1 == pos => last.1 = hi,
            _ => out.push((lo, hi, value)),
        }
    }
    out
}

/// Distinct (table, family) pairs used, for status.
pub fn table_count(c: &Compiled) -> usize {
    c.peers.iter().map(|p| p.key.table).collect::<HashSet<_>>().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rule: u32, untracked: bool) -> SegmentValue {
        SegmentValue { rule, untracked }
    }

    #[test]
    fn segments_take_the_first_rule_and_merge_neighbours() {
        let s = segments(&[(0, 100, v(5, false)), (50, 60, v(2, false)), (101, 200, v(5, false))]);
        assert_eq!(s, vec![(0, 49, v(5, false)), (50, 60, v(2, false)), (61, 200, v(5, false))]);
    }

    #[test]
    fn segments_or_the_untracked_flag() {
        let s = segments(&[(0, 65535, v(1, false)), (80, 80, v(3, true))]);
        assert_eq!(s, vec![(0, 79, v(1, false)), (80, 80, v(1, true)), (81, 65535, v(1, false))]);
    }

    #[test]
    fn segments_handle_ends_and_starts_at_one_position() {
        // 101 is where rule 1 ends (hi + 1) and rule 2 starts; 65535 is the last port.
        let s = segments(&[(0, 100, v(1, false)), (101, 65535, v(2, false)), (50, 65535, v(3, true))]);
        assert_eq!(s, vec![(0, 49, v(1, false)), (50, 100, v(1, true)), (101, 65535, v(2, true))]);
        assert_eq!(segments(&[(7, 7, v(4, false))]), vec![(7, 7, v(4, false))]);
    }

    #[test]
    fn segments_of_disjoint_ranges_leave_gaps() {
        let s = segments(&[(10, 20, v(0, false)), (30, 40, v(1, false))]);
        assert_eq!(s, vec![(10, 20, v(0, false)), (30, 40, v(1, false))]);
    }

    fn web_rule(rule_index: usize, from: &str) -> RuleRef {
        RuleRef {
            group: "web".into(),
            direction: Direction::Ingress,
            rule_index,
            protocol: Protocol::Tcp,
            ports: Ports::Range(443, 443),
            peer: Peer::Cidr(from.parse().unwrap()),
        }
    }

    #[test]
    fn counter_ids_follow_the_rule_text_not_its_position() {
        // Counters live in a pinned map across agent upgrades: the key of a rule must stay the
        // FNV-1a of its text, byte for byte.
        let text = "web\x00ingress\x00tcp\x00443\x0010.0.0.0/8";
        let expected =
            text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        assert_eq!(web_rule(0, "10.0.0.0/8").counter_id(), expected);
        assert_eq!(web_rule(7, "10.0.0.0/8").counter_id(), expected);
        assert_ne!(web_rule(0, "10.0.0.0/16").counter_id(), expected);
    }

    #[test]
    fn every_example_compiles() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let mut compiled = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") || name.starts_with("aws-") {
                continue;
            }
            let (doc, c) = prepare(&read(&name), None).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!c.ifaces.is_empty() || doc.local_instances().next().is_none(), "{name}");
            compiled += 1;
        }
        assert!(compiled >= 3, "only {compiled} native examples");
        let aws = read("aws-describe-security-groups.json");
        prepare(&aws, Some(&read("aws-instances.json"))).unwrap_or_else(|e| panic!("the AWS example: {e}"));
    }
    #[test]
    fn a_node_compiles_its_own_instances_and_counts_remote_members() {
        let fleet = r#"{
          "security_groups": [ { "id": "sg-db", "ingress": [ { "protocol": "tcp", "from_port": 5432, "to_port": 5432, "groups": ["sg-app"] } ] },
                               { "id": "sg-app" } ],
          "instances": [
            { "id": "db", "node": "n1", "interface": "veth-db", "addresses": ["10.0.1.10"], "security_groups": ["sg-db"] },
            { "id": "app", "node": "n2", "interface": "veth-app", "addresses": ["10.0.2.10"], "security_groups": ["sg-app"] },
            { "id": "legacy", "interface": "veth-old", "addresses": ["10.0.3.10"] },
            { "id": "ext", "addresses": ["10.0.4.10"], "security_groups": ["sg-app"] } ] }"#;
        let (_, on_n1) = prepare_for_node::<&str>(fleet, &[], Some("n1")).unwrap();
        assert_eq!(on_n1.ifaces.iter().map(|i| i.interface.as_str()).collect::<Vec<_>>(), ["veth-db", "veth-old"]);
        let (_, everyone) = prepare(fleet, None).unwrap();
        assert_eq!(everyone.ifaces.len(), 3, "without a node name every instance with an interface is local");
        // db's rule on n1 admits sg-app's members: app (enforced on n2) and ext (on no node).
        let peers: Vec<[u8; 4]> = on_n1
            .peers
            .iter()
            .filter(|p| p.key.family == 4 && p.prefix_len == 104)
            .map(|p| [p.key.addr[0], p.key.addr[1], p.key.addr[2], p.key.addr[3]])
            .collect();
        assert!(peers.contains(&[10, 0, 2, 10]) && peers.contains(&[10, 0, 4, 10]), "{peers:?}");
    }
}
