//! The buffer the pipeline works on: implemented by DPDK's `Mbuf` in the daemon and by
//! [`VecBuf`] in tests and benchmarks, so every stage runs on real bytes without DPDK.

/// A packet buffer with headroom for encapsulation.
pub trait PacketBuf {
    /// The packet bytes.
    fn data(&self) -> &[u8];
    /// The packet bytes, mutable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the front by `n` bytes; `None` (and no change) without headroom.
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]>;
    /// Removes `n` bytes from the front; false (and no change) if shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Grows the end by `n` bytes; `None` (and no change) without tailroom.
    fn append(&mut self, n: usize) -> Option<&mut [u8]>;
    /// Removes `n` bytes from the end; false (and no change) if shorter.
    fn trim(&mut self, n: usize) -> bool;
    /// Free bytes before the data.
    fn headroom(&self) -> usize;
    /// Makes the packet `len` bytes long, growing or cutting its end; false (and no
    /// change) without the tailroom.
    fn resize(&mut self, len: usize) -> bool {
        let now = self.len();
        if now < len {
            self.append(len - now).is_some()
        } else {
            self.trim(now - len)
        }
    }
    /// Packet length.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Headroom of a [`VecBuf`], like DPDK's `RTE_PKTMBUF_HEADROOM`.
pub const DEFAULT_HEADROOM: usize = 128;

/// A heap buffer with headroom, for tests and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecBuf {
    buf: Vec<u8>,
    start: usize,
}

impl VecBuf {
    /// Copies `bytes` after `DEFAULT_HEADROOM` bytes of headroom.
    pub fn new(bytes: &[u8]) -> VecBuf {
        Self::with_headroom(bytes, DEFAULT_HEADROOM)
    }

    /// Copies `bytes` after `headroom` bytes.
    pub fn with_headroom(bytes: &[u8], headroom: usize) -> VecBuf {
        let mut buf = vec![0u8; headroom + bytes.len()];
        buf[headroom..].copy_from_slice(bytes);
        VecBuf {
            buf,
            start: headroom,
        }
    }

    /// Refills with `bytes`, keeping the allocation (for benchmarks).
    pub fn reset(&mut self, bytes: &[u8]) {
        self.buf.truncate(DEFAULT_HEADROOM);
        self.buf.resize(DEFAULT_HEADROOM, 0);
        self.buf.extend_from_slice(bytes);
        self.start = DEFAULT_HEADROOM;
    }
}

impl PacketBuf for VecBuf {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        Some(&mut self.buf[self.start..self.start + n])
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.buf.len() - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let old = self.buf.len();
        self.buf.resize(old + n, 0);
        Some(&mut self.buf[old..])
    }
    fn trim(&mut self, n: usize) -> bool {
        if n > self.buf.len() - self.start {
            return false;
        }
        self.buf.truncate(self.buf.len() - n);
        true
    }
    fn headroom(&self) -> usize {
        self.start
    }
}

impl PacketBuf for dpdk_bindings::Mbuf {
    fn data(&self) -> &[u8] {
        dpdk_bindings::Mbuf::data(self)
    }
    fn data_mut(&mut self) -> &mut [u8] {
        dpdk_bindings::Mbuf::data_mut(self)
    }
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        dpdk_bindings::Mbuf::prepend(self, n)
    }
    fn adj(&mut self, n: usize) -> bool {
        dpdk_bindings::Mbuf::adj(self, n)
    }
    fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        dpdk_bindings::Mbuf::append(self, n)
    }
    fn trim(&mut self, n: usize) -> bool {
        dpdk_bindings::Mbuf::trim(self, n)
    }
    fn headroom(&self) -> usize {
        dpdk_bindings::Mbuf::headroom(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vecbuf_window_operations() {
        let mut b = VecBuf::with_headroom(b"abcdef", 4);
        b.prepend(2).unwrap().copy_from_slice(b"XY");
        assert_eq!(b.data(), b"XYabcdef");
        assert!(b.prepend(3).is_none());
        assert_eq!(b.data(), b"XYabcdef");
        assert!(b.adj(3));
        assert!(b.trim(2));
        assert_eq!(b.data(), b"bcd");
        b.append(1).unwrap()[0] = b'!';
        assert_eq!(b.data(), b"bcd!");
        assert!(!b.adj(5) && !b.trim(5));
        b.reset(b"new");
        assert_eq!((b.data(), b.headroom()), (&b"new"[..], DEFAULT_HEADROOM));
    }
}
