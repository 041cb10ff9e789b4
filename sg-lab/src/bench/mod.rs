//! `cargo xtask bench`: measurements side by side in one run, repeated and interleaved,
//! reported as min/median/max (these machines are shared: ratios matter, not absolute times).
//!
//! - [`kernel`]: in-kernel ns per packet (`BPF_PROG_TEST_RUN`).
//! - [`apply`]: policy apply latency, and `nft -f` of the same rules for comparison.
//! - [`conntrack`]: table memory for 1M flows, garbage-collection cost.
//! - [`e2e`]: packets through veth between namespaces: no filter, sg-agent, nftables.
//! - [`fleet`]: fleet mode: commit → live on three agents, a 10,000-instance snapshot load.
//! - [`report`]: `bench/results.json`, `docs/benchmarks.md`, `docs/benchmarks.png`.
#![expect(clippy::expect_used, clippy::indexing_slicing, reason = "benchmark harness: a broken set-up aborts the run")]

pub mod apply;
pub mod conntrack;
pub mod e2e;
pub mod fleet;
pub mod kernel;
pub mod report;

use serde::Serialize;

/// The benchmark object, built by build.rs: the agent's kernel programs plus the parse-only
/// baseline ([`kernel::PROG_BASELINE`]). Empty when built without the eBPF toolchain.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg-ebpf"));

/// min/median/max of a sample.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Stats { min: f64::NAN, median: f64::NAN, max: f64::NAN, n: 0 };
        }
        let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
        Stats { min: v[0], median, max: v[v.len() - 1], n: v.len() }
    }
}

/// The node's own addresses in the benchmark policies.
pub const NODE_V4: [u8; 4] = [10, 255, 0, 1];

/// A benchmark policy: the node ("host" role on `lo`) with `rules` inbound TCP rules — rule `i`
/// allows port [`rule_port`]`(i)` from a /24 and a /64 of its own ([`rule_peer`]) — and, with
/// `members` > 0, one more rule allowing TCP 5432 from a group with that many member instances.
pub fn policy_with_rules(rules: usize, members: usize) -> String {
    let mut ingress: Vec<String> = (0..rules)
        .map(|i| {
            let (a, b) = ((i >> 8) & 0xff, i & 0xff);
            format!(
                r#"{{ "protocol": "tcp", "from_port": {p}, "to_port": {p}, "cidrs": ["10.{a}.{b}.0/24", "fd00:1:{i:x}::/64"] }}"#,
                p = rule_port(i)
            )
        })
        .collect();
    let mut instances = vec![
        r#"{ "id": "node", "interface": "lo", "role": "host", "addresses": ["10.255.0.1", "fd00:ffff::1"], "security_groups": ["sg-bench"] }"#.to_owned(),
    ];
    if members > 0 {
        ingress
            .push(r#"{ "protocol": "tcp", "from_port": 5432, "to_port": 5432, "groups": ["sg-clients"] }"#.to_owned());
        instances.extend((0..members).map(|j| {
            format!(
                r#"{{ "id": "client-{j}", "addresses": ["10.200.{}.{}", "fd00:200::{j:x}"], "security_groups": ["sg-clients"] }}"#,
                j >> 8,
                j & 0xff
            )
        }));
    }
    format!(
        r#"{{ "security_groups": [ {{ "id": "sg-bench", "ingress": [{}], "egress": [] }}, {{ "id": "sg-clients" }} ],
             "instances": [{}] }}"#,
        ingress.join(",\n"),
        instances.join(",\n")
    )
}

/// The destination port rule `i` allows; `usize::MAX` is the group rule.
pub fn rule_port(i: usize) -> u16 {
    if i == usize::MAX { 5432 } else { 1024 + (i % 60_000) as u16 }
}

/// An address inside rule `i`'s prefixes; for `usize::MAX`, a member of the group.
pub fn rule_peer(i: usize) -> ([u8; 4], [u8; 16]) {
    if i == usize::MAX {
        let j = 500usize;
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        v6[2] = 0x02;
        v6[14..16].copy_from_slice(&(j as u16).to_be_bytes());
        return ([10, 200, (j >> 8) as u8, (j & 0xff) as u8], v6);
    }
    let mut v6 = [0u8; 16];
    v6[0] = 0xfd;
    v6[3] = 1;
    v6[4..6].copy_from_slice(&(i as u16).to_be_bytes());
    v6[15] = 7;
    ([10, ((i >> 8) & 0xff) as u8, (i & 0xff) as u8, 7], v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_policies_allow_exactly_what_the_frames_use() {
        let doc = sg_agent::policy::load(&policy_with_rules(300, 1000), None).unwrap();
        let compiled = sg_agent::compile::compile(&doc).unwrap();
        assert_eq!(doc.group("sg-bench").unwrap().ingress.len(), 301);
        let q = |peer: std::net::IpAddr, port: u16| sg_agent::explain::Query {
            instance: "node".into(),
            direction: sg_agent::policy::Direction::Ingress,
            protocol: "tcp".into(),
            peer,
            port: Some(port),
            icmp_type: None,
            icmp_code: None,
        };
        for i in [0usize, 299, usize::MAX] {
            let (a4, a6) = rule_peer(i);
            for peer in [std::net::IpAddr::from(a4), std::net::IpAddr::from(a6)] {
                let e = sg_agent::explain::explain_compiled(&doc, &compiled, &q(peer, rule_port(i))).unwrap();
                assert!(e.allowed, "rule {i} from {peer}: {}", e.summary);
                let e = sg_agent::explain::explain_compiled(&doc, &compiled, &q(peer, rule_port(i).wrapping_add(1)))
                    .unwrap();
                assert!(!e.allowed, "rule {i}: only its own port");
            }
        }
        assert_eq!(Stats::of(&[3.0, 1.0, 2.0]), Stats { min: 1.0, median: 2.0, max: 3.0, n: 3 });
    }
}
