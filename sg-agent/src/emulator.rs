//! The datapath on the host: `sg_common::verdict::judge` over in-memory copies of the compiled
//! maps. `explain` uses it to answer "would this packet pass, and by which rule?", and the
//! property test uses it to check the compiler against a plain reading of the document.
//!
//! The LPM tries are emulated by probing every prefix length from the longest down, which is
//! exactly longest-prefix-match semantics over the same entries the kernel receives.

use std::{cell::RefCell, collections::HashMap};

use sg_common::{
    conntrack::Tracked,
    maps::{
        ActivePolicy, CtEntry, CtKey, FragKey, FragVerdict, IfaceConfig, IfaceKey, OwnAddrKey, PeerKey,
        RULE_KEY_FIXED_BITS, RuleKey, RuleMatch, Settings, family_bits, peer_key_bits, rule_key_bits,
    },
    verdict::VerdictMaps,
};

use crate::compile::Compiled;

/// Masks all but the top `bits` bits of `bytes`.
fn mask(bytes: &[u8; 16], bits: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, (o, b)) in out.iter_mut().zip(bytes).enumerate() {
        let start = (i as u32) * 8;
        if bits >= start + 8 {
            *o = *b;
        } else if bits > start {
            *o = b & (0xffu8 << (8 - (bits - start)));
        }
    }
    out
}

/// In-memory maps of one compiled generation (slot 0), plus a conntrack table.
pub struct Emulator {
    ifaces: HashMap<u32, IfaceConfig>,
    own: std::collections::HashSet<OwnAddrKey>,
    /// (table, family, address bits, masked address) → class.
    peers: HashMap<(u32, u8, u32, [u8; 16]), u32>,
    /// (table, class, protocol, port bits, masked port) → rule.
    rules: HashMap<(u32, u32, u8, u32, u16), RuleMatch>,
    /// (table, class) → all-protocol rule.
    wildcard: HashMap<(u32, u32), RuleMatch>,
    pub settings: Settings,
    pub conntrack: RefCell<HashMap<CtKey, CtEntry>>,
    pub conntrack_max: usize,
    fragments: RefCell<HashMap<FragKey, FragVerdict>>,
}

impl Emulator {
    /// `ifindex` gives each compiled interface (by position) an interface index.
    pub fn new(c: &Compiled, ifindex: impl Fn(usize, &str) -> u32) -> Emulator {
        let ifaces = c.ifaces.iter().enumerate().map(|(i, f)| (ifindex(i, &f.interface), f.config)).collect();
        let own = c.own_addrs.iter().copied().collect();
        let peers = c
            .peers
            .iter()
            .map(|p| {
                let bits = p.prefix_len - peer_key_bits(0);
                ((p.key.table, p.key.family, bits, mask(&p.key.addr, bits)), p.class)
            })
            .collect();
        let mut rules = HashMap::new();
        let mut wildcard = HashMap::new();
        for e in &c.rule_entries {
            if e.prefix_len == RULE_KEY_FIXED_BITS {
                wildcard.insert((e.key.table, e.key.class), e.value);
            } else {
                let bits = e.prefix_len - rule_key_bits(0);
                let port = u16::from_be_bytes(e.key.port);
                rules.insert((e.key.table, e.key.class, e.key.proto, bits, port), e.value);
            }
        }
        Emulator {
            ifaces,
            own,
            peers,
            rules,
            wildcard,
            settings: Settings::DEFAULT,
            conntrack: RefCell::new(HashMap::new()),
            conntrack_max: usize::MAX,
            fragments: RefCell::new(HashMap::new()),
        }
    }
}

impl VerdictMaps for Emulator {
    fn active(&self) -> Option<ActivePolicy> {
        Some(ActivePolicy { slot: 0, valid: 1, generation: 1 })
    }

    fn iface(&self, key: &IfaceKey) -> Option<IfaceConfig> {
        self.ifaces.get(&key.ifindex).copied()
    }

    fn is_own_addr(&self, key: &OwnAddrKey) -> bool {
        self.own.contains(&OwnAddrKey { slot: 0, ..*key })
    }

    fn peer_class(&self, key: &PeerKey, _prefix_len: u32) -> Option<u32> {
        (0..=family_bits(key.family))
            .rev()
            .find_map(|bits| self.peers.get(&(key.table, key.family, bits, mask(&key.addr, bits))).copied())
    }

    fn rule(&self, key: &RuleKey, _prefix_len: u32) -> Option<RuleMatch> {
        let port = u16::from_be_bytes(key.port);
        (0..=16u32)
            .rev()
            .find_map(|bits| {
                let masked = if bits == 0 { 0 } else { port & (u16::MAX << (16 - bits)) };
                self.rules.get(&(key.table, key.class, key.proto, bits, masked)).copied()
            })
            .or_else(|| self.wildcard.get(&(key.table, key.class)).copied())
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn ct_track<F: FnOnce(&mut CtEntry) -> Tracked>(&self, key: &CtKey, f: F) -> Option<Tracked> {
        self.conntrack.borrow_mut().get_mut(key).map(f)
    }

    fn ct_contains(&self, key: &CtKey) -> bool {
        self.conntrack.borrow().contains_key(key)
    }

    fn ct_insert(&self, key: &CtKey, entry: &CtEntry) -> bool {
        let mut ct = self.conntrack.borrow_mut();
        if !ct.contains_key(key) && ct.len() >= self.conntrack_max {
            return false;
        }
        ct.insert(*key, *entry);
        true
    }

    fn fragment(&self, key: &FragKey) -> Option<FragVerdict> {
        self.fragments.borrow().get(key).copied()
    }

    fn remember_fragment(&self, key: &FragKey, verdict: &FragVerdict) {
        self.fragments.borrow_mut().insert(*key, *verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keeps_the_top_bits() {
        let a = [0xff; 16];
        assert_eq!(mask(&a, 0), [0; 16]);
        assert_eq!(mask(&a, 12)[..3], [0xff, 0xf0, 0]);
        assert_eq!(mask(&a, 128), a);
    }
}
