//! The Ethernet header a packet leaves with: shared by forward (local delivery) and encap
//! (the inner frame of an L2 tunnel), so it lives below both.

use super::{DropReason, Meta};
use crate::packet::PacketBuf;
use crate::wire::{self, EtherType, MacAddr};

/// Makes the packet start with exactly one Ethernet header addressed `smac` -> `dmac`.
pub(super) fn l2_rewrite<B: PacketBuf>(
    p: &mut B,
    m: &mut Meta,
    dmac: MacAddr,
    smac: MacAddr,
) -> Result<(), DropReason> {
    let hl = wire::ethernet::HEADER_LEN;
    if m.l3 < hl {
        if p.prepend(hl - m.l3).is_none() {
            return Err(DropReason::NoHeadroom);
        }
    } else if m.l3 > hl && !p.adj(m.l3 - hl) {
        return Err(DropReason::PullFail);
    }
    m.l4 = m.l4 + hl - m.l3;
    m.l3 = hl;
    let ethertype = if m.v6 {
        EtherType::Ipv6
    } else {
        EtherType::Ipv4
    };
    wire::ethernet::Repr {
        src: smac,
        dst: dmac,
        ethertype,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(
        &mut p.data_mut()[..hl],
    ));
    Ok(())
}
