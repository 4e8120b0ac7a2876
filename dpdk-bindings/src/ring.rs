//! Lock-free rings of mbufs (`rte_ring`), for handing packets between lcores.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::burst::Burst;
use crate::eal::{Eal, live_dec, live_inc};
use crate::error::{Error, Result};
use crate::ffi;
use crate::ids::{PortId, SocketId};

/// Who may enqueue and dequeue concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSync {
    /// Many producers, many consumers.
    MultiMulti,
    /// One producer lcore, one consumer lcore (fastest).
    SingleSingle,
}

/// A ring of owned mbufs. The mbufs still in it when it is dropped are freed.
#[derive(Debug)]
pub struct Ring {
    ptr: NonNull<ffi::rte_ring>,
    sync: RingSync,
}

// SAFETY: rte_ring is designed for cross-thread use; the sync mode decides how many threads
// may enqueue or dequeue at once, which `Ring` enforces through &mut for SingleSingle.
unsafe impl Send for Ring {}
// SAFETY: shared (&self) enqueue/dequeue is offered only for MultiMulti rings, whose ops
// are MP/MC safe; single-producer/consumer rings require &mut.
unsafe impl Sync for Ring {}

impl Ring {
    /// Creates a ring holding up to `count - 1` mbufs; `count` must be a power of two.
    pub fn new(_eal: &Eal, name: &str, count: u32, sync: RingSync) -> Result<Ring> {
        let op = || format!("rte_ring_create({name}, {count})");
        if !count.is_power_of_two() {
            return Err(Error::invalid(op(), "count must be a power of two"));
        }
        let cname = CString::new(name).map_err(|_| Error::invalid(op(), "name contains NUL"))?;
        let flags = match sync {
            RingSync::MultiMulti => 0,
            RingSync::SingleSingle => ffi::RING_F_SP_ENQ | ffi::RING_F_SC_DEQ,
        };
        // SAFETY: valid C string and plain values; DPDK validates them.
        let ptr = unsafe { ffi::rte_ring_create(cname.as_ptr(), count, SocketId::ANY.0, flags) };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::last(op()))?;
        live_inc();
        Ok(Ring { ptr, sync })
    }

    /// The sync mode it was created with.
    pub fn sync(&self) -> RingSync {
        self.sync
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_ring {
        self.ptr.as_ptr()
    }

    /// Mbufs queued.
    pub fn count(&self) -> usize {
        // SAFETY: live ring; read-only.
        unsafe { ffi::shim_ring_count(self.ptr.as_ptr()) as usize }
    }

    /// Free places.
    pub fn free_count(&self) -> usize {
        // SAFETY: live ring; read-only.
        unsafe { ffi::shim_ring_free_count(self.ptr.as_ptr()) as usize }
    }

    fn enqueue(&self, burst: &mut Burst) -> usize {
        let n = burst.len() as u32;
        let ptr = burst.held_ptr();
        // SAFETY: ptr holds n owned mbuf pointers; the ring takes the first k; the caller
        // guarantees the producer-side sync mode.
        let k = unsafe { ffi::shim_ring_enqueue_burst(self.ptr.as_ptr(), ptr.cast(), n) };
        // SAFETY: the first k mbufs now belong to the ring.
        unsafe { burst.consumed(k as usize) };
        k as usize
    }

    fn dequeue(&self, burst: &mut Burst) -> usize {
        let spare = burst.spare() as u32;
        let ptr = burst.spare_ptr();
        // SAFETY: ptr has `spare` writable slots; the ring hands over k owned mbufs; the
        // caller guarantees the consumer-side sync mode.
        let k = unsafe { ffi::shim_ring_dequeue_burst(self.ptr.as_ptr(), ptr.cast(), spare) };
        // SAFETY: k <= spare slots were filled with owned mbufs.
        unsafe { burst.commit(k as usize) };
        k as usize
    }

    /// Moves as many mbufs as fit from the front of `burst` into the ring (single producer
    /// or any). Returns how many moved; the rest stay in `burst`.
    pub fn enqueue_burst(&mut self, burst: &mut Burst) -> usize {
        self.enqueue(burst)
    }

    /// Moves up to `burst.spare()` mbufs from the ring into `burst`. Returns how many.
    pub fn dequeue_burst(&mut self, burst: &mut Burst) -> usize {
        self.dequeue(burst)
    }

    /// Shared-reference enqueue, for multi-producer rings; `None` for single-producer ones.
    pub fn enqueue_burst_shared(&self, burst: &mut Burst) -> Option<usize> {
        (self.sync == RingSync::MultiMulti).then(|| self.enqueue(burst))
    }

    /// Shared-reference dequeue, for multi-consumer rings; `None` for single-consumer ones.
    pub fn dequeue_burst_shared(&self, burst: &mut Burst) -> Option<usize> {
        (self.sync == RingSync::MultiMulti).then(|| self.dequeue(burst))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let mut burst = Burst::new();
        while self.dequeue(&mut burst) > 0 {
            burst.clear();
        }
        // SAFETY: live ring, now empty, freed once.
        unsafe { ffi::rte_ring_free(self.ptr.as_ptr()) };
        live_dec();
    }
}

impl Eal {
    /// Creates an ethdev (the net_ring driver) whose RX queue i dequeues from `rx[i]` and
    /// whose TX queue i enqueues into `tx[i]`, named `net_ring_<name>`: traffic generated
    /// and consumed in this
    /// process goes through the same ethdev API as a NIC's. The rings must be
    /// [`RingSync::MultiMulti`](crate::RingSync::MultiMulti): the port becomes one more
    /// producer or consumer beside the caller's threads. They stay alive as long as the EAL.
    pub fn port_from_rings(
        &self,
        name: &str,
        rx: &[std::sync::Arc<Ring>],
        tx: &[std::sync::Arc<Ring>],
    ) -> Result<PortId> {
        let op = || format!("rte_eth_from_rings({name})");
        if rx.is_empty() || tx.is_empty() {
            return Err(Error::invalid(op(), "at least one RX and one TX ring"));
        }
        if rx
            .iter()
            .chain(tx)
            .any(|r| r.sync() != RingSync::MultiMulti)
        {
            return Err(Error::invalid(
                op(),
                "rings must be multi-producer/multi-consumer",
            ));
        }
        let cname = CString::new(name).map_err(|_| Error::invalid(op(), "name contains NUL"))?;
        let mut rxp: Vec<*mut ffi::rte_ring> = rx.iter().map(|r| r.as_ptr()).collect();
        let mut txp: Vec<*mut ffi::rte_ring> = tx.iter().map(|r| r.as_ptr()).collect();
        let nrx = u32::try_from(rxp.len()).map_err(|_| Error::invalid(op(), "too many rings"))?;
        let ntx = u32::try_from(txp.len()).map_err(|_| Error::invalid(op(), "too many rings"))?;
        // SAFETY: the arrays hold live rings (kept alive below for the EAL's lifetime, so
        // the port never outlives them); DPDK copies the pointers.
        let ret = unsafe {
            ffi::rte_eth_from_rings(
                cname.as_ptr(),
                rxp.as_mut_ptr(),
                nrx,
                txp.as_mut_ptr(),
                ntx,
                SocketId::ANY.0 as u32,
            )
        };
        if ret < 0 {
            return Err(Error::last(op()));
        }
        for r in rx.iter().chain(tx) {
            self.keep_alive(std::sync::Arc::clone(r) as std::sync::Arc<dyn crate::eal::Kept>);
        }
        Ok(PortId(ret as u16))
    }
}
