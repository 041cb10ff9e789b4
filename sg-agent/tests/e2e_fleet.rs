//! Fleet mode end to end (SPEC §8), with real packets: three agents on one machine — each in
//! its own node namespace with its own pins and socket — follow one etcd, and a security group
//! reference means the members wherever they run. Plus `run --node` with a policy file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use sg_lab::etcd::{self, Etcd, Options};
use support::*;

const FLEET_POLICY: &str = r#"{
  "security_groups": [
    { "id": "sg-db", "ingress": [ { "protocol": "tcp", "from_port": 5432, "to_port": 5432, "groups": ["sg-app"] } ] },
    { "id": "sg-app" }, { "id": "sg-other" }
  ],
  "instances": [
    { "id": "db", "node": "n1", "interface": "veth-db", "addresses": ["10.0.1.10", "fd00:1::10"], "security_groups": ["sg-db"] },
    { "id": "app", "node": "n2", "interface": "veth-app", "addresses": ["10.0.2.10", "fd00:2::10"], "security_groups": ["sg-app"] },
    { "id": "other", "node": "n3", "interface": "veth-other", "addresses": ["10.0.3.10", "fd00:3::10"], "security_groups": ["sg-other"] }
  ] }"#;

fn both(host: &Host) -> [std::net::IpAddr; 2] {
    [v4(host), v6(host)]
}

/// Waits until every agent has applied store revision `revision` (or later).
fn all_at(agents: &[&Agent], revision: i64) {
    for agent in agents {
        agent.wait_store(revision, Duration::from_secs(20));
    }
}

/// Waits until `f` holds (traffic right after a change can race the last agent's swap by a
/// few milliseconds: `all_at` says the generation is live, this absorbs the probe's own timing).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_agents_one_store_group_references_across_nodes() {
    if !privileged() || !etcd::available() {
        return;
    }
    let mut fleet = Fleet::new(&["n1", "n2", "n3"]);
    fleet.add("n1", "veth-db", 1, 10);
    fleet.add("n2", "veth-app", 2, 10);
    fleet.add("n3", "veth-other", 3, 10);
    let etcd = Etcd::cluster(1, Options::in_netns(&fleet.fabric, STORE_IP));
    let url = etcd.url();
    let binary = Path::new(agent_binary_path());
    let start =
        |name: &str| Agent::start_fleet(binary, &fleet.node(name).node, &url, name, &["--store-lease-ttl", "2"]);
    let (n1, n2, n3) = (start("n1"), start("n2"), start("n3"));
    let revision = fleet_apply(&fleet.fabric, &url, FLEET_POLICY, &[]);
    all_at(&[&n1, &n2, &n3], revision);

    // Each agent enforces its own instance and no other.
    for (agent, iface) in [(&n1, "veth-db"), (&n2, "veth-app"), (&n3, "veth-other")] {
        let status = agent.status();
        let attached: Vec<&str> =
            status["interfaces"].as_array().unwrap().iter().map(|i| i["interface"].as_str().unwrap()).collect();
        assert_eq!(attached, [iface], "{status:#}");
        assert_eq!(status["policy"]["instances"], 3);
        assert_eq!(status["policy"]["local_instances"], 1);
    }

    // The store is the one source of truth: a local apply is refused.
    let out = n1.apply(FLEET_POLICY);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("this agent follows the store"), "{out:?}");

    let (db, app, other) = (fleet.host("n1", "veth-db"), fleet.host("n2", "veth-app"), fleet.host("n3", "veth-other"));
    let _servers: Vec<TcpServer> = both(db).into_iter().map(|a| TcpServer::start(&db.ns, a, 5432)).collect();
    for addr in both(db) {
        assert!(tcp_ok(&app.ns, addr, 5432), "app (sg-app, on n2) reaches db on n1 at {addr}");
        assert!(!tcp_ok(&other.ns, addr, 5432), "other (not in sg-app, on n3) is refused at {addr}");
    }
    // A flow tracked as in single-node mode: it outlives the membership that allowed it.
    let mut long = LongConnection::open(&app.ns, v4(db), 5432);
    assert!(long.roundtrip("before\n"));

    // A membership change of n3's instance opens db on n1 to it.
    let joined =
        FLEET_POLICY.replace(r#""security_groups": ["sg-other"]"#, r#""security_groups": ["sg-other", "sg-app"]"#);
    let revision = fleet_apply(&fleet.fabric, &url, &joined, &[]);
    all_at(&[&n1, &n2, &n3], revision);
    for addr in both(db) {
        eventually(&format!("other joined sg-app: admitted at {addr}"), || tcp_ok(&other.ns, addr, 5432));
    }
    // n2's instance leaves sg-app: new connections close, the tracked one keeps working.
    let left = joined.replace(r#""security_groups": ["sg-app"]"#, r#""security_groups": ["sg-other"]"#);
    let revision = fleet_apply(&fleet.fabric, &url, &left, &[]);
    all_at(&[&n1, &n2, &n3], revision);
    for addr in both(db) {
        eventually(&format!("app left sg-app: refused at {addr}"), || !tcp_ok(&app.ns, addr, 5432));
    }
    assert!(long.roundtrip("after\n"), "a tracked flow survives the change, as on one node");
    assert!(tcp_ok(&other.ns, v4(db), 5432));

    // Every node is current, alive, on the same revision; one generation per change. (A node
    // writes its record just after its generation is live, which is what `all_at` waits for:
    // the records follow within moments.)
    let at_revision = |status: &serde_json::Value| {
        status["nodes"].as_array().is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["state"]["revision"] == revision))
    };
    let read = || -> serde_json::Value {
        serde_json::from_str(&fleet_ok(&fleet.fabric, &url, &["status", "--json"])).unwrap()
    };
    eventually("every node's record shows the last revision", || at_revision(&read()));
    let status = read();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{status:#}");
    for node in nodes {
        assert_eq!(node["standing"], "current", "{status:#}");
        assert_eq!(node["alive"], true, "{status:#}");
        assert_eq!(node["state"]["revision"], revision, "{status:#}");
        // The empty store the agents started on, then three documents: one generation each.
        assert_eq!(node["state"]["generation"], 4, "{status:#}");
    }
}

#[test]
fn a_policy_file_with_a_node_name_enforces_only_that_node() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-db", 1, 10);
    topo.add("veth-app", 2, 10);
    topo.add("veth-other", 3, 10);
    // The file describes n1 and n2; app's interface happens to exist here too.
    let policy = FLEET_POLICY.replace(r#""node": "n3", "interface": "veth-other", "#, "");
    let (db, app, other) = (topo.host("veth-db"), topo.host("veth-app"), topo.host("veth-other"));
    let _db = TcpServer::start(&db.ns, v4(db), 5432);
    let _app = TcpServer::start(&app.ns, v4(app), 9000);

    // As node n1: app is a remote member (not attached, not filtered here).
    let agent = start_agent(&topo.node, &policy, &["--node", "n1"]);
    let status = agent.status();
    let attached: Vec<&str> =
        status["interfaces"].as_array().unwrap().iter().map(|i| i["interface"].as_str().unwrap()).collect();
    assert_eq!(attached, ["veth-db"], "{status:#}");
    assert!(tcp_ok(&app.ns, v4(db), 5432), "app counts as a member of sg-app");
    assert!(!tcp_ok(&other.ns, v4(db), 5432));
    assert!(tcp_ok(&other.ns, v4(app), 9000), "app is another node's: nothing judges its traffic here");
    drop(agent);

    // Without --node the field is not consulted: app is attached and judged (no inbound rule).
    let agent = start_agent(&topo.node, &policy, &[]);
    let status = agent.status();
    let attached: Vec<&str> =
        status["interfaces"].as_array().unwrap().iter().map(|i| i["interface"].as_str().unwrap()).collect();
    assert_eq!(attached, ["veth-app", "veth-db"], "{status:#}");
    assert!(!tcp_ok(&other.ns, v4(app), 9000), "sg-app has no inbound rule");
    assert!(tcp_ok(&app.ns, v4(db), 5432));
}
