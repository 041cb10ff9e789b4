//! The kernel programs on crafted frames (`BPF_PROG_TEST_RUN`): DHCP and the node's service
//! addresses pass unjudged and are counted (SPEC §3), MLD passes as address resolution, each
//! interface counts its own verdicts, and a tracked flow expires by its instance's own
//! conntrack timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use sg_common::{
    maps::CtKey,
    packet::{IPPROTO_TCP, IPPROTO_UDP, TCP_SYN},
};
use sg_lab::frames::{self, v4};
use support::*;

/// A VM on `lo` (a workload: what XDP sees is what the VM sends) with no outbound rule.
fn vm(services: &str) -> String {
    format!(
        r#"{{ "security_groups": [ {{ "id": "sg-vm", "egress": [] }} ], {services}
             "instances": [ {{ "id": "vm", "interface": "lo", "addresses": ["10.0.0.1", "fd00:1::1"],
                              "security_groups": ["sg-vm"] }} ] }}"#
    )
}

const VM: [u8; 4] = v4(10, 0, 0, 1);

#[test]
fn dhcp_and_service_addresses_pass_unjudged_and_counted() {
    if !privileged() {
        return;
    }
    let k = Kernel::load(&vm(""));
    let discover = frames::udp4(v4(0, 0, 0, 0), v4(255, 255, 255, 255), 68, 67);
    assert_eq!(k.xdp(&discover), (XDP_PASS, "passed_node_service"));
    let metadata = frames::tcp4(VM, v4(169, 254, 169, 254), 40000, 80, TCP_SYN);
    assert_eq!(k.xdp(&metadata), (XDP_PASS, "passed_node_service"));
    let dns = frames::udp4(VM, v4(169, 254, 169, 253), 40000, 53);
    assert_eq!(k.xdp(&dns), (XDP_PASS, "passed_node_service"));
    assert_eq!(k.xdp(&frames::tcp4(VM, v4(192, 0, 2, 1), 40000, 80, TCP_SYN)), (XDP_DROP, "dropped_no_rule"));
    assert!(k.enforcer.maps.conntrack_entries().is_empty(), "service traffic makes no conntrack entry");
    // Per interface too: lo (index 1) counted each.
    let per_iface = k.enforcer.maps.iface_counters();
    let lo = &per_iface[&1];
    assert_eq!(lo["passed_node_service"].packets, 3);
    assert_eq!(lo["dropped_no_rule"].packets, 1);
    // MLD from the link passes as address resolution.
    let link_local = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(k.xdp(&frames::mld_report(link_local, 1)), (XDP_PASS, "passed_address_resolution"));

    // The document's list replaces EC2's; [] leaves only DHCP.
    let k = Kernel::load(&vm(r#""node_services": [],"#));
    assert_eq!(k.xdp(&discover), (XDP_PASS, "passed_node_service"));
    assert_eq!(k.xdp(&metadata), (XDP_DROP, "dropped_no_rule"));
    let k = Kernel::load(&vm(r#""node_services": ["169.254.169.253:udp/53"],"#));
    assert_eq!(k.xdp(&dns), (XDP_PASS, "passed_node_service"));
    assert_eq!(k.xdp(&frames::tcp4(VM, v4(169, 254, 169, 253), 40000, 53, TCP_SYN)), (XDP_DROP, "dropped_no_rule"));
}

/// The node on `lo` (host role: XDP sees inbound), UDP 53 and TCP 80 allowed in, with `own` as
/// its conntrack timeouts.
fn node(own: &str) -> String {
    format!(
        r#"{{ "security_groups": [ {{ "id": "sg-node", "ingress": [
               {{ "protocol": "udp", "from_port": 53, "to_port": 53, "cidrs": ["10.0.0.0/8"] }},
               {{ "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["10.0.0.0/8"] }} ] }} ],
             "instances": [ {{ "id": "node", "interface": "lo", "role": "host", "addresses": ["10.0.0.1"],
                              "security_groups": ["sg-node"] {own} }} ] }}"#
    )
}

fn age(k: &mut Kernel, proto: u8, secs: u32) -> CtKey {
    let (key, mut e) = k.enforcer.maps.conntrack_entries().into_iter().find(|(key, _)| key.proto == proto).unwrap();
    e.last_seen -= secs;
    k.enforcer.maps.conntrack.insert(&key, e).unwrap();
    key
}

#[test]
fn a_flow_expires_by_its_instances_own_timeouts() {
    if !privileged() {
        return;
    }
    const PEER: [u8; 4] = v4(10, 0, 0, 2);
    let query = frames::udp4(PEER, VM, 5353, 53);
    let syn = frames::tcp4(PEER, VM, 40000, 80, TCP_SYN);
    let ack = frames::tcp4(PEER, VM, 40000, 80, sg_common::packet::TCP_ACK);
    // The agent's UDP timeout is 30 s: 45 s idle, the flow is gone.
    let mut k = Kernel::load(&node(""));
    assert_eq!(k.xdp(&query), (XDP_PASS, "allowed_by_rule"));
    age(&mut k, IPPROTO_UDP, 45);
    assert_eq!(k.xdp(&query), (XDP_PASS, "allowed_by_rule"), "expired after 45 s with the agent's 30 s");
    // The instance's own 60 s: still tracked after 45 s, gone after 61.
    let mut k = Kernel::load(&node(r#", "conntrack_timeouts": { "udp": 60, "tcp_established": 60 }"#));
    assert_eq!(k.xdp(&query), (XDP_PASS, "allowed_by_rule"));
    age(&mut k, IPPROTO_UDP, 45);
    assert_eq!(k.xdp(&query), (XDP_PASS, "allowed_tracked"), "its own 60 s keep it after 45 s");
    age(&mut k, IPPROTO_UDP, 61);
    assert_eq!(k.xdp(&query), (XDP_PASS, "allowed_by_rule"), "expired after 61 s");
    // TCP established: 60 s instead of five days.
    assert_eq!(k.xdp(&syn), (XDP_PASS, "allowed_by_rule"));
    assert_eq!(k.tc(&frames::tcp4(VM, PEER, 80, 40000, TCP_SYN | sg_common::packet::TCP_ACK)).1, "allowed_tracked");
    age(&mut k, IPPROTO_TCP, 61);
    assert_eq!(k.xdp(&ack), (XDP_PASS, "allowed_by_rule"), "an established flow idle past its own 60 s is new");
}
