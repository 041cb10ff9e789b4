//! The agent's kernel programs, loaded in this process with a policy for interface index 1
//! (`lo`, where `BPF_PROG_TEST_RUN` frames appear to arrive), for running crafted frames through
//! them. Needs root, like the rest of the lab.
#![expect(clippy::expect_used, clippy::indexing_slicing, reason = "harness: failures panic with context")]

use std::collections::BTreeMap;

use aya::programs::{TestRun as _, TestRunOptions};
use sg_agent::datapath::{Enforcer, LoadOptions, PinLayout, TcModeChoice, XdpModeChoice};

use crate::lab::Bpffs;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The agent's programs (the object `sg-agent run` loads) with a policy installed, unattached.
pub struct Kernel {
    pub enforcer: Enforcer,
    _bpffs: Bpffs,
}

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

    fn counters(&self) -> BTreeMap<&'static str, u64> {
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

    fn bumped(&self, before: &BTreeMap<&'static str, u64>) -> &'static str {
        let after = self.counters();
        let changed: Vec<&'static str> =
            after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(k, _)| *k).collect();
        assert_eq!(changed.len(), 1, "exactly one reason counter must move, moved: {changed:?}");
        changed[0]
    }
}
