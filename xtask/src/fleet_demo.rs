//! The fleet demo behind `cargo xtask run --fleet`: three nodes, one etcd, an agent per node,
//! and a security group reference across nodes, on namespaces made here and removed on exit.
//!
//! ```text
//!   db    10.0.1.10 ── node n1 (agent) ──┐
//!   app   10.0.2.10 ── node n2 (agent) ──┼── fabric: etcd on 192.168.254.254
//!   batch 10.0.3.10 ── node n3 (agent) ──┘
//! ```
//!
//! Policy (examples/fleet.json, written to the store with `fleet apply`): db takes PostgreSQL
//! and ping from sg-app. Then batch (on n3) joins sg-app (examples/fleet-changes/batch-joins-app.json),
//! and db on n1 admits it.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sg_lab::{
    etcd::{Etcd, Options},
    lab::{Agent, Fleet, STORE_IP, TcpServer, ping_ok, tcp_ok},
};

use crate::demo::{catch_interrupts, say, wait_for_interrupt};

pub fn run(agent_binary: &Path) -> Result<()> {
    if !Path::new(sg_lab::etcd::ETCD).exists() {
        bail!("{} is missing: scripts/setup-toolchain.sh installs etcd", sg_lab::etcd::ETCD);
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let policy = examples.join("fleet.json");
    let change = examples.join("fleet-changes/batch-joins-app.json");

    catch_interrupts();
    say!("fleet demo: creating namespaces: a fabric, nodes n1, n2, n3, instances db, app, batch");
    let mut fleet = Fleet::new(&["n1", "n2", "n3"]);
    fleet.add("n1", "veth-db", 1, 10);
    fleet.add("n2", "veth-app", 2, 10);
    fleet.add("n3", "veth-batch", 3, 10);
    say!("fleet demo: starting etcd in {} on {STORE_IP}", fleet.fabric.name);
    let etcd = Etcd::cluster(1, Options::in_netns(&fleet.fabric, STORE_IP));
    let url = etcd.url();
    let fleet_cmd = |args: &[&str]| -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &fleet.fabric.name])
            .arg(agent_binary)
            .arg("fleet")
            .args(args)
            .args(["--store", &url])
            .output()
            .context("running sg-agent fleet")?;
        if !out.status.success() {
            bail!("sg-agent fleet {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };

    say!("fleet demo: sg-agent fleet apply {}", policy.display());
    let written = fleet_cmd(&["apply", policy.to_str().context("path")?])?;
    say!("  {}", written.trim_end());
    let revision = revision_of(&written)?;
    let agents: Vec<(&str, Agent)> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|n| {
            say!("fleet demo: starting the agent of {n}: sg-agent run --store {url} --node {n}");
            (n, Agent::start_fleet(agent_binary, &fleet.node(n).node, &url, n, &[]))
        })
        .collect();
    for (_, agent) in &agents {
        agent.wait_store(revision, Duration::from_secs(30));
    }

    let (db, app, batch) = (fleet.host("n1", "veth-db"), fleet.host("n2", "veth-app"), fleet.host("n3", "veth-batch"));
    let db4 = db.v4.context("db has no IPv4")?;
    let db6 = db.v6.context("db has no IPv6")?;
    let _servers = [TcpServer::start(&db.ns, db4, 5432), TcpServer::start(&db.ns, db6, 5432)];
    let probe = |what: &str, ok: bool, expect: bool| {
        say!(
            "{what:<48} {:<8} {}",
            if ok { "ALLOWED" } else { "DENIED" },
            if ok == expect { "as expected" } else { "UNEXPECTED" }
        );
    };
    say!("\n{:<48} {:<8}", "probe", "result");
    probe("app (n2)   → db (n1) PostgreSQL", tcp_ok(&app.ns, db4, 5432), true);
    probe("app (n2)   → db (n1) PostgreSQL, IPv6", tcp_ok(&app.ns, db6, 5432), true);
    probe("app (n2)   → db (n1) ping", ping_ok(&app.ns, db4), true);
    probe("batch (n3) → db (n1) PostgreSQL", tcp_ok(&batch.ns, db4, 5432), false);

    say!("\nfleet demo: batch (an instance of n3) joins sg-app: sg-agent fleet apply {}", change.display());
    let started = Instant::now();
    let written = fleet_cmd(&["apply", change.to_str().context("path")?])?;
    let revision = revision_of(&written)?;
    for (_, agent) in &agents {
        agent.wait_store(revision, Duration::from_secs(10));
    }
    say!("  {}", written.trim_end());
    say!("  live on all three agents {:.0} ms after the write began", started.elapsed().as_secs_f64() * 1000.0);
    probe("batch (n3) → db (n1) PostgreSQL", tcp_ok(&batch.ns, db4, 5432), true);

    say!("\nsg-agent fleet status:");
    say!("{}", fleet_cmd(&["status"])?.trim_end());
    say!("\nThe agents keep following the store. Try it yourself (in another shell, as root):");
    say!("  ip netns exec {} {} fleet export --store {url}", fleet.fabric.name, agent_binary.display());
    for (n, agent) in &agents {
        say!(
            "  ip netns exec {} {} status --pin-path {} --socket {}   # the agent of {n}",
            fleet.node(n).node.name,
            agent_binary.display(),
            agent.pins.display(),
            agent.socket.display()
        );
    }
    say!("\nCtrl-C stops the demo and removes everything it created.");
    wait_for_interrupt();
    say!("\nfleet demo: cleaning up");
    drop(agents);
    drop(etcd);
    drop(fleet);
    Ok(())
}

/// The store revision in `fleet apply`'s "revision N: ..." line.
fn revision_of(written: &str) -> Result<i64> {
    written
        .split_whitespace()
        .nth(1)
        .and_then(|r| r.trim_end_matches(':').parse().ok())
        .with_context(|| format!("no revision in {written:?}"))
}
