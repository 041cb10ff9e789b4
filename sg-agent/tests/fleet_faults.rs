//! Fleet mode under faults (SPEC §8), with a real etcd and a real agent: the store killed and
//! restarted during changes, a member of a 3-member cluster lost and back, an agent stopped
//! while objects change and go and the history is compacted, invalid content, and agents
//! restarted while the store is down or its content invalid. Convergence is checked exactly:
//! the agent reports the fingerprint of the objects its generation was built from, compared
//! with the store's own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixDatagram,
    path::Path,
    time::{Duration, Instant},
};

use sg_agent::store::{Layout, content::Content};
use sg_lab::etcd::{self, Etcd, Options};
use support::*;

const PREFIX: &str = "/sg/v1/";
const NODE: &str = "n1";

/// db on this node (its inbound: 5432 from sg-app); app and `extra` more instances remote,
/// app in `app_groups`, the others in sg-app.
fn document(app_groups: &str, extra: std::ops::Range<usize>) -> String {
    let mut instances = vec![
        r#"{ "id": "db", "node": "n1", "interface": "veth-db", "addresses": ["10.0.1.10"], "security_groups": ["sg-db"] }"#
            .to_owned(),
        format!(r#"{{ "id": "app", "node": "n2", "addresses": ["10.0.2.10"], "security_groups": [{app_groups}] }}"#),
    ];
    for i in extra {
        instances.push(format!(
            r#"{{ "id": "m-{i}", "node": "n{}", "addresses": ["10.9.{}.{}"], "security_groups": ["sg-app"] }}"#,
            i % 5 + 2,
            i / 200,
            i % 200 + 1
        ));
    }
    format!(
        r#"{{ "security_groups": [
              {{ "id": "sg-db", "ingress": [ {{ "protocol": "tcp", "from_port": 5432, "to_port": 5432, "groups": ["sg-app"] }} ] }},
              {{ "id": "sg-app" }}, {{ "id": "sg-other" }} ],
            "instances": [ {} ] }}"#,
        instances.join(",\n")
    )
}

/// A node with db (attached) and app (remote, unfiltered) around it, and a store inside the
/// node's namespace.
struct Lab {
    topo: Topology,
    etcd: Etcd,
    url: String,
}

impl Lab {
    fn new(members: usize) -> Lab {
        let mut topo = Topology::new();
        topo.add("veth-db", 1, 10);
        topo.add("veth-app", 2, 10);
        let etcd = Etcd::cluster(members, Options::in_netns(&topo.node, "127.0.0.1"));
        let url = etcd.url();
        Lab { topo, etcd, url }
    }

    fn agent(&self, extra: &[&str]) -> Agent {
        let mut args = vec!["--store-lease-ttl", "2"];
        args.extend_from_slice(extra);
        Agent::start_fleet(Path::new(agent_binary_path()), &self.topo.node, &self.url, NODE, &args)
    }

    fn apply(&self, document: &str, flags: &[&str]) -> i64 {
        fleet_apply(&self.topo.node, &self.url, document, flags)
    }

    /// The fingerprint of the store's objects now, as agents compute it.
    fn digest(&self) -> String {
        let layout = Layout::new(PREFIX);
        let mut content = Content::default();
        for (key, value) in self.etcd.get_prefix(PREFIX) {
            content.put_key(&layout, &key, value.as_bytes(), 1);
        }
        content.digest(&layout)
    }

    /// Waits until `agent` enforces exactly the store's current objects; its status.
    #[track_caller]
    fn converged(&self, agent: &Agent, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let want = self.digest();
            let status = agent.status_any();
            if status["store"]["applied_digest"] == want.as_str() && status["store"]["content_valid"] == true {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not converge to the store's objects ({want}) within {within:?}:\n{status:#}\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn db_reachable_from_app(&self) -> bool {
        let (db, app) = (self.topo.host("veth-db"), self.topo.host("veth-app"));
        tcp_ok(&app.ns, v4(db), 5432)
    }

    /// This node's entry in `fleet status`.
    fn node_report(&self) -> serde_json::Value {
        let status = fleet_status(&self.topo.node, &self.url);
        status["nodes"].as_array().unwrap().iter().find(|n| n["node"] == NODE).cloned().unwrap_or_default()
    }
}

/// Retries a write (`--prune`: the whole document) while the store is down or electing (a
/// test's writer, not the agent).
fn apply_retrying(lab: &Lab, document: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dir = std::env::temp_dir().join(unique("doc"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("doc.json");
        std::fs::write(&path, document).unwrap();
        let out = fleet_cli(&lab.topo.node, &lab.url, &["apply", path.to_str().unwrap(), "--prune"]);
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            if let Some(r) = stdout.split_whitespace().nth(1).and_then(|r| r.trim_end_matches(':').parse().ok()) {
                return r;
            }
            return lab.etcd.revision();
        }
        assert!(Instant::now() < deadline, "writes kept failing: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_agent_follows_through_etcd_kills_and_restarts_during_changes() {
    if !privileged() || !etcd::available() {
        return;
    }
    let mut lab = Lab::new(1);
    let _server = TcpServer::start(&lab.topo.host("veth-db").ns, v4(lab.topo.host("veth-db")), 5432);
    let agent = lab.agent(&[]);
    lab.apply(&document(r#""sg-app""#, 0..10), &[]);
    lab.converged(&agent, Duration::from_secs(10));
    assert!(lab.db_reachable_from_app());

    let mut write = 0;
    for round in 0..3 {
        for _ in 0..4 {
            write += 1;
            let groups = if write % 2 == 0 { r#""sg-app""# } else { r#""sg-other""# };
            apply_retrying(&lab, &document(groups, write..write + 10));
        }
        // The store goes away mid-stream: changes wait for it, the agent keeps its generation.
        let generation = agent.status()["generation"].clone();
        lab.etcd.member(0).kill();
        std::thread::sleep(Duration::from_millis(300 + 400 * round));
        let status = agent.status_any();
        assert_eq!(status["generation"], generation, "nothing changes while the store is away");
        assert_eq!(status["enforcing"], true);
        lab.etcd.member(0).start_again();
    }
    // The last change closes db to app.
    apply_retrying(&lab, &document(r#""sg-other""#, 0..3));
    let status = lab.converged(&agent, Duration::from_secs(20));
    assert!(status["store"]["watch_restarts"].as_u64().unwrap() >= 3, "{status:#}");
    assert_eq!(status["policy"]["instances"], 5);
    assert!(!lab.db_reachable_from_app());
    assert!(agent.log_text().contains("unreachable"));
    assert!(agent.log_text().contains("reachable again"));
    let report = lab.node_report();
    assert_eq!(report["standing"], "current", "{report:#}");
}

#[test]
fn a_three_member_cluster_loses_a_member_and_the_agent_keeps_following() {
    if !privileged() || !etcd::available() {
        return;
    }
    let mut lab = Lab::new(3);
    let agent = lab.agent(&[]);
    lab.apply(&document(r#""sg-app""#, 0..5), &[]);
    lab.converged(&agent, Duration::from_secs(10));
    // Lose the member the agent's watch may well be on, and go on writing: the two others
    // keep a quorum.
    for lost in [0, 2] {
        lab.etcd.member(lost).kill();
        for i in 0..4 {
            apply_retrying(&lab, &document(r#""sg-app""#, 0..6 + i + lost * 10));
            lab.converged(&agent, Duration::from_secs(20));
        }
        lab.etcd.member(lost).start_again();
    }
    apply_retrying(&lab, &document(r#""sg-other""#, 0..2));
    let status = lab.converged(&agent, Duration::from_secs(20));
    assert_eq!(status["policy"]["instances"], 4);
}

#[test]
fn a_stopped_agent_converges_after_deletes_and_compaction() {
    if !privileged() || !etcd::available() {
        return;
    }
    let mut lab = Lab::new(1);
    let agent = lab.agent(&[]);
    lab.apply(&document(r#""sg-app""#, 0..30), &[]);
    lab.converged(&agent, Duration::from_secs(10));

    for restart_store in [false, true] {
        agent.signal(libc::SIGSTOP);
        if restart_store {
            // The stopped agent's connection dies with the store, before any of what follows
            // is sent to it: it must watch again from its revision, which will be compacted,
            // and take a fresh snapshot.
            lab.etcd.member(0).restart();
        }
        // Objects change, are added and deleted (by a writer and behind its back), then the
        // history is compacted.
        lab.apply(&document(r#""sg-other""#, 10..40), &["--prune"]);
        for i in [11, 13, 17] {
            lab.etcd.delete(&format!("/sg/v1/instances/m-{i}"));
        }
        let revision = lab.etcd.put("/sg/v1/groups/sg-new", r#"{"id":"sg-new","ingress":[]}"#);
        lab.etcd.compact(revision);
        // The stopped agent's lease expires: fleet status says so, and that it is behind.
        std::thread::sleep(Duration::from_millis(3500));
        let report = lab.node_report();
        assert_eq!(report["alive"], false, "{report:#}");
        assert_eq!(report["standing"], "behind", "{report:#}");
        agent.signal(libc::SIGCONT);
        let status = lab.converged(&agent, Duration::from_secs(20));
        assert_eq!(status["policy"]["instances"], 29, "db, app and m-10..m-39 but three: {status:#}");
        assert_eq!(status["policy"]["security_groups"], 5, "{status:#}");
        if restart_store {
            assert!(status["store"]["compactions"].as_u64().unwrap() >= 1, "{status:#}");
            assert!(agent.log_text().contains("compacted"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while lab.node_report()["alive"] != true {
            assert!(Instant::now() < deadline, "the agent registers again: {:#}", lab.node_report());
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(lab.node_report()["standing"], "current");
        lab.etcd.delete("/sg/v1/groups/sg-new");
        lab.apply(&document(r#""sg-app""#, 0..30), &["--prune"]);
        lab.converged(&agent, Duration::from_secs(10));
    }
}

#[test]
fn a_large_transaction_and_a_burst_each_become_one_generation() {
    if !privileged() || !etcd::available() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-db", 1, 10);
    topo.add("veth-app", 2, 10);
    // An etcd that takes a 1,000-key transaction.
    let options = Options::in_netns(&topo.node, "127.0.0.1").with_flags(&["--max-txn-ops", "2000"]);
    let etcd = Etcd::cluster(1, options);
    let url = etcd.url();
    let lab = Lab { topo, etcd, url };
    let agent = lab.agent(&[]);
    lab.apply(&document(r#""sg-app""#, 0..3), &[]);
    let before = lab.converged(&agent, Duration::from_secs(10))["generation"].as_u64().unwrap();

    let out = lab.apply(&document(r#""sg-app""#, 0..1000), &["--max-txn-ops", "2000"]);
    assert!(out > 0);
    let status = lab.converged(&agent, Duration::from_secs(20));
    assert_eq!(status["policy"]["instances"], 1002);
    assert_eq!(status["generation"].as_u64(), Some(before + 1), "1,000 keys in one transaction: one generation");

    // Thirty transactions while the agent cannot read: they are all there when it reads again.
    agent.signal(libc::SIGSTOP);
    for i in 0..30 {
        let value =
            format!(r#"{{"id":"m-{i}","node":"n9","addresses":["10.9.0.{}"],"security_groups":["sg-other"]}}"#, i + 1);
        lab.etcd.put(&format!("/sg/v1/instances/m-{i}"), &value);
    }
    agent.signal(libc::SIGCONT);
    let status = lab.converged(&agent, Duration::from_secs(20));
    let generations = status["generation"].as_u64().unwrap() - (before + 1);
    assert!(generations <= 2, "30 transactions became {generations} generations");
}

/// `GET /metrics` from the agent's metrics address inside `ns`.
fn metrics(ns: &Netns, addr: &'static str) -> String {
    ns.run(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
}

#[test]
fn invalid_content_keeps_the_last_good_generation_and_is_reported() {
    if !privileged() || !etcd::available() {
        return;
    }
    let lab = Lab::new(1);
    let db = lab.topo.host("veth-db");
    let _server = TcpServer::start(&db.ns, v4(db), 5432);
    let agent = lab.agent(&["--metrics", "127.0.0.1:9101"]);
    lab.apply(&document(r#""sg-app""#, 0..3), &[]);
    let good = lab.converged(&agent, Duration::from_secs(10));
    let generation = good["generation"].as_u64().unwrap();
    assert!(lab.db_reachable_from_app());

    // An object no writer checked (written straight into etcd), then a change that would close
    // db to app: the content is invalid as a whole, so nothing of it is applied.
    lab.etcd.put("/sg/v1/instances/bad", r#"{"id":"bad","addresses":["10.0.2.10"],"security_groups":["sg-gone"]}"#);
    let app_other = r#"{"id":"app","node":"n2","addresses":["10.0.2.11"],"security_groups":["sg-other"]}"#;
    let revision = lab.etcd.put("/sg/v1/instances/app", app_other);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = agent.status();
        if status["store"]["revision"].as_i64().unwrap() >= revision {
            break status;
        }
        assert!(Instant::now() < deadline, "{status:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["store"]["content_valid"], false, "{status:#}");
    assert_eq!(status["generation"].as_u64(), Some(generation), "the last good generation stays");
    let problems = status["store"]["problems"].to_string();
    assert!(
        problems.contains(r#"/sg/v1/instances/bad: security_groups[0]: unknown security group \"sg-gone\""#),
        "{problems}"
    );
    assert!(lab.db_reachable_from_app(), "app is still in sg-app as far as enforcement goes");
    let human = String::from_utf8_lossy(&agent.cli(&["status"]).stdout).into_owned();
    assert!(human.contains("INVALID") && human.contains("/sg/v1/instances/bad"), "{human}");
    assert!(agent.log_text().contains("/sg/v1/instances/bad: security_groups[0]"));
    let text = metrics(&lab.topo.node, "127.0.0.1:9101");
    assert!(text.contains("sg_agent_store_content_valid 0"), "{text}");
    assert!(text.contains("sg_agent_store_connected 1"), "{text}");
    assert!(text.contains(&format!("sg_agent_store_applied_revision {}", good["store"]["applied_revision"])), "{text}");
    let report = lab.node_report();
    assert_eq!(report["standing"], "invalid", "{report:#}");
    assert!(report["detail"].as_str().unwrap().contains("/sg/v1/instances/bad"), "{report:#}");

    // A restart while the content is invalid: the pinned generation stays in force.
    let remains = agent.stop_and_hand_over();
    let agent = Agent::restart_fleet(
        Path::new(agent_binary_path()),
        &lab.topo.node,
        remains,
        &lab.url,
        NODE,
        &["--store-lease-ttl", "2"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let status = agent.status();
    assert_eq!(status["generation"].as_u64(), Some(generation), "{status:#}");
    assert_eq!(status["store"]["content_valid"], false, "{status:#}");
    assert!(lab.db_reachable_from_app());

    // Fixed: applied at once.
    lab.etcd.delete("/sg/v1/instances/bad");
    let status = lab.converged(&agent, Duration::from_secs(10));
    assert_eq!(status["generation"].as_u64(), Some(generation + 1));
    assert!(!lab.db_reachable_from_app(), "now app has left sg-app");
}

#[test]
fn an_agent_started_while_the_store_is_down_keeps_the_pinned_generation() {
    if !privileged() || !etcd::available() {
        return;
    }
    let mut lab = Lab::new(1);
    let db = lab.topo.host("veth-db");
    let _server = TcpServer::start(&db.ns, v4(db), 5432);
    let agent = lab.agent(&[]);
    lab.apply(&document(r#""sg-app""#, 0..3), &[]);
    let generation = lab.converged(&agent, Duration::from_secs(10))["generation"].as_u64().unwrap();
    let remains = agent.stop_and_hand_over();

    lab.etcd.member(0).kill();
    let agent = Agent::restart_fleet(
        Path::new(agent_binary_path()),
        &lab.topo.node,
        remains,
        &lab.url,
        NODE,
        &["--store-lease-ttl", "2"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = agent.status();
        if status["store"]["connection"] == "unreachable" {
            break status;
        }
        assert!(Instant::now() < deadline, "{status:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["generation"].as_u64(), Some(generation), "the pinned generation is in force: {status:#}");
    assert!(status["store"]["last_error"].as_str().unwrap().contains("nothing answers there"), "{status:#}");
    assert!(lab.db_reachable_from_app());
    let human = String::from_utf8_lossy(&agent.cli(&["status"]).stdout).into_owned();
    assert!(human.contains("UNREACHABLE since"), "{human}");

    // Back: the store holds what is pinned, so the agent adopts it (same generation, nothing
    // swapped); later changes follow.
    lab.etcd.member(0).start_again();
    let status = lab.converged(&agent, Duration::from_secs(20));
    assert_eq!(status["generation"].as_u64(), Some(generation), "{status:#}");
    assert!(agent.log_text().contains("adopted generation"));
    lab.apply(&document(r#""sg-other""#, 0..3), &[]);
    let status = lab.converged(&agent, Duration::from_secs(10));
    assert_eq!(status["generation"].as_u64(), Some(generation + 1));
    assert!(!lab.db_reachable_from_app());
}

#[test]
fn ready_once_the_stores_first_document_is_live() {
    if !privileged() || !etcd::available() {
        return;
    }
    let mut lab = Lab::new(1);
    let revision = lab.apply(&document(r#""sg-app""#, 0..3), &[]);
    lab.etcd.member(0).kill();
    // The service manager: a datagram socket (systemd's NOTIFY_SOCKET).
    let dir = std::env::temp_dir().join(unique("notify"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let agent = Agent::spawn_fleet(
        Path::new(agent_binary_path()),
        &lab.topo.node,
        &lab.url,
        NODE,
        &["--store-lease-ttl", "2"],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    // The store is down: the agent runs, but nothing from the store is live, so it is not ready.
    let mut buf = [0u8; 4096];
    let early = manager.recv(&mut buf);
    assert!(
        early.is_err(),
        "ready before the store's document: {:?}",
        early.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    lab.etcd.member(0).start_again();
    manager.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let n = loop {
        match manager.recv(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("no READY=1 once the store came back: {e}\n{}", agent.log_text()),
        }
    };
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = agent.status();
    assert_eq!(ready, format!("READY=1\nSTATUS=generation {} live", status["generation"]));
    assert!(status["store"]["applied_revision"].as_i64().unwrap() >= revision, "{status:#}");
    // A SIGHUP re-reads the store; it is no reload of a file (no RELOADING=1).
    agent.signal(libc::SIGHUP);
    manager.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    assert!(manager.recv(&mut buf).is_err(), "nothing to say after a SIGHUP in fleet mode");
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.status()["store"]["snapshots"].as_u64() < Some(2) {
        assert!(Instant::now() < deadline, "SIGHUP took a fresh snapshot");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
