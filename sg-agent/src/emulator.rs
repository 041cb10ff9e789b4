//! The datapath on the host: `sg_common::verdict::judge` over in-memory copies of the compiled
//! maps. `explain` uses it to answer "would this packet pass, and by which rule?", and the
//! property test uses it to check the compiler against a plain reading of the document.
//!
//! The LPM tries are emulated by probing every prefix length from the longest down, which is
//! exactly longest-prefix-match semantics over the same entries the kernel receives.

use std::{cell::RefCell, collections::HashMap};

use sg_common::{
    conntrack::Tracked,
    maps::{
        ActivePolicy, CtEntry, CtKey, FragKey, FragVerdict, IfaceConfig, IfaceKey, OwnAddrKey, PeerKey,
        RULE_KEY_FIXED_BITS, RuleKey, RuleMatch, ServiceKey, Settings, family_bits, peer_key_bits, rule_key_bits,
    },
    verdict::VerdictMaps,
};

use crate::compile::Compiled;

/// Masks all but the top `bits` bits of `bytes`.
fn mask(bytes: &[u8; 16], bits: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, (o, b)) in out.iter_mut().zip(bytes).enumerate() {
        let start = (i as u32) * 8;
        if bits >= start + 8 {
            *o = *b;
        } else if bits > start {
            *o = b & (0xffu8 << (8 - (bits - start)));
        }
    }
    out
}

/// In-memory maps of one compiled generation (slot 0), plus a conntrack table.
pub struct Emulator {
    ifaces: HashMap<u32, IfaceConfig>,
    own: std::collections::HashSet<OwnAddrKey>,
    /// (table, family, address bits, masked address) → class.
    peers: HashMap<(u32, u8, u32, [u8; 16]), u32>,
    /// (table, class, protocol, port bits, masked port) → rule.
    rules: HashMap<(u32, u32, u8, u32, u16), RuleMatch>,
    /// (table, class) → all-protocol rule.
    wildcard: HashMap<(u32, u32), RuleMatch>,
    services: std::collections::HashSet<ServiceKey>,
    pub settings: Settings,
    pub conntrack: RefCell<HashMap<CtKey, CtEntry>>,
    pub conntrack_max: usize,
    fragments: RefCell<HashMap<FragKey, FragVerdict>>,
}

impl Emulator {
    /// `ifindex` gives each compiled interface (by position) an interface index.
    pub fn new(c: &Compiled, ifindex: impl Fn(usize, &str) -> u32) -> Emulator {
        let ifaces = c.ifaces.iter().enumerate().map(|(i, f)| (ifindex(i, &f.interface), f.config)).collect();
        let own = c.own_addrs.iter().copied().collect();
        let peers = c
            .peers
            .iter()
            .map(|p| {
                let bits = p.prefix_len - peer_key_bits(0);
                ((p.key.table, p.key.family, bits, mask(&p.key.addr, bits)), p.class)
            })
            .collect();
        let mut rules = HashMap::new();
        let mut wildcard = HashMap::new();
        for e in &c.rule_entries {
            if e.prefix_len == RULE_KEY_FIXED_BITS {
                wildcard.insert((e.key.table, e.key.class), e.value);
            } else {
                let bits = e.prefix_len - rule_key_bits(0);
                let port = u16::from_be_bytes(e.key.port);
                rules.insert((e.key.table, e.key.class, e.key.proto, bits, port), e.value);
            }
        }
        Emulator {
            ifaces,
            own,
            peers,
            rules,
            wildcard,
            services: c.services.iter().copied().collect(),
            settings: Settings::DEFAULT,
            conntrack: RefCell::new(HashMap::new()),
            conntrack_max: usize::MAX,
            fragments: RefCell::new(HashMap::new()),
        }
    }
}

impl VerdictMaps for Emulator {
    fn active(&self) -> Option<ActivePolicy> {
        Some(ActivePolicy { slot: 0, valid: 1, generation: 1 })
    }

    fn iface(&self, key: &IfaceKey) -> Option<IfaceConfig> {
        self.ifaces.get(&key.ifindex).copied()
    }

    fn is_own_addr(&self, key: &OwnAddrKey) -> bool {
        self.own.contains(&OwnAddrKey { slot: 0, ..*key })
    }

    fn peer_class(&self, key: &PeerKey, _prefix_len: u32) -> Option<u32> {
        (0..=family_bits(key.family))
            .rev()
            .find_map(|bits| self.peers.get(&(key.table, key.family, bits, mask(&key.addr, bits))).copied())
    }

    fn rule(&self, key: &RuleKey, _prefix_len: u32) -> Option<RuleMatch> {
        let port = u16::from_be_bytes(key.port);
        (0..=16u32)
            .rev()
            .find_map(|bits| {
                let masked = if bits == 0 { 0 } else { port & (u16::MAX << (16 - bits)) };
                self.rules.get(&(key.table, key.class, key.proto, bits, masked)).copied()
            })
            .or_else(|| self.wildcard.get(&(key.table, key.class)).copied())
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn ct_track<F: FnOnce(&mut CtEntry) -> Tracked>(&self, key: &CtKey, f: F) -> Option<Tracked> {
        self.conntrack.borrow_mut().get_mut(key).map(f)
    }

    fn ct_contains(&self, key: &CtKey) -> bool {
        self.conntrack.borrow().contains_key(key)
    }

    fn ct_insert(&self, key: &CtKey, entry: &CtEntry) -> bool {
        let mut ct = self.conntrack.borrow_mut();
        if !ct.contains_key(key) && ct.len() >= self.conntrack_max {
            return false;
        }
        ct.insert(*key, *entry);
        true
    }

    fn fragment(&self, key: &FragKey) -> Option<FragVerdict> {
        self.fragments.borrow().get(key).copied()
    }

    fn remember_fragment(&self, key: &FragKey, verdict: &FragVerdict) {
        self.fragments.borrow_mut().insert(*key, *verdict);
    }

    fn is_node_service(&self, key: &ServiceKey) -> bool {
        self.services.contains(&ServiceKey { slot: 0, ..*key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keeps_the_top_bits() {
        let a = [0xff; 16];
        assert_eq!(mask(&a, 0), [0; 16]);
        assert_eq!(mask(&a, 12)[..3], [0xff, 0xf0, 0]);
        assert_eq!(mask(&a, 128), a);
    }

    use sg_common::{
        maps::{IfaceTimeouts, ip_to_addr},
        orientation::Hook,
        packet::{IPPROTO_TCP, IPPROTO_UDP, Packet},
        verdict::{Reason, judge},
    };

    /// A VM on a workload interface with no outbound rule at all, and `services`.
    fn vm(services: &str) -> (crate::policy::Document, Compiled) {
        let text = format!(
            r#"{{ "security_groups": [ {{ "id": "sg-vm", "egress": [] }} ], {services}
                 "instances": [ {{ "id": "vm", "interface": "tap0", "addresses": ["10.0.1.10", "fd00:1::10"],
                                  "security_groups": ["sg-vm"], "conntrack_timeouts": {{ "udp": 60 }} }} ] }}"#
        );
        let doc = crate::policy::load(&text, None).unwrap();
        let compiled = crate::compile::compile(&doc).unwrap();
        (doc, compiled)
    }

    fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
        let (family, src) = ip_to_addr(src.parse().unwrap());
        let (_, dst) = ip_to_addr(dst.parse().unwrap());
        Packet { family, proto: IPPROTO_UDP, src, dst, sport, dport, ..Packet::default() }
    }

    fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
        Packet { proto: IPPROTO_TCP, tcp_flags: sg_common::packet::TCP_SYN, ..udp(src, sport, dst, dport) }
    }

    /// The VM's outbound packets are received on its tap; its inbound ones transmitted.
    fn out(c: &Compiled, pkt: &Packet) -> Reason {
        judge(&Emulator::new(c, |i, _| i as u32 + 1), 1, Hook::Receive, pkt, 1_000_000_000).reason
    }

    fn inbound(c: &Compiled, pkt: &Packet) -> Reason {
        judge(&Emulator::new(c, |i, _| i as u32 + 1), 1, Hook::Transmit, pkt, 1_000_000_000).reason
    }

    #[test]
    fn dhcp_on_the_link_is_never_judged() {
        use Reason::*;
        let (_, c) = vm("");
        // A booting VM: from 0.0.0.0 (no source/destination check), no egress rule.
        assert_eq!(out(&c, &udp("0.0.0.0", 68, "255.255.255.255", 67)), PassedNodeService);
        // The node's server answers (sent by a socket of the node).
        let from_node = |p: Packet| Packet { local_origin: 1, ..p };
        assert_eq!(inbound(&c, &from_node(udp("10.0.1.1", 67, "10.0.1.10", 68))), PassedNodeService);
        assert_eq!(inbound(&c, &from_node(udp("10.0.1.1", 67, "255.255.255.255", 68))), PassedNodeService);
        // The same forwarded from elsewhere is judged.
        assert_eq!(inbound(&c, &udp("192.0.2.67", 67, "10.0.1.10", 68)), DroppedNoRule);
        assert_eq!(out(&c, &udp("fe80::10", 546, "ff02::1:2", 547)), PassedNodeService);
        assert_eq!(inbound(&c, &udp("fe80::1", 547, "fe80::10", 546)), PassedNodeService);
        // DHCP beyond the link is judged as usual.
        assert_eq!(out(&c, &udp("10.0.1.10", 68, "192.0.2.67", 67)), DroppedNoRule);
        assert_eq!(out(&c, &udp("0.0.0.0", 68, "192.0.2.67", 67)), DroppedSourceDestCheck);
        assert_eq!(out(&c, &udp("fd00:1::10", 546, "2001:db8::547", 547)), DroppedNoRule);
        assert_eq!(inbound(&c, &udp("2001:db8::547", 547, "fd00:1::10", 546)), DroppedNoRule);
        // Other ports to the broadcast address are judged.
        assert_eq!(out(&c, &udp("10.0.1.10", 68, "255.255.255.255", 69)), DroppedNoRule);
    }

    #[test]
    fn the_nodes_service_addresses_are_never_judged() {
        use Reason::*;
        let (doc, c) = vm("");
        assert_eq!(doc.node_services.len(), 8, "EC2's by default");
        for dst in ["169.254.169.254", "169.254.169.253", "169.254.169.123", "169.254.170.2", "169.254.169.250"] {
            assert_eq!(out(&c, &tcp("10.0.1.10", 40000, dst, 80)), PassedNodeService, "{dst}");
            assert_eq!(inbound(&c, &tcp(dst, 80, "10.0.1.10", 40000)), PassedNodeService, "{dst}");
        }
        assert_eq!(out(&c, &udp("fd00:1::10", 40000, "fd00:ec2::253", 53)), PassedNodeService);
        assert_eq!(out(&c, &tcp("10.0.1.10", 40000, "169.254.169.1", 80)), DroppedNoRule);
        assert_eq!(out(&c, &tcp("10.0.1.10", 40000, "10.0.1.1", 80)), DroppedNoRule);
        // Replaced by the document: one address and port only; [] means none.
        let (_, c) = vm(r#""node_services": ["169.254.169.253:udp/53", "10.0.1.1"],"#);
        assert_eq!(out(&c, &udp("10.0.1.10", 40000, "169.254.169.253", 53)), PassedNodeService);
        assert_eq!(out(&c, &tcp("10.0.1.10", 40000, "169.254.169.253", 53)), DroppedNoRule);
        assert_eq!(out(&c, &udp("10.0.1.10", 40000, "169.254.169.253", 54)), DroppedNoRule);
        assert_eq!(out(&c, &tcp("10.0.1.10", 40000, "169.254.169.254", 80)), DroppedNoRule);
        // The node's own address listed: a DHCP renewal unicast to it passes.
        assert_eq!(out(&c, &udp("10.0.1.10", 68, "10.0.1.1", 67)), PassedNodeService);
        let (_, c) = vm(r#""node_services": [],"#);
        assert_eq!(out(&c, &tcp("10.0.1.10", 40000, "169.254.169.254", 80)), DroppedNoRule);
        assert_eq!(out(&c, &udp("0.0.0.0", 68, "255.255.255.255", 67)), PassedNodeService, "DHCP still passes");
    }

    #[test]
    fn an_instances_own_timeouts_are_in_its_interface_config() {
        let (_, c) = vm("");
        assert_eq!(c.ifaces[0].config.timeouts, IfaceTimeouts { tcp_established: 0, udp: 60, udp_stream: 0 });
        let e = Emulator::new(&c, |i, _| i as u32 + 1);
        assert_eq!(e.iface_timeouts(1), IfaceTimeouts { tcp_established: 0, udp: 60, udp_stream: 0 });
        assert_eq!(e.iface_timeouts(2), IfaceTimeouts::default(), "no such interface: the agent's");
    }
}
