//! Typed handles on the pinned maps, from a freshly loaded object or from bpffs pins, and the
//! policy swap: fill the idle slot, flip `SG_ACTIVE` with one update, wait for RCU.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap as _, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key},
};
use sg_common::{
    maps::{
        ActivePolicy, Counter, CtEntry, CtKey, IfaceConfig, IfaceKey, OwnAddrKey, PeerKey, RuleKey, RuleMatch,
        Settings, names,
    },
    verdict::{NUM_REASONS, Reason},
};

use super::{DatapathError, pins::PinLayout, rcu::RcuBarrier};
use crate::compile::Compiled;

/// The agent's handles on every map.
pub struct Maps {
    pub active: Array<MapData, ActivePolicy>,
    pub ifaces: HashMap<MapData, IfaceKey, IfaceConfig>,
    pub own_addrs: HashMap<MapData, OwnAddrKey, u32>,
    pub peers: LpmTrie<MapData, PeerKey, u32>,
    pub rules: LpmTrie<MapData, RuleKey, RuleMatch>,
    pub conntrack: HashMap<MapData, CtKey, CtEntry>,
    pub counters: PerCpuArray<MapData, Counter>,
    pub settings: Array<MapData, Settings>,
}

fn map_error(name: &str, error: MapError) -> DatapathError {
    DatapathError::Map { name: name.to_owned(), error }
}

fn take<T: TryFrom<Map, Error = MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T, DatapathError> {
    let map = ebpf.take_map(name).ok_or_else(|| DatapathError::MissingMap(name.to_owned()))?;
    T::try_from(map).map_err(|e| map_error(name, e))
}

fn open<T: TryFrom<Map, Error = MapError>>(pins: &PinLayout, name: &str) -> Result<T, DatapathError> {
    let data = MapData::from_pin(pins.map(name)).map_err(|e| map_error(name, e))?;
    let map = Map::from_map_data(data).map_err(|e| map_error(name, e))?;
    T::try_from(map).map_err(|e| map_error(name, e))
}

/// A generation as the live maps describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveGeneration {
    pub generation: u64,
    pub slot: u32,
}

impl Maps {
    /// Takes the maps out of a loaded object (after its programs are loaded).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Maps, DatapathError> {
        Ok(Maps {
            active: take(ebpf, names::ACTIVE)?,
            ifaces: take(ebpf, names::IFACES)?,
            own_addrs: take(ebpf, names::OWN_ADDRS)?,
            peers: take(ebpf, names::PEERS)?,
            rules: take(ebpf, names::RULES)?,
            conntrack: take(ebpf, names::CONNTRACK)?,
            counters: take(ebpf, names::COUNTERS)?,
            settings: take(ebpf, names::SETTINGS)?,
        })
    }

    /// Opens the maps a running (or departed) agent pinned.
    pub fn from_pins(pins: &PinLayout) -> Result<Maps, DatapathError> {
        Ok(Maps {
            active: open(pins, names::ACTIVE)?,
            ifaces: open(pins, names::IFACES)?,
            own_addrs: open(pins, names::OWN_ADDRS)?,
            peers: open(pins, names::PEERS)?,
            rules: open(pins, names::RULES)?,
            conntrack: open(pins, names::CONNTRACK)?,
            counters: open(pins, names::COUNTERS)?,
            settings: open(pins, names::SETTINGS)?,
        })
    }

    /// The live generation, if a policy has been applied.
    pub fn live(&self) -> Result<Option<LiveGeneration>, DatapathError> {
        let active = self.active.get(&0, 0).map_err(|e| map_error(names::ACTIVE, e))?;
        Ok((active.valid != 0).then_some(LiveGeneration { generation: active.generation, slot: active.slot }))
    }

    pub fn write_settings(&mut self, s: &Settings) -> Result<(), DatapathError> {
        self.settings.set(0, s, 0).map_err(|e| map_error(names::SETTINGS, e))
    }

    pub fn read_settings(&self) -> Result<Settings, DatapathError> {
        self.settings.get(&0, 0).map_err(|e| map_error(names::SETTINGS, e))
    }

    /// Makes `compiled` live as `generation`: writes every entry into the slot no packet reads,
    /// flips `SG_ACTIVE` to it (the one update that changes what packets see), then waits for
    /// an RCU grace period so that no program run still reads the previous slot when this
    /// returns. `ifindexes[i]` is the interface index of `compiled.ifaces[i]`.
    pub fn install(
        &mut self,
        compiled: &Compiled,
        ifindexes: &[u32],
        generation: u64,
        barrier: &RcuBarrier,
    ) -> Result<u32, DatapathError> {
        let slot = match self.live()? {
            Some(live) => 1 - (live.slot & 1),
            None => 0,
        };
        self.clear_slot(slot)?;
        for (iface, ifindex) in compiled.ifaces.iter().zip(ifindexes) {
            self.ifaces
                .insert(IfaceKey { slot, ifindex: *ifindex }, iface.config, 0)
                .map_err(|e| map_error(names::IFACES, e))?;
        }
        for key in &compiled.own_addrs {
            self.own_addrs.insert(OwnAddrKey { slot, ..*key }, 1, 0).map_err(|e| map_error(names::OWN_ADDRS, e))?;
        }
        for p in &compiled.peers {
            let key = Key::new(p.prefix_len, PeerKey { slot, ..p.key });
            self.peers.insert(&key, p.class, 0).map_err(|e| map_error(names::PEERS, e))?;
        }
        for r in &compiled.rule_entries {
            let key = Key::new(r.prefix_len, RuleKey { slot, ..r.key });
            self.rules.insert(&key, r.value, 0).map_err(|e| map_error(names::RULES, e))?;
        }
        let active = ActivePolicy { slot, valid: 1, generation };
        self.active.set(0, active, 0).map_err(|e| map_error(names::ACTIVE, e))?;
        barrier.wait().map_err(DatapathError::RcuBarrier)?;
        Ok(slot)
    }

    /// Whether `slot` holds exactly the entries `compiled` (with `ifindexes`) would write.
    pub fn slot_holds(&self, slot: u32, compiled: &Compiled, ifindexes: &[u32]) -> Result<bool, DatapathError> {
        use std::collections::HashSet;
        let want_ifaces: HashSet<(IfaceKey, IfaceConfig)> = compiled
            .ifaces
            .iter()
            .zip(ifindexes)
            .map(|(i, ifindex)| (IfaceKey { slot, ifindex: *ifindex }, i.config))
            .collect();
        let have_ifaces: HashSet<(IfaceKey, IfaceConfig)> =
            self.ifaces.iter().filter_map(Result::ok).filter(|(k, _)| k.slot == slot).collect();
        if want_ifaces != have_ifaces {
            return Ok(false);
        }
        let want_own: HashSet<OwnAddrKey> = compiled.own_addrs.iter().map(|k| OwnAddrKey { slot, ..*k }).collect();
        let have_own: HashSet<OwnAddrKey> =
            self.own_addrs.keys().filter_map(Result::ok).filter(|k| k.slot == slot).collect();
        if want_own != have_own {
            return Ok(false);
        }
        let want_peers: HashSet<(u32, PeerKey, u32)> =
            compiled.peers.iter().map(|p| (p.prefix_len, PeerKey { slot, ..p.key }, p.class)).collect();
        let have_peers: HashSet<(u32, PeerKey, u32)> = self
            .peers
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.data().slot == slot)
            .map(|(k, v)| (k.prefix_len(), k.data(), v))
            .collect();
        if want_peers != have_peers {
            return Ok(false);
        }
        let want_rules: HashSet<(u32, RuleKey, RuleMatch)> =
            compiled.rule_entries.iter().map(|r| (r.prefix_len, RuleKey { slot, ..r.key }, r.value)).collect();
        let have_rules: HashSet<(u32, RuleKey, RuleMatch)> = self
            .rules
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.data().slot == slot)
            .map(|(k, v)| (k.prefix_len(), k.data(), v))
            .collect();
        Ok(want_rules == have_rules)
    }

    /// Removes every entry of `slot` from the policy maps.
    fn clear_slot(&mut self, slot: u32) -> Result<(), DatapathError> {
        let stale: Vec<IfaceKey> = self.ifaces.keys().filter_map(Result::ok).filter(|k| k.slot == slot).collect();
        for k in stale {
            self.ifaces.remove(&k).map_err(|e| map_error(names::IFACES, e))?;
        }
        let stale: Vec<OwnAddrKey> = self.own_addrs.keys().filter_map(Result::ok).filter(|k| k.slot == slot).collect();
        for k in stale {
            self.own_addrs.remove(&k).map_err(|e| map_error(names::OWN_ADDRS, e))?;
        }
        let stale: Vec<Key<PeerKey>> =
            self.peers.keys().filter_map(Result::ok).filter(|k| k.data().slot == slot).collect();
        for k in stale {
            self.peers.remove(&k).map_err(|e| map_error(names::PEERS, e))?;
        }
        let stale: Vec<Key<RuleKey>> =
            self.rules.keys().filter_map(Result::ok).filter(|k| k.data().slot == slot).collect();
        for k in stale {
            self.rules.remove(&k).map_err(|e| map_error(names::RULES, e))?;
        }
        Ok(())
    }

    /// Packets and bytes per verdict reason, summed over CPUs.
    pub fn counters(&self) -> Result<BTreeMap<&'static str, Counter>, DatapathError> {
        let mut out = BTreeMap::new();
        for reason in Reason::ALL {
            let per_cpu = self.counters.get(&(reason as u32), 0).map_err(|e| map_error(names::COUNTERS, e))?;
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
            out.insert(reason.name(), sum);
        }
        debug_assert!(Reason::ALL.len() as u32 <= NUM_REASONS);
        Ok(out)
    }

    /// Every conntrack entry (a snapshot; the datapath keeps changing it). Read in batches;
    /// entry by entry on kernels without batch lookups.
    pub fn conntrack_entries(&self) -> Vec<(CtKey, CtEntry)> {
        use std::os::fd::AsFd as _;
        let mut out = Vec::new();
        let batched =
            super::batch::for_each(self.conntrack.map().fd().as_fd(), |k: &CtKey, v: &CtEntry| out.push((*k, *v)));
        if batched.is_err() {
            return self.conntrack.iter().filter_map(Result::ok).collect();
        }
        out
    }

    pub fn conntrack_capacity(&self) -> u32 {
        self.conntrack.map().info().map(|i| i.max_entries()).unwrap_or(0)
    }

    /// Kernel memory of the conntrack table (its `memlock` in fdinfo: the whole preallocated
    /// table, whatever its occupancy).
    pub fn conntrack_memory_bytes(&self) -> Option<u64> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = self.conntrack.map().fd().as_fd().as_raw_fd();
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        text.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok())
    }

    /// Interfaces in the live slot.
    pub fn live_ifaces(&self) -> Result<Vec<(u32, IfaceConfig)>, DatapathError> {
        let Some(live) = self.live()? else { return Ok(Vec::new()) };
        Ok(self
            .ifaces
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.slot == live.slot)
            .map(|(k, v)| (k.ifindex, v))
            .collect())
    }
}
