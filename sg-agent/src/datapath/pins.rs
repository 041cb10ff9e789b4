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
