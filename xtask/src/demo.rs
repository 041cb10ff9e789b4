//! The demo behind `cargo xtask run`: the seed's web server, on a topology of network
//! namespaces made here and removed on exit.
//!
//! ```text
//!   client   10.0.2.10     ─┐                      ┌─ veth-web ── web-1 10.0.1.10, fd00:1::10
//!   office   198.51.100.10 ─┼── node (sg-agent) ───┤   (the instance: XDP + TC on veth-web)
//!   internet 203.0.113.10  ─┘
//! ```
//!
//! Policy (examples/web-server.json): HTTP and HTTPS from anywhere, SSH from the office only,
//! ping from the client's subnet only; out, only HTTP and HTTPS.

use std::{
    net::IpAddr,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result};
use sg_lab::lab::{Agent, Host, TcpServer, Topology, ping_ok, tcp_ok};

/// Prints to stdout, ignoring a reader that went away: `cargo xtask run | tee demo.log` ended
/// with Ctrl-C also ends `tee`, and a failed print (println! panics) must never stand between
/// the demo and its clean-up — a panic there would also reach the lab's `Drop`s, whose own
/// messages would then abort the process with the namespaces still in place.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;

struct Probe<'a> {
    what: &'static str,
    from: &'a Host,
    to: IpAddr,
    /// TCP port, or None for ping.
    port: Option<u16>,
    expect: bool,
}

pub fn run(agent_binary: &Path) -> Result<()> {
    let policy_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/web-server.json");
    let policy = std::fs::read_to_string(&policy_path).with_context(|| format!("reading {}", policy_path.display()))?;

    catch_interrupts();
    say!("demo: creating namespaces: node, web-1 (veth-web), client, office, internet");
    let mut topo = Topology::new();
    topo.add("veth-web", 1, 10);
    topo.add("veth-client", 2, 10);
    topo.add_net("veth-office", "198.51.100", "2001:db8:1", 10);
    topo.add_net("veth-inet", "203.0.113", "2001:db8:ff", 10);
    let web = topo.host("veth-web");
    let internet = topo.host("veth-inet");
    let web4 = web.v4.context("web has no IPv4")?;
    let web6 = web.v6.context("web has no IPv6")?;
    let inet4 = internet.v4.context("internet has no IPv4")?;

    // Servers the probes (and you) can reach: web on 80, 443, 22; "internet" on 80 and 25.
    let _servers = [
        TcpServer::start(&web.ns, web4, 80),
        TcpServer::start(&web.ns, web4, 443),
        TcpServer::start(&web.ns, web6, 443),
        TcpServer::start(&web.ns, web4, 22),
        TcpServer::start(&internet.ns, inet4, 80),
        TcpServer::start(&internet.ns, inet4, 25),
    ];

    say!("demo: starting sg-agent with {}", policy_path.display());
    let agent = Agent::start(agent_binary, &topo.node, &policy, &[]);

    let probes = [
        Probe { what: "internet → web  HTTP  (tcp/80)", from: internet, to: web4, port: Some(80), expect: true },
        Probe {
            what: "internet → web  HTTPS (tcp/443, IPv6)",
            from: internet,
            to: web6,
            port: Some(443),
            expect: true,
        },
        Probe { what: "internet → web  SSH   (tcp/22)", from: internet, to: web4, port: Some(22), expect: false },
        Probe {
            what: "office   → web  SSH   (tcp/22)",
            from: topo.host("veth-office"),
            to: web4,
            port: Some(22),
            expect: true,
        },
        Probe { what: "client   → web  ping", from: topo.host("veth-client"), to: web4, port: None, expect: true },
        Probe { what: "internet → web  ping", from: internet, to: web4, port: None, expect: false },
        Probe { what: "web → internet  HTTP  (tcp/80, egress)", from: web, to: inet4, port: Some(80), expect: true },
        Probe { what: "web → internet  SMTP  (tcp/25, egress)", from: web, to: inet4, port: Some(25), expect: false },
    ];
    say!("\n{:<42} {:<9} expected", "probe", "result");
    let mut surprises = 0;
    for p in &probes {
        let ok = match p.port {
            Some(port) => tcp_ok(&p.from.ns, p.to, port),
            None => ping_ok(&p.from.ns, p.to),
        };
        if ok != p.expect {
            surprises += 1;
        }
        say!(
            "{:<42} {:<9} {}",
            p.what,
            if ok { "ALLOWED" } else { "DENIED" },
            if ok == p.expect { "yes" } else { "NO - unexpected!" }
        );
    }
    say!();
    let status = agent.cli(&["status"]);
    {
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(&status.stdout);
    }

    say!("\nThe agent keeps enforcing. Try it yourself (in another shell, as root):");
    say!("  ip netns exec {} nc -zv {web4} 22          # denied from the internet", internet.ns.name);
    say!("  ip netns exec {} nc -zv {web4} 22   # allowed from the office", topo.host("veth-office").ns.name);
    say!(
        "  ip netns exec {} {} status --pin-path {} --socket {}",
        topo.node.name,
        agent_binary.display(),
        agent.pins.display(),
        agent.socket.display()
    );
    if surprises > 0 {
        say!("\n{surprises} probe(s) did not behave as the policy says; see the agent log: {}", agent.log.display());
    }
    say!("\nCtrl-C stops the demo and removes everything it created.");
    wait_for_interrupt();
    // Clean up first, talk after: the terminal (or the pipe) may be gone already.
    drop(agent);
    drop(topo);
    say!("\ndemo: cleaned up");
    Ok(())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From here on, SIGINT, SIGTERM and SIGHUP (the terminal closed) only set a flag, so the lab's
/// `Drop`s get to clean up; SIGPIPE is ignored (writes to a closed pipe fail instead, and `say!`
/// ignores that). A handler, not a blocked mask: child processes (the agent) must still get
/// their signals.
pub(crate) fn catch_interrupts() {
    // SAFETY: installs an async-signal-safe handler (one atomic store), and SIG_IGN.
    unsafe {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

pub(crate) fn wait_for_interrupt() {
    while !INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
