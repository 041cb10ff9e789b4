//! The conntrack tables as one: IPv4 flows in `SG_CONNTRACK4` (compact 16-byte keys,
//! preallocated), IPv6 flows in `SG_CONNTRACK` (full keys, allocated on demand). Callers see
//! full [`CtKey`]s; which table a key lives in is decided here and in the kernel by the same
//! rule ([`CtKey4::of`]).

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{HashMap, IterableMap as _, MapData, MapError};
use sg_common::maps::{CtEntry, CtKey, CtKey4};

use super::batch;

pub struct Conntrack {
    pub v4: HashMap<MapData, CtKey4, CtEntry>,
    pub wide: HashMap<MapData, CtKey, CtEntry>,
}

/// A table's size and memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableSize {
    pub capacity: u32,
    /// Kernel memory charged for it (`memlock` in fdinfo): the whole table if preallocated, the
    /// element cache otherwise.
    pub memory_bytes: Option<u64>,
}

impl Conntrack {
    /// Every entry, as full keys (a snapshot; the datapath keeps changing the tables). Read in
    /// batches; entry by entry on kernels without batch lookups.
    pub fn entries(&self) -> Vec<(CtKey, CtEntry)> {
        let mut out = Vec::new();
        let batched = batch::for_each(self.v4.map().fd().as_fd(), |k: &CtKey4, v: &CtEntry| out.push((k.widen(), *v)));
        if batched.is_err() {
            out = self.v4.iter().filter_map(Result::ok).map(|(k, v)| (k.widen(), v)).collect();
        }
        let batched = batch::for_each(self.wide.map().fd().as_fd(), |k: &CtKey, v: &CtEntry| out.push((*k, *v)));
        if batched.is_err() {
            out.extend(self.wide.iter().filter_map(Result::ok));
        }
        out
    }

    pub fn get(&self, key: &CtKey) -> Result<CtEntry, MapError> {
        match CtKey4::of(key) {
            Some(compact) => self.v4.get(&compact, 0),
            None => self.wide.get(key, 0),
        }
    }

    pub fn insert(&mut self, key: &CtKey, entry: CtEntry) -> Result<(), MapError> {
        match CtKey4::of(key) {
            Some(compact) => self.v4.insert(compact, entry, 0),
            None => self.wide.insert(key, entry, 0),
        }
    }

    pub fn remove(&mut self, key: &CtKey) -> Result<(), MapError> {
        match CtKey4::of(key) {
            Some(compact) => self.v4.remove(&compact),
            None => self.wide.remove(key),
        }
    }

    /// Removes `keys` (batched per table where the kernel can); returns how many went.
    pub fn remove_all(&mut self, keys: &[CtKey]) -> usize {
        let (v4, wide): (Vec<CtKey>, Vec<CtKey>) = keys.iter().partition(|k| CtKey4::of(k).is_some());
        let compact: Vec<CtKey4> = v4.iter().filter_map(CtKey4::of).collect();
        let mut removed = 0;
        if batch::delete(self.v4.map().fd().as_fd(), &compact).is_ok() {
            removed += compact.len();
        } else {
            removed += compact.iter().filter(|k| self.v4.remove(k).is_ok()).count();
        }
        if batch::delete(self.wide.map().fd().as_fd(), &wide).is_ok() {
            removed += wide.len();
        } else {
            removed += wide.iter().filter(|k| self.wide.remove(k).is_ok()).count();
        }
        removed
    }

    /// The IPv4 and the IPv6 table.
    pub fn sizes(&self) -> (TableSize, TableSize) {
        (size_of(self.v4.map()), size_of(self.wide.map()))
    }
}

fn size_of(map: &MapData) -> TableSize {
    let capacity = map.info().map(|i| i.max_entries()).unwrap_or(0);
    let fd = map.fd().as_fd().as_raw_fd();
    let memory_bytes = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok()));
    TableSize { capacity, memory_bytes }
}
