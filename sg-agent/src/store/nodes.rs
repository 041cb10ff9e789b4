//! Agents' records in the store, and `fleet status`.
//!
//! Each agent keeps two keys under `<prefix>/nodes/<name>/`: `state`, what it enforces (the
//! store revision its generation was built from, the generation, when, its version, whether
//! the store's content is valid for it), written after every outcome; and `alive`, put on a
//! lease the agent keeps alive. The record stays when the agent goes away and the lease
//! expires, so `fleet status` can say whose lease expired and what it was last enforcing.
//!
//! Records are written only after something happened to the agent's generation (never merely
//! because the watch moved on, e.g. over other agents' records), so agents never wake each
//! other in a loop.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    Backoff, ErrorClass, Kv, Layout, StoreError, StoreOptions, follow::StoreHealth, layout::KeyRole, read_range,
};
use crate::clock;

/// `<prefix>/nodes/<name>/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub node: String,
    /// The store revision whose objects the generation in force was built from (0: none yet).
    pub revision: i64,
    /// The generation built from the store (none yet: whatever was pinned stays in force).
    pub generation: Option<u64>,
    /// The store revision the agent has read up to.
    pub seen_revision: i64,
    /// The fingerprint of the objects the generation in force was built from.
    #[serde(default)]
    pub digest: Option<String>,
    /// When this record was written (RFC 3339, UTC) and the same in Unix seconds.
    pub time: String,
    pub unix_time: u64,
    /// The agent's version.
    pub version: String,
    /// Whether the store's content (as of `seen_revision`) is a valid document.
    pub content_valid: bool,
    /// Its first problems, named by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Problems a record carries (status and the log have more).
const RECORD_PROBLEMS: usize = 5;

impl NodeState {
    pub fn now(node: &str, health: &StoreHealth) -> NodeState {
        let unix_time = clock::unix_seconds(SystemTime::now());
        NodeState {
            node: node.to_owned(),
            revision: health.applied_revision,
            generation: health.generation,
            seen_revision: health.revision,
            digest: health.applied_digest.clone(),
            time: clock::rfc3339(unix_time),
            unix_time,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            content_valid: health.content_valid,
            problems: health.problems.iter().take(RECORD_PROBLEMS).cloned().collect(),
        }
    }
}

/// `<prefix>/nodes/<name>/alive`, on the lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Alive {
    lease: String,
    since: String,
    pid: u32,
}

/// Keeps this node's records in the store: the `alive` key on a lease kept alive (re-granted
/// when it expired while the agent was cut off or stopped), and the latest `state` from
/// `states` (written again after every reconnection, in case a write was lost). Returns when
/// `states`' sender is dropped.
pub async fn publish(options: StoreOptions, node: String, ttl: i64, mut states: watch::Receiver<Option<NodeState>>) {
    let tls = options.tls.is_some();
    let layout = options.layout.clone();
    let (state_key, alive_key) = (layout.node_state_key(&node), layout.node_alive_key(&node));
    let period = Duration::from_millis(u64::try_from(ttl).unwrap_or(10) * 1000 / 3);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut client: Option<Client> = None;
    let mut lease: Option<i64> = None;
    loop {
        if states.has_changed().is_err() {
            return;
        }
        let mut c = match &client {
            Some(c) => c.clone(),
            None => match options.connect().await {
                Ok(c) => {
                    client = Some(c.clone());
                    c
                }
                Err(e) => {
                    log::debug!("node record: {e}");
                    tokio::time::sleep(backoff.next_wait()).await;
                    continue;
                }
            },
        };
        let id = match lease {
            Some(id) => id,
            None => match grant(&mut c, ttl, &alive_key).await {
                Ok(id) => {
                    log::info!("registered as node {node} in the store (lease {id:x}, {ttl} s)");
                    lease = Some(id);
                    id
                }
                Err(e) => {
                    report(&StoreError::call("writing this node's record (lease and alive key)", &e, tls));
                    tokio::time::sleep(backoff.next_wait()).await;
                    continue;
                }
            },
        };
        let (mut keeper, mut responses) = match c.lease_keep_alive(id).await {
            Ok(pair) => pair,
            Err(etcd_client::Error::LeaseKeepAliveError(why)) => {
                log::warn!("the store lost this node's lease ({why}); registering again");
                lease = None;
                continue;
            }
            Err(e) => {
                log::debug!("node record: {}", StoreError::call("keeping the lease alive", &e, tls));
                tokio::time::sleep(backoff.next_wait()).await;
                continue;
            }
        };
        // Whatever was written before the connection broke may be lost: write the latest again.
        states.mark_changed();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = states.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let state = states.borrow_and_update().clone();
                    let Some(state) = state else { continue };
                    let value = serde_json::to_string(&state).unwrap_or_default();
                    if let Err(e) = c.put(state_key.as_str(), value, None).await {
                        report(&StoreError::call("writing this node's record (state)", &e, tls));
                        states.mark_changed();
                        break;
                    }
                    backoff.reset();
                }
                _ = tick.tick() => {
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(period, responses.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                        Ok(Ok(Some(_))) => {
                            log::warn!("this node's lease expired (the agent was cut off or stopped); registering again");
                            lease = None;
                            break;
                        }
                        _ => break,
                    }
                }
            }
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// A failed write of the node's record. The follower reports the store's reachability; what
/// only the record meets — a permission missing from this node's role — is a warning.
fn report(e: &StoreError) {
    if e.class() == Some(ErrorClass::Denied) {
        log::warn!("{e}");
    } else {
        log::debug!("{e}");
    }
}

async fn grant(c: &mut Client, ttl: i64, alive_key: &str) -> Result<i64, etcd_client::Error> {
    let id = c.lease_grant(ttl, None).await?.id();
    let since = clock::rfc3339(clock::unix_seconds(SystemTime::now()));
    let alive = Alive { lease: format!("{id:x}"), since, pid: std::process::id() };
    let value = serde_json::to_string(&alive).unwrap_or_default();
    c.put(alive_key, value, Some(PutOptions::new().with_lease(id))).await?;
    Ok(id)
}

/// Where a node stands against the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Enforces the store's current objects.
    Current,
    /// Enforces an older revision of the objects.
    Behind,
    /// The store's content is invalid; the node keeps its last good generation.
    Invalid,
    /// Cannot tell (its revision is older than the compacted history).
    Unknown,
}

/// One node in `fleet status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    /// Whether its lease is alive (an agent runs and reaches the store).
    pub alive: bool,
    pub standing: Standing,
    /// Why, in words.
    pub detail: String,
    /// Its last record, if it wrote one.
    pub state: Option<NodeState>,
}

/// `fleet status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetStatus {
    pub store: String,
    pub prefix: String,
    /// The store's revision when read.
    pub revision: i64,
    /// The latest revision that wrote an object (deletions leave no trace here).
    pub objects_revision: i64,
    pub objects: usize,
    pub nodes: Vec<NodeReport>,
}

/// Reads every node's record and compares it with the store's objects.
pub async fn fleet_status(client: &Client, options: &StoreOptions) -> Result<FleetStatus, StoreError> {
    let tls = options.tls.is_some();
    let layout = &options.layout;
    let (revision, records) = read_range(client, &layout.nodes_root(), None, false, tls).await?;
    let (_, keys) = read_range(client, &layout.root(), Some(revision), true, tls).await?;
    let now: BTreeMap<&str, i64> =
        keys.iter().filter(|kv| is_object(layout, kv)).map(|kv| (kv.key.as_str(), kv.mod_revision)).collect();
    let objects_revision = now.values().copied().max().unwrap_or(0);

    let mut states: BTreeMap<String, (Option<NodeState>, bool)> = BTreeMap::new();
    for kv in &records {
        let KeyRole::Node(node) = layout.role(&kv.key) else { continue };
        let entry = states.entry(node.to_owned()).or_default();
        if kv.key == layout.node_state_key(node) {
            entry.0 = serde_json::from_slice(&kv.value).ok();
        } else if kv.key == layout.node_alive_key(node) {
            entry.1 = true;
        }
    }
    // Objects as of each revision a node enforces (one read per distinct revision).
    let mut then: BTreeMap<i64, Result<BTreeSet<String>, String>> = BTreeMap::new();
    let mut nodes = Vec::new();
    for (node, (state, alive)) in states {
        let (standing, mut detail) = match &state {
            None => (Standing::Unknown, "no record yet".to_owned()),
            Some(s) if !s.content_valid => (
                Standing::Invalid,
                format!(
                    "the store's content is invalid as of revision {} ({}); it enforces revision {}",
                    s.seen_revision,
                    s.problems.first().map_or("see its status", String::as_str),
                    s.revision
                ),
            ),
            Some(s) if s.revision >= revision => (Standing::Current, format!("at revision {}", s.revision)),
            Some(s) => match now.iter().filter(|(_, m)| **m > s.revision).count() {
                0 => {
                    if let std::collections::btree_map::Entry::Vacant(entry) = then.entry(s.revision) {
                        let keys = match read_range(client, &layout.root(), Some(s.revision), true, tls).await {
                            Ok((_, kvs)) => {
                                Ok(kvs.iter().filter(|kv| is_object(layout, kv)).map(|kv| kv.key.clone()).collect())
                            }
                            Err(e) if e.class() == Some(ErrorClass::Compacted) => Err(e.to_string()),
                            Err(e) => return Err(e),
                        };
                        entry.insert(keys);
                    }
                    match then.get(&s.revision) {
                        Some(Ok(keys)) => match keys.iter().filter(|k| !now.contains_key(k.as_str())).count() {
                            0 => (Standing::Current, format!("at revision {} (no object changed since)", s.revision)),
                            n => (Standing::Behind, format!("at revision {}: {n} objects deleted since", s.revision)),
                        },
                        _ => (
                            Standing::Unknown,
                            format!(
                                "at revision {}, older than the compacted history: deletions since cannot be seen",
                                s.revision
                            ),
                        ),
                    }
                }
                n => (Standing::Behind, format!("at revision {}: {n} objects written since", s.revision)),
            },
        };
        if !alive {
            detail.push_str("; lease expired: no agent is running there or it cannot reach the store");
        }
        nodes.push(NodeReport { node, alive, standing, detail, state });
    }
    Ok(FleetStatus {
        store: options.url(),
        prefix: layout.prefix().to_owned(),
        revision,
        objects_revision,
        objects: now.len(),
        nodes,
    })
}

fn is_object(layout: &Layout, kv: &Kv) -> bool {
    matches!(layout.role(&kv.key), KeyRole::Object(..))
}
