//! The packet parser the kernel programs run (`sg_common::packet`), on frames built by
//! `sg_lab::frames`: header fields, truncations, lying lengths, TCP flag combinations, IPv4
//! options, IPv6 extension headers, fragments, address resolution and ICMP errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

use sg_common::packet::{
    FRAG_FIRST, FRAG_LATER, Frame, ICMP_ECHO_REQUEST, ICMP_ERROR, IPPROTO_TCP, IPPROTO_UDP, MAX_IPV6_EXT_HEADERS,
    Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, parse_frame,
};
use sg_lab::frames::{self, Ext, Ipv4, Ipv6, tcp, v4, v6};

fn parse(frame: &[u8]) -> (Frame, Packet) {
    let mut pkt = Packet::default();
    let f = parse_frame(&frame, &mut pkt);
    (f, pkt)
}

#[test]
fn tcp4_headers() {
    let (f, p) = parse(&frames::tcp4(v4(10, 0, 0, 2), v4(10, 0, 0, 1), 40000, 80, TCP_SYN));
    assert_eq!(f, Frame::Ip);
    assert_eq!((p.family, p.proto, p.sport, p.dport, p.tcp_flags), (4, 6, 40000, 80, TCP_SYN));
    assert_eq!(p.src[..4], [10, 0, 0, 2]);
    assert_eq!(p.src[4..], [0; 12], "IPv4 addresses are zero-padded");
}

#[test]
fn icmp_echo_carries_identifier_and_type_code() {
    let (f, p) = parse(&frames::icmp6(v6(1, 2), v6(1, 1), 128, 0, 0x1234));
    assert_eq!(f, Frame::Ip);
    assert_eq!((p.icmp, p.sport, p.dport), (ICMP_ECHO_REQUEST, 0x1234, 128 << 8));
}

#[test]
fn every_truncation_of_a_packet_is_malformed() {
    let cases: Vec<Vec<u8>> = vec![
        frames::tcp4(v4(10, 0, 0, 2), v4(10, 0, 0, 1), 1, 2, TCP_SYN),
        frames::udp6(v6(1, 2), v6(1, 1), 1, 2),
        frames::icmp4(v4(10, 0, 0, 2), v4(10, 0, 0, 1), 8, 0, 7),
    ];
    for full in cases {
        for cut in 0..full.len() {
            let (f, _) = parse(&full[..cut]);
            assert_eq!(f, Frame::Malformed, "cut at {cut} of {}", full.len());
        }
    }
}

#[test]
fn bad_ihl_and_lying_lengths_are_malformed() {
    let mut frame = frames::tcp4(v4(10, 0, 0, 2), v4(10, 0, 0, 1), 1, 2, TCP_SYN);
    for ihl in [0u8, 4] {
        frame[14] = 0x40 | ihl;
        assert_eq!(parse(&frame).0, Frame::Malformed, "ihl {ihl}");
    }
    frame[14] = 0x4f; // 60-byte header, longer than the packet
    assert_eq!(parse(&frame).0, Frame::Malformed);
    frame[14] = 0x45;
    frame[16..18].copy_from_slice(&2000u16.to_be_bytes()); // total length beyond the frame
    assert_eq!(parse(&frame).0, Frame::Malformed);
    frame[16..18].copy_from_slice(&10u16.to_be_bytes()); // shorter than the header
    assert_eq!(parse(&frame).0, Frame::Malformed);
}

#[test]
fn impossible_tcp_flag_combinations_are_malformed() {
    for (flags, valid) in [
        (TCP_SYN, true),
        (TCP_SYN | TCP_ACK, true),
        (TCP_ACK, true),
        (TCP_FIN | TCP_ACK, true),
        (TCP_RST, true),
        (TCP_RST | TCP_ACK, true),
        (0x18, true), // PSH|ACK
        (TCP_SYN | TCP_FIN, false),
        (TCP_SYN | TCP_RST, false),
        (0, false),    // null scan
        (0x29, false), // xmas: FIN|PSH|URG
        (TCP_FIN, false),
        (0x08, false), // PSH alone
    ] {
        let frame = frames::tcp4(v4(10, 0, 0, 2), v4(10, 0, 0, 1), 1, 80, flags);
        let expected = if valid { Frame::Ip } else { Frame::Malformed };
        assert_eq!(parse(&frame).0, expected, "flags {flags:#04x}");
    }
}

#[test]
fn ipv4_options_are_skipped() {
    let mut ip = Ipv4::new(v4(10, 0, 0, 2), v4(10, 0, 0, 1), IPPROTO_TCP, tcp(5, 443, TCP_SYN));
    ip.options = vec![1, 1, 1, 1, 1, 1, 1, 0];
    let (f, p) = parse(&ip.frame());
    assert_eq!(f, Frame::Ip);
    assert_eq!(p.dport, 443);
}

#[test]
fn ipv6_extension_headers_are_followed_to_the_upper_layer() {
    let mut ip = Ipv6::new(v6(1, 2), v6(1, 1), IPPROTO_TCP, tcp(5, 22, TCP_SYN));
    ip.ext = vec![Ext::HopByHop, Ext::Routing, Ext::DestOpts];
    let (f, p) = parse(&ip.frame());
    assert_eq!(f, Frame::Ip);
    assert_eq!((p.proto, p.dport), (IPPROTO_TCP, 22));
}

#[test]
fn too_long_an_extension_chain_is_malformed() {
    let mut ip = Ipv6::new(v6(1, 2), v6(1, 1), IPPROTO_TCP, tcp(5, 22, TCP_SYN));
    ip.ext = vec![Ext::DestOpts; MAX_IPV6_EXT_HEADERS + 1];
    assert_eq!(parse(&ip.frame()).0, Frame::Malformed);
}

#[test]
fn fragments_are_classified() {
    let mut first = Ipv4::new(v4(10, 0, 0, 2), v4(10, 0, 0, 1), IPPROTO_UDP, frames::udp(1, 53, b"x"));
    first.more_fragments = true;
    first.id = 77;
    let (f, p) = parse(&first.frame());
    assert_eq!((f, p.fragment, p.frag_id, p.dport), (Frame::Ip, FRAG_FIRST, 77, 53));
    let mut later = first.clone();
    later.frag_offset = 3;
    later.payload = vec![0; 16];
    let (f, p) = parse(&later.frame());
    assert_eq!((f, p.fragment, p.dport), (Frame::Ip, FRAG_LATER, 0));
    // TCP at offset 8 bytes rewrites the first fragment's header (RFC 1858).
    let mut overlap = Ipv4::new(v4(10, 0, 0, 2), v4(10, 0, 0, 1), IPPROTO_TCP, vec![0; 16]);
    overlap.frag_offset = 1;
    assert_eq!(parse(&overlap.frame()).0, Frame::Malformed);
    let mut v6later = Ipv6::new(v6(1, 2), v6(1, 1), IPPROTO_UDP, vec![0; 16]);
    v6later.ext = vec![Ext::Fragment { offset: 2, more: false, id: 9 }];
    let (f, p) = parse(&v6later.frame());
    assert_eq!((f, p.fragment, p.frag_id, p.proto), (Frame::Ip, FRAG_LATER, 9, IPPROTO_UDP));
}

#[test]
fn address_resolution_passes_only_as_the_rfcs_define_it() {
    assert_eq!(parse(&frames::arp()).0, Frame::AddressResolution);
    assert_eq!(parse(&frames::neighbour_solicitation(v6(1, 2), v6(1, 1), 255)).0, Frame::AddressResolution);
    // Not from this link: judged like any ICMPv6.
    assert_eq!(parse(&frames::neighbour_solicitation(v6(1, 2), v6(1, 1), 64)).0, Frame::Ip);
    // Multicast listener reports stay on the link (hop limit 1, behind a hop-by-hop header).
    let link_local = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    assert_eq!(parse(&frames::mld_report(link_local, 1)).0, Frame::AddressResolution);
    assert_eq!(parse(&frames::mld_report(link_local, 2)).0, Frame::Ip);
}

#[test]
fn vlan_and_unknown_ethertypes_are_not_ip() {
    let vlan = frames::eth(0x8100, &[0, 1, 0x08, 0x00, 0x45, 0]);
    assert_eq!(parse(&vlan).0, Frame::NonIp);
    assert_eq!(parse(&frames::eth(0x88cc, &[0; 40])).0, Frame::NonIp);
}

#[test]
fn icmp_errors_quote_the_offending_flow() {
    let offending = Ipv4::new(v4(10, 0, 0, 1), v4(192, 0, 2, 9), IPPROTO_TCP, tcp(40000, 443, TCP_SYN)).packet();
    let err = frames::icmp4_error(v4(10, 9, 9, 9), v4(10, 0, 0, 1), 3, 4, &offending);
    let (f, p) = parse(&err);
    assert_eq!((f, p.icmp), (Frame::Ip, ICMP_ERROR));
    assert_eq!(p.quoted.valid, 1);
    assert_eq!((p.quoted.proto, p.quoted.sport, p.quoted.dport), (IPPROTO_TCP, 40000, 443));
    assert_eq!(p.quoted.dst[..4], [192, 0, 2, 9]);
}
