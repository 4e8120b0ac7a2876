//! Stage 1b: tunnel decapsulation. MPLSoUDP and MPLSoGRE carry an IP packet under one
//! label, which names the local nexthop (and so the VRF); VXLAN carries an Ethernet frame
//! under a VNI, which names the VRF. The outer headers are stripped in place and the inner
//! packet is classified like one from a VM.

use super::key::parse_ip;
use super::{Ctx, Disposition, DropReason, Meta};
use crate::packet::PacketBuf;
use crate::tables::{Nexthop, VifId};
use crate::wire::{self, EtherType};

fn fail(m: &mut Meta, r: DropReason) {
    m.done = Some(Disposition::Drop(r));
}

/// MPLS over UDP: `l4` is the offset of the outer UDP header.
pub(super) fn mpls_udp<B: PacketBuf>(ctx: &mut Ctx<'_>, p: &mut B, m: &mut Meta, l4: usize) {
    mpls(ctx, p, m, l4 + wire::udp::HEADER_LEN);
}

/// MPLS over GRE: `l4` is the offset of the GRE header, `end` that of the end of the
/// outer IP packet. A GRE checksum, when present, must verify (RFC 2784).
pub(super) fn mpls_gre<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    p: &mut B,
    m: &mut Meta,
    l4: usize,
    end: usize,
) {
    match p.data().get(l4..).map(wire::gre::Repr::parse) {
        Some(Ok(g))
            if g.checksum
                && p.data()
                    .get(l4..end)
                    .is_none_or(|b| wire::checksum::fold(wire::checksum::sum(b)) != 0xffff) =>
        {
            fail(m, DropReason::BadChecksum)
        }
        Some(Ok(g)) if g.protocol == wire::gre::PROTO_MPLS => mpls(ctx, p, m, l4 + g.header_len),
        Some(Ok(_)) => fail(m, DropReason::InvalidTunnel),
        _ => fail(m, DropReason::InvalidTunnelPacket),
    }
}

fn mpls<B: PacketBuf>(ctx: &mut Ctx<'_>, p: &mut B, m: &mut Meta, at: usize) {
    let Some(Ok(entry)) = p.data().get(at..).map(wire::mpls::Repr::parse) else {
        return fail(m, DropReason::InvalidTunnelPacket);
    };
    // One label: the vrouter's own, bottom of stack.
    if !entry.bos {
        return fail(m, DropReason::InvalidLabel);
    }
    let Some(&nh_id) = ctx.snap.labels.get(entry.label) else {
        return fail(m, DropReason::InvalidLabel);
    };
    let Some(nh) = ctx.snap.nexthops.get(nh_id.0) else {
        return fail(m, DropReason::InvalidNexthop);
    };
    let vrf = match &**nh {
        Nexthop::Encap { vif, .. } => ctx.snap.vifs.get(vif.0).map(|v| v.vrf),
        _ => None,
    };
    let Some(vrf) = vrf else {
        return fail(m, DropReason::InvalidLabel);
    };
    let inner = at + wire::mpls::ENTRY_LEN;
    let v6 = match p.data().get(inner).map(|b| b >> 4) {
        Some(4) => false,
        Some(6) => true,
        _ => return fail(m, DropReason::InvalidTunnelPacket),
    };
    if !p.adj(inner) {
        return fail(m, DropReason::PullFail);
    }
    parse_ip(p.data(), 0, v6, vrf, m);
    m.label_nh = Some(nh_id);
}

/// VXLAN: `l4` is the offset of the outer UDP header; `vif` received it.
pub(super) fn vxlan<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    vif: VifId,
    p: &mut B,
    m: &mut Meta,
    l4: usize,
) {
    let at = l4 + wire::udp::HEADER_LEN;
    let Some(Ok(vx)) = p.data().get(at..).map(wire::vxlan::Repr::parse) else {
        return fail(m, DropReason::InvalidTunnelPacket);
    };
    let Some(&vrf) = ctx.snap.vnis.get(&vx.vni) else {
        return fail(m, DropReason::InvalidVni);
    };
    let inner = at + wire::vxlan::HEADER_LEN;
    let Some(Ok(eth)) = p
        .data()
        .get(inner..)
        .map(wire::ethernet::Frame::new_checked)
    else {
        return fail(m, DropReason::InvalidTunnelPacket);
    };
    let v6 = match eth.ethertype() {
        EtherType::Ipv4 => false,
        EtherType::Ipv6 => true,
        // A VTEP (a kernel VXLAN device, say) asking for an overlay address: the vrouter
        // is every overlay address's gateway, so it answers, back through the tunnel.
        EtherType::Arp => {
            m.done = Some(vxlan_arp(ctx, vif, p, l4, inner));
            return;
        }
        // Other L2 payloads are not routed by the L3 overlay.
        _ => return fail(m, DropReason::InvalidProtocol),
    };
    if !p.adj(inner) {
        return fail(m, DropReason::PullFail);
    }
    parse_ip(p.data(), wire::ethernet::HEADER_LEN, v6, vrf, m);
}

/// Answers an ARP request that came inside VXLAN, in place: the inner frame becomes the
/// reply from the vrouter MAC, and the outer headers are turned around towards the VTEP
/// that sent it (addresses swapped: the IPv4 checksum stays valid; UDP to port 4789 with
/// no checksum, as RFC 7348 allows).
fn vxlan_arp<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    vif: VifId,
    p: &mut B,
    l4: usize,
    inner: usize,
) -> Disposition {
    let hl = wire::ethernet::HEADER_LEN;
    let d = p.data_mut();
    let Some(Ok(req)) = d
        .get(inner + hl..)
        .map(|b| wire::arp::Packet::new_checked(b).and_then(|a| wire::arp::Repr::parse(&a)))
    else {
        return Disposition::Drop(DropReason::InvalidArp);
    };
    if req.op != wire::arp::Operation::Request || req.spa.is_unspecified() || req.spa == req.tpa {
        return Disposition::Drop(DropReason::Discard);
    }
    let mac = ctx.snap.global.vrouter_mac;
    if req.reply_from(mac).emit(&mut d[inner + hl..]).is_err() {
        return Disposition::Drop(DropReason::RewriteFail);
    }
    let mut ie = wire::ethernet::Frame::new_unchecked(&mut d[inner..inner + hl]);
    ie.set_dst(req.sha);
    ie.set_src(mac);
    // Outer Ethernet and IPv4: back to where it came from.
    let (dst, src) = {
        let e = wire::ethernet::Frame::new_unchecked(&d[..hl]);
        (e.dst(), e.src())
    };
    let mut oe = wire::ethernet::Frame::new_unchecked(&mut d[..hl]);
    oe.set_dst(src);
    oe.set_src(dst);
    let mut ip = wire::ipv4::Packet::new_unchecked(&mut d[hl..l4]);
    let (s, t) = (ip.src(), ip.dst());
    ip.set_src(t);
    ip.set_dst(s);
    let mut udp = wire::udp::Packet::new_unchecked(&mut d[l4..]);
    udp.set_dst_port(wire::vxlan::UDP_PORT);
    udp.set_src_port(wire::vxlan::UDP_PORT);
    udp.set_checksum(0);
    ctx.stats.arp_replies += 1;
    Disposition::Tx(vif)
}
