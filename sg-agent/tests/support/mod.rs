//! Test harness: the lab and the `BPF_PROG_TEST_RUN` harness (`sg_lab`), plus what needs the
//! agent binary built for these tests (`CARGO_BIN_EXE_sg-agent` exists only here).
#![allow(dead_code, unused_imports, reason = "each test binary uses a different part of the harness")]
#![allow(clippy::panic, reason = "test code")]

use std::path::Path;

pub use sg_lab::{lab::*, test_run::*};

/// Whether privileged tests can run here. When they cannot: with `SG_REQUIRE_PRIVILEGED=1`
/// (set by `cargo xtask test` and CI) the test fails; otherwise it is skipped with a note, so a
/// plain `cargo test` as a normal user still runs the unit tests.
pub fn privileged() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let object = sg_agent::datapath::object_available();
    if root && object {
        return true;
    }
    let why = if !root { "not root" } else { "sg-agent was built without its kernel programs (no bpf-linker)" };
    if std::env::var("SG_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("privileged test cannot run: {why} (SG_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("SKIPPED: privileged test needs root and the eBPF toolchain ({why})");
    false
}

/// Starts the agent built for these tests.
pub fn start_agent(node: &Netns, policy: &str, extra: &[&str]) -> Agent {
    Agent::start(Path::new(env!("CARGO_BIN_EXE_sg-agent")), node, policy, extra)
}

pub fn agent_binary_path() -> &'static str {
    env!("CARGO_BIN_EXE_sg-agent")
}

/// Restarts an agent (built for these tests) on what a crashed one left.
pub fn restart_agent(node: &Netns, remains: Remains, extra: &[&str]) -> Agent {
    Agent::restart(Path::new(env!("CARGO_BIN_EXE_sg-agent")), node, remains, extra)
}

/// Fleet mode: `sg-agent fleet ARGS --store URL`, run in `ns` (where the store is reachable).
pub fn fleet_cli(ns: &Netns, url: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec![agent_binary_path(), "fleet"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--store", url]);
    ns.exec(&full)
}

/// [`fleet_cli`], which must succeed; its stdout.
#[track_caller]
pub fn fleet_ok(ns: &Netns, url: &str, args: &[&str]) -> String {
    let out = fleet_cli(ns, url, args);
    assert!(
        out.status.success(),
        "sg-agent fleet {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `document` (the objects to put) with `fleet apply` from `ns`; the store revision after it.
#[track_caller]
pub fn fleet_apply(ns: &Netns, url: &str, document: &str, flags: &[&str]) -> i64 {
    let dir = std::env::temp_dir().join(unique("fleet-doc"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("doc.json");
    std::fs::write(&path, document).expect("writing the document");
    let mut args = vec!["apply", path.to_str().expect("utf-8")];
    args.extend_from_slice(flags);
    let out = fleet_ok(ns, url, &args);
    let _ = std::fs::remove_dir_all(&dir);
    out.split_whitespace()
        .nth(1)
        .and_then(|r| r.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no revision in: {out}"))
}

/// `fleet status --json`, parsed.
pub fn fleet_status(ns: &Netns, url: &str) -> serde_json::Value {
    serde_json::from_str(&fleet_ok(ns, url, &["status", "--json"])).expect("fleet status JSON")
}
