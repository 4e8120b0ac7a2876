//! Source-NAT port pools: ports of the node's IP handed to flows that leave through it.
//!
//! One pool per protocol over a configured range (ip-fabric SNAT reserves TCP
//! 56000-57023 and UDP 57024-58047). Allocation is lock-free (an atomic bitmap searched
//! from a rotating cursor) because flows are set up on the forwarding lcores; ports come
//! back when the flow table deletes the pair. Exhaustion is an error the pipeline counts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A pool of ports `first..=last`.
#[derive(Debug)]
pub struct PortPool {
    first: u16,
    len: usize,
    bits: Box<[AtomicU64]>,
    cursor: AtomicUsize,
    in_use: AtomicUsize,
    exhausted: AtomicU64,
}

impl PortPool {
    /// A pool over `first..=last` (an empty pool when `last < first`).
    pub fn new(first: u16, last: u16) -> PortPool {
        let len = if last >= first {
            usize::from(last - first) + 1
        } else {
            0
        };
        PortPool {
            first,
            len,
            bits: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            cursor: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Takes a free port, or `None` (counted) when all are in use.
    pub fn alloc(&self) -> Option<u16> {
        if self.len == 0 {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % self.len;
        for step in 0..self.len {
            let i = (start + step) % self.len;
            let (w, b) = (i / 64, 1u64 << (i % 64));
            // AcqRel: the bit is the ownership of the port; nothing else is published.
            let old = self.bits[w].fetch_or(b, Ordering::AcqRel);
            if old & b == 0 {
                self.in_use.fetch_add(1, Ordering::Relaxed);
                return Some(self.first + i as u16);
            }
        }
        self.exhausted.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Returns a port; ports outside the range or not in use are ignored (false).
    pub fn free(&self, port: u16) -> bool {
        let Some(i) = port.checked_sub(self.first).map(usize::from) else {
            return false;
        };
        if i >= self.len {
            return false;
        }
        let (w, b) = (i / 64, 1u64 << (i % 64));
        let old = self.bits[w].fetch_and(!b, Ordering::AcqRel);
        if old & b != 0 {
            self.in_use.fetch_sub(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Ports in use.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Allocations refused because the pool was empty.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Pool size.
    pub fn size(&self) -> usize {
        self.len
    }
}

/// The TCP and UDP pools of a node (ICMP uses the UDP pool for echo identifiers).
#[derive(Debug)]
pub struct SnatPools {
    /// TCP ports.
    pub tcp: PortPool,
    /// UDP (and ICMP echo) ports.
    pub udp: PortPool,
}

impl Default for SnatPools {
    /// The ip-fabric SNAT ranges: TCP 56000-57023, UDP 57024-58047.
    fn default() -> Self {
        SnatPools {
            tcp: PortPool::new(56000, 57023),
            udp: PortPool::new(57024, 58047),
        }
    }
}

impl SnatPools {
    /// The pool for an IP protocol.
    pub fn for_proto(&self, proto: u8) -> &PortPool {
        if proto == 6 { &self.tcp } else { &self.udp }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_refused_and_counted_then_freed_ports_return() {
        let p = PortPool::new(56000, 56003);
        let mut got: Vec<u16> = (0..4).map(|_| p.alloc().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![56000, 56001, 56002, 56003]);
        assert_eq!(p.alloc(), None);
        assert_eq!(p.exhausted(), 1);
        assert!(p.free(56002));
        assert!(!p.free(56002), "double free ignored");
        assert!(!p.free(1), "outside the range");
        assert_eq!(p.alloc(), Some(56002));
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn default_ranges_match_ip_fabric_snat() {
        let s = SnatPools::default();
        assert_eq!((s.tcp.size(), s.udp.size()), (1024, 1024));
        assert_eq!(
            s.for_proto(6).alloc().map(|p| (56000..=57023).contains(&p)),
            Some(true)
        );
        assert_eq!(
            s.for_proto(17)
                .alloc()
                .map(|p| (57024..=58047).contains(&p)),
            Some(true)
        );
    }

    #[test]
    fn concurrent_allocations_never_hand_out_a_port_twice() {
        let p = std::sync::Arc::new(PortPool::new(1000, 2999));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let p = std::sync::Arc::clone(&p);
                std::thread::spawn(move || (0..1000).filter_map(|_| p.alloc()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u16> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!((n, all.len()), (2000, 2000));
        assert_eq!(p.alloc(), None);
    }
}
