//! Conntrack garbage collection. The datapath already treats an expired entry as absent; GC
//! only frees its slot, so a full table of dead flows does not refuse new ones. It runs on its
//! own thread with its own map handles, so a large table never stalls the daemon.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use sg_common::{
    conntrack::is_expired_for,
    maps::{CtEntry, CtKey, Settings},
};

use crate::{
    clock::monotonic_ns,
    datapath::{DatapathError, Maps, PinLayout},
};

/// What garbage collection has done (shown by `status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcStats {
    pub runs: u64,
    pub last_scanned: usize,
    pub last_removed: usize,
    pub last_duration_ms: f64,
    pub total_removed: u64,
}

/// The collector's thread; stopped (and joined) on drop.
pub struct Collector {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<Mutex<GcStats>>,
}

impl Collector {
    /// Expires entries every `interval`, with map handles opened from the pins.
    pub fn start(pins: &PinLayout, interval: Duration) -> Result<Collector, DatapathError> {
        let mut maps = Maps::from_pins(pins)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(GcStats::default()));
        let (stopped, shared) = (stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            // Short ticks so that stopping never waits for a whole interval.
            let tick = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                waited += tick;
                if waited < interval {
                    continue;
                }
                waited = Duration::ZERO;
                let started = Instant::now();
                match expire(&mut maps) {
                    Ok((seen, removed)) => {
                        if removed > 0 {
                            log::debug!("conntrack GC: {removed} of {seen} entries expired");
                        }
                        if let Ok(mut s) = shared.lock() {
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
        });
        Ok(Collector { stop, thread: Some(thread), stats })
    }

    pub fn stats(&self) -> GcStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Removes expired entries; returns (entries seen, entries removed).
pub fn expire(maps: &mut Maps) -> Result<(usize, usize), DatapathError> {
    let settings = maps.read_settings()?;
    let settings = if settings.tcp_established == 0 { Settings::DEFAULT } else { settings };
    // Each entry expires by its interface's instance's timeouts, as the datapath judges it.
    let own = super::iface_timeouts(maps);
    let now = monotonic_ns();
    let entries: Vec<(CtKey, CtEntry)> = maps.conntrack_entries();
    let mut expired = Vec::new();
    for (key, entry) in &entries {
        let own = own.get(&key.ifindex).copied().unwrap_or_default();
        if !is_expired_for(entry, key.proto, &settings, &own, now) {
            continue;
        }
        expired.push(*key);
    }
    // One batched delete, not a syscall per entry (closed TCP connections come and go fast).
    // An entry the datapath re-created since the snapshot (a packet of an expired flow, which
    // is a new flow, allowed by the current rules) may go with it: its next packet is judged by
    // the same rules again and re-creates it, as after a flush.
    let removed = maps.conntrack.remove_all(&expired);
    Ok((entries.len(), removed))
}
