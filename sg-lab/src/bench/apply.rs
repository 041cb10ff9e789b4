//! Policy apply latency: a 10,000-rule document validated, compiled and swapped in, and a
//! one-member change to a 1,000-member group — against `nft -f` of the same rules, as a
//! rule-per-rule chain and as concatenated interval sets (run in a private namespace).

use std::{fmt::Write as _, time::Instant};

use serde::Serialize;
use sg_agent::{compile::prepare, datapath::Enforcer};

use super::{Stats, policy_with_rules, rule_port};
use crate::lab::Netns;

#[derive(Debug, Clone, Serialize)]
pub struct ApplyResult {
    pub what: String,
    pub rules: usize,
    pub ms: Stats,
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// The same inbound rules in nftables, as a skilled admin would write them: `sets` = one
/// concatenated interval set per family (the fast form), otherwise one rule per rule.
pub fn nft_ruleset(rules: usize, sets: bool) -> String {
    let mut s = String::from("flush ruleset\ntable inet sg {\n");
    let peer = |i: usize| (format!("10.{}.{}.0/24", (i >> 8) & 0xff, i & 0xff), format!("fd00:1:{i:x}::/64"));
    if sets {
        for (name, ty, family) in [("allow4", "ipv4_addr", 4), ("allow6", "ipv6_addr", 6)] {
            let _ = write!(s, "  set {name} {{ type {ty} . inet_service; flags interval; elements = {{ ");
            let elements: Vec<String> = (0..rules)
                .map(|i| {
                    let (p4, p6) = peer(i);
                    format!("{} . {}", if family == 4 { p4 } else { p6 }, rule_port(i))
                })
                .collect();
            let _ = writeln!(s, "{} }} }}", elements.join(", "));
        }
    }
    s.push_str("  chain input {\n    type filter hook input priority 0; policy drop;\n");
    s.push_str("    ct state established,related accept\n");
    if sets {
        s.push_str("    ip saddr . tcp dport @allow4 accept\n    ip6 saddr . tcp dport @allow6 accept\n");
    } else {
        for i in 0..rules {
            let (p4, p6) = peer(i);
            let port = rule_port(i);
            let _ =
                writeln!(s, "    ip saddr {p4} tcp dport {port} accept\n    ip6 saddr {p6} tcp dport {port} accept");
        }
    }
    s.push_str("  }\n}\n");
    s
}

pub fn run(dp: &mut Enforcer, rules: usize, rounds: usize, log: &dyn Fn(&str)) -> Vec<ApplyResult> {
    let mut compile_ms = Vec::new();
    let mut swap_ms = Vec::new();
    let mut total_ms = Vec::new();
    let mut member_ms = Vec::new();
    let mut nft_sets_ms = Vec::new();
    let mut nft_chain_ms = Vec::new();
    // Two documents that differ (ports shift by one rule), so every apply changes everything.
    let docs = [
        policy_with_rules(rules, 0),
        policy_with_rules(rules, 0).replace("\"from_port\": 1024,", "\"from_port\": 1023,"),
    ];
    let groups = [
        policy_with_rules(10, 1000),
        policy_with_rules(10, 1000).replace(
            r#""id": "client-999", "addresses": ["10.200.3.231", "fd00:200::3e7"], "security_groups": ["sg-clients"]"#,
            r#""id": "client-999", "addresses": ["10.200.3.231", "fd00:200::3e7"], "security_groups": ["sg-bench"]"#,
        ),
    ];
    let ns = Netns::new("nft");
    let dir = std::env::temp_dir().join(format!("sg-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let (sets_file, chain_file) = (dir.join("sets.nft"), dir.join("chain.nft"));
    let _ = std::fs::write(&sets_file, nft_ruleset(rules, true));
    let _ = std::fs::write(&chain_file, nft_ruleset(rules, false));
    let nft = |file: &std::path::Path| -> f64 {
        let started = Instant::now();
        let ok = ns.exec(&["nft", "-f", file.to_str().unwrap_or_default()]).status.success();
        if ok { ms(started) } else { f64::NAN }
    };
    let mut generation = 1000;
    for round in 0..rounds {
        log(&format!("apply round {}/{rounds}", round + 1));
        // A full apply: both slots first hold an unrelated small document, so the 10,000-rule
        // document is written entry by entry.
        for doc in &docs {
            for filler in [policy_with_rules(3, 0), policy_with_rules(4, 0)] {
                generation += 1;
                if let Ok((_, c)) = prepare(&filler, None) {
                    let _ = dp.install_unattached(&c, &[1], generation);
                }
            }
            generation += 1;
            // An idle agent: the previous flip's RCU grace period is over (see Maps::install).
            let _ = dp.maps.settle();
            let started = Instant::now();
            let Ok((_, compiled)) = prepare(doc, None) else { continue };
            compile_ms.push(ms(started));
            let swap_started = Instant::now();
            if dp.install_unattached(&compiled, &[1], generation).is_ok() {
                swap_ms.push(ms(swap_started));
                total_ms.push(ms(started));
            }
        }
        // A membership change: the idle slot holds the generation before, which differs from
        // the new one by one member (the first two installs set that up, untimed).
        for (i, doc) in groups.iter().chain(groups.iter()).chain(groups.iter()).enumerate() {
            generation += 1;
            let _ = dp.maps.settle();
            let started = Instant::now();
            let Ok((_, compiled)) = prepare(doc, None) else { continue };
            if dp.install_unattached(&compiled, &[1], generation).is_ok() && i >= 2 {
                member_ms.push(ms(started));
            }
        }
        nft_sets_ms.push(nft(&sets_file));
        nft_chain_ms.push(nft(&chain_file));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let r = |what: &str, rules: usize, v: &[f64]| ApplyResult { what: what.to_owned(), rules, ms: Stats::of(v) };
    vec![
        r("sg-agent: validate + compile + swap", rules, &total_ms),
        r("sg-agent: validate + compile", rules, &compile_ms),
        r("sg-agent: write changes + flip", rules, &swap_ms),
        r("sg-agent: one membership change (1,000-member group)", 10, &member_ms),
        r("nft -f, concatenated interval sets", rules, &nft_sets_ms),
        r("nft -f, one rule per rule", rules, &nft_chain_ms),
    ]
}
