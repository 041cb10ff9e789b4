//! The daemon: `sg-agent run`. Loads and applies the policy, then serves the control socket,
//! re-applies on SIGHUP, expires conntrack entries, and exits on SIGTERM/SIGINT leaving
//! enforcement in place (SPEC §4; `teardown` removes it).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use sg_common::maps::{CtEntry, CtKey, Settings};
use tokio::{
    io::BufReader,
    signal::unix::{SignalKind, signal},
};

use crate::{
    compile::{self, Compiled},
    control::{self, Request, Response},
    datapath::{self, DatapathError, Enforcer, LoadOptions, Maps, PinLayout},
    policy::{self, Document, Invalid},
    status,
};

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Runtime(#[from] DatapathError),
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
}

impl ApplyError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ApplyError::Invalid(_) => 2,
            ApplyError::Runtime(_) | ApplyError::Read(..) => 1,
        }
    }
}

/// What `apply` reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ApplySummary {
    pub generation: u64,
    pub security_groups: usize,
    pub rules: usize,
    pub instances: usize,
    pub local_instances: usize,
    pub peer_entries: usize,
    pub rule_entries: usize,
    /// Validate + compile + write + swap, in milliseconds.
    pub apply_ms: f64,
    pub changes: crate::changes::Changes,
}

/// Validates and compiles a document (the offline half of an apply).
pub fn prepare(document: &str, instances: Option<&str>) -> Result<(Document, Compiled), Invalid> {
    let doc = policy::load(document, instances)?;
    let compiled = compile::compile(&doc)?;
    Ok((doc, compiled))
}

/// What the last conntrack garbage collection did (shown by `status`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct GcStats {
    pub runs: u64,
    pub last_scanned: usize,
    pub last_removed: usize,
    pub last_duration_ms: f64,
    pub total_removed: u64,
}

pub struct Agent {
    pub enforcer: Enforcer,
    pub gc: Arc<std::sync::Mutex<GcStats>>,
    pub generation: u64,
    pub applied_at: Option<SystemTime>,
    pub document: Option<Document>,
    pub compiled: Option<Compiled>,
    /// Names for flow-log records, kept current with the live generation.
    pub names: crate::flows::SharedNames,
}

/// A rule and its hits, for `status --rules`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RuleHits {
    pub group: String,
    /// `ingress[0]`: the rule's place in its group.
    pub rule_id: String,
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

impl Agent {
    pub fn new(enforcer: Enforcer) -> Result<Agent, DatapathError> {
        let generation = enforcer.maps.live()?.map_or(0, |l| l.generation);
        Ok(Agent {
            enforcer,
            gc: Arc::default(),
            generation,
            applied_at: None,
            document: None,
            compiled: None,
            names: Arc::default(),
        })
    }

    /// Applies a document; on any error the previous generation stays in force.
    pub fn apply(&mut self, document: &str, instances: Option<&str>) -> Result<ApplySummary, ApplyError> {
        let started = std::time::Instant::now();
        let (doc, compiled) = prepare(document, instances)?;
        let generation = self.generation + 1;
        self.enforcer.install(&compiled, generation)?;
        let previous = self.document.as_ref().zip(self.compiled.as_ref());
        let changes = crate::changes::diff(previous, &doc, &compiled);
        self.generation = generation;
        self.applied_at = Some(SystemTime::now());
        let summary = ApplySummary {
            generation,
            security_groups: doc.security_groups.len(),
            rules: compiled.rules.len(),
            instances: doc.instances.len(),
            local_instances: compiled.ifaces.len(),
            peer_entries: compiled.peers.len(),
            rule_entries: compiled.rule_entries.len(),
            apply_ms: started.elapsed().as_secs_f64() * 1000.0,
            changes,
        };
        log::info!(
            "generation {generation} live: {} groups, {} rules, {} local instances ({:.1} ms)",
            summary.security_groups,
            summary.rules,
            summary.local_instances,
            summary.apply_ms
        );
        self.document = Some(doc);
        self.compiled = Some(compiled);
        self.after_change();
        Ok(summary)
    }

    /// Bookkeeping once a generation is live: flow-log names, and the hit counters of rules the
    /// policy no longer has (an unchanged rule keeps its counter).
    fn after_change(&mut self) {
        let Some(compiled) = &self.compiled else { return };
        let keep: std::collections::HashSet<u64> =
            compiled.rules.iter().map(crate::compile::RuleRef::counter_id).collect();
        self.enforcer.maps.prune_rule_counters(&keep);
        if let Ok(mut names) = self.names.lock() {
            names.rules = crate::flows::rule_names(compiled);
            names.interfaces = compiled
                .ifaces
                .iter()
                .filter_map(|i| {
                    let ifindex = self.enforcer.attached.get(&i.interface)?.ifindex;
                    Some((ifindex, (i.interface.clone(), Some(i.instance.clone()))))
                })
                .collect();
        }
    }

    /// Every rule of the live policy with its hits.
    pub fn rule_hits(&self) -> Vec<RuleHits> {
        let Some(compiled) = &self.compiled else { return Vec::new() };
        let hits = self.enforcer.maps.rule_hits();
        compiled
            .rules
            .iter()
            .map(|r| {
                let c = hits.get(&r.counter_id()).copied().unwrap_or_default();
                RuleHits {
                    group: r.group.clone(),
                    rule_id: format!("{}[{}]", r.direction.name(), r.rule_index),
                    rule: r.to_string(),
                    packets: c.packets,
                    bytes: c.bytes,
                }
            })
            .collect()
    }

    /// At start-up: takes over the live generation a previous agent left if the document
    /// compiles to exactly it (same generation, no swap, tracked flows untouched); otherwise
    /// applies the document as the next generation.
    pub fn start(&mut self, document: &str, instances: Option<&str>) -> Result<u64, ApplyError> {
        let (doc, compiled) = prepare(document, instances)?;
        if let Some(generation) = self.enforcer.adopt(&compiled)? {
            log::info!("adopted generation {generation} from the pinned state (the document compiles to it)");
            self.generation = generation;
            self.document = Some(doc);
            self.compiled = Some(compiled);
            self.after_change();
            return Ok(generation);
        }
        self.apply(document, instances).map(|s| s.generation)
    }

    pub fn status(&self) -> Result<status::Status, DatapathError> {
        status::collect(&self.enforcer.maps, self.enforcer.pins(), Some(self))
    }
}

/// `sg-agent run` options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: PathBuf,
    pub instances: Option<PathBuf>,
    pub pins: PinLayout,
    pub socket: PathBuf,
    pub load: LoadOptions,
    pub settings: Settings,
    pub gc_interval: Duration,
    /// Flow-log aggregation window.
    pub flow_window: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
}

fn read_inputs(policy: &Path, instances: Option<&Path>) -> Result<(String, Option<String>), ApplyError> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| ApplyError::Read(p.to_path_buf(), e));
    Ok((read(policy)?, instances.map(read).transpose()?))
}

/// Runs the agent until SIGTERM/SIGINT or a teardown request. Returns the exit code.
pub async fn run(opts: RunOptions) -> u8 {
    let (document, instances) = match read_inputs(&opts.policy, opts.instances.as_deref()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    // Validate before touching the kernel: invalid input changes nothing.
    if let Err(e) = prepare(&document, instances.as_deref()) {
        eprintln!("{}", status::format_invalid(&opts.policy, &e));
        return 2;
    }
    let mut datapath = match Enforcer::load(opts.pins.clone(), opts.load.clone()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if let Err(e) = datapath.write_settings(&opts.settings) {
        eprintln!("error: {e}");
        return 1;
    }
    let mut agent = match Agent::new(datapath) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if let Err(e) = agent.start(&document, instances.as_deref()) {
        eprintln!("error: {e}");
        return e.exit_code();
    }
    let listener = match control::bind(&opts.socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: control socket {}: {e}", opts.socket.display());
            return 1;
        }
    };
    let flow_tx = agent.enforcer.flow_maps.take().and_then(|(ring, config)| {
        let counters = Maps::from_pins(&opts.pins).ok();
        let skipped = move || counters.as_ref().map_or(0, Maps::flow_events_skipped);
        match crate::flows::FlowLogger::start(ring, config, agent.names.clone(), skipped, opts.flow_window) {
            Ok(logger) => Some(logger.tx),
            Err(e) => {
                log::warn!("flow logs unavailable: {e}");
                None
            }
        }
    });
    if let Some(addr) = opts.metrics {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                log::info!("metrics on http://{addr}/metrics");
                tokio::spawn(crate::metrics::serve(listener, opts.pins.clone()));
            }
            Err(e) => {
                eprintln!("error: metrics address {addr}: {e}");
                return 1;
            }
        }
    }
    let stop_gc = Arc::new(AtomicBool::new(false));
    let gc = spawn_gc(opts.pins.clone(), opts.gc_interval, stop_gc.clone(), agent.gc.clone());

    let (Ok(mut sigterm), Ok(mut sigint), Ok(mut sighup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        eprintln!("error: cannot install signal handlers");
        return 1;
    };
    log::info!("enforcing generation {}; control socket {}", agent.generation, opts.socket.display());
    let code = loop {
        tokio::select! {
            _ = sigterm.recv() => break 0,
            _ = sigint.recv() => break 0,
            _ = sighup.recv() => {
                log::info!("SIGHUP: re-reading {}", opts.policy.display());
                let result = read_inputs(&opts.policy, opts.instances.as_deref())
                    .and_then(|(d, i)| agent.apply(&d, i.as_deref()));
                if let Err(e) = result {
                    log::error!("SIGHUP apply failed, generation {} stays in force: {e}", agent.generation);
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let mut stream = BufReader::new(stream);
                let request = tokio::time::timeout(Duration::from_secs(30), control::read_request(&mut stream)).await;
                let (response, stop) = match request {
                    Err(_) => (Response::error(2, "request timed out"), false),
                    Ok(Err(bad)) => (bad, false),
                    Ok(Ok(Request::Flows)) if flow_tx.is_some() => {
                        if let Some(tx) = &flow_tx {
                            tokio::spawn(stream_flows(stream, tx.subscribe()));
                        }
                        continue;
                    }
                    Ok(Ok(request)) => handle(&mut agent, request),
                };
                if let Err(e) = control::write_response(&mut stream, &response).await {
                    log::debug!("control client went away: {e}");
                }
                if stop {
                    break 0;
                }
            }
        }
    };
    stop_gc.store(true, Ordering::Relaxed);
    let _ = gc.join();
    let _ = std::fs::remove_file(&opts.socket);
    log::info!("stopping; enforcement stays in place (sg-agent teardown removes it)");
    code
}

/// Handles one control request; the flag says whether the agent should stop.
fn handle(agent: &mut Agent, request: Request) -> (Response, bool) {
    match request {
        Request::Rules => (Response::ok(serde_json::to_value(agent.rule_hits()).unwrap_or_default()), false),
        Request::Flows => (Response::error(1, "flow logs are not available in this agent"), false),
        Request::Status => match agent.status() {
            Ok(s) => (Response::ok(serde_json::to_value(s).unwrap_or_default()), false),
            Err(e) => (Response::error(1, e.to_string()), false),
        },
        Request::Apply { document, instances } => match agent.apply(&document, instances.as_deref()) {
            Ok(summary) => (Response::ok(serde_json::to_value(summary).unwrap_or_default()), false),
            Err(e) => (Response::error(e.exit_code(), e.to_string()), false),
        },
        Request::Explain { query } => {
            let (Some(doc), Some(compiled)) = (&agent.document, &agent.compiled) else {
                return (Response::error(1, "no policy applied yet"), false);
            };
            match crate::explain::explain_compiled(doc, compiled, &query) {
                Ok(e) => (Response::ok(serde_json::to_value(e).unwrap_or_default()), false),
                Err(e) => (Response::error(2, e.to_string()), false),
            }
        }
        Request::Teardown => match datapath::teardown(agent.enforcer.pins()) {
            Ok(detached) => (Response::ok(serde_json::json!({ "detached": detached })), true),
            Err(e) => (Response::error(1, e.to_string()), false),
        },
    }
}

/// Streams flow-log records to a `sg-agent flows` client: a first line saying it starts, then
/// one JSON record per line, until the client goes away. A slow client that falls behind misses
/// windows (the channel is bounded) rather than holding memory.
async fn stream_flows(
    mut stream: BufReader<tokio::net::UnixStream>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Vec<crate::flows::FlowRecord>>>,
) {
    use tokio::io::AsyncWriteExt as _;
    let hello = serde_json::to_vec(&Response::ok(serde_json::json!({ "streaming": "flows" }))).unwrap_or_default();
    if stream.get_mut().write_all(&hello).await.is_err() || stream.get_mut().write_all(b"\n").await.is_err() {
        return;
    }
    loop {
        let batch = match rx.recv().await {
            Ok(batch) => batch,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let mut bytes = Vec::new();
        for record in batch.iter() {
            if serde_json::to_writer(&mut bytes, record).is_ok() {
                bytes.push(b'\n');
            }
        }
        if stream.get_mut().write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// Now on the clock `bpf_ktime_get_ns` reads (CLOCK_MONOTONIC).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Conntrack garbage collection on its own thread with its own map handles, so a large table
/// never stalls the control socket. The datapath already ignores expired entries; GC only
/// frees their slots.
fn spawn_gc(
    pins: PinLayout,
    interval: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<std::sync::Mutex<GcStats>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut maps = match Maps::from_pins(&pins) {
            Ok(m) => m,
            Err(e) => {
                log::error!("conntrack GC disabled: {e}");
                return;
            }
        };
        let tick = Duration::from_millis(200);
        let mut waited = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            waited += tick;
            if waited < interval {
                continue;
            }
            waited = Duration::ZERO;
            let started = std::time::Instant::now();
            match expire_conntrack(&mut maps) {
                Ok((seen, removed)) => {
                    if removed > 0 {
                        log::debug!("conntrack GC: {removed} of {seen} entries expired");
                    }
                    if let Ok(mut s) = stats.lock() {
                        s.runs += 1;
                        s.last_scanned = seen;
                        s.last_removed = removed;
                        s.last_duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                        s.total_removed += removed as u64;
                    }
                }
                Err(e) => log::warn!("conntrack GC: {e}"),
            }
        }
    })
}

/// Removes expired entries; returns (entries seen, entries removed).
pub fn expire_conntrack(maps: &mut Maps) -> Result<(usize, usize), DatapathError> {
    let settings = maps.read_settings()?;
    let settings = if settings.tcp_established == 0 { Settings::DEFAULT } else { settings };
    let now = monotonic_ns();
    let entries: Vec<(CtKey, CtEntry)> = maps.conntrack_entries();
    let mut removed = 0;
    for (key, entry) in &entries {
        if !sg_common::conntrack::is_expired(entry, key.proto, &settings, now) {
            continue;
        }
        // Re-read right before deleting: the datapath may have replaced the entry with a fresh
        // one since the snapshot (a packet of an expired flow that the rules still allow).
        let still_expired = maps
            .conntrack
            .get(key, 0)
            .is_ok_and(|current| sg_common::conntrack::is_expired(&current, key.proto, &settings, monotonic_ns()));
        if still_expired && maps.conntrack.remove(key).is_ok() {
            removed += 1;
        }
    }
    Ok((entries.len(), removed))
}

/// Seconds since the epoch, for status.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
