//! Stage 1: what is this packet? Reads the Ethernet header by the receiving interface's
//! kind, answers ARP and IPv6 neighbour solicitations for the VN gateway itself, hands
//! tunnel packets to decap, cross-connects the host's underlay traffic, and extracts the
//! flow key.

use std::net::IpAddr;

use super::key::parse_ip;
use super::{Ctx, Disposition, DropReason, Meta, decap};
use crate::packet::PacketBuf;
use crate::tables::{Nexthop, Vif, VifId, VifKind, VrfId};
use crate::wire::{self, EtherType, IpProtocol, checksum, icmp};

pub(super) fn run<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    vif: &Vif,
    pkts: &mut [B],
    metas: &mut Vec<Meta>,
) {
    let vrf_ok = ctx.snap.vrfs.get(vif.vrf.0).is_some();
    for p in pkts.iter_mut() {
        let mut m = Meta::new(vif.vrf);
        if !vrf_ok {
            m.done = Some(Disposition::Drop(DropReason::InvalidVrf));
        } else if p.data().get(6).is_some_and(|b| b & 1 != 0) {
            // A group source MAC (IEEE 802: the I/G bit) is never a sender's.
            m.done = drop(DropReason::InvalidSourceMac);
        } else {
            match vif.kind {
                VifKind::Virtual => from_vm(ctx, vif, p, &mut m),
                VifKind::Physical => from_fabric(ctx, vif, p, &mut m),
                VifKind::Host => from_host(ctx, vif, p, &mut m),
                VifKind::Agent => m.done = Some(Disposition::Drop(DropReason::InvalidVif)),
            }
        }
        if m.pending() && m.icmp_error {
            if let Err(r) = super::related::key(p.data(), &mut m) {
                m.done = drop(r);
            }
        }
        metas.push(m);
    }
}

fn drop(r: DropReason) -> Option<Disposition> {
    Some(Disposition::Drop(r))
}

/// Host <-> fabric cross-connect for traffic that is not the overlay's.
fn cross(to: Option<VifId>) -> Disposition {
    to.map_or(Disposition::Drop(DropReason::InvalidVif), Disposition::Tx)
}

fn from_vm<B: PacketBuf>(ctx: &mut Ctx<'_>, vif: &Vif, p: &mut B, m: &mut Meta) {
    let Ok(eth) = wire::ethernet::Frame::new_checked(p.data()) else {
        m.done = drop(DropReason::InvalidPacket);
        return;
    };
    // Anti-spoofing: the VM's own MAC (or an allowed pair's), then its own addresses.
    let src_mac = eth.src();
    if !vif.mac_allowed(src_mac) {
        m.done = drop(DropReason::InvalidSourceMac);
        return;
    }
    match eth.ethertype() {
        EtherType::Arp => m.done = Some(arp(ctx, vif, p)),
        EtherType::Ipv4 => parse_ip(p.data(), wire::ethernet::HEADER_LEN, false, vif.vrf, m),
        EtherType::Ipv6 => {
            parse_ip(p.data(), wire::ethernet::HEADER_LEN, true, vif.vrf, m);
            // A later fragment's first byte is data, not an ICMPv6 type; ND is never
            // fragmented (RFC 6980), so a fragment never reaches nd().
            let first = m.frag.is_none_or(|f| f.piece.offset == 0);
            if m.pending() && m.key.proto == 58 && first {
                match p.data().get(m.l4).copied() {
                    Some(icmp::NEIGHBOR_SOLICIT) if m.frag.is_some() => {
                        m.done = drop(DropReason::Discard)
                    }
                    Some(icmp::NEIGHBOR_SOLICIT) => m.done = Some(nd(ctx, vif, p, m)),
                    // Router solicitations, adverts, redirects, MLD: nothing to forward.
                    Some(133..=137 | 143) => m.done = drop(DropReason::Discard),
                    _ => {}
                }
            }
        }
        _ => m.done = drop(DropReason::InvalidProtocol),
    }
    // What the vrouter answers itself (ARP, ND) was checked there or is the VM's own
    // question; what is forwarded must come from the VM's addresses.
    if m.pending() && !vif.source_allowed(m.key.src, src_mac) {
        m.done = drop(DropReason::InvalidSource);
    }
}

/// Answers an ARP request from the VM with the vrouter's MAC (the VN gateway and every
/// other address are reached through the vrouter), in place.
fn arp<B: PacketBuf>(ctx: &mut Ctx<'_>, vif: &Vif, p: &mut B) -> Disposition {
    let hl = wire::ethernet::HEADER_LEN;
    let req =
        match wire::arp::Packet::new_checked(&p.data()[hl..]).map(|a| wire::arp::Repr::parse(&a)) {
            Ok(Ok(r)) => r,
            _ => return Disposition::Drop(DropReason::InvalidArp),
        };
    // A VM asks only as itself: its own address (or an allowed pair's) and MAC, so the
    // answer never serves a spoofer's claim on another's address.
    if vif.kind == VifKind::Virtual
        && !req.spa.is_unspecified()
        && !vif.source_allowed(req.spa.into(), req.sha)
    {
        return Disposition::Drop(DropReason::InvalidSource);
    }
    // Not a request, an address probe (sender 0.0.0.0), a gratuitous ARP, or a question
    // about the VM's own address: nothing to answer.
    if req.op != wire::arp::Operation::Request
        || req.spa.is_unspecified()
        || req.spa == req.tpa
        || Some(req.tpa) == vif.ip4
    {
        return Disposition::Drop(DropReason::Discard);
    }
    let mac = ctx.snap.global.vrouter_mac;
    let d = p.data_mut();
    if req.reply_from(mac).emit(&mut d[hl..]).is_err() {
        return Disposition::Drop(DropReason::RewriteFail);
    }
    let mut eth = wire::ethernet::Frame::new_unchecked(&mut d[..hl]);
    eth.set_dst(req.sha);
    eth.set_src(mac);
    ctx.stats.arp_replies += 1;
    Disposition::Tx(vif.id)
}

/// Answers an IPv6 neighbour solicitation with an advertisement from the vrouter's MAC,
/// in place (the buffer is resized to exactly the advertisement).
fn nd<B: PacketBuf>(ctx: &mut Ctx<'_>, vif: &Vif, p: &mut B, m: &Meta) -> Disposition {
    const LEN: usize = 14 + 40 + 32;
    let ns = match icmp::Packet::new_checked(&p.data()[m.l4..]).map(|i| icmp::NdpRepr::parse(&i)) {
        Ok(Ok(r)) => r,
        _ => return Disposition::Drop(DropReason::InvalidArp),
    };
    let IpAddr::V6(src) = m.key.src else {
        return Disposition::Drop(DropReason::InvalidArp);
    };
    // Duplicate-address detection (unspecified source) and the VM's own address are not
    // ours to answer; extension headers before ICMPv6 are not expected in ND.
    if src.is_unspecified() || Some(ns.target) == vif.ip6 || m.l4 != 54 {
        return Disposition::Drop(DropReason::Discard);
    }
    let eth_src = wire::ethernet::Frame::new_unchecked(p.data()).src();
    let dst_mac = ns.lladdr.unwrap_or(eth_src);
    if !p.resize(LEN) {
        return Disposition::Drop(DropReason::NoHeadroom);
    }
    let mac = ctx.snap.global.vrouter_mac;
    let na = ns.advert_from(mac, true);
    let d = p.data_mut();
    wire::ethernet::Repr {
        src: mac,
        dst: dst_mac,
        ethertype: EtherType::Ipv6,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut d[..14]));
    let ip = wire::ipv6::Repr {
        src: ns.target,
        dst: src,
        protocol: IpProtocol::Icmpv6,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
        upper_offset: 40,
        upper_len: 32,
        fragment: wire::ipv6::Fragment::None,
    };
    if ip.emit(&mut d[14..54], 32).is_err() || na.emit(&mut d[54..]).is_err() {
        return Disposition::Drop(DropReason::RewriteFail);
    }
    let ps = checksum::pseudo_v6(ns.target, src, 58, 32);
    icmp::Packet::new_unchecked(&mut d[54..]).fill_checksum_v6(ps);
    ctx.stats.nd_replies += 1;
    Disposition::Tx(vif.id)
}

/// From the host (vhost0). An address the host's VRF routes into the overlay (a pod
/// network that a policy connects with the ip-fabric network leaks its routes there) is
/// reached through the flow table like a VM's traffic, and an ARP request for it is
/// answered with the vrouter MAC. Everything else is the underlay's: cross-connected to
/// the fabric untouched.
fn from_host<B: PacketBuf>(ctx: &mut Ctx<'_>, vif: &Vif, p: &mut B, m: &mut Meta) {
    let fabric = ctx.snap.global.fabric_vif;
    let d = p.data();
    let Ok(eth) = wire::ethernet::Frame::new_checked(d) else {
        m.done = drop(DropReason::InvalidPacket);
        return;
    };
    let hl = wire::ethernet::HEADER_LEN;
    let (dst, v6): (IpAddr, bool) = match eth.ethertype() {
        EtherType::Arp => {
            match wire::arp::Packet::new_checked(&d[hl..]).map(|a| wire::arp::Repr::parse(&a)) {
                Ok(Ok(a)) if a.op == wire::arp::Operation::Request => (a.tpa.into(), false),
                _ => {
                    m.done = Some(cross(fabric));
                    return;
                }
            }
        }
        EtherType::Ipv4 => match wire::ipv4::Packet::new_checked(&d[hl..]) {
            Ok(ip) => (ip.dst().into(), false),
            Err(_) => {
                m.done = drop(DropReason::InvalidPacket);
                return;
            }
        },
        EtherType::Ipv6 => match wire::ipv6::Packet::new_checked(&d[hl..]) {
            Ok(ip) => (ip.dst().into(), true),
            Err(_) => {
                m.done = drop(DropReason::InvalidPacket);
                return;
            }
        },
        _ => {
            m.done = Some(cross(fabric));
            return;
        }
    };
    if !overlay_route(ctx, vif.vrf, dst) {
        m.done = Some(cross(fabric));
        return;
    }
    if eth.ethertype() == EtherType::Arp {
        m.done = Some(arp(ctx, vif, p));
        return;
    }
    parse_ip(p.data(), hl, v6, vif.vrf, m);
}

/// Whether `vrf` routes `dst` into the overlay: not back to the host, and not out of the
/// fabric as it is (the underlay's own routes, such as the gateway's).
fn overlay_route(ctx: &Ctx<'_>, vrf: VrfId, dst: IpAddr) -> bool {
    let Some(r) = ctx.snap.vrfs.get(vrf.0).and_then(|v| v.lookup(dst)) else {
        return false;
    };
    let fabric = ctx.snap.global.fabric_vif;
    match ctx.snap.nexthops.get(r.nh.0).map(|n| &**n) {
        Some(Nexthop::Receive { .. } | Nexthop::NodePorts(_)) | None => false,
        Some(Nexthop::Encap { vif, .. }) => Some(*vif) != fabric,
        _ => true,
    }
}

fn from_fabric<B: PacketBuf>(ctx: &mut Ctx<'_>, vif: &Vif, p: &mut B, m: &mut Meta) {
    let host = ctx.snap.global.host_vif;
    let d = p.data();
    let Ok(eth) = wire::ethernet::Frame::new_checked(d) else {
        m.done = drop(DropReason::InvalidPacket);
        return;
    };
    if eth.ethertype() != EtherType::Ipv4 {
        m.done = Some(cross(host));
        return;
    }
    let Ok(ip) = wire::ipv4::Packet::new_checked(&d[14..]) else {
        m.done = drop(DropReason::InvalidPacket);
        return;
    };
    if vif.ip4 != Some(ip.dst()) {
        // Sent to us for an address the fabric VRF routes into the overlay (a floating
        // or external IP of a network joined to the ip-fabric network): the flow stage,
        // as from a VM. Sent to us for another address: the reply of a flow translated
        // here whose other end is on another node (which returns it to us), found in
        // the flow table. Everything else is the host's.
        let ours = eth.dst() == vif.mac;
        if ours && overlay_route(ctx, vif.vrf, ip.dst().into()) {
            parse_ip(p.data(), 14, false, vif.vrf, m);
        } else if ours {
            fabric_flow(p, vif.vrf, m);
            if !m.pending() {
                // Not a packet the flow table could hold: the host's, as it is.
                m.done = Some(cross(host));
            }
        } else {
            m.done = Some(cross(host));
        }
        return;
    }
    // A fragment for the node's address: tunnels are sent whole (DF), so a tunnel's
    // fragment is not ours to take apart (the host's, as it is); anything else may be
    // the reply of a translated flow, which the fragment stage finds, or the host's.
    if ip.is_fragment() {
        let l4 = 14 + ip.header_len();
        let tunnel = ip.frag_offset() == 0
            && match ip.protocol() {
                IpProtocol::Gre => true,
                IpProtocol::Udp => d.get(l4 + 2..l4 + 4).is_some_and(|b| {
                    let port = u16::from_be_bytes([b[0], b[1]]);
                    port == 6635 || port == wire::vxlan::UDP_PORT
                }),
                _ => false,
            };
        if tunnel {
            m.done = Some(cross(host));
        } else {
            fabric_flow(p, vif.vrf, m);
        }
        return;
    }
    // The header checksum, which no offload has checked for us.
    if !ip.verify_checksum() {
        m.done = drop(DropReason::BadChecksum);
        return;
    }
    m.tunnel_src = Some(ip.src());
    let l4 = 14 + ip.header_len();
    let dport = d
        .get(l4 + 2..l4 + 4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    let tunnel = match ip.protocol() {
        IpProtocol::Udp => matches!(dport, Some(6635 | wire::vxlan::UDP_PORT)),
        IpProtocol::Gre => true,
        _ => false,
    };
    // Only the other nodes' tunnels are opened: a host on the fabric that is not a node
    // reaches no pod through one.
    if tunnel && !ctx.snap.known_node(ip.src()) {
        m.done = drop(DropReason::UntrustedTunnel);
        return;
    }
    match (ip.protocol(), dport) {
        (IpProtocol::Udp, Some(6635)) => decap::mpls_udp(ctx, p, m, l4),
        (IpProtocol::Udp, Some(wire::vxlan::UDP_PORT)) => decap::vxlan(ctx, vif.id, p, m, l4),
        (IpProtocol::Gre, _) => {
            let end = 14 + usize::from(ip.total_len());
            decap::mpls_gre(ctx, p, m, l4, end)
        }
        _ => fabric_flow(p, vif.vrf, m),
    }
    if m.pending() && !m.lookup_only {
        ctx.stats.decap += 1;
    }
}

/// Fabric traffic for the node's own address that is not a tunnel: it may be the return
/// of a SNAT flow; otherwise it belongs to the host.
fn fabric_flow<B: PacketBuf>(p: &B, vrf: VrfId, m: &mut Meta) {
    parse_ip(p.data(), 14, false, vrf, m);
    m.lookup_only = true;
}
