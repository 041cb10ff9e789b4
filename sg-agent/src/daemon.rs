//! `sg-agent run`: the daemon's loop.
//!
//! Three kinds of work, kept apart so that none can stall another:
//! - the **agent thread** owns the [`Agent`] and does everything that touches policy state, one
//!   job at a time (applies, status, explain, teardown, SIGHUP reloads). Applying is blocking
//!   work (syscalls by the thousand), so it runs on a thread of its own, not on the runtime;
//! - **clients** of the control socket each get a task with deadlines and size caps: a client
//!   that sends half a request holds only its own task, and at most [`MAX_CLIENTS`] are served
//!   at once;
//! - **signals** are handled by the loop itself: SIGTERM/SIGINT stop the agent (enforcement stays
//!   in place), SIGHUP queues a reload;
//! - in fleet mode, the store's **follower** ([`crate::store::follow`]) proposes documents, which
//!   reach the agent thread as [`Job::Store`], one at a time.
//!
//! Every precondition (input valid, pin path free, socket and metrics address usable) is checked
//! before the kernel is touched.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sg_common::maps::Settings;
use tokio::{
    io::{AsyncWriteExt as _, BufReader},
    net::UnixStream,
    signal::unix::{SignalKind, signal},
    sync::{Notify, Semaphore, broadcast, mpsc, oneshot},
};

use crate::{
    agent::Agent,
    api::{self, ApiOptions, LocalBackend, LocalCall},
    compile,
    conntrack::gc::Collector,
    control::{self, Request, Response},
    datapath::{self, DatapathError, Enforcer, LoadOptions, Maps, PinLayout},
    explain,
    flows::{FlowLogger, FlowRecord},
    interfaces::{LinkEvent, LinkWatcher},
    metrics, notify,
    policy::Invalid,
    status::{self, SharedView},
    store::{
        StoreError, StoreOptions,
        follow::{Follower, Outcome, Proposal, StoreHealth},
        nodes,
    },
};

/// Control-socket clients served at once; more are answered "busy" and closed. Generous, so
/// that clients stalled mid-request (each cut off after [`REQUEST_DEADLINE`]) cannot crowd out
/// a `status`; bounded, so that they cannot exhaust memory (at most 64 KiB of request line each).
pub const MAX_CLIENTS: usize = 512;
/// Bytes of apply documents held at once, being received or waiting to be applied: room for two
/// documents of the largest size (64 MiB, plus their instances files).
pub const UPLOAD_BUDGET: usize = 4 * crate::policy::limits::DOCUMENT_BYTES;
/// Time a client has to send its request line.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Time a client has to send an apply's documents, plus a second per 8 MiB (64 MiB over a
/// local socket takes well under a second).
const UPLOAD_DEADLINE: Duration = Duration::from_secs(5);
/// Time to write an answer to a client that does not read it.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);
/// How long a stopping agent waits for the job in progress (an apply) to finish.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// `sg-agent run` options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The policy file (not read in fleet mode).
    pub policy: PathBuf,
    pub instances: Vec<PathBuf>,
    /// Fleet mode: documents come from this store instead of `policy` (SPEC §8).
    pub fleet: Option<FleetOptions>,
    /// This node's name: instances of other nodes are remote members here.
    pub node: Option<String>,
    pub pins: PinLayout,
    pub socket: PathBuf,
    pub load: LoadOptions,
    pub settings: Settings,
    pub gc_interval: Duration,
    /// Flow-log aggregation window.
    pub flow_window: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// The EC2 API (SPEC §9), if served.
    pub api: Option<ApiOptions>,
}

/// Fleet mode's options.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub store: StoreOptions,
    /// Seconds the node's record lease lives without keepalives.
    pub lease_ttl: i64,
}

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A policy file could not be read, or is not acceptable text.
    #[error("reading {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: crate::policy::ReadError,
    },
    /// The policy is invalid; nothing was touched.
    #[error("{}", .invalid.in_files(.file, .instances))]
    Invalid { file: PathBuf, instances: Vec<PathBuf>, invalid: Invalid },
    /// The control socket cannot be used; nothing was touched.
    #[error("control socket {}: {source}", .path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The metrics address cannot be used; nothing was touched.
    #[error("metrics address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed; nothing was touched.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The EC2 API cannot be served (document, credentials, address); nothing was touched.
    #[error(transparent)]
    Api(#[from] api::SetupError),
    /// The kernel side failed (loading, pinning, attaching, applying).
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Fleet mode: the store options cannot be used (files, URL); nothing was touched.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunError {
    /// SPEC §5: 2 for invalid input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Invalid { .. } => 2,
            RunError::Read { source, .. } => source.exit_code(),
            RunError::Api(e) => e.exit_code(),
            RunError::Store(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// The policy files, read as text.
struct Inputs {
    document: String,
    instances: Vec<String>,
}

fn read_inputs(policy: &Path, instances: &[PathBuf]) -> Result<Inputs, RunError> {
    let read =
        |p: &Path| crate::policy::read_file(p).map_err(|source| RunError::Read { path: p.to_path_buf(), source });
    Ok(Inputs { document: read(policy)?, instances: instances.iter().map(|p| read(p)).collect::<Result<_, _>>()? })
}

/// Logs a document's warnings, each with its file and JSON path.
fn log_warnings(warnings: &[crate::policy::Problem], policy: &Path, instances: &[PathBuf]) {
    for line in crate::policy::warning_lines(warnings, policy, instances) {
        log::warn!("{}", line.trim_start_matches("warning: "));
    }
}

/// A unit of work for the agent thread.
enum Job {
    /// A control request; the reply says whether the agent should stop afterwards.
    Control { request: Request, reply: oneshot::Sender<(Response, bool)> },
    /// SIGHUP: re-read the policy files and apply them.
    Reload,
    /// Interfaces appeared or vanished (as read from netlink at that instant).
    Links(Vec<LinkEvent>, std::time::Instant),
    /// An EC2 API call: read the live document, or commit a changed one (live and written back
    /// to the policy file when it answers).
    Api(LocalCall),
    /// Wakes the agent thread to see that the daemon is stopping.
    Stop,
    /// Fleet mode: a document from the store.
    Store(Proposal),
}

/// Runs the agent until SIGTERM/SIGINT or a teardown request.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    // Preconditions, none of which touches the kernel. In fleet mode the document comes later,
    // from the store; its options (certificate files) are checked now.
    let inputs = match &opts.fleet {
        None => {
            let inputs = read_inputs(&opts.policy, &opts.instances)?;
            let (doc, _) = compile::prepare_for_node(&inputs.document, &inputs.instances, opts.node.as_deref())
                .map_err(|invalid| RunError::Invalid {
                    file: opts.policy.clone(),
                    instances: opts.instances.clone(),
                    invalid,
                })?;
            log_warnings(&doc.warnings, &opts.policy, &opts.instances);
            Some(inputs)
        }
        Some(fleet) => {
            fleet.store.connect_options()?;
            None
        }
    };
    let api_credentials = match (&opts.api, &inputs) {
        (Some(options), Some(inputs)) => {
            Some(api::check(options, &opts.policy, &inputs.document, !opts.instances.is_empty())?)
        }
        _ => None,
    };
    if !datapath::object_available() {
        return Err(DatapathError::NoObject.into());
    }
    if !datapath::pins::on_bpffs(opts.pins.root()) {
        return Err(DatapathError::NotBpffs(opts.pins.root().to_path_buf()).into());
    }
    let pin_lock = datapath::pins::lock(&opts.pins)?;
    let listener =
        control::bind(&opts.socket).await.map_err(|source| RunError::Socket { path: opts.socket.clone(), source })?;
    let socket = SocketFile::new(&opts.socket);
    let api = match (&opts.api, api_credentials) {
        (Some(options), Some(credentials)) => Some(api::bind(options, credentials).await?),
        _ => None,
    };
    let metrics_listener = match opts.metrics {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| RunError::Metrics { addr, source })?)
        }
        None => None,
    };
    let (mut sigterm, mut sigint, mut sighup) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()));
    let (Ok(sigterm), Ok(sigint), Ok(sighup)) = (sigterm.as_mut(), sigint.as_mut(), sighup.as_mut()) else {
        let e = [sigterm.err(), sigint.err(), sighup.err()].into_iter().flatten().next();
        return Err(RunError::Signals(e.unwrap_or_else(|| std::io::Error::other("unknown"))));
    };

    // Subscribed before the first install, so that no interface change after it goes unseen.
    let links = LinkWatcher::new().map_err(|e| RunError::Signals(std::io::Error::other(format!("netlink: {e}"))))?;

    // The kernel side.
    let mut enforcer = Enforcer::load(opts.pins.clone(), opts.load.clone())?;
    let capacity = enforcer.maps.conntrack.sizes().0.capacity;
    if capacity != opts.load.conntrack_max {
        log::warn!(
            "the conntrack table pinned under {} holds {capacity} flows; --conntrack-max {} takes effect only with \
             a new table: `sg-agent teardown` then start again (this cuts tracked flows)",
            opts.pins.root().display(),
            opts.load.conntrack_max
        );
    }
    enforcer.write_settings(&opts.settings)?;
    let mut agent = Agent::new(enforcer)?;
    agent.node = opts.node.clone();
    if let Some(inputs) = &inputs {
        agent.start(&inputs.document, &inputs.instances).map_err(|e| match e {
            crate::agent::ApplyError::Invalid(invalid) => {
                RunError::Invalid { file: opts.policy.clone(), instances: opts.instances.clone(), invalid }
            }
            crate::agent::ApplyError::Runtime(e) => RunError::Datapath(e),
        })?;
    }

    let flows = agent.enforcer.flow_maps.take().and_then(|(ring, config)| {
        let counters = Maps::from_pins(&opts.pins).ok();
        let skipped = move || counters.as_ref().map_or(0, Maps::flow_events_skipped);
        match FlowLogger::start(ring, config, agent.names.clone(), skipped, opts.flow_window) {
            Ok(logger) => Some(logger.tx),
            Err(e) => {
                log::warn!("flow logs unavailable: {e}");
                None
            }
        }
    });
    let view: SharedView = Arc::new(std::sync::RwLock::new(agent.view()));
    if let (Some(listener), Some(addr)) = (metrics_listener, opts.metrics) {
        log::info!("metrics on http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, opts.pins.clone(), view.clone()));
    }
    let gc = match Collector::start(&opts.pins, opts.gc_interval) {
        Ok(gc) => Some(gc),
        Err(e) => {
            log::error!("conntrack garbage collection disabled: {e}");
            None
        }
    };
    match &opts.fleet {
        None => log::info!("enforcing generation {}; control socket {}", agent.generation, opts.socket.display()),
        Some(fleet) => log::info!(
            "node {}: following {} (prefix {}); generation {} stays in force until the store's document is live; \
             control socket {}",
            opts.node.as_deref().unwrap_or_default(),
            fleet.store.url(),
            fleet.store.layout.prefix(),
            agent.generation,
            opts.socket.display()
        ),
    }
    let generation = agent.generation;

    let (jobs, job_rx) = mpsc::channel::<Job>(64);
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let gc_stats = gc.as_ref().map(|g| g.stats.clone());
    let reload = (opts.policy.clone(), opts.instances.clone());
    let shared = view.clone();
    // Set when the daemon stops: the agent thread finishes the job in hand and takes no other
    // (clients may still hold senders of the job channel, so its closing cannot be the signal).
    let stopping = Arc::new(AtomicBool::new(false));
    let stopped = stopping.clone();
    let agent_thread = std::thread::Builder::new()
        .name("sg-agent".into())
        .spawn(move || {
            agent_loop(agent, job_rx, gc_stats, reload, shared, &stopped);
            let _ = done_tx.send(());
        })
        .map_err(|e| RunError::Signals(std::io::Error::other(format!("starting the agent thread: {e}"))))?;

    tokio::spawn(follow_links(links, jobs.clone()));
    if let Some(prepared) = api {
        let (backend, calls) = LocalBackend::new();
        tokio::spawn(forward_api_calls(calls, jobs.clone()));
        api::start(prepared, backend);
    }
    let resync = Arc::new(Notify::new());
    match (&opts.fleet, &opts.node) {
        // Ready once the store's first document is live (the agent thread says so).
        (Some(fleet), Some(node)) => follow_store(fleet, node, jobs.clone(), resync.clone(), view.clone()),
        // This document's generation is live (applied, or adopted because it compiles to the
        // pinned one) and the agent thread takes requests: only now is the node protected as
        // configured.
        _ => notify::ready(generation),
    }
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    let uploads = Arc::new(Semaphore::new(UPLOAD_BUDGET));
    let stop = Arc::new(Notify::new());
    let torn_down = loop {
        tokio::select! {
            _ = sigterm.recv() => break false,
            _ = sigint.recv() => break false,
            _ = stop.notified() => break true,
            _ = sighup.recv() => {
                if opts.fleet.is_some() {
                    log::info!("SIGHUP: reading a fresh snapshot of the store");
                    resync.notify_one();
                    continue;
                }
                log::info!("SIGHUP: re-reading {}", opts.policy.display());
                if jobs.try_send(Job::Reload).is_err() {
                    log::warn!("SIGHUP ignored: the agent is busy with {} queued jobs", jobs.max_capacity());
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                match clients.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (uploads, jobs, flows, stop) = (uploads.clone(), jobs.clone(), flows.clone(), stop.clone());
                        tokio::spawn(async move {
                            serve_client(stream, uploads, jobs, flows, stop).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tokio::spawn(refuse_busy(stream));
                    }
                }
            }
        }
    };
    // Stop: no new jobs; let the one in progress finish (briefly), then leave enforcement as it is.
    notify::stopping();
    stopping.store(true, Ordering::Relaxed);
    let _ = jobs.try_send(Job::Stop);
    drop(jobs);
    drop(listener);
    drop(socket);
    if tokio::time::timeout(STOP_GRACE, done_rx).await.is_ok() {
        let _ = agent_thread.join();
    } else {
        log::warn!("stopping while a job is still in progress (the live generation is unaffected)");
    }
    drop(gc);
    drop(pin_lock);
    if torn_down {
        log::info!("stopped after teardown; nothing is enforced any more");
    } else {
        log::info!("stopped; enforcement stays in place (sg-agent teardown removes it)");
    }
    Ok(())
}

/// The control socket file, removed on drop if it is still the one this agent created (a later
/// agent may have replaced it).
struct SocketFile {
    path: PathBuf,
    inode: Option<u64>,
}

impl SocketFile {
    fn new(path: &Path) -> SocketFile {
        use std::os::unix::fs::MetadataExt as _;
        SocketFile { path: path.to_path_buf(), inode: std::fs::metadata(path).ok().map(|m| m.ino()) }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        if self.inode.is_some() && std::fs::metadata(&self.path).ok().map(|m| m.ino()) == self.inode {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Forwards interface changes to the agent thread, starting with a full re-read (anything
/// that changed between the first install and now).
async fn follow_links(mut links: LinkWatcher, jobs: mpsc::Sender<Job>) {
    if jobs.send(Job::Links(vec![LinkEvent::Resync], std::time::Instant::now())).await.is_err() {
        return;
    }
    loop {
        match links.next().await {
            Ok(events) if events.is_empty() => {}
            Ok(events) => {
                if jobs.send(Job::Links(events, std::time::Instant::now())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                log::error!("interface notifications stopped ({e}); new interfaces are attached on the next apply");
                return;
            }
        }
    }
}

/// Fleet mode: the store's follower (documents for the agent thread), the node's record in
/// the store, and the follower's health where status and metrics read it.
fn follow_store(fleet: &FleetOptions, node: &str, jobs: mpsc::Sender<Job>, resync: Arc<Notify>, view: SharedView) {
    // One document at a time: the follower waits for each outcome, and what the store does
    // meanwhile becomes the next document.
    let (proposals, mut proposed) = mpsc::channel::<Proposal>(1);
    let (records, published) = tokio::sync::watch::channel(None);
    let sink = Box::new(move |health: &StoreHealth| {
        if let Ok(mut shared) = view.write() {
            shared.store = Some(health.clone());
        }
    });
    let follower = Follower::new(fleet.store.clone(), node.to_owned(), proposals, resync, sink, records);
    tokio::spawn(follower.run());
    tokio::spawn(nodes::publish(fleet.store.clone(), node.to_owned(), fleet.lease_ttl, published));
    // A weak sender: the follower must not keep the agent thread's queue open.
    let jobs = jobs.downgrade();
    tokio::spawn(async move {
        while let Some(proposal) = proposed.recv().await {
            let Some(jobs) = jobs.upgrade() else { return };
            if jobs.send(Job::Store(proposal)).await.is_err() {
                return;
            }
        }
    });
}

/// Hands the EC2 API's calls to the agent thread, in order.
async fn forward_api_calls(mut calls: mpsc::Receiver<LocalCall>, jobs: mpsc::Sender<Job>) {
    while let Some(call) = calls.recv().await {
        if jobs.send(Job::Api(call)).await.is_err() {
            return;
        }
    }
}

/// The agent thread: one job at a time, until the job channel closes or a teardown succeeds.
fn agent_loop(
    mut agent: Agent,
    mut jobs: mpsc::Receiver<Job>,
    gc: Option<Arc<std::sync::Mutex<crate::conntrack::gc::GcStats>>>,
    (policy, instances): (PathBuf, Vec<PathBuf>),
    view: SharedView,
    stopping: &AtomicBool,
) {
    while let Some(job) = jobs.blocking_recv() {
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        let store = view.read().ok().and_then(|v| v.store.clone());
        let stop = run_job(&mut agent, job, gc.as_deref(), (&policy, &instances), store);
        agent.catch_up();
        if let Ok(mut shared) = view.write() {
            // The store's health is the follower's to keep current.
            let store = shared.store.take();
            *shared = agent.view();
            shared.store = store;
        }
        if stop {
            return;
        }
    }
}

/// Runs one job; returns whether the agent stops (after a teardown).
fn run_job(
    agent: &mut Agent,
    job: Job,
    gc: Option<&std::sync::Mutex<crate::conntrack::gc::GcStats>>,
    (policy, instances): (&Path, &[PathBuf]),
    store: Option<StoreHealth>,
) -> bool {
    match job {
        Job::Stop => false,
        Job::Links(events, seen) => {
            for event in &events {
                match event {
                    LinkEvent::Present { name, ifindex } => log::debug!("link {name} ({ifindex}) present"),
                    LinkEvent::Gone { name, ifindex } => log::debug!("link {name} ({ifindex}) gone"),
                    LinkEvent::Resync => log::debug!("re-reading interfaces"),
                }
            }
            match agent.reconcile_interfaces() {
                Ok(Some(generation)) => log::info!(
                    "generation {generation} follows the interfaces {:.1} ms after the kernel reported the change",
                    seen.elapsed().as_secs_f64() * 1000.0
                ),
                Ok(None) => {}
                Err(e) => log::error!(
                    "interfaces changed but generation {} could not follow: {e}; retried on the next change or apply",
                    agent.generation
                ),
            }
            false
        }
        Job::Api(call) => {
            call.run(agent, policy);
            false
        }
        Job::Reload => {
            notify::reloading();
            let result = read_inputs(policy, instances)
                .map_err(|e| e.to_string())
                .and_then(|i| agent.apply(&i.document, &i.instances).map_err(|e| e.to_string()));
            match result {
                Ok(summary) => {
                    log_warnings(&summary.warnings, policy, instances);
                    notify::ready(summary.generation);
                }
                Err(e) => {
                    log::error!("SIGHUP apply failed, generation {} stays in force: {e}", agent.generation);
                    notify::reload_failed(agent.generation);
                }
            }
            false
        }
        Job::Control { request, reply } => {
            let (response, stop) = handle(agent, request, gc, store);
            let _ = reply.send((response, stop));
            stop
        }
        Job::Store(proposal) => {
            let first = store.is_some_and(|s| s.generation.is_none());
            // The first document adopts what a previous agent left pinned if it compiles to it.
            let result = match agent.live {
                None => agent.start(&proposal.document, &[] as &[&str]),
                Some(_) => agent.apply(&proposal.document, &[] as &[&str]).map(|summary| summary.generation),
            };
            let outcome = match result {
                Ok(generation) => {
                    if first {
                        // The node is protected as the store says: ready (systemd).
                        notify::ready(generation);
                    }
                    let warnings = agent.live.as_ref().map(|l| l.document.warnings.clone()).unwrap_or_default();
                    Outcome::Live { generation, warnings }
                }
                Err(crate::agent::ApplyError::Invalid(invalid)) => Outcome::Invalid(invalid),
                Err(crate::agent::ApplyError::Runtime(e)) => Outcome::Failed(e.to_string()),
            };
            let _ = proposal.reply.send(outcome);
            false
        }
    }
}

/// Handles one control request on the agent thread; the flag says whether the agent stops.
fn handle(
    agent: &mut Agent,
    request: Request,
    gc: Option<&std::sync::Mutex<crate::conntrack::gc::GcStats>>,
    store: Option<StoreHealth>,
) -> (Response, bool) {
    let response = match request {
        Request::Rules => Response::of(&agent.rule_hits()),
        Request::Flows => Response::error(1, "flow logs are not available in this agent"),
        Request::Status => {
            let mut view = agent.view();
            view.gc = gc.and_then(|g| g.lock().ok().map(|s| s.clone()));
            view.store = store.clone();
            match status::collect(&agent.enforcer.maps, agent.enforcer.pins(), Some(&view)) {
                Ok(s) => Response::of(&s),
                Err(e) => Response::error(1, e.to_string()),
            }
        }
        // In fleet mode the store is the one source of truth: a local document would be undone
        // by the next change in the store, and differ from every other node's until then.
        Request::Apply { .. } if let Some(store) = &store => Response::error(
            1,
            format!(
                "this agent follows the store {} (prefix {}) as node {}: write documents there \
                 (sg-agent fleet apply FILE --store ...)",
                store.store, store.prefix, store.node
            ),
        ),
        Request::Apply { document, instances } => match agent.apply(&document, &instances) {
            Ok(summary) => Response::of(&summary),
            Err(crate::agent::ApplyError::Invalid(invalid)) => Response::invalid(&invalid),
            Err(e) => Response::error(e.exit_code(), e.to_string()),
        },
        Request::Explain { query } => match &agent.live {
            None => Response::error(1, "no policy applied yet"),
            Some(live) => match explain::explain_compiled(&live.document, &live.compiled, &query) {
                Ok(e) => Response::of(&e),
                Err(e) => Response::error(2, e.to_string()),
            },
        },
        Request::Interface { name } => Response::of(&agent.interface_state(&name)),
        Request::Teardown => match datapath::teardown(agent.enforcer.pins()) {
            Ok(detached) => {
                log::info!("teardown: enforcement removed from {}", detached.join(", "));
                return (Response::ok(serde_json::json!({ "detached": detached })), true);
            }
            Err(e) => Response::error(1, e.to_string()),
        },
    };
    (response, false)
}

/// One control-socket client: read the request within its deadline, hand it to the agent
/// thread, answer. Flow-log streams are served here, without the agent thread.
async fn serve_client(
    stream: UnixStream,
    uploads: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
    flows: Option<broadcast::Sender<Arc<Vec<FlowRecord>>>>,
    stop: Arc<Notify>,
) {
    let mut stream = BufReader::new(stream);
    let deadlines = control::Deadlines { request_line: REQUEST_DEADLINE, documents: UPLOAD_DEADLINE };
    // `_upload` (an apply's documents' share of the budget) is held until the apply is done.
    let (request, _upload) = match control::read_request(&mut stream, deadlines, &uploads).await {
        Ok(r) => r,
        Err(bad) => return answer(&mut stream, &bad).await,
    };
    if let Request::Flows = request {
        match flows {
            Some(tx) => stream_flows(stream, tx.subscribe()).await,
            None => answer(&mut stream, &Response::error(1, "flow logs are not available in this agent")).await,
        }
        return;
    }
    let (reply, answered) = oneshot::channel();
    if jobs.send(Job::Control { request, reply }).await.is_err() {
        return answer(&mut stream, &Response::error(1, "the agent is stopping")).await;
    }
    let Ok((response, stops)) = answered.await else {
        return answer(&mut stream, &Response::error(1, "the agent stopped before answering")).await;
    };
    answer(&mut stream, &response).await;
    if stops {
        stop.notify_one();
    }
}

async fn answer(stream: &mut BufReader<UnixStream>, response: &Response) {
    match tokio::time::timeout(ANSWER_DEADLINE, control::write_response(stream, response)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::debug!("control client went away: {e}"),
        Err(_) => log::debug!("control client did not read its answer in time"),
    }
}

async fn refuse_busy(stream: UnixStream) {
    let mut stream = BufReader::new(stream);
    let busy = Response::error(1, format!("the agent is serving {MAX_CLIENTS} clients already; try again"));
    answer(&mut stream, &busy).await;
}

/// Streams flow-log records to a `sg-agent flows` client: a first line saying it starts, then
/// one JSON record per line, until the client goes away. A slow client that falls behind misses
/// windows (the channel is bounded) rather than holding memory.
async fn stream_flows(
    mut stream: BufReader<UnixStream>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Vec<FlowRecord>>>,
) {
    let mut hello = serde_json::to_vec(&Response::ok(serde_json::json!({ "streaming": "flows" }))).unwrap_or_default();
    hello.push(b'\n');
    if stream.get_mut().write_all(&hello).await.is_err() {
        return;
    }
    loop {
        let batch = match rx.recv().await {
            Ok(batch) => batch,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
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
