//! The packet pipeline: stages that take a burst in and give each packet a result.
//!
//! ```text
//! classify -> (decap) -> frag -> flow -> nat -> forward -> (encap)
//! ```
//! Each stage is a file with a `run` over the whole burst (VPP-style: one stage at a time
//! over the vector keeps its code and tables hot). Per-packet state travels in [`Meta`].
//! A packet leaves with a [`Disposition`]: sent on an interface, flooded, or dropped with
//! a reason that is counted in [`Counters`]. The pipeline owns no thread, socket or
//! clock: the runtime passes in the table snapshot, the packets and the time.

mod classify;
mod decap;

mod encap;
mod flow;
mod forward;
mod frag;
mod icmp_error;
mod key;
mod l2;
mod mss;
mod nat;
mod related;
mod split;

use std::collections::VecDeque;
use std::sync::Arc;

pub use vrouter_api::counters::Counters;
pub use vrouter_api::drops::{DropReason, DropStats, NUM_REASONS};

use crate::flow::frag::{FragTable, Piece};
use crate::flow::{AgingConfig, FlowAction, FlowIdx, FlowKey, FlowTable};
use crate::nat::SnatPools;
use crate::packet::PacketBuf;
use crate::tables::{NhId, Snapshot, VifId, VrfId};

/// Most packets per `process` call.
pub const MAX_BURST: usize = 64;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Send on this interface.
    Tx(VifId),
    /// Copy to every member of this L2 flood nexthop (the runtime copies).
    Flood(NhId),
    /// Dropped; counted under the reason.
    Drop(DropReason),
    /// A fragment that came before its first one: the pipeline keeps a copy and gives it
    /// back through [`Pipeline::next_released`] once the first one has come (the buffer
    /// itself may be freed).
    Hold,
}

/// A fragment's place in its datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FragInfo {
    /// IP identification.
    pub(crate) ident: u32,
    /// Offset and length of its data.
    pub(crate) piece: Piece,
}

/// Where a [`Held`] packet goes on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The flow lookup: a fragment that came before its first one.
    Flow,
    /// The nexthop: a fragment the vrouter cut from a packet too big for its path.
    Forward,
}

/// A packet to go on after its burst (see [`Pipeline::next_released`]): what it is, where
/// it came in, and how far the pipeline got with it.
#[derive(Debug)]
pub struct Held {
    vif: VifId,
    meta: Meta,
    bytes: Vec<u8>,
    from: Stage,
}

impl Held {
    /// The packet, as the pipeline had it: to be copied into a buffer for
    /// [`Pipeline::resume`].
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Per-packet state carried between stages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// VRF of the flow.
    pub(crate) vrf: VrfId,
    /// Offset of the (inner) IP header; 0 when the packet starts at it.
    pub(crate) l3: usize,
    /// Offset of the L4 header.
    pub(crate) l4: usize,
    /// IPv6 (else IPv4).
    pub(crate) v6: bool,
    /// Flow key.
    pub(crate) key: FlowKey,
    /// `key.hash()`.
    pub(crate) hash: u64,
    /// TCP flags (0 for other protocols).
    pub(crate) tcp_flags: u8,
    /// The destination nexthop given by an MPLS label (no route lookup then).
    pub(crate) label_nh: Option<NhId>,
    /// The fabric address of the node that sent it through a tunnel (decapsulated
    /// packets).
    pub(crate) tunnel_src: Option<std::net::Ipv4Addr>,
    /// Look the flow up but set none up; on a miss send to the host (fabric traffic).
    pub(crate) lookup_only: bool,
    /// The flow's decision.
    pub(crate) action: Option<FlowAction>,
    /// The flow entry.
    pub(crate) flow: Option<FlowIdx>,
    /// Final disposition, once known.
    pub(crate) done: Option<Disposition>,
    /// The MTU a packet too big for its path was measured against (for the ICMP error).
    pub(crate) path_mtu: u16,
    /// A fragment: where it sits in its datagram.
    pub(crate) frag: Option<FragInfo>,
    /// An ICMP error, keyed by the packet it quotes (see `related.rs`).
    pub(crate) icmp_error: bool,
}

impl Meta {
    fn new(vrf: VrfId) -> Meta {
        Meta {
            vrf,
            l3: 0,
            l4: 0,
            v6: false,
            key: FlowKey {
                vrf,
                proto: 0,
                src: std::net::Ipv4Addr::UNSPECIFIED.into(),
                dst: std::net::Ipv4Addr::UNSPECIFIED.into(),
                sport: 0,
                dport: 0,
            },
            hash: 0,
            tcp_flags: 0,
            label_nh: None,
            tunnel_src: None,
            lookup_only: false,
            action: None,
            flow: None,
            done: None,
            path_mtu: 0,
            frag: None,
            icmp_error: false,
        }
    }

    /// Still being processed.
    pub(crate) fn pending(&self) -> bool {
        self.done.is_none()
    }

    /// A fragment other than the first: no transport header.
    pub(crate) fn later_fragment(&self) -> bool {
        self.frag.is_some_and(|f| f.piece.offset != 0)
    }
}

/// What the stages share for one burst.
pub(crate) struct Ctx<'a> {
    pub(crate) snap: &'a Snapshot,
    pub(crate) flows: &'a FlowTable,
    pub(crate) snat: &'a SnatPools,
    pub(crate) aging: &'a AgingConfig,
    pub(crate) stats: &'a mut Counters,
    pub(crate) now: u64,
    /// Packets to go on after the burst (see [`Pipeline::next_released`]).
    pub(crate) released: &'a mut VecDeque<Held>,
}

/// One lcore's pipeline: the shared flow, fragment and SNAT tables, its own counters.
#[derive(Debug)]
pub struct Pipeline {
    flows: Arc<FlowTable>,
    snat: Arc<SnatPools>,
    frags: Arc<FragTable<Held>>,
    aging: AgingConfig,
    metas: Vec<Meta>,
    /// Packets to go on after the burst: held fragments whose first one came, and the
    /// fragments a packet too big for its path was cut into.
    released: VecDeque<Held>,
    /// This lcore's counters.
    pub stats: Counters,
}

impl Pipeline {
    /// A pipeline over a shared flow table and SNAT pools, with a fragment table of its
    /// own (see [`Pipeline::with_fragments`] to share one).
    pub fn new(flows: Arc<FlowTable>, snat: Arc<SnatPools>, aging: AgingConfig) -> Pipeline {
        Pipeline {
            flows,
            snat,
            frags: Arc::new(FragTable::new()),
            aging,
            metas: Vec::with_capacity(MAX_BURST),
            released: VecDeque::new(),
            stats: Counters::default(),
        }
    }

    /// Shares `frags` (one table for every lcore: a datagram's fragments may come in on
    /// different queues).
    pub fn with_fragments(mut self, frags: Arc<FragTable<Held>>) -> Pipeline {
        self.frags = frags;
        self
    }

    /// The next packet to go on after the burst (a held fragment whose first one came, or
    /// a fragment cut from a packet too big for its path): copy its [`Held::bytes`] into a
    /// buffer and give both to [`Pipeline::resume`].
    pub fn next_released(&mut self) -> Option<Held> {
        self.released.pop_front()
    }

    /// Takes a released packet on from where it stopped (flow, NAT and nexthop, or the
    /// nexthop only), in `buf` (which holds its bytes). It was counted as received when it
    /// came.
    pub fn resume<B: PacketBuf>(
        &mut self,
        snap: &Snapshot,
        held: Held,
        buf: &mut B,
        now: u64,
    ) -> Disposition {
        let mut metas = std::mem::take(&mut self.metas);
        metas.clear();
        metas.push(held.meta);
        let mut ctx = Ctx {
            snap,
            flows: &self.flows,
            snat: &self.snat,
            aging: &self.aging,
            stats: &mut self.stats,
            now,
            released: &mut self.released,
        };
        match snap.vifs.get(held.vif.0) {
            None => metas[0].done = Some(Disposition::Drop(DropReason::InvalidVif)),
            Some(vif) => {
                let vif = Arc::clone(vif);
                let pkts = std::slice::from_mut(buf);
                if held.from == Stage::Flow {
                    ctx.stats.frag_released += 1;
                    flow::run(&mut ctx, &vif, pkts, &mut metas);
                    nat::run(&mut ctx, pkts, &mut metas);
                }
                forward::run(&mut ctx, &vif, pkts, &mut metas);
            }
        }
        let d = metas[0]
            .done
            .unwrap_or(Disposition::Drop(DropReason::NowhereToGo));
        self.count(d);
        self.metas = metas;
        d
    }

    /// Forgets fragment state older than [`crate::flow::frag::HOLD_MS`]; the fragments
    /// it held are dropped and counted (`fragment_timeout`).
    pub fn expire_fragments(&mut self, now: u64) {
        let stats = &mut self.stats;
        self.frags
            .lock()
            .expire(now, &mut |_, g| stats.drops.count(frag::gone_reason(g)));
    }

    fn count(&mut self, d: Disposition) {
        match d {
            Disposition::Drop(r) => self.stats.drops.count(r),
            Disposition::Hold => {}
            Disposition::Tx(_) | Disposition::Flood(_) => self.stats.forwarded += 1,
        }
    }

    /// The flow table.
    pub fn flows(&self) -> &Arc<FlowTable> {
        &self.flows
    }

    /// Processes up to [`MAX_BURST`] packets received on `in_vif`; writes one disposition
    /// per packet into `out` (packets beyond `MAX_BURST` or `out.len()` are dropped
    /// as `nowhere_to_go`, never left without one).
    pub fn process<B: PacketBuf>(
        &mut self,
        snap: &Snapshot,
        in_vif: VifId,
        pkts: &mut [B],
        out: &mut [Disposition],
        now: u64,
    ) {
        let n = pkts.len().min(out.len()).min(MAX_BURST);
        self.stats.rx += pkts.len() as u64;
        for d in out.iter_mut().take(pkts.len()).skip(n) {
            *d = Disposition::Drop(DropReason::NowhereToGo);
        }
        // Counted whether or not `out` had room for their disposition: every packet in
        // is counted out.
        for _ in n..pkts.len() {
            self.stats.drops.count(DropReason::NowhereToGo);
        }
        let pkts = &mut pkts[..n];
        let mut metas = std::mem::take(&mut self.metas);
        metas.clear();
        let mut ctx = Ctx {
            snap,
            flows: &self.flows,
            snat: &self.snat,
            aging: &self.aging,
            stats: &mut self.stats,
            now,
            released: &mut self.released,
        };
        match snap.vifs.get(in_vif.0) {
            None => metas.extend((0..n).map(|_| Meta {
                done: Some(Disposition::Drop(DropReason::InvalidVif)),
                ..Meta::new(VrfId(0))
            })),
            Some(vif) => {
                let vif = Arc::clone(vif);
                classify::run(&mut ctx, &vif, pkts, &mut metas);
                frag::run(&mut ctx, &vif, pkts, &mut metas, &self.frags);
                flow::run(&mut ctx, &vif, pkts, &mut metas);
                nat::run(&mut ctx, pkts, &mut metas);
                forward::run(&mut ctx, &vif, pkts, &mut metas);
            }
        }
        for (m, d) in metas.iter().zip(out.iter_mut()) {
            *d = m.done.unwrap_or(Disposition::Drop(DropReason::NowhereToGo));
            self.count(*d);
        }
        self.metas = metas;
    }
}
