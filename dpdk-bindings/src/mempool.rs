//! Packet-buffer pools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;

use crate::burst::Burst;
use crate::eal::{Eal, live_dec, live_inc};
use crate::error::{Error, Result};
use crate::ffi;
use crate::ids::SocketId;
use crate::mbuf::Mbuf;

/// Default data room: 2 KiB of packet data plus the standard headroom.
pub const DEFAULT_DATA_ROOM: u16 = ffi::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

/// Headroom reserved in front of each packet (where encapsulation headers go).
pub const HEADROOM: u16 = ffi::RTE_PKTMBUF_HEADROOM as u16;

/// The data room that holds a whole frame of up to `frame` bytes after the headroom, in
/// one segment (at least [`DEFAULT_DATA_ROOM`]).
pub fn data_room_for(frame: usize) -> u16 {
    let want = usize::from(HEADROOM) + frame;
    u16::try_from(want.max(usize::from(DEFAULT_DATA_ROOM))).unwrap_or(u16::MAX)
}

/// A pool of mbufs. Shared between lcores by reference (`Arc<Mempool>`): the ring-based
/// mempool ops are multi-producer / multi-consumer safe, with a per-lcore cache.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<ffi::rte_mempool>,
    name: String,
}

// SAFETY: an rte_mempool created with default flags (MP/MC ring ops) may be used from any
// thread concurrently; DPDK's per-lcore caches are indexed by the calling lcore.
unsafe impl Send for Mempool {}
// SAFETY: as above; every method takes &self and maps to a thread-safe DPDK call.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pktmbuf pool of `count` buffers with a per-lcore cache of `cache` and
    /// `data_room` bytes of buffer (headroom included).
    pub fn new(
        _eal: &Eal,
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        socket: SocketId,
    ) -> Result<Mempool> {
        let op = || format!("rte_pktmbuf_pool_create({name}, {count} mbufs)");
        if cache > ffi::RTE_MEMPOOL_CACHE_MAX_SIZE {
            return Err(Error::invalid(
                op(),
                format!("cache {cache} exceeds {}", ffi::RTE_MEMPOOL_CACHE_MAX_SIZE),
            ));
        }
        if count == 0 {
            return Err(Error::invalid(op(), "count must be at least 1"));
        }
        let cname = CString::new(name).map_err(|_| Error::invalid(op(), "name contains NUL"))?;
        // SAFETY: cname is a valid C string; EAL is up (we hold &Eal); the other arguments
        // are plain values that DPDK validates itself.
        let ptr = unsafe {
            ffi::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, socket.0)
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::last(op()))?;
        live_inc();
        Ok(Mempool {
            ptr,
            name: name.to_owned(),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Allocates one mbuf (empty, headroom reserved), or `None` if the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: self.ptr is a live pktmbuf pool.
        let m = unsafe { ffi::shim_pktmbuf_alloc(self.ptr.as_ptr()) };
        // SAFETY: a non-null result is a freshly allocated mbuf that we now own.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    /// Fills `burst` up to `n` mbufs (all or none). Returns false if the pool has too few.
    pub fn alloc_bulk(&self, burst: &mut Burst, n: usize) -> bool {
        let n = n.min(burst.spare());
        let Ok(count) = u32::try_from(n) else {
            return false;
        };
        let spare = burst.spare_ptr();
        // SAFETY: spare points at `burst.spare()` >= n writable pointer slots; on success
        // DPDK writes n valid mbuf pointers there, which `commit` then takes ownership of.
        let ret = unsafe { ffi::shim_pktmbuf_alloc_bulk(self.ptr.as_ptr(), spare, count) };
        if ret != 0 {
            return false;
        }
        // SAFETY: the n slots after len were just filled with owned mbufs.
        unsafe { burst.commit(n) };
        true
    }

    /// Mbufs available in the pool (ring plus caches).
    pub fn avail_count(&self) -> u32 {
        // SAFETY: live pool; read-only query.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs currently allocated from the pool.
    pub fn in_use_count(&self) -> u32 {
        // SAFETY: live pool; read-only query.
        unsafe { ffi::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// The raw pool, for port queue setup.
    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        if self.in_use_count() != 0 {
            // Mbufs from this pool are still owned somewhere: freeing the pool would leave
            // them dangling. Keep it (and keep EAL from cleaning up under them).
            return;
        }
        // SAFETY: live pool with no mbuf in use; freed once.
        unsafe { ffi::rte_mempool_free(self.ptr.as_ptr()) };
        live_dec();
    }
}
