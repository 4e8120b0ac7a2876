//! A fixed-capacity burst of owned mbufs, the unit the fast path works on.
//!
//! Laid out as the `struct rte_mbuf *[N]` array DPDK's burst calls fill and drain, so RX,
//! TX and ring operations move pointers with no copy and no allocation.

use std::mem::MaybeUninit;

use crate::ffi;
use crate::mbuf::Mbuf;

/// Largest burst: what one RX call returns at most. 32 is DPDK's usual size; 64 leaves room
/// to gather across two calls.
pub const MAX_BURST: usize = 64;

/// Up to [`MAX_BURST`] owned mbufs; slots `..len` are initialised. Dropping frees them.
#[derive(Debug)]
pub struct Burst {
    len: usize,
    slots: [MaybeUninit<Mbuf>; MAX_BURST],
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    /// An empty burst.
    pub const fn new() -> Burst {
        Burst {
            len: 0,
            slots: [const { MaybeUninit::uninit() }; MAX_BURST],
        }
    }

    /// Mbufs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free slots.
    pub fn spare(&self) -> usize {
        MAX_BURST - self.len
    }

    /// Adds one mbuf at the end, or gives it back when full.
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == MAX_BURST {
            return Err(m);
        }
        self.slots[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    /// Removes the last mbuf.
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slot len was initialised and is now outside ..len, so it is read once.
        Some(unsafe { self.slots[self.len].assume_init_read() })
    }

    /// The mbufs as a slice.
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: slots ..len are initialised; MaybeUninit<Mbuf> has Mbuf's layout.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// The mbufs as a mutable slice.
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in as_slice, with exclusive access through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Frees every mbuf held.
    pub fn clear(&mut self) {
        let n = self.len;
        self.len = 0;
        if n > 0 {
            // SAFETY: slots ..n hold owned mbufs laid out as rte_mbuf pointers (Mbuf is
            // repr(transparent)); len is already 0 so none is freed twice.
            unsafe { ffi::rte_pktmbuf_free_bulk(self.slots.as_mut_ptr().cast(), n as u32) };
        }
    }

    /// Keeps the mbufs for which `keep` is true, in order, and returns the others in `out`
    /// (or frees them when `out` is full).
    pub fn split_off_where(&mut self, out: &mut Burst, mut keep: impl FnMut(&Mbuf) -> bool) {
        let n = self.len;
        self.len = 0;
        for i in 0..n {
            // SAFETY: slot i < n was initialised and is read exactly once here.
            let m = unsafe { self.slots[i].assume_init_read() };
            if keep(&m) {
                self.slots[self.len].write(m);
                self.len += 1;
            } else if let Err(m) = out.push(m) {
                drop(m);
            }
        }
    }

    /// Takes every mbuf out, in order; the ones the iterator does not yield are freed
    /// when it is dropped.
    pub fn drain(&mut self) -> Drain<'_> {
        let n = self.len;
        // From here on the burst does not own the slots: Drain does.
        self.len = 0;
        Drain {
            burst: self,
            next: 0,
            end: n,
        }
    }

    /// Pointer to the first free slot, for DPDK calls that fill `spare()` slots.
    pub(crate) fn spare_ptr(&mut self) -> *mut *mut ffi::rte_mbuf {
        self.slots[self.len..].as_mut_ptr().cast()
    }

    /// Pointer to the first held mbuf, for DPDK calls that take `len()` of them.
    pub(crate) fn held_ptr(&mut self) -> *mut *mut ffi::rte_mbuf {
        self.slots.as_mut_ptr().cast()
    }

    /// Marks `n` more slots as filled by DPDK.
    ///
    /// # Safety
    /// The `n` slots after `len` must hold owned, valid mbuf pointers, and `len + n <= MAX_BURST`.
    pub(crate) unsafe fn commit(&mut self, n: usize) {
        debug_assert!(self.len + n <= MAX_BURST);
        self.len += n;
    }

    /// Forgets the first `n` mbufs (DPDK took them) and moves the rest to the front.
    ///
    /// # Safety
    /// Ownership of the first `n` mbufs must have passed elsewhere; `n <= len`.
    pub(crate) unsafe fn consumed(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let base = self.slots.as_mut_ptr();
        // SAFETY: slots n..len are initialised and move (bitwise, overlapping allowed) to
        // 0..len-n; the first n were given away, so nothing is duplicated or leaked.
        unsafe { std::ptr::copy(base.add(n), base, self.len - n) };
        self.len -= n;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Extend<Mbuf> for Burst {
    /// Adds mbufs while there is room; the ones that do not fit are freed.
    fn extend<I: IntoIterator<Item = Mbuf>>(&mut self, iter: I) {
        for m in iter {
            if let Err(m) = self.push(m) {
                drop(m);
            }
        }
    }
}

/// Iterator of [`Burst::drain`].
#[derive(Debug)]
pub struct Drain<'a> {
    burst: &'a mut Burst,
    next: usize,
    end: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        // SAFETY: slots next..end were initialised when the drain started and each is read
        // exactly once (next only grows); the burst's len is 0, so it never reads them.
        Some(unsafe { self.burst.slots[i].assume_init_read() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.end - self.next, Some(self.end - self.next))
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}
