//! Longest-prefix match for IPv4 and IPv6: a persistent multibit trie with 8-bit strides.
//!
//! Lookup walks at most one node per address byte (1-4 for IPv4, 1-16 for IPv6) with no
//! branch on prefix lengths: prefixes are expanded into every slot they cover ("leaf
//! pushing"), a slot keeping the longest prefix that covers it. Nodes are `Arc`s: a
//! published snapshot shares every node with the writer's copy, and a change copies only
//! the nodes on its path (`Arc::make_mut`). The lookup result is a [`RouteEntry`]; a miss
//! returns `None`, which the pipeline turns into the VRF's discard.
//!
//! [`Lpm`] is the read side that goes into snapshots. [`LpmWriter`] owns it plus the
//! authoritative prefix map, needed to restore the covering prefix when one is deleted
//! and to dump routes; that map stays on the control thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::NhId;

/// What a route resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEntry {
    /// The nexthop (possibly a composite).
    pub nh: NhId,
    /// MPLS label or VXLAN VNI to push for tunnel nexthops (0 when unused).
    pub label: u32,
    /// Endpoint attributes (VN, tags) of the destination, for policy; 0 when unknown.
    pub attr: u32,
}

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Empty,
    Leaf { plen: u8, entry: RouteEntry },
    Node(Arc<Node>),
}

type Node = [Slot; 256];

fn new_node(fill: &Slot) -> Arc<Node> {
    Arc::new(std::array::from_fn(|_| fill.clone()))
}

/// The read side of a trie over `N`-byte addresses; cheap to clone.
#[derive(Debug, Clone)]
pub struct Lpm<const N: usize> {
    root: Arc<Node>,
}

impl<const N: usize> Default for Lpm<N> {
    fn default() -> Self {
        Lpm {
            root: new_node(&Slot::Empty),
        }
    }
}

impl<const N: usize> Lpm<N> {
    /// The longest prefix covering `addr`.
    #[inline]
    pub fn lookup(&self, addr: &[u8; N]) -> Option<RouteEntry> {
        let mut node: &Node = &self.root;
        for b in addr {
            match &node[usize::from(*b)] {
                Slot::Empty => return None,
                Slot::Leaf { entry, .. } => return Some(*entry),
                Slot::Node(child) => node = child,
            }
        }
        None
    }

    /// Number of trie nodes (for memory accounting).
    pub fn node_count(&self) -> usize {
        fn count(n: &Node) -> usize {
            1 + n
                .iter()
                .map(|s| if let Slot::Node(c) = s { count(c) } else { 0 })
                .sum::<usize>()
        }
        count(&self.root)
    }
}

/// Invalid prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("prefix length {len} is longer than the address ({max} bits)")]
pub struct PrefixLenError {
    /// Length given.
    pub len: u8,
    /// Address bits.
    pub max: u8,
}

/// Clears the bits of `addr` after the first `len`.
pub fn mask<const N: usize>(mut addr: [u8; N], len: u8) -> [u8; N] {
    for (i, b) in addr.iter_mut().enumerate() {
        let start = (i * 8) as u32;
        let keep = u32::from(len).saturating_sub(start).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    addr
}

/// The write side: the trie plus the authoritative prefix map.
#[derive(Debug, Clone, Default)]
pub struct LpmWriter<const N: usize> {
    lpm: Lpm<N>,
    routes: BTreeMap<([u8; N], u8), RouteEntry>,
}

impl<const N: usize> LpmWriter<N> {
    /// The read side, to be published (an O(1) clone).
    pub fn snapshot(&self) -> Lpm<N> {
        self.lpm.clone()
    }

    /// The read side, for lookups on the control thread.
    pub fn lpm(&self) -> &Lpm<N> {
        &self.lpm
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there are no prefixes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every prefix in address order (masked), with its entry.
    pub fn routes(&self) -> impl Iterator<Item = (&[u8; N], u8, &RouteEntry)> {
        self.routes.iter().map(|((a, l), e)| (a, *l, e))
    }

    /// The entry of exactly this prefix.
    pub fn get(&self, addr: [u8; N], len: u8) -> Option<&RouteEntry> {
        self.routes.get(&(mask(addr, len), len))
    }

    fn check_len(len: u8) -> Result<(), PrefixLenError> {
        let max = (N * 8) as u8;
        if usize::from(len) > N * 8 {
            return Err(PrefixLenError { len, max });
        }
        Ok(())
    }

    /// Adds or replaces `addr/len` (host bits are ignored). Returns the previous entry.
    pub fn insert(
        &mut self,
        addr: [u8; N],
        len: u8,
        entry: RouteEntry,
    ) -> Result<Option<RouteEntry>, PrefixLenError> {
        Self::check_len(len)?;
        let addr = mask(addr, len);
        let old = self.routes.insert((addr, len), entry);
        let root = Arc::make_mut(&mut self.lpm.root);
        insert_at(root, &addr, len, 0, &Slot::Leaf { plen: len, entry });
        Ok(old)
    }

    /// Removes `addr/len`; addresses it covered fall back to the next covering prefix.
    pub fn remove(&mut self, addr: [u8; N], len: u8) -> Option<RouteEntry> {
        Self::check_len(len).ok()?;
        let addr = mask(addr, len);
        let old = self.routes.remove(&(addr, len))?;
        let fallback = (0..len)
            .rev()
            .find_map(|l| {
                self.routes
                    .get(&(mask(addr, l), l))
                    .map(|e| Slot::Leaf { plen: l, entry: *e })
            })
            .unwrap_or(Slot::Empty);
        let root = Arc::make_mut(&mut self.lpm.root);
        remove_at(root, &addr, len, 0, &fallback);
        Some(old)
    }
}

/// Slots of the byte at `depth` that `addr/len` covers, when the prefix ends at this level.
fn span(addr_byte: u8, len: u8, depth: usize) -> Option<std::ops::Range<usize>> {
    let before = depth * 8;
    let len = usize::from(len);
    if len > before + 8 {
        return None;
    }
    let free = before + 8 - len; // low bits of this byte the prefix leaves free
    let first = usize::from(addr_byte) & !((1usize << free) - 1);
    Some(first..first + (1 << free))
}

fn plen_of(s: &Slot) -> Option<u8> {
    match s {
        Slot::Leaf { plen, .. } => Some(*plen),
        _ => None,
    }
}

fn insert_at<const N: usize>(node: &mut Node, addr: &[u8; N], len: u8, depth: usize, leaf: &Slot) {
    match span(addr[depth], len, depth) {
        Some(range) => {
            for slot in &mut node[range] {
                push_down(slot, len, leaf);
            }
        }
        None => {
            let slot = &mut node[usize::from(addr[depth])];
            if !matches!(slot, Slot::Node(_)) {
                *slot = Slot::Node(new_node(slot));
            }
            if let Slot::Node(child) = slot {
                insert_at(Arc::make_mut(child), addr, len, depth + 1, leaf);
            }
        }
    }
}

/// Writes `leaf` (of length `len`) into `slot` and everything below it that is covered by
/// a shorter or equal prefix.
fn push_down(slot: &mut Slot, len: u8, leaf: &Slot) {
    match slot {
        Slot::Node(child) => {
            for s in Arc::make_mut(child).iter_mut() {
                push_down(s, len, leaf);
            }
        }
        _ => {
            if plen_of(slot).is_none_or(|p| p <= len) {
                *slot = leaf.clone();
            }
        }
    }
}

fn remove_at<const N: usize>(
    node: &mut Node,
    addr: &[u8; N],
    len: u8,
    depth: usize,
    fallback: &Slot,
) {
    match span(addr[depth], len, depth) {
        Some(range) => {
            for slot in &mut node[range] {
                replace_down(slot, len, fallback);
                collapse(slot);
            }
        }
        None => {
            let slot = &mut node[usize::from(addr[depth])];
            if let Slot::Node(child) = slot {
                remove_at(Arc::make_mut(child), addr, len, depth + 1, fallback);
                collapse(slot);
            }
        }
    }
}

/// Replaces the leaves of exactly length `len` at and below `slot` with `fallback`.
fn replace_down(slot: &mut Slot, len: u8, fallback: &Slot) {
    match slot {
        Slot::Node(child) => {
            let c = Arc::make_mut(child);
            for s in c.iter_mut() {
                replace_down(s, len, fallback);
                collapse(s);
            }
        }
        _ => {
            if plen_of(slot) == Some(len) {
                *slot = fallback.clone();
            }
        }
    }
}

/// Turns a node whose 256 slots are one identical leaf (or all empty) back into that slot.
fn collapse(slot: &mut Slot) {
    if let Slot::Node(child) = slot {
        let first = &child[0];
        if !matches!(first, Slot::Node(_)) && child.iter().all(|s| s == first) {
            *slot = first.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(nh: u32) -> RouteEntry {
        RouteEntry {
            nh: NhId(nh),
            label: 0,
            attr: 0,
        }
    }

    #[test]
    fn longest_prefix_wins_and_delete_restores_cover() {
        let mut w = LpmWriter::<4>::default();
        w.insert([0, 0, 0, 0], 0, e(1)).unwrap();
        w.insert([10, 0, 0, 0], 8, e(2)).unwrap();
        w.insert([10, 1, 0, 0], 16, e(3)).unwrap();
        w.insert([10, 1, 2, 0], 20, e(4)).unwrap();
        w.insert([10, 1, 2, 3], 32, e(5)).unwrap();
        let l = w.snapshot();
        assert_eq!(l.lookup(&[10, 1, 2, 3]).unwrap().nh, NhId(5));
        assert_eq!(l.lookup(&[10, 1, 2, 4]).unwrap().nh, NhId(4));
        assert_eq!(l.lookup(&[10, 1, 15, 4]).unwrap().nh, NhId(4));
        assert_eq!(l.lookup(&[10, 1, 16, 4]).unwrap().nh, NhId(3));
        assert_eq!(l.lookup(&[10, 2, 0, 1]).unwrap().nh, NhId(2));
        assert_eq!(l.lookup(&[11, 0, 0, 1]).unwrap().nh, NhId(1));

        assert_eq!(w.remove([10, 1, 2, 0], 20), Some(e(4)));
        let l2 = w.snapshot();
        assert_eq!(l2.lookup(&[10, 1, 2, 4]).unwrap().nh, NhId(3));
        assert_eq!(l2.lookup(&[10, 1, 2, 3]).unwrap().nh, NhId(5));
        // The earlier snapshot is unchanged.
        assert_eq!(l.lookup(&[10, 1, 2, 4]).unwrap().nh, NhId(4));

        w.remove([0, 0, 0, 0], 0);
        assert_eq!(w.snapshot().lookup(&[11, 0, 0, 1]), None);
        assert_eq!(w.remove([0, 0, 0, 0], 0), None, "already gone");
    }

    #[test]
    fn host_bits_are_ignored_and_bad_lengths_refused() {
        let mut w = LpmWriter::<4>::default();
        w.insert([192, 168, 1, 77], 24, e(7)).unwrap();
        assert_eq!(w.get([192, 168, 1, 0], 24), Some(&e(7)));
        assert_eq!(w.insert([1, 2, 3, 4], 33, e(1)).unwrap_err().max, 32);
    }

    #[test]
    fn nodes_collapse_after_deletes() {
        let mut w = LpmWriter::<4>::default();
        w.insert([10, 0, 0, 0], 8, e(1)).unwrap();
        let base = w.lpm().node_count();
        w.insert([10, 9, 9, 9], 32, e(2)).unwrap();
        assert_eq!(w.lpm().node_count(), base + 3);
        w.remove([10, 9, 9, 9], 32);
        assert_eq!(w.lpm().node_count(), base);
    }

    #[test]
    fn ipv6_routes() {
        let mut w = LpmWriter::<16>::default();
        let a: std::net::Ipv6Addr = "fd00:1::".parse().unwrap();
        let h: std::net::Ipv6Addr = "fd00:1::5".parse().unwrap();
        w.insert(a.octets(), 64, e(1)).unwrap();
        w.insert(h.octets(), 128, e(2)).unwrap();
        let l = w.snapshot();
        assert_eq!(l.lookup(&h.octets()).unwrap().nh, NhId(2));
        let other: std::net::Ipv6Addr = "fd00:1::6".parse().unwrap();
        assert_eq!(l.lookup(&other.octets()).unwrap().nh, NhId(1));
        let far: std::net::Ipv6Addr = "fd00:2::6".parse().unwrap();
        assert_eq!(l.lookup(&far.octets()), None);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashMap;

        fn naive(routes: &HashMap<([u8; 4], u8), u32>, a: [u8; 4]) -> Option<u32> {
            routes
                .iter()
                .filter(|((p, l), _)| mask(a, *l) == *p)
                .max_by_key(|((_, l), _)| *l)
                .map(|(_, nh)| *nh)
        }

        // Addresses from a small space so prefixes overlap a lot.
        fn addr() -> impl Strategy<Value = [u8; 4]> {
            (0u8..2, 0u8..3, 0u8..4, any::<u8>()).prop_map(|(a, b, c, d)| [10 + a, b, c * 64, d])
        }

        proptest! {
            #[test]
            fn matches_naive_longest_prefix(
                ops in proptest::collection::vec((any::<bool>(), addr(), 0u8..=32, 1u32..50), 1..80),
                probes in proptest::collection::vec(addr(), 1..64),
            ) {
                let mut w = LpmWriter::<4>::default();
                let mut reference = HashMap::new();
                let mut snaps = Vec::new();
                for (add, a, l, nh) in ops {
                    let key = (mask(a, l), l);
                    if add {
                        w.insert(a, l, e(nh)).unwrap();
                        reference.insert(key, nh);
                    } else {
                        let got = w.remove(a, l).map(|r| r.nh.0);
                        prop_assert_eq!(got, reference.remove(&key));
                    }
                    snaps.push((w.snapshot(), reference.clone()));
                }
                for (snap, reference) in &snaps {
                    for p in &probes {
                        prop_assert_eq!(snap.lookup(p).map(|r| r.nh.0), naive(reference, *p));
                    }
                }
                prop_assert_eq!(w.len(), reference.len());
            }
        }
    }
}
