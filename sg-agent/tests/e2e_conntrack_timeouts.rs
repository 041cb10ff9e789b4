//! End to end with real flows (SPEC §3): conntrack timeouts per instance, as EC2 sets them per
//! network interface. Two instances on one node, each with its own UDP timeout, each with a
//! tracked UDP flow: the flows expire on their own schedules (in the datapath, in garbage
//! collection and in `conntrack list`), while the agent's own flag stays the default for
//! everyone else. Entries are aged through the pinned map (as `prog_test_run_conntrack` does),
//! so the test does not wait out the timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{net::IpAddr, time::Duration};

use sg_agent::datapath::{Maps, PinLayout};
use sg_common::maps::addr_to_ip;
use support::*;

/// a and b may send UDP to the client's port 5353 and nothing else; nothing may reach them
/// unasked. a keeps a UDP flow 30 s, b 60 s; the agent's flag (45 s) is for everyone else.
const POLICY: &str = r#"{
  "security_groups": [ { "id": "sg-app", "ingress": [],
      "egress": [ { "protocol": "udp", "from_port": 5353, "to_port": 5353, "cidrs": ["10.0.3.0/24"] } ] } ],
  "instances": [
    { "id": "a", "interface": "veth-a", "addresses": ["10.0.1.10", "fd00:1::10"], "security_groups": ["sg-app"],
      "conntrack_timeouts": { "udp": 30 } },
    { "id": "b", "interface": "veth-b", "addresses": ["10.0.2.10", "fd00:2::10"], "security_groups": ["sg-app"],
      "conntrack_timeouts": { "udp": 60, "udp_stream": 60 } }
  ]
}"#;

/// Moves the last packet of every tracked flow of `instance` `secs` into the past.
fn age(pins: &std::path::Path, instance: IpAddr, secs: u32) -> usize {
    let mut maps = Maps::from_pins(&PinLayout::new(pins)).unwrap();
    let mut aged = 0;
    for (key, mut entry) in maps.conntrack_entries() {
        // On a workload's interface the instance is the far end (reached through it).
        if addr_to_ip(key.family, &key.far_addr) == instance {
            entry.last_seen -= secs;
            maps.conntrack.insert(&key, entry).unwrap();
            aged += 1;
        }
    }
    aged
}

/// The tracked flows of `instance`, as `conntrack list` shows them.
fn flows_of(agent: &Agent, instance: &str) -> Vec<serde_json::Value> {
    let out = agent.cli(&["conntrack", "list", "--json", "--instance", instance]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[test]
fn two_instances_flows_expire_each_on_its_own_schedule() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-a", 1, 10);
    topo.add("veth-b", 2, 10);
    topo.add("veth-c", 3, 10);
    let agent = start_agent(&topo.node, POLICY, &["--udp-timeout", "45", "--gc-interval", "1"]);
    let (a, b, c) = (topo.host("veth-a"), topo.host("veth-b"), topo.host("veth-c"));

    // Each instance asks the client once: one tracked UDP flow each (a single exchange).
    {
        let _server = UdpServer::start(&c.ns, v4(c), 5353);
        assert_eq!(udp_exchange(&a.ns, 40001, v4(c), 5353, 1, 8), 1);
        assert_eq!(udp_exchange(&b.ns, 40002, v4(c), 5353, 1, 8), 1);
    }
    let (fa, fb) = (flows_of(&agent, "a"), flows_of(&agent, "b"));
    assert_eq!((fa.len(), fb.len()), (1, 1), "{fa:?} {fb:?}");
    // `conntrack list` counts down from each instance's own timeout.
    let expires = |f: &serde_json::Value| f["expires_in_secs"].as_u64().unwrap();
    assert!((28..=30).contains(&expires(&fa[0])), "{fa:?}");
    assert!((58..=60).contains(&expires(&fb[0])), "{fb:?}");
    assert_eq!(agent.status()["conntrack"]["timeouts"]["udp"], 45, "the agent's flag stays as given");

    // 45 s of silence: past a's 30 s, within b's 60 s.
    assert_eq!(age(&agent.pins, v4(a), 45), 1);
    assert_eq!(age(&agent.pins, v4(b), 45), 1);
    // Garbage collection (every second) removes a's flow only.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(flows_of(&agent, "a").len(), 0, "a's flow expired and was collected");
    assert_eq!(flows_of(&agent, "b").len(), 1, "b's flow is still tracked");

    // The client now answers each instance unasked: only b's flow still lets it in.
    let (_sa, _sb) = (UdpServer::start(&a.ns, v4(a), 40001), UdpServer::start(&b.ns, v4(b), 40002));
    assert_eq!(udp_exchange(&c.ns, 5353, v4(a), 40001, 1, 8), 0, "a's flow is gone: the answer is dropped");
    assert_eq!(udp_exchange(&c.ns, 5353, v4(b), 40002, 1, 8), 1, "b's flow is tracked: the answer passes");
    // Refreshed by that answer; past its own 60 s of silence it is gone as well.
    assert_eq!(age(&agent.pins, v4(b), 61), 1);
    assert_eq!(udp_exchange(&c.ns, 5353, v4(b), 40002, 1, 8), 0, "past b's 60 s its flow is gone too");
    let per_iface = agent.status()["interfaces"].clone();
    let drops = |iface: &str| {
        per_iface.as_array().unwrap().iter().find(|i| i["interface"] == iface).unwrap()["counters"]["dropped_no_rule"]
            ["packets"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(drops("veth-a") >= 1 && drops("veth-b") >= 1, "{per_iface}");
}
