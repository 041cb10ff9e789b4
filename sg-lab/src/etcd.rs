//! A real etcd (Debian's `/usr/bin/etcd`, 3.4) for fleet-mode tests, the demo and the
//! benchmark: single members and 3-member clusters on free ports, on loopback or inside a
//! namespace made by the lab, each with a temporary data directory; TLS material made with the
//! `openssl` command. Members are stopped by pid (SIGKILL) on drop and their directories
//! removed; a member also dies with the process that started it (`PR_SET_PDEATHSIG`), so a
//! killed test run leaves no etcd behind.
//!
//! Readiness is `etcdctl endpoint health` succeeding (a leader is elected and the member
//! serves reads): a fresh member is ready in 0.1–1 s, a restarted one in 1–2 s.
#![expect(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "harness: failures panic with context"
)]

use std::{
    fs,
    net::TcpListener,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::lab::{Netns, must, run_in, unique};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Whether etcd tests can run here: the binaries are installed (`scripts/setup-toolchain.sh`).
/// Without them, with `SG_REQUIRE_PRIVILEGED=1` (CI) the caller fails; otherwise it skips.
pub fn available() -> bool {
    if Path::new(ETCD).exists() && Path::new(ETCDCTL).exists() {
        return true;
    }
    if std::env::var("SG_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("{ETCD} or {ETCDCTL} is missing (run scripts/setup-toolchain.sh); SG_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("SKIPPED: etcd is not installed (scripts/setup-toolchain.sh installs it)");
    false
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("sg-etcd-{}", unique(tag)));
        fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Server and client certificates from one CA, and a client certificate from another CA
/// (a "wrong" certificate).
pub struct Tls {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Tls {
    /// A CA and a server certificate for 127.0.0.1, `localhost` and `ips`.
    pub fn new(ips: &[&str]) -> Tls {
        let dir = TempDir::new("tls");
        let d = &dir.path;
        let ca = d.join("ca.crt");
        openssl_ca(d, "ca", "sg-fleet-test-ca");
        let mut san = String::from("subjectAltName=IP:127.0.0.1,DNS:localhost");
        for ip in ips {
            san.push_str(&format!(",IP:{ip}"));
        }
        fs::write(
            d.join("server.ext"),
            format!(
                "{san}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            ),
        )
        .expect("server.ext");
        openssl_leaf(d, "ca", "server", "etcd-server", "server.ext");
        Tls { server_cert: d.join("server.crt"), server_key: d.join("server.key"), ca, dir }
    }

    /// A client certificate signed by this CA with common name `cn` (etcd's user, if it has no
    /// password): (certificate, key).
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        let d = &self.dir.path;
        let ext = d.join("client.ext");
        if !ext.exists() {
            fs::write(&ext, "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
                .expect("client.ext");
        }
        openssl_leaf(d, "ca", cn, cn, "client.ext");
        (d.join(format!("{cn}.crt")), d.join(format!("{cn}.key")))
    }

    /// A client certificate with common name `cn` from another CA, which the server does not
    /// trust: (certificate, key, that CA).
    pub fn rogue_client(&self, cn: &str) -> (PathBuf, PathBuf, PathBuf) {
        let d = &self.dir.path;
        openssl_ca(d, "rogue-ca", "someone-else");
        let ext = d.join("client.ext");
        if !ext.exists() {
            fs::write(&ext, "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
                .expect("client.ext");
        }
        let name = format!("rogue-{cn}");
        openssl_leaf(d, "rogue-ca", &name, cn, "client.ext");
        (d.join(format!("{name}.crt")), d.join(format!("{name}.key")), d.join("rogue-ca.crt"))
    }
}

const KEY_OPTIONS: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

fn openssl_ca(dir: &Path, name: &str, cn: &str) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    let mut args = vec!["openssl", "req", "-x509"];
    args.extend(KEY_OPTIONS);
    let (key, crt, subject) = (key.display().to_string(), crt.display().to_string(), format!("/CN={cn}"));
    args.extend(["-keyout", &key, "-out", &crt, "-days", "30", "-subj", &subject]);
    must(&args);
}

fn openssl_leaf(dir: &Path, ca: &str, name: &str, cn: &str, ext: &str) {
    let p = |f: String| dir.join(f).display().to_string();
    let (key, csr, crt) = (p(format!("{name}.key")), p(format!("{name}.csr")), p(format!("{name}.crt")));
    let (ca_crt, ca_key, ext) = (p(format!("{ca}.crt")), p(format!("{ca}.key")), p(ext.to_owned()));
    let subject = format!("/CN={cn}");
    let mut args = vec!["openssl", "req"];
    args.extend(KEY_OPTIONS);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
    must(&args);
    must(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &crt,
        "-days",
        "30",
        "-extfile",
        &ext,
    ]);
}

/// How to start members.
#[derive(Clone, Default)]
pub struct Options {
    /// Run inside this namespace (by name); the root namespace otherwise.
    pub netns: Option<String>,
    /// The address to listen on (default 127.0.0.1).
    pub ip: Option<String>,
    /// Server certificate and key, and the CA client certificates must be signed by
    /// (`--client-cert-auth`): the client URL is then https.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// More etcd flags (`--max-txn-ops 16`, ...).
    pub extra: Vec<String>,
}

impl Options {
    pub fn in_netns(ns: &Netns, ip: &str) -> Options {
        Options { netns: Some(ns.name.clone()), ip: Some(ip.to_owned()), ..Options::default() }
    }

    pub fn with_tls(mut self, tls: &Tls) -> Options {
        self.tls = Some((tls.server_cert.clone(), tls.server_key.clone(), tls.ca.clone()));
        self
    }

    pub fn with_flags(mut self, flags: &[&str]) -> Options {
        self.extra.extend(flags.iter().map(|f| (*f).to_owned()));
        self
    }

    fn ip(&self) -> &str {
        self.ip.as_deref().unwrap_or("127.0.0.1")
    }
}

/// One etcd member.
pub struct Member {
    pub name: String,
    /// `host:port` of its client URL (what `--store etcd://` takes).
    pub endpoint: String,
    pub client_url: String,
    pub peer_url: String,
    pub log: PathBuf,
    options: Options,
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd {} is already running", self.name);
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("etcd log");
        let mut cmd = match &self.options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, ETCD]);
                c
            }
            None => Command::new(ETCD),
        };
        cmd.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log);
        // SAFETY: prctl is async-signal-safe; the child dies with the thread that spawned it
        // (a killed test run leaves no etcd behind). `ip netns exec` execs etcd, same pid.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("starting {ETCD}: {e}")));
    }

    /// SIGKILL by pid, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: our own child; SIGCONT first in case a test stopped it.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts on the same ports and data directory; waits until it serves.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Starts a killed member again (same ports, same data); waits until it serves.
    pub fn start_again(&mut self) {
        self.spawn();
        self.wait_ready(Duration::from_secs(30));
    }

    /// Sends a signal (SIGSTOP, SIGCONT) to the member.
    pub fn signal(&self, signal: i32) {
        let pid = self.pid().expect("etcd is not running") as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, signal) };
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `etcdctl ARGS` against this member (in its namespace, with the admin's TLS).
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.options, &self.client_url, None, args)
    }

    /// `etcdctl ARGS`, panicking if it fails; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd {} exited ({status}):\n{}", self.name, self.log_text());
            }
            let out = self.ctl(&["endpoint", "health", "--command-timeout=1s"]);
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd {} not ready after {within:?}:\n{}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- etcd {} log ({}) ---\n{}", self.name, self.log.display(), tail(&self.log_text(), 40));
        }
        self.kill();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `etcdctl` against `url`, with TLS as the admin (the server certificate doubles as a client
/// certificate: CN etcd-server, a user that does not exist, so with auth on give `user`).
fn ctl(options: &Options, url: &str, user: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = match &options.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, ETCDCTL]);
            c
        }
        None => Command::new(ETCDCTL),
    };
    cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints={url}")).arg("--dial-timeout=2s");
    if let Some((cert, key, ca)) = &options.tls {
        cmd.arg(format!("--cacert={}", ca.display()))
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", key.display()));
    }
    if let Some(user) = user {
        cmd.arg(format!("--user={user}"));
    }
    cmd.args(args).output().unwrap_or_else(|e| panic!("running {ETCDCTL}: {e}"))
}

/// A free TCP port on `ip` in `netns` (bind :0, read the port, close).
fn free_port(netns: Option<&str>, ip: &str) -> u16 {
    let ip = ip.to_owned();
    let pick = move || {
        let l = TcpListener::bind((ip.as_str(), 0)).expect("binding a free port");
        l.local_addr().expect("local addr").port()
    };
    match netns {
        None => pick(),
        Some(ns) => run_in(ns, pick),
    }
}

/// One or more members forming a cluster, with their data directories.
pub struct Etcd {
    pub members: Vec<Member>,
    pub options: Options,
    // Dropped after the members (fields drop in order).
    _dir: TempDir,
}

impl Etcd {
    /// A single member on 127.0.0.1 in the root namespace.
    pub fn start() -> Etcd {
        Etcd::cluster(1, Options::default())
    }

    /// `n` members with `options`, started together, once every one serves.
    pub fn cluster(n: usize, options: Options) -> Etcd {
        let dir = TempDir::new("data");
        let ip = options.ip().to_owned();
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| (free_port(options.netns.as_deref(), &ip), free_port(options.netns.as_deref(), &ip)))
            .collect();
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://{ip}:{peer}")).collect();
        let token = unique("cluster");
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let name = format!("m{i}");
                let endpoint = format!("{ip}:{client}");
                let client_url = format!("{scheme}://{endpoint}");
                let peer_url = format!("http://{ip}:{peer}");
                let mut args: Vec<String> = [
                    "--name",
                    &name,
                    "--data-dir",
                    &dir.path.join(format!("{name}.etcd")).display().to_string(),
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &token,
                    "--logger",
                    "zap",
                    "--log-outputs",
                    "stderr",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                if let Some((cert, key, ca)) = &options.tls {
                    args.extend([
                        "--cert-file".to_owned(),
                        cert.display().to_string(),
                        "--key-file".to_owned(),
                        key.display().to_string(),
                        "--trusted-ca-file".to_owned(),
                        ca.display().to_string(),
                        "--client-cert-auth".to_owned(),
                    ]);
                }
                args.extend(options.extra.iter().cloned());
                Member {
                    log: dir.path.join(format!("{name}.log")),
                    name,
                    endpoint,
                    client_url,
                    peer_url,
                    options: options.clone(),
                    args,
                    child: None,
                }
            })
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &mut members {
            m.wait_ready(Duration::from_secs(30));
        }
        Etcd { members, options, _dir: dir }
    }

    /// `etcd://host:port,...` for `--store`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.members.iter().map(|m| m.endpoint.as_str()).collect::<Vec<_>>().join(","))
    }

    pub fn member(&mut self, i: usize) -> &mut Member {
        &mut self.members[i]
    }

    /// `etcdctl` against every member (the first that answers).
    pub fn ctl(&self, args: &[&str]) -> Output {
        let urls: Vec<&str> = self.members.iter().map(|m| m.client_url.as_str()).collect();
        ctl(&self.options, &urls.join(","), None, args)
    }

    /// `etcdctl` as `user` (`name:password`).
    pub fn ctl_as(&self, user: &str, args: &[&str]) -> Output {
        let urls: Vec<&str> = self.members.iter().map(|m| m.client_url.as_str()).collect();
        ctl(&self.options, &urls.join(","), Some(user), args)
    }

    /// `etcdctl ARGS`, panicking if it fails; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Puts `key` = `value`; the store revision after it.
    pub fn put(&self, key: &str, value: &str) -> i64 {
        revision_of(&self.ctl_ok(&["put", key, value, "-w", "json"]))
    }

    /// Deletes `key`; the store revision after it.
    pub fn delete(&self, key: &str) -> i64 {
        revision_of(&self.ctl_ok(&["del", key, "-w", "json"]))
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        revision_of(&self.ctl_ok(&["get", "/sg-lab/revision-probe", "-w", "json"]))
    }

    /// Compacts the history up to `revision` (physically, so that old revisions are gone).
    pub fn compact(&self, revision: i64) {
        self.ctl_ok(&["compaction", "--physical", &revision.to_string()]);
    }

    /// Keys (and values) under `prefix`, in order.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.get_prefix_at(prefix, 0)
    }

    /// Keys (and values) under `prefix` as of `revision` (0: the current one).
    pub fn get_prefix_at(&self, prefix: &str, revision: i64) -> Vec<(String, String)> {
        let rev = format!("--rev={revision}");
        let out = self.ctl_ok(&["get", prefix, "--prefix", &rev, "-w", "json"]);
        let json: serde_json::Value = serde_json::from_str(&out).expect("etcdctl JSON");
        let decode = |v: &serde_json::Value| {
            let text = v.as_str().unwrap_or_default();
            String::from_utf8(base64_decode(text)).unwrap_or_default()
        };
        json["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().map(|kv| (decode(&kv["key"]), decode(&kv["value"]))).collect())
            .unwrap_or_default()
    }
}

fn revision_of(json: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("etcdctl JSON {json:?}: {e}"));
    v["header"]["revision"].as_i64().unwrap_or_else(|| panic!("no revision in {json}"))
}

/// Standard base64 (etcdctl's JSON output encodes keys and values).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter_map(value) {
        acc = acc << 6 | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("L3NnL3YxL2dyb3Vwcy9hYg=="), b"/sg/v1/groups/ab");
        assert_eq!(base64_decode(""), b"");
    }
}
