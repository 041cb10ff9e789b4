//! Conntrack: kernel memory of a 1M-flow table, and the garbage collector's cost per entry.

use std::time::Instant;

use serde::Serialize;
use sg_agent::{clock::monotonic_ns, conntrack::gc::expire as expire_conntrack, datapath::Enforcer};
use sg_common::maps::{CtEntry, CtKey};

use super::Stats;

#[derive(Debug, Clone, Serialize)]
pub struct ConntrackResult {
    /// The IPv4 table (preallocated): its capacity, memory, and memory per flow of capacity.
    pub capacity: u32,
    pub memory_bytes: u64,
    pub bytes_per_entry: f64,
    /// The IPv6 table (allocated as flows arrive): memory per flow, from the memory charged for
    /// it before and after `gc_entries` flows are added.
    #[serde(default)]
    pub ipv6_bytes_per_entry: f64,
    /// GC over a table of `gc_entries`, half of them expired: ns per entry scanned.
    pub gc_entries: usize,
    pub gc_ns_per_entry_half_expired: Stats,
    /// GC over the same table with nothing expired (the steady state): ns per entry.
    pub gc_ns_per_entry_none_expired: Stats,
}

fn fill(dp: &mut Enforcer, n: usize, expired_every: usize) {
    fill_family(dp, n, expired_every, 4);
}

fn fill_family(dp: &mut Enforcer, n: usize, expired_every: usize, family: u8) {
    let now = sg_common::conntrack::seconds(monotonic_ns());
    for i in 0..n {
        let mut key =
            CtKey { ifindex: 1, family, proto: 17, far_port: (i % 60_000) as u16, near_port: 53, ..CtKey::default() };
        key.far_addr[..4].copy_from_slice(&(0x0a00_0000u32 + i as u32).to_be_bytes());
        if family == 6 {
            key.far_addr[0] = 0xfd;
        }
        let expired = expired_every != 0 && i % expired_every == 0;
        let entry =
            CtEntry { last_seen: if expired { now.saturating_sub(31) } else { now }, rule: 0, state: 0, flags: 0 };
        let _ = dp.maps.conntrack.insert(&key, entry);
    }
}

pub fn run(dp: &mut Enforcer, gc_entries: usize, rounds: usize, log: &dyn Fn(&str)) -> ConntrackResult {
    let (v4, v6_empty) = dp.maps.conntrack.sizes();
    let (capacity, memory_bytes) = (v4.capacity, v4.memory_bytes.unwrap_or(0));
    fill_family(dp, gc_entries, 0, 6);
    let v6_full = dp.maps.conntrack.sizes().1;
    let ipv6_bytes_per_entry = v6_full.memory_bytes.unwrap_or(0).saturating_sub(v6_empty.memory_bytes.unwrap_or(0))
        as f64
        / gc_entries.max(1) as f64;
    let keys: Vec<CtKey> = dp.maps.conntrack_entries().into_iter().map(|(k, _)| k).collect();
    dp.maps.conntrack.remove_all(&keys);
    let mut half = Vec::new();
    let mut none = Vec::new();
    for round in 0..rounds {
        log(&format!("conntrack GC round {}/{rounds}", round + 1));
        fill(dp, gc_entries, 0);
        let started = Instant::now();
        let _ = expire_conntrack(&mut dp.maps);
        none.push(started.elapsed().as_nanos() as f64 / gc_entries as f64);
        fill(dp, gc_entries, 2);
        let started = Instant::now();
        let _ = expire_conntrack(&mut dp.maps);
        half.push(started.elapsed().as_nanos() as f64 / gc_entries as f64);
        let keys: Vec<CtKey> = dp.maps.conntrack_entries().into_iter().map(|(k, _)| k).collect();
        dp.maps.conntrack.remove_all(&keys);
    }
    ConntrackResult {
        capacity,
        memory_bytes,
        bytes_per_entry: memory_bytes as f64 / f64::from(capacity.max(1)),
        ipv6_bytes_per_entry,
        gc_entries,
        gc_ns_per_entry_half_expired: Stats::of(&half),
        gc_ns_per_entry_none_expired: Stats::of(&none),
    }
}
