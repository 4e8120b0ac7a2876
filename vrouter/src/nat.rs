//! Source-NAT port pools: ports of the node's IP handed to flows that leave through it.
//!
//! One pool per protocol over a configured range (ip-fabric SNAT reserves TCP
//! 56000-57023 and UDP 57024-58047). Allocation is lock-free (an atomic bitmap searched
//! from a rotating cursor) because flows are set up on the forwarding lcores; ports come
//! back when the flow table deletes the pair. Exhaustion is an error the pipeline counts.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A pool of ports `first..=last`, a range that may change while ports are in use.
#[derive(Debug)]
pub struct PortPool {
    /// `first << 16 | last` (an empty range when `last < first`). One word, so an
    /// allocation sees a whole range, old or new.
    range: AtomicU32,
    /// One bit per port number (all 65,536): a port taken under an old range is freed
    /// into the same bit however the range changed since.
    bits: Box<[AtomicU64]>,
    cursor: AtomicUsize,
    in_use: AtomicUsize,
    exhausted: AtomicU64,
}

impl PortPool {
    /// A pool over `first..=last` (an empty pool when `last < first`).
    pub fn new(first: u16, last: u16) -> PortPool {
        PortPool {
            range: AtomicU32::new(pack(first, last)),
            bits: (0..1024).map(|_| AtomicU64::new(0)).collect(),
            cursor: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Moves the pool to `first..=last`: new allocations come from there; ports in use
    /// stay with their flows and are freed as usual.
    pub fn set_range(&self, first: u16, last: u16) {
        self.range.store(pack(first, last), Ordering::Relaxed);
    }

    /// The range, `(first, last)`.
    pub fn range(&self) -> (u16, u16) {
        let r = self.range.load(Ordering::Relaxed);
        ((r >> 16) as u16, r as u16)
    }

    /// Takes a free port, or `None` (counted) when all are in use.
    pub fn alloc(&self) -> Option<u16> {
        let (first, last) = self.range();
        let len = if last >= first {
            usize::from(last - first) + 1
        } else {
            0
        };
        if len == 0 {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
        for step in 0..len {
            let port = usize::from(first) + (start + step) % len;
            let (w, b) = (port / 64, 1u64 << (port % 64));
            // AcqRel: the bit is the ownership of the port; nothing else is published.
            let old = self.bits[w].fetch_or(b, Ordering::AcqRel);
            if old & b == 0 {
                self.in_use.fetch_add(1, Ordering::Relaxed);
                return Some(port as u16);
            }
        }
        self.exhausted.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Returns a port; ports not in use are ignored (false).
    pub fn free(&self, port: u16) -> bool {
        let i = usize::from(port);
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
        let (first, last) = self.range();
        if last >= first {
            usize::from(last - first) + 1
        } else {
            0
        }
    }
}

fn pack(first: u16, last: u16) -> u32 {
    (u32::from(first) << 16) | u32::from(last)
}

/// The TCP and UDP pools of a node (ICMP uses the UDP pool for echo identifiers), and
/// the ports each interface holds, so that one VM cannot take a whole pool.
#[derive(Debug)]
pub struct SnatPools {
    /// TCP ports.
    pub tcp: PortPool,
    /// UDP (and ICMP echo) ports.
    pub udp: PortPool,
    /// Ports held per interface (both pools together).
    owned: Box<[AtomicU32]>,
    /// Allocations refused because the interface held its share.
    over_share: AtomicU64,
}

/// The ip-fabric SNAT ranges: TCP 56000-57023, UDP 57024-58047.
pub const DEFAULT_RANGES: [(u16, u16); 2] = vrouter_api::config::DEFAULT_SNAT_RANGES;

impl Default for SnatPools {
    /// The ip-fabric SNAT ranges, [`DEFAULT_RANGES`].
    fn default() -> Self {
        let [(t0, t1), (u0, u1)] = DEFAULT_RANGES;
        SnatPools::new(PortPool::new(t0, t1), PortPool::new(u0, u1))
    }
}

/// Why no port was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnatRefusal {
    /// Every port of the pool is in use.
    #[error("every SNAT port is in use")]
    Exhausted,
    /// The interface holds its share of ports already.
    #[error("the interface holds its share of SNAT ports")]
    Share,
}

impl SnatPools {
    /// Pools over the given port pools.
    pub fn new(tcp: PortPool, udp: PortPool) -> SnatPools {
        SnatPools {
            tcp,
            udp,
            owned: (0..crate::tables::vif::MAX_OWNERS)
                .map(|_| AtomicU32::new(0))
                .collect(),
            over_share: AtomicU64::new(0),
        }
    }

    /// Moves the pools to the configured ranges, if they are elsewhere (two relaxed
    /// loads when nothing changed: run before each allocation).
    #[inline]
    pub fn follow(&self, ranges: Option<([u16; 2], [u16; 2])>) {
        let Some(([t0, t1], [u0, u1])) = ranges else {
            return;
        };
        if self.tcp.range() != (t0, t1) {
            self.tcp.set_range(t0, t1);
        }
        if self.udp.range() != (u0, u1) {
            self.udp.set_range(u0, u1);
        }
    }

    /// The pool for an IP protocol.
    pub fn for_proto(&self, proto: u8) -> &PortPool {
        if proto == 6 { &self.tcp } else { &self.udp }
    }

    /// The share of ports an interface may hold when none is configured: a quarter of
    /// the smaller pool.
    pub fn default_share(&self) -> u32 {
        (self.tcp.size().min(self.udp.size()) / 4).max(1) as u32
    }

    /// A port for a flow of interface `owner` (`(vif, share)`; `None`: not counted).
    pub fn alloc_for(&self, proto: u8, owner: Option<(u32, u32)>) -> Result<u16, SnatRefusal> {
        let held = owner.and_then(|(vif, share)| Some((self.owned.get(vif as usize)?, share)));
        if let Some((n, share)) = held {
            // Taken first, then checked: two lcores racing for the last one cannot both win.
            if n.fetch_add(1, Ordering::Relaxed) >= share {
                n.fetch_sub(1, Ordering::Relaxed);
                self.over_share.fetch_add(1, Ordering::Relaxed);
                return Err(SnatRefusal::Share);
            }
        }
        self.for_proto(proto).alloc().ok_or_else(|| {
            if let Some((n, _)) = held {
                n.fetch_sub(1, Ordering::Relaxed);
            }
            SnatRefusal::Exhausted
        })
    }

    /// Gives back a port [`alloc_for`](Self::alloc_for) handed to `owner`'s flow.
    pub fn free_for(&self, proto: u8, port: u16, owner: Option<u64>) {
        if self.for_proto(proto).free(port) {
            if let Some(n) = owner.and_then(|o| self.owned.get(o as usize)) {
                n.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Ports interface `vif` holds.
    pub fn held_by(&self, vif: u32) -> u32 {
        self.owned
            .get(vif as usize)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Allocations refused because the interface held its share.
    pub fn over_share(&self) -> u64 {
        self.over_share.load(Ordering::Relaxed)
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
