//! A lab of network namespaces for tests, the demo (`cargo xtask run`) and the benchmarks:
//! namespaces joined by veth pairs, a private bpffs, the agent as a child process, and real
//! TCP/UDP/ICMP traffic between namespaces.
//!
//! Everything created here is removed by `Drop`, so a failing (panicking) test cleans up too.
//! All traffic stays inside the namespaces made here; nothing touches the root namespace's
//! addresses or routes. Failures panic with context: this is harness code, not the agent.
#![expect(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "harness: failures panic with context"
)]

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call, short enough for a namespace.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("sgt{}-{n}-{tag}", std::process::id())
}

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

/// Runs a command and panics with its output if it fails.
pub fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        must(&["ip", "netns", "add", &name]);
        must(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        let ns = Netns { name };
        let mut settings = vec!["sysctl".to_string(), "-qw".to_string()];
        for conf in ["all", "default"] {
            // No duplicate address detection: addresses (link-local included) are usable at
            // once, instead of the first IPv6 packets of a test waiting on tentative addresses.
            settings.push(format!("net.ipv6.conf.{conf}.accept_dad=0"));
            // MLD reports (which no policy allows) repeat for up to a second after a link comes
            // up; send them at once instead, so that they are over before an agent attaches
            // and do not show up in the drop counters a test compares.
            settings.push(format!("net.ipv6.conf.{conf}.mldv2_unsolicited_report_interval=1"));
            settings.push(format!("net.ipv6.conf.{conf}.mldv1_unsolicited_report_interval=1"));
        }
        ns.exec(&settings.iter().map(String::as_str).collect::<Vec<_>>());
        ns
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", self.name.as_str()];
        full.extend_from_slice(args);
        must(&full)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it creates live there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap_or_else(|_| panic!("thread in netns {} panicked", self.name))
    }

    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid netns fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A bpffs mounted on a private directory, unmounted (dropping every pin) on drop.
pub struct Bpffs {
    pub dir: PathBuf,
}

impl Bpffs {
    pub fn new() -> Bpffs {
        let dir = PathBuf::from(format!("/run/{}", unique("bpf")));
        fs::create_dir_all(&dir).expect("creating bpffs dir");
        must(&["mount", "-t", "bpf", "bpf", dir.to_str().expect("utf-8 path")]);
        Bpffs { dir }
    }

    pub fn pin_path(&self) -> PathBuf {
        self.dir.join("sg-agent")
    }
}

impl Default for Bpffs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = sh(&["umount", "-l", self.dir.to_str().unwrap_or_default()]);
        let _ = fs::remove_dir(&self.dir);
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// One instance: a namespace whose `eth0` is the peer of `<iface>` in the node namespace.
pub struct Host {
    pub ns: Netns,
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

/// A node namespace (where the agent runs and the host side of every veth lives) and the
/// instances around it, each on its own /24 and /64, routed through the node.
pub struct Topology {
    pub node: Netns,
    pub hosts: Vec<(String, Host)>,
}

impl Topology {
    pub fn new() -> Topology {
        let node = Netns::new("node");
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        Topology { node, hosts: Vec::new() }
    }

    /// Adds a host on interface `iface` of the node, subnet `10.0.<n>.0/24` and `fd00:<n>::/64`;
    /// the host is `.<host>` / `::<host>`, the node `.1` / `::1`.
    pub fn add(&mut self, iface: &str, n: u8, host: u8) -> &Host {
        self.add_net(iface, &format!("10.0.{n}"), &format!("fd00:{n}"), host)
    }

    /// Adds a host on `iface` in `<v4_net>.0/24` and `<v6_net>::/64` (e.g. "198.51.100",
    /// "2001:db8:1"), routed through the node.
    pub fn add_net(&mut self, iface: &str, v4_net: &str, v6_net: &str, host: u8) -> &Host {
        let ns = Netns::new(iface);
        self.node.ip(&["link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
        let gw4 = format!("{v4_net}.1");
        let gw6 = format!("{v6_net}::1");
        self.node.ip(&["addr", "add", &format!("{gw4}/24"), "dev", iface]);
        self.node.ip(&["addr", "add", &format!("{gw6}/64"), "dev", iface, "nodad"]);
        self.node.ip(&["link", "set", iface, "up"]);
        let v4 = format!("{v4_net}.{host}");
        let v6 = format!("{v6_net}::{host}");
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", &gw4]);
        ns.ip(&["-6", "route", "add", "default", "via", &gw6]);
        // Resolve neighbours both ways now. Without this the first IPv6 packet forwarded to a
        // fresh host is lost about half the time (a kernel quirk seen with no filter at all),
        // which would read as a firewall drop.
        ns.exec(&["ping", "-4", "-c", "1", "-W", "1", &gw4]);
        ns.exec(&["ping", "-6", "-c", "1", "-W", "1", &gw6]);
        self.node.exec(&["ping", "-6", "-c", "1", "-W", "1", &v6]);
        self.wait_for_link_local(iface);
        let host = Host { ns, v4: v4.parse().ok(), v6: v6.parse().ok() };
        self.hosts.push((iface.to_owned(), host));
        &self.hosts.last().expect("just pushed").1
    }

    /// Waits until the node's side of `iface` has its link-local address. The kernel configures
    /// it once the carrier event is processed (up to a second after `link set up`) and then
    /// sends its MLD reports toward the instance, which the instance's ingress rules drop; a
    /// test that compares drop counters must start after them.
    fn wait_for_link_local(&self, iface: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if !self.node.ip(&["-6", "addr", "show", "dev", iface, "scope", "link"]).trim().is_empty() {
                // The repeated reports follow within a few milliseconds
                // (`mldv2_unsolicited_report_interval=1`, see `Netns::new`).
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Adds another address to a host (for spoofing tests).
    pub fn add_address(&self, iface: &str, cidr: &str) {
        let host = self.host(iface);
        let family = if cidr.contains(':') { "-6" } else { "-4" };
        host.ns.ip(&[family, "addr", "add", cidr, "dev", "eth0", "nodad"]);
    }

    pub fn host(&self, iface: &str) -> &Host {
        &self.hosts.iter().find(|(i, _)| i == iface).unwrap_or_else(|| panic!("no host on {iface}")).1
    }
}

/// The agent running in the node namespace; torn down and killed on drop.
pub struct Agent {
    pub child: Child,
    pub binary: PathBuf,
    pub node: String,
    pub pins: PathBuf,
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    // Keep the bpffs mounted as long as the agent lives.
    pub bpffs: Option<Bpffs>,
    /// Whether `Drop` removes `dir` (not after `crash`, which hands it on).
    keep_dir: bool,
}

/// What a crashed agent leaves: its pinned state (still enforcing) and its directory, for a
/// new agent to pick up.
pub struct Remains {
    pub bpffs: Bpffs,
    pub dir: PathBuf,
    pub policy: PathBuf,
}

impl Agent {
    /// Starts `binary run` on `policy` (JSON text) in `node`, waiting until it answers.
    pub fn start(binary: &Path, node: &Netns, policy: &str, extra: &[&str]) -> Agent {
        let dir = PathBuf::from(format!("/run/{}", unique("agent")));
        fs::create_dir_all(&dir).expect("agent dir");
        let policy_path = dir.join("policy.json");
        fs::write(&policy_path, policy).expect("writing policy");
        let bpffs = Bpffs::new();
        Self::start_with(binary, node, &policy_path, bpffs, &dir, extra)
    }

    pub fn start_with(
        binary: &Path,
        node: &Netns,
        policy_path: &Path,
        bpffs: Bpffs,
        dir: &Path,
        extra: &[&str],
    ) -> Agent {
        let socket = dir.join("control.sock");
        let log = dir.join(format!("agent-{}.log", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let pins = bpffs.pin_path();
        let log_file = fs::File::create(&log).expect("agent log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.name])
            .arg(binary)
            .args(["run", "--policy"])
            .arg(policy_path)
            .arg("--pin-path")
            .arg(&pins)
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .env("RUST_LOG", "info,sg_agent=debug")
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().expect("spawning sg-agent");
        let mut agent = Agent {
            child,
            binary: binary.to_path_buf(),
            node: node.name.clone(),
            pins,
            socket,
            dir: dir.to_path_buf(),
            log,
            bpffs: Some(bpffs),
            keep_dir: false,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sg-agent exited ({status}) before it was ready:\n{}", self.log_text());
            }
            // Ready means this agent answers on its socket (status also succeeds from the pins
            // a previous agent left, before this one listens).
            let out = self.cli(&["status", "--json"]);
            let answering = out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .is_ok_and(|s| s["agent_running"] == serde_json::Value::Bool(true));
            if answering {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sg-agent not ready after 30 s:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs an `sg-agent` subcommand against this agent, in the node namespace.
    pub fn cli(&self, args: &[&str]) -> Output {
        let pins = self.pins.to_string_lossy().into_owned();
        let socket = self.socket.to_string_lossy().into_owned();
        let binary = self.binary.to_string_lossy().into_owned();
        let mut full = vec!["ip", "netns", "exec", self.node.as_str(), binary.as_str()];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--pin-path", &pins, "--socket", &socket]);
        sh(&full)
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Packets counted under a verdict reason.
    pub fn counter(&self, reason: &str) -> u64 {
        self.status()["counters"][reason]["packets"].as_u64().unwrap_or(0)
    }

    /// `apply` of a document given as text.
    pub fn apply(&self, policy: &str) -> Output {
        let path = self.dir.join(format!("apply-{}.json", COUNTER.fetch_add(1, Ordering::Relaxed)));
        fs::write(&path, policy).expect("writing policy");
        self.cli(&["apply", path.to_str().expect("utf-8")])
    }

    pub fn apply_ok(&self, policy: &str) {
        let out = self.apply(policy);
        assert!(
            out.status.success(),
            "apply failed: {}{}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
    }

    /// Sends a signal to the agent process (the `ip netns exec` wrapper execs it, same pid).
    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// `kill -9`: the agent dies without any clean-up; its pins keep enforcing.
    pub fn crash(self) -> Remains {
        self.end_with(libc::SIGKILL)
    }

    /// SIGTERM: the agent stops; its pins keep enforcing, handed on for a new agent.
    pub fn stop_and_hand_over(self) -> Remains {
        self.end_with(libc::SIGTERM)
    }

    fn end_with(mut self, signal: i32) -> Remains {
        self.signal(signal);
        let _ = self.child.wait();
        self.keep_dir = true;
        let bpffs = self.bpffs.take().expect("bpffs");
        Remains { bpffs, dir: self.dir.clone(), policy: self.dir.join("policy.json") }
    }

    /// Starts a new agent on what a crashed one left.
    pub fn restart(binary: &Path, node: &Netns, remains: Remains, extra: &[&str]) -> Agent {
        Self::start_with(binary, node, &remains.policy, remains.bpffs, &remains.dir, extra)
    }

    /// Stops the agent with SIGTERM and waits; enforcement stays (SPEC §4).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("waiting for sg-agent")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.cli(&["teardown"]);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- sg-agent log ({}) ---\n{}", self.log.display(), self.log_text());
        }
        // Unmounting the bpffs drops any pins left (and with them the links).
        self.bpffs.take();
        if !self.keep_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub const SHORT: Duration = Duration::from_millis(700);

/// A thread serving in a namespace until dropped (the servers below).
struct ServerThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `open` in `ns` (binding a socket), then `serve(socket, stop)` there; returns once
    /// the socket is bound, so that a test's first packet finds it.
    fn start<S: 'static>(
        ns: &Netns,
        open: impl FnOnce() -> S + Send + 'static,
        serve: impl FnOnce(S, &AtomicBool) + Send + 'static,
    ) -> ServerThread {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let socket = open();
            let _ = ready_tx.send(());
            serve(socket, &s);
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("server did not start");
        ServerThread { stop, thread: Some(thread) }
    }

    /// Accepts TCP connections on `addr:port`, each handled by `handle` on its own thread.
    fn tcp(ns: &Netns, addr: IpAddr, port: u16, handle: fn(TcpStream)) -> ServerThread {
        let open = move || {
            let listener = TcpListener::bind(SocketAddr::new(addr, port)).expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        };
        ServerThread::start(ns, open, move |listener, stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        std::thread::spawn(move || handle(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP server in a namespace that answers every connection with "ok\n" and then echoes
/// what it receives (long-lived connections); stopped on drop.
pub struct TcpServer {
    _thread: ServerThread,
}

impl TcpServer {
    pub fn start(ns: &Netns, addr: IpAddr, port: u16) -> TcpServer {
        let greet_and_echo = |mut stream: TcpStream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.write_all(b"ok\n");
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        };
        TcpServer { _thread: ServerThread::tcp(ns, addr, port, greet_and_echo) }
    }
}

/// Connects from `ns` and reads the greeting: true if the TCP connection works end to end.
pub fn tcp_ok(ns: &Netns, addr: IpAddr, port: u16) -> bool {
    ns.run(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::new(addr, port), SHORT) else { return false };
        let _ = s.set_read_timeout(Some(SHORT));
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok\n"
    })
}

/// A connection kept open from `ns`, for tests of long-lived flows.
pub struct LongConnection {
    stream: TcpStream,
}

impl LongConnection {
    pub fn open(ns: &Netns, addr: IpAddr, port: u16) -> LongConnection {
        let stream = ns.run(move || {
            let mut s = TcpStream::connect_timeout(&SocketAddr::new(addr, port), SHORT).expect("connect");
            s.set_read_timeout(Some(SHORT)).expect("timeout");
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).expect("greeting");
            s
        });
        LongConnection { stream }
    }

    /// Sends a line and expects it echoed.
    pub fn roundtrip(&mut self, text: &str) -> bool {
        if self.stream.write_all(text.as_bytes()).is_err() {
            return false;
        }
        let mut buf = vec![0u8; text.len()];
        self.stream.read_exact(&mut buf).is_ok() && buf == text.as_bytes()
    }
}

/// A UDP echo server; stopped on drop.
pub struct UdpServer {
    _thread: ServerThread,
    /// Datagrams received so far.
    pub received: Arc<AtomicUsize>,
}

impl UdpServer {
    pub fn start(ns: &Netns, addr: IpAddr, port: u16) -> UdpServer {
        let open = move || {
            let socket = UdpSocket::bind(SocketAddr::new(addr, port)).expect("bind");
            socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
            socket
        };
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let echo = move |socket: UdpSocket, stop: &AtomicBool| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        };
        UdpServer { _thread: ServerThread::start(ns, open, echo), received }
    }
}

/// Sends one datagram from `ns` and waits for the echo.
pub fn udp_ok(ns: &Netns, addr: IpAddr, port: u16) -> bool {
    ns.run(move || {
        let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("addr");
        let socket = UdpSocket::bind(bind).expect("bind");
        socket.set_read_timeout(Some(SHORT)).expect("timeout");
        if socket.send_to(b"ping", SocketAddr::new(addr, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(socket.recv_from(&mut buf), Ok((4, _)))
    })
}

/// One ICMP echo from `ns` (the `ping` binary).
pub fn ping_ok(ns: &Netns, addr: IpAddr) -> bool {
    let target = addr.to_string();
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    ns.exec(&["ping", family, "-c", "1", "-W", "1", &target]).status.success()
}

pub fn v4(host: &Host) -> IpAddr {
    host.v4.expect("host has IPv4")
}

pub fn v6(host: &Host) -> IpAddr {
    host.v6.expect("host has IPv6")
}

/// Sends one raw IP packet of protocol `proto` (e.g. 132, SCTP; 47, GRE) from `from` to `dst`
/// and reports whether a raw socket in `to` received it: for rules on protocol numbers that no
/// ordinary tool speaks.
pub fn raw_ip_ok(from: &Netns, to: &Netns, dst: IpAddr, proto: u8) -> bool {
    let marker: [u8; 8] = *b"sgagent!";
    let family = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = to.spawn(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(family, libc::SOCK_RAW, i32::from(proto));
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let _ = ready_tx.send(());
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut seen = false;
            while Instant::now() < deadline && !seen {
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n <= 0 {
                    break;
                }
                seen = buf[..n as usize].windows(marker.len()).any(|w| w == marker);
            }
            libc::close(fd);
            seen
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("raw receiver did not start");
    from.run(move || {
        // SAFETY: as above; the address structs are fully initialised before use.
        unsafe {
            let fd = libc::socket(family, libc::SOCK_RAW, i32::from(proto));
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            match dst {
                IpAddr::V4(a) => {
                    let mut sa: libc::sockaddr_in = std::mem::zeroed();
                    sa.sin_family = libc::AF_INET as u16;
                    sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                    libc::sendto(
                        fd,
                        marker.as_ptr().cast(),
                        marker.len(),
                        0,
                        std::ptr::from_ref(&sa).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    );
                }
                IpAddr::V6(a) => {
                    let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                    sa.sin6_family = libc::AF_INET6 as u16;
                    sa.sin6_addr.s6_addr = a.octets();
                    libc::sendto(
                        fd,
                        marker.as_ptr().cast(),
                        marker.len(),
                        0,
                        std::ptr::from_ref(&sa).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as u32,
                    );
                }
            }
            libc::close(fd);
        }
    });
    receiver.join().unwrap_or(false)
}

/// Connects from `ns` using source address `src` (which must be configured there): for
/// source/destination-check tests.
pub fn tcp_ok_from(ns: &Netns, src: IpAddr, addr: IpAddr, port: u16) -> bool {
    ns.run(move || {
        let domain = if src.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: socket/bind/connect with fully initialised address structs; fd closed.
        unsafe {
            let fd = libc::socket(domain, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return false;
            }
            let ok = bind_to(fd, SocketAddr::new(src, 0));
            if !ok {
                libc::close(fd);
                return false;
            }
            let stream = <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
            connect_with_timeout(stream, SocketAddr::new(addr, port))
        }
    })
}

/// Binds a raw socket descriptor to `addr`.
unsafe fn bind_to(fd: i32, addr: SocketAddr) -> bool {
    // SAFETY: the caller passes a valid socket; address structs are zero-initialised then filled.
    unsafe {
        match addr {
            SocketAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                libc::bind(fd, std::ptr::from_ref(&sa).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32) == 0
            }
            SocketAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as u16;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                libc::bind(fd, std::ptr::from_ref(&sa).cast(), std::mem::size_of::<libc::sockaddr_in6>() as u32) == 0
            }
        }
    }
}

/// Connects a bound stream socket with a timeout (non-blocking connect + poll) and reads the
/// server's greeting.
fn connect_with_timeout(stream: TcpStream, to: SocketAddr) -> bool {
    use std::os::fd::AsRawFd as _;
    let fd = stream.as_raw_fd();
    let _ = stream.set_nonblocking(true);
    let (sa, len): (libc::sockaddr_storage, u32) = {
        // SAFETY: zeroed storage large enough for either family, then filled.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match to {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
                let sa = unsafe { &mut *std::ptr::from_mut(&mut ss).cast::<libc::sockaddr_in>() };
                sa.sin_family = libc::AF_INET as u16;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above, for sockaddr_in6.
                let sa = unsafe { &mut *std::ptr::from_mut(&mut ss).cast::<libc::sockaddr_in6>() };
                sa.sin6_family = libc::AF_INET6 as u16;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as u32)
    };
    // SAFETY: valid socket and address.
    unsafe { libc::connect(fd, std::ptr::from_ref(&sa).cast(), len) };
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, SHORT.as_millis() as i32) };
    if ready != 1 || stream.take_error().ok().flatten().is_some() || stream.peer_addr().is_err() {
        return false;
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(SHORT));
    let mut buf = [0u8; 3];
    (&stream).read_exact(&mut buf).is_ok() && &buf == b"ok\n"
}

/// A TCP server that swallows everything a client sends and, when the client shuts down its
/// sending side, answers with the byte count: for bulk transfers in one direction (path MTU
/// discovery tests). Stopped on drop.
pub struct SinkServer {
    _thread: ServerThread,
}

impl SinkServer {
    pub fn start(ns: &Netns, addr: IpAddr, port: u16) -> SinkServer {
        let count_bytes = |mut stream: TcpStream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
            let mut total = 0usize;
            let mut buf = [0u8; 65536];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = stream.write_all(format!("{total}\n").as_bytes());
        };
        SinkServer { _thread: ServerThread::tcp(ns, addr, port, count_bytes) }
    }
}

/// Sends `bytes` bytes from `ns` to a [`SinkServer`] and checks it got them all within
/// `within`.
pub fn bulk_send_ok(ns: &Netns, addr: IpAddr, port: u16, bytes: usize, within: Duration) -> bool {
    ns.run(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::new(addr, port), SHORT) else { return false };
        let _ = s.set_write_timeout(Some(within));
        let _ = s.set_read_timeout(Some(within));
        let data = vec![0x5au8; bytes];
        if s.write_all(&data).is_err() || s.shutdown(std::net::Shutdown::Write).is_err() {
            return false;
        }
        let mut answer = String::new();
        s.read_to_string(&mut answer).is_ok() && answer.trim() == bytes.to_string()
    })
}

/// Sends `count` datagrams of `payload` bytes from `ns`, source port `sport`, to `addr:port`,
/// each waiting for its echo; returns how many echoes came back.
pub fn udp_exchange(ns: &Netns, sport: u16, addr: IpAddr, port: u16, count: usize, payload: usize) -> usize {
    ns.run(move || {
        let bind: SocketAddr =
            if addr.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], sport)) } else { SocketAddr::from(([0u16; 8], sport)) };
        let socket = UdpSocket::bind(bind).expect("bind");
        socket.set_read_timeout(Some(SHORT)).expect("timeout");
        let data = vec![0x42u8; payload];
        let mut buf = vec![0u8; payload + 16];
        (0..count)
            .filter(|_| {
                socket.send_to(&data, SocketAddr::new(addr, port)).is_ok() && socket.recv_from(&mut buf).is_ok()
            })
            .count()
    })
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().to_owned()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends raw Ethernet frames out of `ns`'s `eth0` (AF_PACKET): hostile frames reach the node's
/// XDP program exactly as written, malformed or not.
pub fn send_frames(ns: &Netns, frames: Vec<Vec<u8>>) -> usize {
    ns.run(move || {
        // SAFETY: plain socket calls with a fully initialised sockaddr_ll; fd closed at the end.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
            sll.sll_halen = 6;
            let sent = frames
                .iter()
                .filter(|f| {
                    libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        std::ptr::from_ref(&sll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    ) == f.len() as isize
                })
                .count();
            libc::close(fd);
            sent
        }
    })
}
