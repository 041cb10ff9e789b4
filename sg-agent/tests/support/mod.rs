//! Test harness: the lab (`sg_agent::lab`) plus what only tests need.
#![allow(dead_code, unused_imports, reason = "each test binary uses a different part of the harness")]
#![allow(clippy::panic, reason = "test code")]

use std::path::Path;

use aya::programs::{TestRun as _, TestRunOptions};
use sg_agent::datapath::{Enforcer, LoadOptions, PinLayout, TcModeChoice, XdpModeChoice};
pub use sg_agent::lab::*;

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

/// The programs loaded in this process with a policy for interface index 1 (`lo`, where
/// `BPF_PROG_TEST_RUN` frames appear to arrive), for running crafted frames through them.
pub struct Kernel {
    pub enforcer: Enforcer,
    _bpffs: Bpffs,
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

impl Kernel {
    pub fn load(policy: &str) -> Kernel {
        Self::load_with(policy, 1024)
    }

    pub fn load_with(policy: &str, conntrack_max: u32) -> Kernel {
        let bpffs = Bpffs::new();
        let mut enforcer = Enforcer::load(
            PinLayout::new(bpffs.pin_path()),
            LoadOptions { conntrack_max, xdp_mode: XdpModeChoice::Auto, tc_mode: TcModeChoice::Auto },
        )
        .expect("loading the programs");
        let (_, compiled) = sg_agent::compile::prepare(policy, None).expect("valid policy");
        enforcer.install_unattached(&compiled, &[1], 1).expect("installing the policy");
        Kernel { enforcer, _bpffs: bpffs }
    }

    fn counters(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.enforcer.maps.counters().expect("counters").into_iter().map(|(k, v)| (k, v.packets)).collect()
    }

    /// Runs the XDP program on `frame`: its return value and the reason counter it bumped.
    pub fn xdp(&self, frame: &[u8]) -> (u32, &'static str) {
        let before = self.counters();
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() };
        let result = self.enforcer.xdp_program().expect("xdp").test_run(opts).expect("test run");
        (result.return_value, self.bumped(&before))
    }

    /// Runs the TC program on `frame`.
    pub fn tc(&self, frame: &[u8]) -> (i32, &'static str) {
        let before = self.counters();
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() };
        let result = self.enforcer.tc_program().expect("tc").test_run(opts).expect("test run");
        (result.return_value as i32, self.bumped(&before))
    }

    fn bumped(&self, before: &std::collections::BTreeMap<&'static str, u64>) -> &'static str {
        let after = self.counters();
        let changed: Vec<&'static str> =
            after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(k, _)| *k).collect();
        assert_eq!(changed.len(), 1, "exactly one reason counter must move, moved: {changed:?}");
        changed[0]
    }
}

pub fn agent_binary_path() -> &'static str {
    env!("CARGO_BIN_EXE_sg-agent")
}

/// Restarts an agent (built for these tests) on what a crashed one left.
pub fn restart_agent(node: &Netns, remains: Remains, extra: &[&str]) -> Agent {
    Agent::restart(Path::new(env!("CARGO_BIN_EXE_sg-agent")), node, remains, extra)
}
