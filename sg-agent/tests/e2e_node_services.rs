//! End to end with real packets (SPEC §3): a VM whose only group allows nothing out
//! (`"egress": []`) still gets its address by DHCP from a server on the node (dnsmasq) and
//! reaches the node's metadata service on 169.254.169.254, as in EC2 — both counted as
//! `passed_node_service` — while everything else it sends is dropped.
//!
//! The node side of the VM's veth gets 169.254.169.254 inside the test's namespaces only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{
    net::IpAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::*;

/// A process this test started, killed (by its pid) and reaped on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const POLICY: &str = r#"{
  "security_groups": [ { "id": "sg-vm", "ingress": [], "egress": [] } ],
  "instances": [ { "id": "vm", "interface": "veth-vm", "addresses": ["10.0.1.10"], "security_groups": ["sg-vm"] } ]
}"#;

#[test]
fn a_vm_with_no_egress_gets_its_lease_and_reaches_the_metadata_service() {
    if !privileged() {
        return;
    }
    // The node and a VM joined by a veth; the VM has no address yet.
    let node = Netns::new("node");
    let vm = Netns::new("vm");
    node.ip(&["link", "add", "veth-vm", "type", "veth", "peer", "name", "eth0", "netns", &vm.name]);
    node.ip(&["addr", "add", "10.0.1.1/24", "dev", "veth-vm"]);
    node.ip(&["addr", "add", "169.254.169.254/32", "dev", "veth-vm"]);
    node.ip(&["link", "set", "veth-vm", "up"]);
    vm.ip(&["link", "set", "eth0", "up"]);
    // A host elsewhere (not an instance), routed through the node.
    let rogue = Netns::new("rogue");
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.ip(&["link", "add", "veth-r", "type", "veth", "peer", "name", "eth0", "netns", &rogue.name]);
    node.ip(&["addr", "add", "10.0.9.1/24", "dev", "veth-r"]);
    node.ip(&["link", "set", "veth-r", "up"]);
    rogue.ip(&["addr", "add", "10.0.9.9/24", "dev", "eth0"]);
    rogue.ip(&["link", "set", "eth0", "up"]);
    rogue.ip(&["route", "add", "default", "via", "10.0.9.1"]);
    let agent = start_agent(&node, POLICY, &[]);

    // dnsmasq on the node: DHCP only (no DNS), the one address of the VM's instance.
    let leases = agent.dir.join("dnsmasq.leases");
    let dnsmasq = Command::new("ip")
        .args(["netns", "exec", &node.name, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
        .args(["--interface=veth-vm", "--bind-interfaces", "--user=root", "--dhcp-authoritative"])
        .args(["--dhcp-range=10.0.1.10,10.0.1.10,255.255.255.0,1h"])
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .arg(format!("--pid-file={}", agent.dir.join("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (Debian package dnsmasq-base; scripts/setup-toolchain.sh installs it)");
    let _dnsmasq = Process(dnsmasq);
    std::thread::sleep(Duration::from_millis(300));

    // The VM's DHCP client (busybox udhcpc), configuring what it is given.
    let script = agent.dir.join("udhcpc.sh");
    let bound = agent.dir.join("bound");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add \"$ip/24\" dev \"$interface\"\n\
             ip route add default via \"$router\"\necho \"$ip\" > {}\n",
            bound.display()
        ),
    )
    .unwrap();
    must(&["chmod", "0755", script.to_str().unwrap()]);
    let started = Instant::now();
    let out = vm.exec(&[
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-f",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        script.to_str().unwrap(),
    ]);
    let lease = std::fs::read_to_string(&bound).unwrap_or_default();
    assert_eq!(
        lease.trim(),
        "10.0.1.10",
        "no lease after {:?}: {}{}\nagent:\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );

    // The metadata service answers; nothing else on the node does.
    let metadata: IpAddr = "169.254.169.254".parse().unwrap();
    let node_addr: IpAddr = "10.0.1.1".parse().unwrap();
    let _metadata = TcpServer::start(&node, metadata, 80);
    let _ssh = TcpServer::start(&node, node_addr, 22);
    let _dns = UdpServer::start(&node, node_addr, 53);
    assert!(tcp_ok(&vm, metadata, 80), "the metadata service is reached with egress []");
    assert!(!tcp_ok(&vm, node_addr, 22), "other TCP is dropped");
    assert!(!udp_ok(&vm, node_addr, 53), "other UDP is dropped");
    assert!(!ping_ok(&vm, node_addr), "ICMP is dropped");
    // DHCP with anything but the node is judged: a "server" elsewhere does not reach the VM's
    // client port, nor does the VM reach it.
    let vm_addr: IpAddr = "10.0.1.10".parse().unwrap();
    {
        let client_port = UdpServer::start(&vm, vm_addr, 68);
        assert_eq!(udp_exchange(&rogue, 67, vm_addr, 68, 2, 8), 0);
        let received = client_port.received.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(received, 0, "a forwarded DHCP answer is dropped");
    }
    let _rogue_server = UdpServer::start(&rogue, "10.0.9.9".parse().unwrap(), 67);
    assert_eq!(udp_exchange(&vm, 68, "10.0.9.9".parse().unwrap(), 67, 1, 8), 0, "unicast DHCP beyond the link");

    let status = agent.status();
    let vm_iface = status["interfaces"].as_array().unwrap().iter().find(|i| i["interface"] == "veth-vm").unwrap();
    let passed = vm_iface["counters"]["passed_node_service"]["packets"].as_u64().unwrap_or(0);
    // DHCP discover, offer, request, ack, and both directions of the metadata connection.
    assert!(passed >= 8, "counted per instance: {vm_iface}");
    assert!(status["counters"]["passed_node_service"]["packets"].as_u64().unwrap_or(0) >= passed);
    assert!(vm_iface["counters"]["dropped_no_rule"]["packets"].as_u64().unwrap_or(0) > 0, "{vm_iface}");
    // Never tracked: no conntrack entry for the service traffic.
    let flows = agent.cli(&["conntrack", "list", "--json"]);
    let flows: serde_json::Value = serde_json::from_slice(&flows.stdout).unwrap();
    assert_eq!(flows.as_array().map(Vec::len), Some(0), "{flows}");
}
