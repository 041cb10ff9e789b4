//! The soak behind `cargo xtask soak` (root): an agent on a namespace node for N minutes of
//! applies (two policies alternating), SIGHUP reloads, interface churn (veths created and
//! deleted, each the interface of an instance in the policy) and continuous traffic. It checks
//! what must hold throughout and reports the agent's resources over time:
//!
//! - no probe ever reaches the trap port, which neither policy allows;
//! - a long-lived TCP connection, opened under the first policy, keeps working across every
//!   swap (tracked flows survive, SPEC §3/§4);
//! - both alternating ports are reached at some point (the swaps really happen);
//! - agent RSS, open file descriptors, conntrack entries and the generation, sampled.
//!
//! Writes docs/soak.md under `--out` and exits non-zero if a check failed.
#![expect(clippy::expect_used, clippy::indexing_slicing, reason = "harness: a broken set-up aborts")]

use std::{
    fmt::Write as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use sg_lab::lab::{Agent, LongConnection, TcpServer, Topology, rss_kib, tcp_ok, v4};

#[derive(Parser)]
struct Args {
    /// Workspace root to write docs/soak.md into.
    #[arg(long)]
    out: PathBuf,
    /// The agent binary.
    #[arg(long)]
    agent: PathBuf,
    /// How long to soak.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Veths to create and delete over the run.
    #[arg(long, default_value_t = 1000)]
    links: usize,
}

/// Instances whose interfaces come and go (`vchur<k>`), in every policy.
const CHURN_SLOTS: usize = 8;
const TRAP: u16 = 82;

/// Web (veth-web, 10.0.1.10) allows TCP `port` from the client's subnet; the churn instances
/// are in the same group. Port 80 in policy A, 81 in policy B; neither allows 82.
fn policy(port: u16) -> String {
    let churn: Vec<String> = (0..CHURN_SLOTS)
        .map(|k| {
            format!(
                r#"{{ "id": "churn-{k}", "interface": "vchur{k}", "addresses": ["10.9.{k}.10"], "security_groups": ["sg-web"] }}"#
            )
        })
        .collect();
    format!(
        r#"{{ "security_groups": [
              {{ "id": "sg-web", "ingress": [ {{ "protocol": "tcp", "from_port": {port}, "to_port": {port}, "cidrs": ["10.0.2.0/24"] }} ] }},
              {{ "id": "sg-client", "ingress": [] }} ],
            "instances": [
              {{ "id": "web", "interface": "veth-web", "addresses": ["10.0.1.10", "fd00:1::10"], "security_groups": ["sg-web"] }},
              {{ "id": "client", "interface": "veth-c", "addresses": ["10.0.2.10", "fd00:2::10"], "security_groups": ["sg-client"] }},
              {} ] }}"#,
        churn.join(",\n")
    )
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    minute: f64,
    rss_kib: u64,
    fds: usize,
    conntrack: u64,
    generation: u64,
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let log = |m: &str| eprintln!("soak: {m}");
    let duration = Duration::from_secs_f64(args.minutes * 60.0);

    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    topo.add("veth-c", 2, 10);
    let (a, b) = (policy(80), policy(81));
    let agent = Agent::start(&args.agent, &topo.node, &a, &[]);
    let pid = agent.child.id();
    let web = topo.host("veth-web");
    let web_addr = v4(web);
    let _servers: Vec<TcpServer> = [80, 81, TRAP].iter().map(|p| TcpServer::start(&web.ns, web_addr, *p)).collect();
    let client = &topo.host("veth-c").ns;
    let mut long = LongConnection::open(client, web_addr, 80);
    assert!(long.roundtrip("hello"), "the long connection works under policy A");

    let stop = AtomicBool::new(false);
    let trap_reached = AtomicUsize::new(0);
    let reached = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let probes = AtomicUsize::new(0);
    let long_failures = Arc::new(AtomicUsize::new(0));
    let mut samples = Vec::new();
    let mut applies = 0usize;
    let mut reloads = 0usize;
    let mut links_made = 0usize;
    let mut apply_failures = Vec::new();
    let started = Instant::now();
    std::thread::scope(|scope| {
        // Probers: the trap port, and the two alternating ports.
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for (i, port) in [80u16, 81].into_iter().enumerate() {
                    if tcp_ok(client, web_addr, port) {
                        reached[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
                if tcp_ok(client, web_addr, TRAP) {
                    trap_reached.fetch_add(1, Ordering::Relaxed);
                }
                probes.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Link churn: an instance's interface appears, lives a moment, vanishes.
        let churn = scope.spawn(|| {
            // A little ahead of an even pace, so that every link is made within the run.
            let per_link = duration.div_f64(args.links.max(1) as f64 * 1.05);
            let mut made = 0usize;
            while !stop.load(Ordering::Relaxed) && made < args.links {
                let name = format!("vchur{}", made % CHURN_SLOTS);
                let peer = format!("{name}p");
                let add = topo.node.exec(&["ip", "link", "add", &name, "type", "veth", "peer", "name", &peer]);
                if add.status.success() {
                    topo.node.exec(&["ip", "link", "set", &name, "up"]);
                    std::thread::sleep(per_link / 2);
                    topo.node.exec(&["ip", "link", "del", &name]);
                    made += 1;
                }
                std::thread::sleep(per_link / 2);
            }
            made
        });

        let mut next_sample = Instant::now();
        let mut use_b = false;
        while started.elapsed() < duration {
            use_b = !use_b;
            let out = agent.apply(if use_b { &b } else { &a });
            applies += 1;
            if !out.status.success() {
                apply_failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            if applies.is_multiple_of(10) {
                // SIGHUP re-reads the agent's policy file (policy A).
                agent.signal(libc::SIGHUP);
                reloads += 1;
                use_b = false;
            }
            if !long.roundtrip("still there") {
                long_failures.fetch_add(1, Ordering::Relaxed);
            }
            if Instant::now() >= next_sample {
                let status = agent.status();
                let sample = Sample {
                    minute: started.elapsed().as_secs_f64() / 60.0,
                    rss_kib: rss_kib(pid),
                    fds: open_fds(pid),
                    conntrack: status["conntrack"]["entries"].as_u64().unwrap_or(0),
                    generation: status["generation"].as_u64().unwrap_or(0),
                };
                log(&format!("{sample:?}"));
                samples.push(sample);
                next_sample += Duration::from_secs(30).min(duration / 4);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        stop.store(true, Ordering::Relaxed);
        links_made = churn.join().expect("churn thread");
    });
    let status = agent.status();
    samples.push(Sample {
        minute: started.elapsed().as_secs_f64() / 60.0,
        rss_kib: rss_kib(pid),
        fds: open_fds(pid),
        conntrack: status["conntrack"]["entries"].as_u64().unwrap_or(0),
        generation: status["generation"].as_u64().unwrap_or(0),
    });
    let alive = agent.child.id() == pid && std::fs::metadata(format!("/proc/{pid}")).is_ok();

    let checks = [
        ("no probe reached the trap port (neither policy allows it)", trap_reached.load(Ordering::Relaxed) == 0),
        ("the long-lived connection kept working across every swap", long_failures.load(Ordering::Relaxed) == 0),
        (
            "both alternating ports were reached (the swaps happened)",
            reached.iter().all(|r| r.load(Ordering::Relaxed) > 0),
        ),
        ("every apply succeeded", apply_failures.is_empty()),
        ("the agent is still running", alive),
    ];
    let first = samples.first().copied().expect("samples");
    let last = samples.last().copied().expect("samples");
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(md, "# Soak\n");
    let _ = writeln!(
        md,
        "`cargo xtask soak -- --minutes {}`: {:.1} minutes; {applies} applies (two policies alternating), {reloads} \
         SIGHUP reloads, {links_made} veths created and deleted (interfaces of instances in the policy), {} probe \
         rounds of three TCP connects.\n",
        args.minutes,
        started.elapsed().as_secs_f64() / 60.0,
        probes.load(Ordering::Relaxed),
    );
    let _ = writeln!(md, "| check | result |\n|---|---|");
    for (what, ok) in &checks {
        let _ = writeln!(md, "| {what} | {} |", if *ok { "ok" } else { "FAILED" });
    }
    let _ = writeln!(
        md,
        "\nTrap port reached {} times; port 80 reached {} times, port 81 {} times; long connection failures {}.\n",
        trap_reached.load(Ordering::Relaxed),
        reached[0].load(Ordering::Relaxed),
        reached[1].load(Ordering::Relaxed),
        long_failures.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        md,
        "Agent resources: RSS {} KiB at the start, {} KiB at the end, {max_rss} KiB at most; open files {} → {} \
         (at most {max_fds}); conntrack entries {} → {}; generation {} → {}.\n",
        first.rss_kib,
        last.rss_kib,
        first.fds,
        last.fds,
        first.conntrack,
        last.conntrack,
        first.generation,
        last.generation
    );
    let _ = writeln!(md, "| minute | RSS KiB | fds | conntrack entries | generation |\n|---|---|---|---|---|");
    for s in &samples {
        let _ = writeln!(md, "| {:.1} | {} | {} | {} | {} |", s.minute, s.rss_kib, s.fds, s.conntrack, s.generation);
    }
    if !apply_failures.is_empty() {
        let _ = writeln!(md, "\nFailed applies (first 5):\n");
        for f in apply_failures.iter().take(5) {
            let _ = writeln!(md, "- {}", f.trim());
        }
    }
    print!("{md}");
    let path = args.out.join("docs/soak.md");
    if let Err(e) = std::fs::write(&path, &md) {
        log(&format!("writing {}: {e}", path.display()));
    }
    drop(long);
    drop(agent);
    if checks.iter().all(|(_, ok)| *ok) { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}
