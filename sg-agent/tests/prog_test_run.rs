//! The kernel programs on crafted frames (`BPF_PROG_TEST_RUN`): every verdict SPEC §3 gives to
//! frames a parser can get wrong — truncations at every header, bad IHL, lying lengths, IPv6
//! extension headers, ARP and neighbour discovery, non-IP frames.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use sg_common::{
    frames::{self, Ext, Ipv4, Ipv6, tcp, v4, v6},
    packet::{IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN},
};
use support::*;

/// The node itself ("host" role on `lo`, interface index 1 — where test runs see their
/// frames arrive): TCP 80 from anywhere, UDP 53 from 10.0.0.0/8, nothing out.
const POLICY: &str = r#"{
  "security_groups": [{
    "id": "sg-node",
    "ingress": [
      { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0", "::/0"] },
      { "protocol": "udp", "from_port": 53, "to_port": 53, "cidrs": ["10.0.0.0/8", "fd00::/16"] }
    ],
    "egress": []
  }],
  "instances": [
    { "id": "node", "interface": "lo", "role": "host", "addresses": ["10.0.0.1", "fd00:1::1"], "security_groups": ["sg-node"] }
  ]
}"#;

const NODE4: [u8; 4] = v4(10, 0, 0, 1);
const PEER4: [u8; 4] = v4(10, 0, 0, 2);

fn node6() -> [u8; 16] {
    v6(1, 1)
}
fn peer6() -> [u8; 16] {
    v6(1, 2)
}

#[test]
fn allowed_and_denied_frames_get_their_rule_verdicts() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    let table: Vec<(&str, Vec<u8>, u32, &str)> = vec![
        ("tcp4 to an allowed port", frames::tcp4(PEER4, NODE4, 40000, 80, TCP_SYN), XDP_PASS, "allowed_by_rule"),
        ("tcp4 again: tracked", frames::tcp4(PEER4, NODE4, 40000, 80, TCP_ACK), XDP_PASS, "allowed_tracked"),
        ("tcp4 to another port", frames::tcp4(PEER4, NODE4, 40000, 81, TCP_SYN), XDP_DROP, "dropped_no_rule"),
        ("udp4 from an allowed CIDR", frames::udp4(PEER4, NODE4, 5000, 53), XDP_PASS, "allowed_by_rule"),
        ("udp4 from outside it", frames::udp4(v4(192, 0, 2, 1), NODE4, 5000, 53), XDP_DROP, "dropped_no_rule"),
        ("tcp6 to an allowed port", frames::tcp6(peer6(), node6(), 40000, 80, TCP_SYN), XDP_PASS, "allowed_by_rule"),
        ("udp6 from an allowed CIDR", frames::udp6(peer6(), node6(), 5000, 53), XDP_PASS, "allowed_by_rule"),
        ("icmp6 echo: no rule", frames::icmp6(peer6(), node6(), 128, 0, 1), XDP_DROP, "dropped_no_rule"),
        (
            "not addressed to the node: not judged (host role)",
            frames::tcp4(PEER4, v4(10, 0, 0, 99), 1, 9999, TCP_SYN),
            XDP_PASS,
            "passed_not_judged",
        ),
    ];
    for (what, frame, verdict, reason) in table {
        assert_eq!(k.xdp(&frame), (verdict, reason), "{what}");
    }
}

#[test]
fn truncation_at_every_header_is_dropped_as_malformed() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    let mut with_ext = Ipv6::new(peer6(), node6(), IPPROTO_TCP, tcp(40000, 80, TCP_SYN));
    with_ext.ext = vec![Ext::HopByHop, Ext::DestOpts];
    let full_frames = [
        ("tcp4", frames::tcp4(PEER4, NODE4, 40000, 80, TCP_SYN)),
        ("udp4", frames::udp4(PEER4, NODE4, 5000, 53)),
        ("icmp4", frames::icmp4(PEER4, NODE4, 8, 0, 1)),
        ("tcp6", frames::tcp6(peer6(), node6(), 40000, 80, TCP_SYN)),
        ("udp6", frames::udp6(peer6(), node6(), 5000, 53)),
        ("tcp6 with extension headers", with_ext.frame()),
    ];
    for (what, full) in full_frames {
        // The kernel's test runner needs at least an Ethernet header.
        for cut in 14..full.len() {
            // Keep the IP length fields honest about the cut frame too: a packet whose headers
            // are cut must be malformed whatever its length fields say.
            assert_eq!(k.xdp(&full[..cut]), (XDP_DROP, "dropped_malformed"), "{what} cut at {cut}");
        }
        assert_ne!(k.xdp(&full).1, "dropped_malformed", "{what} whole");
    }
}

#[test]
fn bad_ihl_and_lying_lengths_are_dropped_as_malformed() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    let good = frames::tcp4(PEER4, NODE4, 40000, 80, TCP_SYN);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for ihl in [0u8, 1, 4] {
        let mut f = good.clone();
        f[14] = 0x40 | ihl;
        cases.push((format!("IHL {ihl}"), f));
    }
    let mut f = good.clone();
    f[14] = 0x4f;
    cases.push(("IHL past the packet".into(), f));
    let mut f = good.clone();
    f[14] = 0x65;
    cases.push(("version 6 in an IPv4 frame".into(), f));
    let mut f = good.clone();
    f[16..18].copy_from_slice(&1500u16.to_be_bytes());
    cases.push(("total length beyond the frame".into(), f));
    let mut f = good.clone();
    f[16..18].copy_from_slice(&24u16.to_be_bytes());
    cases.push(("total length cutting the TCP header".into(), f));
    let mut f = good.clone();
    f[14 + 20 + 12] = 0x40;
    cases.push(("TCP data offset below 5".into(), f));
    let mut f = frames::tcp6(peer6(), node6(), 40000, 80, TCP_SYN);
    f[18..20].copy_from_slice(&100u16.to_be_bytes());
    cases.push(("IPv6 payload length beyond the frame".into(), f));
    for (what, frame) in cases {
        assert_eq!(k.xdp(&frame), (XDP_DROP, "dropped_malformed"), "{what}");
        assert_eq!(k.tc(&frame), (2, "dropped_malformed"), "{what} (TC)");
    }
    // Ethernet padding after a short packet is fine.
    let mut padded = frames::udp4(PEER4, NODE4, 5000, 53);
    padded.extend_from_slice(&[0; 20]);
    assert_eq!(k.xdp(&padded).0, XDP_PASS, "padded frame");
}

#[test]
fn ipv6_extension_headers_are_judged_by_the_real_upper_layer() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    for (port, verdict) in [(80u16, XDP_PASS), (22, XDP_DROP)] {
        let mut ip = Ipv6::new(peer6(), node6(), IPPROTO_TCP, tcp(40001, port, TCP_SYN));
        ip.ext = vec![Ext::HopByHop, Ext::Routing, Ext::DestOpts];
        assert_eq!(k.xdp(&ip.frame()).0, verdict, "TCP {port} behind three extension headers");
    }
    let mut udp = Ipv6::new(peer6(), node6(), IPPROTO_UDP, frames::udp(5000, 53, b"q"));
    udp.ext = vec![Ext::DestOpts];
    assert_eq!(k.xdp(&udp.frame()), (XDP_PASS, "allowed_by_rule"));
    let mut long = Ipv6::new(peer6(), node6(), IPPROTO_TCP, tcp(40002, 80, TCP_SYN));
    long.ext = vec![Ext::DestOpts; 9];
    assert_eq!(k.xdp(&long.frame()), (XDP_DROP, "dropped_malformed"), "nine extension headers");
}

#[test]
fn address_resolution_passes_and_other_non_ip_is_dropped() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    assert_eq!(k.xdp(&frames::arp()), (XDP_PASS, "passed_address_resolution"));
    assert_eq!(k.tc(&frames::arp()), (-1, "passed_address_resolution"));
    let ns = frames::neighbour_solicitation(peer6(), node6(), 255);
    assert_eq!(k.xdp(&ns), (XDP_PASS, "passed_address_resolution"));
    // Neighbour discovery from off the link is judged by the rules (none allows it).
    let mut forged = frames::neighbour_solicitation(peer6(), node6(), 64);
    forged[14 + 24..14 + 40].copy_from_slice(&node6());
    assert_eq!(k.xdp(&forged), (XDP_DROP, "dropped_no_rule"));
    let vlan = frames::eth(0x8100, &Ipv4::new(PEER4, NODE4, IPPROTO_TCP, tcp(1, 80, TCP_SYN)).packet());
    assert_eq!(k.xdp(&vlan), (XDP_DROP, "dropped_non_ip"), "VLAN-tagged frames are not judged as IP");
    assert_eq!(k.xdp(&frames::eth(0x88cc, &[0; 46])), (XDP_DROP, "dropped_non_ip"), "LLDP");
}
