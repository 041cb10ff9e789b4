//! Flow logs (`sg-agent flows`): events from the kernel's ring buffer, aggregated per flow over
//! a window, published as records with the fields of AWS VPC Flow Logs.
//!
//! Costs are bounded at every step: the datapath only writes events while a reader is attached,
//! within a per-CPU token bucket (`FlowConfig`); the ring buffer is fixed-size; a window keeps at
//! most [`MAX_FLOWS_PER_WINDOW`] flows, and everything beyond those limits is counted and shown
//! as `SKIPDATA` rather than queued.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, PerCpuArray, PerCpuValues, RingBuf};
use serde::{Deserialize, Serialize};
use sg_common::{
    maps::{FlowConfig, FlowEvent, addr_to_ip},
    verdict::{NO_RULE, Reason},
};
use tokio::{io::unix::AsyncFd, sync::broadcast};

use crate::clock::unix_seconds;

/// Flows remembered per window; more are counted as skipped.
pub const MAX_FLOWS_PER_WINDOW: usize = 50_000;
/// Events per second per CPU while a reader is attached.
pub const EVENTS_PER_SEC_PER_CPU: u32 = 50_000;

/// One flow-log record: VPC Flow Logs version 2 fields, then sg-agent's own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowRecord {
    pub version: u8,
    pub account_id: String,
    /// The interface (AWS: the ENI id).
    pub interface_id: String,
    pub srcaddr: IpAddr,
    pub dstaddr: IpAddr,
    pub srcport: u16,
    pub dstport: u16,
    pub protocol: u8,
    pub packets: u64,
    pub bytes: u64,
    /// Unix seconds of the first and last packet in the window.
    pub start: u64,
    pub end: u64,
    /// ACCEPT or REJECT.
    pub action: String,
    /// OK, or SKIPDATA when events were skipped in this window (the summary record).
    pub log_status: String,
    pub instance: Option<String>,
    /// The group and rule that allowed the flow (first packet judged by the rules), if any:
    /// `rule_id` like `ingress[2]`, `rule` in words.
    pub group: Option<String>,
    pub rule_id: Option<String>,
    pub rule: Option<String>,
    /// Why the datapath decided (e.g. allowed_tracked, dropped_no_rule, audit_would_drop).
    pub reason: String,
}

impl FlowRecord {
    /// The default space-separated format of VPC Flow Logs (version 2 fields in order), then
    /// the instance, group and rule (`-` when none).
    pub fn default_format(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            self.version,
            self.account_id,
            self.interface_id,
            self.srcaddr,
            self.dstaddr,
            self.srcport,
            self.dstport,
            self.protocol,
            self.packets,
            self.bytes,
            self.start,
            self.end,
            self.action,
            self.log_status,
            self.instance.as_deref().unwrap_or("-"),
            self.group.as_deref().unwrap_or("-"),
            self.rule_id.as_deref().unwrap_or("-"),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowId {
    ifindex: u32,
    family: u8,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    pass: bool,
}

#[derive(Debug, Clone)]
struct Aggregate {
    packets: u64,
    bytes: u64,
    start: u64,
    end: u64,
    /// The rule of the first rule-judged packet; else the last reason seen.
    rule: u32,
    reason: u8,
}

/// Names for the records: interfaces, instances, rules of the live generation.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub interfaces: HashMap<u32, (String, Option<String>)>,
    /// Rule index → (group, rule id, rule in words).
    pub rules: Vec<(String, String, String)>,
}

pub type SharedNames = Arc<Mutex<Names>>;

fn reason_name(code: u8) -> String {
    Reason::ALL.iter().find(|r| **r as u8 == code).map_or("unknown", |r| r.name()).to_owned()
}

/// Turns a window's aggregates into records.
fn records(window: &HashMap<FlowId, Aggregate>, names: &Names, skipped: u64, end: u64) -> Vec<FlowRecord> {
    let mut out: Vec<FlowRecord> = window
        .iter()
        .map(|(id, a)| {
            let (interface, instance) =
                names.interfaces.get(&id.ifindex).cloned().unwrap_or_else(|| (format!("#{}", id.ifindex), None));
            let rule = (a.rule != NO_RULE).then(|| names.rules.get(a.rule as usize)).flatten();
            let icmp = id.proto == 1 || id.proto == 58;
            FlowRecord {
                version: 2,
                account_id: "-".into(),
                interface_id: interface,
                srcaddr: addr_to_ip(id.family, &id.src),
                dstaddr: addr_to_ip(id.family, &id.dst),
                // VPC Flow Logs report 0 ports for ICMP.
                srcport: if icmp { 0 } else { id.sport },
                dstport: if icmp { 0 } else { id.dport },
                protocol: id.proto,
                packets: a.packets,
                bytes: a.bytes,
                start: a.start,
                end: a.end,
                action: if id.pass { "ACCEPT" } else { "REJECT" }.into(),
                log_status: "OK".into(),
                instance,
                group: rule.map(|r| r.0.clone()),
                rule_id: rule.map(|r| r.1.clone()),
                rule: rule.map(|r| r.2.clone()),
                reason: reason_name(a.reason),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.start, &a.interface_id, a.srcaddr, a.srcport).cmp(&(b.start, &b.interface_id, b.srcaddr, b.srcport))
    });
    if skipped > 0 {
        out.push(FlowRecord {
            version: 2,
            account_id: "-".into(),
            interface_id: "-".into(),
            srcaddr: IpAddr::from([0, 0, 0, 0]),
            dstaddr: IpAddr::from([0, 0, 0, 0]),
            srcport: 0,
            dstport: 0,
            protocol: 0,
            packets: skipped,
            bytes: 0,
            start: end,
            end,
            action: "-".into(),
            log_status: "SKIPDATA".into(),
            instance: None,
            group: None,
            rule_id: None,
            rule: None,
            reason: "events skipped (rate limit or window full)".into(),
        });
    }
    out
}

/// The flow logger: owns the ring buffer and the switch, publishes each window's records.
pub struct FlowLogger {
    pub tx: broadcast::Sender<Arc<Vec<FlowRecord>>>,
}

impl FlowLogger {
    /// Starts reading `ring`; the datapath writes events only while someone subscribes.
    pub fn start(
        ring: RingBuf<MapData>,
        mut config: PerCpuArray<MapData, FlowConfig>,
        names: SharedNames,
        skipped_in_kernel: impl Fn() -> u64 + Send + 'static,
        window: Duration,
    ) -> std::io::Result<FlowLogger> {
        let (tx, _) = broadcast::channel(16);
        let publisher = tx.clone();
        // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf, and
        // always returns that same fd.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tokio::spawn(async move {
            let mut current: HashMap<FlowId, Aggregate> = HashMap::new();
            let mut skipped_here = 0u64;
            let mut kernel_skipped_before = skipped_in_kernel();
            let mut enabled = false;
            let mut tick = tokio::time::interval(window);
            tick.tick().await;
            let cpus = aya::util::nr_cpus().unwrap_or(1);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let want = publisher.receiver_count() > 0;
                        if want != enabled {
                            let rate = if want { EVENTS_PER_SEC_PER_CPU } else { 0 };
                            let values = PerCpuValues::try_from(vec![FlowConfig { events_per_sec: rate, ..FlowConfig::default() }; cpus]);
                            if values.is_ok_and(|v| config.set(0, v, 0).is_ok()) {
                                enabled = want;
                            }
                        }
                        let kernel_skipped = skipped_in_kernel();
                        let skipped = skipped_here + kernel_skipped.saturating_sub(kernel_skipped_before);
                        kernel_skipped_before = kernel_skipped;
                        let names = names.lock().map(|n| n.clone()).unwrap_or_default();
                        let batch = records(&current, &names, skipped, unix_seconds(SystemTime::now()));
                        current.clear();
                        skipped_here = 0;
                        if enabled && !batch.is_empty() {
                            let _ = publisher.send(Arc::new(batch));
                        }
                    }
                    guard = ring.readable_mut() => {
                        let Ok(mut guard) = guard else { break };
                        let now = unix_seconds(SystemTime::now());
                        let ring = guard.get_inner_mut();
                        while let Some(item) = ring.next() {
                            if item.len() < std::mem::size_of::<FlowEvent>() {
                                continue;
                            }
                            // SAFETY: the kernel wrote a whole FlowEvent (checked length);
                            // read_unaligned copes with the ring's alignment.
                            let e: FlowEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                            let id = FlowId {
                                ifindex: e.ifindex, family: e.family, proto: e.proto, src: e.src, dst: e.dst,
                                sport: e.sport, dport: e.dport, pass: e.pass != 0,
                            };
                            if !current.contains_key(&id) && current.len() >= MAX_FLOWS_PER_WINDOW {
                                skipped_here += 1;
                                continue;
                            }
                            let a = current.entry(id).or_insert(Aggregate {
                                packets: 0, bytes: 0, start: now, end: now, rule: NO_RULE, reason: e.reason,
                            });
                            a.packets += 1;
                            a.bytes += u64::from(e.bytes);
                            a.end = now;
                            if a.rule == NO_RULE && e.rule != NO_RULE {
                                a.rule = e.rule;
                            }
                            a.reason = e.reason;
                        }
                        guard.clear_ready();
                    }
                }
            }
        });
        Ok(FlowLogger { tx })
    }
}

/// Rule texts for the names table, from a compiled policy.
pub fn rule_names(compiled: &crate::compile::Compiled) -> Vec<(String, String, String)> {
    compiled
        .rules
        .iter()
        .map(|r| (r.group.clone(), format!("{}[{}]", r.direction.name(), r.rule_index), r.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_format_has_the_vpc_fields_in_order_then_ours() {
        let mut window = HashMap::new();
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[10, 0, 2, 10]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 1, 10]);
        let id = FlowId { ifindex: 7, family: 4, proto: 6, src, dst, sport: 40000, dport: 443, pass: true };
        window.insert(id, Aggregate { packets: 3, bytes: 180, start: 100, end: 101, rule: 0, reason: 0 });
        let names = Names {
            interfaces: HashMap::from([(7, ("veth-web".to_owned(), Some("web-1".to_owned())))]),
            rules: vec![("sg-web".into(), "ingress[0]".into(), "sg-web ingress[0]: tcp 443 from 0.0.0.0/0".into())],
        };
        let out = records(&window, &names, 0, 102);
        assert_eq!(
            out[0].default_format(),
            "2 - veth-web 10.0.2.10 10.0.1.10 40000 443 6 3 180 100 101 ACCEPT OK web-1 sg-web ingress[0]"
        );
        let skipped = records(&HashMap::new(), &names, 5, 102);
        assert_eq!(skipped[0].log_status, "SKIPDATA");
        assert_eq!(skipped[0].packets, 5);
    }
}
