//! The receive ring: `PACKET_RX_RING` with `TPACKET_V2` frames.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};

use crate::{packet_socket, set_opt};

/// Bytes a ring frame takes at least: the frame header, the link-layer address and a
/// 1,500-byte MTU frame with a VLAN tag fit in it. Frames larger than a ring's frames
/// arrive truncated and are reported as such ([`Frame::truncated`]).
const MIN_FRAME_SIZE: u32 = 2048;
/// One page per block for standard frames: the kernel needs no allocation above order 0.
const PAGE: u32 = 4096;
/// Blocks of jumbo rings: several 9,000-byte frames to a block, so little is wasted at the
/// end of each (the kernel falls back to vmalloc when it has no order-4 pages).
const JUMBO_BLOCK: u32 = 64 << 10;
/// Room in a frame before the link-layer header: the `TPACKET_V2` header, the
/// link-layer address and the kernel's alignment of the MAC header.
const FRAME_OVERHEAD: u32 = 128;

/// A frame the ring holds, handed to [`RxRing::recv`]'s closure.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The frame from its Ethernet header on (the VLAN tag, when the kernel took it out,
    /// is in `vlan`).
    pub data: &'a [u8],
    /// The VLAN tag the kernel stripped: (TPID, TCI).
    pub vlan: Option<(u16, u16)>,
    /// The frame was longer than a ring frame holds (`data` is its start only).
    pub truncated: bool,
    /// The sender left the L4 checksum to an offload (`TP_STATUS_CSUMNOTREADY`).
    pub csum_not_ready: bool,
}

/// What the kernel counted since the last call (`PACKET_STATISTICS`, reset on read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Frames the socket received.
    pub packets: u32,
    /// Frames dropped because the ring was full.
    pub drops: u32,
}

/// A receive ring bound to one interface.
#[derive(Debug)]
pub struct RxRing {
    fd: OwnedFd,
    map: NonNull<u8>,
    len: usize,
    frames: u32,
    head: u32,
    ifindex: u32,
    frame_size: u32,
    per_block: u32,
    block_size: u32,
}

// SAFETY: the mapping belongs to this value alone (the kernel writes frames it owns, we
// touch only frames it handed over); moving it to another thread moves that ownership.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Opens a ring of `frames` frames (rounded up to whole blocks, at least 16) on the
    /// interface with index `ifindex`, each frame holding an Ethernet frame of `mtu`
    /// bytes of payload with a VLAN tag (at least 1,500). Frames this host sends on the
    /// interface are not seen (`PACKET_IGNORE_OUTGOING`).
    pub fn open(ifindex: u32, frames: u32, mtu: u16) -> io::Result<RxRing> {
        let (frame_size, block_size) = geometry(mtu);
        let per_block = block_size / frame_size;
        let frames = frames.max(16).div_ceil(per_block) * per_block;
        let fd = packet_socket()?;
        let raw = fd.as_raw_fd();
        set_opt(
            raw,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V2 as libc::c_int),
        )?;
        // Kernels before 4.20 lack the option; outgoing frames are then skipped by type.
        let _ = set_opt(raw, libc::PACKET_IGNORE_OUTGOING, &1 as &libc::c_int);
        let req = libc::tpacket_req {
            tp_block_size: block_size,
            tp_block_nr: frames / per_block,
            tp_frame_size: frame_size,
            tp_frame_nr: frames,
        };
        set_opt(raw, libc::PACKET_RX_RING, &req)?;
        let len = (frames / per_block * block_size) as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket; the result is
        // checked before use and unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                raw,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        let ring = RxRing {
            fd,
            map,
            len,
            frames,
            head: 0,
            ifindex,
            frame_size,
            per_block,
            block_size,
        };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                raw,
                std::ptr::from_ref(&sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ring)
    }

    /// The interface the ring is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Frames in the ring.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// The largest frame (from its Ethernet header on) the ring holds whole.
    pub fn max_frame(&self) -> u32 {
        self.frame_size - FRAME_OVERHEAD
    }

    /// Bytes of kernel memory the ring holds.
    pub fn memory_bytes(&self) -> usize {
        self.len
    }

    fn header(&self, i: u32) -> *mut libc::tpacket2_hdr {
        // Frames never straddle blocks: block i / per_block, slot i % per_block in it.
        let at = (i / self.per_block) * self.block_size + (i % self.per_block) * self.frame_size;
        // SAFETY: i < frames, so `at` + frame_size lies inside the mapping (frames /
        // per_block whole blocks).
        unsafe { self.map.as_ptr().add(at as usize) }.cast()
    }

    /// Whether the next frame is ready (one load; no system call).
    #[inline]
    pub fn ready(&self) -> bool {
        let h = self.header(self.head);
        // SAFETY: `h` points to a frame header in the mapping; the kernel writes the status
        // word concurrently, hence the volatile read.
        let status = unsafe { std::ptr::addr_of!((*h).tp_status).read_volatile() };
        status & libc::TP_STATUS_USER != 0
    }

    /// Hands up to `max` ready frames to `f`, in order, and gives each frame back to the
    /// kernel once `f` returns. Returns how many it handed over.
    #[inline]
    pub fn recv(&mut self, max: usize, mut f: impl FnMut(Frame<'_>)) -> usize {
        let mut n = 0;
        while n < max {
            let h = self.header(self.head);
            // SAFETY: as in `ready`.
            let status = unsafe { std::ptr::addr_of!((*h).tp_status).read_volatile() };
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            // The frame's contents were written before its status: read them after it.
            fence(Ordering::Acquire);
            // SAFETY: the kernel handed this frame over (TP_STATUS_USER) and does not touch
            // it until we set its status back; the header is plain data.
            let hdr = unsafe { h.read() };
            let mac = hdr.tp_mac as u32;
            let snap = hdr.tp_snaplen;
            let ll = (h as usize + tpacket2_ll_offset()) as *const libc::sockaddr_ll;
            // SAFETY: the link-layer address follows the aligned header in the frame.
            let pkttype = unsafe { std::ptr::addr_of!((*ll).sll_pkttype).read() };
            let outgoing = pkttype == libc::PACKET_OUTGOING;
            if !outgoing && mac + snap <= self.frame_size {
                // SAFETY: [mac, mac + snap) lies inside this frame (checked above), which
                // we own until its status is reset below.
                let data = unsafe {
                    std::slice::from_raw_parts(h.cast::<u8>().add(mac as usize), snap as usize)
                };
                let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        hdr.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    (tpid, hdr.tp_vlan_tci)
                });
                f(Frame {
                    data,
                    vlan,
                    truncated: snap < hdr.tp_len,
                    csum_not_ready: status & libc::TP_STATUS_CSUMNOTREADY != 0,
                });
                n += 1;
            }
            // Everything read from the frame is read before the kernel may reuse it.
            fence(Ordering::Release);
            // SAFETY: the frame is ours; handing it back is a store of TP_STATUS_KERNEL.
            unsafe {
                std::ptr::addr_of_mut!((*h).tp_status).write_volatile(libc::TP_STATUS_KERNEL)
            };
            self.head = (self.head + 1) % self.frames;
        }
        n
    }

    /// The kernel's counters since the last call.
    pub fn stats(&self) -> io::Result<RingStats> {
        let mut s = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `s` and `len` are live and describe a buffer of the right size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                std::ptr::from_mut(&mut s).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RingStats {
            packets: s.tp_packets,
            drops: s.tp_drops,
        })
    }
}

/// Frame and block size of a ring for `mtu`: standard frames two to a page; larger ones
/// rounded up to the ring alignment, several to a 64 KiB block.
fn geometry(mtu: u16) -> (u32, u32) {
    // Ethernet header, one VLAN tag, and the payload.
    let need = FRAME_OVERHEAD + 18 + u32::from(mtu);
    let align = libc::TPACKET_ALIGNMENT as u32;
    let frame = need.div_ceil(align) * align;
    if frame <= MIN_FRAME_SIZE {
        (MIN_FRAME_SIZE, PAGE)
    } else if frame <= JUMBO_BLOCK {
        (frame, JUMBO_BLOCK)
    } else {
        (frame, frame.div_ceil(PAGE) * PAGE)
    }
}

/// Where the link-layer address sits in a `TPACKET_V2` frame.
const fn tpacket2_ll_offset() -> usize {
    (std::mem::size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT - 1)
        & !(libc::TPACKET_ALIGNMENT - 1)
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no frame reference outlives
        // `recv`'s closure, so nothing points into it any more. The socket closes after.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.len);
        }
    }
}
