//! Per-CPU counters: packets and bytes by verdict reason, and hits per rule.

use sg_common::{
    maps::{Counter, IfaceCounterKey},
    verdict::{COUNTER_FLOW_EVENTS_SKIPPED, Reason},
};

use crate::maps::{SG_COUNTERS, SG_IFACE_COUNTERS, SG_RULE_COUNTERS};

/// Counts a packet under its verdict reason, for the node and for its interface.
#[inline(always)]
pub fn count(ifindex: u32, reason: Reason, bytes: usize) {
    if let Some(counter) = SG_COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot; programs do not migrate CPUs mid-run.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        }
    }
    let key = IfaceCounterKey { ifindex, reason: reason as u32 };
    match SG_IFACE_COUNTERS.get_ptr_mut(&key) {
        // SAFETY: this CPU's value of a per-CPU hash element.
        Some(counter) => unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        },
        None => {
            // First packet of this reason on this interface and CPU (BPF_NOEXIST: another CPU's
            // insert does not clobber; a full map only loses the per-interface count).
            let first = Counter { packets: 1, bytes: bytes as u64 };
            let _ = SG_IFACE_COUNTERS.insert(&key, &first, 1);
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

/// Counts a flow-log event not written (the CPU's budget was spent, or the ring was full).
#[inline(always)]
pub fn count_skipped() {
    if let Some(counter) = SG_COUNTERS.get_ptr_mut(COUNTER_FLOW_EVENTS_SKIPPED) {
        // SAFETY: per-CPU slot.
        unsafe { (*counter).packets += 1 };
    }
}
