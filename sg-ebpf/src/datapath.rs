//! The shared verdict logic's view of the BPF maps.

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    conntrack::Tracked,
    maps::{
        ActivePolicy, Counter, CtEntry, CtKey, FlowEvent, FragKey, FragVerdict, IFACE_AUDIT, IfaceConfig, IfaceKey,
        OwnAddrKey, PeerKey, RuleKey, RuleMatch, Settings,
    },
    orientation::Hook,
    packet::Packet,
    verdict::{COUNTER_FLOW_EVENTS_SKIPPED, Reason, Verdict, VerdictMaps},
};

use crate::maps::{
    SG_ACTIVE, SG_CONNTRACK, SG_COUNTERS, SG_FLOW_CONFIG, SG_FLOW_EVENTS, SG_FRAGMENTS, SG_IFACES, SG_OWN_ADDRS,
    SG_PEERS, SG_RULE_COUNTERS, SG_RULES, SG_SETTINGS,
};

pub struct KernelMaps;

impl VerdictMaps for KernelMaps {
    #[inline(always)]
    fn active(&self) -> Option<ActivePolicy> {
        SG_ACTIVE.get(0).copied()
    }

    #[inline(always)]
    fn iface(&self, key: &IfaceKey) -> Option<IfaceConfig> {
        // SAFETY: read-only copy of a value the agent never rewrites in place.
        unsafe { SG_IFACES.get(key) }.copied()
    }

    #[inline(always)]
    fn is_own_addr(&self, key: &OwnAddrKey) -> bool {
        SG_OWN_ADDRS.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn peer_class(&self, key: &PeerKey, prefix_len: u32) -> Option<u32> {
        SG_PEERS.get(Key::new(prefix_len, *key)).copied()
    }

    #[inline(always)]
    fn rule(&self, key: &RuleKey, prefix_len: u32) -> Option<RuleMatch> {
        SG_RULES.get(Key::new(prefix_len, *key)).copied()
    }

    #[inline(always)]
    fn settings(&self) -> &Settings {
        match SG_SETTINGS.get(0) {
            // An all-zero entry means the agent has not written it (yet): zero timeouts would
            // expire every flow at once, so fall back to the defaults.
            Some(s) if s.tcp_established != 0 => s,
            _ => &Settings::DEFAULT,
        }
    }

    #[inline(always)]
    fn ct_track<F: FnOnce(&mut CtEntry) -> Tracked>(&self, key: &CtKey, f: F) -> Option<Tracked> {
        let entry = SG_CONNTRACK.get_ptr_mut(key)?;
        // SAFETY: the pointer is to a live element of a preallocated hash map. Another CPU may
        // update the same entry concurrently; every field is a plain integer and the worst case
        // is a lost timestamp refresh, which the next packet repeats.
        Some(f(unsafe { &mut *entry }))
    }

    #[inline(always)]
    fn ct_contains(&self, key: &CtKey) -> bool {
        SG_CONNTRACK.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn ct_insert(&self, key: &CtKey, entry: &CtEntry) -> bool {
        // BPF_ANY: replaces an expired entry for the same flow; fails (-E2BIG) only when the
        // table is full, which is then reported as conntrack_allowance_exceeded.
        SG_CONNTRACK.insert(key, entry, 0).is_ok()
    }

    #[inline(always)]
    fn fragment(&self, key: &FragKey) -> Option<FragVerdict> {
        // SAFETY: read-only copy.
        unsafe { SG_FRAGMENTS.get(key) }.copied()
    }

    #[inline(always)]
    fn remember_fragment(&self, key: &FragKey, verdict: &FragVerdict) {
        // Best effort: an LRU insert only fails on allocation failure, and then the later
        // fragments are dropped, which is the safe side.
        let _ = SG_FRAGMENTS.insert(key, verdict, 0);
    }
}

/// Counts a packet under its verdict reason.
#[inline(always)]
pub fn count(reason: Reason, bytes: usize) {
    if let Some(counter) = SG_COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot; programs do not migrate CPUs mid-run.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        }
    }
}

/// Counts a hit of the rule whose counter key is `id`.
#[inline(always)]
pub fn count_rule(id: u64, bytes: usize) {
    match SG_RULE_COUNTERS.get_ptr_mut(id) {
        // SAFETY: this CPU's value of a per-CPU hash element.
        Some(counter) => unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        },
        None => {
            // First hit on this CPU (BPF_NOEXIST: another CPU's insert does not clobber).
            let first = Counter { packets: 1, bytes: bytes as u64 };
            let _ = SG_RULE_COUNTERS.insert(id, first, 1);
        }
    }
}

/// Whether interface `ifindex` is in audit mode in the live policy (for frames dropped before
/// the policy is consulted: malformed and non-IP).
#[inline(always)]
pub fn audited(ifindex: u32) -> bool {
    let maps = KernelMaps;
    let Some(active) = maps.active() else { return false };
    maps.iface(&IfaceKey { slot: active.slot, ifindex }).is_some_and(|cfg| cfg.flags & IFACE_AUDIT != 0)
}

/// Emits a flow-log event for a judged IP packet, if a reader is attached and this CPU's
/// budget allows; otherwise counts it as skipped. Bounded cost: a flood spends the budget and
/// then costs one array lookup per packet.
#[inline(always)]
pub fn log_flow(ifindex: u32, hook: Hook, pkt: &Packet, verdict: &Verdict, bytes: usize, now_ns: u64) {
    let Some(cfg) = SG_FLOW_CONFIG.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot of a per-CPU array.
    let cfg = unsafe { &mut *cfg };
    let rate = u64::from(cfg.events_per_sec);
    if rate == 0 {
        return;
    }
    let elapsed = now_ns.wrapping_sub(cfg.refilled_ns);
    cfg.tokens = if elapsed >= 1_000_000_000 {
        rate
    } else {
        let refill = elapsed * rate / 1_000_000_000;
        if cfg.tokens + refill > rate { rate } else { cfg.tokens + refill }
    };
    if elapsed * rate >= 1_000_000_000 || elapsed >= 1_000_000_000 {
        cfg.refilled_ns = now_ns;
    }
    let event = if cfg.tokens > 0 { SG_FLOW_EVENTS.reserve::<FlowEvent>(0) } else { None };
    let Some(mut event) = event else {
        count_skipped();
        return;
    };
    cfg.tokens -= 1;
    event.write(FlowEvent {
        ifindex,
        bytes: bytes as u32,
        rule: verdict.rule,
        family: pkt.family,
        proto: pkt.proto,
        pass: u8::from(verdict.pass),
        reason: verdict.reason as u8,
        sport: pkt.sport,
        dport: pkt.dport,
        hook: hook as u8,
        _pad: [0; 3],
        src: pkt.src,
        dst: pkt.dst,
    });
    event.submit(0);
}

#[inline(always)]
fn count_skipped() {
    if let Some(counter) = SG_COUNTERS.get_ptr_mut(COUNTER_FLOW_EVENTS_SKIPPED) {
        // SAFETY: per-CPU slot.
        unsafe { (*counter).packets += 1 };
    }
}
