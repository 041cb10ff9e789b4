//! Prometheus metrics (`sg-agent run --metrics ADDR`): the verdict counters (for the node and
//! per instance), EC2-style conntrack metrics, apply durations and build information, read from
//! the pinned maps on each scrape. Everything is in the `sg_agent_` namespace, counters end in
//! `_total` (`promtool check metrics` passes). Opt-in, and meant for a local address; one small
//! plain-HTTP response per request.

use std::fmt::Write as _;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::{
    datapath::{Maps, PinLayout, ifname},
    status::{AgentView, ApplyHistogram, SharedView},
    store::follow::{Connection, StoreHealth},
};

/// A label value, escaped as the text format requires.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `# HELP` and `# TYPE` lines.
fn header(m: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The metrics text.
pub fn render(maps: &Maps, view: &AgentView) -> String {
    let mut m = String::new();
    header(&mut m, "sg_agent_build_info", "gauge", "The running agent's version and pinned-state layout (always 1).");
    let _ = writeln!(
        m,
        "sg_agent_build_info{{version=\"{}\",layout=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        sg_common::LAYOUT_VERSION
    );
    let waiting: Vec<(&String, &String)> =
        view.interfaces.iter().filter(|(_, v)| v.waiting).map(|(name, v)| (name, &v.instance)).collect();
    let attached = view.interfaces.values().filter(|v| v.attachment.is_some()).count();
    header(
        &mut m,
        "sg_agent_interfaces",
        "gauge",
        "Local instances' interfaces, by state (waiting: does not exist yet).",
    );
    let _ = writeln!(m, "sg_agent_interfaces{{state=\"attached\"}} {attached}");
    let _ = writeln!(m, "sg_agent_interfaces{{state=\"waiting\"}} {}", waiting.len());
    header(&mut m, "sg_agent_interface_waiting", "gauge", "A local instance whose interface does not exist (yet).");
    for (interface, instance) in waiting {
        let _ = writeln!(
            m,
            "sg_agent_interface_waiting{{interface=\"{}\",instance=\"{}\"}} 1",
            label(interface),
            label(instance)
        );
    }
    let counters = maps.counters().unwrap_or_default();
    header(&mut m, "sg_agent_packets_total", "counter", "Packets judged on the node, by verdict reason.");
    for (reason, c) in &counters {
        let _ = writeln!(m, "sg_agent_packets_total{{reason=\"{reason}\"}} {}", c.packets);
    }
    header(&mut m, "sg_agent_bytes_total", "counter", "Bytes judged on the node, by verdict reason.");
    for (reason, c) in &counters {
        let _ = writeln!(m, "sg_agent_bytes_total{{reason=\"{reason}\"}} {}", c.bytes);
    }
    // Per instance, as EC2 reports per network interface.
    let by_iface = maps.iface_counters();
    let instance_of = |ifindex: u32| {
        let name = ifname(ifindex);
        let instance = view.interfaces.get(&name).map(|v| v.instance.clone()).unwrap_or_default();
        (name, instance)
    };
    for (metric, help, bytes) in [
        ("sg_agent_instance_packets_total", "Packets judged on an instance's interface, by verdict reason.", false),
        ("sg_agent_instance_bytes_total", "Bytes judged on an instance's interface, by verdict reason.", true),
    ] {
        header(&mut m, metric, "counter", help);
        for (ifindex, reasons) in &by_iface {
            let (interface, instance) = instance_of(*ifindex);
            for (reason, c) in reasons {
                let _ = writeln!(
                    m,
                    "{metric}{{instance=\"{}\",interface=\"{}\",reason=\"{reason}\"}} {}",
                    label(&instance),
                    label(&interface),
                    if bytes { c.bytes } else { c.packets }
                );
            }
        }
    }
    let exceeded = counters.get("conntrack_allowance_exceeded").map_or(0, |c| c.packets);
    let all = maps.conntrack_entries();
    let v4_entries = all.iter().filter(|(k, _)| sg_common::maps::CtKey4::of(k).is_some()).count() as u64;
    let v6_entries = all.len() as u64 - v4_entries;
    let (v4, v6) = maps.conntrack.sizes();
    let (v4_capacity, v6_capacity) = (u64::from(v4.capacity), u64::from(v6.capacity));
    // Each family has its own table: what is left is said per family.
    for (name, help, values) in [
        (
            "sg_agent_conntrack_allowance_available",
            "Flows that can still be tracked before the family's table is full (EC2's conntrack_allowance_available).",
            [v4_capacity.saturating_sub(v4_entries), v6_capacity.saturating_sub(v6_entries)],
        ),
        ("sg_agent_conntrack_entries", "Tracked flows.", [v4_entries, v6_entries]),
        ("sg_agent_conntrack_capacity", "Size of the family's conntrack table.", [v4_capacity, v6_capacity]),
    ] {
        header(&mut m, name, "gauge", help);
        for (family, value) in ["ipv4", "ipv6"].into_iter().zip(values) {
            let _ = writeln!(m, "{name}{{family=\"{family}\"}} {value}");
        }
    }
    let generation = maps.live().ok().flatten().map_or(0, |l| l.generation);
    for (name, kind, help, value) in [
        (
            "sg_agent_conntrack_allowance_exceeded_total",
            "counter",
            "Packets dropped because the conntrack table was full (EC2's conntrack_allowance_exceeded).",
            exceeded,
        ),
        ("sg_agent_policy_generation", "gauge", "Generation of the live policy (0: none).", generation),
        (
            "sg_agent_flow_log_events_skipped_total",
            "counter",
            "Flow-log events not emitted (rate limit).",
            maps.flow_events_skipped(),
        ),
    ] {
        header(&mut m, name, kind, help);
        let _ = writeln!(m, "{name} {value}");
    }
    histogram(
        &mut m,
        "sg_agent_apply_duration_seconds",
        "Applies of this agent: validate, compile, write, swap.",
        &view.apply_seconds,
    );
    if let Some(store) = &view.store {
        render_store(&mut m, store);
    }
    m
}

fn histogram(m: &mut String, name: &str, help: &str, h: &ApplyHistogram) {
    header(m, name, "histogram", help);
    for (bound, count) in ApplyHistogram::BOUNDS.iter().zip(h.buckets) {
        let _ = writeln!(m, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(m, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(m, "{name}_sum {}", h.sum);
    let _ = writeln!(m, "{name}_count {}", h.count);
}

/// Fleet mode: the store connection, the revisions followed and applied, the content's validity.
fn render_store(m: &mut String, h: &StoreHealth) {
    let now = crate::clock::unix_seconds(std::time::SystemTime::now());
    let connected = u64::from(h.connection == Connection::Connected);
    for (name, kind, help, value) in [
        ("sg_agent_store_connected", "gauge", "Whether the store (etcd) answers.", connected),
        (
            "sg_agent_store_connection_state_seconds",
            "gauge",
            "Seconds since the store connection took its state (connected or not).",
            now.saturating_sub(h.since),
        ),
        ("sg_agent_store_revision", "gauge", "The store revision followed.", u64::try_from(h.revision).unwrap_or(0)),
        (
            "sg_agent_store_applied_revision",
            "gauge",
            "The store revision the generation in force was built from.",
            u64::try_from(h.applied_revision).unwrap_or(0),
        ),
        (
            "sg_agent_store_content_valid",
            "gauge",
            "Whether the store's content is a valid document.",
            u64::from(h.content_valid),
        ),
        ("sg_agent_store_snapshots_total", "counter", "Snapshots read from the store.", h.snapshots),
        ("sg_agent_store_watch_restarts_total", "counter", "Watches re-created after they broke.", h.watch_restarts),
        (
            "sg_agent_store_compactions_total",
            "counter",
            "Watches cancelled because the history they needed was compacted.",
            h.compactions,
        ),
        (
            "sg_agent_store_last_error_timestamp_seconds",
            "gauge",
            "When the last call to the store failed (Unix seconds; 0: never). The error is in status and the log.",
            h.last_error_at.unwrap_or(0),
        ),
    ] {
        header(m, name, kind, help);
        let _ = writeln!(m, "{name} {value}");
    }
}

/// Serves `GET /metrics` until the process ends.
pub async fn serve(listener: TcpListener, pins: PinLayout, view: SharedView) {
    let maps = match Maps::from_pins(&pins) {
        Ok(m) => m,
        Err(e) => {
            log::error!("metrics disabled: {e}");
            return;
        }
    };
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let mut buf = [0u8; 8192];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await;
        let Ok(Ok(n)) = read else { continue };
        let request = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
        let (status, body) = if request.starts_with("GET /metrics ") || request.starts_with("GET / ") {
            let view = view.read().map(|v| v.clone()).unwrap_or_default();
            ("200 OK", render(&maps, &view))
        } else {
            ("404 Not Found", "not found; try /metrics\n".to_owned())
        };
        let response = format!(
            "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_and_ends_with_inf_sum_count() {
        let mut h = ApplyHistogram::default();
        for s in [0.0005, 0.003, 0.003, 0.2, 20.0] {
            h.observe(s);
        }
        let mut m = String::new();
        histogram(&mut m, "x_seconds", "help", &h);
        assert!(m.contains("x_seconds_bucket{le=\"0.001\"} 1\n"), "{m}");
        assert!(m.contains("x_seconds_bucket{le=\"0.005\"} 3\n"), "{m}");
        assert!(m.contains("x_seconds_bucket{le=\"0.25\"} 4\n"), "{m}");
        assert!(m.contains("x_seconds_bucket{le=\"10\"} 4\n"), "{m}");
        assert!(m.contains("x_seconds_bucket{le=\"+Inf\"} 5\nx_seconds_sum 20.2065\nx_seconds_count 5\n"), "{m}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
