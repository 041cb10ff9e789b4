//! Connection tracking in the kernel programs, driven by crafted frames (`BPF_PROG_TEST_RUN`):
//! the TCP state machine, UDP stream promotion, ICMP echo and related errors, fragments, and
//! timeouts (by ageing entries' timestamps).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use sg_common::{
    conntrack::CtState,
    maps::{CT_F_REPLIED, CT_F_STREAM, CtEntry, CtKey, Settings},
    packet::{IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};
use sg_lab::frames::{self, Ext, Ipv4, Ipv6, tcp, udp, v4, v6};
use support::*;

/// The node ("host" role on lo: XDP sees inbound, TC outbound). In: TCP 80, UDP 53, ICMP and
/// ICMPv6 echo. Out: TCP 443 and UDP 123 only.
const POLICY: &str = r#"{
  "security_groups": [{
    "id": "sg-node",
    "ingress": [
      { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["10.0.0.0/8", "fd00::/16"] },
      { "protocol": "udp", "from_port": 53, "to_port": 53, "cidrs": ["10.0.0.0/8", "fd00::/16"] },
      { "protocol": "icmp", "from_port": 8, "to_port": -1, "cidrs": ["10.0.0.0/8"] },
      { "protocol": "icmpv6", "from_port": 128, "to_port": -1, "cidrs": ["fd00::/16"] }
    ],
    "egress": [
      { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0", "::/0"] },
      { "protocol": "udp", "from_port": 123, "to_port": 123, "cidrs": ["0.0.0.0/0", "::/0"] }
    ]
  }],
  "instances": [
    { "id": "node", "interface": "lo", "role": "host", "addresses": ["10.0.0.1", "fd00:1::1"], "security_groups": ["sg-node"] }
  ]
}"#;

const NODE: [u8; 4] = v4(10, 0, 0, 1);
const PEER: [u8; 4] = v4(10, 0, 0, 2);
const FAR: [u8; 4] = v4(192, 0, 2, 9);
const PASS: i32 = -1; // TC: continue (pass)
const DROP: i32 = 2; // TC_ACT_SHOT

fn entries(k: &Kernel) -> Vec<(CtKey, CtEntry)> {
    k.enforcer.maps.conntrack_entries()
}

/// The single entry of protocol `proto`.
fn entry(k: &Kernel, proto: u8) -> (CtKey, CtEntry) {
    let matching: Vec<_> = entries(k).into_iter().filter(|(key, _)| key.proto == proto).collect();
    assert_eq!(matching.len(), 1, "one {proto} entry expected: {matching:?}");
    matching[0]
}

fn state(k: &Kernel) -> CtState {
    CtState::from_u8(entry(k, IPPROTO_TCP).1.state)
}

/// Moves an entry's last packet `secs` seconds into the past.
fn age(k: &mut Kernel, key: &CtKey, secs: u64) {
    let mut e = k.enforcer.maps.conntrack.get(key).unwrap();
    e.last_seen -= secs as u32;
    k.enforcer.maps.conntrack.insert(key, e).unwrap();
}

#[test]
fn tcp_state_machine_from_handshake_to_close() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    let inbound = |flags| frames::tcp4(PEER, NODE, 40000, 80, flags);
    let outbound = |flags| frames::tcp4(NODE, PEER, 80, 40000, flags);
    assert_eq!(k.xdp(&inbound(TCP_SYN)), (XDP_PASS, "allowed_by_rule"));
    assert_eq!(state(&k), CtState::SynSent);
    assert_eq!(k.tc(&outbound(TCP_SYN | TCP_ACK)), (PASS, "allowed_tracked"), "the SYN-ACK needs no rule");
    assert_eq!(state(&k), CtState::Established);
    assert_eq!(k.xdp(&inbound(TCP_ACK)), (XDP_PASS, "allowed_tracked"));
    assert_eq!(k.xdp(&inbound(TCP_FIN | TCP_ACK)), (XDP_PASS, "allowed_tracked"));
    assert_eq!(state(&k), CtState::FinWait);
    assert_eq!(k.tc(&outbound(TCP_FIN | TCP_ACK)), (PASS, "allowed_tracked"));
    assert_eq!(state(&k), CtState::TimeWait, "both FINs seen: only the last ACK remains");
    assert_eq!(k.xdp(&inbound(TCP_ACK)), (XDP_PASS, "allowed_tracked"));
    // A new SYN on the same ports is a new connection: judged by the rules again.
    assert_eq!(k.xdp(&inbound(TCP_SYN)), (XDP_PASS, "allowed_by_rule"));
    assert_eq!(state(&k), CtState::SynSent);
    assert_eq!(k.tc(&outbound(TCP_RST | TCP_ACK)), (PASS, "allowed_tracked"));
    assert_eq!(state(&k), CtState::Closed);
    let s = Settings::DEFAULT;
    assert!(s.tcp_closed < 60 && s.tcp_syn <= 60, "closed and half-open connections leave promptly");
}

#[test]
fn tcp_replies_of_a_denied_direction_only_pass_when_tracked() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    // Nothing allows the node to send from port 80 unasked.
    assert_eq!(k.tc(&frames::tcp4(NODE, PEER, 80, 40001, TCP_SYN | TCP_ACK)), (DROP, "dropped_no_rule"));
    // Outbound to 443 is allowed; the reply comes back with no inbound rule for it.
    assert_eq!(k.tc(&frames::tcp4(NODE, FAR, 50000, 443, TCP_SYN)), (PASS, "allowed_by_rule"));
    assert_eq!(k.xdp(&frames::tcp4(FAR, NODE, 443, 50000, TCP_SYN | TCP_ACK)), (XDP_PASS, "allowed_tracked"));
    let (key, e) = entry(&k, IPPROTO_TCP);
    assert_eq!((key.far_port, key.near_port), (443, 50000), "one entry, oriented by the interface");
    assert_eq!(sg_common::conntrack::origin(&e), sg_common::orientation::Hook::Transmit, "first seen on transmit");
}

#[test]
fn a_flow_picked_up_mid_stream_is_established() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    // After a flush or a restart, a packet of a live connection that the rules allow re-creates
    // its entry as established, so the connection is not cut.
    assert_eq!(k.xdp(&frames::tcp4(PEER, NODE, 40000, 80, TCP_ACK)), (XDP_PASS, "allowed_by_rule"));
    assert_eq!(state(&k), CtState::Established);
}

#[test]
fn udp_single_exchange_then_stream() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    let query = frames::udp4(PEER, NODE, 5353, 53);
    let answer = frames::udp4(NODE, PEER, 53, 5353);
    assert_eq!(k.xdp(&query), (XDP_PASS, "allowed_by_rule"));
    assert_eq!(entry(&k, IPPROTO_UDP).1.flags & (CT_F_REPLIED | CT_F_STREAM), 0);
    assert_eq!(k.tc(&answer), (PASS, "allowed_tracked"), "the answer needs no rule");
    assert_eq!(entry(&k, IPPROTO_UDP).1.flags & (CT_F_REPLIED | CT_F_STREAM), CT_F_REPLIED, "a single exchange");
    assert_eq!(k.xdp(&query), (XDP_PASS, "allowed_tracked"));
    assert_eq!(entry(&k, IPPROTO_UDP).1.flags & CT_F_STREAM, CT_F_STREAM, "a second exchange makes it a stream");
    let (key, e) = entry(&k, IPPROTO_UDP);
    let s = Settings::DEFAULT;
    assert_eq!(sg_common::conntrack::timeout_secs(&e, key.proto, &s), s.udp_stream);
    // Unsolicited UDP from the node's port 53 to another port has no rule and no entry.
    assert_eq!(k.tc(&frames::udp4(NODE, PEER, 53, 9999)), (DROP, "dropped_no_rule"));
}

#[test]
fn icmp_echo_is_tracked_by_identifier() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    assert_eq!(k.xdp(&frames::icmp4(PEER, NODE, 8, 0, 7)), (XDP_PASS, "allowed_by_rule"));
    assert_eq!(k.tc(&frames::icmp4(NODE, PEER, 0, 0, 7)), (PASS, "allowed_tracked"), "the reply with the same id");
    assert_eq!(k.tc(&frames::icmp4(NODE, PEER, 0, 0, 8)), (DROP, "dropped_no_rule"), "a reply with another id");
    let peer6 = v6(1, 2);
    assert_eq!(k.xdp(&frames::icmp6(peer6, v6(1, 1), 128, 0, 9)), (XDP_PASS, "allowed_by_rule"));
    assert_eq!(k.tc(&frames::icmp6(v6(1, 1), peer6, 129, 0, 9)), (PASS, "allowed_tracked"));
    assert_eq!(k.tc(&frames::icmp6(v6(1, 1), peer6, 129, 0, 10)), (DROP, "dropped_no_rule"));
}

#[test]
fn icmp_errors_about_a_tracked_flow_are_related() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    let router = v4(10, 9, 9, 9);
    let syn = Ipv4::new(NODE, FAR, IPPROTO_TCP, tcp(50000, 443, TCP_SYN));
    assert_eq!(k.tc(&syn.frame()), (PASS, "allowed_by_rule"));
    // Fragmentation needed (3/4) and time exceeded (11/0) quoting the tracked SYN.
    for (ty, code) in [(3, 4), (11, 0), (3, 1)] {
        let err = frames::icmp4_error(router, NODE, ty, code, &syn.packet());
        assert_eq!(k.xdp(&err), (XDP_PASS, "allowed_related"), "ICMP {ty}/{code}");
    }
    // Quoting a flow that is not tracked: judged by the rules (none allows it).
    let other = Ipv4::new(NODE, FAR, IPPROTO_TCP, tcp(50001, 443, TCP_SYN));
    assert_eq!(k.xdp(&frames::icmp4_error(router, NODE, 3, 4, &other.packet())), (XDP_DROP, "dropped_no_rule"));
    // Garbage where the quote should be.
    let garbage = frames::icmp4_error(router, NODE, 3, 4, &[0x45, 0, 0, 0]);
    assert_eq!(k.xdp(&garbage), (XDP_DROP, "dropped_no_rule"));

    // IPv6: packet too big.
    let (node6, far6) = (v6(1, 1), v6(0xff, 9));
    let syn6 = Ipv6::new(node6, far6, IPPROTO_TCP, tcp(50002, 443, TCP_SYN));
    assert_eq!(k.tc(&syn6.frame()), (PASS, "allowed_by_rule"));
    let ptb = frames::icmp6_error(v6(9, 9), node6, 2, 0, &syn6.packet());
    assert_eq!(k.xdp(&ptb), (XDP_PASS, "allowed_related"));
    let other6 = Ipv6::new(node6, far6, IPPROTO_TCP, tcp(50003, 443, TCP_SYN));
    assert_eq!(k.xdp(&frames::icmp6_error(v6(9, 9), node6, 2, 0, &other6.packet())), (XDP_DROP, "dropped_no_rule"));
}

#[test]
fn later_fragments_get_the_first_fragments_verdict() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(POLICY);
    let fragment = |id: u16, port: u16, offset: u16| {
        let mut ip = if offset == 0 {
            Ipv4::new(PEER, NODE, IPPROTO_UDP, udp(5000, port, &[1; 16]))
        } else {
            Ipv4::new(PEER, NODE, IPPROTO_UDP, vec![2; 16])
        };
        ip.id = id;
        ip.frag_offset = offset;
        ip.more_fragments = offset == 0;
        ip.frame()
    };
    assert_eq!(k.xdp(&fragment(1, 53, 0)), (XDP_PASS, "allowed_by_rule"));
    assert_eq!(k.xdp(&fragment(1, 0, 3)), (XDP_PASS, "allowed_fragment"));
    assert_eq!(k.xdp(&fragment(2, 0, 3)), (XDP_DROP, "dropped_fragment"), "no first fragment seen");
    assert_eq!(k.xdp(&fragment(3, 99, 0)), (XDP_DROP, "dropped_no_rule"));
    assert_eq!(k.xdp(&fragment(3, 0, 3)), (XDP_DROP, "dropped_fragment"), "the first fragment was dropped");

    let frag6 = |id: u32, port: u16, offset: u16| {
        let payload = if offset == 0 { udp(5000, port, &[1; 16]) } else { vec![2; 16] };
        let mut ip = Ipv6::new(v6(1, 2), v6(1, 1), IPPROTO_UDP, payload);
        ip.ext = vec![Ext::Fragment { offset, more: offset == 0, id }];
        ip.frame()
    };
    assert_eq!(k.xdp(&frag6(7, 53, 0)), (XDP_PASS, "allowed_by_rule"));
    assert_eq!(k.xdp(&frag6(7, 0, 3)), (XDP_PASS, "allowed_fragment"));
    assert_eq!(k.xdp(&frag6(8, 0, 3)), (XDP_DROP, "dropped_fragment"));
}

#[test]
fn expired_entries_stop_admitting_and_are_collected() {
    if !privileged() {
        return;
    }
    let mut k = Kernel::load(POLICY);
    let s = Settings::DEFAULT;
    // UDP: a single exchange lives 30 s.
    assert_eq!(k.xdp(&frames::udp4(PEER, NODE, 5353, 53)), (XDP_PASS, "allowed_by_rule"));
    let (key, _) = entry(&k, IPPROTO_UDP);
    age(&mut k, &key, u64::from(s.udp) - 2);
    assert_eq!(k.tc(&frames::udp4(NODE, PEER, 53, 5353)), (PASS, "allowed_tracked"), "still alive");
    age(&mut k, &key, u64::from(s.udp) + 2);
    assert_eq!(k.tc(&frames::udp4(NODE, PEER, 53, 5353)), (DROP, "dropped_no_rule"), "expired: no reply allowance");

    // TCP established. The monotonic clock may not go back five days on a fresh machine, so
    // the timeout is shortened (the datapath reads it on every check).
    k.enforcer.write_settings(&Settings { tcp_established: 100, ..s }).unwrap();
    assert_eq!(k.tc(&frames::tcp4(NODE, FAR, 50000, 443, TCP_SYN)), (PASS, "allowed_by_rule"));
    assert_eq!(k.xdp(&frames::tcp4(FAR, NODE, 443, 50000, TCP_SYN | TCP_ACK)), (XDP_PASS, "allowed_tracked"));
    let (key, _) = entry(&k, IPPROTO_TCP);
    age(&mut k, &key, 90);
    assert_eq!(k.xdp(&frames::tcp4(FAR, NODE, 443, 50000, TCP_ACK)), (XDP_PASS, "allowed_tracked"));
    age(&mut k, &key, 101);
    assert_eq!(k.xdp(&frames::tcp4(FAR, NODE, 443, 50000, TCP_ACK)), (XDP_DROP, "dropped_no_rule"));

    // Shorter timeouts take effect at once for every flow.
    assert_eq!(k.xdp(&frames::icmp4(PEER, NODE, 8, 0, 1)), (XDP_PASS, "allowed_by_rule"));
    let (key, _) = entry(&k, 1);
    age(&mut k, &key, 100);
    k.enforcer.write_settings(&Settings { icmp: 60, tcp_established: 100, ..s }).unwrap();
    assert_eq!(k.tc(&frames::icmp4(NODE, PEER, 0, 0, 1)), (DROP, "dropped_no_rule"));

    // GC removes what expired and keeps the rest.
    let before = entries(&k).len();
    let (seen, removed) = sg_agent::conntrack::gc::expire(&mut k.enforcer.maps).unwrap();
    assert_eq!(seen, before);
    assert!(removed >= 3, "the expired UDP, TCP and ICMP entries go ({removed} of {seen})");
    assert!(entries(&k).iter().all(|(key, e)| !sg_common::conntrack::is_expired(
        e,
        key.proto,
        &k.enforcer.maps.read_settings().unwrap(),
        sg_agent::clock::monotonic_ns()
    )));
}

#[test]
fn gc_reads_the_table_in_batches_and_removes_only_expired_entries() {
    if !privileged() {
        return;
    }
    let mut k = Kernel::load_with(POLICY, 65_536);
    let now = sg_common::conntrack::seconds(sg_agent::clock::monotonic_ns());
    let n = 20_000u32;
    for i in 0..n {
        let mut key = CtKey {
            ifindex: 1,
            family: 4,
            proto: IPPROTO_UDP,
            far_port: (i % 60_000) as u16,
            near_port: 53,
            ..CtKey::default()
        };
        key.far_addr[..4].copy_from_slice(&[10, 1, (i >> 8) as u8, i as u8]);
        // Every other entry went quiet 31 s ago: past the 30 s UDP timeout.
        let last_seen = if i % 2 == 0 { now - 31 } else { now };
        let entry = CtEntry { last_seen, rule: 0, state: 0, flags: 0 };
        k.enforcer.maps.conntrack.insert(&key, entry).unwrap();
    }
    let mut seen = 0;
    use std::os::fd::AsFd as _;

    use aya::maps::IterableMap as _;
    // IPv4 flows: the compact table.
    let table = k.enforcer.maps.conntrack.v4.map().fd().as_fd();
    sg_agent::datapath::batch::for_each(table, |_: &sg_common::maps::CtKey4, _: &CtEntry| seen += 1)
        .expect("batch lookup");
    assert_eq!(seen, n as usize, "the batch reader sees every entry exactly once");
    let started = std::time::Instant::now();
    let (scanned, removed) = sg_agent::conntrack::gc::expire(&mut k.enforcer.maps).unwrap();
    let took = started.elapsed();
    eprintln!(
        "GC: {scanned} entries scanned, {removed} removed in {took:?} ({:.0} ns per entry)",
        took.as_nanos() as f64 / f64::from(n)
    );
    assert_eq!((scanned, removed), (n as usize, n as usize / 2));
    assert_eq!(entries(&k).len(), n as usize / 2, "live entries stay");
}

#[test]
fn ipv4_flows_use_the_compact_table_and_ipv6_flows_the_wide_one() {
    if !privileged() {
        return;
    }
    let k = Kernel::load_with(POLICY, 65_536);
    assert_eq!(k.xdp(&frames::tcp4(PEER, NODE, 40000, 80, TCP_SYN)), (XDP_PASS, "allowed_by_rule"));
    let v6_peer = v6(1, 2);
    assert_eq!(k.xdp(&frames::tcp6(v6_peer, v6(1, 1), 40000, 80, TCP_SYN)), (XDP_PASS, "allowed_by_rule"));
    let conntrack = &k.enforcer.maps.conntrack;
    let compact: Vec<_> = conntrack.v4.iter().map(Result::unwrap).collect();
    let wide: Vec<_> = conntrack.wide.iter().map(Result::unwrap).collect();
    assert_eq!(compact.len(), 1, "{compact:?}");
    assert_eq!(wide.len(), 1, "{wide:?}");
    assert_eq!(compact[0].0.widen().far_addr[..4], PEER, "the IPv4 flow, by its compact key");
    assert_eq!(wide[0].0.far_addr, v6_peer);
    // Both are tracked through their tables: the replies pass without a rule.
    assert_eq!(k.tc(&frames::tcp4(NODE, PEER, 80, 40000, TCP_SYN | TCP_ACK)), (PASS, "allowed_tracked"));
    assert_eq!(k.tc(&frames::tcp6(v6(1, 1), v6_peer, 80, 40000, TCP_SYN | TCP_ACK)), (PASS, "allowed_tracked"));
    // An IPv4 flow costs at most 96 bytes of kernel memory; the IPv6 table reserves none.
    let (v4, wide) = conntrack.sizes();
    let per_flow = v4.memory_bytes.unwrap() / u64::from(v4.capacity);
    eprintln!("IPv4 conntrack: {per_flow} bytes per flow of capacity; IPv6 table: {:?} bytes", wide.memory_bytes);
    assert!(per_flow <= 96, "{per_flow} bytes per IPv4 flow");
    assert!(wide.memory_bytes.unwrap() < v4.memory_bytes.unwrap() / 4, "the IPv6 table is allocated on demand");
}
