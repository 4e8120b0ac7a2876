//! An owned packet buffer (`rte_mbuf`). Dropping it returns it to its pool.
//!
//! Data access covers the first segment, which holds the whole packet for every port we
//! configure (no scatter RX); `is_contiguous` tells when a chained mbuf arrives anyway.

use std::ptr::NonNull;

use crate::ffi;

/// An owned mbuf. `repr(transparent)` over the pointer so a burst of them is exactly the
/// `struct rte_mbuf **` array that the burst functions take.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one Mbuf value; moving it to another thread moves the
// ownership, and freeing it from any lcore is allowed (mempool ops are thread-safe).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `m` must be a valid mbuf that nothing else owns or frees.
    pub unsafe fn from_raw(m: NonNull<ffi::rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }

    /// Gives up ownership; the caller must free the mbuf (or hand it to DPDK).
    pub fn into_raw(self) -> NonNull<ffi::rte_mbuf> {
        let m = self.0;
        std::mem::forget(self);
        m
    }

    fn raw(&self) -> *mut ffi::rte_mbuf {
        self.0.as_ptr()
    }

    /// The mbuf header. Reading its fields here instead of through the C shim lets the
    /// compiler inline `data()` and `len()`, which the pipeline calls several times per
    /// packet (the shim calls were 6% of a forwarding profile).
    #[inline(always)]
    fn hdr(&self) -> &ffi::rte_mbuf {
        // SAFETY: we own a valid mbuf; nothing else writes it while we hold it, and the
        // reference does not outlive &self.
        unsafe { self.0.as_ref() }
    }

    /// Bytes of packet data in the first segment.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.hdr().data_len)
    }

    /// True when the first segment holds no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total packet length over all segments.
    pub fn pkt_len(&self) -> usize {
        // SAFETY: we own a valid mbuf.
        unsafe { ffi::shim_pktmbuf_pkt_len(self.raw()) as usize }
    }

    /// True when the packet is in one segment (what `data()` shows is the whole packet).
    pub fn is_contiguous(&self) -> bool {
        // SAFETY: we own a valid mbuf.
        unsafe { ffi::shim_pktmbuf_nb_segs(self.raw()) == 1 }
    }

    /// Free bytes before the data.
    pub fn headroom(&self) -> usize {
        // SAFETY: we own a valid mbuf.
        usize::from(unsafe { ffi::shim_pktmbuf_headroom(self.raw()) })
    }

    /// Free bytes after the data (last segment).
    pub fn tailroom(&self) -> usize {
        // SAFETY: we own a valid mbuf.
        usize::from(unsafe { ffi::shim_pktmbuf_tailroom(self.raw()) })
    }

    /// The RSS hash the NIC computed (0 when the port gives none).
    pub fn rss_hash(&self) -> u32 {
        // SAFETY: we own a valid mbuf.
        unsafe { ffi::shim_pktmbuf_rss_hash(self.raw()) }
    }

    /// Packet bytes of the first segment.
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod points at data_len initialised bytes inside the mbuf's buffer, which
        // we own and which lives as long as &self.
        unsafe {
            std::slice::from_raw_parts(ffi::shim_pktmbuf_mtod(self.raw()).cast::<u8>(), self.len())
        }
    }

    /// Mutable packet bytes of the first segment.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        // SAFETY: as in data(); &mut self gives exclusive access to the buffer.
        unsafe {
            std::slice::from_raw_parts_mut(ffi::shim_pktmbuf_mtod(self.raw()).cast::<u8>(), len)
        }
    }

    /// Grows the packet at the front by `n` bytes (for encapsulation); returns the new
    /// front bytes, or `None` if the headroom is too small (nothing changes then).
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: we own the mbuf; prepend checks the headroom and returns NULL if short.
        let p = unsafe { ffi::shim_pktmbuf_prepend(self.raw(), n16) };
        if p.is_null() {
            return None;
        }
        // SAFETY: p points at the n bytes just added in front of the data, inside our buffer.
        Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) })
    }

    /// Removes `n` bytes from the front (for decapsulation); false if the first segment
    /// is shorter (nothing changes then).
    pub fn adj(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: we own the mbuf; adj checks the length and returns NULL if too short.
        !unsafe { ffi::shim_pktmbuf_adj(self.raw(), n16) }.is_null()
    }

    /// Grows the packet at the end by `n` bytes; returns them, or `None` without tailroom.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        if !self.is_contiguous() {
            return None;
        }
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: we own the mbuf; append checks the tailroom and returns NULL if short.
        let p = unsafe { ffi::shim_pktmbuf_append(self.raw(), n16) };
        if p.is_null() {
            return None;
        }
        // SAFETY: p points at the n bytes just added after the data, inside our buffer, and
        // the packet is one segment so they belong to what data() shows.
        Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) })
    }

    /// Removes `n` bytes from the end; false if the last segment is shorter.
    pub fn trim(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: we own the mbuf; trim checks the length and returns -1 if too short.
        unsafe { ffi::shim_pktmbuf_trim(self.raw(), n16) == 0 }
    }

    /// Appends `bytes` at the end; false (nothing written) without enough tailroom.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        match self.append(bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Prefetches the first cache line of packet data.
    pub fn prefetch_data(&self) {
        // SAFETY: prefetch is a hint and never faults; mtod is a valid address in our buffer.
        unsafe { ffi::shim_prefetch0(ffi::shim_pktmbuf_mtod(self.raw())) }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and free it once; all segments go back to their pools.
        unsafe { ffi::shim_pktmbuf_free(self.raw()) }
    }
}
