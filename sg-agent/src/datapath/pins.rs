//! Where pinned state lives in bpffs (SPEC §4). One directory, versioned by layout, so an agent
//! never adopts maps whose layout it would misread:
//!
//! ```text
//! <pin-path>/v<LAYOUT_VERSION>/maps/SG_*          every map, pinned by name (aya)
//! <pin-path>/v<LAYOUT_VERSION>/links/xdp-<ifname> XDP link per interface
//! <pin-path>/v<LAYOUT_VERSION>/links/tc-<ifname>  tcx link per interface
//! ```

use std::path::{Path, PathBuf};

use sg_common::LAYOUT_VERSION;

use super::DatapathError;

/// Default `--pin-path`.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/sg-agent";

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, Clone)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The `--pin-path` directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This layout version's directory.
    pub fn versioned(&self) -> PathBuf {
        self.root.join(format!("v{LAYOUT_VERSION}"))
    }

    pub fn maps(&self) -> PathBuf {
        self.versioned().join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.versioned().join("links")
    }

    pub fn xdp_link(&self, ifname: &str) -> PathBuf {
        self.links().join(format!("xdp-{ifname}"))
    }

    pub fn tc_link(&self, ifname: &str) -> PathBuf {
        self.links().join(format!("tc-{ifname}"))
    }
}

impl PinLayout {
    /// Whether an earlier agent pinned links for `interface` in this layout.
    pub fn has_links(&self, interface: &str) -> bool {
        self.xdp_link(interface).exists() || self.tc_link(interface).exists()
    }
}

/// Directories of other layout versions under the pin root.
pub fn other_layouts(pins: &PinLayout) -> Vec<PathBuf> {
    let current = pins.versioned();
    let Ok(entries) = std::fs::read_dir(pins.root()) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| *p != current)
        .filter(|p| {
            let version = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix('v'));
            version.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// Moves the link pins of older layouts into this layout's link directory (bpffs renames within
/// one mount), so the normal adoption path replaces their programs atomically. The older
/// layout's maps stay pinned — the old programs still use them — until the takeover is done.
/// Conntrack entries of another layout cannot be read with this layout's types: flows the rules
/// still allow are picked up again by their next packet; tracked flows whose rule is gone are
/// not carried over (a layout change that must keep them ships a conversion for that version).
pub fn adopt_older_links(pins: &PinLayout) {
    for dir in other_layouts(pins) {
        let Ok(entries) = std::fs::read_dir(dir.join("links")) else { continue };
        for entry in entries.flatten() {
            let target = pins.links().join(entry.file_name());
            if target.exists() {
                continue;
            }
            match std::fs::rename(entry.path(), &target) {
                Ok(()) => log::info!("taking over {} from an older layout", entry.path().display()),
                Err(e) => log::warn!("cannot take over {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Whether `path` (or, if it does not exist yet, its nearest existing ancestor) is on bpffs.
pub fn on_bpffs(path: &Path) -> bool {
    let mut probe = Some(path);
    while let Some(p) = probe {
        if p.exists() {
            return statfs_type(p) == Some(BPF_FS_MAGIC);
        }
        probe = p.parent();
    }
    false
}

fn statfs_type(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut buf) };
    (rc == 0).then_some(buf.f_type as i64)
}

/// One agent per pin path: an exclusive `flock` on the pin directory, held for the agent's
/// life. The kernel releases it when the process ends however it ends (SIGKILL included), so a
/// crashed agent never leaves a stale lock behind, and a second agent is refused before it
/// touches any pinned state.
pub struct PinLock {
    _dir: std::fs::File,
}

/// Takes the pin path's lock, creating the directory if needed.
pub fn lock(pins: &PinLayout) -> Result<PinLock, DatapathError> {
    use std::os::fd::AsRawFd as _;
    let root = pins.root();
    std::fs::create_dir_all(root).map_err(|e| DatapathError::Io { path: root.to_path_buf(), source: e })?;
    let dir = std::fs::File::open(root).map_err(|e| DatapathError::Io { path: root.to_path_buf(), source: e })?;
    // SAFETY: a valid open file descriptor.
    let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(DatapathError::Locked { path: root.to_path_buf(), pid: lock_holder(root) });
        }
        return Err(DatapathError::Io { path: root.to_path_buf(), source: error });
    }
    Ok(PinLock { _dir: dir })
}

/// Whether another process holds the pin path's lock (an agent runs on it); its pid if known.
pub fn holder(pins: &PinLayout) -> Option<Option<u32>> {
    use std::os::fd::AsRawFd as _;
    let dir = std::fs::File::open(pins.root()).ok()?;
    // SAFETY: a valid open file descriptor; a shared probe released by closing `dir`.
    let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    (rc != 0).then(|| lock_holder(pins.root()))
}

/// The pid holding a `flock` on `path`, from `/proc/locks` (`1: FLOCK ADVISORY WRITE <pid>
/// <major>:<minor>:<inode> 0 EOF`, device numbers in hex).
fn lock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A blocked waiter's line starts with "->"; only the holder's has the pid at index 4.
        if fields.get(1) != Some(&"FLOCK") || fields.get(5) != Some(&wanted.as_str()) {
            return None;
        }
        fields.get(4)?.parse().ok()
    })
}
