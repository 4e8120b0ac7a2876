//! Fragments: which flow a fragment without ports belongs to.
//!
//! Only the first fragment of a datagram carries the transport header, so only it can be
//! looked up in the flow table as it is. As TF's vrouter does (`vr_fragment`), the first
//! fragment leaves its ports here under (VRF, protocol, addresses, IP identification), and
//! every later fragment of the datagram takes them from here and follows the same flow:
//! the same decision, the same NAT, the same nexthop. Nothing is reassembled.
//!
//! A later fragment that comes before its first one is held (a copy, bounded in number
//! and bytes, for [`HOLD_MS`]) and goes on once the first one has come. Each datagram's
//! fragments are checked for overlap (RFC 1858, RFC 5722): an overlapping fragment spoils
//! its datagram, whose every fragment is then dropped.
//!
//! One table serves every lcore (a datagram's fragments may arrive on different queues);
//! it is behind a mutex, taken once per burst that holds fragments, so packets that are
//! not fragments never touch it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// How long a datagram is tracked after its first fragment seen, and how long a held
/// fragment waits for its first one (ms).
pub const HOLD_MS: u64 = 1_000;
/// Datagrams tracked at once.
pub const MAX_DATAGRAMS: usize = 4_096;
/// Fragments held at once (all datagrams).
pub const MAX_HELD: usize = 256;
/// Bytes held at once (all datagrams).
pub const MAX_HELD_BYTES: usize = 1 << 20;
/// Fragments of one datagram held at once (a 64 KiB datagram in 1,280-byte pieces).
pub const MAX_HELD_PER_DATAGRAM: usize = 52;
/// Separate pieces a datagram may be in before it is complete: enough for any datagram
/// sent in order or nearly so.
const MAX_PIECES: usize = 64;

/// A datagram: the flow key without ports, plus the IP identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// VRF.
    pub vrf: u32,
    /// Transport protocol.
    pub proto: u8,
    /// Source (IPv4 mapped).
    pub src: u128,
    /// Destination (IPv4 mapped).
    pub dst: u128,
    /// IP identification (16 bits in IPv4, 32 in IPv6).
    pub ident: u32,
}

/// Where a fragment's data sits in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Offset of its data in the fragmentable part, bytes.
    pub offset: u32,
    /// Bytes of data.
    pub len: u32,
    /// More fragments follow.
    pub more: bool,
}

impl Piece {
    fn end(&self) -> u32 {
        self.offset + self.len
    }
}

/// What to do with a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with these ports (source, destination).
    Ports(u16, u16),
    /// Held until the first fragment comes.
    Held,
    /// Unknown datagram and nothing held for it (the caller's choice).
    Unknown,
    /// Overlaps another fragment of its datagram.
    Overlap,
    /// No room.
    Full,
}

/// Why a held fragment left the table without going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Its first fragment did not come in time.
    Timeout,
    /// Its datagram was spoiled by an overlapping fragment.
    Overlap,
}

struct Datagram<T> {
    /// When it was first seen (ms).
    born: u64,
    /// The first fragment's ports, once it came.
    ports: Option<(u16, u16)>,
    /// Data seen so far, as sorted, merged [start, end) ranges.
    seen: Vec<(u32, u32)>,
    /// The datagram's length, once its last fragment came.
    end: Option<u32>,
    /// An overlapping fragment came: drop every fragment.
    spoiled: bool,
    /// Fragments waiting for the first one.
    held: Vec<(u64, T)>,
}

impl<T> Datagram<T> {
    fn new(now: u64) -> Datagram<T> {
        Datagram {
            born: now,
            ports: None,
            seen: Vec::new(),
            end: None,
            spoiled: false,
            held: Vec::new(),
        }
    }

    /// Records a piece's data; false if it overlaps what came before or contradicts the
    /// datagram's end.
    fn record(&mut self, p: Piece) -> bool {
        let (start, end) = (p.offset, p.end());
        if self.seen.iter().any(|&(s, e)| start < e && s < end) {
            return false;
        }
        if let Some(total) = self.end {
            if end > total || !p.more && end != total {
                return false;
            }
        }
        if !p.more {
            if self.seen.last().is_some_and(|&(_, e)| e > end) {
                return false;
            }
            self.end = Some(end);
        }
        let mut at = self.seen.partition_point(|&(s, _)| s < start);
        self.seen.insert(at, (start, end));
        // Merge with touching neighbours (no overlaps: checked above).
        if at + 1 < self.seen.len() && self.seen[at].1 == self.seen[at + 1].0 {
            self.seen[at].1 = self.seen.remove(at + 1).1;
        }
        if at > 0 && self.seen[at - 1].1 == self.seen[at].0 {
            self.seen[at - 1].1 = self.seen.remove(at).1;
            at -= 1;
        }
        let _ = at;
        self.seen.len() <= MAX_PIECES
    }

    /// Every byte came.
    fn complete(&self) -> bool {
        self.end.is_some_and(|e| self.seen == [(0, e)])
    }
}

struct Inner<T> {
    map: HashMap<FragKey, Datagram<T>>,
    held: usize,
    held_bytes: usize,
}

/// The fragment table; `T` is what it holds of a fragment that came before its first one
/// (whatever the caller needs to send it on).
pub struct FragTable<T> {
    inner: Mutex<Inner<T>>,
}

impl<T> Default for FragTable<T> {
    fn default() -> Self {
        FragTable {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                held: 0,
                held_bytes: 0,
            }),
        }
    }
}

impl<T> std::fmt::Debug for FragTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("FragTable")
            .field("datagrams", &g.inner.map.len())
            .field("held", &g.inner.held)
            .finish()
    }
}

/// The table, locked: one burst's fragments go through one guard.
pub struct Locked<'a, T> {
    inner: MutexGuard<'a, Inner<T>>,
}

impl<T> std::fmt::Debug for Locked<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locked")
            .field("datagrams", &self.inner.map.len())
            .field("held", &self.inner.held)
            .finish()
    }
}

impl<T> FragTable<T> {
    /// An empty table.
    pub fn new() -> FragTable<T> {
        FragTable::default()
    }

    /// Locks the table (a poisoned lock is taken over: the table stays consistent
    /// between calls).
    pub fn lock(&self) -> Locked<'_, T> {
        Locked {
            inner: self.inner.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

impl<T> Locked<'_, T> {
    /// Datagrams tracked.
    pub fn datagrams(&self) -> usize {
        self.inner.map.len()
    }

    /// Fragments held.
    pub fn held(&self) -> usize {
        self.inner.held
    }

    /// Makes room for one more datagram, dropping expired ones first; false when full.
    fn room(&mut self, now: u64, gone: &mut dyn FnMut(T, Gone)) -> bool {
        if self.inner.map.len() < MAX_DATAGRAMS {
            return true;
        }
        self.expire(now, gone);
        self.inner.map.len() < MAX_DATAGRAMS
    }

    /// The first fragment of `key`, with its ports: records it, and gives back (through
    /// `ready`) the fragments held for it, which may now go on with those ports.
    pub fn first(
        &mut self,
        now: u64,
        key: FragKey,
        piece: Piece,
        ports: (u16, u16),
        ready: &mut dyn FnMut(T),
        gone: &mut dyn FnMut(T, Gone),
    ) -> Verdict {
        if !self.inner.map.contains_key(&key) && !self.room(now, gone) {
            return Verdict::Full;
        }
        let inner = &mut *self.inner;
        let d = inner.map.entry(key).or_insert_with(|| Datagram::new(now));
        let v = if d.spoiled || d.ports.is_some() || !d.record(piece) {
            d.spoiled = true;
            Verdict::Overlap
        } else {
            d.ports = Some(ports);
            Verdict::Ports(ports.0, ports.1)
        };
        for (bytes, t) in d.held.drain(..) {
            inner.held -= 1;
            inner.held_bytes -= bytes as usize;
            match v {
                Verdict::Ports(..) => ready(t),
                _ => gone(t, Gone::Overlap),
            }
        }
        if d.complete() {
            inner.map.remove(&key);
        }
        v
    }

    /// A later fragment of `key`: the first fragment's ports if it came; else `hold` is
    /// asked for what to keep (its size in bytes and the value), or `None` when the caller
    /// would rather not hold it ([`Verdict::Unknown`]).
    pub fn later(
        &mut self,
        now: u64,
        key: FragKey,
        piece: Piece,
        hold: &mut dyn FnMut() -> Option<(usize, T)>,
        gone: &mut dyn FnMut(T, Gone),
    ) -> Verdict {
        match self.inner.map.get(&key) {
            None => {}
            Some(d) if d.ports.is_some() || d.spoiled => {
                let d = self.inner.map.get_mut(&key).expect("just found");
                if d.spoiled || !d.record(piece) {
                    d.spoiled = true;
                    return Verdict::Overlap;
                }
                let (s, p) = d.ports.expect("checked");
                if d.complete() {
                    self.inner.map.remove(&key);
                }
                return Verdict::Ports(s, p);
            }
            Some(_) => {}
        }
        // No first fragment yet.
        let Some((bytes, t)) = hold() else {
            return Verdict::Unknown;
        };
        if self.inner.held >= MAX_HELD || self.inner.held_bytes + bytes > MAX_HELD_BYTES {
            return Verdict::Full;
        }
        if !self.inner.map.contains_key(&key) && !self.room(now, gone) {
            return Verdict::Full;
        }
        let inner = &mut *self.inner;
        let d = inner.map.entry(key).or_insert_with(|| Datagram::new(now));
        if d.held.len() >= MAX_HELD_PER_DATAGRAM {
            return Verdict::Full;
        }
        if !d.record(piece) {
            d.spoiled = true;
            for (b, t) in d.held.drain(..) {
                inner.held -= 1;
                inner.held_bytes -= b as usize;
                gone(t, Gone::Overlap);
            }
            return Verdict::Overlap;
        }
        d.held.push((bytes as u64, t));
        inner.held += 1;
        inner.held_bytes += bytes;
        Verdict::Held
    }

    /// Forgets datagrams older than [`HOLD_MS`]; what they held goes to `gone`.
    pub fn expire(&mut self, now: u64, gone: &mut dyn FnMut(T, Gone)) {
        let inner = &mut *self.inner;
        let (held, held_bytes) = (&mut inner.held, &mut inner.held_bytes);
        inner.map.retain(|_, d| {
            if now.saturating_sub(d.born) < HOLD_MS {
                return true;
            }
            for (b, t) in d.held.drain(..) {
                *held -= 1;
                *held_bytes -= b as usize;
                gone(t, Gone::Timeout);
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type T = u32;

    fn key(ident: u32) -> FragKey {
        FragKey {
            vrf: 1,
            proto: 17,
            src: 1,
            dst: 2,
            ident,
        }
    }

    fn piece(offset: u32, len: u32, more: bool) -> Piece {
        Piece { offset, len, more }
    }

    fn hold(n: T) -> impl FnMut() -> Option<(usize, T)> {
        move || Some((100, n))
    }

    fn no_gone() -> impl FnMut(T, Gone) {
        |_, g| panic!("nothing should go: {g:?}")
    }

    #[test]
    fn later_fragments_take_the_first_ones_ports_and_the_entry_goes_when_complete() {
        let t = FragTable::new();
        let mut l = t.lock();
        let mut ready = |_: T| panic!("nothing held");
        let v = l.first(
            0,
            key(7),
            piece(0, 1480, true),
            (5, 53),
            &mut ready,
            &mut no_gone(),
        );
        assert_eq!(v, Verdict::Ports(5, 53));
        let v = l.later(
            1,
            key(7),
            piece(1480, 1480, true),
            &mut || None,
            &mut no_gone(),
        );
        assert_eq!(v, Verdict::Ports(5, 53));
        assert_eq!(l.datagrams(), 1);
        let v = l.later(
            1,
            key(7),
            piece(2960, 40, false),
            &mut || None,
            &mut no_gone(),
        );
        assert_eq!(v, Verdict::Ports(5, 53));
        assert_eq!(l.datagrams(), 0, "a complete datagram is forgotten");
        // Another datagram of the same flow is another identification.
        let v = l.later(
            2,
            key(8),
            piece(1480, 8, false),
            &mut || None,
            &mut no_gone(),
        );
        assert_eq!(v, Verdict::Unknown);
    }

    #[test]
    fn fragments_before_their_first_are_held_then_released_in_order() {
        let t = FragTable::new();
        let mut l = t.lock();
        for (i, off) in [(1u32, 2960u32), (2, 1480)] {
            let v = l.later(
                0,
                key(7),
                piece(off, 1480, i != 1),
                &mut hold(i),
                &mut no_gone(),
            );
            assert_eq!(v, Verdict::Held);
        }
        assert_eq!(l.held(), 2);
        let mut out = Vec::new();
        let v = l.first(
            5,
            key(7),
            piece(0, 1480, true),
            (1, 2),
            &mut |t: T| out.push(t),
            &mut no_gone(),
        );
        assert_eq!(v, Verdict::Ports(1, 2));
        assert_eq!(out, [1, 2]);
        assert_eq!((l.held(), l.datagrams()), (0, 0));
    }

    #[test]
    fn overlaps_spoil_the_datagram_and_what_it_held() {
        let t = FragTable::new();
        let mut l = t.lock();
        // A TCP fragment at offset 8 (RFC 1858's attack on the flags) held, then a first
        // fragment that covers it.
        assert_eq!(
            l.later(0, key(1), piece(8, 100, true), &mut hold(1), &mut no_gone()),
            Verdict::Held
        );
        let mut gone = Vec::new();
        let v = l.first(
            0,
            key(1),
            piece(0, 40, true),
            (1, 2),
            &mut |_| panic!("not released"),
            &mut |_, g| gone.push(g),
        );
        assert_eq!(v, Verdict::Overlap);
        assert_eq!(gone, [Gone::Overlap]);
        assert_eq!(l.held(), 0);
        // Everything after is dropped too.
        let v = l.later(
            0,
            key(1),
            piece(200, 8, false),
            &mut || None,
            &mut no_gone(),
        );
        assert_eq!(v, Verdict::Overlap);
        // A duplicate of a fragment is an overlap; so is a piece past the last one.
        l.first(
            0,
            key(2),
            piece(0, 16, true),
            (1, 2),
            &mut |_| {},
            &mut no_gone(),
        );
        assert_eq!(
            l.later(0, key(2), piece(0, 16, true), &mut || None, &mut no_gone()),
            Verdict::Overlap
        );
        l.first(
            0,
            key(3),
            piece(0, 16, true),
            (1, 2),
            &mut |_| {},
            &mut no_gone(),
        );
        l.later(0, key(3), piece(32, 8, false), &mut || None, &mut no_gone());
        assert_eq!(
            l.later(0, key(3), piece(40, 8, true), &mut || None, &mut no_gone()),
            Verdict::Overlap
        );
    }

    #[test]
    fn held_fragments_expire_and_the_holds_are_bounded() {
        let t = FragTable::new();
        let mut l = t.lock();
        for i in 0..MAX_HELD_PER_DATAGRAM as u32 {
            let v = l.later(
                0,
                key(1),
                piece(8 + 8 * i, 8, true),
                &mut hold(i),
                &mut no_gone(),
            );
            assert_eq!(v, Verdict::Held);
        }
        let v = l.later(
            0,
            key(1),
            piece(4000, 8, true),
            &mut hold(99),
            &mut no_gone(),
        );
        assert_eq!(v, Verdict::Full, "one datagram holds a bounded number");
        let mut gone = 0;
        l.expire(HOLD_MS - 1, &mut |_, _| gone += 1);
        assert_eq!(gone, 0);
        l.expire(HOLD_MS, &mut |_, g| {
            assert_eq!(g, Gone::Timeout);
            gone += 1
        });
        assert_eq!(gone, MAX_HELD_PER_DATAGRAM);
        assert_eq!((l.held(), l.datagrams()), (0, 0));
        // Held fragments are bounded across datagrams.
        for i in 0..MAX_HELD as u32 {
            assert_eq!(
                l.later(
                    0,
                    key(100 + i),
                    piece(8, 8, true),
                    &mut hold(i),
                    &mut no_gone()
                ),
                Verdict::Held
            );
        }
        assert_eq!(
            l.later(
                0,
                key(9999),
                piece(8, 8, true),
                &mut hold(0),
                &mut no_gone()
            ),
            Verdict::Full
        );
    }

    #[test]
    fn the_number_of_datagrams_is_bounded_and_expired_ones_make_room() {
        let t = FragTable::new();
        let mut l = t.lock();
        for i in 0..MAX_DATAGRAMS as u32 {
            let v = l.first(
                0,
                key(i),
                piece(0, 8, true),
                (1, 2),
                &mut |_| {},
                &mut no_gone(),
            );
            assert_eq!(v, Verdict::Ports(1, 2));
        }
        let v = l.first(
            1,
            key(1 << 20),
            piece(0, 8, true),
            (1, 2),
            &mut |_| {},
            &mut no_gone(),
        );
        assert_eq!(v, Verdict::Full);
        let v = l.first(
            HOLD_MS,
            key(1 << 20),
            piece(0, 8, true),
            (1, 2),
            &mut |_| {},
            &mut no_gone(),
        );
        assert_eq!(v, Verdict::Ports(1, 2));
        assert_eq!(l.datagrams(), 1);
    }
}
