//! Stage 1b: tunnel decapsulation. MPLSoUDP and MPLSoGRE carry an IP packet under one
//! label, which names the local nexthop (and so the VRF); VXLAN carries an Ethernet frame
//! under a VNI, which names the VRF. The outer headers are stripped in place and the inner
//! packet is classified like one from a VM.

use super::classify::parse_ip;
use super::{Ctx, Disposition, DropReason, Meta};
use crate::packet::PacketBuf;
use crate::tables::Nexthop;
use crate::wire::{self, EtherType};

fn fail(m: &mut Meta, r: DropReason) {
    m.done = Some(Disposition::Drop(r));
}

/// MPLS over UDP: `l4` is the offset of the outer UDP header.
pub(super) fn mpls_udp<B: PacketBuf>(ctx: &mut Ctx<'_>, p: &mut B, m: &mut Meta, l4: usize) {
    mpls(ctx, p, m, l4 + wire::udp::HEADER_LEN);
}

/// MPLS over GRE: `l4` is the offset of the GRE header.
pub(super) fn mpls_gre<B: PacketBuf>(ctx: &mut Ctx<'_>, p: &mut B, m: &mut Meta, l4: usize) {
    match p.data().get(l4..).map(wire::gre::Repr::parse) {
        Some(Ok(g)) if g.protocol == wire::gre::PROTO_MPLS => mpls(ctx, p, m, l4 + g.header_len),
        Some(Ok(_)) => fail(m, DropReason::InvalidTunnel),
        _ => fail(m, DropReason::InvalidPacket),
    }
}

fn mpls<B: PacketBuf>(ctx: &mut Ctx<'_>, p: &mut B, m: &mut Meta, at: usize) {
    let Some(Ok(entry)) = p.data().get(at..).map(wire::mpls::Repr::parse) else {
        return fail(m, DropReason::InvalidPacket);
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
        _ => return fail(m, DropReason::InvalidPacket),
    };
    if !p.adj(inner) {
        return fail(m, DropReason::InvalidPacket);
    }
    parse_ip(p.data(), 0, v6, vrf, m);
    m.label_nh = Some(nh_id);
}

/// VXLAN: `l4` is the offset of the outer UDP header.
pub(super) fn vxlan<B: PacketBuf>(ctx: &mut Ctx<'_>, p: &mut B, m: &mut Meta, l4: usize) {
    let at = l4 + wire::udp::HEADER_LEN;
    let Some(Ok(vx)) = p.data().get(at..).map(wire::vxlan::Repr::parse) else {
        return fail(m, DropReason::InvalidPacket);
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
        return fail(m, DropReason::InvalidPacket);
    };
    let v6 = match eth.ethertype() {
        EtherType::Ipv4 => false,
        EtherType::Ipv6 => true,
        // L2 payloads (ARP ...) are not routed by the L3 overlay.
        _ => return fail(m, DropReason::InvalidProtocol),
    };
    if !p.adj(inner) {
        return fail(m, DropReason::InvalidPacket);
    }
    parse_ip(p.data(), wire::ethernet::HEADER_LEN, v6, vrf, m);
}
