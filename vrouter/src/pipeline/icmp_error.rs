//! ICMP errors the vrouter sends itself: "fragmentation needed" (type 3 code 4, RFC 1191)
//! for an IPv4 packet with DF set that does not fit the path (the fabric once encapsulated,
//! or a local interface), sent back out of the interface it came from, to its sender, so
//! that path MTU discovery works for what MSS clamping does not cover (UDP, ICMP, a TCP
//! stack that ignores the MSS); and "time exceeded in transit" (type 11) for a packet
//! whose TTL runs out here, so traceroute from a pod shows the vrouter as its first hop.
//! Both come from the node's address.
//!
//! IPv6 likewise gets "packet too big" (type 2, RFC 4443 / RFC 8201) and "hop limit
//! exceeded" (type 3) from the vrouter's link-local address.
//!
//! The packet is rewritten in place: the buffer is at least as long as the error (the
//! packet was too big), so the quoted header and first 8 bytes of payload move forward and
//! the rest is cut.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Ctx, DropReason, Meta};
use crate::packet::PacketBuf;
use crate::wire::{self, EtherType, IpProtocol, MacAddr, checksum};

/// Code of "fragmentation needed and DF set".
const FRAG_NEEDED: u8 = 4;

/// Turns `p` (an IPv4 packet at `m.l3` with DF set) into a "fragmentation needed" error to
/// its sender with `mtu` as the next-hop MTU, from `src`, over Ethernet from `smac`.
/// `Err(TooBig)` if the packet is not one to answer (IPv6, DF clear, an ICMP error itself,
/// a later fragment), so the caller drops it as too big.
pub(super) fn frag_needed<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    p: &mut B,
    m: &Meta,
    from: (Ipv4Addr, MacAddr),
    mtu: u16,
) -> Result<(), DropReason> {
    let df = p
        .data()
        .get(m.l3..)
        .and_then(|ip| wire::ipv4::Packet::new_checked(ip).ok())
        .is_some_and(|v| v.dont_frag());
    if m.v6 || !df {
        return Err(DropReason::TooBig);
    }
    let [hi, lo] = mtu.to_be_bytes();
    let what = (wire::icmp::DEST_UNREACH_V4, FRAG_NEEDED, [0, 0, hi, lo]);
    error_v4(ctx, p, m, from, what, DropReason::TooBig)
}

/// Turns `p` (an IPv4 packet at `m.l3` whose TTL ran out) into "time exceeded in transit"
/// to its sender, from `src` over Ethernet from `smac`; `Err(TtlExpired)` if it is not one
/// to answer.
pub(super) fn time_exceeded<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    p: &mut B,
    m: &Meta,
    from: (Ipv4Addr, MacAddr),
) -> Result<(), DropReason> {
    if m.v6 {
        return hop_limit_exceeded(ctx, p, m);
    }
    let what = (wire::icmp::TIME_EXCEEDED_V4, 0, [0; 4]);
    error_v4(ctx, p, m, from, what, DropReason::TtlExpired)
}

/// Turns `p` into the ICMP error `(type, code, rest of header)` to its sender, quoting its
/// IP header and first 8 bytes of payload; `Err(fail)` if it is not one to answer (an
/// ICMP error itself, a fragment but the first (RFC 1122 3.2.2), a multicast or
/// broadcast destination).
fn error_v4<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    p: &mut B,
    m: &Meta,
    (src, smac): (Ipv4Addr, MacAddr),
    (icmp_type, code, rest): (u8, u8, [u8; 4]),
    fail: DropReason,
) -> Result<(), DropReason> {
    if m.v6 {
        return Err(fail);
    }
    let d = p.data();
    let ip = d.get(m.l3..).ok_or(fail)?;
    let Ok(v) = wire::ipv4::Packet::new_checked(ip) else {
        return Err(fail);
    };
    let r = wire::ipv4::Repr::parse(&v).map_err(|_| fail)?;
    let is_icmp_error = r.protocol == IpProtocol::Icmp
        && ip.get(v.header_len()).is_some_and(|t| {
            !matches!(*t, wire::icmp::ECHO_REQUEST_V4 | wire::icmp::ECHO_REPLY_V4)
        });
    if !r.first_fragment || is_icmp_error || r.dst.is_multicast() || r.dst.is_broadcast() {
        return Err(fail);
    }
    let dst_mac = MacAddr(d[6..12].try_into().map_err(|_| fail)?);
    let quote_len = (v.header_len() + 8).min(ip.len());
    let mut quote = [0u8; 60 + 8];
    quote[..quote_len].copy_from_slice(&ip[..quote_len]);
    let hl = wire::ethernet::HEADER_LEN;
    let icmp_len = wire::icmp::HEADER_LEN + quote_len;
    let total = hl + 20 + icmp_len;
    if !p.resize(total) {
        return Err(fail);
    }
    let out = p.data_mut();
    wire::ethernet::Repr {
        src: smac,
        dst: dst_mac,
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut out[..hl]));
    wire::ipv4::Repr {
        dont_frag: false,
        ..wire::ipv4::Repr::tunnel(src, r.src, IpProtocol::Icmp, icmp_len)
    }
    .emit(&mut out[hl..hl + 20])
    .map_err(|_| fail)?;
    let icmp = &mut out[hl + 20..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&rest);
    icmp[8..8 + quote_len].copy_from_slice(&quote[..quote_len]);
    let c = checksum::checksum(&icmp[..icmp_len]);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ctx.stats.icmp_errors += 1;
    Ok(())
}

/// ICMPv6 "packet too big".
const PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 "time exceeded".
const TIME_EXCEEDED_V6: u8 = 3;
/// An ICMPv6 error quotes as much of its packet as keeps it within the minimum MTU.
const V6_ERROR_MAX: usize = 1280;

/// The link-local address (EUI-64) of `mac`.
pub(super) fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// Turns `p` (an IPv6 packet at `m.l3`) into a "packet too big" error to its sender with
/// `mtu`, from the vrouter's link-local address and MAC, over the pod's link. `Err(TooBig)`
/// if it is not one to answer (an ICMPv6 error itself, a multicast destination, not IPv6).
pub(super) fn packet_too_big<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    p: &mut B,
    m: &Meta,
    mtu: u16,
) -> Result<(), DropReason> {
    error_v6(
        ctx,
        p,
        m,
        (PACKET_TOO_BIG, 0, u32::from(mtu)),
        DropReason::TooBig,
    )
}

/// "Hop limit exceeded in transit" to the sender of `p`.
fn hop_limit_exceeded<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    p: &mut B,
    m: &Meta,
) -> Result<(), DropReason> {
    error_v6(ctx, p, m, (TIME_EXCEEDED_V6, 0, 0), DropReason::TtlExpired)
}

/// Turns `p` into the ICMPv6 error `(type, code, rest of header)` to its sender, quoting
/// as much of it as keeps the error within 1,280 bytes.
fn error_v6<B: PacketBuf>(
    ctx: &mut Ctx<'_>,
    p: &mut B,
    m: &Meta,
    (icmp_type, code, rest): (u8, u8, u32),
    fail: DropReason,
) -> Result<(), DropReason> {
    if !m.v6 {
        return Err(fail);
    }
    let smac = ctx.snap.global.vrouter_mac;
    let d = p.data();
    let ip = d.get(m.l3..).ok_or(fail)?;
    let v = wire::ipv6::Packet::new_checked(ip).map_err(|_| fail)?;
    let r = wire::ipv6::Repr::parse(&v).map_err(|_| fail)?;
    // Errors are informational below type 128: never one about another (RFC 4443 2.4 e).
    let is_icmp_error = r.protocol == IpProtocol::Icmpv6
        && !matches!(r.fragment, wire::ipv6::Fragment::Later(_))
        && ip.get(r.upper_offset).is_some_and(|t| *t < 128);
    if is_icmp_error || r.dst.is_multicast() || r.src.is_unspecified() {
        return Err(fail);
    }
    let dst_mac = MacAddr(d[6..12].try_into().map_err(|_| fail)?);
    let hl = wire::ethernet::HEADER_LEN;
    let head = wire::ipv6::HEADER_LEN + wire::icmp::HEADER_LEN;
    let quote_len = ip.len().min(V6_ERROR_MAX - head);
    let total = hl + head + quote_len;
    // The quote moves forward by the new headers less the old L2 header: copy it first.
    let quote = ip[..quote_len].to_vec();
    if !p.resize(total) {
        return Err(fail);
    }
    let src = link_local(smac);
    let out = p.data_mut();
    wire::ethernet::Repr {
        src: smac,
        dst: dst_mac,
        ethertype: EtherType::Ipv6,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut out[..hl]));
    let icmp_len = wire::icmp::HEADER_LEN + quote_len;
    wire::ipv6::Repr {
        src,
        dst: r.src,
        protocol: IpProtocol::Icmpv6,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
        upper_offset: wire::ipv6::HEADER_LEN,
        upper_len: icmp_len,
        fragment: wire::ipv6::Fragment::None,
    }
    .emit(&mut out[hl..hl + wire::ipv6::HEADER_LEN], icmp_len)
    .map_err(|_| fail)?;
    let icmp = &mut out[hl + wire::ipv6::HEADER_LEN..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&rest.to_be_bytes());
    icmp[8..icmp_len].copy_from_slice(&quote);
    let ps = checksum::pseudo_v6(src, r.src, 58, icmp_len as u32);
    let c = checksum::fold(ps + checksum::sum(&icmp[..icmp_len]));
    icmp[2..4].copy_from_slice(&(!c).to_be_bytes());
    ctx.stats.icmp_errors += 1;
    Ok(())
}
