//! Stage 1c: fragments (see [`crate::flow::frag`]). A first fragment leaves its ports for
//! its datagram and goes on like any packet; a later one takes them and so hits the same
//! flow. A later fragment whose first one has not come is held, unless it came from the
//! fabric to the node itself, where no flow but the host's is expected: it goes to the
//! host. Bursts without fragments never take the table's lock.

use super::{Ctx, Disposition, DropReason, Held, Meta, Stage};
use crate::flow::frag::{FragKey, FragTable, Gone, Verdict};
use crate::packet::PacketBuf;
use crate::policy::addr_bits;
use crate::tables::Vif;

/// The drop reason of a held fragment that could not go on.
pub(super) fn gone_reason(g: Gone) -> DropReason {
    match g {
        Gone::Timeout => DropReason::FragmentTimeout,
        Gone::Overlap => DropReason::FragmentOverlap,
    }
}

pub(super) fn run<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    vif: &Vif,
    pkts: &[B],
    metas: &mut [Meta],
    frags: &FragTable<Held>,
) {
    if !metas.iter().any(|m| m.pending() && m.frag.is_some()) {
        return;
    }
    let mut t = frags.lock();
    let host = ctx.snap.global.host_vif;
    let stats = &mut *ctx.stats;
    let released = &mut *ctx.released;
    for (p, m) in pkts.iter().zip(metas.iter_mut()) {
        let Some(f) = m.frag.filter(|_| m.pending()) else {
            continue;
        };
        let key = FragKey {
            vrf: m.vrf.0,
            proto: m.key.proto,
            src: addr_bits(m.key.src),
            dst: addr_bits(m.key.dst),
            ident: f.ident,
        };
        let mut gone = |_: Held, g: Gone| stats.drops.count(gone_reason(g));
        let v = if f.piece.offset == 0 {
            let ports = (m.key.sport, m.key.dport);
            t.first(
                ctx.now,
                key,
                f.piece,
                ports,
                &mut |mut h: Held| {
                    (h.meta.key.sport, h.meta.key.dport) = ports;
                    h.meta.hash = h.meta.key.hash();
                    released.push_back(h);
                },
                &mut gone,
            )
        } else {
            let lookup_only = m.lookup_only;
            let meta = *m;
            t.later(
                ctx.now,
                key,
                f.piece,
                &mut || {
                    (!lookup_only).then(|| {
                        let bytes = p.data().to_vec();
                        (
                            bytes.len(),
                            Held {
                                vif: vif.id,
                                meta,
                                bytes,
                                from: Stage::Flow,
                            },
                        )
                    })
                },
                &mut gone,
            )
        };
        match v {
            Verdict::Ports(s, d) => {
                (m.key.sport, m.key.dport) = (s, d);
                m.hash = m.key.hash();
                stats.fragments += 1;
            }
            Verdict::Held => {
                m.done = Some(Disposition::Hold);
                stats.frag_held += 1;
            }
            Verdict::Unknown => {
                m.done =
                    Some(host.map_or(Disposition::Drop(DropReason::InvalidVif), Disposition::Tx));
            }
            Verdict::Overlap => m.done = Some(Disposition::Drop(DropReason::FragmentOverlap)),
            Verdict::Full => m.done = Some(Disposition::Drop(DropReason::FragmentTableFull)),
        }
    }
}
