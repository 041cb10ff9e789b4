//! Reading a hash map in batches (`BPF_MAP_LOOKUP_BATCH`, kernel 5.6+): a thousand entries
//! per syscall instead of two syscalls per entry. A 1M-flow conntrack table is read in about a
//! thousand syscalls, so garbage collection and `conntrack list` stay cheap.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries per syscall. Must exceed the longest hash bucket (the kernel returns ENOSPC
/// otherwise); buckets hold a handful of entries.
const CHUNK: usize = 4096;

/// Calls `f` on every (key, value) of the hash map behind `fd`. A snapshot in the kernel's
/// sense: entries added or removed meanwhile may or may not be seen.
pub fn for_each<K: Pod + Default, V: Pod + Default>(fd: BorrowedFd<'_>, mut f: impl FnMut(&K, &V)) -> io::Result<()> {
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    // The batch cursor: opaque to us (a bucket index for hash maps).
    let mut cursor = [0u64; 1];
    let mut next = [0u64; 1];
    let mut first = true;
    loop {
        // struct { u64 in_batch, out_batch, keys, values; u32 count, map_fd; u64 elem_flags, flags; }
        let mut attr = [0u64; 8];
        attr[0] = if first { 0 } else { cursor.as_mut_ptr() as u64 };
        attr[1] = next.as_mut_ptr() as u64;
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        attr[4] = CHUNK as u64 | (u64::from(fd.as_raw_fd() as u32) << 32);
        // SAFETY: `attr` is a valid `union bpf_attr` for BPF_MAP_LOOKUP_BATCH; the key and
        // value buffers hold CHUNK elements of the map's key and value types (K and V are the
        // map's #[repr(C)] types), the cursors 8 bytes each.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, attr.as_mut_ptr(), std::mem::size_of_val(&attr) as u32)
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        let count = (attr[4] & 0xffff_ffff) as usize;
        for (k, v) in keys.iter().zip(&values).take(count) {
            f(k, v);
        }
        match error {
            None => {}
            // ENOENT: no more entries (the last chunk was delivered above).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
        }
        cursor = next;
        first = false;
    }
}

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// One batch command over `keys` (and `values` for updates), in chunks.
fn batch_command<K: Pod, V: Pod>(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: Option<&[V]>,
) -> io::Result<()> {
    for (i, chunk) in keys.chunks(CHUNK).enumerate() {
        let values_ptr = values.map_or(0, |v| v.get(i * CHUNK..).map_or(0, |v| v.as_ptr() as u64));
        let mut attr = [0u64; 8];
        attr[2] = chunk.as_ptr() as u64;
        attr[3] = values_ptr;
        attr[4] = chunk.len() as u64 | (u64::from(fd.as_raw_fd() as u32) << 32);
        // SAFETY: a valid `union bpf_attr` for the batch command; `chunk` holds `len` keys of
        // the map's key type and `values` (for updates) at least as many values.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(&attr) as u32) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Inserts or replaces `keys[i] → values[i]` with one syscall per few thousand entries
/// (`BPF_MAP_UPDATE_BATCH`, kernel 5.6+).
pub fn update<K: Pod, V: Pod>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    if keys.len() != values.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "as many values as keys"));
    }
    batch_command(BPF_MAP_UPDATE_BATCH, fd, keys, Some(values))
}

/// Deletes `keys` (`BPF_MAP_DELETE_BATCH`); every key must exist.
pub fn delete<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> io::Result<()> {
    batch_command::<K, u8>(BPF_MAP_DELETE_BATCH, fd, keys, None)
}
