//! Typed handles on the pinned maps, from a freshly loaded object or from bpffs pins, and the
//! policy swap: fill the idle slot, flip `SG_ACTIVE` with one update, wait for RCU.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap, HashSet},
    sync::Arc,
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, IterableMap as _, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, lpm_trie::Key,
    },
};
use sg_common::{
    maps::{
        ActivePolicy, Counter, CtEntry, CtKey, IfaceConfig, IfaceCounterKey, IfaceKey, OwnAddrKey, PeerKey, RuleKey,
        RuleMatch, ServiceKey, Settings, names,
    },
    verdict::{NUM_REASONS, Reason},
};

use super::{DatapathError, conntrack_maps::Conntrack, pins::PinLayout, rcu::RcuBarrier};
use crate::compile::Compiled;

/// The agent's handles on every map.
pub struct Maps {
    pub active: Array<MapData, ActivePolicy>,
    pub ifaces: HashMap<MapData, IfaceKey, IfaceConfig>,
    pub own_addrs: HashMap<MapData, OwnAddrKey, u32>,
    pub peers: LpmTrie<MapData, PeerKey, u32>,
    pub rules: LpmTrie<MapData, RuleKey, RuleMatch>,
    /// The conntrack tables (IPv4 compact, IPv6 wide), as one.
    pub conntrack: Conntrack,
    pub counters: PerCpuArray<MapData, Counter>,
    pub settings: Array<MapData, Settings>,
    /// Hits per rule, keyed by `RuleMatch::counter`.
    pub rule_counters: PerCpuHashMap<MapData, u64, Counter>,
    /// The node's service addresses, per slot.
    pub services: HashMap<MapData, ServiceKey, u32>,
    /// Packets and bytes by interface and verdict reason.
    pub iface_counters: PerCpuHashMap<MapData, IfaceCounterKey, Counter>,
    /// What each policy slot holds, when this agent wrote it (`None` after a restart: then it
    /// is read back from the maps once).
    known: [Option<SlotContents>; 2],
    /// The RCU grace period started at the last flip.
    pending_barrier: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// Deletes `gone` and writes `keys → values` in an LPM trie, in batches where the kernel can,
/// entry by entry where it cannot.
fn write_batches<K: aya::Pod, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    name: &str,
    gone: &[Key<K>],
    keys: &[Key<K>],
    values: &[V],
) -> Result<(), DatapathError> {
    use std::os::fd::AsFd as _;
    let fd = trie.map().fd().as_fd();
    if super::batch::delete(fd, gone).is_err() {
        for k in gone {
            // A key already gone (partial batch) is fine.
            let _ = trie.remove(k);
        }
    }
    let fd = trie.map().fd().as_fd();
    if super::batch::update(fd, keys, values).is_err() {
        for (k, v) in keys.iter().zip(values) {
            trie.insert(k, v, 0).map_err(|e| map_error(name, e))?;
        }
    }
    Ok(())
}

/// The entries of one policy slot, without the slot number: what `install` diffs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SlotContents {
    ifaces: StdHashMap<u32, IfaceConfig>,
    own: HashSet<OwnAddrKey>,
    peers: StdHashMap<(u32, PeerKey), u32>,
    rules: StdHashMap<(u32, RuleKey), RuleMatch>,
    services: HashSet<ServiceKey>,
}

impl SlotContents {
    fn of(compiled: &Compiled, ifindexes: &[Option<u32>]) -> SlotContents {
        SlotContents {
            ifaces: compiled
                .ifaces
                .iter()
                .zip(ifindexes)
                .filter_map(|(i, ifindex)| Some(((*ifindex)?, i.config)))
                .collect(),
            own: compiled.own_addrs.iter().map(|k| OwnAddrKey { slot: 0, ..*k }).collect(),
            peers: compiled.peers.iter().map(|p| ((p.prefix_len, PeerKey { slot: 0, ..p.key }), p.class)).collect(),
            rules: compiled
                .rule_entries
                .iter()
                .map(|r| ((r.prefix_len, RuleKey { slot: 0, ..r.key }), r.value))
                .collect(),
            services: compiled.services.iter().map(|k| ServiceKey { slot: 0, ..*k }).collect(),
        }
    }

    /// Reads a slot back from the maps (one pass over each).
    fn read(maps: &Maps, slot: u32) -> SlotContents {
        SlotContents {
            ifaces: maps
                .ifaces
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| k.slot == slot)
                .map(|(k, v)| (k.ifindex, v))
                .collect(),
            own: maps
                .own_addrs
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.slot == slot)
                .map(|k| OwnAddrKey { slot: 0, ..k })
                .collect(),
            peers: maps
                .peers
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| k.data().slot == slot)
                .map(|(k, v)| ((k.prefix_len(), PeerKey { slot: 0, ..k.data() }), v))
                .collect(),
            rules: maps
                .rules
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| k.data().slot == slot)
                .map(|(k, v)| ((k.prefix_len(), RuleKey { slot: 0, ..k.data() }), v))
                .collect(),
            services: maps
                .services
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.slot == slot)
                .map(|k| ServiceKey { slot: 0, ..k })
                .collect(),
        }
    }
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
            conntrack: Conntrack { v4: take(ebpf, names::CONNTRACK4)?, wide: take(ebpf, names::CONNTRACK)? },
            counters: take(ebpf, names::COUNTERS)?,
            settings: take(ebpf, names::SETTINGS)?,
            rule_counters: take(ebpf, names::RULE_COUNTERS)?,
            services: take(ebpf, names::SERVICES)?,
            iface_counters: take(ebpf, names::IFACE_COUNTERS)?,
            known: [None, None],
            pending_barrier: None,
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
            conntrack: Conntrack { v4: open(pins, names::CONNTRACK4)?, wide: open(pins, names::CONNTRACK)? },
            counters: open(pins, names::COUNTERS)?,
            settings: open(pins, names::SETTINGS)?,
            rule_counters: open(pins, names::RULE_COUNTERS)?,
            services: open(pins, names::SERVICES)?,
            iface_counters: open(pins, names::IFACE_COUNTERS)?,
            known: [None, None],
            pending_barrier: None,
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

    /// Makes `compiled` live as `generation`: writes its entries into the slot no packet reads,
    /// then flips `SG_ACTIVE` to it — the one update that changes what packets see. Returns as
    /// soon as the flip is done (the new generation is live).
    ///
    /// A packet that read the old slot number just before the flip may still be looking up
    /// old-slot entries, so the old slot must not be rewritten until an RCU grace period has
    /// passed. That wait starts in the background at the flip, and the next install waits for
    /// it before touching the slot (normally long finished by then).
    ///
    /// Only the difference between what the idle slot holds (the generation before the live
    /// one) and `compiled` is written: a membership change is a handful of map updates, not a
    /// rewrite of every rule. `ifindexes[i]` is the interface index of `compiled.ifaces[i]` (`None`:
    /// the interface does not exist, and its instance gets no entry).
    pub fn install(
        &mut self,
        compiled: &Compiled,
        ifindexes: &[Option<u32>],
        generation: u64,
        barrier: &Arc<RcuBarrier>,
    ) -> Result<u32, DatapathError> {
        if let Some(pending) = self.pending_barrier.take() {
            pending
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("RCU barrier thread panicked")))
                .map_err(DatapathError::RcuBarrier)?;
        }
        let slot = match self.live()? {
            Some(live) => 1 - (live.slot & 1),
            None => 0,
        };
        let old = match self.known.get_mut(slot as usize).and_then(Option::take) {
            Some(known) => known,
            None => SlotContents::read(self, slot),
        };
        let new = SlotContents::of(compiled, ifindexes);
        // Whatever happens below, the slot's contents are no longer known for sure.
        self.write_diff(slot, &old, &new)?;
        let active = ActivePolicy { slot, valid: 1, generation };
        self.active.set(0, active, 0).map_err(|e| map_error(names::ACTIVE, e))?;
        if let Some(known) = self.known.get_mut(slot as usize) {
            *known = Some(new);
        }
        let barrier = Arc::clone(barrier);
        self.pending_barrier = Some(std::thread::spawn(move || barrier.wait()));
        Ok(slot)
    }

    /// Waits for the RCU grace period after the last flip (tests that inspect the old slot,
    /// shutdown).
    pub fn settle(&mut self) -> Result<(), DatapathError> {
        match self.pending_barrier.take() {
            Some(pending) => pending
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("RCU barrier thread panicked")))
                .map_err(DatapathError::RcuBarrier),
            None => Ok(()),
        }
    }

    fn write_diff(&mut self, slot: u32, old: &SlotContents, new: &SlotContents) -> Result<(), DatapathError> {
        for ifindex in old.ifaces.keys().filter(|k| !new.ifaces.contains_key(k)) {
            self.ifaces.remove(&IfaceKey { slot, ifindex: *ifindex }).map_err(|e| map_error(names::IFACES, e))?;
        }
        for (ifindex, cfg) in &new.ifaces {
            if old.ifaces.get(ifindex) != Some(cfg) {
                self.ifaces
                    .insert(IfaceKey { slot, ifindex: *ifindex }, cfg, 0)
                    .map_err(|e| map_error(names::IFACES, e))?;
            }
        }
        for key in old.own.difference(&new.own) {
            self.own_addrs.remove(&OwnAddrKey { slot, ..*key }).map_err(|e| map_error(names::OWN_ADDRS, e))?;
        }
        for key in new.own.difference(&old.own) {
            self.own_addrs.insert(OwnAddrKey { slot, ..*key }, 1, 0).map_err(|e| map_error(names::OWN_ADDRS, e))?;
        }
        for key in old.services.difference(&new.services) {
            self.services.remove(&ServiceKey { slot, ..*key }).map_err(|e| map_error(names::SERVICES, e))?;
        }
        for key in new.services.difference(&old.services) {
            self.services.insert(ServiceKey { slot, ..*key }, 1, 0).map_err(|e| map_error(names::SERVICES, e))?;
        }
        // Peers and rules are the bulk (tens of thousands of entries for a large policy):
        // written in batches, one syscall per few thousand entries.
        let gone: Vec<Key<PeerKey>> = old
            .peers
            .keys()
            .filter(|k| !new.peers.contains_key(k))
            .map(|(len, key)| Key::new(*len, PeerKey { slot, ..*key }))
            .collect();
        let (keys, values): (Vec<Key<PeerKey>>, Vec<u32>) = new
            .peers
            .iter()
            .filter(|(k, v)| old.peers.get(k) != Some(v))
            .map(|((len, key), class)| (Key::new(*len, PeerKey { slot, ..*key }), *class))
            .unzip();
        write_batches(&mut self.peers, names::PEERS, &gone, &keys, &values)?;
        let gone: Vec<Key<RuleKey>> = old
            .rules
            .keys()
            .filter(|k| !new.rules.contains_key(k))
            .map(|(len, key)| Key::new(*len, RuleKey { slot, ..*key }))
            .collect();
        let (keys, values): (Vec<Key<RuleKey>>, Vec<RuleMatch>) = new
            .rules
            .iter()
            .filter(|(k, v)| old.rules.get(k) != Some(v))
            .map(|((len, key), value)| (Key::new(*len, RuleKey { slot, ..*key }), *value))
            .unzip();
        write_batches(&mut self.rules, names::RULES, &gone, &keys, &values)?;
        Ok(())
    }

    /// Whether `slot` holds exactly the entries `compiled` (with `ifindexes`) would write.
    pub fn slot_holds(&self, slot: u32, compiled: &Compiled, ifindexes: &[Option<u32>]) -> Result<bool, DatapathError> {
        Ok(SlotContents::read(self, slot) == SlotContents::of(compiled, ifindexes))
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

    /// Packets and bytes per interface and verdict reason, summed over CPUs (reasons with no
    /// packet are absent).
    pub fn iface_counters(&self) -> BTreeMap<u32, BTreeMap<&'static str, Counter>> {
        let mut out: BTreeMap<u32, BTreeMap<&'static str, Counter>> = BTreeMap::new();
        for (key, per_cpu) in self.iface_counters.iter().filter_map(Result::ok) {
            let Some(reason) = Reason::from_u32(key.reason) else { continue };
            let sum = out.entry(key.ifindex).or_default().entry(reason.name()).or_default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
        }
        out
    }

    /// Forgets the counters of interface `ifindex` (detached: its index may be reused).
    pub fn remove_iface_counters(&mut self, ifindex: u32) {
        let keys: Vec<IfaceCounterKey> =
            self.iface_counters.keys().filter_map(Result::ok).filter(|k| k.ifindex == ifindex).collect();
        for k in keys {
            let _ = self.iface_counters.remove(&k);
        }
    }

    /// Rule hits by counter key, summed over CPUs.
    pub fn rule_hits(&self) -> StdHashMap<u64, Counter> {
        let mut out = StdHashMap::new();
        for (key, per_cpu) in self.rule_counters.iter().filter_map(Result::ok) {
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
            }
            out.insert(key, sum);
        }
        out
    }

    /// Removes the hit counters of rules that are in neither of `keep`'s generations.
    pub fn prune_rule_counters(&mut self, keep: &HashSet<u64>) {
        let stale: Vec<u64> = self.rule_counters.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
        for k in stale {
            let _ = self.rule_counters.remove(&k);
        }
    }

    /// Flow-log events skipped because a CPU's budget was spent.
    pub fn flow_events_skipped(&self) -> u64 {
        self.counters
            .get(&sg_common::verdict::COUNTER_FLOW_EVENTS_SKIPPED, 0)
            .map(|per_cpu| per_cpu.iter().map(|c| c.packets).sum())
            .unwrap_or(0)
    }

    /// Every conntrack entry, both tables (a snapshot; the datapath keeps changing them).
    pub fn conntrack_entries(&self) -> Vec<(CtKey, CtEntry)> {
        self.conntrack.entries()
    }

    /// Removes the tracked flows of interface `ifindex` (one that was detached or vanished:
    /// no program reads them any more, and an index may be reused by a later interface).
    /// Returns how many.
    pub fn remove_conntrack_of(&mut self, ifindex: u32) -> usize {
        let keys: Vec<CtKey> =
            self.conntrack_entries().into_iter().filter(|(k, _)| k.ifindex == ifindex).map(|(k, _)| k).collect();
        self.conntrack.remove_all(&keys)
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
