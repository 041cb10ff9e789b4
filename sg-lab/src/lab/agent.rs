//! The agent as a child process in the node namespace, driven through its command line.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::{Bpffs, Netns, netns::next_id, sh, unique};

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
        let mut agent = Self::spawn(binary, node, policy_path, bpffs, dir, extra, &[]);
        agent.wait_ready();
        agent
    }

    /// Starts `binary run` with extra environment variables (`NOTIFY_SOCKET`) and returns at
    /// once, without waiting for it to answer.
    pub fn spawn(
        binary: &Path,
        node: &Netns,
        policy_path: &Path,
        bpffs: Bpffs,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let policy = policy_path.to_str().expect("utf-8 path");
        Self::spawn_run(binary, node, &["--policy", policy], bpffs, dir, extra, env)
    }

    /// Starts `binary run --store URL --node NAME` (fleet mode) in `node`, with a bpffs and a
    /// directory of its own, waiting until it answers (not until the store's document is live:
    /// see [`Agent::wait_store`]).
    pub fn start_fleet(binary: &Path, node: &Netns, store: &str, name: &str, extra: &[&str]) -> Agent {
        let mut agent = Self::spawn_fleet(binary, node, store, name, extra, &[]);
        agent.wait_answering();
        agent
    }

    /// [`Agent::start_fleet`] with extra environment variables (`NOTIFY_SOCKET`), returning at
    /// once.
    pub fn spawn_fleet(
        binary: &Path,
        node: &Netns,
        store: &str,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let dir = PathBuf::from(format!("/run/{}", unique("agent")));
        fs::create_dir_all(&dir).expect("agent dir");
        let source = ["--store", store, "--node", name];
        Self::spawn_run(binary, node, &source, Bpffs::new(), &dir, extra, env)
    }

    /// Starts a fleet-mode agent again on what a stopped one left (its pins and directory).
    pub fn restart_fleet(
        binary: &Path,
        node: &Netns,
        remains: Remains,
        store: &str,
        name: &str,
        extra: &[&str],
    ) -> Agent {
        let source = ["--store", store, "--node", name];
        let mut agent = Self::spawn_run(binary, node, &source, remains.bpffs, &remains.dir, extra, &[]);
        agent.wait_answering();
        agent
    }

    /// `binary run SOURCE... --pin-path --socket EXTRA...` in `node`, returning at once.
    fn spawn_run(
        binary: &Path,
        node: &Netns,
        source: &[&str],
        bpffs: Bpffs,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let socket = dir.join("control.sock");
        let log = dir.join(format!("agent-{}.log", next_id()));
        let pins = bpffs.pin_path();
        let log_file = fs::File::create(&log).expect("agent log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.name])
            .arg(binary)
            .arg("run")
            .args(source)
            .arg("--pin-path")
            .arg(&pins)
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .env("RUST_LOG", "info,sg_agent=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().expect("spawning sg-agent");
        Agent {
            child,
            binary: binary.to_path_buf(),
            node: node.name.clone(),
            pins,
            socket,
            dir: dir.to_path_buf(),
            log,
            bpffs: Some(bpffs),
            keep_dir: false,
        }
    }

    /// Waits until this agent answers on its socket.
    pub fn wait_ready(&mut self) {
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

    /// Waits until this agent answers on its socket, enforcing or not (a fleet-mode agent
    /// enforces nothing until the store's document is live).
    fn wait_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sg-agent exited ({status}) before it answered:\n{}", self.log_text());
            }
            if self.status_any()["agent_running"] == serde_json::Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sg-agent did not answer within 30 s:\n{}", self.log_text());
    }

    /// `status --json` whatever its exit code (it exits 1 while nothing is enforced); `Null` if
    /// it printed no JSON.
    pub fn status_any(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Fleet mode: waits until the store's document of revision `revision` or later is live
    /// (`status`'s `store.applied_revision`); returns the status.
    pub fn wait_store(&self, revision: i64, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status_any();
            let store = &status["store"];
            if store["applied_revision"].as_i64().is_some_and(|r| r >= revision) && store["generation"].is_u64() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "agent in {} did not apply store revision {revision} within {within:?}; status:\n{status:#}\nlog:\n{}",
                    self.node,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
        let path = self.dir.join(format!("apply-{}.json", next_id()));
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
