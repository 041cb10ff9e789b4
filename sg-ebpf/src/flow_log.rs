//! Flow-log events for `sg-agent flows`: written to the ring buffer only while a reader is
//! attached, within the CPU's budget (`sg_common::flow_log::take_token`).

use sg_common::{flow_log::take_token, maps::FlowEvent, orientation::Hook, packet::Packet, verdict::Verdict};

use crate::{
    counters::count_skipped,
    maps::{SG_FLOW_CONFIG, SG_FLOW_EVENTS},
};

/// Emits a flow-log event for a judged IP packet, if a reader is attached and this CPU's
/// budget allows; otherwise counts it as skipped. Bounded cost: a flood spends the budget and
/// then costs one array lookup per packet.
#[inline(always)]
pub fn log_flow(ifindex: u32, hook: Hook, pkt: &Packet, verdict: &Verdict, bytes: usize, now_ns: u64) {
    let Some(cfg) = SG_FLOW_CONFIG.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot of a per-CPU array.
    let cfg = unsafe { &mut *cfg };
    if cfg.events_per_sec == 0 {
        // No reader: nothing to write, nothing skipped.
        return;
    }
    let event = if take_token(cfg, now_ns) { SG_FLOW_EVENTS.reserve::<FlowEvent>(0) } else { None };
    let Some(mut event) = event else {
        count_skipped();
        return;
    };
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
