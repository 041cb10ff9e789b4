//! sg-agent's kernel programs: `sg_xdp` judges what an interface receives, `sg_tc` what it
//! transmits. Both run the same path: parse (sg_common::packet), judge (sg_common::verdict:
//! conntrack, then the policy maps, through [`kernel_maps`]), count ([`counters`]) and log
//! ([`flow_log`]).
#![no_std]
#![no_main]

mod counters;
mod flow_log;
mod kernel_maps;
mod maps;
mod view;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use sg_common::{
    orientation::Hook,
    packet::{Frame, PacketView, parse_frame},
    verdict::{Reason, Verdict, judge},
};

use crate::{
    counters::{count, count_rule},
    flow_log::log_flow,
    kernel_maps::{KernelMaps, audited},
    maps::SG_SCRATCH,
    view::CtxView,
};

/// Bytes TC makes linear before parsing: Ethernet + IPv6 + extension headers + L4 + an ICMP
/// error's quoted headers fit easily.
const TC_PULL_LEN: u32 = 256;

#[xdp]
pub fn sg_xdp(ctx: XdpContext) -> u32 {
    let view = CtxView::new(ctx.data(), ctx.data_end(), ctx.data_end() - ctx.data());
    let ifindex = ctx.ingress_ifindex() as u32;
    if process(&view, ifindex, Hook::Receive, false) { xdp_action::XDP_PASS } else { xdp_action::XDP_DROP }
}

#[classifier]
pub fn sg_tc(ctx: TcContext) -> i32 {
    let frame_len = ctx.len();
    let want = if frame_len < TC_PULL_LEN { frame_len } else { TC_PULL_LEN };
    if ctx.data_end() - ctx.data() < want as usize {
        // Headers of a non-linear skb; if this fails the parser sees a short frame and drops.
        let _ = ctx.pull_data(want);
    }
    let view = CtxView::new(ctx.data(), ctx.data_end(), frame_len as usize);
    // SAFETY: the context pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // A frame a socket of this node sent carries it; a forwarded one carries none. (Only
    // compared with null, never dereferenced.)
    // SAFETY: as above; `sk` is the pointer member of the union.
    let local_origin = unsafe { !(*ctx.skb.skb).__bindgen_anon_2.sk.is_null() };
    if process(&view, ifindex, Hook::Transmit, local_origin) {
        // TCX_NEXT / "continue": let any later program on the interface have its say.
        TC_ACT_UNSPEC
    } else {
        TC_ACT_SHOT as i32
    }
}

/// Benchmark baseline, never attached: the same parser and nothing else (no map lookups, no
/// verdict), so that `cargo xtask bench` can put the cost of judging in proportion. Built only
/// into sg-lab's benchmark object (feature `bench`), never into the agent's.
#[cfg(feature = "bench")]
#[xdp]
pub fn sg_bench_parse(ctx: XdpContext) -> u32 {
    let view = CtxView::new(ctx.data(), ctx.data_end(), ctx.data_end() - ctx.data());
    // Parsed into the same per-CPU scratch slot as the real path, and the result used, so the
    // compiler cannot drop the parse as dead code.
    let Some(pkt) = SG_SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's scratch slot; nothing else uses it during this run.
    let pkt = unsafe { &mut *pkt };
    match parse_frame(&view, pkt) {
        Frame::Ip if pkt.dport != 0 || pkt.proto != 0 => xdp_action::XDP_PASS,
        Frame::AddressResolution => xdp_action::XDP_PASS,
        Frame::Ip | Frame::NonIp | Frame::Malformed => xdp_action::XDP_DROP,
    }
}

#[inline(always)]
fn process(view: &CtxView, ifindex: u32, hook: Hook, local_origin: bool) -> bool {
    let Some(pkt) = SG_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch slot; nothing else uses it during this run.
    let pkt = unsafe { &mut *pkt };
    let bytes = view.len();
    let verdict = match parse_frame(view, pkt) {
        Frame::AddressResolution => Verdict::of(Reason::PassedAddressResolution),
        // Dropped before any policy lookup; audit mode still passes (and counts) them.
        Frame::NonIp | Frame::Malformed if audited(ifindex) => Verdict::of(Reason::AuditWouldDrop),
        Frame::NonIp => Verdict::of(Reason::DroppedNonIp),
        Frame::Malformed => Verdict::of(Reason::DroppedMalformed),
        Frame::Ip => {
            pkt.local_origin = u8::from(local_origin);
            // The coarse clock (CLOCK_MONOTONIC at jiffy resolution) is several times cheaper to
            // read, and conntrack keeps time in whole seconds.
            // SAFETY: no preconditions.
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            let verdict = judge(&KernelMaps, ifindex, hook, pkt, now);
            if verdict.counter != 0 {
                count_rule(verdict.counter, bytes);
            }
            log_flow(ifindex, hook, pkt, &verdict, bytes, now);
            verdict
        }
    };
    count(ifindex, verdict.reason, bytes);
    verdict.pass
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
