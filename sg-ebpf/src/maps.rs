//! The maps, as the kernel object declares them. Every key and value type comes from
//! `sg_common::maps`; all maps are pinned by name so that a restarted agent adopts them.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use sg_common::{
    maps::{
        ActivePolicy, Counter, CtEntry, CtKey, CtKey4, FlowConfig, FragKey, FragVerdict, IfaceConfig, IfaceCounterKey,
        IfaceKey, OwnAddrKey, PeerKey, RuleKey, RuleMatch, ServiceKey, Settings, capacity,
    },
    packet::Packet,
    verdict::NUM_REASONS,
};

/// Which policy slot is live (one entry).
#[map]
pub static SG_ACTIVE: Array<ActivePolicy> = Array::pinned(1, 0);

/// (slot, ifindex) → the instance behind the interface and its rule tables.
#[map]
pub static SG_IFACES: HashMap<IfaceKey, IfaceConfig> = HashMap::pinned(2 * capacity::IFACES, 0);

/// (slot, instance, address): the instance's own addresses.
#[map]
pub static SG_OWN_ADDRS: HashMap<OwnAddrKey, u32> = HashMap::pinned(2 * capacity::OWN_ADDRS, 0);

/// (slot, table, peer prefix) → peer class.
#[map]
pub static SG_PEERS: LpmTrie<PeerKey, u32> = LpmTrie::pinned(capacity::PEERS, 0);

/// (slot, table, peer class, protocol, port prefix) → allowing rule.
#[map]
pub static SG_RULES: LpmTrie<RuleKey, RuleMatch> = LpmTrie::pinned(capacity::RULES, 0);

/// Tracked flows. Plain hashes, not LRUs: a full table must refuse new flows rather than
/// silently evict a live one (SPEC §3). Both sized by the agent at load time (`--conntrack-max`).
/// This one holds IPv6 flows.
#[map]
pub static SG_CONNTRACK: HashMap<CtKey, CtEntry> = HashMap::pinned(capacity::CONNTRACK_DEFAULT, BPF_F_NO_PREALLOC);

/// Tracked IPv4 flows, with the compact 16-byte key (see `CtKey4`): preallocated like the table
/// above was, so that IPv4 capacity is reserved. IPv6 flows (and IPv4 flows of interfaces with
/// very large indexes) use `SG_CONNTRACK`, whose entries are allocated as flows arrive, up to
/// the same size: its memory is only spent where IPv6 is used.
#[map]
pub static SG_CONNTRACK4: HashMap<CtKey4, CtEntry> = HashMap::pinned(capacity::CONNTRACK_DEFAULT, 0);

/// First-fragment verdicts, for the fragments that follow. An LRU is right here: losing an old
/// entry only drops the rest of a fragment train, which the sender retransmits.
#[map]
pub static SG_FRAGMENTS: LruHashMap<FragKey, FragVerdict> = LruHashMap::pinned(capacity::FRAGMENTS, 0);

/// (slot, family, protocol, port, address): the node's service addresses (SPEC §3).
#[map]
pub static SG_SERVICES: HashMap<ServiceKey, u32> = HashMap::pinned(2 * capacity::SERVICES, 0);

/// Per-CPU packet and byte counts by interface and verdict reason (EC2 reports per network
/// interface, so an operator can tell which instance is flooded or dropping).
#[map]
pub static SG_IFACE_COUNTERS: PerCpuHashMap<IfaceCounterKey, Counter> =
    // Every reason of every interface, two slots' worth (interfaces of the generation before
    // still count while they go).
    PerCpuHashMap::pinned(2 * capacity::IFACES * NUM_REASONS, 0);

/// Per-CPU packet and byte counts by verdict reason.
#[map]
pub static SG_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(NUM_REASONS, 0);

/// Conntrack timeouts (one entry).
#[map]
pub static SG_SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// Per-CPU scratch space for the parsed headers: too big for the 512-byte BPF stack beside the
/// lookup keys. Not pinned: nothing in it outlives one program run.
#[map]
pub static SG_SCRATCH: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// Hits per rule (packets the rule admitted when evaluated), keyed by the rule's content hash.
#[map]
pub static SG_RULE_COUNTERS: PerCpuHashMap<u64, Counter> = PerCpuHashMap::pinned(capacity::RULE_COUNTERS, 0);

/// Flow-log events for `sg-agent flows` (only written while a reader is attached).
#[map]
pub static SG_FLOW_EVENTS: RingBuf = RingBuf::with_byte_size(capacity::FLOW_EVENTS_BYTES, 0);

/// Flow-log switch and per-CPU token bucket (one slot, per CPU).
#[map]
pub static SG_FLOW_CONFIG: PerCpuArray<FlowConfig> = PerCpuArray::with_max_entries(1, 0);
