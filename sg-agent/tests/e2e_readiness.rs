//! Readiness (SPEC §4): `run` tells systemd `READY=1` only once the generation of its own
//! document is live — also when it finds pinned state from an earlier agent and then applies a
//! changed document — and `RELOADING=1` ... `READY=1` around a SIGHUP. The service manager is a
//! datagram socket the test binds (a path, and an abstract `@` name).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    time::{Duration, Instant},
};

use support::*;

fn policy(ports: &[u16]) -> String {
    let rules: Vec<String> = ports
        .iter()
        .map(|p| format!(r#"{{ "protocol": "tcp", "from_port": {p}, "to_port": {p}, "cidrs": ["0.0.0.0/0"] }}"#))
        .collect();
    format!(
        r#"{{ "security_groups": [ {{ "id": "sg-web", "ingress": [{}] }} ],
             "instances": [ {{ "id": "web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"],
                              "security_groups": ["sg-web"] }} ] }}"#,
        rules.join(",")
    )
}

/// The next notification, within `within`.
fn next(socket: &UnixDatagram, within: Duration) -> String {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
            // A child process of the test ending (SIGCHLD) interrupts the wait.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("no notification within {within:?}: {e}"),
        }
    }
}

/// The generation live, how many inbound ports `sg-web` has in it, and whether the agent
/// answers, as `status` sees them.
fn live(agent: &Agent) -> (u64, u64, bool) {
    let s = agent.status();
    // Flat rules beside sg-web's inbound ones: its default egress (2 peers) and the built-in
    // default group (1 inbound, 2 outbound).
    let ports = s["policy"]["rules"].as_u64().unwrap_or(0).saturating_sub(5);
    (s["generation"].as_u64().unwrap(), ports, s["agent_running"] == true)
}

#[test]
fn ready_only_once_this_documents_generation_is_live_and_around_reloads() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    // An earlier agent leaves generation 1 (one rule) pinned and enforcing.
    let first = start_agent(&topo.node, &policy(&[80]), &[]);
    let remains = first.stop_and_hand_over();
    // The new agent's document differs (three rules): it must apply it before it is ready.
    std::fs::write(&remains.policy, policy(&[80, 443, 8080])).unwrap();
    let notify_path = remains.dir.join("notify.sock");
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    let policy_path = remains.policy.clone();
    let started = Instant::now();
    let agent = Agent::spawn(
        Path::new(agent_binary_path()),
        &topo.node,
        &policy_path,
        remains.bpffs,
        &remains.dir,
        &[],
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let ready = next(&manager, Duration::from_secs(30));
    // At the moment READY arrives, this document's generation is live and the agent answers.
    let (generation, rules, running) = live(&agent);
    assert_eq!(ready, "READY=1\nSTATUS=generation 2 live", "after {:?}", started.elapsed());
    assert_eq!((generation, rules, running), (2, 3, true), "generation 2 with the new document's 3 rules");

    // SIGHUP with a changed file: RELOADING (with the monotonic time systemd requires), then
    // READY once the new generation is live.
    std::fs::write(&policy_path, policy(&[22])).unwrap();
    agent.signal(libc::SIGHUP);
    let reloading = next(&manager, Duration::from_secs(10));
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec = reloading.lines().find_map(|l| l.strip_prefix("MONOTONIC_USEC=")).expect("MONOTONIC_USEC");
    let usec: u64 = usec.parse().unwrap();
    assert!(usec > 0);
    let ready = next(&manager, Duration::from_secs(30));
    assert_eq!(ready, "READY=1\nSTATUS=generation 3 live");
    assert_eq!(live(&agent), (3, 1, true));

    // A reload that fails: the service is ready again with the old generation in force.
    std::fs::write(&policy_path, "{ not json").unwrap();
    agent.signal(libc::SIGHUP);
    assert!(next(&manager, Duration::from_secs(10)).starts_with("RELOADING=1\n"));
    assert_eq!(next(&manager, Duration::from_secs(30)), "READY=1\nSTATUS=reload failed; generation 3 stays live");
    assert_eq!(live(&agent), (3, 1, true));
}

#[test]
fn ready_on_an_abstract_socket_when_the_pinned_generation_is_adopted() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    let first = start_agent(&topo.node, &policy(&[80]), &[]);
    let remains = first.stop_and_hand_over();
    // Abstract socket names are per network namespace: bind it in the node's.
    let name = format!("sg-agent-test-{}", std::process::id());
    let bound = name.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let manager = topo.node.spawn(move || {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(bound.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        tx.send(()).unwrap();
        next(&socket, Duration::from_secs(30))
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let notify = format!("@{name}");
    let agent = Agent::spawn(
        Path::new(agent_binary_path()),
        &topo.node,
        &remains.policy,
        remains.bpffs,
        &remains.dir,
        &[],
        &[("NOTIFY_SOCKET", &notify)],
    );
    // The same document compiles to the pinned generation: adopted as it is, and ready.
    assert_eq!(manager.join().unwrap(), "READY=1\nSTATUS=generation 1 live");
    assert_eq!(live(&agent), (1, 1, true));
    assert!(agent.log_text().contains("adopted generation 1"), "{}", agent.log_text());
}
