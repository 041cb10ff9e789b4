//! The kernel side as the agent drives it: load the programs (adopting pinned maps), attach
//! them per interface, make compiled policies live, read state back.

pub mod attach;
pub mod batch;
pub mod maps;
pub mod pins;
pub mod rcu;

use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use serde::{Deserialize, Serialize};
use sg_common::maps::{Settings, names};

use self::rcu::RcuBarrier;
pub use self::{
    attach::{TcAttached, TcModeChoice, XdpAttached, XdpModeChoice},
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

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The binary was built without the eBPF toolchain.
    #[error(
        "this sg-agent was built without its kernel programs (bpf-linker missing at build time); run scripts/setup-toolchain.sh and rebuild"
    )]
    NoObject,
    /// The pin path is not on bpffs.
    #[error(
        "{0} is not on a BPF filesystem; mount one with: mount -t bpf bpf /sys/fs/bpf (or pass --pin-path DIR on bpffs)"
    )]
    NotBpffs(PathBuf),
    /// Loading the object or a program failed (verifier, permissions).
    #[error("loading the kernel programs failed (root with CAP_BPF and CAP_NET_ADMIN is needed): {0}")]
    Load(String),
    #[error("the kernel object has no map {0}")]
    MissingMap(String),
    /// A map operation failed.
    #[error("map {name}: {error}")]
    Map { name: String, error: aya::maps::MapError },
    #[error("interface {0:?} does not exist on this node")]
    NoInterface(String),
    /// Attaching to an interface failed.
    #[error("attaching {what} to {interface}: {source}")]
    Attach { interface: String, what: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("waiting for in-flight packets (RCU barrier): {0}")]
    RcuBarrier(io::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
}

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub conntrack_max: u32,
    pub xdp_mode: XdpModeChoice,
    pub tc_mode: TcModeChoice,
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
            std::fs::create_dir_all(&dir).map_err(|e| DatapathError::Io(dir.clone(), e))?;
        }
        // A layout change: an older agent's links keep enforcing with its programs and maps;
        // move their pins into this layout so that attaching takes them over atomically.
        pins::adopt_older_links(&pins);
        // The conntrack table is preallocated (entries never fail to allocate under load); if
        // the memory is not there, take the largest power-of-two fraction that is, and say so.
        let mut conntrack_max = options.conntrack_max;
        let mut ebpf = loop {
            let loaded = EbpfLoader::new()
                .default_map_pin_directory(pins.maps())
                .map_max_entries(names::CONNTRACK, conntrack_max)
                .load(object);
            match loaded {
                Ok(ebpf) => break ebpf,
                Err(aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }))
                    if name == names::CONNTRACK
                        && io_error.raw_os_error() == Some(libc::ENOMEM)
                        && conntrack_max > 4096 =>
                {
                    log::warn!("no memory for a {conntrack_max}-flow conntrack table; trying {}", conntrack_max / 2);
                    conntrack_max /= 2;
                }
                Err(e) => return Err(DatapathError::Load(format!("{e:#}"))),
            }
        };
        for name in [names::PROG_XDP, names::PROG_TC] {
            let program = ebpf.program_mut(name).ok_or_else(|| DatapathError::Load(format!("no program {name}")))?;
            let loaded = match program {
                aya::programs::Program::Xdp(p) => p.load(),
                aya::programs::Program::SchedClassifier(p) => p.load(),
                _ => return Err(DatapathError::Load(format!("{name} has an unexpected program type"))),
            };
            loaded.map_err(|e| DatapathError::Load(format!("{name}: {}", verifier_message(&e))))?;
        }
        let maps = Maps::from_ebpf(&mut ebpf)?;
        let flow_maps = match (ebpf.take_map(names::FLOW_EVENTS), ebpf.take_map(names::FLOW_CONFIG)) {
            (Some(ring), Some(config)) => {
                aya::maps::RingBuf::try_from(ring).ok().zip(aya::maps::PerCpuArray::try_from(config).ok())
            }
            _ => None,
        };
        let barrier = std::sync::Arc::new(RcuBarrier::new().map_err(DatapathError::RcuBarrier)?);
        Ok(Enforcer { pins, ebpf, maps, barrier, options, attached: BTreeMap::new(), flow_maps })
    }

    pub fn pins(&self) -> &PinLayout {
        &self.pins
    }

    pub fn write_settings(&mut self, settings: &Settings) -> Result<(), DatapathError> {
        self.maps.write_settings(settings)
    }

    /// Makes `compiled` live as `generation` and brings attachments in line with it:
    /// 1. resolve every interface (a missing one fails the whole apply, changing nothing);
    /// 2. attach to new interfaces (until the flip they judge with no policy: fail closed);
    /// 3. write the idle slot, flip, wait for RCU;
    /// 4. detach interfaces the document no longer has.
    pub fn install(&mut self, compiled: &Compiled, generation: u64) -> Result<(), DatapathError> {
        let ifindexes = resolve(compiled)?;
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
        self.remove_old_layouts();
        Ok(())
    }

    /// At start-up: if the live generation (left by a previous agent) is exactly what
    /// `compiled` would write, take it over as it is — same generation, no swap — attaching
    /// (or adopting the pinned links of) its interfaces. Returns the adopted generation, or
    /// `None` if the live state differs (or there is none) and a normal install is needed.
    pub fn adopt(&mut self, compiled: &Compiled) -> Result<Option<u64>, DatapathError> {
        let Some(live) = self.maps.live()? else { return Ok(None) };
        let Ok(ifindexes) = resolve(compiled) else { return Ok(None) };
        if !self.maps.slot_holds(live.slot, compiled, &ifindexes)? {
            return Ok(None);
        }
        self.attach_missing(compiled, &ifindexes, |_, _| true)?;
        self.detach_stale(compiled);
        self.remove_old_layouts();
        Ok(Some(live.generation))
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
        ifindexes: &[u32],
        now: impl Fn(&PinLayout, &str) -> bool,
    ) -> Result<Vec<String>, DatapathError> {
        let mut newly = Vec::new();
        for (iface, index) in compiled.ifaces.iter().zip(ifindexes) {
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
        self.maps.install(compiled, ifindexes, generation, &self.barrier).map(|_| ())
    }

    /// The loaded programs: name, kernel id, and how many instructions the verifier processed
    /// to accept it (its proof effort; a program near the kernel's 1M limit is one change away
    /// from being rejected).
    pub fn program_infos(&self) -> Vec<(String, u32, Option<u32>)> {
        let mut out = Vec::new();
        if let Some(info) = self.xdp_program().and_then(|p| p.info().ok()) {
            out.push((names::PROG_XDP.to_owned(), info.id(), info.verified_instruction_count()));
        }
        if let Some(info) = self.tc_program().and_then(|p| p.info().ok()) {
            out.push((names::PROG_TC.to_owned(), info.id(), info.verified_instruction_count()));
        }
        out
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
            .ok_or_else(|| DatapathError::Load("XDP program missing".into()))?;
        let xdp_mode = attach::attach_xdp(xdp, interface, &self.pins.xdp_link(interface), self.options.xdp_mode)?;
        let tc: &mut SchedClassifier = self
            .ebpf
            .program_mut(names::PROG_TC)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| DatapathError::Load("TC program missing".into()))?;
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

    fn detach(&mut self, interface: &str) {
        attach::detach(interface, &self.pins.xdp_link(interface), &self.pins.tc_link(interface));
        self.attached.remove(interface);
        log::info!("{interface}: detached");
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

/// The interface index of every compiled interface; a missing one fails the apply.
fn resolve(compiled: &Compiled) -> Result<Vec<u32>, DatapathError> {
    compiled
        .ifaces
        .iter()
        .map(|i| ifindex(&i.interface).ok_or_else(|| DatapathError::NoInterface(i.interface.clone())))
        .collect()
}

/// The verifier's log is long; its last lines say what went wrong.
fn verifier_message(e: &aya::programs::ProgramError) -> String {
    let text = format!("{e:#}");
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines.len().saturating_sub(20);
    lines.get(tail..).map(|l| l.join("\n")).unwrap_or(text.clone())
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
    remove_tree(pins.root()).map_err(|e| DatapathError::Io(pins.root().to_path_buf(), e))?;
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
