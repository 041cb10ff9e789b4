//! Header parsing: Ethernet, IPv4 (options, fragments), IPv6 (extension headers), TCP, UDP,
//! ICMP, ICMPv6, and the packet an ICMP error quotes.
//!
//! One parser for both sides: the kernel programs run it over packet memory (every read is
//! bounds-checked against `data_end` by their [`PacketView`]), and the host runs it over byte
//! slices in unit tests and fuzzing. Every offset it computes is bounded by small constants so
//! the verifier can follow it. Anything it cannot parse safely is [`Frame::Malformed`] and gets
//! dropped (SPEC §3): a firewall never guesses.

use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::maps::{Addr, FAMILY_V4, FAMILY_V6};

/// Bounds-checked reads of a frame, from the start of the Ethernet header.
pub trait PacketView {
    /// Number of bytes that may be read.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the `T` at `offset`, or `None` if it does not lie wholly inside the frame.
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
}

/// A frame in a byte slice (host side: tests, fuzzing, `explain`).
impl PacketView for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let end = offset.checked_add(core::mem::size_of::<T>())?;
        if end > <[u8]>::len(self) {
            return None;
        }
        // SAFETY: `offset..end` is in bounds (checked above) and `read_unaligned` has no
        // alignment requirement; `T: Copy` headers are plain integer/byte-array structs.
        Some(unsafe { core::ptr::read_unaligned(self.as_ptr().add(offset).cast::<T>()) })
    }
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Extension headers followed before giving up on an IPv6 packet as malformed. Real traffic
/// carries one or two; a long chain is an evasion attempt.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Offsets beyond this are not followed (keeps every offset verifier-bounded; no legitimate
/// header chain comes close).
const MAX_L4_OFFSET: usize = 1024;

/// What kind of ICMP/ICMPv6 message a packet is (`Packet::icmp`).
pub const ICMP_NONE: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 1;
pub const ICMP_ECHO_REPLY: u8 = 2;
/// Destination unreachable (incl. fragmentation needed / packet too big), time exceeded,
/// parameter problem: may be related to a tracked flow.
pub const ICMP_ERROR: u8 = 3;
/// Any other ICMP message (timestamp, router advertisement from afar, ...).
pub const ICMP_OTHER: u8 = 4;

/// `Packet::fragment`.
pub const FRAG_NONE: u8 = 0;
/// First fragment: carries the L4 header; judged normally, its verdict remembered.
pub const FRAG_FIRST: u8 = 1;
/// Later fragment: no L4 header; gets the first fragment's verdict.
pub const FRAG_LATER: u8 = 2;

/// The flow an ICMP error quotes (the packet that provoked it).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Quoted {
    /// Non-zero if the quoted headers were parsed.
    pub valid: u8,
    pub proto: u8,
    pub icmp: u8,
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
}

/// The parsed headers of an IP packet.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub family: u8,
    /// Upper-layer protocol, after any IPv6 extension headers.
    pub proto: u8,
    pub tcp_flags: u8,
    /// `ICMP_*` kind; `ICMP_NONE` for non-ICMP packets.
    pub icmp: u8,
    /// `FRAG_*`.
    pub fragment: u8,
    pub src: Addr,
    pub dst: Addr,
    /// TCP/UDP source port; ICMP echo identifier; 0 otherwise.
    pub sport: u16,
    /// TCP/UDP destination port; ICMP `type << 8 | code`; 0 otherwise. This is the value rules
    /// match (SPEC §2: rules filter on the destination port; ICMP rules on type and code).
    pub dport: u16,
    /// Fragment identification (IPv4: 16 bits; IPv6: 32 bits).
    pub frag_id: u32,
    /// Length of the IP packet (header included), for byte counters.
    pub ip_len: u16,
    /// For `ICMP_ERROR`: the quoted flow.
    pub quoted: Quoted,
    /// Non-zero if a socket on this node sent the frame (set by the transmit hook, not the
    /// parser): the node itself, as opposed to traffic it forwards.
    pub local_origin: u8,
}

/// What a frame is, as far as the security groups are concerned.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// ARP or IPv6 neighbour discovery: always passed, so addressing works under any policy.
    AddressResolution,
    /// Any other non-IP frame (including VLAN-tagged ones): dropped.
    NonIp,
    /// IP, but truncated or inconsistent: dropped.
    Malformed,
    /// An IP packet; its headers are in the `Packet` given to [`parse_frame`].
    Ip,
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses a frame starting at its Ethernet header. For [`Frame::Ip`] the headers are left in
/// `pkt` (which the kernel keeps in per-CPU scratch memory: the 512-byte BPF stack is too small
/// to hold it beside the lookup keys); otherwise `pkt` holds partial garbage.
#[inline(always)]
pub fn parse_frame<V: PacketView>(view: &V, pkt: &mut Packet) -> Frame {
    *pkt = Packet::default();
    let Some(eth) = view.read::<EthHdr>(0) else {
        return Frame::Malformed;
    };
    // `ether_type` is stored in network order in the header struct.
    match u16::from_be(eth.ether_type) {
        ETH_P_IP => parse_ipv4(view, EthHdr::LEN, pkt),
        ETH_P_IPV6 => parse_ipv6(view, EthHdr::LEN, pkt),
        ETH_P_ARP => Frame::AddressResolution,
        _ => Frame::NonIp,
    }
}

#[inline(always)]
fn parse_ipv4<V: PacketView>(view: &V, l3: usize, pkt: &mut Packet) -> Frame {
    let Some(ip) = view.read::<Ipv4Hdr>(l3) else {
        return Frame::Malformed;
    };
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    let total_len = usize::from(be16(ip.tot_len));
    if ip.vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN || total_len < header_len {
        return Frame::Malformed;
    }
    // The IP packet must fit in the frame; a frame longer than the packet is Ethernet padding.
    if l3 + total_len > view.len() {
        return Frame::Malformed;
    }
    pkt.family = FAMILY_V4;
    pkt.proto = ip.proto;
    pkt.ip_len = total_len as u16;
    pkt.frag_id = u32::from(be16(ip.id));
    pkt.src[..4].copy_from_slice(&ip.src_addr);
    pkt.dst[..4].copy_from_slice(&ip.dst_addr);

    let frags = be16(ip.frags);
    let more_fragments = frags & 0x2000 != 0;
    let frag_offset = frags & 0x1fff;
    if frag_offset != 0 {
        // RFC 1858: a TCP fragment at offset 8 bytes can only exist to overwrite the header
        // (flags, ports) that the first fragment was judged by.
        if frag_offset == 1 && ip.proto == IPPROTO_TCP {
            return Frame::Malformed;
        }
        pkt.fragment = FRAG_LATER;
        return Frame::Ip;
    }
    if more_fragments {
        pkt.fragment = FRAG_FIRST;
    }
    let l4 = l3 + header_len;
    let end = l3 + total_len;
    if parse_l4(view, pkt, l4, end) { Frame::Ip } else { Frame::Malformed }
}

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

#[inline(always)]
fn parse_ipv6<V: PacketView>(view: &V, l3: usize, pkt: &mut Packet) -> Frame {
    let Some(ip) = view.read::<Ipv6Hdr>(l3) else {
        return Frame::Malformed;
    };
    if ip.vcf[0] >> 4 != 6 {
        return Frame::Malformed;
    }
    let payload_len = usize::from(be16(ip.payload_len));
    let end = l3 + Ipv6Hdr::LEN + payload_len;
    if end > view.len() {
        return Frame::Malformed;
    }
    pkt.family = FAMILY_V6;
    pkt.src = ip.src_addr;
    pkt.dst = ip.dst_addr;
    pkt.ip_len = (Ipv6Hdr::LEN + payload_len) as u16;
    let mut next = ip.next_hdr;
    let mut off = l3 + Ipv6Hdr::LEN;
    let mut at_upper_layer = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let header_len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let Some(h) = view.read::<[u8; 2]>(off) else {
                    return Frame::Malformed;
                };
                next = h[0];
                (usize::from(h[1]) + 1) * 8
            }
            IPV6_AUTH => {
                let Some(h) = view.read::<[u8; 2]>(off) else {
                    return Frame::Malformed;
                };
                next = h[0];
                (usize::from(h[1]) + 2) * 4
            }
            IPV6_FRAGMENT => {
                let Some(h) = view.read::<[u8; 8]>(off) else {
                    return Frame::Malformed;
                };
                next = h[0];
                let offset_flags = u16::from_be_bytes([h[2], h[3]]);
                pkt.frag_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                if offset_flags >> 3 != 0 {
                    pkt.fragment = FRAG_LATER;
                } else if offset_flags & 1 != 0 {
                    pkt.fragment = FRAG_FIRST;
                }
                8
            }
            _ => {
                at_upper_layer = true;
                break;
            }
        };
        off += header_len;
        if off > end || off > MAX_L4_OFFSET {
            return Frame::Malformed;
        }
        if pkt.fragment == FRAG_LATER {
            pkt.proto = next;
            return Frame::Ip;
        }
    }
    if !at_upper_layer {
        // Still inside extension headers after the limit.
        return Frame::Malformed;
    }
    pkt.proto = next;
    // Neighbour discovery and multicast listener discovery must pass whatever the policy says
    // (SPEC §3): they are addressing machinery, like ARP. Only what stays on the link counts:
    // NDP with hop limit 255 (RFC 4861, RFC 6980), MLD queries, reports and dones (130-132, and
    // MLDv2 reports, 143) with hop limit 1 (RFC 2710, RFC 3810), neither fragmented. Anything
    // else claiming to be one is judged like any ICMPv6 message.
    // (Reads 4 bytes, not 1: LLVM turns a 1-byte bounds check into `ptr < data_end`, from
    // which the verifier derives no readable range.)
    if next == IPPROTO_ICMPV6
        && pkt.fragment == FRAG_NONE
        && off + 8 <= end
        && view.read::<[u8; 4]>(off).is_some_and(|[ty, ..]| {
            (ip.hop_limit == 255 && (133..=137).contains(&ty)) || (ip.hop_limit == 1 && matches!(ty, 130..=132 | 143))
        })
    {
        return Frame::AddressResolution;
    }
    if parse_l4(view, pkt, off, end) { Frame::Ip } else { Frame::Malformed }
}

/// Fills ports / flags / ICMP fields from the header at `l4`, which must end by `end` (the end
/// of the IP packet). Returns `false` if the header is truncated or inconsistent.
#[inline(always)]
fn parse_l4<V: PacketView>(view: &V, pkt: &mut Packet, l4: usize, end: usize) -> bool {
    if l4 > MAX_L4_OFFSET {
        return false;
    }
    match (pkt.proto, pkt.family) {
        (IPPROTO_TCP, _) => {
            // Ports, sequence numbers, data offset, flags: the fixed 20 bytes.
            let Some(h) = view.read::<[u8; 14]>(l4) else {
                return false;
            };
            let data_offset = usize::from(h[12] >> 4) * 4;
            if data_offset < 20 || l4 + data_offset > end || !valid_tcp_flags(h[13]) {
                return false;
            }
            pkt.sport = u16::from_be_bytes([h[0], h[1]]);
            pkt.dport = u16::from_be_bytes([h[2], h[3]]);
            pkt.tcp_flags = h[13];
            true
        }
        (IPPROTO_UDP, _) => {
            let Some(h) = view.read::<[u8; 8]>(l4) else {
                return false;
            };
            if l4 + 8 > end {
                return false;
            }
            pkt.sport = u16::from_be_bytes([h[0], h[1]]);
            pkt.dport = u16::from_be_bytes([h[2], h[3]]);
            true
        }
        (IPPROTO_ICMP, FAMILY_V4) | (IPPROTO_ICMPV6, FAMILY_V6) => {
            let Some(h) = view.read::<[u8; 8]>(l4) else {
                return false;
            };
            if l4 + 8 > end {
                return false;
            }
            let (ty, code) = (h[0], h[1]);
            pkt.dport = u16::from_be_bytes([ty, code]);
            pkt.icmp = icmp_kind(pkt.family, ty);
            if pkt.icmp == ICMP_ECHO_REQUEST || pkt.icmp == ICMP_ECHO_REPLY {
                pkt.sport = u16::from_be_bytes([h[4], h[5]]);
            } else if pkt.icmp == ICMP_ERROR {
                pkt.quoted = parse_quoted(view, pkt.family, l4 + 8, end);
            }
            true
        }
        // Other protocols are judged by addresses and protocol number only.
        _ => true,
    }
}

const TCP_URG: u8 = 0x20;

/// The flag combinations a TCP segment can carry (PSH, ECE and CWR aside), as Linux's
/// conntrack defines them: SYN+FIN, SYN+RST, no flags at all ("null"), FIN/URG without ACK
/// ("xmas") and the like exist only to probe or to slip past filters.
#[inline(always)]
pub const fn valid_tcp_flags(flags: u8) -> bool {
    let f = flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | TCP_URG);
    matches!(
        f,
        TCP_SYN
            | 0x22 // SYN|URG
            | 0x12 // SYN|ACK
            | TCP_RST
            | 0x14 // RST|ACK
            | 0x11 // FIN|ACK
            | 0x31 // FIN|ACK|URG
            | TCP_ACK
            | 0x30 // ACK|URG
    )
}

/// Classifies an ICMP (`family` 4) or ICMPv6 (`family` 6) type.
#[inline(always)]
pub fn icmp_kind(family: u8, ty: u8) -> u8 {
    if family == FAMILY_V4 {
        match ty {
            8 => ICMP_ECHO_REQUEST,
            0 => ICMP_ECHO_REPLY,
            // Destination unreachable (incl. fragmentation needed), source quench, time
            // exceeded, parameter problem.
            3 | 4 | 11 | 12 => ICMP_ERROR,
            _ => ICMP_OTHER,
        }
    } else {
        match ty {
            128 => ICMP_ECHO_REQUEST,
            129 => ICMP_ECHO_REPLY,
            // Destination unreachable, packet too big, time exceeded, parameter problem.
            1..=4 => ICMP_ERROR,
            _ => ICMP_OTHER,
        }
    }
}

/// Parses the IP header and first 8 bytes of upper layer that an ICMP error quotes. Quotes are
/// often truncated and never trusted further than needed to find a tracked flow.
#[inline(always)]
fn parse_quoted<V: PacketView>(view: &V, family: u8, at: usize, end: usize) -> Quoted {
    let mut q = Quoted::default();
    if at > MAX_L4_OFFSET {
        return q;
    }
    let l4 = if family == FAMILY_V4 {
        let Some(ip) = view.read::<Ipv4Hdr>(at) else {
            return q;
        };
        let header_len = usize::from(ip.vihl & 0x0f) * 4;
        if ip.vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN {
            return q;
        }
        q.proto = ip.proto;
        q.src[..4].copy_from_slice(&ip.src_addr);
        q.dst[..4].copy_from_slice(&ip.dst_addr);
        at + header_len
    } else {
        let Some(ip) = view.read::<Ipv6Hdr>(at) else {
            return q;
        };
        if ip.vcf[0] >> 4 != 6 {
            return q;
        }
        q.proto = ip.next_hdr;
        q.src = ip.src_addr;
        q.dst = ip.dst_addr;
        at + Ipv6Hdr::LEN
    };
    if l4 > MAX_L4_OFFSET {
        return q;
    }
    let Some(h) = view.read::<[u8; 8]>(l4) else {
        return q;
    };
    if l4 + 8 > end {
        return q;
    }
    match (q.proto, family) {
        (IPPROTO_TCP | IPPROTO_UDP, _) => {
            q.sport = u16::from_be_bytes([h[0], h[1]]);
            q.dport = u16::from_be_bytes([h[2], h[3]]);
        }
        (IPPROTO_ICMP, FAMILY_V4) | (IPPROTO_ICMPV6, FAMILY_V6) => {
            q.icmp = icmp_kind(family, h[0]);
            q.dport = u16::from_be_bytes([h[0], h[1]]);
            if q.icmp == ICMP_ECHO_REQUEST || q.icmp == ICMP_ECHO_REPLY {
                q.sport = u16::from_be_bytes([h[4], h[5]]);
            }
        }
        _ => {}
    }
    q.valid = 1;
    q
}
