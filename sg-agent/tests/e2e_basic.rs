//! End to end with real packets (SPEC §2–§3 basics): a web instance behind the agent, a client
//! in an allowed subnet and one in a denied subnet, IPv4 and IPv6.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use support::*;

/// web-1 on veth-web; client A (10.0.2.0/24, fd00:2::/64) is allowed in, client B
/// (10.0.3.0/24, fd00:3::/64) is not; web may call B on TCP 9000 and UDP 9001.
const POLICY: &str = r#"{
  "security_groups": [{
    "id": "sg-web",
    "ingress": [
      { "protocol": "tcp", "from_port": 8080, "to_port": 8080, "cidrs": ["10.0.2.0/24", "fd00:2::/64"] },
      { "protocol": "udp", "from_port": 5353, "to_port": 5353, "cidrs": ["10.0.2.0/24", "fd00:2::/64"] },
      { "protocol": "icmp", "from_port": 8, "to_port": -1, "cidrs": ["10.0.2.0/24"] },
      { "protocol": "icmpv6", "from_port": 128, "to_port": -1, "cidrs": ["fd00:2::/64"] }
    ],
    "egress": [
      { "protocol": "tcp", "from_port": 9000, "to_port": 9000, "cidrs": ["10.0.3.0/24", "fd00:3::/64"] },
      { "protocol": "udp", "from_port": 9001, "to_port": 9001, "cidrs": ["10.0.3.0/24", "fd00:3::/64"] }
    ]
  }],
  "instances": [
    { "id": "web-1", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"], "security_groups": ["sg-web"] }
  ]
}"#;

fn setup() -> (Topology, Agent) {
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    topo.add("veth-a", 2, 10);
    topo.add("veth-b", 3, 10);
    let agent = start_agent(&topo.node, POLICY, &[]);
    (topo, agent)
}

#[test]
fn inbound_tcp_allowed_from_one_cidr_and_dropped_from_another() {
    if !privileged() {
        return;
    }
    let (topo, agent) = setup();
    let web = topo.host("veth-web");
    for addr in [v4(web), v6(web)] {
        let _server = TcpServer::start(&web.ns, addr, 8080);
        assert!(tcp_ok(&topo.host("veth-a").ns, addr, 8080), "allowed client must reach {addr}:8080");
        let before = agent.counter("dropped_no_rule");
        assert!(!tcp_ok(&topo.host("veth-b").ns, addr, 8080), "denied client must not reach {addr}:8080");
        assert!(agent.counter("dropped_no_rule") > before, "the denied SYN is counted as dropped_no_rule");
    }
    assert!(agent.counter("allowed_by_rule") >= 2);
    assert!(agent.counter("allowed_tracked") >= 2, "replies and the rest of the flow pass as tracked");
}

#[test]
fn inbound_udp_allowed_from_one_cidr_and_dropped_from_another() {
    if !privileged() {
        return;
    }
    let (topo, _agent) = setup();
    let web = topo.host("veth-web");
    for addr in [v4(web), v6(web)] {
        let server = UdpServer::start(&web.ns, addr, 5353);
        assert!(udp_ok(&topo.host("veth-a").ns, addr, 5353), "allowed client must get a UDP answer from {addr}");
        let seen = server.received.load(std::sync::atomic::Ordering::Relaxed);
        assert!(!udp_ok(&topo.host("veth-b").ns, addr, 5353), "denied client must get no UDP answer from {addr}");
        assert_eq!(
            server.received.load(std::sync::atomic::Ordering::Relaxed),
            seen,
            "the denied datagram must not reach the server"
        );
    }
}

#[test]
fn icmp_echo_allowed_from_one_cidr_and_dropped_from_another() {
    if !privileged() {
        return;
    }
    let (topo, _agent) = setup();
    let web = topo.host("veth-web");
    for addr in [v4(web), v6(web)] {
        assert!(ping_ok(&topo.host("veth-a").ns, addr), "allowed client must ping {addr}");
        assert!(!ping_ok(&topo.host("veth-b").ns, addr), "denied client must not ping {addr}");
    }
}

#[test]
fn outbound_connection_gets_its_replies_without_an_inbound_rule() {
    if !privileged() {
        return;
    }
    let (topo, agent) = setup();
    let web = topo.host("veth-web");
    let b = topo.host("veth-b");
    for addr in [v4(b), v6(b)] {
        // B is not allowed in at all, yet web's connection to it works both ways (stateful).
        let _tcp = TcpServer::start(&b.ns, addr, 9000);
        assert!(tcp_ok(&web.ns, addr, 9000), "web must reach {addr}:9000 and get the replies");
        let _udp = UdpServer::start(&b.ns, addr, 9001);
        assert!(udp_ok(&web.ns, addr, 9001), "web's UDP request to {addr} must get its response");
        // The same port in from B is still refused: the reply allowance is per flow.
        let _back = TcpServer::start(&web.ns, v4(web), 9000);
        assert!(!tcp_ok(&b.ns, v4(web), 9000), "B must not open a connection to web");
    }
    assert!(agent.counter("allowed_tracked") > 0);
}

#[test]
fn traffic_matching_no_rule_is_dropped_in_both_directions() {
    if !privileged() {
        return;
    }
    let (topo, agent) = setup();
    let web = topo.host("veth-web");
    let a = topo.host("veth-a");
    // Forget the neighbours, so that address resolution has to cross the filter below.
    web.ns.exec(&["ip", "neigh", "flush", "all"]);
    // Inbound: a port no rule names, from an otherwise allowed client.
    let _server = TcpServer::start(&web.ns, v4(web), 8081);
    assert!(!tcp_ok(&a.ns, v4(web), 8081));
    // Outbound: web to a destination its egress rules do not name.
    let _out = TcpServer::start(&a.ns, v4(a), 9000);
    assert!(!tcp_ok(&web.ns, v4(a), 9000), "egress to 10.0.2.0/24 is not allowed");
    let _udp = UdpServer::start(&a.ns, v6(a), 9001);
    assert!(!udp_ok(&web.ns, v6(a), 9001), "egress UDP to fd00:2::/64 is not allowed");
    assert!(agent.counter("dropped_no_rule") >= 3);
    // ARP and neighbour discovery kept working throughout (web had to resolve its gateway).
    assert!(agent.counter("passed_address_resolution") > 0);
}

#[test]
fn status_reports_the_attachment_and_sigterm_leaves_enforcement() {
    if !privileged() {
        return;
    }
    let (topo, mut agent) = setup();
    let status = agent.status();
    assert_eq!(status["enforcing"], true);
    assert_eq!(status["generation"], 1);
    let iface = &status["interfaces"][0];
    assert_eq!(iface["interface"], "veth-web");
    assert_eq!(iface["instance"], "web-1");
    assert_eq!(iface["tc"], "tcx");
    assert!(iface["xdp"] == "native" || iface["xdp"] == "generic", "xdp mode: {}", iface["xdp"]);

    let exit = agent.stop();
    assert!(exit.success(), "SIGTERM must exit cleanly: {exit}");
    // No agent now; the pinned programs keep enforcing and status still answers from pins.
    let web = topo.host("veth-web");
    let _server = TcpServer::start(&web.ns, v4(web), 8080);
    assert!(tcp_ok(&topo.host("veth-a").ns, v4(web), 8080));
    assert!(!tcp_ok(&topo.host("veth-b").ns, v4(web), 8080), "denied traffic stays denied with no agent");
    let out = agent.cli(&["status", "--json"]);
    assert!(out.status.success(), "status exits 0 while pinned policy enforces");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["agent_running"], false);
    assert_eq!(s["enforcing"], true);
    // Teardown removes enforcement: afterwards the denied client gets through.
    let out = agent.cli(&["teardown"]);
    assert!(out.status.success(), "teardown: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tcp_ok(&topo.host("veth-b").ns, v4(web), 8080), "after teardown nothing filters");
    assert!(!agent.cli(&["status"]).status.success(), "status fails once nothing enforces");
}
