//! Fleet mode (SPEC §8): how fast a change committed to the store is live on every agent, and
//! how fast an agent loads a large store.
//!
//! - *commit → live*: three agents, each in its own node namespace with one instance, follow one
//!   etcd in the fabric namespace. A writer (this process, from inside the fabric namespace)
//!   commits a membership change that every agent's document depends on, and watches the
//!   agents' records under `nodes/`: an agent writes its record once the generation built from
//!   the change is live, so the time from sending the write to reading the record is
//!   commit → live → published — an upper bound of commit → live. Changes are sent one after
//!   another, each once the previous one is live everywhere.
//! - *snapshot load*: a store holding 10,000 instances (one of them local), and a new agent
//!   started on it: the agent's own figures for reading the snapshot (one revision, paged) and
//!   applying it (validate, compile, install), and the time from starting the process to the
//!   generation being live (this includes loading the BPF programs).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use etcd_client::{Client, EventType, WatchOptions};
use serde::Serialize;

use super::{Stats, report::Target};
use crate::{
    etcd::{Etcd, Options},
    lab::{Agent, Fleet, STORE_IP, must, run_in},
};

/// Percentiles of a sample, ms.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

impl Percentiles {
    pub fn of(values: &[f64]) -> Percentiles {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            if v.is_empty() {
                return f64::NAN;
            }
            let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1]
        };
        Percentiles { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0), n: v.len() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetResult {
    pub agents: usize,
    /// Commit → live (and published) on every agent: the slowest agent of each change.
    pub every_agent_ms: Percentiles,
    /// The same per agent.
    pub per_agent_ms: BTreeMap<String, Percentiles>,
    /// Changes that were not live everywhere within the time limit.
    pub timeouts: usize,
    pub snapshot_instances: usize,
    /// The new agent's figures: reading the snapshot, applying it, both.
    pub snapshot_read_ms: Stats,
    pub snapshot_apply_ms: Stats,
    pub snapshot_load_ms: Stats,
    /// From starting the agent process to the generation being live.
    pub start_to_live_ms: Stats,
}

const PREFIX: &str = "/sg/v1";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Longest a change may take to be live everywhere before it counts as a timeout.
const CHANGE_LIMIT: Duration = Duration::from_secs(5);

/// The fleet: db on n1 (inbound 5432 from sg-app), app on n2, other on n3, and `remote`
/// instances on no node of this fleet, in sg-app.
fn document(remote: usize) -> String {
    let mut instances = vec![
        r#"{"id":"db","node":"n1","interface":"veth-db","addresses":["10.0.1.10"],"security_groups":["sg-db"]}"#
            .to_owned(),
        r#"{"id":"app","node":"n2","interface":"veth-app","addresses":["10.0.2.10"],"security_groups":["sg-app"]}"#
            .to_owned(),
        r#"{"id":"other","node":"n3","interface":"veth-other","addresses":["10.0.3.10"],"security_groups":["sg-other"]}"#
            .to_owned(),
    ];
    instances.extend((0..remote).map(|i| {
        format!(
            r#"{{"id":"r-{i}","node":"elsewhere","addresses":["10.{}.{}.{}"],"security_groups":["sg-app"]}}"#,
            64 + i / 65536,
            i / 256 % 256,
            i % 256
        )
    }));
    format!(
        r#"{{"security_groups":[{{"id":"sg-db","ingress":[{{"protocol":"tcp","from_port":5432,"to_port":5432,"groups":["sg-app"]}}]}},
            {{"id":"sg-app"}},{{"id":"sg-other"}}],"instances":[{}]}}"#,
        instances.join(",")
    )
}

/// `sg-agent fleet apply` of `document` from the fabric namespace.
fn fleet_apply(agent_binary: &Path, fleet: &Fleet, url: &str, document: &str) {
    let dir = std::env::temp_dir().join(crate::lab::unique("bench-doc"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("doc.json");
    std::fs::write(&path, document).expect("writing the document");
    let binary = agent_binary.to_str().expect("utf-8 path");
    must(&[
        "ip",
        "netns",
        "exec",
        &fleet.fabric.name,
        binary,
        "fleet",
        "apply",
        path.to_str().expect("utf-8"),
        "--prune",
        "--store",
        url,
    ]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the fleet measurements (`changes` commits; `rounds` snapshot loads).
pub fn run(agent_binary: &Path, changes: usize, rounds: usize, log: &dyn Fn(&str)) -> FleetResult {
    let mut fleet = Fleet::new(&NODES);
    fleet.add("n1", "veth-db", 1, 10);
    fleet.add("n2", "veth-app", 2, 10);
    fleet.add("n3", "veth-other", 3, 10);
    let etcd = Etcd::cluster(1, Options::in_netns(&fleet.fabric, STORE_IP));
    let url = etcd.url();
    let endpoint = etcd.members[0].client_url.clone();

    log(&format!("fleet: three agents following {url}; {changes} changes"));
    fleet_apply(agent_binary, &fleet, &url, &document(20));
    // The objects' revision (the agents' records will move the store's on).
    let revision = etcd.revision();
    let agents: Vec<Agent> =
        NODES.iter().map(|n| Agent::start_fleet(agent_binary, &fleet.node(n).node, &url, n, &[])).collect();
    for agent in &agents {
        agent.wait_store(revision, Duration::from_secs(30));
    }
    let (per_change, timeouts) = commit_to_live(&fleet.fabric.name, &endpoint, changes);
    drop(agents);
    let every: Vec<f64> = per_change.iter().filter_map(|c| c.values().copied().reduce(f64::max)).collect();
    let per_agent_ms = NODES
        .iter()
        .map(|n| {
            let v: Vec<f64> = per_change.iter().filter_map(|c| c.get(*n).copied()).collect();
            ((*n).to_owned(), Percentiles::of(&v))
        })
        .collect();
    let every_agent_ms = Percentiles::of(&every);
    log(&format!(
        "fleet: commit → live on every agent p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({timeouts} timeouts)",
        every_agent_ms.p50, every_agent_ms.p99, every_agent_ms.max
    ));

    let instances = 10_000;
    log(&format!("fleet: writing {instances} instances, then starting an agent on them ({rounds} rounds)"));
    fleet_apply(agent_binary, &fleet, &url, &document(instances - 3));
    let (mut read, mut apply, mut load, mut start) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let revision = etcd.revision();
    for round in 0..rounds {
        let started = Instant::now();
        let agent = Agent::start_fleet(agent_binary, &fleet.node("n1").node, &url, "n1", &[]);
        let status = agent.wait_store(revision, Duration::from_secs(60));
        start.push(started.elapsed().as_secs_f64() * 1000.0);
        let snapshot = &status["store"]["last_snapshot"];
        let (r, a) =
            (snapshot["read_ms"].as_f64().unwrap_or(f64::NAN), snapshot["apply_ms"].as_f64().unwrap_or(f64::NAN));
        log(&format!(
            "fleet: round {}: {} objects read in {r:.0} ms, applied in {a:.0} ms; {:.0} ms from the agent's start",
            round + 1,
            snapshot["objects"],
            start.last().copied().unwrap_or_default()
        ));
        read.push(r);
        apply.push(a);
        load.push(r + a);
    }
    drop(etcd);
    FleetResult {
        agents: NODES.len(),
        every_agent_ms,
        per_agent_ms,
        timeouts,
        snapshot_instances: instances,
        snapshot_read_ms: Stats::of(&read),
        snapshot_apply_ms: Stats::of(&apply),
        snapshot_load_ms: Stats::of(&load),
        start_to_live_ms: Stats::of(&start),
    }
}

/// Commits `changes` membership changes from inside namespace `netns`, each once the previous
/// one is live everywhere; per change, each agent's commit → published time (ms). Also the
/// number of changes that timed out.
fn commit_to_live(netns: &str, endpoint: &str, changes: usize) -> (Vec<BTreeMap<String, f64>>, usize) {
    let endpoint = endpoint.to_owned();
    run_in(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let mut client = Client::connect([endpoint.as_str()], None).await.expect("connecting to etcd");
            let nodes_root = format!("{PREFIX}/nodes/");
            let mut watch = client
                .watch(nodes_root.as_str(), Some(WatchOptions::new().with_prefix()))
                .await
                .expect("watching the agents' records");
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64, Instant)>();
            tokio::spawn(async move {
                while let Ok(Some(response)) = watch.message().await {
                    let at = Instant::now();
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        if event.event_type() != EventType::Put || !kv.key().ends_with(b"/state") {
                            continue;
                        }
                        let Ok(state) = serde_json::from_slice::<serde_json::Value>(kv.value()) else { continue };
                        let (Some(node), Some(revision)) = (state["node"].as_str(), state["revision"].as_i64()) else {
                            continue;
                        };
                        let _ = tx.send((node.to_owned(), revision, at));
                    }
                }
            });
            let mut results = Vec::new();
            let mut timeouts = 0;
            for i in 0..changes {
                let groups = if i % 2 == 0 { "\"sg-other\",\"sg-app\"" } else { "\"sg-other\"" };
                let value = format!(
                    r#"{{"id":"other","node":"n3","interface":"veth-other","addresses":["10.0.3.10"],"security_groups":[{groups}]}}"#
                );
                while rx.try_recv().is_ok() {}
                let sent = Instant::now();
                let response = client.put(format!("{PREFIX}/instances/other"), value, None).await.expect("committing");
                let revision = response.header().map_or(0, |h| h.revision());
                let mut live: BTreeMap<String, f64> = BTreeMap::new();
                let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
                while live.len() < NODES.len() {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some((node, r, at))) if r >= revision => {
                            live.entry(node).or_insert_with(|| at.duration_since(sent).as_secs_f64() * 1000.0);
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                if live.len() < NODES.len() {
                    timeouts += 1;
                }
                results.push(live);
                // A pause, so that changes do not ride on each other's generations.
                tokio::time::sleep(Duration::from_millis(10 + (i % 7) as u64 * 3)).await;
            }
            (results, timeouts)
        })
    })
}

/// The fleet targets of SPEC §8.
pub fn targets(r: &FleetResult) -> Vec<Target> {
    vec![
        Target {
            goal: format!("a committed change is live on every agent in < 100 ms (p99, {} agents)", r.agents),
            measured: format!(
                "p99 {:.1} ms, p50 {:.1} ms, max {:.1} ms over {} changes{}",
                r.every_agent_ms.p99,
                r.every_agent_ms.p50,
                r.every_agent_ms.max,
                r.every_agent_ms.n,
                if r.timeouts > 0 { format!(" ({} not live within 5 s)", r.timeouts) } else { String::new() }
            ),
            met: r.every_agent_ms.p99 < 100.0 && r.timeouts == 0,
        },
        Target {
            goal: format!("{} instances load from the store in < 1 s", r.snapshot_instances),
            measured: format!(
                "{:.0} ms (median; read {:.0} ms + apply {:.0} ms), max {:.0} ms",
                r.snapshot_load_ms.median,
                r.snapshot_read_ms.median,
                r.snapshot_apply_ms.median,
                r.snapshot_load_ms.max
            ),
            met: r.snapshot_load_ms.max < 1000.0,
        },
    ]
}

/// The fleet section of `docs/benchmarks.md`.
pub fn markdown(r: &FleetResult) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "\n## Fleet mode (etcd)\n\nThree agents, each in its own node namespace, follow one etcd (Debian's 3.4) in a \
         fabric namespace. *Commit → live*: from sending a write (a membership change every agent's document depends \
         on) to reading each agent's record saying the generation built from it is live — so it includes the \
         record's own write and watch. *Snapshot load*: a new agent on a store of {} instances (one local): reading \
         the snapshot at one revision, then validating, compiling and installing it.\n",
        r.snapshot_instances
    );
    let _ = writeln!(m, "| commit → live, ms | p50 | p90 | p99 | max | changes |\n|---|---|---|---|---|---|");
    let row = |name: &str, p: &Percentiles| {
        format!("| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {} |", p.p50, p.p90, p.p99, p.max, p.n)
    };
    let _ = writeln!(m, "{}", row("every agent (the slowest)", &r.every_agent_ms));
    for (node, p) in &r.per_agent_ms {
        let _ = writeln!(m, "{}", row(&format!("agent {node}"), p));
    }
    let _ = writeln!(m, "\n| snapshot load, ms | min | median | max |\n|---|---|---|---|");
    let cells = |s: &Stats| format!("{:.0} | {:.0} | {:.0}", s.min, s.median, s.max);
    let _ = writeln!(m, "| read (one revision, paged) | {} |", cells(&r.snapshot_read_ms));
    let _ = writeln!(m, "| apply (validate, compile, install) | {} |", cells(&r.snapshot_apply_ms));
    let _ = writeln!(m, "| read + apply | {} |", cells(&r.snapshot_load_ms));
    let _ =
        writeln!(m, "| agent process start → live (includes loading the programs) | {} |", cells(&r.start_to_live_ms));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        let p = Percentiles::of(&v);
        assert_eq!((p.p50, p.p90, p.p99, p.max, p.n), (100.0, 180.0, 198.0, 200.0, 200));
        assert!(Percentiles::of(&[]).p99.is_nan());
    }

    #[test]
    fn the_documents_are_valid() {
        for n in [0, 20, 9_997] {
            let (doc, compiled) = sg_agent::compile::prepare_for_node::<&str>(&document(n), &[], Some("n1")).unwrap();
            assert_eq!(doc.instances.len(), n + 3);
            assert_eq!(compiled.ifaces.len(), 1);
        }
    }
}
