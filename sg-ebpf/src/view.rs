//! Bounds-checked packet reads for the shared parser.

use core::mem::size_of;

use sg_common::packet::PacketView;

/// The packet as a program sees it: `[data, data_end)` is readable directly; `frame_len` is the
/// whole frame, which for TC may extend past the linear part.
pub struct CtxView {
    data: usize,
    data_end: usize,
    frame_len: usize,
}

impl CtxView {
    #[inline(always)]
    pub fn new(data: usize, data_end: usize, frame_len: usize) -> Self {
        Self { data, data_end, frame_len }
    }
}

impl PacketView for CtxView {
    #[inline(always)]
    fn len(&self) -> usize {
        self.frame_len
    }

    /// `T` must be at least 2 bytes: for a 1-byte read LLVM rewrites the check below into
    /// `start >= data_end`, from which the verifier derives no readable range.
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let start = self.data + offset;
        // The verifier needs this exact comparison against data_end before every access. A
        // volatile load keeps LLVM from proving it redundant from the parser's own length
        // checks (`frame_len` is data_end - data for XDP) and deleting it: the verifier cannot
        // follow that proof and would reject the program.
        // SAFETY: reading a field of `self`.
        let data_end = unsafe { core::ptr::read_volatile(&self.data_end) };
        if start + size_of::<T>() > data_end {
            return None;
        }
        // SAFETY: in bounds (checked above); packet memory has no alignment guarantee.
        Some(unsafe { (start as *const T).read_unaligned() })
    }
}
