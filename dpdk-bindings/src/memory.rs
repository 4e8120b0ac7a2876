//! Hugepage-backed memory: typed arrays from `rte_malloc` and named memzones.
//!
//! The vrouter's tables (flows, routes, nexthops) live in these, so that with hugepages
//! they are TLB-friendly and NUMA-local; with `--no-huge` the same calls use plain memory.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::eal::{Eal, live_dec, live_inc};
use crate::error::{Error, Result};
use crate::ffi;
use crate::ids::SocketId;

/// A fixed-length array of `T` in EAL (hugepage) memory, cache-line aligned.
#[derive(Debug)]
pub struct HugeSlice<T> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: HugeSlice owns its elements like a Box<[T]>; sending it sends them.
unsafe impl<T: Send> Send for HugeSlice<T> {}
// SAFETY: &HugeSlice only gives &T, so sharing requires T: Sync, as for Box<[T]>.
unsafe impl<T: Sync> Sync for HugeSlice<T> {}

impl<T> HugeSlice<T> {
    /// Allocates `len` elements on `socket`, each initialised by `init(index)`.
    pub fn new_with(
        _eal: &Eal,
        len: usize,
        socket: SocketId,
        mut init: impl FnMut(usize) -> T,
    ) -> Result<HugeSlice<T>> {
        let op = || format!("rte_malloc_socket({len} x {} bytes)", size_of::<T>());
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| Error::invalid(op(), "size overflows"))?;
        let align = align_of::<T>().max(64) as u32;
        // SAFETY: plain size/alignment request (alignment is a power of two >= 64); a NULL
        // type name is allowed.
        let raw =
            unsafe { ffi::rte_malloc_socket(std::ptr::null(), bytes.max(1), align, socket.0) };
        let ptr = NonNull::new(raw.cast::<T>()).ok_or_else(|| Error::last(op()))?;
        for i in 0..len {
            // SAFETY: i < len, inside the allocation of len * size_of::<T>() bytes, aligned
            // for T; each slot is written once before any read.
            unsafe { ptr.as_ptr().add(i).write(init(i)) };
        }
        live_inc();
        Ok(HugeSlice { ptr, len })
    }
}

impl<T> std::ops::Deref for HugeSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: ptr holds len initialised elements owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> std::ops::DerefMut for HugeSlice<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref, with exclusive access through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for HugeSlice<T> {
    fn drop(&mut self) {
        // SAFETY: the len elements are initialised and dropped once; then the allocation
        // from rte_malloc_socket is freed once.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ));
            ffi::rte_free(self.ptr.as_ptr().cast());
        }
        live_dec();
    }
}

/// A named, zero-filled region of EAL memory, visible to DPDK secondary processes and tools.
#[derive(Debug)]
pub struct Memzone {
    mz: NonNull<ffi::rte_memzone>,
    name: String,
}

// SAFETY: the memzone is owned by this value; its memory is plain bytes.
unsafe impl Send for Memzone {}
// SAFETY: &Memzone only gives &[u8].
unsafe impl Sync for Memzone {}

impl Memzone {
    /// Reserves `len` bytes named `name` on `socket`.
    pub fn reserve(_eal: &Eal, name: &str, len: usize, socket: SocketId) -> Result<Memzone> {
        let op = || format!("rte_memzone_reserve({name}, {len} bytes)");
        if len == 0 {
            return Err(Error::invalid(op(), "length must be at least 1"));
        }
        let cname = CString::new(name).map_err(|_| Error::invalid(op(), "name contains NUL"))?;
        // SAFETY: valid C string and plain values.
        let mz = unsafe { ffi::rte_memzone_reserve(cname.as_ptr(), len, socket.0, 0) };
        let mz = NonNull::new(mz.cast_mut()).ok_or_else(|| Error::last(op()))?;
        live_inc();
        let mut zone = Memzone {
            mz,
            name: name.to_owned(),
        };
        zone.bytes_mut().fill(0);
        Ok(zone)
    }

    /// The zone's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the memzone descriptor is valid while reserved; addr/len describe memory
        // we reserved and initialised (zero-filled in reserve).
        unsafe {
            let mz = self.mz.as_ref();
            std::slice::from_raw_parts(mz.__bindgen_anon_1.addr.cast::<u8>(), mz.len)
        }
    }

    /// The zone's bytes, mutable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in bytes(), exclusive through &mut self. Bytes are always valid u8.
        unsafe {
            let mz = self.mz.as_ref();
            std::slice::from_raw_parts_mut(mz.__bindgen_anon_1.addr.cast::<u8>(), mz.len)
        }
    }
}

impl Drop for Memzone {
    fn drop(&mut self) {
        // SAFETY: reserved by us, freed once.
        unsafe { ffi::rte_memzone_free(self.mz.as_ptr()) };
        live_dec();
    }
}
