//! Atomic policy swaps, live updates and restarts (SPEC §4), with real packets: a thousand
//! swaps under continuous probing, invalid documents, `kill -9`, instances coming and going,
//! SIGHUP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sg_agent::control::{self, Request};
use support::*;

/// web admits UDP from the client on port `open` only, and (a trap for a torn swap) UDP 9999
/// from a subnet that is not the client's. The trap prefix sorts before the client's in A and
/// after it in B, so the client's peer class in one generation is the trap's class in the
/// other: a packet judged with one generation's peer map and the other's rule map would reach
/// port 9999.
fn swap_policy(open: u16, trap_net: &str) -> String {
    format!(
        r#"{{ "security_groups": [ {{ "id": "sg-web", "ingress": [
            {{ "protocol": "udp", "from_port": {open}, "to_port": {open}, "cidrs": ["10.0.2.0/24", "fd00:2::/64"] }},
            {{ "protocol": "udp", "from_port": 9999, "to_port": 9999, "cidrs": ["{trap_net}"] }} ] }} ],
          "instances": [ {{ "id": "web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"],
                           "security_groups": ["sg-web"] }} ] }}"#
    )
}

#[test]
fn a_thousand_swaps_under_load_never_let_through_what_no_policy_allows() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    topo.add("veth-c", 2, 10);
    let policy_a = swap_policy(7001, "10.0.0.0/24");
    let policy_b = swap_policy(7002, "10.0.3.0/24");
    let agent = start_agent(&topo.node, &policy_a, &[]);
    let (web, client) = (topo.host("veth-web"), topo.host("veth-c"));
    let ports = [7001u16, 7002, 9999];
    let servers: Vec<(u16, IpAddr, UdpServer)> =
        ports.iter().flat_map(|&p| [v4(web), v6(web)].map(|a| (p, a, UdpServer::start(&web.ns, a, p)))).collect();

    // Probers: every datagram from a fresh socket, so each is a new flow judged by whatever
    // generation is live when it arrives.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let targets: Vec<SocketAddr> =
        ports.iter().flat_map(|&p| [v4(web), v6(web)].map(|a| SocketAddr::new(a, p))).collect();
    let probers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, sent, targets) = (stop.clone(), sent.clone(), targets.clone());
            client.ns.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for t in &targets {
                        let bind: SocketAddr = if t.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
                        if UdpSocket::bind(bind).is_ok_and(|s| s.send_to(b"probe", t).is_ok()) {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let started = Instant::now();
    let swaps = 1000;
    let mut apply_ms = Vec::with_capacity(swaps);
    for i in 0..swaps {
        let document = if i % 2 == 0 { policy_b.clone() } else { policy_a.clone() };
        let response = runtime
            .block_on(control::call(
                &agent.socket,
                &Request::Apply { document, instances: Vec::new() },
                Duration::from_secs(30),
            ))
            .unwrap();
        assert_eq!(response.exit_code, 0, "swap {i}: {:?}", response.error);
        apply_ms.push(response.data["apply_ms"].as_f64().unwrap_or(0.0));
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for p in probers {
        p.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));

    let received = |port: u16| -> usize {
        servers.iter().filter(|(p, _, _)| *p == port).map(|(_, _, s)| s.received.load(Ordering::Relaxed)).sum()
    };
    apply_ms.sort_by(f64::total_cmp);
    eprintln!(
        "{swaps} swaps in {elapsed:?} (apply median {:.1} ms, max {:.1} ms); {} probes sent; received on 7001 (A only): {}, \
         7002 (B only): {}, 9999 (neither): {}",
        apply_ms[swaps / 2],
        apply_ms[swaps - 1],
        sent.load(Ordering::Relaxed),
        received(7001),
        received(7002),
        received(9999)
    );
    assert_eq!(received(9999), 0, "no probe may pass on a port that neither policy allows");
    assert!(received(7001) > 0 && received(7002) > 0, "both policies were live in turn");
    assert_eq!(agent.status()["generation"], swaps as u64 + 1);
}

const WEB: &str = r#"{
  "security_groups": [ { "id": "sg-web", "ingress": [
      { "protocol": "tcp", "from_port": 8080, "to_port": 8080, "cidrs": ["10.0.2.0/24", "fd00:2::/64"] } ] } ],
  "instances": [ { "id": "web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"],
                   "security_groups": ["sg-web"] } ] }"#;

fn web_and_two_clients() -> Topology {
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    topo.add("veth-a", 2, 10);
    topo.add("veth-b", 3, 10);
    topo
}

#[test]
fn an_invalid_document_changes_nothing() {
    if !privileged() {
        return;
    }
    let topo = web_and_two_clients();
    let agent = start_agent(&topo.node, WEB, &[]);
    let web = topo.host("veth-web");
    let _s = TcpServer::start(&web.ns, v4(web), 8080);
    let bad = WEB.replace("\"from_port\": 8080, \"to_port\": 8080", "\"from_port\": 8080, \"to_port\": 70000");
    let out = agent.apply(&bad);
    assert_eq!(out.status.code(), Some(2), "invalid input exits 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("security_groups[0].ingress[0].to_port: 70000 is not a port"), "{stderr}");
    assert_eq!(agent.status()["generation"], 1, "the old generation stays in force");
    assert!(tcp_ok(&topo.host("veth-a").ns, v4(web), 8080), "the allowed path still works");
    assert!(!tcp_ok(&topo.host("veth-b").ns, v4(web), 8080), "the denied path is still denied");
    assert_eq!(agent.status()["interfaces"][0]["interface"], "veth-web");
}

#[test]
fn kill_9_leaves_enforcement_and_a_new_agent_adopts_it() {
    if !privileged() {
        return;
    }
    let topo = web_and_two_clients();
    let agent = start_agent(&topo.node, WEB, &[]);
    let (web, a, b) = (topo.host("veth-web"), topo.host("veth-a"), topo.host("veth-b"));
    let _servers = [TcpServer::start(&web.ns, v4(web), 8080), TcpServer::start(&web.ns, v6(web), 8080)];
    let mut established = LongConnection::open(&a.ns, v6(web), 8080);
    assert!(established.roundtrip("hello\n"));

    let remains = agent.crash();
    // No agent at all now.
    assert!(!tcp_ok(&b.ns, v4(web), 8080), "denied traffic stays denied while no agent runs");
    assert!(tcp_ok(&a.ns, v4(web), 8080), "allowed traffic still flows");
    assert!(established.roundtrip("no agent\n"), "the established connection keeps working");

    let agent = restart_agent(&topo.node, remains, &[]);
    let status = agent.status();
    assert_eq!(status["generation"], 1, "the new agent adopts the pinned generation");
    assert_eq!(status["interfaces"][0]["xdp"], "adopted", "{status}\n{}", agent.log_text());
    assert!(established.roundtrip("new agent\n"), "tracked flows survive the restart");
    assert!(agent.log_text().contains("adopted generation 1"), "{}", agent.log_text());

    // And applies the next document.
    let next = WEB.replace("10.0.2.0/24\", \"fd00:2::/64", "10.0.3.0/24\", \"fd00:3::/64");
    agent.apply_ok(&next);
    assert_eq!(agent.status()["generation"], 2);
    assert!(tcp_ok(&b.ns, v4(web), 8080), "b is allowed now");
    assert!(!tcp_ok(&a.ns, v4(web), 8080), "a is not (for new connections)");
    assert!(established.roundtrip("still tracked\n"));
}

#[test]
fn instances_are_attached_and_detached_as_documents_change() {
    if !privileged() {
        return;
    }
    let topo = web_and_two_clients();
    let agent = start_agent(&topo.node, WEB, &[]);
    let (web, a, b) = (topo.host("veth-web"), topo.host("veth-a"), topo.host("veth-b"));
    let _sb = TcpServer::start(&b.ns, v4(b), 9000);
    let _sw = TcpServer::start(&web.ns, v4(web), 8080);
    assert!(tcp_ok(&a.ns, v4(b), 9000), "b is not an instance yet: nothing filters it");

    // b joins as an instance with no inbound rules.
    let with_b = WEB.replace(
        "\"security_groups\": [\"sg-web\"] } ] }",
        "\"security_groups\": [\"sg-web\"] }, { \"id\": \"b\", \"interface\": \"veth-b\", \"addresses\": [\"10.0.3.10\", \"fd00:3::10\"], \"security_groups\": [\"sg-web\"] } ] }",
    );
    let out = agent.apply(&with_b);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("instances: +[b (veth-b)]"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!tcp_ok(&a.ns, v4(b), 9000), "b is protected now");
    assert!(tcp_ok(&a.ns, v4(web), 8080), "web is untouched");
    assert_eq!(agent.status()["interfaces"].as_array().unwrap().len(), 2);
    let link = must(&["ip", "-n", &topo.node.name, "-d", "link", "show", "veth-b"]);
    assert!(link.contains("xdp"), "XDP attached to veth-b: {link}");

    // b leaves again: detached cleanly.
    agent.apply_ok(WEB);
    assert!(tcp_ok(&a.ns, v4(b), 9000), "b is no longer filtered");
    let link = must(&["ip", "-n", &topo.node.name, "-d", "link", "show", "veth-b"]);
    assert!(!link.contains("xdp"), "no XDP left on veth-b: {link}");
    assert!(!agent.pins.join("v1/links/xdp-veth-b").exists() && !agent.pins.join("v1/links/tc-veth-b").exists());
    assert!(tcp_ok(&a.ns, v4(web), 8080), "web is untouched");
    assert_eq!(agent.status()["interfaces"].as_array().unwrap().len(), 1);
}

#[test]
fn sighup_rereads_the_policy_file() {
    if !privileged() {
        return;
    }
    let topo = web_and_two_clients();
    let agent = start_agent(&topo.node, WEB, &[]);
    let web = topo.host("veth-web");
    let _s = TcpServer::start(&web.ns, v4(web), 8080);
    assert!(!tcp_ok(&topo.host("veth-b").ns, v4(web), 8080));
    std::fs::write(agent.dir.join("policy.json"), WEB.replace("10.0.2.0/24", "10.0.3.0/24")).unwrap();
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.status()["generation"] != 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent.status()["generation"], 2);
    assert!(tcp_ok(&topo.host("veth-b").ns, v4(web), 8080));
    // A broken file on SIGHUP leaves the generation in force.
    std::fs::write(agent.dir.join("policy.json"), "{ not json").unwrap();
    agent.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.status()["generation"], 2);
    assert!(tcp_ok(&topo.host("veth-b").ns, v4(web), 8080));
}

#[test]
fn a_layout_change_takes_over_enforcement_from_the_older_layout() {
    if !privileged() {
        return;
    }
    let topo = web_and_two_clients();
    let agent = start_agent(&topo.node, WEB, &[]);
    let (web, a, b) = (topo.host("veth-web"), topo.host("veth-a"), topo.host("veth-b"));
    let _s = TcpServer::start(&web.ns, v4(web), 8080);
    let pins = agent.pins.clone();
    let remains = agent.stop_and_hand_over();
    // Pretend the state was pinned by an agent of an older layout version.
    let (current, older) = (sg_common::LAYOUT_VERSION, sg_common::LAYOUT_VERSION - 1);
    std::fs::rename(pins.join(format!("v{current}")), pins.join(format!("v{older}"))).unwrap();
    assert!(!tcp_ok(&b.ns, v4(web), 8080), "the older layout's programs keep enforcing");
    assert!(tcp_ok(&a.ns, v4(web), 8080));

    let agent = restart_agent(&topo.node, remains, &[]);
    assert!(agent.log_text().contains("from an older layout"), "{}", agent.log_text());
    let status = agent.status();
    assert_eq!(status["interfaces"][0]["xdp"], "adopted", "the old links were taken over, not doubled: {status}");
    assert_eq!(status["interfaces"][0]["tc"], "adopted");
    assert!(!pins.join(format!("v{older}")).exists(), "the older layout's state is removed once taken over");
    assert!(!tcp_ok(&b.ns, v4(web), 8080), "still enforcing");
    assert!(tcp_ok(&a.ns, v4(web), 8080));
    let link = must(&["ip", "-n", &topo.node.name, "-d", "link", "show", "veth-web"]);
    assert_eq!(link.matches("prog/xdp").count(), 1, "one XDP program on the interface: {link}");
}
