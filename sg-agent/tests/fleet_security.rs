//! Fleet mode's security in practice (SPEC §8): an agent on TLS with its node's certificate as
//! its only credential (etcd takes the certificate's common name as the user) and nothing but
//! the node role of `scripts/fleet-roles.sh` — enough to follow the store and keep its record,
//! not enough to pose as another node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use sg_lab::etcd::{self, Etcd, Options, Tls};
use support::*;

const DOC: &str = r#"{
  "security_groups": [ { "id": "sg-db", "ingress": [ { "protocol": "tcp", "from_port": 5432, "to_port": 5432, "groups": ["sg-app"] } ] },
                       { "id": "sg-app" } ],
  "instances": [
    { "id": "db", "node": "n1", "interface": "veth-db", "addresses": ["10.0.1.10"], "security_groups": ["sg-db"] },
    { "id": "app", "node": "n2", "addresses": ["10.0.2.10"], "security_groups": ["sg-app"] } ] }"#;

#[test]
fn an_agent_runs_on_its_node_certificate_and_the_node_role_alone() {
    if !privileged() || !etcd::available() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-db", 1, 10);
    topo.add("veth-app", 2, 10);
    let tls = Tls::new(&[]);
    let etcd = Etcd::cluster(1, Options::in_netns(&topo.node, "127.0.0.1").with_tls(&tls));
    let url = etcd.url();
    let endpoint = etcd.members[0].client_url.clone();

    // The roles, as an operator makes them (before auth is on, the server's certificate is an
    // administrator's), then root and auth.
    let roles = Command::new("ip")
        .args(["netns", "exec", &topo.node.name, "bash"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fleet-roles.sh"))
        .args(["/sg/v1", "writer:ops", "node:n1", "node:n2"])
        .env("ETCDCTL_ENDPOINTS", &endpoint)
        .env("ETCDCTL_CACERT", &tls.ca)
        .env("ETCDCTL_CERT", &tls.server_cert)
        .env("ETCDCTL_KEY", &tls.server_key)
        .output()
        .unwrap();
    assert!(roles.status.success(), "{}", String::from_utf8_lossy(&roles.stderr));
    etcd.ctl_ok(&["user", "add", "root", "--new-user-password=rootpw"]);
    etcd.ctl_ok(&["auth", "enable"]);

    let ca = tls.ca.display().to_string();
    let (ops_cert, ops_key) = tls.client("ops");
    let (n1_cert, n1_key) = tls.client("n1");
    let (n2_cert, n2_key) = tls.client("n2");
    let path = |p: &Path| p.display().to_string();
    let ops = [
        "--store-ca".to_owned(),
        ca.clone(),
        "--store-cert".to_owned(),
        path(&ops_cert),
        "--store-key".to_owned(),
        path(&ops_key),
    ];
    let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
    let revision = fleet_apply(&topo.node, &url, DOC, &ops);

    // The agent of n1, on n1's certificate: follows the store, enforces, keeps its record.
    let n1 = [
        "--store-ca".to_owned(),
        ca.clone(),
        "--store-cert".to_owned(),
        path(&n1_cert),
        "--store-key".to_owned(),
        path(&n1_key),
        "--store-lease-ttl".to_owned(),
        "2".to_owned(),
    ];
    let n1: Vec<&str> = n1.iter().map(String::as_str).collect();
    let agent = Agent::start_fleet(Path::new(agent_binary_path()), &topo.node, &url, "n1", &n1);
    agent.wait_store(revision, Duration::from_secs(20));
    let db = topo.host("veth-db");
    let _server = TcpServer::start(&db.ns, v4(db), 5432);
    assert!(tcp_ok(&topo.host("veth-app").ns, v4(db), 5432));
    let mut status_args = vec!["status", "--json"];
    status_args.extend_from_slice(&ops);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = fleet_cli(&topo.node, &url, &status_args);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let node = &status["nodes"][0];
        if node["node"] == "n1" && node["alive"] == true && node["standing"] == "current" {
            break;
        }
        assert!(Instant::now() < deadline, "n1's record: {status:#}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // With n2's certificate, an agent claiming to be n3 (a node with no instance here) reads
    // the store but cannot write n3's record, and says so.
    let claims = [
        "--store-ca".to_owned(),
        ca,
        "--store-cert".to_owned(),
        path(&n2_cert),
        "--store-key".to_owned(),
        path(&n2_key),
    ];
    let claims: Vec<&str> = claims.iter().map(String::as_str).collect();
    let impostor = Agent::start_fleet(Path::new(agent_binary_path()), &topo.node, &url, "n3", &claims);
    impostor.wait_store(revision, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !impostor.log_text().contains("permission denied") {
        assert!(Instant::now() < deadline, "{}", impostor.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(impostor.log_text().contains("this node's record"), "{}", impostor.log_text());
    let out = fleet_cli(&topo.node, &url, &status_args);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["nodes"].as_array().unwrap().iter().all(|n| n["node"] != "n3"), "{status:#}");

    // A node's credentials cannot change the policy.
    let file = std::env::temp_dir().join(unique("doc.json"));
    std::fs::write(&file, DOC.replace("10.0.2.10", "10.0.2.11")).unwrap();
    let mut apply_as_n1 = vec!["apply", file.to_str().unwrap()];
    apply_as_n1.extend_from_slice(&n1[..6]);
    let out = fleet_cli(&topo.node, &url, &apply_as_n1);
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
}
