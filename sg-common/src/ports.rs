//! Port ranges as LPM prefixes: how a rule's `from_port..=to_port` becomes at most 30 map entries
//! instead of one per port.

/// A port prefix: the top `bits` bits of `value` (the rest are zero).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortPrefix {
    pub value: u16,
    pub bits: u8,
}

impl PortPrefix {
    /// Whether `port` lies in this prefix.
    pub const fn contains(self, port: u16) -> bool {
        let shift = 16 - self.bits as u32;
        if shift >= 16 {
            return true;
        }
        (port >> shift) == (self.value >> shift)
    }
}

/// The minimal set of aligned blocks covering `lo..=hi` exactly, in ascending order.
/// At most 30 for any range of 16-bit values.
pub fn range_prefixes(lo: u16, hi: u16) -> impl Iterator<Item = PortPrefix> {
    let mut next = Some(u32::from(lo));
    let hi = u32::from(hi);
    core::iter::from_fn(move || {
        let start = next?;
        if start > hi {
            next = None;
            return None;
        }
        // The largest block aligned at `start` that does not pass `hi`.
        let mut size: u32 = if start == 0 { 1 << 16 } else { 1 << start.trailing_zeros().min(16) };
        while start + size - 1 > hi {
            size >>= 1;
        }
        let end = start + size;
        next = if end > hi { None } else { Some(end) };
        Some(PortPrefix { value: start as u16, bits: (16 - size.trailing_zeros()) as u8 })
    })
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;

    fn covered(lo: u16, hi: u16) -> Vec<u32> {
        let mut ports = Vec::new();
        for p in range_prefixes(lo, hi) {
            for port in 0..=u16::MAX {
                if p.contains(port) {
                    ports.push(u32::from(port));
                }
            }
        }
        ports
    }

    #[test]
    fn full_range_is_one_prefix() {
        let v: Vec<_> = range_prefixes(0, 65535).collect();
        assert_eq!(v, vec![PortPrefix { value: 0, bits: 0 }]);
    }

    #[test]
    fn single_port_is_one_full_prefix() {
        let v: Vec<_> = range_prefixes(443, 443).collect();
        assert_eq!(v, vec![PortPrefix { value: 443, bits: 16 }]);
    }

    #[test]
    fn worst_case_is_thirty_prefixes() {
        assert_eq!(range_prefixes(1, 65534).count(), 30);
    }

    #[test]
    fn prefixes_cover_exactly_the_range() {
        for (lo, hi) in [(0, 0), (1, 1), (1024, 65535), (1, 65534), (8000, 8080), (65535, 65535), (0, 1023), (33, 97)] {
            let expected: Vec<u32> = (u32::from(lo)..=u32::from(hi)).collect();
            assert_eq!(covered(lo, hi), expected, "range {lo}-{hi}");
        }
    }
}
