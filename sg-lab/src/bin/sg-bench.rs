//! The benchmark runner behind `cargo xtask bench` (root). Writes `bench/results.json`,
//! `docs/benchmarks.md` and `docs/benchmarks.png` under `--out` (the workspace).

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use sg_agent::datapath::{Enforcer, LoadOptions, PinLayout, TcModeChoice, XdpModeChoice};
use sg_lab::{
    bench::{self, apply, conntrack, e2e, fleet, kernel, report},
    lab::Bpffs,
};

#[derive(Parser)]
struct Args {
    /// Workspace root to write bench/ and docs/ into.
    #[arg(long)]
    out: PathBuf,
    /// The agent binary (for the end-to-end runs).
    #[arg(long)]
    agent: PathBuf,
    /// Rounds per figure.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Fewer rounds and shorter runs (a smoke test of the benchmark itself).
    #[arg(long)]
    quick: bool,
    /// Skip the end-to-end veth runs (minutes).
    #[arg(long)]
    no_e2e: bool,
    /// Skip fleet mode (etcd and three agents).
    #[arg(long)]
    no_fleet: bool,
    /// Fleet mode: changes committed for commit → live (at least 200 in a full run).
    #[arg(long, default_value_t = 200)]
    fleet_changes: usize,
    /// Run only these parts (kernel, apply, conntrack, e2e, fleet), print them, and write
    /// nothing: for working on one figure.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let log = |m: &str| eprintln!("bench: {m}");
    let rounds = if args.quick { 2 } else { args.rounds };
    let rule_counts = [10usize, 100, 1_000, 10_000];

    if bench::OBJECT.is_empty() {
        eprintln!(
            "bench: sg-bench was built without its kernel programs (bpf-linker missing at build time); run scripts/setup-toolchain.sh and rebuild"
        );
        return std::process::ExitCode::FAILURE;
    }
    let bpffs = Bpffs::new();
    let options = LoadOptions { conntrack_max: 1 << 20, xdp_mode: XdpModeChoice::Auto, tc_mode: TcModeChoice::Auto };
    let mut dp = match Enforcer::load_object(bench::OBJECT, PinLayout::new(bpffs.pin_path()), options) {
        Ok(dp) => dp,
        Err(e) => {
            eprintln!("bench: loading the programs: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let baseline = match kernel::Baseline::load(bench::OBJECT, &bpffs.dir.join("baseline")) {
        Ok(baseline) => baseline,
        Err(e) => {
            eprintln!("bench: loading the baseline program: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let part = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let kernel = if part("kernel") { kernel::run(&mut dp, &baseline, &rule_counts, rounds, &log) } else { Vec::new() };
    drop(baseline);
    let apply = if part("apply") { apply::run(&mut dp, 10_000, rounds, &log) } else { Vec::new() };
    let conntrack = part("conntrack")
        .then(|| conntrack::run(&mut dp, if args.quick { 20_000 } else { 250_000 }, rounds.min(3), &log));
    drop(dp);
    drop(bpffs);
    let e2e = if args.no_e2e || !part("e2e") {
        Vec::new()
    } else {
        let duration = Duration::from_millis(if args.quick { 300 } else { 1000 });
        e2e::run(&args.agent, &[10, 1_000, 10_000], if args.quick { 1 } else { rounds.min(3) }, duration, &log)
    };
    let fleet = if args.no_fleet || !part("fleet") || !etcd_installed(&log) {
        None
    } else {
        let changes = if args.quick { args.fleet_changes.min(50) } else { args.fleet_changes.max(200) };
        Some(fleet::run(&args.agent, changes, rounds.min(3), &log))
    };
    let mut targets = report::targets(&kernel, &apply, conntrack.as_ref(), &e2e);
    targets.extend(fleet.iter().flat_map(fleet::targets));
    let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let results = report::Results {
        environment: report::Environment {
            kernel: kernel_release,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            date,
            rounds,
        },
        kernel,
        apply,
        conntrack,
        e2e,
        fleet,
        targets,
    };
    if !args.only.is_empty() {
        for k in &results.kernel {
            println!(
                "{:<32} v{} {:>6} rules {:<8} {:>8.1} ns (min {:.1}, max {:.1})",
                k.variant,
                k.family,
                k.rules,
                k.method,
                k.ns_per_packet.median,
                k.ns_per_packet.min,
                k.ns_per_packet.max
            );
        }
        for a in &results.apply {
            println!("{:<56} {:>8.1} ms (min {:.1}, max {:.1})", a.what, a.ms.median, a.ms.min, a.ms.max);
        }
        if let Some(fleet) = &results.fleet {
            print!("{}", fleet::markdown(fleet));
        }
        for t in &results.targets {
            println!("{} {}: {}", if t.met { "met   " } else { "MISSED" }, t.goal, t.measured);
        }
        return std::process::ExitCode::SUCCESS;
    }
    let bench_dir = args.out.join("bench");
    let docs_dir = args.out.join("docs");
    let _ = std::fs::create_dir_all(&bench_dir);
    let _ = std::fs::create_dir_all(&docs_dir);
    let json = serde_json::to_string_pretty(&results).unwrap_or_default();
    let md = report::markdown(&results);
    let wrote = std::fs::write(bench_dir.join("results.json"), json)
        .and_then(|()| std::fs::write(docs_dir.join("benchmarks.md"), &md));
    if let Err(e) = wrote {
        eprintln!("bench: writing results: {e}");
        return std::process::ExitCode::FAILURE;
    }
    if let Err(e) = report::plot(&results, &docs_dir.join("benchmarks.png")) {
        eprintln!("bench: plot: {e}");
    }
    for t in &results.targets {
        println!("{} {}: {}", if t.met { "met   " } else { "MISSED" }, t.goal, t.measured);
    }
    std::process::ExitCode::SUCCESS
}

/// Whether etcd is installed for the fleet figures (said, and skipped, when it is not).
fn etcd_installed(log: &dyn Fn(&str)) -> bool {
    let there =
        std::path::Path::new(sg_lab::etcd::ETCD).exists() && std::path::Path::new(sg_lab::etcd::ETCDCTL).exists();
    if !there {
        log("fleet mode skipped: etcd is not installed (scripts/setup-toolchain.sh installs it)");
    }
    there
}
