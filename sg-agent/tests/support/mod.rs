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
