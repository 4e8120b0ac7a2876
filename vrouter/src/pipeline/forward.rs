//! Stage 4: the nexthop. Local delivery rewrites the Ethernet header; tunnels go to
//! encap with the encapsulation chosen from the global priority list and what the remote
//! node accepts; routed packets have their TTL (hop limit) decremented.

use super::l2::l2_rewrite;
use super::{Ctx, Disposition, DropReason, Meta, encap, split};
use crate::packet::PacketBuf;
use crate::tables::nexthop::choose_encap;
use crate::tables::{Nexthop, NhId, Vif, VifId, VifKind};
use crate::wire;

pub(super) fn run<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    in_vif: &Vif,
    pkts: &mut [B],
    metas: &mut [Meta],
) {
    for (p, m) in pkts.iter_mut().zip(metas.iter_mut()) {
        if !m.pending() {
            continue;
        }
        let Some(a) = m.action else {
            m.done = Some(Disposition::Drop(DropReason::FlowActionInvalid));
            continue;
        };
        let mut r = forward(ctx, p, m, a.nh, a.label, true);
        if r == Err(DropReason::TooBig)
            && m.path_mtu > 0
            && split::run(ctx, in_vif.id, p, m, m.path_mtu).is_ok()
        {
            // DF clear: cut to fit (the rest goes on after the burst), then sent as before.
            r = forward(ctx, p, m, a.nh, a.label, true);
        }
        m.done = Some(match r {
            Ok(d) => d,
            Err(DropReason::TooBig) => too_big(ctx, in_vif, p, m),
            Err(DropReason::TtlExpired) => ttl_expired(ctx, in_vif, p, m),
            Err(r) => Disposition::Drop(r),
        });
    }
}

fn forward<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    p: &mut B,
    m: &mut Meta,
    nh_id: NhId,
    label: u32,
    top: bool,
) -> Result<Disposition, DropReason> {
    let snap = ctx.snap;
    let nh = snap
        .nexthops
        .get(nh_id.0)
        .ok_or(DropReason::InvalidNexthop)?;
    match &**nh {
        Nexthop::Discard => Err(DropReason::Discard),
        Nexthop::Resolve { .. } => Err(DropReason::Unresolved),
        Nexthop::Receive { vif } => {
            // To the host stack: addressed to the host interface's MAC.
            let host = snap.vifs.get(vif.0).ok_or(DropReason::InvalidVif)?.mac;
            check_mtu(ctx, m, *vif, p.len() - m.l3)?;
            decrement_ttl(p, m)?;
            l2_rewrite(p, m, host, snap.global.vrouter_mac)?;
            Ok(Disposition::Tx(*vif))
        }
        Nexthop::L2Flood { .. } => Ok(Disposition::Flood(nh_id)),
        // Flows keep the member chosen at setup; a composite reached here (e.g. through an
        // MPLS label) picks one by the flow hash. Composites do not nest.
        Nexthop::Composite(e) if top => {
            let mem = e.select(m.hash as u32);
            forward(ctx, p, m, mem.nh, mem.label, false)
        }
        Nexthop::Composite(_) => Err(DropReason::InvalidNexthop),
        // A service is resolved to a backend (with its NAT) at flow setup; flows never
        // carry it.
        Nexthop::Service(_) | Nexthop::NodePorts(_) => Err(DropReason::InvalidNexthop),
        Nexthop::Encap { vif, dmac, smac }
        | Nexthop::Snat {
            vif, dmac, smac, ..
        } => {
            check_mtu(ctx, m, *vif, p.len() - m.l3)?;
            decrement_ttl(p, m)?;
            l2_rewrite(p, m, *dmac, *smac)?;
            Ok(Disposition::Tx(*vif))
        }
        Nexthop::Tunnel(t) => {
            let kind =
                choose_encap(&snap.global.encap_priority, t.encaps).ok_or(DropReason::NoEncap)?;
            // Checked before anything is rewritten, so an error can quote the packet.
            let room = encap::room(ctx, kind, t)?;
            if p.len() - m.l3 > room {
                m.path_mtu = u16::try_from(room).unwrap_or(u16::MAX);
                return Err(DropReason::TooBig);
            }
            decrement_ttl(p, m)?;
            encap::push(ctx, p, m, (kind, t), label, room)?;
            ctx.stats.encap += 1;
            Ok(Disposition::Tx(t.out_vif))
        }
    }
}

fn check_mtu(ctx: &Ctx<'_>, m: &mut Meta, vif: VifId, ip_len: usize) -> Result<(), DropReason> {
    let mtu = ctx.snap.vifs.get(vif.0).ok_or(DropReason::InvalidVif)?.mtu;
    if ip_len > usize::from(mtu) {
        m.path_mtu = mtu;
        return Err(DropReason::TooBig);
    }
    Ok(())
}

/// A packet too big for its path that may not be cut: a VM's IPv4 packet with DF set is
/// answered with "fragmentation needed" (from the node's address), its IPv6 packet with
/// "packet too big" (from the vrouter's link-local address), out of the interface it came
/// in on; anything else is dropped as too big.
fn too_big<B: PacketBuf>(ctx: &mut Ctx<'_>, in_vif: &Vif, p: &mut B, m: &Meta) -> Disposition {
    let node = ctx.snap.node_ip4();
    if m.v6 && in_vif.kind == VifKind::Virtual && m.path_mtu > 0 {
        return match super::icmp_error::packet_too_big(ctx, p, m, m.path_mtu) {
            Ok(()) => Disposition::Tx(in_vif.id),
            Err(r) => Disposition::Drop(r),
        };
    }
    match node {
        Some(src) if in_vif.kind == VifKind::Virtual && m.path_mtu > 0 => {
            let smac = ctx.snap.global.vrouter_mac;
            match super::icmp_error::frag_needed(ctx, p, m, (src, smac), m.path_mtu) {
                Ok(()) => Disposition::Tx(in_vif.id),
                Err(r) => Disposition::Drop(r),
            }
        }
        _ => Disposition::Drop(DropReason::TooBig),
    }
}

/// A VM's packet whose TTL (hop limit) ran out here is answered with "time exceeded"
/// out of the interface it came in on (IPv4 from the node's address, IPv6 from the
/// vrouter's link-local one); anything else is dropped.
fn ttl_expired<B: PacketBuf>(ctx: &mut Ctx<'_>, in_vif: &Vif, p: &mut B, m: &Meta) -> Disposition {
    let node = ctx.snap.node_ip4();
    let smac = ctx.snap.global.vrouter_mac;
    match node {
        _ if in_vif.kind != VifKind::Virtual => Disposition::Drop(DropReason::TtlExpired),
        None if !m.v6 => Disposition::Drop(DropReason::TtlExpired),
        src => {
            let src = src.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            match super::icmp_error::time_exceeded(ctx, p, m, (src, smac)) {
                Ok(()) => Disposition::Tx(in_vif.id),
                Err(r) => Disposition::Drop(r),
            }
        }
    }
}

/// Decrements the IPv4 TTL (with checksum update) or the IPv6 hop limit.
fn decrement_ttl<B: PacketBuf>(p: &mut B, m: &Meta) -> Result<(), DropReason> {
    let d = p.data_mut();
    if m.v6 {
        let hl = d.get_mut(m.l3 + 7).ok_or(DropReason::RewriteFail)?;
        if *hl <= 1 {
            return Err(DropReason::TtlExpired);
        }
        *hl -= 1;
    } else {
        let mut ip =
            wire::ipv4::Packet::new_unchecked(d.get_mut(m.l3..).ok_or(DropReason::RewriteFail)?);
        if ip.ttl() <= 1 {
            return Err(DropReason::TtlExpired);
        }
        ip.decrement_ttl();
    }
    Ok(())
}
