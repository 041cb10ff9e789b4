//! Building test frames: Ethernet, IPv4 (options, fragments), IPv6 (extension headers), TCP,
//! UDP, ICMP. Used by the host parser tests, the `BPF_PROG_TEST_RUN` tests and the benchmarks.
//! Checksums are left zero: nothing on the judged path checks them.
#![expect(clippy::indexing_slicing, reason = "fixed-size header buffers, indexed within their length")]

use sg_common::packet::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

/// An Ethernet frame around `payload`.
pub fn eth(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A TCP header (20 bytes) with `flags`.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h
}

/// A UDP header with `data`.
pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    h.extend_from_slice(data);
    h
}

/// An ICMP/ICMPv6 header: type, code, and the 4-byte rest (echo: identifier, sequence).
pub fn icmp(ty: u8, code: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut h = vec![ty, code, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h
}

/// An IPv4 packet.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub more_fragments: bool,
    /// Options, a multiple of 4 bytes.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Ipv4 {
    pub fn new(src: [u8; 4], dst: [u8; 4], proto: u8, payload: Vec<u8>) -> Ipv4 {
        Ipv4 { src, dst, proto, ttl: 64, id: 1, frag_offset: 0, more_fragments: false, options: Vec::new(), payload }
    }

    /// The IP packet (no Ethernet header).
    pub fn packet(&self) -> Vec<u8> {
        let ihl = 5 + self.options.len() / 4;
        let total = ihl * 4 + self.payload.len();
        let mut p = vec![0u8; 20];
        p[0] = 0x40 | ihl as u8;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&self.id.to_be_bytes());
        let frags = (u16::from(self.more_fragments) << 13) | (self.frag_offset & 0x1fff);
        p[6..8].copy_from_slice(&frags.to_be_bytes());
        p[8] = self.ttl;
        p[9] = self.proto;
        p[12..16].copy_from_slice(&self.src);
        p[16..20].copy_from_slice(&self.dst);
        p.extend_from_slice(&self.options);
        p.extend_from_slice(&self.payload);
        p
    }

    /// The whole Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        eth(ETH_P_IP, &self.packet())
    }
}

/// An IPv6 extension header: (its own header type, the bytes after next-header and length,
/// padded by `frame()` to the header's length rule).
#[derive(Clone, Debug)]
pub enum Ext {
    HopByHop,
    DestOpts,
    Routing,
    /// Fragment header: offset in 8-byte units, more-fragments, identification.
    Fragment {
        offset: u16,
        more: bool,
        id: u32,
    },
}

/// An IPv6 packet.
#[derive(Clone, Debug)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Upper-layer protocol after the extension headers.
    pub proto: u8,
    pub hop_limit: u8,
    pub ext: Vec<Ext>,
    pub payload: Vec<u8>,
}

impl Ipv6 {
    pub fn new(src: [u8; 16], dst: [u8; 16], proto: u8, payload: Vec<u8>) -> Ipv6 {
        Ipv6 { src, dst, proto, hop_limit: 64, ext: Vec::new(), payload }
    }

    pub fn packet(&self) -> Vec<u8> {
        let mut ext_bytes = Vec::new();
        let types: Vec<u8> = self
            .ext
            .iter()
            .map(|e| match e {
                Ext::HopByHop => 0,
                Ext::Routing => 43,
                Ext::Fragment { .. } => 44,
                Ext::DestOpts => 60,
            })
            .collect();
        for (i, e) in self.ext.iter().enumerate() {
            let next = types.get(i + 1).copied().unwrap_or(self.proto);
            match e {
                Ext::HopByHop | Ext::DestOpts => {
                    // 8 bytes: next, len 0, PadN option of 4 bytes.
                    ext_bytes.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                }
                Ext::Routing => {
                    // Type 0 routing with segments left 0, no addresses.
                    ext_bytes.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
                }
                Ext::Fragment { offset, more, id } => {
                    let field = (offset << 3) | u16::from(*more);
                    ext_bytes.push(next);
                    ext_bytes.push(0);
                    ext_bytes.extend_from_slice(&field.to_be_bytes());
                    ext_bytes.extend_from_slice(&id.to_be_bytes());
                }
            }
        }
        let first = types.first().copied().unwrap_or(self.proto);
        let payload_len = ext_bytes.len() + self.payload.len();
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
        p[6] = first;
        p[7] = self.hop_limit;
        p[8..24].copy_from_slice(&self.src);
        p[24..40].copy_from_slice(&self.dst);
        p.extend_from_slice(&ext_bytes);
        p.extend_from_slice(&self.payload);
        p
    }

    pub fn frame(&self) -> Vec<u8> {
        eth(ETH_P_IPV6, &self.packet())
    }
}

/// IPv4 address helper.
pub const fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 4] {
    [a, b, c, d]
}

/// `fd00:<net>::<host>`.
pub fn v6(net: u16, host: u16) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[2..4].copy_from_slice(&net.to_be_bytes());
    a[14..16].copy_from_slice(&host.to_be_bytes());
    a
}

pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Ipv4::new(src, dst, IPPROTO_TCP, tcp(sport, dport, flags)).frame()
}

pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    Ipv4::new(src, dst, IPPROTO_UDP, udp(sport, dport, b"data")).frame()
}

pub fn icmp4(src: [u8; 4], dst: [u8; 4], ty: u8, code: u8, id: u16) -> Vec<u8> {
    Ipv4::new(src, dst, IPPROTO_ICMP, icmp(ty, code, id, 1)).frame()
}

pub fn tcp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Ipv6::new(src, dst, IPPROTO_TCP, tcp(sport, dport, flags)).frame()
}

pub fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    Ipv6::new(src, dst, IPPROTO_UDP, udp(sport, dport, b"data")).frame()
}

pub fn icmp6(src: [u8; 16], dst: [u8; 16], ty: u8, code: u8, id: u16) -> Vec<u8> {
    Ipv6::new(src, dst, IPPROTO_ICMPV6, icmp(ty, code, id, 1)).frame()
}

/// An ARP request.
pub fn arp() -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    p.extend_from_slice(&MAC_A);
    p.extend_from_slice(&[10, 0, 0, 2]);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[10, 0, 0, 1]);
    eth(ETH_P_ARP, &p)
}

/// An IPv6 neighbour solicitation for `target`, with the given hop limit (255 on the link).
pub fn neighbour_solicitation(src: [u8; 16], target: [u8; 16], hop_limit: u8) -> Vec<u8> {
    let mut body = vec![135, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&target);
    let mut dst = [0u8; 16];
    dst[0] = 0xff;
    dst[1] = 0x02;
    dst[11] = 1;
    dst[12] = 0xff;
    dst[13..16].copy_from_slice(&target[13..16]);
    let mut ip = Ipv6::new(src, dst, IPPROTO_ICMPV6, body);
    ip.hop_limit = hop_limit;
    ip.frame()
}

/// An MLDv2 listener report (ICMPv6 143) from `src`, behind a hop-by-hop header as hosts send
/// it, with the given hop limit (1 on the link).
pub fn mld_report(src: [u8; 16], hop_limit: u8) -> Vec<u8> {
    let body = vec![143, 0, 0, 0, 0, 0, 0, 0];
    let mut dst = [0u8; 16];
    dst[0] = 0xff;
    dst[1] = 0x02;
    dst[15] = 0x16;
    let mut ip = Ipv6::new(src, dst, IPPROTO_ICMPV6, body);
    ip.hop_limit = hop_limit;
    ip.ext = vec![Ext::HopByHop];
    ip.frame()
}

/// An ICMP error (`ty`/`code`) from `router` to `dst`, quoting `quoted` (an IP packet, cut to
/// its header + 8 bytes as routers do).
pub fn icmp4_error(router: [u8; 4], dst: [u8; 4], ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let ihl = usize::from(quoted.first().copied().unwrap_or(0x45) & 0x0f) * 4;
    let cut = quoted.len().min(ihl + 8);
    let mut body = icmp(ty, code, 0, 0);
    body.extend_from_slice(quoted.get(..cut).unwrap_or(quoted));
    Ipv4::new(router, dst, IPPROTO_ICMP, body).frame()
}

/// An ICMPv6 error quoting `quoted` (an IPv6 packet, first 48 bytes).
pub fn icmp6_error(router: [u8; 16], dst: [u8; 16], ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let cut = quoted.len().min(48);
    let mut body = icmp(ty, code, 0, 0);
    body.extend_from_slice(quoted.get(..cut).unwrap_or(quoted));
    Ipv6::new(router, dst, IPPROTO_ICMPV6, body).frame()
}
