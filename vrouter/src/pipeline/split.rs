//! IPv4 packets too big for their path with DF clear are fragmented, as a router does
//! (RFC 791): the packet itself becomes the first fragment and goes on at once; the others
//! are copies that go on after the burst (see [`super::Pipeline::next_released`]), each
//! through the same nexthop. The inner packet is cut, never the tunnel: the receiving node
//! forwards the pieces as fragments of one datagram, and the destination reassembles.
//!
//! Packets with IP options are not cut (their fragments would need the options sorted by
//! the copy flag; no VM or pod sends them through a tunnel), nor into more than
//! [`MAX_PIECES`] pieces: both are dropped as too big.

use super::{Ctx, DropReason, FragInfo, Held, Meta, Stage};
use crate::flow::frag::Piece;
use crate::packet::PacketBuf;
use crate::tables::VifId;
use crate::wire;

/// The most pieces one packet is cut into.
pub(crate) const MAX_PIECES: usize = 64;

/// Cuts `p` (whose IPv4 header is at `m.l3`) into pieces whose IP packets fit `mtu`: `p`
/// keeps the first; the others are queued to go on from the nexthop. `Err` (nothing
/// changed) when it may not or cannot be cut.
pub(super) fn run<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    in_vif: VifId,
    p: &mut B,
    m: &Meta,
    mtu: u16,
) -> Result<(), DropReason> {
    if m.v6 {
        return Err(DropReason::TooBig);
    }
    let d = p.data();
    let ip = wire::ipv4::Packet::new_checked(d.get(m.l3..).ok_or(DropReason::RewriteFail)?)
        .map_err(|_| DropReason::RewriteFail)?;
    let hl = ip.header_len();
    if ip.dont_frag() || hl != wire::ipv4::MIN_HEADER_LEN {
        return Err(DropReason::TooBig);
    }
    // Data per piece: a multiple of 8 bytes (the offset's unit).
    let chunk = usize::from(mtu).saturating_sub(hl) & !7;
    let payload = ip.payload();
    if chunk == 0 || payload.len() <= chunk || payload.len().div_ceil(chunk) > MAX_PIECES {
        return Err(DropReason::TooBig);
    }
    let (base, more, ident) = (ip.frag_offset(), ip.more_frags(), ip.ident());
    if usize::from(base) + payload.len() > usize::from(u16::MAX) {
        // A fragment reaching past the largest datagram: not one to cut.
        return Err(DropReason::TooBig);
    }
    let mut made = 0;
    for (k, data) in payload.chunks(chunk).enumerate().skip(1) {
        let offset = usize::from(base) + k * chunk;
        let last = (k + 1) * chunk >= payload.len();
        let mut bytes = Vec::with_capacity(m.l3 + hl + data.len());
        bytes.extend_from_slice(&d[..m.l3 + hl]);
        bytes.extend_from_slice(data);
        set_piece(&mut bytes[m.l3..], data.len(), !last || more, offset)?;
        let mut meta = *m;
        meta.frag = Some(FragInfo {
            ident: u32::from(ident),
            piece: Piece {
                offset: offset as u32,
                len: data.len() as u32,
                more: !last || more,
            },
        });
        ctx.released.push_back(Held {
            vif: in_vif,
            meta,
            bytes,
            from: Stage::Forward,
        });
        made += 1;
    }
    let cut = p.len() - (m.l3 + hl + chunk);
    if !p.trim(cut) {
        return Err(DropReason::RewriteFail);
    }
    set_piece(&mut p.data_mut()[m.l3..], chunk, true, usize::from(base))?;
    ctx.stats.fragmented += 1;
    ctx.stats.fragments_made += made + 1;
    Ok(())
}

/// Makes the IPv4 header at the start of `ip` that of a piece of `len` data bytes at byte
/// `offset`.
fn set_piece(ip: &mut [u8], len: usize, more: bool, offset: usize) -> Result<(), DropReason> {
    let mut h = wire::ipv4::Packet::new_unchecked(ip);
    let total = u16::try_from(wire::ipv4::MIN_HEADER_LEN + len).map_err(|_| DropReason::TooBig)?;
    let offset = u16::try_from(offset).map_err(|_| DropReason::TooBig)?;
    h.set_total_len(total);
    h.set_frag(false, more, offset);
    h.fill_checksum();
    Ok(())
}
