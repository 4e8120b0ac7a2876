//! The packet pipeline: stages that take a burst in and give each packet a result.
//!
//! ```text
//! classify -> (decap) -> flow -> nat -> forward -> (encap)
//! ```
//! Each stage is a file with a `run` over the whole burst (VPP-style: one stage at a time
//! over the vector keeps its code and tables hot). Per-packet state travels in [`Meta`].
//! A packet leaves with a [`Disposition`]: sent on an interface, flooded, or dropped with
//! a reason that is counted in [`LcoreStats`]. The pipeline owns no thread, socket or
//! clock: the runtime passes in the table snapshot, the packets and the time.

mod classify;
mod decap;
mod drop;
mod encap;
mod flow;
mod forward;
mod icmp_error;
mod mss;
mod nat;

use std::sync::Arc;

pub use drop::{DropReason, DropStats, NUM_REASONS};

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
}

/// Per-lcore counters (plain integers: each lcore owns its pipeline).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LcoreStats {
    /// Packets in.
    pub rx: u64,
    /// Packets given a `Tx` or `Flood` disposition.
    pub tx: u64,
    /// Drops by reason.
    pub drops: DropStats,
    /// Flow table hits.
    pub flow_hits: u64,
    /// Flow table misses.
    pub flow_misses: u64,
    /// Flow pairs set up by this lcore.
    pub flows_created: u64,
    /// Flows whose route was re-resolved after a route change.
    pub flows_reresolved: u64,
    /// Flows set up again because policy changed since they were decided.
    pub flows_reevaluated: u64,
    /// ARP requests answered.
    pub arp_replies: u64,
    /// Neighbour solicitations answered.
    pub nd_replies: u64,
    /// Tunnel packets decapsulated.
    pub decap: u64,
    /// Packets encapsulated.
    pub encap: u64,
    /// TCP SYNs whose MSS was lowered to fit the tunnel.
    pub mss_clamped: u64,
    /// ICMP errors sent (fragmentation needed).
    pub icmp_errors: u64,
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
        }
    }

    /// Still being processed.
    pub(crate) fn pending(&self) -> bool {
        self.done.is_none()
    }
}

/// What the stages share for one burst.
pub(crate) struct Ctx<'a> {
    pub(crate) snap: &'a Snapshot,
    pub(crate) flows: &'a FlowTable,
    pub(crate) snat: &'a SnatPools,
    pub(crate) aging: &'a AgingConfig,
    pub(crate) stats: &'a mut LcoreStats,
    pub(crate) now: u64,
}

/// One lcore's pipeline: the shared flow table and SNAT pools, its own counters.
#[derive(Debug)]
pub struct Pipeline {
    flows: Arc<FlowTable>,
    snat: Arc<SnatPools>,
    aging: AgingConfig,
    metas: Vec<Meta>,
    /// This lcore's counters.
    pub stats: LcoreStats,
}

impl Pipeline {
    /// A pipeline over a shared flow table and SNAT pools.
    pub fn new(flows: Arc<FlowTable>, snat: Arc<SnatPools>, aging: AgingConfig) -> Pipeline {
        Pipeline {
            flows,
            snat,
            aging,
            metas: Vec::with_capacity(MAX_BURST),
            stats: LcoreStats::default(),
        }
    }

    /// The flow table.
    pub fn flows(&self) -> &Arc<FlowTable> {
        &self.flows
    }

    /// Processes up to [`MAX_BURST`] packets received on `in_vif`; writes one disposition
    /// per packet into `out` (packets beyond `MAX_BURST` or `out.len()` are dropped as
    /// invalid, never left without one).
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
            *d = Disposition::Drop(DropReason::InvalidPacket);
            self.stats.drops.count(DropReason::InvalidPacket);
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
        };
        match snap.vifs.get(in_vif.0) {
            None => metas.extend((0..n).map(|_| Meta {
                done: Some(Disposition::Drop(DropReason::InvalidVif)),
                ..Meta::new(VrfId(0))
            })),
            Some(vif) => {
                let vif = Arc::clone(vif);
                classify::run(&mut ctx, &vif, pkts, &mut metas);
                flow::run(&mut ctx, &vif, pkts, &mut metas);
                nat::run(&mut ctx, pkts, &mut metas);
                forward::run(&mut ctx, &vif, pkts, &mut metas);
            }
        }
        for (m, d) in metas.iter().zip(out.iter_mut()) {
            *d = m
                .done
                .unwrap_or(Disposition::Drop(DropReason::InvalidPacket));
            match *d {
                Disposition::Drop(r) => self.stats.drops.count(r),
                _ => self.stats.tx += 1,
            }
        }
        self.metas = metas;
    }
}
