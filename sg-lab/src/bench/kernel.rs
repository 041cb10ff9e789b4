//! In-kernel cost per packet, by `BPF_PROG_TEST_RUN` on 64-byte frames: the parse-only
//! baseline, the tracked-flow fast path, and the new-flow path (rules evaluated, entry created)
//! at 10 to 10,000 rules and with a 1,000-member group reference. IPv4 and IPv6.
//!
//! Every variant runs in every round, rounds interleave the variants, and each round's figure
//! is a mean over many packets; results are min/median/max over rounds, so a noisy neighbour
//! shows up as spread rather than as a wrong ratio.
//!
//! All programs measured come from one build, the benchmark object ([`super::OBJECT`]): the
//! agent's programs through an [`Enforcer`] loaded from it, the baseline from a second load of
//! it ([`Baseline`]).

use std::{path::Path, time::Duration};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use serde::Serialize;
use sg_agent::{
    compile::{Compiled, prepare},
    datapath::Enforcer,
};
use sg_common::{
    maps::{CtEntry, CtKey, names},
    packet::{TCP_ACK, TCP_SYN},
};

use super::{Stats, policy_with_rules};
use crate::frames::{self, v4, v6};

/// The parse-only baseline program: `sg_xdp`'s parser and nothing else. Only the benchmark
/// object has it (sg-ebpf's `bench` feature).
pub const PROG_BASELINE: &str = "sg_bench_parse";

/// The baseline program, loaded on its own from the benchmark object.
pub struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    /// Loads `object` a second time, for its baseline program only, pinning under `pin_dir` the
    /// maps the object declares pinned (anywhere else they would land in /sys/fs/bpf). aya
    /// creates every map an object declares, used or not; the baseline uses none of the agent's,
    /// so the preallocated ones are shrunk to one entry rather than allocated a second time
    /// (a 1M-flow conntrack table among them).
    pub fn load(object: &[u8], pin_dir: &Path) -> anyhow::Result<Baseline> {
        std::fs::create_dir_all(pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(pin_dir);
        for map in [
            names::IFACES,
            names::OWN_ADDRS,
            names::PEERS,
            names::RULES,
            names::CONNTRACK,
            names::CONNTRACK4,
            names::FRAGMENTS,
            names::RULE_COUNTERS,
        ] {
            loader.map_max_entries(map, 1);
        }
        let mut ebpf = loader.load(object).context("loading the benchmark object")?;
        let xdp: &mut Xdp = ebpf
            .program_mut(PROG_BASELINE)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| anyhow!("the benchmark object has no XDP program {PROG_BASELINE}"))?;
        xdp.load().with_context(|| format!("loading {PROG_BASELINE}"))?;
        Ok(Baseline { ebpf })
    }

    fn program(&self) -> Option<&Xdp> {
        self.ebpf.program(PROG_BASELINE).and_then(|p| p.try_into().ok())
    }
}

/// Where BPF_PROG_TEST_RUN frames arrive: the loopback interface of the runner's namespace.
const LO: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct KernelResult {
    pub variant: String,
    pub family: u8,
    /// Rules per instance (0 for the baseline and the fast path, which do not look at rules).
    pub rules: usize,
    /// How the figure was taken: `repeat` = one frame run many times in the kernel's loop;
    /// `distinct` = many different frames, one run each (needed for new flows, which would
    /// otherwise be tracked after the first run; includes the runner's per-call timer cost).
    pub method: &'static str,
    pub ns_per_packet: Stats,
}

/// Runs `frame` `repeat` times in the kernel; mean ns per run.
fn run_repeat(prog: &Xdp, frame: &[u8], repeat: u32) -> f64 {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..TestRunOptions::new() };
    prog.test_run(opts).map(|r| r.duration.as_nanos() as f64).unwrap_or(f64::NAN)
}

/// Runs each frame once; mean ns per run.
fn run_distinct(prog: &Xdp, frames: &[Vec<u8>]) -> f64 {
    let mut total = Duration::ZERO;
    let mut out = vec![0u8; 512];
    for f in frames {
        let opts = TestRunOptions { data_in: Some(f), data_out: Some(&mut out), repeat: 1, ..TestRunOptions::new() };
        if let Ok(r) = prog.test_run(opts) {
            total += r.duration;
        }
    }
    total.as_nanos() as f64 / frames.len().max(1) as f64
}

/// A SYN (or ACK) from the peer that rule `rule` of `policy_with_rules` allows, from source
/// port `sport`, as a 64-byte frame.
fn frame(family: u8, rule: usize, sport: u16, flags: u8) -> Vec<u8> {
    let (peer4, peer6) = super::rule_peer(rule);
    let port = super::rule_port(rule);
    let mut f = if family == 4 {
        frames::tcp4(peer4, v4(10, 255, 0, 1), sport, port, flags)
    } else {
        frames::tcp6(peer6, v6(0xffff, 1), sport, port, flags)
    };
    // Ethernet minimum (60 bytes + FCS): pad as on the wire.
    f.resize(f.len().max(60), 0);
    f
}

fn clear_conntrack(dp: &mut Enforcer) {
    let keys: Vec<CtKey> = dp.maps.conntrack_entries().into_iter().map(|(k, _): (CtKey, CtEntry)| k).collect();
    dp.maps.conntrack.remove_all(&keys);
}

/// Runs the kernel benchmarks on a loaded datapath (nothing attached), with `baseline` loaded
/// from the same object.
pub fn run(
    dp: &mut Enforcer,
    baseline: &Baseline,
    rule_counts: &[usize],
    rounds: usize,
    log: &dyn Fn(&str),
) -> Vec<KernelResult> {
    const REPEAT: u32 = 200_000;
    const NEW_FLOWS: usize = 4096;
    let mut samples: Vec<(String, u8, usize, &'static str, Vec<f64>)> = Vec::new();
    let mut record = |variant: &str, family: u8, rules: usize, method: &'static str, value: f64| match samples
        .iter_mut()
        .find(|s| s.0 == variant && s.1 == family && s.2 == rules && s.3 == method)
    {
        Some(s) => s.4.push(value),
        None => samples.push((variant.to_owned(), family, rules, method, vec![value])),
    };
    let compiled: Vec<(usize, Compiled)> = rule_counts
        .iter()
        .map(|&n| (n, prepare(&policy_with_rules(n, 0), None).expect("bench policy").1))
        .chain(std::iter::once((usize::MAX, prepare(&policy_with_rules(10, 1000), None).expect("group policy").1)))
        .collect();
    let mut generation = 0;
    for round in 0..rounds {
        log(&format!("kernel round {}/{rounds}", round + 1));
        for family in [4u8, 6] {
            // Baseline and fast path: the 10-rule policy (the fast path does not look at rules).
            generation += 1;
            if dp.install_unattached(&compiled[0].1, &[LO], generation).is_err() {
                continue;
            }
            clear_conntrack(dp);
            let syn = frame(family, 0, 40000, TCP_SYN);
            let ack = frame(family, 0, 40000, TCP_ACK);
            if let Some(parse) = baseline.program() {
                record("parse-only baseline", family, 0, "repeat", run_repeat(parse, &ack, REPEAT));
            }
            let Some(xdp) = dp.xdp_program() else { continue };
            run_repeat(xdp, &syn, 1);
            record("tracked flow (fast path)", family, 0, "repeat", run_repeat(xdp, &ack, REPEAT));
            let distinct_acks: Vec<Vec<u8>> =
                (0..NEW_FLOWS).map(|i| frame(family, 0, 1024 + i as u16, TCP_ACK)).collect();
            if let Some(parse) = baseline.program() {
                record("parse-only baseline", family, 0, "distinct", run_distinct(parse, &distinct_acks));
            }
            // New flows, then the same flows again as tracked (distinct frames, like new flows).
            for (n, c) in &compiled {
                generation += 1;
                if dp.install_unattached(c, &[LO], generation).is_err() {
                    continue;
                }
                clear_conntrack(dp);
                // The allowing rule is the last one: the lookups do not care, a linear scan would.
                let rule = if *n == usize::MAX { usize::MAX } else { n.saturating_sub(1) };
                let syns: Vec<Vec<u8>> =
                    (0..NEW_FLOWS).map(|i| frame(family, rule, 1024 + i as u16, TCP_SYN)).collect();
                let Some(xdp) = dp.xdp_program() else { continue };
                let variant = if *n == usize::MAX { "new flow, 1000-member group" } else { "new flow" };
                let rules = if *n == usize::MAX { 10 } else { *n };
                record(variant, family, rules, "distinct", run_distinct(xdp, &syns));
                if *n == compiled[0].0 {
                    let acks: Vec<Vec<u8>> =
                        (0..NEW_FLOWS).map(|i| frame(family, rule, 1024 + i as u16, TCP_ACK)).collect();
                    record("tracked flow (fast path)", family, 0, "distinct", run_distinct(xdp, &acks));
                }
            }
        }
    }
    clear_conntrack(dp);
    samples
        .into_iter()
        .map(|(variant, family, rules, method, values)| KernelResult {
            variant,
            family,
            rules,
            method,
            ns_per_packet: Stats::of(&values),
        })
        .collect()
}
