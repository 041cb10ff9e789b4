//! `cargo xtask run 2>&1 | tee demo.log`, then Ctrl-C (which ends `tee` too) or a closed
//! terminal (SIGHUP): the demo must still remove every namespace and mount it made, whatever
//! happened to its stdout. Privileged (namespaces, BPF): skipped as a normal user unless
//! `SG_REQUIRE_PRIVILEGED=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var("SG_REQUIRE_PRIVILEGED").as_deref() != Ok("1"), "needs root (SG_REQUIRE_PRIVILEGED=1)");
    eprintln!("SKIPPED: the demo needs root");
    false
}

/// The agent the demo runs, built as `cargo xtask run` builds it.
fn agent() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "sg-agent", "--bin", "sg-agent"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success(), "building sg-agent");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("debug/sg-agent")
}

fn leftovers(prefix: &str) -> Vec<String> {
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    String::from_utf8_lossy(&netns.stdout)
        .lines()
        .chain(mounts.lines())
        .filter(|l| l.contains(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_cleans_up_after_its_reader_is_gone_and_the_terminal_hangs_up() {
    if !privileged() {
        return;
    }
    let agent = agent();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--agent"])
        .arg(&agent)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("sgt{}-", demo.id());
    // Read until the demo waits for Ctrl-C, then go away as `tee` does.
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let waiting = line.contains("Ctrl-C stops the demo");
        seen.push(line);
        if waiting {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains("Ctrl-C")), "the demo did not come up:\n{}", seen.join("\n"));
    assert!(!leftovers(&prefix).is_empty(), "the demo's namespaces exist while it runs");
    drop(lines);
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(demo.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = demo.kill();
            let _ = demo.wait();
            panic!("the demo did not stop after SIGHUP");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the demo stops cleanly: {status}");
    assert_eq!(leftovers(&prefix), Vec::<String>::new(), "everything the demo made is gone");
}
