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
