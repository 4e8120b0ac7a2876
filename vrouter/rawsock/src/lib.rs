//! Host interfaces the vrouter serves itself, without an ethdev each.
//!
//! Debian's DPDK is built with `RTE_MAX_ETHPORTS 32`, so a pod interface per
//! `net_af_packet` ethdev caps a node at 30 pods. This crate does what that PMD does,
//! without the port: a memory-mapped `TPACKET_V2` receive ring bound to one interface
//! ([`RxRing`]: polling it is a load of the next frame's status word, no system call) and
//! one unbound send socket per forwarding lcore that sends a burst to any interface with a
//! single `sendmmsg` ([`TxSocket`]). Rings use order-0 pages only, so hundreds of them are
//! set up without high-order allocations.
//!
//! Written by hand because it is the datapath's I/O itself, and no crate exposes the
//! kernel's ring without an allocation or a system call per packet.
//!
//! Every `unsafe` block sits in this crate (and dpdk-bindings), with its `SAFETY:` reason.

mod rx;
mod tx;

pub use rx::{Frame, RingStats, RxRing};
pub use tx::{MAX_BATCH, TxSocket};

use std::ffi::CString;
use std::io;

/// The interface index of `name` (`if_nametoindex`).
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

/// `setsockopt(fd, SOL_PACKET, opt, &val)`.
fn set_opt<T>(fd: libc::c_int, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to a live `T` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            opt,
            std::ptr::from_ref(val).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A new `AF_PACKET` raw socket that receives nothing until bound with a protocol.
fn packet_socket() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system call; a non-negative result is a descriptor we now own.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Pins the calling thread to CPU `cpu` (`sched_setaffinity`): a traffic generator or
/// sink beside a vrouter keeps off the CPU of its forwarding lcore.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: cpu < CPU_SETSIZE (checked above), so the bit lies inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
