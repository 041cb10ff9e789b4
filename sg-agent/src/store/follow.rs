//! The agent's side of fleet mode: follow the store and propose documents.
//!
//! As Calico's watcher cache does: list the prefix at one revision (a consistent snapshot),
//! then watch from that revision + 1. Every batch of events the watch has delivered by the time
//! the agent is free again is one document, so a burst (a 1,000-key transaction, or many
//! transactions while an apply runs) becomes one generation. A watch that breaks (the store
//! went away, a member died) is re-created from the last revision seen + 1 on the same client,
//! so nothing is missed or seen twice. A watch cancelled because the history it needs was
//! compacted is never resumed from the compact revision (that would silently skip deletions):
//! the follower lists again, and the new snapshot replaces its objects, so deleted keys are
//! gone. Relists are throttled.
//!
//! The follower knows nothing of the agent: it sends a [`Proposal`] on a channel and waits for
//! the [`Outcome`]. Invalid content is reported and the last good generation stays in force;
//! a document the kernel side refused is proposed again after a pause.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use etcd_client::{Client, EventType, WatchOptions, WatchResponse, WatchStream};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::{
    Backoff, ErrorClass, MAX_RESPONSE_BYTES, StoreError, StoreOptions,
    content::{Content, Effect},
    nodes::NodeState,
};
use crate::{clock, policy::Invalid};

/// Shortest time between two snapshots: a store compacting faster than the agent can follow
/// must not turn it into a relist loop.
const MIN_RELIST_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before proposing again a document the kernel side refused.
const RETRY_FAILED: Duration = Duration::from_secs(5);
/// Problems kept for status and the node record (the log has them all).
const PROBLEMS_SHOWN: usize = 20;

/// A document from the store, for the agent to apply.
#[derive(Debug)]
pub struct Proposal {
    /// Native JSON: the store's objects side by side.
    pub document: String,
    /// The store revision it is the content of.
    pub revision: i64,
    pub reply: oneshot::Sender<Outcome>,
}

/// What became of a [`Proposal`].
#[derive(Debug)]
pub enum Outcome {
    /// Live as this generation; what is valid but probably not meant (paths as in a file).
    Live { generation: u64, warnings: Vec<crate::policy::Problem> },
    /// Invalid (paths as in a file; the follower names them by key). Nothing changed.
    Invalid(Invalid),
    /// The kernel side failed; the previous generation stays in force.
    Failed(String),
}

/// The connection to the store, as status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// Not yet answered.
    Connecting,
    /// Reading and watching.
    Connected,
    /// Calls fail; retrying with backoff.
    Unreachable,
}

/// The last snapshot: how long reading it and applying it took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub revision: i64,
    pub objects: usize,
    pub read_ms: f64,
    /// Until the agent answered (validate, compile, install), if a document was proposed.
    pub apply_ms: Option<f64>,
}

/// What status, metrics and the node record say about fleet mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// `etcd://host:port,...`
    pub store: String,
    pub prefix: String,
    pub node: String,
    pub connection: Connection,
    /// When the connection took its state (Unix seconds).
    pub since: u64,
    /// The store revision followed: the objects are known as of this revision (0: none yet).
    pub revision: i64,
    /// The store revision whose objects the generation in force was built from (0: none).
    pub applied_revision: i64,
    /// The generation built from the store, once there is one.
    pub generation: Option<u64>,
    /// The fingerprint of the store objects that generation was built from
    /// ([`Content::digest`]).
    pub applied_digest: Option<String>,
    /// Whether the store's content (as of `revision`) is a valid document.
    pub content_valid: bool,
    /// Its problems, named by key (the first few).
    pub problems: Vec<String>,
    /// Since when the content has been invalid (Unix seconds).
    pub invalid_since: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    pub snapshots: u64,
    /// Watches re-created after they broke.
    pub watch_restarts: u64,
    /// Watches cancelled because the history they needed was compacted.
    pub compactions: u64,
    pub last_snapshot: Option<SnapshotStats>,
}

impl StoreHealth {
    pub fn new(options: &StoreOptions, node: &str) -> StoreHealth {
        StoreHealth {
            store: options.url(),
            prefix: options.layout.prefix().to_owned(),
            node: node.to_owned(),
            connection: Connection::Connecting,
            since: clock::unix_seconds(SystemTime::now()),
            revision: 0,
            applied_revision: 0,
            generation: None,
            applied_digest: None,
            content_valid: true,
            problems: Vec::new(),
            invalid_since: None,
            last_error: None,
            last_error_at: None,
            snapshots: 0,
            watch_restarts: 0,
            compactions: 0,
            last_snapshot: None,
        }
    }
}

/// Where health updates go (the daemon puts them where status and metrics read).
pub type HealthSink = Box<dyn Fn(&StoreHealth) + Send + Sync>;

/// Follows one store for one node; see the module documentation.
pub struct Follower {
    options: StoreOptions,
    node: String,
    proposals: mpsc::Sender<Proposal>,
    resync: Arc<Notify>,
    health: StoreHealth,
    sink: HealthSink,
    published: watch::Sender<Option<NodeState>>,
    /// The store's objects as of `health.revision`.
    content: Content,
    /// Whether `content` differs from what the agent last judged (applied, or found invalid).
    pending: bool,
    /// After the kernel side refused a document: when to propose it again.
    retry_at: Option<Instant>,
}

/// What one watch message brought.
enum Received {
    /// Events (possibly none: a `created` or progress message).
    Events(WatchResponse),
    /// The history the watch needed is compacted (at this revision).
    Compacted(i64),
    /// Cancelled for another reason (permissions, ...).
    Cancelled(String),
    /// The stream ended or broke.
    Broken(String),
}

/// What a batch of events did.
#[derive(Default)]
struct Batch {
    events: usize,
    /// Events on objects (or unknown keys), changed or rewritten.
    on_objects: usize,
    changed: bool,
}

impl Follower {
    /// `published` receives the node record to publish after every outcome; `resync` asks for
    /// a fresh snapshot (SIGHUP).
    pub fn new(
        options: StoreOptions,
        node: String,
        proposals: mpsc::Sender<Proposal>,
        resync: Arc<Notify>,
        sink: HealthSink,
        published: watch::Sender<Option<NodeState>>,
    ) -> Follower {
        let health = StoreHealth::new(&options, &node);
        Follower {
            options,
            node,
            proposals,
            resync,
            health,
            sink,
            published,
            content: Content::default(),
            pending: true,
            retry_at: None,
        }
    }

    /// Follows the store until the agent stops (the proposal channel closes).
    pub async fn run(mut self) {
        (self.sink)(&self.health);
        let tls = self.options.tls.is_some();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut client: Option<Client> = None;
        let mut need_snapshot = true;
        let mut last_snapshot: Option<Instant> = None;
        loop {
            if self.proposals.is_closed() {
                return;
            }
            let c = match &client {
                Some(c) => c.clone(),
                None => match self.options.connect().await {
                    Ok(c) => {
                        client = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        self.unreachable(&e);
                        tokio::time::sleep(backoff.next_wait()).await;
                        continue;
                    }
                },
            };
            if need_snapshot {
                if let Some(wait) = last_snapshot.and_then(|t| MIN_RELIST_INTERVAL.checked_sub(t.elapsed())) {
                    tokio::time::sleep(wait).await;
                }
                last_snapshot = Some(Instant::now());
                match self.snapshot(&c, tls).await {
                    Ok(()) => {
                        need_snapshot = false;
                        backoff.reset();
                    }
                    Err(e) => {
                        self.unreachable(&e);
                        tokio::time::sleep(backoff.next_wait()).await;
                        continue;
                    }
                }
            }
            let options = WatchOptions::new().with_prefix().with_start_revision(self.health.revision + 1);
            let watch = c
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .watch(self.options.layout.root(), Some(options))
                .await;
            let mut stream = match watch {
                Ok(stream) => stream,
                Err(e) => {
                    self.unreachable(&StoreError::call("watching the store", &e, tls));
                    tokio::time::sleep(backoff.next_wait()).await;
                    continue;
                }
            };
            match self.follow(&mut stream, &mut backoff).await {
                Stop::Closed => return,
                Stop::Resync => need_snapshot = true,
                Stop::Compacted(at) => {
                    log::warn!(
                        "store history compacted at revision {at} (this agent is at {}): reading a fresh snapshot",
                        self.health.revision
                    );
                    self.health.compactions += 1;
                    need_snapshot = true;
                }
                Stop::Broken(why) => {
                    self.health.watch_restarts += 1;
                    self.unreachable(&StoreError::Call {
                        what: "watching the store".to_owned(),
                        detail: why,
                        class: ErrorClass::Ambiguous,
                    });
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
    }

    /// Consumes one watch until it stops.
    async fn follow(&mut self, stream: &mut WatchStream, backoff: &mut Backoff) -> Stop {
        loop {
            let retry = self.retry_at;
            let received = tokio::select! {
                message = stream.message() => receive(message, self.options.tls.is_some()),
                () = self.resync.notified() => {
                    log::info!("re-reading the store (fresh snapshot)");
                    return Stop::Resync;
                }
                () = sleep_until(retry), if retry.is_some() => {
                    self.retry_at = None;
                    if !self.propose().await {
                        return Stop::Closed;
                    }
                    (self.sink)(&self.health);
                    continue;
                }
            };
            let mut batch = Batch::default();
            let mut stop = None;
            match received {
                Received::Events(response) => self.take(&response, &mut batch),
                Received::Compacted(at) => return Stop::Compacted(at),
                Received::Cancelled(why) => return Stop::Broken(format!("the store cancelled the watch: {why}")),
                Received::Broken(why) => return Stop::Broken(why),
            }
            self.connected();
            backoff.reset();
            // Coalesce: everything already delivered joins this batch (the stream's buffer is
            // read without waiting).
            while stop.is_none() {
                match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                    Ok(message) => match receive(message, self.options.tls.is_some()) {
                        Received::Events(response) => self.take(&response, &mut batch),
                        Received::Compacted(at) => stop = Some(Stop::Compacted(at)),
                        Received::Cancelled(why) => {
                            stop = Some(Stop::Broken(format!("the store cancelled the watch: {why}")))
                        }
                        Received::Broken(why) => stop = Some(Stop::Broken(why)),
                    },
                    Err(_) => break,
                }
            }
            if batch.events > 0 && !self.after_batch(&batch).await {
                return Stop::Closed;
            }
            if let Some(stop) = stop {
                return stop;
            }
        }
    }

    /// Applies a watch message's events to the objects.
    fn take(&mut self, response: &WatchResponse, batch: &mut Batch) {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key());
            let effect = match event.event_type() {
                EventType::Put => self.content.put_key(&self.options.layout, &key, kv.value(), kv.mod_revision()),
                EventType::Delete => self.content.delete_key(&self.options.layout, &key),
            };
            batch.events += 1;
            match effect {
                Effect::Changed => {
                    batch.on_objects += 1;
                    batch.changed = true;
                }
                Effect::Rewritten => batch.on_objects += 1,
                Effect::Ignored => {}
            }
            // Events come in revision order; a delete's kv carries the deletion's revision.
            self.health.revision = self.health.revision.max(kv.mod_revision());
        }
    }

    /// After a batch: propose the new content, or (objects rewritten with the values they had)
    /// record that the generation in force matches the store at this revision.
    async fn after_batch(&mut self, batch: &Batch) -> bool {
        if batch.changed {
            self.pending = true;
            log::debug!(
                "store revision {}: {} events, {} on objects",
                self.health.revision,
                batch.events,
                batch.on_objects
            );
            let open = self.propose().await;
            (self.sink)(&self.health);
            return open;
        }
        if batch.on_objects > 0 && !self.pending && self.health.content_valid {
            self.health.applied_revision = self.health.revision;
            self.publish();
        }
        (self.sink)(&self.health);
        true
    }

    /// Reads a consistent snapshot and proposes it if it differs from what the agent has.
    async fn snapshot(&mut self, client: &Client, tls: bool) -> Result<(), StoreError> {
        let started = Instant::now();
        let snapshot = super::snapshot(client, &self.options.layout, tls).await?;
        let read_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.connected();
        self.health.snapshots += 1;
        let first = self.health.snapshots == 1;
        let changed = first || !snapshot.content.same_values(&self.content);
        log::info!(
            "store snapshot at revision {}: {} objects ({} groups, {} prefix lists, {} instances) read in {read_ms:.1} ms{}",
            snapshot.revision,
            snapshot.content.len(),
            snapshot.content.count(super::layout::Kind::Group),
            snapshot.content.count(super::layout::Kind::PrefixList),
            snapshot.content.count(super::layout::Kind::Instance),
            if first || changed { "" } else { "; unchanged" }
        );
        if !first {
            let (added, removed) = diff_counts(&self.content, &snapshot.content);
            if added + removed > 0 {
                log::info!("the snapshot adds or changes {added} objects and removes {removed}");
            }
        }
        self.content = snapshot.content;
        self.health.revision = snapshot.revision;
        self.pending |= changed;
        let mut stats =
            SnapshotStats { revision: snapshot.revision, objects: self.content.len(), read_ms, apply_ms: None };
        if self.pending {
            let apply_started = Instant::now();
            // A closed channel means the agent stops; `run` notices.
            self.propose().await;
            stats.apply_ms = Some(apply_started.elapsed().as_secs_f64() * 1000.0);
        } else if self.health.content_valid {
            self.health.applied_revision = self.health.revision;
            self.publish();
        }
        self.health.last_snapshot = Some(stats);
        (self.sink)(&self.health);
        Ok(())
    }

    /// Proposes the current objects to the agent and records the outcome (the caller hands the
    /// health on, with whatever else it records: a snapshot's figures). False once the agent has
    /// stopped.
    async fn propose(&mut self) -> bool {
        if !self.pending {
            return true;
        }
        let revision = self.health.revision;
        let assembled = match self.content.assemble(&self.options.layout) {
            Ok(assembled) => assembled,
            Err(invalid) => {
                self.invalid(invalid);
                return true;
            }
        };
        let (reply, outcome) = oneshot::channel();
        let proposal = Proposal { document: assembled.text, revision, reply };
        if self.proposals.send(proposal).await.is_err() {
            return false;
        }
        let Ok(outcome) = outcome.await else { return false };
        match outcome {
            Outcome::Live { generation, warnings } => {
                if !warnings.is_empty() {
                    for w in assembled.names.rename(Invalid { problems: warnings }).problems {
                        log::warn!("{w}");
                    }
                }
                self.pending = false;
                self.retry_at = None;
                self.health.generation = Some(generation);
                self.health.applied_revision = revision;
                self.health.applied_digest = Some(self.content.digest(&self.options.layout));
                if !self.health.content_valid {
                    log::info!("the store's content is valid again at revision {revision}");
                }
                self.health.content_valid = true;
                self.health.problems.clear();
                self.health.invalid_since = None;
                log::info!("store revision {revision}: generation {generation} live");
            }
            Outcome::Invalid(invalid) => self.invalid(assembled.names.rename(invalid)),
            Outcome::Failed(e) => {
                log::error!(
                    "store revision {revision} could not be applied ({e}); the previous generation stays in force; \
                     retrying in {} s",
                    RETRY_FAILED.as_secs()
                );
                self.error(e);
                self.retry_at = Some(Instant::now() + RETRY_FAILED);
            }
        }
        self.publish();
        true
    }

    /// The content is invalid: nothing changes in the kernel; say so until it is fixed.
    fn invalid(&mut self, invalid: Invalid) {
        self.pending = false;
        let now = clock::unix_seconds(SystemTime::now());
        let in_force = match self.health.generation {
            Some(g) => format!("generation {g} (store revision {}) stays in force", self.health.applied_revision),
            None => "nothing from the store is in force yet".to_owned(),
        };
        log::error!(
            "the store's content at revision {} is not a valid document; {in_force}:\n{invalid}",
            self.health.revision
        );
        if self.health.content_valid {
            self.health.invalid_since = Some(now);
        }
        self.health.content_valid = false;
        self.health.problems = invalid.problems.iter().take(PROBLEMS_SHOWN).map(ToString::to_string).collect();
        if invalid.problems.len() > PROBLEMS_SHOWN {
            self.health.problems.push(format!("... and {} more", invalid.problems.len() - PROBLEMS_SHOWN));
        }
        self.publish();
        (self.sink)(&self.health);
    }

    fn connected(&mut self) {
        if self.health.connection != Connection::Connected {
            if self.health.connection == Connection::Unreachable {
                let down = clock::unix_seconds(SystemTime::now()).saturating_sub(self.health.since);
                log::info!(
                    "store {} reachable again after {down} s; following from revision {}",
                    self.health.store,
                    self.health.revision + 1
                );
            }
            self.health.connection = Connection::Connected;
            self.health.since = clock::unix_seconds(SystemTime::now());
            self.publish();
            (self.sink)(&self.health);
        }
    }

    fn unreachable(&mut self, e: &StoreError) {
        let text = e.to_string();
        if self.health.connection != Connection::Unreachable {
            let in_force = match self.health.generation {
                Some(g) => format!("generation {g} (store revision {}) stays in force", self.health.applied_revision),
                None => "the pinned generation, if any, stays in force".to_owned(),
            };
            log::error!("store {} unreachable: {text}; {in_force}; retrying", self.health.store);
            self.health.connection = Connection::Unreachable;
            self.health.since = clock::unix_seconds(SystemTime::now());
        } else {
            log::debug!("store still unreachable: {text}");
        }
        if e.class() == Some(ErrorClass::Denied) {
            log::error!("the store refused this agent's credentials or permissions: {text}");
        }
        self.error(text);
    }

    fn error(&mut self, text: String) {
        self.health.last_error = Some(text);
        self.health.last_error_at = Some(clock::unix_seconds(SystemTime::now()));
        (self.sink)(&self.health);
    }

    /// Hands the node record to the publisher (it keeps only the latest).
    fn publish(&self) {
        let state = NodeState::now(&self.node, &self.health);
        self.published.send_replace(Some(state));
    }
}

/// Why a watch stopped being read.
enum Stop {
    /// The agent stops.
    Closed,
    /// A fresh snapshot was asked for.
    Resync,
    Compacted(i64),
    Broken(String),
}

fn receive(message: Result<Option<WatchResponse>, etcd_client::Error>, tls: bool) -> Received {
    match message {
        Ok(Some(response)) if response.canceled() && response.compact_revision() > 0 => {
            Received::Compacted(response.compact_revision())
        }
        Ok(Some(response)) if response.canceled() => Received::Cancelled(response.cancel_reason().to_owned()),
        Ok(Some(response)) => Received::Events(response),
        Ok(None) => Received::Broken("the watch stream ended".to_owned()),
        Err(e) => Received::Broken(super::describe(&e, tls)),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Objects added or changed, and removed, from `old` to `new`.
fn diff_counts(old: &Content, new: &Content) -> (usize, usize) {
    let added = new.objects().filter(|(k, id, o)| old.get(*k, id).is_none_or(|p| p.text != o.text)).count();
    let removed = old.objects().filter(|(k, id, _)| new.get(*k, id).is_none()).count();
    (added, removed)
}
