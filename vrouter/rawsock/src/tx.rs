//! The send side: one unbound `AF_PACKET` socket per lcore, a burst per `sendmmsg`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::{packet_socket, set_opt};

/// Frames one [`TxSocket::send`] takes at most.
pub const MAX_BATCH: usize = 64;

/// A socket that sends frames to any interface, a batch per system call. Frames bypass
/// the interface's qdisc (`PACKET_QDISC_BYPASS`), as the DPDK af_packet PMD's do, and other
/// packet sockets on the host (and this crate's [`crate::RxRing`]s) do not see them.
#[derive(Debug)]
pub struct TxSocket {
    fd: OwnedFd,
    // Boxed so that the pointers between them stay put when the socket moves.
    addrs: Box<[libc::sockaddr_ll; MAX_BATCH]>,
    iovs: Box<[libc::iovec; MAX_BATCH]>,
    msgs: Box<[libc::mmsghdr; MAX_BATCH]>,
}

// SAFETY: the raw pointers inside `iovs` and `msgs` point into this value's own boxes, or
// are stale between calls (rewritten before each use); nothing is shared.
unsafe impl Send for TxSocket {}

impl TxSocket {
    /// A new send socket.
    pub fn new() -> io::Result<TxSocket> {
        let fd = packet_socket()?;
        set_opt(
            fd.as_raw_fd(),
            libc::PACKET_QDISC_BYPASS,
            &1 as &libc::c_int,
        )?;
        // SAFETY: these are plain C structures for which all-zero is a valid value.
        let (addrs, iovs, msgs) = unsafe {
            (
                Box::new(std::mem::zeroed::<[libc::sockaddr_ll; MAX_BATCH]>()),
                Box::new(std::mem::zeroed::<[libc::iovec; MAX_BATCH]>()),
                Box::new(std::mem::zeroed::<[libc::mmsghdr; MAX_BATCH]>()),
            )
        };
        Ok(TxSocket {
            fd,
            addrs,
            iovs,
            msgs,
        })
    }

    /// Sends `frames` (complete Ethernet frames, at most [`MAX_BATCH`]) on the interface
    /// with index `ifindex`; returns how many the kernel took, in order. A frame the
    /// interface refuses as too long is skipped (and not counted); on any other refusal
    /// (interface down or gone, no buffer) the rest is not sent.
    pub fn send<'a>(&mut self, ifindex: u32, frames: impl IntoIterator<Item = &'a [u8]>) -> usize {
        let mut n = 0;
        for f in frames.into_iter().take(MAX_BATCH) {
            let a = &mut self.addrs[n];
            a.sll_family = libc::AF_PACKET as u16;
            a.sll_ifindex = ifindex as i32;
            // The EtherType as the frame carries it (already in network order).
            a.sll_protocol = f
                .get(12..14)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]))
                .unwrap_or(0);
            self.iovs[n] = libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            };
            let m = &mut self.msgs[n].msg_hdr;
            m.msg_name = std::ptr::from_mut(&mut self.addrs[n]).cast();
            m.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            m.msg_iov = std::ptr::from_mut(&mut self.iovs[n]);
            m.msg_iovlen = 1;
            n += 1;
        }
        let mut sent = 0;
        let mut at = 0;
        while at < n {
            // SAFETY: msgs[at..n] were filled above: each names a live sockaddr_ll and one
            // iovec over a frame borrowed for this call; the kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.msgs.as_mut_ptr().add(at),
                    (n - at) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
                at += r as usize;
                continue;
            }
            if io::Error::last_os_error().raw_os_error() == Some(libc::EMSGSIZE) {
                at += 1; // this frame only
                continue;
            }
            break;
        }
        sent
    }
}
