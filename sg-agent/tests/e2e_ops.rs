//! Operating it, with real packets: exact counters in `status --json`, per-rule hits in
//! `status --rules` (kept across swaps for unchanged rules), flow-log records, the Prometheus
//! endpoint, audit mode, and bounded memory under a flood of denied packets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::IpAddr,
    time::{Duration, Instant},
};

use support::*;

/// web admits UDP 5353 from client A's subnet; B is nobody.
fn policy(extra_rule: &str, audit: bool) -> String {
    format!(
        r#"{{ "security_groups": [ {{ "id": "sg-web", "ingress": [
            {{ "protocol": "udp", "from_port": 5353, "to_port": 5353, "cidrs": ["10.0.2.0/24", "fd00:2::/64"] }}{extra_rule} ] }} ],
          "instances": [ {{ "id": "web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"],
                           "security_groups": ["sg-web"], "audit": {audit} }} ] }}"#
    )
}

fn topology() -> Topology {
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    topo.add("veth-a", 2, 10);
    topo.add("veth-b", 3, 10);
    topo
}

fn packets(s: &serde_json::Value, reason: &str) -> u64 {
    s["counters"][reason]["packets"].as_u64().unwrap()
}

fn bytes(s: &serde_json::Value, reason: &str) -> u64 {
    s["counters"][reason]["bytes"].as_u64().unwrap()
}

/// Ethernet + IPv4 + UDP around a payload.
const UDP4_OVERHEAD: u64 = 14 + 20 + 8;

#[test]
fn status_and_rule_counters_count_known_traffic_exactly() {
    if !privileged() {
        return;
    }
    let topo = topology();
    let agent = start_agent(&topo.node, &policy("", false), &[]);
    let (web, a, b) = (topo.host("veth-web"), topo.host("veth-a"), topo.host("veth-b"));
    let _server = UdpServer::start(&web.ns, v4(web), 5353);
    let before = agent.status();

    // 5 datagrams of 100 bytes from A on one flow, each echoed: 1 by rule + 4 tracked in, 5 out.
    assert_eq!(udp_exchange(&a.ns, 40000, v4(web), 5353, 5, 100), 5);
    // 3 from B: no rule.
    assert_eq!(udp_exchange(&b.ns, 40001, v4(web), 5353, 3, 100), 0);

    let after = agent.status();
    let delta = |reason: &str| packets(&after, reason) - packets(&before, reason);
    let delta_bytes = |reason: &str| bytes(&after, reason) - bytes(&before, reason);
    assert_eq!(delta("allowed_by_rule"), 1, "the flow's first packet: {after}");
    assert_eq!(delta("allowed_tracked"), 9, "4 more in, 5 echoes out");
    assert_eq!(delta("dropped_no_rule"), 3);
    assert_eq!(delta_bytes("allowed_by_rule"), UDP4_OVERHEAD + 100);
    assert_eq!(delta_bytes("dropped_no_rule"), 3 * (UDP4_OVERHEAD + 100));
    assert_eq!(after["conntrack"]["entries"], 1);

    // Rule hits: the rule admitted one packet (the rest was the tracked flow).
    let rules = |agent: &Agent| -> serde_json::Value {
        let out = agent.cli(&["status", "--rules", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let r = rules(&agent);
    let hits = |r: &serde_json::Value, peer: &str| {
        r.as_array().unwrap().iter().find(|x| x["rule"].as_str().unwrap().contains(peer)).unwrap().clone()
    };
    let v4_rule = hits(&r, "10.0.2.0/24");
    assert_eq!((v4_rule["packets"].as_u64(), v4_rule["bytes"].as_u64()), (Some(1), Some(UDP4_OVERHEAD + 100)));
    assert_eq!(v4_rule["group"], "sg-web");
    assert_eq!(v4_rule["rule_id"], "ingress[0]");
    assert_eq!(hits(&r, "fd00:2::/64")["packets"], 0);
    // A second flow hits the rule again.
    assert_eq!(udp_exchange(&a.ns, 40002, v4(web), 5353, 1, 100), 1);
    assert_eq!(hits(&rules(&agent), "10.0.2.0/24")["packets"], 2);

    // A swap that keeps the rule keeps its count; a new rule starts at zero.
    let extra = r#", { "protocol": "udp", "from_port": 9, "to_port": 9, "cidrs": ["10.0.3.0/24"] }"#;
    agent.apply_ok(&policy(extra, false));
    let r = rules(&agent);
    assert_eq!(hits(&r, "10.0.2.0/24")["packets"], 2, "unchanged rule keeps its hits across the swap");
    assert_eq!(hits(&r, "10.0.3.0/24")["packets"], 0);
}

#[test]
fn flow_logs_report_accepted_and_rejected_flows() {
    if !privileged() {
        return;
    }
    let topo = topology();
    let agent = start_agent(&topo.node, &policy("", false), &["--flow-window", "1"]);
    let (web, a, b) = (topo.host("veth-web"), topo.host("veth-a"), topo.host("veth-b"));
    let _server = UdpServer::start(&web.ns, v4(web), 5353);
    let mut reader = std::process::Command::new("ip")
        .args(["netns", "exec", &topo.node.name, agent_binary_path(), "flows", "--format", "json", "--socket"])
        .arg(&agent.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Give the reader time to subscribe (logging is off until it does).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(udp_exchange(&a.ns, 41000, v4(web), 5353, 4, 50), 4);
    assert_eq!(udp_exchange(&b.ns, 41001, v4(web), 5353, 2, 50), 0);
    let stdout = reader.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut records: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (a4, b4, w4) = (v4(a).to_string(), v4(b).to_string(), v4(web).to_string());
    let complete = |records: &[serde_json::Value]| {
        let count = |src: &str, action: &str| -> u64 {
            records
                .iter()
                .filter(|r| r["srcaddr"] == src && r["action"] == action)
                .map(|r| r["packets"].as_u64().unwrap())
                .sum()
        };
        count(&a4, "ACCEPT") == 4 && count(&w4, "ACCEPT") == 4 && count(&b4, "REJECT") == 2
    };
    while !complete(&records) && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            records.push(serde_json::from_str(&line).unwrap());
        }
    }
    let _ = reader.kill();
    let _ = reader.wait();
    assert!(complete(&records), "records: {records:#?}");
    let accepted = records.iter().find(|r| r["srcaddr"] == a4.as_str()).unwrap();
    assert_eq!(accepted["version"], 2);
    assert_eq!(accepted["interface_id"], "veth-web");
    assert_eq!(accepted["instance"], "web");
    assert_eq!((accepted["srcport"].as_u64(), accepted["dstport"].as_u64()), (Some(41000), Some(5353)));
    assert_eq!(accepted["protocol"], 17);
    assert_eq!(accepted["group"], "sg-web");
    assert_eq!(accepted["rule_id"], "ingress[0]");
    assert_eq!(accepted["log_status"], "OK");
    // B's two datagrams may fall in one window or two.
    let rejected: Vec<&serde_json::Value> = records.iter().filter(|r| r["srcaddr"] == b4.as_str()).collect();
    assert!(rejected.iter().all(|r| r["reason"] == "dropped_no_rule" && r["group"].is_null()));
    assert_eq!(rejected.iter().map(|r| r["bytes"].as_u64().unwrap()).sum::<u64>(), 2 * (UDP4_OVERHEAD + 50));
}

#[test]
fn prometheus_metrics_expose_the_counters() {
    if !privileged() {
        return;
    }
    let topo = topology();
    let agent = start_agent(&topo.node, &policy("", false), &["--metrics", "127.0.0.1:9101"]);
    let (web, b) = (topo.host("veth-web"), topo.host("veth-b"));
    let _server = UdpServer::start(&web.ns, v4(web), 5353);
    assert_eq!(udp_exchange(&b.ns, 42000, v4(web), 5353, 3, 10), 0);
    let expected = agent.status()["counters"]["dropped_no_rule"]["packets"].as_u64().unwrap();
    let body = topo.node.run(|| {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9101").unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    });
    assert!(body.starts_with("HTTP/1.0 200 OK"), "{body}");
    assert!(body.contains(&format!("sg_agent_packets_total{{reason=\"dropped_no_rule\"}} {expected}")), "{body}");
    // EC2's names, inside the agent's namespace; counters end in _total.
    assert!(body.contains("\nsg_agent_conntrack_allowance_exceeded_total 0\n"), "{body}");
    assert!(body.contains("\nsg_agent_conntrack_allowance_available{family=\"ipv4\"} "), "{body}");
    assert!(body.contains("\nsg_agent_policy_generation 1\n"), "{body}");
    assert!(body.contains(&format!("\nsg_agent_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{body}");
    assert!(body.contains("\nsg_agent_apply_duration_seconds_count 1\n"), "{body}");
    // Per instance, as EC2 reports per network interface: the three drops are web's.
    let web_drops = agent.status()["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["interface"] == "veth-web")
        .map(|i| i["counters"]["dropped_no_rule"]["packets"].as_u64().unwrap_or(0))
        .unwrap();
    assert!(web_drops >= 3, "status per interface: {web_drops}");
    let series = "sg_agent_instance_packets_total{instance=\"web\",interface=\"veth-web\",reason=\"dropped_no_rule\"} ";
    let scraped: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series}in {body}"));
    assert!(scraped >= 3, "{body}");
    // The exposition format is valid by Prometheus's own checker.
    let text = body.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap();
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup-toolchain.sh installs it)");
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn audit_mode_passes_what_enforcement_would_drop_and_counts_it() {
    if !privileged() {
        return;
    }
    let topo = topology();
    let agent = start_agent(&topo.node, &policy("", true), &[]);
    let (web, b) = (topo.host("veth-web"), topo.host("veth-b"));
    let _server = UdpServer::start(&web.ns, v4(web), 5353);
    let before = agent.status();
    assert_eq!(before["interfaces"][0]["audit"], true);
    assert_eq!(udp_exchange(&b.ns, 43000, v4(web), 5353, 3, 10), 3, "audit mode passes what no rule allows");
    let after = agent.status();
    // The first datagram is what the rules would drop; web's answer is outbound traffic its
    // (default) egress allows, which tracks the flow, so the next two pass as tracked.
    assert_eq!(packets(&after, "audit_would_drop") - packets(&before, "audit_would_drop"), 1);
    assert_eq!(packets(&after, "dropped_no_rule"), packets(&before, "dropped_no_rule"), "nothing is dropped");
    // Enforcing again: the same traffic is dropped.
    agent.apply_ok(&policy("", false));
    assert_eq!(udp_exchange(&b.ns, 43001, v4(web), 5353, 3, 10), 0);
}

#[test]
fn a_flood_of_denied_packets_does_not_grow_the_agent() {
    if !privileged() {
        return;
    }
    let topo = topology();
    let agent = start_agent(&topo.node, &policy("", false), &["--flow-window", "1"]);
    let (web, b) = (topo.host("veth-web"), topo.host("veth-b"));
    // A flow-log reader makes the datapath emit events: the expensive case for the agent.
    let mut reader = std::process::Command::new("ip")
        .args(["netns", "exec", &topo.node.name, agent_binary_path(), "flows", "--format", "json", "--socket"])
        .arg(&agent.socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = agent.child.id();
    let rss_before = rss_kib(pid);
    // Denied UDP from thousands of source ports: every packet a distinct flow.
    let target: IpAddr = v4(web);
    let flood = |seconds: u64| {
        b.ns.run(move || {
            let sockets: Vec<std::net::UdpSocket> =
                (0..2000).filter_map(|_| std::net::UdpSocket::bind("0.0.0.0:0").ok()).collect();
            let until = Instant::now() + Duration::from_secs(seconds);
            let mut sent = 0u64;
            while Instant::now() < until {
                for s in &sockets {
                    if s.send_to(b"flood", (target, 5353)).is_ok() {
                        sent += 1;
                    }
                }
            }
            sent
        })
    };
    let first = flood(3);
    let rss_mid = rss_kib(pid);
    let second = flood(3);
    let rss_after = rss_kib(pid);
    let _ = reader.kill();
    let _ = reader.wait();
    let dropped = agent.counter("dropped_no_rule");
    eprintln!(
        "flood: {} packets sent, {dropped} dropped; agent RSS {rss_before} KiB before, {rss_mid} after 3 s, {rss_after} after 6 s",
        first + second
    );
    assert!(dropped > 10_000, "the flood reached the datapath");
    assert!(rss_after < rss_before + 64 * 1024, "RSS grew by {} KiB", rss_after - rss_before);
    assert!(rss_after < rss_mid + 16 * 1024, "RSS keeps growing: {rss_mid} KiB → {rss_after} KiB");
}
