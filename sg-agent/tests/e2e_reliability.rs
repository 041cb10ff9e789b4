//! Reliability on a real node, with real processes and packets: one agent per pin path, a
//! control socket that stalled clients cannot freeze, interfaces that come and go (a VM restart
//! re-creates its tap), and the command line's edges (broken pipes, an unusable socket).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

mod support;

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use support::*;

/// Web on veth-web (10.0.1.10): TCP 80 from the client's subnet; 8080 is open on the server but
/// no rule allows it. The client is on veth-c (10.0.2.10).
const POLICY: &str = r#"{
  "security_groups": [
    { "id": "sg-web", "ingress": [ { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["10.0.2.0/24"] } ] },
    { "id": "sg-client", "ingress": [] }
  ],
  "instances": [
    { "id": "web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"], "security_groups": ["sg-web"] },
    { "id": "client", "interface": "veth-c", "addresses": ["10.0.2.10", "fd00:2::10"], "security_groups": ["sg-client"] }
  ]
}"#;

fn web_and_client() -> Topology {
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    topo.add("veth-c", 2, 10);
    topo
}

/// `sg-agent run` started by hand (not waited for), in `node`.
fn spawn_run(node: &Netns, policy: &Path, pins: &Path, socket: &Path) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", &node.name, agent_binary_path(), "run", "--policy"])
        .arg(policy)
        .arg("--pin-path")
        .arg(pins)
        .arg("--socket")
        .arg(socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sg-agent")
}

/// Waits for `child` to exit within `within`; its exit code and stderr.
fn exit_of(mut child: std::process::Child, within: Duration) -> (Option<i32>, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sg-agent still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interface<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["interface"] == name)
        .unwrap_or_else(|| panic!("{name} not in status: {status:#}"))
}

/// Polls `f` until it holds or `within` passes; how long it took.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if f() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_second_agent_on_the_same_pin_path_is_refused_and_the_first_keeps_everything() {
    if !privileged() {
        return;
    }
    let topo = web_and_client();
    let agent = start_agent(&topo.node, POLICY, &[]);
    let first_pid = agent.child.id();
    let policy = agent.dir.join("policy.json");
    // Another socket, and then the same one: refused either way, before touching anything.
    for socket in [agent.dir.join("other.sock"), agent.socket.clone()] {
        let (code, stderr) = exit_of(spawn_run(&topo.node, &policy, &agent.pins, &socket), Duration::from_secs(20));
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("another sg-agent (pid {first_pid}) is running on pin path")),
            "the refusal names the running agent: {stderr}"
        );
        assert!(!stderr.contains("CAP_BPF") && !stderr.contains("permission"), "{stderr}");
    }
    assert!(agent.socket.exists(), "the first agent keeps its socket");
    let status = agent.status();
    assert_eq!((status["agent_running"].as_bool(), status["generation"].as_u64()), (Some(true), Some(1)));
    let web = topo.host("veth-web");
    let _s80 = TcpServer::start(&web.ns, v4(web), 80);
    let _s8080 = TcpServer::start(&web.ns, v4(web), 8080);
    let client = &topo.host("veth-c").ns;
    assert!(tcp_ok(client, v4(web), 80) && !tcp_ok(client, v4(web), 8080), "the first agent's policy, unchanged");
}

#[test]
fn simultaneous_cold_starts_leave_exactly_one_agent() {
    if !privileged() {
        return;
    }
    let topo = web_and_client();
    let bpffs = Bpffs::new();
    let dir = PathBuf::from(format!("/run/{}", unique("cold")));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let pins = bpffs.pin_path();
    let mut children: Vec<_> =
        (0..3).map(|i| spawn_run(&topo.node, &policy, &pins, &dir.join(format!("s{i}.sock")))).collect();
    // The losers give up at once; the winner keeps running.
    std::thread::sleep(Duration::from_secs(4));
    let mut running = Vec::new();
    let mut refused = Vec::new();
    for (i, child) in children.iter_mut().enumerate() {
        match child.try_wait().unwrap() {
            None => running.push(i),
            Some(status) => {
                let mut stderr = String::new();
                child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
                assert_eq!(status.code(), Some(1), "{stderr}");
                assert!(stderr.contains("another sg-agent (pid "), "a loser says why: {stderr}");
                assert!(!stderr.contains("CAP_BPF"), "{stderr}");
                refused.push(i);
            }
        }
    }
    assert_eq!((running.len(), refused.len()), (1, 2), "exactly one agent runs");
    let winner = running[0];
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.node.name, agent_binary_path(), "teardown", "--pin-path"])
        .arg(&pins)
        .arg("--socket")
        .arg(dir.join(format!("s{winner}.sock")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = exit_of(children.swap_remove(winner), Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stalled_clients_never_stall_status_signals_or_applies() {
    if !privileged() {
        return;
    }
    let topo = web_and_client();
    let mut agent = start_agent(&topo.node, POLICY, &[]);
    // 100 clients that send half a request and wait, and 10 that announce a 60 MiB document and
    // send a few bytes of it.
    let mut stalled: Vec<UnixStream> = (0..100)
        .map(|_| {
            let mut s = UnixStream::connect(&agent.socket).unwrap();
            s.write_all(br#"{"request":"sta"#).unwrap();
            s
        })
        .collect();
    for _ in 0..10 {
        let mut s = UnixStream::connect(&agent.socket).unwrap();
        s.write_all(format!("{{\"request\":\"apply\",\"document_bytes\":{}}}\n{{", 60 << 20).as_bytes()).unwrap();
        stalled.push(s);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let call = |request: sg_agent::control::Request| {
        let started = Instant::now();
        let response = runtime
            .block_on(sg_agent::control::call(&agent.socket, &request, Duration::from_secs(60)))
            .expect("the agent answers");
        assert_eq!(response.exit_code, 0, "{:?}", response.error);
        started.elapsed()
    };
    let status_took = call(sg_agent::control::Request::Status);
    eprintln!("status with 110 stalled clients: {:.1} ms", status_took.as_secs_f64() * 1000.0);
    assert!(status_took < Duration::from_secs(1), "status took {status_took:?}");
    // The stalled uploads hold only the megabyte each is stuck in: an apply goes straight through.
    let apply_took = call(sg_agent::control::Request::Apply { document: POLICY.to_owned(), instances: Vec::new() });
    eprintln!("apply beside 10 stalled uploads: {:.1} ms", apply_took.as_secs_f64() * 1000.0);
    assert!(apply_took < Duration::from_secs(5), "apply took {apply_took:?}");
    // SIGHUP is handled while clients stall (the reload shows as generation 3).
    agent.signal(libc::SIGHUP);
    let reloaded = eventually(Duration::from_secs(10), || agent.status()["generation"] == 3);
    assert!(reloaded.is_some(), "SIGHUP was not handled");
    // SIGTERM exits at once, stalled clients or not.
    let started = Instant::now();
    let status = agent.stop();
    let took = started.elapsed();
    eprintln!("SIGTERM to exit with 110 stalled clients: {:.0} ms", took.as_secs_f64() * 1000.0);
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    drop(stalled);
}

#[test]
fn a_deleted_interface_is_forgotten_and_a_recreated_one_protected_without_an_apply() {
    if !privileged() {
        return;
    }
    let topo = web_and_client();
    let metrics_port = 9300 + (std::process::id() % 500) as u16;
    let metrics = format!("127.0.0.1:{metrics_port}");
    let agent = start_agent(&topo.node, POLICY, &["--metrics", &metrics]);
    let web = topo.host("veth-web");
    let (web_addr, client) = (v4(web), &topo.host("veth-c").ns);
    let _s80 = TcpServer::start(&web.ns, web_addr, 80);
    let _s8080 = TcpServer::start(&web.ns, web_addr, 8080);
    assert!(tcp_ok(client, web_addr, 80) && !tcp_ok(client, web_addr, 8080));
    let mut long = LongConnection::open(client, web_addr, 80);
    assert!(long.roundtrip("tracked"));
    let old_ifindex = interface(&agent.status(), "veth-web")["ifindex"].as_u64().unwrap();
    let tracked_on_web = |agent: &Agent| -> usize {
        let out = agent.cli(&["conntrack", "list", "--json"]);
        let flows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        flows.as_array().unwrap().iter().filter(|f| f["ifindex"].as_u64() == Some(old_ifindex)).count()
    };
    assert!(tracked_on_web(&agent) > 0, "the long connection is tracked on veth-web");

    // A prober of the denied port runs through everything that follows.
    let stop = AtomicBool::new(false);
    let breaches = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if tcp_ok(client, web_addr, 8080) {
                    breaches.fetch_add(1, Ordering::Relaxed);
                }
            }
        });

        topo.delete_link("veth-web");
        let reported =
            eventually(Duration::from_secs(1), || interface(&agent.status(), "veth-web")["state"] == "waiting");
        assert!(reported.is_some(), "status says the interface is gone within 1 s: {:#}", agent.status());
        let scrape = topo.node.run(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        });
        assert!(
            scrape.contains(r#"sg_agent_interface_waiting{interface="veth-web",instance="web"} 1"#),
            "metrics say it too:\n{scrape}"
        );
        assert_eq!(tracked_on_web(&agent), 0, "the vanished interface's tracked flows are removed");
        let generation = agent.status()["generation"].as_u64().unwrap();

        // The VM comes back: its tap is created, the hook waits for the agent, then brings it up.
        topo.recreate_link("veth-web");
        let out = agent.cli(&["wait-protected", "veth-web", "--timeout", "10"]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        topo.bring_up("veth-web");
        assert!(tcp_ok(client, web_addr, 80), "the allowed port works again, without an apply");
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        assert!(agent.status()["generation"].as_u64().unwrap() > generation, "a new generation follows the interface");
    });
    assert_eq!(breaches.load(Ordering::Relaxed), 0, "the denied port was never reachable");
    assert_eq!(interface(&agent.status(), "veth-web")["state"], "attached");
    let log = agent.log_text();
    let followed = log.lines().filter(|l| l.contains("follows the interfaces")).collect::<Vec<_>>();
    eprintln!("link event to protected:\n{}", followed.join("\n"));
    assert!(!followed.is_empty(), "{log}");
}

#[test]
fn an_apply_with_a_missing_interface_succeeds_for_the_others() {
    if !privileged() {
        return;
    }
    let topo = web_and_client();
    let agent = start_agent(&topo.node, POLICY, &[]);
    let with_ghost = POLICY.replace(
        r#"{ "id": "client","#,
        r#"{ "id": "ghost", "interface": "veth-ghost", "addresses": ["10.0.9.10"], "security_groups": ["sg-web"] },
    { "id": "client","#,
    );
    let out = agent.apply(&with_ghost);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("waiting for interfaces"), "the summary says so");
    let status = agent.status();
    assert_eq!(interface(&status, "veth-ghost")["state"], "waiting");
    assert_eq!(interface(&status, "veth-ghost")["instance"], "ghost");
    assert_eq!(interface(&status, "veth-web")["state"], "attached");
    assert_eq!(status["generation"], 2);
    let web = topo.host("veth-web");
    let _s80 = TcpServer::start(&web.ns, v4(web), 80);
    let _s8080 = TcpServer::start(&web.ns, v4(web), 8080);
    let client = &topo.host("veth-c").ns;
    assert!(tcp_ok(client, v4(web), 80) && !tcp_ok(client, v4(web), 8080), "the others are enforced");
}

#[test]
fn wait_protected_returns_once_a_later_interface_is_attached() {
    if !privileged() {
        return;
    }
    let mut topo = Topology::new();
    topo.add("veth-c", 2, 10);
    // veth-web does not exist yet.
    let agent = start_agent(&topo.node, POLICY, &[]);
    let waiter = {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &topo.node.name, agent_binary_path(), "wait-protected", "veth-web"]);
        cmd.args(["--timeout", "20", "--pin-path"]).arg(&agent.pins).arg("--socket").arg(&agent.socket);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));
    topo.add("veth-web", 1, 10);
    let out = waiter.wait_with_output().unwrap();
    let log = agent.log_text();
    eprintln!("{}", log.lines().filter(|l| l.contains("follows the interfaces")).collect::<Vec<_>>().join("\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("veth-web: protected"));
    assert_eq!(interface(&agent.status(), "veth-web")["state"], "attached");
    let web = topo.host("veth-web");
    let _s8080 = TcpServer::start(&web.ns, v4(web), 8080);
    assert!(!tcp_ok(&topo.host("veth-c").ns, v4(web), 8080), "protected means enforced");
    // An interface no instance uses is an error at once; one that never comes times out.
    let out = agent.cli(&["wait-protected", "veth-nobody", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_broken_pipe_ends_a_command_quietly_and_an_unusable_socket_touches_nothing() {
    if !privileged() {
        return;
    }
    let topo = web_and_client();
    let agent = start_agent(&topo.node, POLICY, &[]);
    // `sg-agent status --json | true`: the reader is gone before the first line is written.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &topo.node.name, agent_binary_path(), "status", "--json", "--pin-path"]);
    cmd.arg(&agent.pins).arg("--socket").arg(&agent.socket);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = child;
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");

    // A socket path that cannot be created: refused before anything is loaded or pinned.
    let bpffs = Bpffs::new();
    let dir = PathBuf::from(format!("/run/{}", unique("nosock")));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let blocker = dir.join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    let run = spawn_run(&topo.node, &policy, &bpffs.pin_path(), &blocker.join("control.sock"));
    let (code, stderr) = exit_of(run, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("control socket"), "{stderr}");
    assert!(!bpffs.pin_path().join(format!("v{}", sg_common::LAYOUT_VERSION)).exists(), "nothing was pinned");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_apply_cut_short_by_a_crash_says_what_is_in_force() {
    if !privileged() {
        return;
    }
    let topo = web_and_client();
    let agent = start_agent(&topo.node, POLICY, &[]);
    let path = agent.dir.join("next.json");
    std::fs::write(&path, POLICY.replace("\"from_port\": 80, \"to_port\": 80", "\"from_port\": 81, \"to_port\": 81"))
        .unwrap();
    // The agent is stopped while the request is sent, then killed: the client sees the
    // connection close without an answer.
    agent.signal(libc::SIGSTOP);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &topo.node.name, agent_binary_path(), "apply"]).arg(&path);
    cmd.arg("--pin-path").arg(&agent.pins).arg("--socket").arg(&agent.socket);
    let apply = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    agent.signal(libc::SIGKILL);
    let out = apply.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("closed the connection without answering"), "{stderr}");
    assert!(stderr.contains("generation 1 (the one before this apply) stays in force"), "{stderr}");
}
