//! `fleet apply`: write a document into the store without ever leaving it invalid.
//!
//! 1. The whole resulting document — the store's objects with the file's objects put over
//!    them (and, with `--prune`, without the objects the file does not have) — is validated
//!    like a file before anything is written.
//! 2. The writes are ordered so that what is referenced comes before what references it:
//!    prefix lists, then groups (a group before the groups that reference it), then
//!    instances; deletions last, in the opposite order.
//! 3. They are cut into transactions within etcd's limits (`--max-txn-ops`, 128 by default,
//!    counting the guard's write; `--max-request-bytes`, 1.5 MiB). When there is more than
//!    one, the document after each transaction is validated too; a transaction whose result
//!    would be invalid (two instances trading an address, a cycle of new group references) is
//!    merged with the next, so that every state the store passes through is a valid document.
//!    A step that cannot be made small enough is refused before anything is written.
//! 4. Every transaction compares, and then updates, the writers' guard key `<prefix>/writer`
//!    (its mod revision must be the one this writer read or last wrote), and compares that no
//!    object key changed since (the mod revision of each kind's range). Two writers therefore
//!    cannot interleave: the second one's next transaction fails, and it stops, leaving the
//!    valid document its last transaction made. A writer that dies between transactions
//!    leaves a valid document too; running the apply again finishes the job.
//!
//! Agents may see a multi-transaction write as several generations (each valid), or as one
//! when the transactions arrive while they apply (bursts coalesce).

use std::{collections::BTreeSet, time::SystemTime};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::{
    ErrorClass, Snapshot, StoreError, StoreOptions,
    content::Content,
    layout::{Kind, Layout},
};
use crate::{
    clock,
    policy::{
        json::{Json, field},
        native,
    },
};

/// etcd's request limits the writes are cut to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Operations per transaction (etcd's `--max-txn-ops`, 128 by default); the guard's write
    /// is one of them.
    pub ops: usize,
    /// Bytes per request (etcd's `--max-request-bytes`, 1.5 MiB by default).
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { ops: 128, bytes: 1_572_864 }
    }
}

/// Room per request for the compares, the guard's write and protobuf framing.
const REQUEST_OVERHEAD: usize = 8 << 10;
/// Framing per operation beyond its key and value.
const OP_OVERHEAD: usize = 16;

/// One write: a key and its new value, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub key: String,
    /// `None`: delete.
    pub value: Option<String>,
}

impl Op {
    fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, String::len) + OP_OVERHEAD
    }
}

/// What `fleet apply` will do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Transactions in order; each leaves a valid document.
    pub transactions: Vec<Vec<Op>>,
    pub added: usize,
    pub changed: usize,
    pub deleted: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }
}

/// The store's objects after writing `file` over `current` (without what `file` lacks, with
/// `prune`).
pub fn merge(current: &Content, file: &Content, prune: bool) -> Content {
    let mut target = if prune { Content::default() } else { current.without_unknown() };
    for (kind, id, object) in file.objects() {
        target.put(kind, id, object.text.clone());
    }
    if !prune {
        target.keep_unknown(current);
    }
    target
}

/// Plans the writes from `current` to `target` (which must be valid).
pub fn plan(layout: &Layout, current: &Content, target: &Content, limits: Limits) -> Result<Plan, StoreError> {
    let mut plan = Plan::default();
    let mut puts: Vec<(Kind, &str, &str)> = Vec::new();
    for (kind, id, object) in target.objects() {
        match current.get(kind, id) {
            None => plan.added += 1,
            Some(old) if old.text != object.text => plan.changed += 1,
            Some(_) => continue,
        }
        puts.push((kind, id, object.text.as_str()));
    }
    let deletions = |kind: Kind| -> Vec<Op> {
        current
            .objects()
            .filter(|(k, id, _)| *k == kind && target.get(*k, id).is_none())
            .map(|(k, id, _)| Op { key: layout.object_key(k, id), value: None })
            .collect()
    };
    let put =
        |(kind, id, text): (Kind, &str, &str)| Op { key: layout.object_key(kind, id), value: Some(text.to_owned()) };
    // Nothing references an instance: deleting one first only frees its addresses and
    // interface for others. Then what is referenced before what references it; groups and
    // prefix lists go once nothing references them any more.
    let mut ops = deletions(Kind::Instance);
    ops.extend(puts.iter().filter(|(k, _, _)| *k == Kind::PrefixList).copied().map(put));
    ops.extend(order_groups(&puts).into_iter().map(put));
    ops.extend(order_instances(current, &puts).into_iter().map(put));
    ops.extend(deletions(Kind::Group));
    ops.extend(deletions(Kind::PrefixList));
    plan.deleted = ops.iter().filter(|op| op.value.is_none()).count();
    for key in current.unknown_keys().filter(|k| !target.unknown_keys().any(|t| t == *k)) {
        ops.push(Op { key: key.to_owned(), value: None });
        plan.deleted += 1;
    }
    if ops.is_empty() {
        return Ok(plan);
    }

    let per_txn = limits.ops.saturating_sub(1).max(1);
    let budget = limits.bytes.saturating_sub(REQUEST_OVERHEAD);
    if let Some(op) = ops.iter().find(|op| op.bytes() > budget) {
        return Err(StoreError::TooLarge(format!(
            "{} is {} bytes, more than etcd's request limit of {} bytes allows (--max-request-bytes)",
            op.key,
            op.bytes(),
            limits.bytes
        )));
    }
    let mut chunks: Vec<Vec<Op>> = Vec::new();
    let mut chunk: Vec<Op> = Vec::new();
    let mut chunk_bytes = 0;
    for op in ops {
        if !chunk.is_empty() && (chunk.len() == per_txn || chunk_bytes + op.bytes() > budget) {
            chunks.push(std::mem::take(&mut chunk));
            chunk_bytes = 0;
        }
        chunk_bytes += op.bytes();
        chunk.push(op);
    }
    chunks.push(chunk);

    // Every state between transactions must be valid: merge a chunk whose result is not with
    // the next one. The last state is `target`, valid, so this ends.
    let mut state = current.clone();
    let mut i = 0;
    while i < chunks.len() {
        let mut next = state.clone();
        for op in chunks.get(i).into_iter().flatten() {
            write_op(layout, &mut next, op);
        }
        let last = i + 1 == chunks.len();
        match next.validate(layout) {
            Err(invalid) if !last => {
                let follower = chunks.remove(i + 1);
                let Some(merged) = chunks.get_mut(i) else { break };
                merged.extend(follower);
                let bytes: usize = merged.iter().map(Op::bytes).sum();
                if merged.len() > per_txn || bytes > budget {
                    return Err(StoreError::TooLarge(format!(
                        "this change cannot be cut into transactions that each leave a valid document within \
                         etcd's limits ({} operations, {} bytes per transaction); a step would need {} operations \
                         and {bytes} bytes. Apply it in smaller parts. The state in between would be invalid:\n{invalid}",
                        limits.ops,
                        limits.bytes,
                        merged.len() + 1
                    )));
                }
            }
            _ => {
                state = next;
                i += 1;
            }
        }
    }
    plan.transactions = chunks;
    Ok(plan)
}

/// Ids in an order where each comes after the ids it depends on (depth first; a cycle keeps
/// its order, and the planner merges into one transaction what must go together).
fn depth_first<'a>(items: &[(&'a str, Vec<&'a str>)]) -> Vec<&'a str> {
    fn visit<'a>(
        id: &'a str,
        items: &[(&'a str, Vec<&'a str>)],
        placed: &mut Vec<&'a str>,
        visiting: &mut BTreeSet<&'a str>,
    ) {
        if !visiting.insert(id) {
            return;
        }
        if let Some((_, deps)) = items.iter().find(|(i, _)| *i == id) {
            for dep in deps {
                visit(dep, items, placed, visiting);
            }
        }
        placed.push(id);
    }
    let mut placed = Vec::new();
    let mut visiting = BTreeSet::new();
    for (id, _) in items {
        visit(id, items, &mut placed, &mut visiting);
    }
    placed
}

/// The groups being put, each after the groups it references that are being put too.
fn order_groups<'a>(puts: &[(Kind, &'a str, &'a str)]) -> Vec<(Kind, &'a str, &'a str)> {
    let groups: Vec<(Kind, &str, &str)> = puts.iter().filter(|(k, _, _)| *k == Kind::Group).copied().collect();
    let ids: BTreeSet<&str> = groups.iter().map(|(_, id, _)| *id).collect();
    let deps: Vec<(&str, Vec<&str>)> = groups
        .iter()
        .map(|(_, id, text)| {
            let refs = group_references(text);
            (*id, ids.iter().copied().filter(|g| refs.iter().any(|r| r == g)).collect())
        })
        .collect();
    depth_first(&deps).into_iter().filter_map(|id| groups.iter().find(|(_, g, _)| *g == id).copied()).collect()
}

/// The instances being put, each after the instances being put that give up an address it
/// takes (an address moving from one instance to another).
fn order_instances<'a>(current: &Content, puts: &[(Kind, &'a str, &'a str)]) -> Vec<(Kind, &'a str, &'a str)> {
    let instances: Vec<(Kind, &str, &str)> = puts.iter().filter(|(k, _, _)| *k == Kind::Instance).copied().collect();
    let changing: BTreeSet<&str> = instances.iter().map(|(_, id, _)| *id).collect();
    let mut owner: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for (kind, id, object) in current.objects() {
        if kind == Kind::Instance
            && let Some(id) = changing.get(id)
        {
            for address in string_list(&object.text, "addresses") {
                owner.insert(address, id);
            }
        }
    }
    let deps: Vec<(&str, Vec<&str>)> = instances
        .iter()
        .map(|(_, id, text)| {
            let from: Vec<&str> = string_list(text, "addresses")
                .iter()
                .filter_map(|a| owner.get(a).copied())
                .filter(|o| o != id)
                .collect();
            (*id, from)
        })
        .collect();
    depth_first(&deps).into_iter().filter_map(|id| instances.iter().find(|(_, i, _)| *i == id).copied()).collect()
}

/// The strings of an object's list field.
fn string_list(text: &str, key: &str) -> Vec<String> {
    let Ok(Json::Object(fields)) = native::parse_json(text) else { return Vec::new() };
    match field(&fields, key) {
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Json::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The groups a group's rules reference.
fn group_references(text: &str) -> Vec<String> {
    let Ok(Json::Object(fields)) = native::parse_json(text) else { return Vec::new() };
    let mut out = Vec::new();
    for direction in ["ingress", "egress"] {
        let Some(Json::Array(rules)) = field(&fields, direction) else { continue };
        for rule in rules {
            let Json::Object(rule) = rule else { continue };
            if let Some(Json::Array(groups)) = field(rule, "groups") {
                out.extend(groups.iter().filter_map(|g| match g {
                    Json::String(id) => Some(id.clone()),
                    _ => None,
                }));
            }
        }
    }
    out
}

fn write_op(layout: &Layout, content: &mut Content, op: &Op) {
    match &op.value {
        Some(value) => {
            content.put_key(layout, &op.key, value.as_bytes(), 0);
        }
        None => {
            content.delete_key(layout, &op.key);
        }
    }
}

/// The writers' guard's value: who wrote last, for an operator reading the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Guard {
    writer: String,
    /// Unique per transaction: read back when a transaction's outcome is unknown.
    token: String,
    transaction: String,
    time: String,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub transactions: usize,
    /// The store revision after the last transaction.
    pub revision: i64,
}

/// Writes a plan made against `base`, transaction by transaction, each guarded (see the module
/// documentation).
pub async fn execute(
    client: &mut Client,
    options: &StoreOptions,
    base: &Snapshot,
    plan: &Plan,
) -> Result<Written, StoreError> {
    let tls = options.tls.is_some();
    let layout = &options.layout;
    let guard_key = layout.writer_key();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
    let writer = format!("sg-agent fleet apply on {host} (pid {})", std::process::id());
    let started = clock::monotonic_ns();
    let mut guard_revision = base.writer_revision;
    let mut objects_revision = base.revision;
    let total = plan.transactions.len();
    for (i, ops) in plan.transactions.iter().enumerate() {
        let token = format!("{host}/{}/{started}/{i}", std::process::id());
        let guard = Guard {
            writer: writer.clone(),
            token: token.clone(),
            transaction: format!("{} of {total}", i + 1),
            time: clock::rfc3339(clock::unix_seconds(SystemTime::now())),
        };
        let mut compares = vec![Compare::mod_revision(guard_key.as_str(), CompareOp::Equal, guard_revision)];
        for kind in Kind::ALL {
            compares.push(
                Compare::mod_revision(layout.kind_root(kind), CompareOp::Less, objects_revision + 1).with_prefix(),
            );
        }
        let mut writes: Vec<TxnOp> = ops
            .iter()
            .map(|op| match &op.value {
                Some(value) => TxnOp::put(op.key.as_str(), value.as_str(), None),
                None => TxnOp::delete(op.key.as_str(), None),
            })
            .collect();
        writes.push(TxnOp::put(guard_key.as_str(), serde_json::to_string(&guard).unwrap_or_default(), None));
        let txn = Txn::new().when(compares).and_then(writes);
        let attempt = || {
            let (mut client, txn) = (client.clone(), txn.clone());
            async move { client.txn(txn).await }
        };
        let done = match super::retry_unreachable(attempt).await {
            Ok(response) if response.succeeded() => response.header().map_or(0, |h| h.revision()),
            Ok(_) => {
                return Err(StoreError::Conflict(format!(
                    "the store changed since revision {} was read (another writer?); {i} of {total} transactions \
                     were written, each leaving a valid document; run fleet apply again",
                    base.revision
                )));
            }
            Err(e) if super::classify(&e) == ErrorClass::Ambiguous => {
                // The transaction may or may not have happened: the guard says.
                match written_by(client, &guard_key, &token, tls).await {
                    Some(revision) => revision,
                    None => {
                        return Err(StoreError::call(
                            format!("transaction {} of {total} (its outcome is unknown: run fleet apply again)", i + 1),
                            &e,
                            tls,
                        ));
                    }
                }
            }
            Err(e) => {
                return Err(StoreError::call(
                    format!("transaction {} of {total} ({i} written before it, each leaving a valid document)", i + 1),
                    &e,
                    tls,
                ));
            }
        };
        guard_revision = done;
        objects_revision = done;
    }
    Ok(Written { transactions: total, revision: objects_revision })
}

/// The guard's mod revision if its last write carries `token`.
async fn written_by(client: &mut Client, guard_key: &str, token: &str, tls: bool) -> Option<i64> {
    for _ in 0..5 {
        match client.get(guard_key, None).await {
            Ok(response) => {
                let kv = response.kvs().first()?;
                let guard: Guard = serde_json::from_slice(kv.value()).ok()?;
                return (guard.token == token).then_some(kv.mod_revision());
            }
            Err(e) => {
                log::debug!("reading the writers' guard: {}", StoreError::call("reading", &e, tls));
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    fn layout() -> Layout {
        Layout::new("/sg/v1")
    }

    fn instances(n: usize, group: &str) -> String {
        let items: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"id":"i-{i}","node":"n{}","addresses":["10.{}.{}.{}"],"security_groups":["{group}"]}}"#,
                    i % 3,
                    i / 65536,
                    i / 256 % 256,
                    i % 256
                )
            })
            .collect();
        items.join(",")
    }

    fn apply_all(layout: &Layout, mut content: Content, plan: &Plan) -> Vec<Content> {
        let mut states = Vec::new();
        for txn in &plan.transactions {
            for op in txn {
                write_op(layout, &mut content, op);
            }
            states.push(content.clone());
        }
        states
    }

    #[test]
    fn referenced_objects_are_written_first_and_every_step_is_valid() {
        let l = layout();
        let current = Content::default();
        let file = Content::of_document(&format!(
            r#"{{"security_groups":[
                {{"id":"sg-z","ingress":[{{"protocol":"tcp","groups":["sg-a"],"prefix_lists":["pl-1"]}}]}},
                {{"id":"sg-a","ingress":[{{"protocol":"tcp","groups":["sg-b"]}}]}},
                {{"id":"sg-b"}}],
              "prefix_lists":[{{"id":"pl-1","cidrs":["10.0.0.0/8"]}}],
              "instances":[{}]}}"#,
            instances(40, "sg-z")
        ))
        .unwrap();
        let target = merge(&current, &file, false);
        target.validate(&l).unwrap();
        let plan = plan(&l, &current, &target, Limits { ops: 3, bytes: 1 << 20 }).unwrap();
        assert_eq!(plan.added, 44);
        assert!(plan.transactions.len() >= 22, "2 objects per transaction (plus the guard)");
        let keys: Vec<&str> = plan.transactions.iter().flatten().map(|op| op.key.as_str()).collect();
        assert_eq!(
            &keys[..4],
            ["/sg/v1/prefix_lists/pl-1", "/sg/v1/groups/sg-b", "/sg/v1/groups/sg-a", "/sg/v1/groups/sg-z"]
        );
        for (i, state) in apply_all(&l, current, &plan).iter().enumerate() {
            state.validate(&l).unwrap_or_else(|e| panic!("after transaction {i}: {e}"));
        }
    }

    #[test]
    fn an_address_trade_goes_in_one_transaction() {
        let l = layout();
        let doc = |a: &str, b: &str| {
            format!(
                r#"{{"instances":[{{"id":"a","addresses":["{a}"]}},{{"id":"b","addresses":["{b}"]}},
                    {{"id":"c","addresses":["10.0.0.3"]}},{{"id":"d","addresses":["10.0.0.4"]}}]}}"#
            )
        };
        let current = Content::of_document(&doc("10.0.0.1", "10.0.0.2")).unwrap();
        let target = Content::of_document(&doc("10.0.0.2", "10.0.0.1")).unwrap();
        let plan = plan(&l, &current, &target, Limits { ops: 2, bytes: 1 << 20 }).unwrap_err();
        assert!(plan.to_string().contains("cannot be cut into transactions"), "{plan}");
        let plan = super::plan(&l, &current, &target, Limits { ops: 3, bytes: 1 << 20 }).unwrap();
        assert_eq!(plan.transactions.len(), 1);
        assert_eq!(plan.changed, 2);
    }

    #[test]
    fn instances_go_first_groups_and_prefix_lists_last() {
        let l = layout();
        let current = Content::of_document(
            r#"{"security_groups":[{"id":"sg-a"}],"prefix_lists":[{"id":"pl","cidrs":["10.0.0.0/8"]}],
                "instances":[{"id":"x","security_groups":["sg-a"]}]}"#,
        )
        .unwrap();
        let file = Content::of_document(r#"{"instances":[{"id":"y"}]}"#).unwrap();
        let target = merge(&current, &file, true);
        let plan = plan(&l, &current, &target, Limits { ops: 2, bytes: 1 << 20 }).unwrap();
        let keys: Vec<(&str, bool)> =
            plan.transactions.iter().flatten().map(|op| (op.key.as_str(), op.value.is_some())).collect();
        assert_eq!(
            keys,
            [
                ("/sg/v1/instances/x", false),
                ("/sg/v1/instances/y", true),
                ("/sg/v1/groups/sg-a", false),
                ("/sg/v1/prefix_lists/pl", false)
            ]
        );
        assert_eq!((plan.added, plan.changed, plan.deleted), (1, 0, 3));
        for state in apply_all(&l, current, &plan) {
            state.validate(&l).unwrap();
        }
    }

    #[test]
    fn an_address_handed_down_a_chain_moves_one_instance_at_a_time() {
        let l = layout();
        let doc = |shift: usize, n: usize| {
            let items: Vec<String> =
                (0..n).map(|i| format!(r#"{{"id":"i-{i}","addresses":["10.0.0.{}"]}}"#, i + shift + 1)).collect();
            format!(r#"{{"instances":[{}]}}"#, items.join(","))
        };
        // Each instance takes its neighbour's address; the last one's is freed by a deletion.
        let current = Content::of_document(&doc(0, 20)).unwrap();
        let target = Content::of_document(&doc(1, 19)).unwrap();
        let plan = plan(&l, &current, &target, Limits { ops: 2, bytes: 1 << 20 }).unwrap();
        assert_eq!(plan.transactions.len(), 20, "one write per transaction: {plan:?}");
        for state in apply_all(&l, current, &plan) {
            state.validate(&l).unwrap();
        }
    }

    #[test]
    fn requests_stay_within_the_byte_limit() {
        let l = layout();
        let current = Content::default();
        let target = Content::of_document(&format!(r#"{{"instances":[{}]}}"#, instances(300, "default"))).unwrap();
        let limits = Limits { ops: 128, bytes: 16 << 10 };
        let plan = plan(&l, &current, &target, limits).unwrap();
        for txn in &plan.transactions {
            let bytes: usize = txn.iter().map(Op::bytes).sum();
            assert!(bytes + REQUEST_OVERHEAD <= limits.bytes);
            assert!(txn.len() < limits.ops);
        }
        assert!(plan.transactions.len() > 3);
        let huge = Content::of_document(&format!(
            r#"{{"prefix_lists":[{{"id":"pl","cidrs":[{}]}}]}}"#,
            (0..2000).map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256)).collect::<Vec<_>>().join(",")
        ))
        .unwrap();
        let e = super::plan(&l, &current, &huge, limits).unwrap_err();
        assert!(e.to_string().contains("/sg/v1/prefix_lists/pl is"), "{e}");
    }

    #[test]
    fn unchanged_objects_are_not_written() {
        let l = layout();
        let current = Content::of_document(r#"{"instances":[{"id":"a"},{"id":"b"}]}"#).unwrap();
        let file = Content::of_document(r#"{"instances":[{"id":"a"},{"id":"b","addresses":["10.0.0.1"]}]}"#).unwrap();
        let plan = plan(&l, &current, &merge(&current, &file, false), Limits::default()).unwrap();
        assert_eq!((plan.added, plan.changed, plan.deleted), (0, 1, 0));
        let same = super::plan(&l, &current, &merge(&current, &current, false), Limits::default()).unwrap();
        assert!(same.is_empty());
    }
}
