//! Network namespaces, a private bpffs, and running commands (panicking with their output when
//! they fail).

use std::{
    fs,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
    thread::JoinHandle,
};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A number unique to this process and call (names of namespaces, directories and files).
pub(super) fn next_id() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A name unique to this process and call, short enough for a namespace.
pub fn unique(tag: &str) -> String {
    format!("sgt{}-{}-{tag}", std::process::id(), next_id())
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
        spawn_in(&self.name, f)
    }
}

/// Runs `f` on a thread that has entered the namespace named `name` (one this lab made).
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(name, f).join().unwrap_or_else(|_| panic!("thread in netns {name} panicked"))
}

fn spawn_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: a valid netns fd; only this thread changes namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
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
