//! The flow table: preallocated, lock-free for readers, written by every lcore.
//!
//! Layout, after `rte_hash`: buckets of 8 signature words (one half cache line) and a
//! parallel array of 128-byte entries. A key may live in either of two buckets (the second
//! derived from the signature, as in cuckoo hashing) and goes to the less loaded one, so
//! the table fills to high load
//! before a bucket pair is full. A lookup compares signatures first and reads an entry only
//! on a signature match.
//!
//! Every entry field is an atomic word, so concurrent lcores never race in the language
//! sense. Consistency comes from a per-entry control word (a version and a state: free,
//! busy, active), used as a seqlock: writers move it to busy with a CAS, write, and publish
//! it active with a new version (Release); readers read it (Acquire), read the fields,
//! and accept them only if the control word did not change. A version change also detects
//! an entry freed and reused between a reader's two checks.
//!
//! When both buckets are full, a flow that is not established (TCP not yet established or
//! already closing, or another protocol idle for a while) is evicted with its pair;
//! established flows are never evicted, and the insert is refused and counted instead.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use super::{FlowAction, FlowKey, FlowVerdict, Hairpin, NatRewrite, hash_words};
use crate::nat::SnatPools;
use crate::policy::addr_bits;
use crate::tables::NhId;
use crate::wire::tcp::flags as tcpf;
use std::sync::Arc;
use vrouter_api::drops::DropReason;

/// Entries per bucket.
const WAYS: usize = 8;

const FREE: u64 = 0;
const BUSY: u64 = 1;
const ACTIVE: u64 = 2;

// Word indices inside an entry (after the control word).
const KEY: usize = 0; // 5 words
const ACT: usize = 5; // verdict:8 | reason:8 | flags:8 | policy_gen:8 | nh:32
const LBL: usize = 6; // label:32 | route_gen:32
const NAT_HI: usize = 7;
const NAT_LO: usize = 8;
const MISC: usize = 9; // nat_port:16 | role:8 | _:8 | rflow:32
const PKTS: usize = 10;
const BYTES: usize = 11;
const LAST: usize = 12;
// TCP flags seen in this direction:8 | policy_gen high 24 bits:24 | from_node:32
const TCP: usize = 13;
// owner vif + 1 (0: none):16 | setup time:48
const CREATED: usize = 14;
const WORDS: usize = 15;

const F_MIRROR: u64 = 1;
const F_NAT: u64 = 2;
const F_NAT_SRC: u64 = 4;
const F_NAT_POOL: u64 = 8;
const F_HAIRPIN_SRC: u64 = 16;
const F_HAIRPIN_DST: u64 = 32;
const F_PINNED: u64 = 64;
const ROLE_FWD: u64 = 1;

/// Setup times fit in 48 bits (milliseconds: 8,900 years); the owner takes the rest.
const TIME_MASK: u64 = (1 << 48) - 1;
pub use crate::tables::vif::MAX_OWNERS;

/// One flow entry: a control word and 15 data words, 128 bytes, cache-line aligned.
#[repr(C, align(64))]
#[derive(Debug)]
struct Entry {
    ctl: AtomicU64,
    w: [AtomicU64; WORDS],
}

const _: () = assert!(std::mem::size_of::<Entry>() == 128);

impl Entry {
    fn new() -> Entry {
        Entry {
            ctl: AtomicU64::new(FREE),
            w: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn next(ctl: u64, state: u64) -> u64 {
    (((ctl >> 2) + 1) << 2) | state
}

/// Index of a flow entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowIdx(pub u32);

/// A lookup hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowHit {
    /// Entry index.
    pub idx: FlowIdx,
    /// The decision.
    pub action: FlowAction,
    /// The paired entry.
    pub rflow: FlowIdx,
    /// The entry of the pair that was set up for the first packet (not the reply's).
    pub forward: bool,
}

/// Why a pair could not be inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// Both buckets of a key were full of established flows.
    #[error("flow table full")]
    Full,
    /// The interface the flow belongs to holds its quota of flows already.
    #[error("the interface's flow quota is used up")]
    Quota,
}

/// The interface a flow pair is counted against, and how many pairs it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The interface (a local VM's vif; ids from [`MAX_OWNERS`] on are not counted).
    pub vif: u32,
    /// Pairs it may hold at once.
    pub max: u32,
}

/// Idle timeouts, in the caller's time unit (the table never reads a clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgingConfig {
    /// Established TCP.
    pub tcp_established: u64,
    /// TCP being set up (SYN seen, not answered).
    pub tcp_opening: u64,
    /// TCP after FIN in both directions or RST.
    pub tcp_closed: u64,
    /// UDP, ICMP and others.
    pub other: u64,
    /// Non-established flows idle at least this long may be evicted when a bucket is full.
    pub evict_idle: u64,
}

impl AgingConfig {
    /// Timeouts in milliseconds like TF's defaults (180 s idle).
    pub fn millis() -> AgingConfig {
        AgingConfig {
            tcp_established: 180_000,
            tcp_opening: 30_000,
            tcp_closed: 10_000,
            other: 180_000,
            evict_idle: 1_000,
        }
    }
}

/// Counters of table events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTableStats {
    /// Active entries (two per flow pair).
    pub active: u64,
    /// Pairs inserted.
    pub inserted: u64,
    /// Pairs refused because the table was full.
    pub refused: u64,
    /// Pairs evicted to make room.
    pub evicted: u64,
    /// Pairs removed by aging.
    pub aged: u64,
    /// Pairs refused because their interface held its quota.
    pub over_quota: u64,
}

/// TCP connection state derived from the flags both directions have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// Not TCP.
    None,
    /// SYN seen, handshake not complete.
    Opening,
    /// Both sides sent SYN and data is acknowledged.
    Established,
    /// FIN both ways, or RST.
    Closed,
}

fn tcp_state(proto: u8, a: u64, b: u64) -> TcpState {
    if proto != 6 {
        return TcpState::None;
    }
    let (a, b) = (a as u8, b as u8);
    if (a | b) & tcpf::RST != 0 || (a & tcpf::FIN != 0 && b & tcpf::FIN != 0) {
        TcpState::Closed
    } else if a & tcpf::SYN != 0 && b & tcpf::SYN != 0 && (a | b) & tcpf::ACK != 0 {
        TcpState::Established
    } else {
        TcpState::Opening
    }
}

/// A flow as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    /// Entry index.
    pub idx: FlowIdx,
    /// Key.
    pub key: FlowKey,
    /// Decision.
    pub action: FlowAction,
    /// Paired entry.
    pub rflow: FlowIdx,
    /// Forward (first-packet) direction.
    pub forward: bool,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Last packet time.
    pub last_used: u64,
    /// Setup time.
    pub created: u64,
    /// TCP state of the pair.
    pub tcp: TcpState,
}

/// The flow table.
#[derive(Debug)]
pub struct FlowTable {
    sigs: Box<[AtomicU32]>,
    entries: Box<[Entry]>,
    bucket_mask: u32,
    stats: [AtomicU64; 6],
    snat: Option<Arc<SnatPools>>,
    /// Pairs held per interface (by [`Quota::vif`]).
    owned: Box<[AtomicU32]>,
}

impl FlowTable {
    /// A table of at least `capacity` entries (rounded up to a power of two, min 16).
    pub fn new(capacity: u32) -> FlowTable {
        let n = capacity.max(16).next_power_of_two() as usize;
        // Lookups land anywhere in these arrays: huge pages keep the TLB from thrashing.
        // The advice is given before the first write, while no page is backed yet.
        let mut sigs = Vec::with_capacity(n);
        dpdk_bindings::advise_hugepages(sigs.spare_capacity_mut());
        sigs.extend((0..n).map(|_| AtomicU32::new(0)));
        let mut entries = Vec::with_capacity(n);
        dpdk_bindings::advise_hugepages(entries.spare_capacity_mut());
        entries.extend((0..n).map(|_| Entry::new()));
        let (sigs, entries) = (sigs.into_boxed_slice(), entries.into_boxed_slice());
        FlowTable {
            sigs,
            entries,
            bucket_mask: (n / WAYS - 1) as u32,
            stats: std::array::from_fn(|_| AtomicU64::new(0)),
            snat: None,
            owned: (0..MAX_OWNERS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// A table whose deleted flows give their pooled SNAT ports back to `pools`.
    pub fn with_snat(capacity: u32, pools: Arc<SnatPools>) -> FlowTable {
        FlowTable {
            snat: Some(pools),
            ..FlowTable::new(capacity)
        }
    }

    /// Number of entries.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of memory the table uses (entries + signatures).
    pub fn memory_bytes(&self) -> usize {
        self.entries.len() * (std::mem::size_of::<Entry>() + std::mem::size_of::<AtomicU32>())
    }

    /// Event counters.
    pub fn stats(&self) -> FlowTableStats {
        let g = |i: usize| self.stats[i].load(Ordering::Relaxed);
        FlowTableStats {
            active: g(0),
            inserted: g(1),
            refused: g(2),
            evicted: g(3),
            aged: g(4),
            over_quota: g(5),
        }
    }

    /// Pairs that interface `vif` holds.
    pub fn owned_by(&self, vif: u32) -> u32 {
        self.owned
            .get(vif as usize)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// The quota of an interface with no configured one: a quarter of the pairs, so
    /// that one VM cannot fill the table for the others.
    pub fn default_quota(&self) -> u32 {
        (self.entries.len() / 8).max(1) as u32
    }

    /// Takes one pair of `q`'s quota; false (nothing taken) when it is used up.
    fn take_quota(&self, q: &Quota) -> bool {
        let Some(n) = self.owned.get(q.vif as usize) else {
            return true;
        };
        // Taken first, then checked: two lcores racing for the last pair cannot both win.
        if n.fetch_add(1, Ordering::Relaxed) >= q.max {
            n.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give_quota(&self, owner: u64) {
        if let Some(n) = owner
            .checked_sub(1)
            .and_then(|o| self.owned.get(o as usize))
        {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn bump(&self, i: usize, by: u64) {
        self.stats[i].fetch_add(by, Ordering::Relaxed);
    }

    #[inline]
    fn buckets(&self, hash: u64) -> (u32, [usize; 2]) {
        let sig = ((hash >> 32) as u32) | 1;
        let b1 = (hash as u32) & self.bucket_mask;
        let mut b2 = (b1 ^ sig.wrapping_mul(0x5bd1_e995)) & self.bucket_mask;
        if b2 == b1 {
            b2 = (b1 ^ 1) & self.bucket_mask;
        }
        (sig, [b1 as usize * WAYS, b2 as usize * WAYS])
    }

    /// Prefetches the signature line of the primary bucket of `hash` (first pass of a
    /// bulk lookup over a burst). Inserts fill the primary bucket first, so the
    /// secondary is fetched only when the primary has no match (`prefetch_entry`).
    #[inline]
    pub fn prefetch_buckets(&self, hash: u64) {
        let (_, starts) = self.buckets(hash);
        dpdk_bindings::prefetch(&self.sigs[starts[0]]);
    }

    /// Prefetches the entry whose signature matches `hash` in the primary bucket (second
    /// pass, once its signature line is in cache): both of the entry's cache lines, since
    /// a hit reads the key and action from the first and counts into the second. Without
    /// a match there, prefetches the secondary bucket's signature line instead.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        let (sig, starts) = self.buckets(hash);
        for i in starts[0]..starts[0] + WAYS {
            if self.sigs[i].load(Ordering::Relaxed) == sig {
                let e = &self.entries[i];
                dpdk_bindings::prefetch(&e.ctl);
                dpdk_bindings::prefetch(&e.w[PKTS]);
                return;
            }
        }
        dpdk_bindings::prefetch(&self.sigs[starts[1]]);
    }

    /// Looks a key up; `hash` is `key.hash()` (computed once by the caller).
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u64) -> Option<FlowHit> {
        let words = key.pack();
        let (sig, starts) = self.buckets(hash);
        for start in starts {
            for i in start..start + WAYS {
                if self.sigs[i].load(Ordering::Acquire) == sig {
                    if let Some(hit) = self.read_if(i, &words) {
                        return Some(hit);
                    }
                }
            }
        }
        None
    }

    /// Reads entry `i` if it is active and holds `words`; consistent by the seqlock check.
    fn read_if(&self, i: usize, words: &[u64; 5]) -> Option<FlowHit> {
        let e = &self.entries[i];
        'retry: for _ in 0..4 {
            // Acquire pairs with the writer's Release publish: the fields below are at
            // least as new as this control word.
            let c1 = e.ctl.load(Ordering::Acquire);
            if c1 & 3 != ACTIVE {
                return None;
            }
            for (k, want) in words.iter().enumerate() {
                if e.w[KEY + k].load(Ordering::Relaxed) != *want {
                    // Different key, unless the entry changed under us.
                    fence(Ordering::Acquire);
                    if e.ctl.load(Ordering::Relaxed) == c1 {
                        return None;
                    }
                    continue 'retry;
                }
            }
            let act = e.w[ACT].load(Ordering::Relaxed);
            let lbl = e.w[LBL].load(Ordering::Relaxed);
            let nat_hi = e.w[NAT_HI].load(Ordering::Relaxed);
            let nat_lo = e.w[NAT_LO].load(Ordering::Relaxed);
            let misc = e.w[MISC].load(Ordering::Relaxed);
            let tcp = e.w[TCP].load(Ordering::Relaxed);
            // Keeps the field loads above from moving after the re-check below.
            fence(Ordering::Acquire);
            if e.ctl.load(Ordering::Relaxed) != c1 {
                continue;
            }
            return Some(FlowHit {
                idx: FlowIdx(i as u32),
                action: decode_action(act, lbl, nat_hi, nat_lo, misc, tcp),
                rflow: FlowIdx(misc as u32),
                forward: (misc >> 40) & 0xff == ROLE_FWD,
            });
        }
        None
    }

    /// Claims a free entry in one of the key's buckets (state busy), trying the less
    /// loaded bucket first: with "power of two choices" the buckets stay balanced, where
    /// filling the first bucket first overflows some of them at half load.
    fn claim(&self, hash: u64) -> Option<(usize, u64)> {
        /// Free slots below which the primary bucket stops being preferred.
        const SPARE: usize = 3;
        let (_, starts) = self.buckets(hash);
        let free = |s: usize| {
            (s..s + WAYS)
                .filter(|&i| self.sigs[i].load(Ordering::Relaxed) == 0)
                .count()
        };
        // The primary bucket while it has room to spare (lookups then touch one signature
        // line), else the less loaded of the two (which keeps refusals away until both
        // are nearly full).
        let order = if free(starts[0]) < SPARE && free(starts[1]) > free(starts[0]) {
            [starts[1], starts[0]]
        } else {
            starts
        };
        for start in order {
            for i in start..start + WAYS {
                let e = &self.entries[i];
                let c = e.ctl.load(Ordering::Relaxed);
                if c & 3 == FREE {
                    let busy = next(c, BUSY);
                    // Acquire: we must see the last owner's writes before overwriting.
                    if e.ctl
                        .compare_exchange(c, busy, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Some((i, busy));
                    }
                }
            }
        }
        None
    }

    fn release(&self, i: usize, busy: u64) {
        self.entries[i]
            .ctl
            .store(next(busy, FREE), Ordering::Release);
    }

    fn write(
        &self,
        i: usize,
        busy: u64,
        key: &FlowKey,
        a: &FlowAction,
        link: (usize, bool),
        (now, owner): (u64, u64),
    ) {
        let e = &self.entries[i];
        for (k, w) in key.pack().into_iter().enumerate() {
            e.w[KEY + k].store(w, Ordering::Relaxed);
        }
        let (rflow, fwd) = link;
        let (act, lbl, hi, lo, misc) = encode_action(a, rflow as u32, fwd);
        e.w[ACT].store(act, Ordering::Relaxed);
        e.w[LBL].store(lbl, Ordering::Relaxed);
        e.w[NAT_HI].store(hi, Ordering::Relaxed);
        e.w[NAT_LO].store(lo, Ordering::Relaxed);
        e.w[MISC].store(misc, Ordering::Relaxed);
        for w in [PKTS, BYTES] {
            e.w[w].store(0, Ordering::Relaxed);
        }
        e.w[TCP].store(tcp_word(a), Ordering::Relaxed);
        e.w[LAST].store(now, Ordering::Relaxed);
        e.w[CREATED].store((owner << 48) | (now & TIME_MASK), Ordering::Relaxed);
        // Release: publishes every field above with the new version.
        e.ctl.store(next(busy, ACTIVE), Ordering::Release);
    }

    /// Makes entry `i` findable by lookups (its signature), after it and its pair are
    /// active: a lookup can then never find one half of a pair still being written.
    fn expose(&self, i: usize, key: &FlowKey) {
        let (sig, _) = self.buckets(hash_words(&key.pack()));
        self.sigs[i].store(sig, Ordering::Release);
    }

    /// Inserts a forward/reverse pair; both are visible when this returns.
    pub fn insert_pair(
        &self,
        fwd: (&FlowKey, &FlowAction),
        rev: (&FlowKey, &FlowAction),
        now: u64,
        aging: &AgingConfig,
    ) -> Result<(FlowIdx, FlowIdx), InsertError> {
        self.insert_pair_within(fwd, rev, now, aging, None)
    }

    /// Inserts a pair counted against `quota`'s interface (refused, and counted, when it
    /// holds its quota already); it is given back when the pair is deleted.
    pub fn insert_pair_within(
        &self,
        fwd: (&FlowKey, &FlowAction),
        rev: (&FlowKey, &FlowAction),
        now: u64,
        aging: &AgingConfig,
        quota: Option<Quota>,
    ) -> Result<(FlowIdx, FlowIdx), InsertError> {
        let owner = match quota.filter(|q| (q.vif as usize) < MAX_OWNERS) {
            Some(q) if !self.take_quota(&q) => {
                self.bump(5, 1);
                return Err(InsertError::Quota);
            }
            Some(q) => u64::from(q.vif) + 1,
            None => 0,
        };
        let (hf, hr) = (fwd.0.hash(), rev.0.hash());
        let Some((fi, fbusy)) = self.claim_or_evict(hf, now, aging) else {
            self.give_quota(owner);
            self.bump(2, 1);
            return Err(InsertError::Full);
        };
        let Some((ri, rbusy)) = self.claim_or_evict(hr, now, aging) else {
            self.release(fi, fbusy);
            self.give_quota(owner);
            self.bump(2, 1);
            return Err(InsertError::Full);
        };
        // The forward half carries the owner: the pair is given back once, with it.
        self.write(fi, fbusy, fwd.0, fwd.1, (ri, true), (now, owner));
        self.write(ri, rbusy, rev.0, rev.1, (fi, false), (now, 0));
        self.expose(fi, fwd.0);
        self.expose(ri, rev.0);
        self.bump(0, 2);
        self.bump(1, 1);
        Ok((FlowIdx(fi as u32), FlowIdx(ri as u32)))
    }

    fn claim_or_evict(&self, hash: u64, now: u64, aging: &AgingConfig) -> Option<(usize, u64)> {
        if let Some(c) = self.claim(hash) {
            return Some(c);
        }
        // Both buckets full: evict a pair that is not established, TCP that never
        // completed its handshake (or is over) before idle datagram flows, the stalest
        // first.
        let (_, starts) = self.buckets(hash);
        let victim = starts
            .iter()
            .flat_map(|s| *s..*s + WAYS)
            .filter_map(|i| self.evictable(i, now, aging).map(|rank| (rank, i)))
            .min()?;
        if self.delete_pair(FlowIdx(victim.1 as u32)) {
            self.bump(3, 1);
        }
        self.claim(hash)
    }

    /// `Some((class, last_used))` if entry `i` may be evicted, lower classes first.
    fn evictable(&self, i: usize, now: u64, aging: &AgingConfig) -> Option<(u8, u64)> {
        let e = &self.entries[i];
        if e.ctl.load(Ordering::Acquire) & 3 != ACTIVE {
            return None;
        }
        let proto = (e.w[KEY].load(Ordering::Relaxed) >> 32) as u8;
        let r =
            &self.entries[e.w[MISC].load(Ordering::Relaxed) as u32 as usize % self.entries.len()];
        let last = e.w[LAST]
            .load(Ordering::Relaxed)
            .max(r.w[LAST].load(Ordering::Relaxed));
        let state = tcp_state(
            proto,
            e.w[TCP].load(Ordering::Relaxed),
            r.w[TCP].load(Ordering::Relaxed),
        );
        match state {
            TcpState::Established => None,
            TcpState::Opening | TcpState::Closed => Some((0, last)),
            TcpState::None => (now.saturating_sub(last) >= aging.evict_idle).then_some((1, last)),
        }
    }

    /// Counts a packet of `len` bytes on `idx`, with its TCP flags (0 for non-TCP).
    #[inline]
    pub fn touch(&self, idx: FlowIdx, len: u64, now: u64, tcp_flags: u8) {
        let e = &self.entries[idx.0 as usize];
        // Plain load + store, not fetch_add: a flow direction arrives on one RSS queue, so
        // one lcore counts it and the counts are exact; the locked read-modify-writes cost
        // about 10% of a flow hit. Were two lcores ever to count the same direction at the
        // same instant, a count could be lost, nothing worse.
        let p = e.w[PKTS].load(Ordering::Relaxed);
        e.w[PKTS].store(p + 1, Ordering::Relaxed);
        let b = e.w[BYTES].load(Ordering::Relaxed);
        e.w[BYTES].store(b + len, Ordering::Relaxed);
        e.w[LAST].store(now, Ordering::Relaxed);
        if tcp_flags != 0 {
            e.w[TCP].fetch_or(u64::from(tcp_flags), Ordering::Relaxed);
        }
    }

    /// Replaces the decision of an active entry (e.g. after its route changed). False if
    /// the entry is no longer what the caller saw (another thread changed or freed it).
    pub fn update_action(&self, hit: &FlowHit, a: &FlowAction) -> bool {
        let i = hit.idx.0 as usize;
        let e = &self.entries[i];
        let c = e.ctl.load(Ordering::Acquire);
        if c & 3 != ACTIVE || e.w[MISC].load(Ordering::Relaxed) as u32 != hit.rflow.0 {
            return false;
        }
        let busy = next(c, BUSY);
        if e.ctl
            .compare_exchange(c, busy, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let fwd = (e.w[MISC].load(Ordering::Relaxed) >> 40) & 0xff == ROLE_FWD;
        let (act, lbl, hi, lo, misc) = encode_action(a, hit.rflow.0, fwd);
        e.w[ACT].store(act, Ordering::Relaxed);
        e.w[LBL].store(lbl, Ordering::Relaxed);
        e.w[NAT_HI].store(hi, Ordering::Relaxed);
        e.w[NAT_LO].store(lo, Ordering::Relaxed);
        e.w[MISC].store(misc, Ordering::Relaxed);
        // The generation's high bits and the node share a word with the TCP flags, which
        // `touch` ORs in without taking the entry: keep the flags, replace the rest.
        let _ = e.w[TCP].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
            Some((t & 0xff) | tcp_word(a))
        });
        e.ctl.store(next(busy, ACTIVE), Ordering::Release);
        true
    }

    /// The entry at `idx`, if active (e.g. the other half of a hit's pair).
    pub fn get(&self, idx: FlowIdx) -> Option<FlowInfo> {
        self.entries.get(idx.0 as usize)?;
        self.info(idx.0 as usize)
    }

    /// The entry at `idx` as a lookup would return it, if it is active and paired with
    /// `rflow`.
    pub fn hit_at(&self, idx: FlowIdx, rflow: FlowIdx) -> Option<FlowHit> {
        let info = self.get(idx)?;
        (info.rflow == rflow).then_some(FlowHit {
            idx,
            action: info.action,
            rflow,
            forward: info.forward,
        })
    }

    /// Deletes one active entry; false if it was not active (or is being changed).
    fn delete_one(&self, i: usize) -> bool {
        let e = &self.entries[i];
        for _ in 0..64 {
            let c = e.ctl.load(Ordering::Acquire);
            match c & 3 {
                ACTIVE => {
                    let busy = next(c, BUSY);
                    if e.ctl
                        .compare_exchange(c, busy, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        // Only the thread that won the CAS reads the action to release a
                        // pooled port, so a port is returned exactly once.
                        let act = e.w[ACT].load(Ordering::Relaxed);
                        let owner = e.w[CREATED].load(Ordering::Relaxed) >> 48;
                        if (act >> 40) & F_NAT_POOL != 0 {
                            if let Some(pools) = &self.snat {
                                let proto = (e.w[KEY].load(Ordering::Relaxed) >> 32) as u8;
                                let port = (e.w[MISC].load(Ordering::Relaxed) >> 48) as u16;
                                pools.free_for(proto, port, owner.checked_sub(1));
                            }
                        }
                        self.give_quota(owner);
                        self.sigs[i].store(0, Ordering::Release);
                        e.ctl.store(next(busy, FREE), Ordering::Release);
                        self.stats[0].fetch_sub(1, Ordering::Relaxed);
                        return true;
                    }
                }
                BUSY => std::hint::spin_loop(),
                _ => return false,
            }
        }
        false
    }

    /// Deletes an entry and its pair. False if `idx` was not active.
    pub fn delete_pair(&self, idx: FlowIdx) -> bool {
        let i = idx.0 as usize;
        let Some(e) = self.entries.get(i) else {
            return false;
        };
        let r = e.w[MISC].load(Ordering::Relaxed) as u32 as usize;
        if !self.delete_one(i) {
            return false;
        }
        if r < self.entries.len() && r != i {
            self.delete_one(r);
        }
        true
    }

    /// Removes idle pairs; returns how many. Run by the service thread with its clock.
    pub fn age(&self, now: u64, cfg: &AgingConfig) -> usize {
        let mut n = 0;
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            if e.ctl.load(Ordering::Acquire) & 3 != ACTIVE {
                continue;
            }
            let misc = e.w[MISC].load(Ordering::Relaxed);
            let r = &self.entries[misc as u32 as usize % self.entries.len()];
            let paired = r.ctl.load(Ordering::Acquire) & 3 == ACTIVE
                && r.w[MISC].load(Ordering::Relaxed) as u32 as usize == i;
            if !paired {
                // An orphan (its pair was deleted while it was being written): it can
                // never be aged through its pair, so it goes once it is idle.
                let idle = now.saturating_sub(e.w[LAST].load(Ordering::Relaxed));
                if idle >= cfg.tcp_closed.min(cfg.other) && self.delete_one(i) {
                    n += 1;
                }
                continue;
            }
            if (misc >> 40) & 0xff != ROLE_FWD {
                continue;
            }
            let proto = (e.w[KEY].load(Ordering::Relaxed) >> 32) as u8;
            let last = e.w[LAST]
                .load(Ordering::Relaxed)
                .max(r.w[LAST].load(Ordering::Relaxed));
            let timeout = match tcp_state(
                proto,
                e.w[TCP].load(Ordering::Relaxed),
                r.w[TCP].load(Ordering::Relaxed),
            ) {
                TcpState::Established => cfg.tcp_established,
                TcpState::Opening => cfg.tcp_opening,
                TcpState::Closed => cfg.tcp_closed,
                TcpState::None => cfg.other,
            };
            if now.saturating_sub(last) >= timeout && self.delete_pair(FlowIdx(i as u32)) {
                n += 1;
            }
        }
        self.bump(4, n as u64);
        n
    }

    /// Up to `max` active entries from index `cursor`; returns them and the next cursor
    /// (`None` at the end).
    pub fn dump(&self, cursor: u32, max: usize) -> (Vec<FlowInfo>, Option<u32>) {
        let mut out = Vec::new();
        let mut i = cursor as usize;
        while i < self.entries.len() && out.len() < max {
            if let Some(info) = self.info(i) {
                out.push(info);
            }
            i += 1;
        }
        (out, (i < self.entries.len()).then_some(i as u32))
    }

    fn info(&self, i: usize) -> Option<FlowInfo> {
        let e = &self.entries[i];
        let c = e.ctl.load(Ordering::Acquire);
        if c & 3 != ACTIVE {
            return None;
        }
        let words: [u64; 5] = std::array::from_fn(|k| e.w[KEY + k].load(Ordering::Relaxed));
        let misc = e.w[MISC].load(Ordering::Relaxed);
        let action = decode_action(
            e.w[ACT].load(Ordering::Relaxed),
            e.w[LBL].load(Ordering::Relaxed),
            e.w[NAT_HI].load(Ordering::Relaxed),
            e.w[NAT_LO].load(Ordering::Relaxed),
            misc,
            e.w[TCP].load(Ordering::Relaxed),
        );
        let r = &self.entries[misc as u32 as usize % self.entries.len()];
        let key = FlowKey::unpack(&words);
        let info = FlowInfo {
            idx: FlowIdx(i as u32),
            key,
            action,
            rflow: FlowIdx(misc as u32),
            forward: (misc >> 40) & 0xff == ROLE_FWD,
            packets: e.w[PKTS].load(Ordering::Relaxed),
            bytes: e.w[BYTES].load(Ordering::Relaxed),
            last_used: e.w[LAST].load(Ordering::Relaxed),
            created: e.w[CREATED].load(Ordering::Relaxed) & TIME_MASK,
            tcp: tcp_state(
                key.proto,
                e.w[TCP].load(Ordering::Relaxed),
                r.w[TCP].load(Ordering::Relaxed),
            ),
        };
        fence(Ordering::Acquire);
        (e.ctl.load(Ordering::Relaxed) == c).then_some(info)
    }
}

/// The TCP word of a new entry: no flags yet, the policy generation's high bits, the node.
fn tcp_word(a: &FlowAction) -> u64 {
    (u64::from(a.from_node) << 32) | (u64::from(a.policy_gen >> 8) << 8)
}

fn encode_action(a: &FlowAction, rflow: u32, fwd: bool) -> (u64, u64, u64, u64, u64) {
    let (verdict, reason) = match a.verdict {
        FlowVerdict::Forward => (0u64, 0u64),
        FlowVerdict::Drop(r) => (1, r as u64),
    };
    let mut flags = 0;
    if a.mirror {
        flags |= F_MIRROR;
    }
    if a.pinned {
        flags |= F_PINNED;
    }
    flags |= match a.hairpin {
        Hairpin::No => 0,
        Hairpin::Source => F_HAIRPIN_SRC,
        Hairpin::Destination => F_HAIRPIN_DST,
    };
    let (mut hi, mut lo, mut port) = (0, 0, 0);
    if let Some(n) = a.nat {
        flags |= F_NAT;
        if n.source {
            flags |= F_NAT_SRC;
        }
        if n.pooled {
            flags |= F_NAT_POOL;
        }
        let b = addr_bits(n.addr);
        hi = (b >> 64) as u64;
        lo = b as u64;
        port = u64::from(n.port);
    }
    let act = (verdict << 56)
        | (reason << 48)
        | (flags << 40)
        | (u64::from(a.policy_gen & 0xff) << 32)
        | u64::from(a.nh.0);
    let lbl = (u64::from(a.label) << 32) | u64::from(a.route_gen);
    let misc = (port << 48) | ((u64::from(fwd) * ROLE_FWD) << 40) | u64::from(rflow);
    (act, lbl, hi, lo, misc)
}

fn decode_action(act: u64, lbl: u64, hi: u64, lo: u64, misc: u64, tcp: u64) -> FlowAction {
    let flags = (act >> 40) & 0xff;
    let verdict = if act >> 56 == 0 {
        FlowVerdict::Forward
    } else {
        FlowVerdict::Drop(DropReason::from_u8((act >> 48) as u8).unwrap_or(DropReason::FlowDrop))
    };
    let nat = (flags & F_NAT != 0).then(|| {
        let b = (u128::from(hi) << 64) | u128::from(lo);
        let v6 = std::net::Ipv6Addr::from(b);
        NatRewrite {
            source: flags & F_NAT_SRC != 0,
            addr: v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            port: (misc >> 48) as u16,
            pooled: flags & F_NAT_POOL != 0,
        }
    });
    let hairpin = if flags & F_HAIRPIN_SRC != 0 {
        Hairpin::Source
    } else if flags & F_HAIRPIN_DST != 0 {
        Hairpin::Destination
    } else {
        Hairpin::No
    };
    FlowAction {
        verdict,
        nh: NhId(act as u32),
        label: (lbl >> 32) as u32,
        route_gen: lbl as u32,
        policy_gen: ((act >> 32) & 0xff) as u32 | (((tcp >> 8) & 0xff_ffff) as u32) << 8,
        nat,
        hairpin,
        mirror: flags & F_MIRROR != 0,
        from_node: (tcp >> 32) as u32,
        pinned: flags & F_PINNED != 0,
    }
}
