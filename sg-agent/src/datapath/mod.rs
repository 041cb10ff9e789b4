//! The kernel side as the agent drives it: load the programs (adopting pinned maps), attach
//! them per interface, make compiled policies live, read state back.

pub mod attach;
pub mod batch;
pub mod conntrack_maps;
mod error;
pub mod maps;
pub mod pins;
pub mod rcu;

use std::{collections::BTreeMap, ffi::CString, io, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use serde::{Deserialize, Serialize};
use sg_common::maps::{Settings, names};

use self::rcu::RcuBarrier;
pub use self::{
    attach::{TcAttached, TcModeChoice, XdpAttached, XdpModeChoice},
    error::DatapathError,
    maps::Maps,
    pins::PinLayout,
};
use crate::compile::Compiled;

/// The kernel object, built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg-ebpf"));

/// Whether this binary carries a real kernel object (it does not when built where the eBPF
/// toolchain is missing: then only the offline commands work).
pub fn object_available() -> bool {
    !EBPF_OBJECT.is_empty()
}

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub conntrack_max: u32,
    pub xdp_mode: XdpModeChoice,
    pub tc_mode: TcModeChoice,
}

/// A loaded program, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramInfo {
    pub name: String,
    /// The kernel's program id (`bpftool prog show id N`).
    pub id: u32,
    /// Instructions the verifier processed to accept it: its proof effort (a program near the
    /// kernel's 1M limit is one change away from being rejected).
    pub verified_instructions: Option<u32>,
}

/// An attached interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub ifindex: u32,
    pub xdp: XdpAttached,
    pub tc: TcAttached,
}

/// The kernel side of enforcement: the loaded programs, their maps, and the interfaces they are
/// attached to. Installs compiled policies (`install`) and takes over pinned state (`adopt`).
pub struct Enforcer {
    pins: PinLayout,
    ebpf: Ebpf,
    pub maps: Maps,
    barrier: std::sync::Arc<RcuBarrier>,
    options: LoadOptions,
    /// Interfaces this agent attached or adopted, by name.
    pub attached: BTreeMap<String, Attachment>,
    /// Interfaces of the live policy that do not exist (yet): their instances wait for them.
    pub waiting: std::collections::BTreeSet<String>,
    /// The flow-log ring buffer and switch, until the agent's flow logger takes them.
    pub flow_maps: Option<(
        aya::maps::RingBuf<aya::maps::MapData>,
        aya::maps::PerCpuArray<aya::maps::MapData, sg_common::maps::FlowConfig>,
    )>,
}

/// The name of interface `index` in this network namespace, or `#index` if there is none.
pub fn ifname(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("#{index}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// The interface index of `name`, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

impl Enforcer {
    /// Loads the programs, adopting any maps pinned under `pins` (a restart keeps its
    /// conntrack table and live policy), pinning the rest.
    pub fn load(pins: PinLayout, options: LoadOptions) -> Result<Enforcer, DatapathError> {
        Self::load_object(EBPF_OBJECT, pins, options)
    }

    /// [`Enforcer::load`] from another build of the kernel programs (the benchmarks' object,
    /// which adds a baseline program); `object` must declare the same programs and maps.
    pub fn load_object(object: &[u8], pins: PinLayout, options: LoadOptions) -> Result<Enforcer, DatapathError> {
        if object.is_empty() {
            return Err(DatapathError::NoObject);
        }
        if !pins::on_bpffs(pins.root()) {
            return Err(DatapathError::NotBpffs(pins.root().to_path_buf()));
        }
        for dir in [pins.maps(), pins.links()] {
            std::fs::create_dir_all(&dir).map_err(|e| DatapathError::Io { path: dir.clone(), source: e })?;
        }
        // A layout change: an older agent's links keep enforcing with its programs and maps;
        // move their pins into this layout so that attaching takes them over atomically.
        pins::adopt_older_links(&pins);
        // The IPv4 conntrack table is preallocated (entries never fail to allocate under load);
        // if the memory is not there, take the largest power-of-two fraction that is, and say
        // so. The IPv6 table allocates as flows arrive, up to the same size.
        let mut conntrack_max = options.conntrack_max;
        let mut ebpf = loop {
            let loaded = EbpfLoader::new()
                .default_map_pin_directory(pins.maps())
                .map_max_entries(names::CONNTRACK4, conntrack_max)
                .map_max_entries(names::CONNTRACK, conntrack_max)
                .load(object);
            match loaded {
                Ok(ebpf) => break ebpf,
                Err(aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }))
                    if name == names::CONNTRACK4
                        && io_error.raw_os_error() == Some(libc::ENOMEM)
                        && conntrack_max > 4096 =>
                {
                    log::warn!("no memory for a {conntrack_max}-flow conntrack table; trying {}", conntrack_max / 2);
                    conntrack_max /= 2;
                }
                Err(e) => return Err(DatapathError::object(e)),
            }
        };
        for name in [names::PROG_XDP, names::PROG_TC] {
            let loaded = match ebpf.program_mut(name) {
                Some(aya::programs::Program::Xdp(p)) => p.load(),
                Some(aya::programs::Program::SchedClassifier(p)) => p.load(),
                _ => return Err(DatapathError::MissingProgram(name)),
            };
            loaded.map_err(|e| DatapathError::program_load(name, e))?;
        }
        let maps = Maps::from_ebpf(&mut ebpf)?;
        let flow_maps = match (ebpf.take_map(names::FLOW_EVENTS), ebpf.take_map(names::FLOW_CONFIG)) {
            (Some(ring), Some(config)) => {
                aya::maps::RingBuf::try_from(ring).ok().zip(aya::maps::PerCpuArray::try_from(config).ok())
            }
            _ => None,
        };
        let barrier = std::sync::Arc::new(RcuBarrier::new().map_err(DatapathError::RcuBarrier)?);
        Ok(Enforcer {
            pins,
            ebpf,
            maps,
            barrier,
            options,
            attached: BTreeMap::new(),
            waiting: Default::default(),
            flow_maps,
        })
    }

    pub fn pins(&self) -> &PinLayout {
        &self.pins
    }

    pub fn write_settings(&mut self, settings: &Settings) -> Result<(), DatapathError> {
        self.maps.write_settings(settings)
    }

    /// Makes `compiled` live as `generation` and brings attachments in line with it:
    /// 1. resolve every interface: one that does not exist (yet) is *waiting* — its instance
    ///    gets no entry, the rest of the document applies; one that vanished or was re-created
    ///    under a new index since it was attached is forgotten first;
    /// 2. attach to new interfaces (until the flip they judge with no policy: fail closed);
    /// 3. write the idle slot, flip, wait for RCU;
    /// 4. detach interfaces the document no longer has.
    pub fn install(&mut self, compiled: &Compiled, generation: u64) -> Result<(), DatapathError> {
        let ifindexes = resolve(compiled);
        self.forget_replaced(&ifindexes, compiled);
        // Interfaces nobody filters yet: attach now (fail closed until the flip).
        let newly = self.attach_missing(compiled, &ifindexes, |pins, iface| !pins.has_links(iface))?;
        if let Err(e) = self.maps.install(compiled, &ifindexes, generation, &self.barrier) {
            for name in newly {
                self.detach(&name);
            }
            return Err(e);
        }
        // Interfaces whose pinned links an earlier agent left: take them over only now, so the
        // new programs never run before their maps hold the policy (an older layout's links run
        // programs on that layout's maps until this atomic replacement).
        self.attach_missing(compiled, &ifindexes, |_, _| true)?;
        self.detach_stale(compiled);
        self.note_waiting(compiled, &ifindexes);
        self.remove_old_layouts();
        Ok(())
    }

    /// At start-up: if the live generation (left by a previous agent) is exactly what
    /// `compiled` would write, take it over as it is — same generation, no swap — attaching
    /// (or adopting the pinned links of) its interfaces. Returns the adopted generation, or
    /// `None` if the live state differs (or there is none) and a normal install is needed.
    pub fn adopt(&mut self, compiled: &Compiled) -> Result<Option<u64>, DatapathError> {
        let Some(live) = self.maps.live()? else { return Ok(None) };
        let ifindexes = resolve(compiled);
        if !self.maps.slot_holds(live.slot, compiled, &ifindexes)? {
            return Ok(None);
        }
        self.attach_missing(compiled, &ifindexes, |_, _| true)?;
        self.detach_stale(compiled);
        self.note_waiting(compiled, &ifindexes);
        self.remove_old_layouts();
        Ok(Some(live.generation))
    }

    /// Whether installing `compiled` now would attach or forget an interface: one appeared,
    /// vanished, or was re-created under another index since the last install.
    pub fn interfaces_changed(&self, compiled: &Compiled) -> bool {
        compiled
            .ifaces
            .iter()
            .zip(resolve(compiled))
            .any(|(iface, index)| self.attached.get(&iface.interface).map(|a| a.ifindex) != index)
    }

    /// Forgets attachments whose interface is gone or now has another index (deleted and
    /// re-created): the kernel detached their programs with the old device; their pins and
    /// tracked flows are stale.
    fn forget_replaced(&mut self, ifindexes: &[Option<u32>], compiled: &Compiled) {
        for (iface, index) in compiled.ifaces.iter().zip(ifindexes) {
            if let Some(attached) = self.attached.get(&iface.interface)
                && Some(attached.ifindex) != *index
            {
                let old = attached.ifindex;
                log::info!("{}: gone or re-created (was interface index {old})", iface.interface);
                self.detach(&iface.interface);
            }
        }
    }

    fn note_waiting(&mut self, compiled: &Compiled, ifindexes: &[Option<u32>]) {
        let waiting: std::collections::BTreeSet<String> = compiled
            .ifaces
            .iter()
            .zip(ifindexes)
            .filter(|(_, index)| index.is_none())
            .map(|(iface, _)| iface.interface.clone())
            .collect();
        for name in waiting.difference(&self.waiting) {
            log::warn!("{name}: no such interface; its instance is protected the moment it appears");
        }
        self.waiting = waiting;
    }

    /// After a layout change: the older layouts' links have been taken over (see `load`), so
    /// their maps are unreferenced once unpinned. Removes those directories.
    fn remove_old_layouts(&self) {
        for dir in pins::other_layouts(&self.pins) {
            log::info!("removing the pinned state of an older layout: {}", dir.display());
            if let Err(e) = remove_tree(&dir) {
                log::warn!("removing {}: {e}", dir.display());
            }
        }
    }

    /// Attaches to every interface of `compiled` not attached yet; on failure detaches what it
    /// attached (never half-protected). Returns the newly attached interfaces.
    fn attach_missing(
        &mut self,
        compiled: &Compiled,
        ifindexes: &[Option<u32>],
        now: impl Fn(&PinLayout, &str) -> bool,
    ) -> Result<Vec<String>, DatapathError> {
        let mut newly = Vec::new();
        for (iface, index) in compiled.ifaces.iter().zip(ifindexes) {
            let Some(index) = index else { continue };
            if self.attached.get(&iface.interface).is_some_and(|a| a.ifindex == *index)
                || !now(&self.pins, &iface.interface)
            {
                continue;
            }
            match self.attach(&iface.interface, *index) {
                Ok(a) => {
                    self.attached.insert(iface.interface.clone(), a);
                    newly.push(iface.interface.clone());
                }
                Err(e) => {
                    for name in newly {
                        self.detach(&name);
                    }
                    return Err(e);
                }
            }
        }
        Ok(newly)
    }

    /// Detaches interfaces (ours, or pinned by an earlier agent) that `compiled` no longer has.
    fn detach_stale(&mut self, compiled: &Compiled) {
        let keep: Vec<&str> = compiled.ifaces.iter().map(|i| i.interface.as_str()).collect();
        let stale: Vec<String> = self.attached.keys().filter(|k| !keep.contains(&k.as_str())).cloned().collect();
        for name in stale {
            self.detach(&name);
        }
        self.detach_orphaned_pins(&keep);
    }

    /// Makes `compiled` live for the given interface indexes without attaching anything: for
    /// `BPF_PROG_TEST_RUN` (tests, benchmarks), where the programs run on crafted frames.
    pub fn install_unattached(
        &mut self,
        compiled: &Compiled,
        ifindexes: &[u32],
        generation: u64,
    ) -> Result<(), DatapathError> {
        let ifindexes: Vec<Option<u32>> = ifindexes.iter().copied().map(Some).collect();
        self.maps.install(compiled, &ifindexes, generation, &self.barrier).map(|_| ())
    }

    /// The loaded programs: name, kernel id, and how many instructions the verifier processed
    /// to accept it (its proof effort; a program near the kernel's 1M limit is one change away
    /// from being rejected).
    pub fn program_infos(&self) -> Vec<ProgramInfo> {
        let xdp = self.xdp_program().and_then(|p| p.info().ok()).map(|i| (names::PROG_XDP, i));
        let tc = self.tc_program().and_then(|p| p.info().ok()).map(|i| (names::PROG_TC, i));
        [xdp, tc]
            .into_iter()
            .flatten()
            .map(|(name, info)| ProgramInfo {
                name: name.to_owned(),
                id: info.id(),
                verified_instructions: info.verified_instruction_count(),
            })
            .collect()
    }

    /// The XDP program (for `BPF_PROG_TEST_RUN`).
    pub fn xdp_program(&self) -> Option<&Xdp> {
        self.ebpf.program(names::PROG_XDP).and_then(|p| p.try_into().ok())
    }

    /// The TC program (for `BPF_PROG_TEST_RUN`).
    pub fn tc_program(&self) -> Option<&SchedClassifier> {
        self.ebpf.program(names::PROG_TC).and_then(|p| p.try_into().ok())
    }

    fn attach(&mut self, interface: &str, ifindex: u32) -> Result<Attachment, DatapathError> {
        let xdp: &mut Xdp = self
            .ebpf
            .program_mut(names::PROG_XDP)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::MissingProgram(names::PROG_XDP))?;
        let xdp_mode = attach::attach_xdp(xdp, interface, &self.pins.xdp_link(interface), self.options.xdp_mode)?;
        let tc: &mut SchedClassifier = self
            .ebpf
            .program_mut(names::PROG_TC)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::MissingProgram(names::PROG_TC))?;
        let tc_mode = match attach::attach_tc(tc, interface, &self.pins.tc_link(interface), self.options.tc_mode) {
            Ok(m) => m,
            Err(e) => {
                // Never leave an interface half-protected.
                attach::detach(interface, &self.pins.xdp_link(interface), &self.pins.tc_link(interface));
                return Err(e);
            }
        };
        log::info!("{interface}: attached ({xdp_mode}, {tc_mode})");
        Ok(Attachment { ifindex, xdp: xdp_mode, tc: tc_mode })
    }

    /// Detaches `interface` and removes its tracked flows.
    fn detach(&mut self, interface: &str) {
        attach::detach(interface, &self.pins.xdp_link(interface), &self.pins.tc_link(interface));
        match self.attached.remove(interface) {
            Some(a) => {
                let flows = self.maps.remove_conntrack_of(a.ifindex);
                self.maps.remove_iface_counters(a.ifindex);
                log::info!("{interface}: detached ({flows} tracked flows removed)");
            }
            None => log::info!("{interface}: detached"),
        }
    }

    /// Links pinned by an earlier agent for interfaces no longer in the document.
    fn detach_orphaned_pins(&mut self, keep: &[&str]) {
        let Ok(entries) = std::fs::read_dir(self.pins.links()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let iface = name.strip_prefix("xdp-").or_else(|| name.strip_prefix("tc-"));
            if let Some(iface) = iface.filter(|i| !keep.contains(i)) {
                let iface = iface.to_owned();
                self.detach(&iface);
            }
        }
    }
}

/// The interface index of every compiled interface; `None` for one that does not exist.
fn resolve(compiled: &Compiled) -> Vec<Option<u32>> {
    compiled.ifaces.iter().map(|i| ifindex(&i.interface)).collect()
}

/// Removes all enforcement: detaches every pinned link and clsact filter, removes the pinned
/// maps. Returns the interfaces it detached.
pub fn teardown(pins: &PinLayout) -> Result<Vec<String>, DatapathError> {
    let mut detached = Vec::new();
    if let Ok(entries) = std::fs::read_dir(pins.links()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let iface = name.strip_prefix("xdp-").or_else(|| name.strip_prefix("tc-"));
            if let Some(iface) = iface.filter(|i| !detached.iter().any(|d| d == i)) {
                attach::detach(iface, &pins.xdp_link(iface), &pins.tc_link(iface));
                detached.push(iface.to_owned());
            }
        }
    }
    remove_tree(pins.root()).map_err(|source| DatapathError::Io { path: pins.root().to_path_buf(), source })?;
    Ok(detached)
}

/// bpffs does not support `remove_dir_all`'s openat-based walk everywhere; do it by hand.
fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            remove_tree(&entry?.path())?;
        }
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    }
}
