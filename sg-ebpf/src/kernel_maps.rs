//! The verdict's view of the BPF maps: `sg_common::verdict::judge` reads and writes policy and
//! conntrack state through this adapter.

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    conntrack::Tracked,
    maps::{
        ActivePolicy, CtEntry, CtKey, CtKey4, FragKey, FragVerdict, IFACE_AUDIT, IfaceConfig, IfaceKey, OwnAddrKey,
        PeerKey, RuleKey, RuleMatch, ServiceKey, Settings,
    },
    verdict::VerdictMaps,
};

use crate::maps::{
    SG_ACTIVE, SG_CONNTRACK, SG_CONNTRACK4, SG_FRAGMENTS, SG_IFACES, SG_OWN_ADDRS, SG_PEERS, SG_RULES, SG_SERVICES,
    SG_SETTINGS,
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
        let entry = match CtKey4::of(key) {
            Some(compact) => SG_CONNTRACK4.get_ptr_mut(&compact)?,
            None => SG_CONNTRACK.get_ptr_mut(key)?,
        };
        // SAFETY: the pointer is to a live element of a hash map (an RCU-protected element that
        // stays valid for this program run). Another CPU may update the same entry
        // concurrently; every field is a plain integer and the worst case is a lost timestamp
        // refresh, which the next packet repeats.
        Some(f(unsafe { &mut *entry }))
    }

    #[inline(always)]
    fn ct_contains(&self, key: &CtKey) -> bool {
        match CtKey4::of(key) {
            Some(compact) => SG_CONNTRACK4.get_ptr(&compact).is_some(),
            None => SG_CONNTRACK.get_ptr(key).is_some(),
        }
    }

    #[inline(always)]
    fn ct_insert(&self, key: &CtKey, entry: &CtEntry) -> bool {
        // BPF_ANY: replaces an expired entry for the same flow; fails (-E2BIG) only when the
        // table is full (or, for the table allocated on demand, when no memory is left), which
        // is then reported as conntrack_allowance_exceeded.
        match CtKey4::of(key) {
            Some(compact) => SG_CONNTRACK4.insert(&compact, entry, 0).is_ok(),
            None => SG_CONNTRACK.insert(key, entry, 0).is_ok(),
        }
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

    #[inline(always)]
    fn is_node_service(&self, key: &ServiceKey) -> bool {
        SG_SERVICES.get_ptr(key).is_some()
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
