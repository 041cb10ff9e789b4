//! Waiting for an RCU grace period from user space.
//!
//! After `SG_ACTIVE` flips to the new slot, a packet that read the old slot number just before
//! the flip may still be looking up old-slot entries. The old slot may only be rewritten once
//! every such program run has finished. The kernel offers exactly that wait as a side effect of
//! updating a map-in-map: `map_update_elem` on an outer map calls `synchronize_rcu()` before
//! returning (kernel/bpf/syscall.c, `maybe_wait_bpf_programs`), and XDP and TC programs run
//! inside RCU read-side sections. So the barrier is one update of a private, otherwise unused
//! array-of-maps.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// `union bpf_attr` is at most this big for the commands used here; zero-filled.
type Attr = [u64; 16];

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zeroed `union bpf_attr` of sufficient size, filled per the command.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of::<Attr>() as u32) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn map_create(map_type: u32, inner_map_fd: Option<i32>) -> io::Result<OwnedFd> {
    let mut attr: Attr = [0; 16];
    // struct { u32 map_type, key_size, value_size, max_entries, map_flags, inner_map_fd; ... }
    attr[0] = u64::from(map_type) | (4u64 << 32);
    attr[1] = 4 | (1u64 << 32);
    attr[2] = inner_map_fd.map_or(0, |fd| (fd as u32 as u64) << 32);
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A private array-of-maps whose update waits for an RCU grace period.
pub struct RcuBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl RcuBarrier {
    pub fn new() -> io::Result<Self> {
        let inner = map_create(BPF_MAP_TYPE_ARRAY, None)?;
        let outer = map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, Some(inner.as_raw_fd()))?;
        Ok(Self { outer, inner })
    }

    /// Returns once every BPF program run that started before the call has finished.
    pub fn wait(&self) -> io::Result<()> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        let mut attr: Attr = [0; 16];
        // struct { u32 map_fd; u64 key; u64 value; u64 flags; }
        attr[0] = self.outer.as_raw_fd() as u32 as u64;
        attr[1] = std::ptr::from_ref(&key) as u64;
        attr[2] = std::ptr::from_ref(&value) as u64;
        attr[3] = 0;
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }
}
