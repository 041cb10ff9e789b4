//! The benchmark's outputs: `bench/results.json` (machine-readable), `docs/benchmarks.md`
//! (tables and the targets, each checked and said plainly) and `docs/benchmarks.png`.

use std::{fmt::Write as _, path::Path};

use plotters::prelude::*;
use serde::Serialize;

use super::{Stats, apply::ApplyResult, conntrack::ConntrackResult, kernel::KernelResult};

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub kernel: String,
    pub cpus: usize,
    pub date: String,
    pub rounds: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub environment: Environment,
    pub kernel: Vec<KernelResult>,
    pub apply: Vec<ApplyResult>,
    pub conntrack: Option<ConntrackResult>,
    pub e2e: Vec<super::e2e::E2eResult>,
    /// Fleet mode (etcd), when measured.
    pub fleet: Option<super::fleet::FleetResult>,
    pub targets: Vec<Target>,
}

/// A goal from the performance issue, checked against this run.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

fn kernel_median(r: &[KernelResult], variant: &str, family: u8, rules: usize, method: &str) -> Option<f64> {
    r.iter()
        .find(|k| k.variant == variant && k.family == family && k.rules == rules && k.method == method)
        .map(|k| k.ns_per_packet.median)
}

fn apply_median(r: &[ApplyResult], what: &str) -> Option<f64> {
    r.iter().find(|a| a.what.starts_with(what)).map(|a| a.ms.median)
}

/// Checks the performance issue's targets against the results.
pub fn targets(
    kernel: &[KernelResult],
    apply: &[ApplyResult],
    ct: Option<&ConntrackResult>,
    e2e: &[super::e2e::E2eResult],
) -> Vec<Target> {
    let mut out = Vec::new();
    let max_rules = kernel.iter().filter(|k| k.variant == "new flow").map(|k| k.rules).max().unwrap_or(0);
    for family in [4u8, 6] {
        if let (Some(small), Some(big)) = (
            kernel_median(kernel, "new flow", family, 10, "distinct"),
            kernel_median(kernel, "new flow", family, max_rules, "distinct"),
        ) {
            let ratio = big / small;
            out.push(Target {
                goal: format!("IPv{family}: new-flow cost at {max_rules} rules ≤ 1.2× the cost at 10 rules"),
                measured: format!("{big:.0} ns vs {small:.0} ns = {ratio:.2}×"),
                met: ratio <= 1.2,
            });
        }
        if let (Some(base), Some(fast)) = (
            kernel_median(kernel, "parse-only baseline", family, 0, "repeat"),
            kernel_median(kernel, "tracked flow (fast path)", family, 0, "repeat"),
        ) {
            let ratio = fast / base;
            out.push(Target {
                goal: format!("IPv{family}: tracked-flow fast path ≤ 1.3× the parse-only baseline"),
                measured: format!("{fast:.0} ns vs {base:.0} ns = {ratio:.2}×"),
                met: ratio <= 1.3,
            });
        }
    }
    if let Some(ms) = apply_median(apply, "sg-agent: validate + compile + swap") {
        out.push(Target {
            goal: "apply of a 10,000-rule document (validate + compile + swap) < 50 ms".into(),
            measured: format!(
                "{ms:.1} ms (nft -f: sets {:.1} ms, chain {:.1} ms)",
                apply_median(apply, "nft -f, conc").unwrap_or(f64::NAN),
                apply_median(apply, "nft -f, one").unwrap_or(f64::NAN)
            ),
            met: ms < 50.0,
        });
    }
    if let Some(ms) = apply_median(apply, "sg-agent: one membership change") {
        out.push(Target {
            goal: "one membership change < 5 ms".into(),
            measured: format!("{ms:.2} ms"),
            met: ms < 5.0,
        });
    }
    if let Some(ct) = ct {
        let mib = ct.memory_bytes as f64 / 1048576.0;
        out.push(Target {
            goal: "1M tracked IPv4 flows in ≤ 96 bytes per flow of map memory".into(),
            measured: format!(
                "{mib:.1} MiB for {} flows ({:.0} bytes per flow; IPv6: {:.0} bytes per flow, allocated on demand)",
                ct.capacity, ct.bytes_per_entry, ct.ipv6_bytes_per_entry
            ),
            met: ct.capacity >= 1 << 20 && ct.bytes_per_entry <= 96.0,
        });
    }
    out.extend(super::e2e::targets(e2e));
    out
}

fn stats_cells(s: &Stats, decimals: usize) -> String {
    format!("{:.*} | {:.*} | {:.*}", decimals, s.min, decimals, s.median, decimals, s.max)
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Benchmarks\n");
    let _ = writeln!(
        m,
        "Produced by `cargo xtask bench` on {} ({} CPUs, kernel {}); {} interleaved rounds per figure, \
         reported as min / median / max over rounds. These machines are shared and noisy: read the ratios, \
         which are taken within one run, rather than the absolute times. Raw numbers: \
         [bench/results.json](../bench/results.json).\n",
        r.environment.date, r.environment.cpus, r.environment.kernel, r.environment.rounds
    );
    let _ = writeln!(m, "## Targets\n\n| goal | measured | |\n|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(m, "| {} | {} | {} |", t.goal, t.measured, if t.met { "met" } else { "**MISSED**" });
    }
    let _ = writeln!(m, "\n![new-flow and fast-path cost](benchmarks.png)\n");
    let _ = writeln!(
        m,
        "## In-kernel cost per packet (`BPF_PROG_TEST_RUN`, 64-byte TCP frames)\n\n\
         *repeat*: one frame run 200,000 times in the kernel's loop. *distinct*: 4,096 different frames, one run \
         each (new flows must be distinct, or they are tracked after the first run); this includes the test \
         runner's per-call timer, so compare *distinct* with *distinct*.\n"
    );
    let _ = writeln!(m, "| path | IP | rules | method | min ns | median ns | max ns |\n|---|---|---|---|---|---|---|");
    for k in &r.kernel {
        let rules = if k.rules == 0 { "-".to_owned() } else { k.rules.to_string() };
        let _ = writeln!(
            m,
            "| {} | v{} | {} | {} | {} |",
            k.variant,
            k.family,
            rules,
            k.method,
            stats_cells(&k.ns_per_packet, 0)
        );
    }
    let _ = writeln!(
        m,
        "\n## Policy apply latency\n\n| what | rules | min ms | median ms | max ms |\n|---|---|---|---|---|"
    );
    for a in &r.apply {
        let _ = writeln!(m, "| {} | {} | {} |", a.what, a.rules, stats_cells(&a.ms, 2));
    }
    if let Some(ct) = &r.conntrack {
        let _ = writeln!(
            m,
            "\n## Conntrack\n\n- IPv4 table: {} flows, {:.1} MiB of kernel memory ({:.0} bytes per flow: 48-byte element \
             header, 16-byte compact key, 8-byte value, 16-byte hash bucket); preallocated, so its cost does not change \
             with load.\n- IPv6 table (44-byte keys), allocated as flows arrive: {:.0} bytes per flow measured.\n- Garbage \
             collection over {} entries (batched reads, then one batched delete of the expired entries): \
             {} ns per entry with half of them expired (min / median / max), {} ns per entry when none has (the steady \
             state). It runs on its own thread with its own map handles; the datapath never waits for it (expired \
             entries are ignored by the datapath whether or not they have been collected).",
            ct.capacity,
            ct.memory_bytes as f64 / 1048576.0,
            ct.bytes_per_entry,
            ct.ipv6_bytes_per_entry,
            ct.gc_entries,
            stats_cells(&ct.gc_ns_per_entry_half_expired, 0).replace(" | ", " / "),
            stats_cells(&ct.gc_ns_per_entry_none_expired, 0).replace(" | ", " / "),
        );
    }
    m.push_str(&super::e2e::markdown(&r.e2e));
    if let Some(fleet) = &r.fleet {
        m.push_str(&super::fleet::markdown(fleet));
    }
    m
}

/// The plot: new-flow cost against the number of rules, with the fast path and the baseline.
pub fn plot(r: &Results, path: &Path) -> Result<(), String> {
    if let Ok(bytes) = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf") {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()));
    }
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let series = |variant: &str, family: u8| -> Vec<(f64, Stats)> {
        let mut v: Vec<(f64, Stats)> = r
            .kernel
            .iter()
            .filter(|k| k.variant == variant && k.family == family && k.method == "distinct")
            .map(|k| (k.rules.max(1) as f64, k.ns_per_packet))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let flat = |variant: &str, family: u8| {
        r.kernel
            .iter()
            .find(|k| k.variant == variant && k.family == family && k.method == "distinct")
            .map(|k| k.ns_per_packet.median)
    };
    // Scaled to the medians (an outlier's bar is clipped rather than flattening the lines).
    let max_y =
        r.kernel.iter().filter(|k| k.method == "distinct").map(|k| k.ns_per_packet.median).fold(0.0, f64::max).max(1.0)
            * 1.6;
    let max_x = r.kernel.iter().map(|k| k.rules).max().unwrap_or(10).max(10) as f64 * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption("sg-agent in-kernel cost per packet (BPF_PROG_TEST_RUN)", ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((5.0f64..max_x).log_scale(), 0.0..max_y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("rules per instance")
        .y_desc("ns per packet (median, bars: min-max)")
        .draw()
        .map_err(|e| e.to_string())?;
    let colours = [(4u8, RED), (6u8, BLUE)];
    for (family, colour) in colours {
        let points = series("new flow", family);
        chart
            .draw_series(LineSeries::new(points.iter().map(|(x, s)| (*x, s.median)), colour.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("new flow, IPv{family}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(
                points.iter().map(|(x, s)| ErrorBar::new_vertical(*x, s.min, s.median, s.max, colour.filled(), 6)),
            )
            .map_err(|e| e.to_string())?;
        for (variant, style) in
            [("tracked flow (fast path)", colour.mix(0.6)), ("parse-only baseline", colour.mix(0.3))]
        {
            if let Some(y) = flat(variant, family) {
                chart
                    .draw_series(LineSeries::new([(5.0, y), (max_x, y)], style.stroke_width(1)))
                    .map_err(|e| e.to_string())?
                    .label(format!("{variant}, IPv{family}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style.stroke_width(1)));
            }
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
