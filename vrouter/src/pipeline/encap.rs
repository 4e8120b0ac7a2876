//! Stage 4b: tunnel encapsulation. MPLSoUDP and MPLSoGRE carry the inner IP packet (its
//! Ethernet header is removed) under the route's label; VXLAN carries the inner Ethernet
//! frame under the VNI. The outer UDP source port is taken from the flow hash so the
//! fabric's ECMP spreads flows (RFC 7510 section 3, RFC 7348 section 5); the outer UDP
//! checksum is zero, as both RFCs allow over IPv4.

use super::{Ctx, DropReason, Meta};
use crate::packet::PacketBuf;
use crate::tables::{Tunnel, TunnelKind};
use crate::wire::{self, EtherType, IpProtocol};

/// MPLS over UDP destination port (RFC 7510).
pub const MPLS_UDP_PORT: u16 = 6635;

/// The largest inner IP packet that fits the fabric once encapsulated with `kind`
/// towards `t` (the out vif's MTU less the outer IP header, the tunnel header and, for
/// VXLAN, the inner Ethernet header).
pub(super) fn room(ctx: &Ctx<'_>, kind: TunnelKind, t: &Tunnel) -> Result<usize, DropReason> {
    let mtu = usize::from(
        ctx.snap
            .vifs
            .get(t.out_vif.0)
            .ok_or(DropReason::InvalidVif)?
            .mtu,
    );
    Ok(mtu.saturating_sub(20 + tunnel_header(kind) + inner_l2(kind)))
}

/// Bytes between the outer IP header and the inner packet (or frame).
fn tunnel_header(kind: TunnelKind) -> usize {
    match kind {
        TunnelKind::MplsUdp => wire::udp::HEADER_LEN + wire::mpls::ENTRY_LEN,
        TunnelKind::MplsGre => wire::gre::BASE_LEN + wire::mpls::ENTRY_LEN,
        TunnelKind::Vxlan => wire::udp::HEADER_LEN + wire::vxlan::HEADER_LEN,
    }
}

/// The inner Ethernet header a tunnel carries (VXLAN only).
fn inner_l2(kind: TunnelKind) -> usize {
    match kind {
        TunnelKind::Vxlan => wire::ethernet::HEADER_LEN,
        TunnelKind::MplsUdp | TunnelKind::MplsGre => 0,
    }
}

/// Encapsulates `p` for `t` with `kind`. `ip_max` is [`room`]'s answer, which the caller
/// has already held the packet against (before any rewrite, so that a packet too big can
/// still be quoted in an ICMP error).
pub(super) fn push<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    p: &mut B,
    m: &mut Meta,
    (kind, t): (TunnelKind, &Tunnel),
    label: u32,
    ip_max: usize,
) -> Result<(), DropReason> {
    let hl = wire::ethernet::HEADER_LEN;
    let entropy = 0xc000 | ((m.hash >> 16) as u16 & 0x3fff);

    // Shape the inner packet: IP for MPLS, Ethernet for VXLAN.
    match kind {
        TunnelKind::MplsUdp | TunnelKind::MplsGre => {
            if m.l3 > 0 && !p.adj(m.l3) {
                return Err(DropReason::PullFail);
            }
            m.l4 -= m.l3;
            m.l3 = 0;
        }
        TunnelKind::Vxlan => {
            // The inner frame comes from the overlay gateway (the vrouter MAC, which the
            // remote side learned from our ARP answers) to the remote's MAC if it needs one.
            let mac = ctx.snap.global.vrouter_mac;
            super::l2::l2_rewrite(p, m, t.inner_dmac.unwrap_or(mac), mac)?;
        }
    }
    let inner = p.len();
    let tunnel_hdr = tunnel_header(kind);
    let ip_payload = tunnel_hdr + inner;
    // A TCP SYN's MSS is lowered to what fits the fabric once encapsulated.
    if m.key.proto == 6 && m.tcp_flags & wire::tcp::flags::SYN != 0 {
        let max = super::mss::fits(ip_max, m.v6);
        if let Some(seg) = p.data_mut().get_mut(m.l4..)
            && super::mss::clamp(seg, max)
        {
            ctx.stats.mss_clamped += 1;
        }
    }
    let total = hl + 20 + tunnel_hdr;
    let h = p.prepend(total).ok_or(DropReason::NoHeadroom)?;

    wire::ethernet::Repr {
        src: t.smac,
        dst: t.dmac,
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut h[..hl]));
    let proto = if kind == TunnelKind::MplsGre {
        IpProtocol::Gre
    } else {
        IpProtocol::Udp
    };
    wire::ipv4::Repr::tunnel(t.src, t.dst, proto, ip_payload)
        .emit(&mut h[hl..hl + 20])
        .map_err(|_| DropReason::TooBig)?;
    let at = hl + 20;
    let bad = |_| DropReason::RewriteFail;
    match kind {
        TunnelKind::MplsUdp => {
            let payload_len = wire::mpls::ENTRY_LEN + inner;
            wire::udp::Repr {
                src_port: entropy,
                dst_port: MPLS_UDP_PORT,
                payload_len,
            }
            .emit(&mut h[at..at + 8])
            .map_err(bad)?;
            mpls(&mut h[at + 8..], label)?;
        }
        TunnelKind::MplsGre => {
            wire::gre::Repr::emit_base(wire::gre::PROTO_MPLS, &mut h[at..at + 4]).map_err(bad)?;
            mpls(&mut h[at + 4..], label)?;
        }
        TunnelKind::Vxlan => {
            let payload_len = wire::vxlan::HEADER_LEN + inner;
            wire::udp::Repr {
                src_port: entropy,
                dst_port: wire::vxlan::UDP_PORT,
                payload_len,
            }
            .emit(&mut h[at..at + 8])
            .map_err(bad)?;
            wire::vxlan::Repr { vni: label }
                .emit(&mut h[at + 8..at + 16])
                .map_err(|_| DropReason::InvalidVni)?;
        }
    }
    m.l3 += total;
    m.l4 += total;
    Ok(())
}

fn mpls(b: &mut [u8], label: u32) -> Result<(), DropReason> {
    wire::mpls::Repr {
        label,
        tc: 0,
        bos: true,
        ttl: 64,
    }
    .emit(b)
    .map_err(|_| DropReason::InvalidLabel)
}
