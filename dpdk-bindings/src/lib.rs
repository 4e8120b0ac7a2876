//! Safe DPDK for the vrouter: the project's only crate with FFI `unsafe`.
//!
//! `ffi` holds bindgen's bindings over Debian's DPDK 22.11 plus a C shim for the
//! static-inline functions. The modules beside it wrap what the vrouter uses: EAL
//! initialisation ([`EalBuilder`], [`Eal`]), mbuf pools ([`Mempool`]), owned mbufs ([`Mbuf`])
//! in fixed-capacity bursts ([`Burst`]), ports and their queues ([`Port`], [`RxQueue`],
//! [`TxQueue`]), rings ([`Ring`]), lcore launch ([`LcoreJoin`]) and hugepage memory
//! ([`HugeSlice`], [`Memzone`]). Every `unsafe` block says why it is sound.

pub mod ffi;

mod burst;
mod eal;
mod error;
mod ids;
mod lcore;
mod mbuf;
mod memory;
mod mempool;
mod port;
mod ring;

pub use burst::{Burst, Drain, MAX_BURST};
pub use eal::{Eal, EalBuilder};
pub use error::{Error, Result};
pub use ids::{LcoreId, PortId, QueueId, SocketId};
pub use lcore::LcoreJoin;
pub use mbuf::Mbuf;
pub use memory::{HugeSlice, Memzone};
pub use mempool::{DEFAULT_DATA_ROOM, HEADROOM, Mempool, data_room_for};
pub use port::{Link, Port, PortConfig, PortInfo, PortStats, RxQueue, TxQueue, port_info};
pub use ring::{Ring, RingSync};

/// Reads the CPU's time-stamp counter (cycles), for per-packet cost measurements.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions.
    unsafe { ffi::shim_rdtsc() }
}

/// Asks the CPU to bring the cache line holding `r` towards L1, so a later read of it does
/// not stall (the burst loops prefetch flow buckets and entries for the packets ahead).
/// A no-op off x86-64.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and never changes memory, and `r`
    // is a valid reference anyway. It needs SSE, which every x86-64 CPU has.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast::<i8>(),
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Asks the kernel to back `s` with transparent huge pages (2 MiB) where it can: the part
/// of the slice that covers whole huge pages. Large tables (the flow table) then cost far
/// fewer TLB misses. Only a hint: returns false where the kernel declines.
pub fn advise_hugepages<T>(s: &[T]) -> bool {
    const HUGE: usize = 2 << 20;
    let start = s.as_ptr() as usize;
    let end = start + std::mem::size_of_val(s);
    let first = start.next_multiple_of(HUGE);
    let last = end / HUGE * HUGE;
    if last <= first {
        return false;
    }
    // SAFETY: [first, last) lies inside the memory of `s`, which we borrow; MADV_HUGEPAGE
    // changes neither its contents nor its mapping's validity, only how the kernel backs it.
    unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            last - first,
            libc::MADV_HUGEPAGE,
        ) == 0
    }
}

/// The CPUs the calling thread may run on.
pub fn current_thread_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid 0 is this thread.
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } == 0;
    if !ok {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: every index is below CPU_SETSIZE, inside `set`.
        .filter(|c| unsafe { libc::CPU_ISSET(*c, &set) })
        .collect()
}

/// Moves the calling thread (and the threads it starts later) onto `cpus`: control
/// threads go there so that they do not share a CPU with a polling lcore. Does nothing
/// when `cpus` is empty.
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus.iter().filter(|c| **c < libc::CPU_SETSIZE as usize) {
        // SAFETY: the index is below CPU_SETSIZE (filtered), inside `set`.
        unsafe { libc::CPU_SET(*c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
