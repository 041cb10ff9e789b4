//! Connection tracking logic (SPEC §3): flow keys, the TCP state machine, UDP stream promotion
//! and timeouts. Pure functions over [`CtEntry`], run by the kernel on every tracked packet and
//! by host tests directly.

use crate::{
    maps::{
        CT_F_FIN_ORIGIN, CT_F_FIN_REPLY, CT_F_ORIGIN_TRANSMIT, CT_F_REPLIED, CT_F_STREAM, CT_ICMP_ECHO,
        CT_RULE_UNKNOWN, CtEntry, CtKey, IfaceTimeouts, Settings,
    },
    orientation::Hook,
    packet::{
        ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, Quoted,
        TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    },
};

/// State of a tracked flow ([`CtEntry::state`]).
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CtState {
    /// Any non-TCP flow.
    Open = 0,
    /// TCP: SYN seen, handshake not finished.
    SynSent = 1,
    Established = 2,
    /// TCP: one side has sent a FIN.
    FinWait = 3,
    /// TCP: both sides sent FIN; only the last ACKs remain.
    TimeWait = 4,
    /// TCP: reset.
    Closed = 5,
}

impl CtState {
    pub const fn from_u8(v: u8) -> CtState {
        match v {
            1 => CtState::SynSent,
            2 => CtState::Established,
            3 => CtState::FinWait,
            4 => CtState::TimeWait,
            5 => CtState::Closed,
            _ => CtState::Open,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            CtState::Open => "open",
            CtState::SynSent => "syn_sent",
            CtState::Established => "established",
            CtState::FinWait => "fin_wait",
            CtState::TimeWait => "time_wait",
            CtState::Closed => "closed",
        }
    }
}

/// CLOCK_MONOTONIC seconds from nanoseconds, as [`CtEntry::last_seen`] stores them.
#[inline(always)]
pub const fn seconds(now_ns: u64) -> u32 {
    (now_ns / 1_000_000_000) as u32
}

/// The hook that saw the flow's first packet.
#[inline(always)]
pub const fn origin(entry: &CtEntry) -> Hook {
    if entry.flags & CT_F_ORIGIN_TRANSMIT != 0 { Hook::Transmit } else { Hook::Receive }
}

/// Builds the conntrack key of a packet seen at `hook` on interface `ifindex`.
#[inline(always)]
pub fn flow_key(ifindex: u32, hook: Hook, pkt: &Packet) -> CtKey {
    let (sport, dport) = flow_ports(pkt.proto, pkt.icmp, pkt.sport, pkt.dport);
    oriented_key(ifindex, hook, pkt.family, pkt.proto, &pkt.src, &pkt.dst, sport, dport)
}

/// Builds the key of the flow an ICMP error quotes. The quoted packet travelled the other way
/// through the interface than the error does: an error received on the interface quotes a
/// packet the interface transmitted.
#[inline(always)]
pub fn quoted_flow_key(ifindex: u32, error_hook: Hook, family: u8, q: &Quoted) -> CtKey {
    let (sport, dport) = flow_ports(q.proto, q.icmp, q.sport, q.dport);
    oriented_key(ifindex, error_hook.opposite(), family, q.proto, &q.src, &q.dst, sport, dport)
}

/// The (source, destination) "ports" that identify a flow: TCP/UDP ports; for ICMP echo the
/// identifier and the echo marker (request and reply share them); nothing for the rest.
#[inline(always)]
fn flow_ports(proto: u8, icmp: u8, sport: u16, dport: u16) -> (u16, u16) {
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => (sport, dport),
        // ICMP echo: the identifier goes in the far port slot whichever way the packet goes;
        // the key's addresses are already oriented.
        IPPROTO_ICMP | IPPROTO_ICMPV6 if icmp == ICMP_ECHO_REQUEST || icmp == ICMP_ECHO_REPLY => (sport, CT_ICMP_ECHO),
        _ => (0, 0),
    }
}

#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "a flat key builder; a struct would add nothing")]
fn oriented_key(
    ifindex: u32,
    hook: Hook,
    family: u8,
    proto: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    sport: u16,
    dport: u16,
) -> CtKey {
    let is_icmp = proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
    match hook {
        // Received: the source is the far endpoint.
        Hook::Receive => CtKey {
            ifindex,
            family,
            proto,
            far_port: sport,
            near_port: dport,
            _pad: 0,
            far_addr: *src,
            near_addr: *dst,
        },
        Hook::Transmit => CtKey {
            ifindex,
            family,
            proto,
            // ICMP echo: the identifier stays in `far_port` in both directions.
            far_port: if is_icmp { sport } else { dport },
            near_port: if is_icmp { dport } else { sport },
            _pad: 0,
            far_addr: *dst,
            near_addr: *src,
        },
    }
}

/// A new entry for a flow whose packet `pkt`, seen at `hook`, was allowed by `rule`.
#[inline(always)]
pub fn new_entry(pkt: &Packet, hook: Hook, rule: u32, now_ns: u64) -> CtEntry {
    let mut entry = CtEntry {
        last_seen: seconds(now_ns),
        rule: if rule < CT_RULE_UNKNOWN as u32 { rule as u16 } else { CT_RULE_UNKNOWN },
        state: CtState::Open as u8,
        flags: if matches!(hook, Hook::Transmit) { CT_F_ORIGIN_TRANSMIT } else { 0 },
    };
    if pkt.proto == IPPROTO_TCP {
        let syn_only = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        // A flow picked up mid-stream (after a flush or a restart, while the rules still allow
        // it) is established: cutting it would break a live connection.
        entry.state = if syn_only { CtState::SynSent as u8 } else { CtState::Established as u8 };
        tcp_flags_seen(&mut entry, pkt.tcp_flags, true);
    }
    entry
}

/// What a tracked flow's entry says about a packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// Part of the flow: pass.
    Pass,
    /// The entry has expired or the TCP connection it tracked is over and this SYN starts a new
    /// one on the same ports: judge the packet by the rules as a new flow.
    New,
}

/// Advances the entry for a packet of its flow seen at `hook`.
#[inline(always)]
///
/// `settings` (the agent's timeouts and the interface's instance's own) is only called when the
/// entry was last refreshed in an earlier second: one refreshed this second cannot have
/// expired, and most packets of a busy flow skip the lookups.
pub fn track<'s>(
    entry: &mut CtEntry,
    pkt: &Packet,
    hook: Hook,
    now_ns: u64,
    settings: impl FnOnce() -> (&'s Settings, IfaceTimeouts),
) -> Tracked {
    if entry.last_seen != seconds(now_ns) {
        let (s, own) = settings();
        if is_expired_for(entry, pkt.proto, s, &own, now_ns) {
            return Tracked::New;
        }
    }
    let from_origin = origin(entry) as u8 == hook as u8;
    let before = (entry.state, entry.flags);
    if pkt.proto == IPPROTO_TCP {
        let state = CtState::from_u8(entry.state);
        let syn_only = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        if syn_only && matches!(state, CtState::TimeWait | CtState::Closed) {
            return Tracked::New;
        }
        if state == CtState::SynSent && !from_origin && pkt.tcp_flags & TCP_RST == 0 {
            entry.state = CtState::Established as u8;
        }
        tcp_flags_seen(entry, pkt.tcp_flags, from_origin);
    } else if pkt.proto == IPPROTO_UDP {
        if !from_origin {
            entry.flags |= CT_F_REPLIED;
        } else if entry.flags & CT_F_REPLIED != 0 {
            // The originator speaks again after a reply: a second exchange, so a stream.
            entry.flags |= CT_F_STREAM;
        }
    } else if !from_origin {
        entry.flags |= CT_F_REPLIED;
    }
    let now = seconds(now_ns);
    if before != (entry.state, entry.flags) || entry.last_seen != now {
        entry.last_seen = now;
    }
    Tracked::Pass
}

#[inline(always)]
fn tcp_flags_seen(entry: &mut CtEntry, flags: u8, from_origin: bool) {
    if flags & TCP_RST != 0 {
        entry.state = CtState::Closed as u8;
        return;
    }
    if flags & TCP_FIN != 0 {
        entry.flags |= if from_origin { CT_F_FIN_ORIGIN } else { CT_F_FIN_REPLY };
        let both = CT_F_FIN_ORIGIN | CT_F_FIN_REPLY;
        entry.state = if entry.flags & both == both { CtState::TimeWait as u8 } else { CtState::FinWait as u8 };
    }
}

/// The timeout, in seconds, that applies to an entry now (with the agent's timeouts only).
#[inline(always)]
pub fn timeout_secs(entry: &CtEntry, proto: u8, s: &Settings) -> u32 {
    timeout_secs_for(entry, proto, s, &IfaceTimeouts::default())
}

/// The timeout, in seconds, that applies to an entry of an interface whose instance has `own`
/// timeouts (0: the agent's).
#[inline(always)]
pub fn timeout_secs_for(entry: &CtEntry, proto: u8, s: &Settings, own: &IfaceTimeouts) -> u32 {
    let pick = |own: u32, agent: u32| if own != 0 { own } else { agent };
    match proto {
        IPPROTO_TCP => match CtState::from_u8(entry.state) {
            CtState::SynSent => s.tcp_syn,
            CtState::FinWait => s.tcp_fin,
            CtState::TimeWait | CtState::Closed => s.tcp_closed,
            CtState::Established | CtState::Open => pick(own.tcp_established, s.tcp_established),
        },
        IPPROTO_UDP => {
            if entry.flags & CT_F_STREAM != 0 {
                pick(u32::from(own.udp_stream), s.udp_stream)
            } else {
                pick(u32::from(own.udp), s.udp)
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => s.icmp,
        _ => s.other,
    }
}

/// Whether an entry has outlived its timeout (the agent's timeouts only). The protocol is part
/// of the key, not the entry.
#[inline(always)]
pub fn is_expired(entry: &CtEntry, proto: u8, s: &Settings, now_ns: u64) -> bool {
    is_expired_for(entry, proto, s, &IfaceTimeouts::default(), now_ns)
}

/// Whether an entry of an interface whose instance has `own` timeouts has expired.
#[inline(always)]
pub fn is_expired_for(entry: &CtEntry, proto: u8, s: &Settings, own: &IfaceTimeouts, now_ns: u64) -> bool {
    seconds(now_ns).saturating_sub(entry.last_seen) > timeout_secs_for(entry, proto, s, own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instances_own_timeouts_replace_the_agents() {
        let s = Settings::DEFAULT;
        let udp = CtEntry::default();
        let stream = CtEntry { flags: CT_F_STREAM, ..CtEntry::default() };
        let tcp = CtEntry { state: CtState::Established as u8, ..CtEntry::default() };
        let none = IfaceTimeouts::default();
        assert_eq!(timeout_secs_for(&udp, IPPROTO_UDP, &s, &none), 30);
        assert_eq!(timeout_secs_for(&stream, IPPROTO_UDP, &s, &none), 180);
        assert_eq!(timeout_secs_for(&tcp, IPPROTO_TCP, &s, &none), 432_000);
        let own = IfaceTimeouts { tcp_established: 3600, udp: 60, udp_stream: 90 };
        assert_eq!(timeout_secs_for(&udp, IPPROTO_UDP, &s, &own), 60);
        assert_eq!(timeout_secs_for(&stream, IPPROTO_UDP, &s, &own), 90);
        assert_eq!(timeout_secs_for(&tcp, IPPROTO_TCP, &s, &own), 3600);
        // The handshake and closing timeouts stay the agent's.
        let syn = CtEntry { state: CtState::SynSent as u8, ..CtEntry::default() };
        assert_eq!(timeout_secs_for(&syn, IPPROTO_TCP, &s, &own), s.tcp_syn);
        let at = |secs: u64| secs * 1_000_000_000;
        assert!(!is_expired_for(&udp, IPPROTO_UDP, &s, &own, at(60)));
        assert!(is_expired_for(&udp, IPPROTO_UDP, &s, &own, at(61)));
        assert!(is_expired_for(&udp, IPPROTO_UDP, &s, &none, at(31)));
    }
}
