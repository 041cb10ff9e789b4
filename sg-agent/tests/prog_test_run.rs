//! The kernel programs on crafted frames (`BPF_PROG_TEST_RUN`): every verdict SPEC §3 gives to
//! frames a parser can get wrong — truncations at every header, bad IHL, lying lengths, IPv6
//! extension headers, ARP and neighbour discovery, non-IP frames.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use sg_common::packet::{IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN};
use sg_lab::frames::{self, Ext, Ipv4, Ipv6, tcp, v4, v6};
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

/// Hostile frames (issue: hardening): each row's verdict and reason, as SPEC §3 gives them.
/// None may pass by accident.
pub fn hostile_frames() -> Vec<(&'static str, Vec<u8>, bool, &'static str)> {
    use sg_common::packet::{IPPROTO_ICMP, TCP_FIN, TCP_RST};
    let good = || Ipv4::new(PEER4, NODE4, IPPROTO_TCP, tcp(40100, 80, TCP_SYN));
    let mut rows: Vec<(&'static str, Vec<u8>, bool, &'static str)> = Vec::new();
    let mut with_options = good();
    with_options.options = vec![1, 1, 1, 1, 0x44, 4, 5, 0]; // NOPs, a timestamp option stub
    rows.push(("IPv4 options before an allowed SYN", with_options.frame(), true, "allowed_by_rule"));
    let mut options_past_end = good().frame();
    options_past_end[14] = 0x4f;
    rows.push(("IHL 15: options run past the packet", options_past_end, false, "dropped_malformed"));
    let mut long_total = good().frame();
    long_total[16..18].copy_from_slice(&9000u16.to_be_bytes());
    rows.push(("total length larger than the frame", long_total, false, "dropped_malformed"));
    let mut short_total = good().frame();
    short_total[16..18].copy_from_slice(&20u16.to_be_bytes());
    rows.push(("total length with no room for TCP", short_total, false, "dropped_malformed"));
    let mut chain = Ipv6::new(peer6(), node6(), IPPROTO_TCP, tcp(40101, 80, TCP_SYN));
    chain.ext = vec![
        Ext::HopByHop,
        Ext::DestOpts,
        Ext::Routing,
        Ext::DestOpts,
        Ext::DestOpts,
        Ext::DestOpts,
        Ext::DestOpts,
        Ext::DestOpts,
        Ext::DestOpts,
    ];
    rows.push(("IPv6: nine extension headers", chain.frame(), false, "dropped_malformed"));
    let mut looping = Ipv6::new(peer6(), node6(), IPPROTO_TCP, tcp(40102, 80, TCP_SYN));
    looping.ext = vec![Ext::DestOpts];
    let mut looping = looping.frame();
    looping[14 + 40 + 1] = 255; // header length far past the payload
    rows.push(("IPv6: extension header length past the packet", looping, false, "dropped_malformed"));
    let mut later = Ipv6::new(peer6(), node6(), IPPROTO_TCP, vec![0; 24]);
    later.ext = vec![Ext::Fragment { offset: 100, more: false, id: 0xdead }];
    rows.push(("IPv6: a later fragment with no first fragment", later.frame(), false, "dropped_fragment"));
    let mut first = Ipv6::new(peer6(), node6(), IPPROTO_TCP, tcp(40103, 80, TCP_SYN));
    first.ext = vec![Ext::Fragment { offset: 0, more: true, id: 0xbeef }];
    rows.push(("IPv6: a first fragment to an allowed port", first.frame(), true, "allowed_by_rule"));
    let mut tiny = Ipv4::new(PEER4, NODE4, IPPROTO_TCP, vec![0; 16]);
    tiny.frag_offset = 1;
    rows.push(("IPv4: TCP fragment at offset 8 (overlap attack)", tiny.frame(), false, "dropped_malformed"));
    rows.push((
        "802.1Q VLAN tag",
        frames::eth(0x8100, &[&[0u8, 5, 0x08, 0][..], &good().packet()].concat()),
        false,
        "dropped_non_ip",
    ));
    rows.push((
        "802.1ad QinQ tag",
        frames::eth(0x88a8, &[&[0u8, 5, 0x81, 0][..], &good().packet()].concat()),
        false,
        "dropped_non_ip",
    ));
    let mut big = Ipv4::new(PEER4, NODE4, IPPROTO_UDP, frames::udp(5000, 53, &vec![7u8; 3000]));
    big.id = 9;
    rows.push(("3 KB datagram to an allowed port", big.frame(), true, "allowed_by_rule"));
    for (what, flags) in [
        ("TCP SYN+FIN", TCP_SYN | TCP_FIN),
        ("TCP SYN+RST", TCP_SYN | TCP_RST),
        ("TCP null scan (no flags)", 0),
        ("TCP xmas scan (FIN+PSH+URG)", 0x29),
    ] {
        rows.push((what, frames::tcp4(PEER4, NODE4, 40104, 80, flags), false, "dropped_malformed"));
    }
    rows.push((
        "ICMP error quoting garbage",
        frames::icmp4_error(v4(10, 9, 9, 9), NODE4, 3, 4, &[0x45, 0, 0, 0x14, 0, 0, 0, 0, 64, 6, 0, 0]),
        false,
        "dropped_no_rule",
    ));
    rows.push((
        "ICMP echo with no ICMP rule",
        frames::eth(0x0800, &Ipv4::new(PEER4, NODE4, IPPROTO_ICMP, frames::icmp(8, 0, 1, 1)).packet()),
        false,
        "dropped_no_rule",
    ));
    rows
}

#[test]
fn hostile_frames_get_their_verdicts() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    for (what, frame, pass, reason) in hostile_frames() {
        let verdict = if pass { XDP_PASS } else { XDP_DROP };
        assert_eq!(k.xdp(&frame), (verdict, reason), "{what}");
    }
}
