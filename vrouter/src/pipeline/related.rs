//! ICMP errors follow the flow of the packet they quote (as conntrack's "related" and TF's
//! vrouter do): destination unreachable (fragmentation needed included), time exceeded and
//! parameter problem, and ICMPv6's four error types. The quoted packet went the other
//! way, so the error's flow key is the quoted packet's key reversed; the error takes that
//! entry's nexthop and never sets a flow up (no entry: `icmp_error_no_flow`, or the host's
//! when it came from the fabric to the node). Through NAT it is translated back: the
//! address the flow rewrites is rewritten in the outer header (the destination, or the
//! source when the error comes from the translated end itself) and in the quoted header
//! with its port, so the sender's stack matches the error to its socket and path MTU
//! discovery works through services and SNAT. The quoted IPv4 header checksum and the
//! quoted transport checksum (when quoted) are updated, and the error's checksum is
//! computed anew, after the one it came with was found right.

use std::net::IpAddr;

use super::{DropReason, Meta};
use crate::flow::{FlowKey, NatRewrite};
use crate::wire::{IpProtocol, checksum, icmp, ipv4};

/// An ICMP or ICMPv6 type that is an error quoting a packet.
pub(super) fn is_error(v6: bool, t: u8) -> bool {
    if v6 {
        matches!(t, 1..=4)
    } else {
        matches!(t, icmp::DEST_UNREACH_V4 | icmp::TIME_EXCEEDED_V4 | 12)
    }
}

/// The quoted packet: where its headers are in the error and what they say.
struct Quoted {
    /// Offset of its IP header in the frame.
    l3: usize,
    /// Offset of its transport header.
    l4: usize,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    /// Ports (the echo identifier as source port for ICMP echo).
    sport: u16,
    dport: u16,
}

/// Reads the packet quoted by the error whose ICMP header is at `m.l4`. The quote may be
/// cut anywhere after the transport header's first 8 bytes, so the quoted lengths are not
/// checked against it. A later fragment, IPv6 extension headers or a quote too short to
/// hold the ports give `None`.
fn quoted(d: &[u8], m: &Meta) -> Option<Quoted> {
    let l3 = m.l4 + icmp::HEADER_LEN;
    let q = d.get(l3..)?;
    let (proto, src, dst, hl): (u8, IpAddr, IpAddr, usize) = if m.v6 {
        let h = q.get(..40)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        let a = |at: usize| -> Option<IpAddr> {
            let o: [u8; 16] = h.get(at..at + 16)?.try_into().ok()?;
            Some(IpAddr::from(o))
        };
        (h[6], a(8)?, a(24)?, 40)
    } else {
        let h = q.get(..20)?;
        let ip = ipv4::Packet::new_unchecked(h);
        let hl = usize::from(q[0] & 0xf) * 4;
        if q[0] >> 4 != 4 || hl < 20 || ip.frag_offset() != 0 {
            return None;
        }
        (h[9], ip.src().into(), ip.dst().into(), hl)
    };
    let l4 = l3 + hl;
    let t = d.get(l4..l4 + 8)?;
    let be = |at: usize| u16::from_be_bytes([t[at], t[at + 1]]);
    let (sport, dport) = match IpProtocol::from(proto) {
        IpProtocol::Tcp | IpProtocol::Udp | IpProtocol::Sctp => (be(0), be(2)),
        IpProtocol::Icmp | IpProtocol::Icmpv6 if icmp::is_echo(t[0]) => (be(4), 0),
        _ => return None,
    };
    Some(Quoted {
        l3,
        l4,
        proto,
        src,
        dst,
        sport,
        dport,
    })
}

/// Gives an error its flow key: the quoted packet's, reversed. `Err` if it quotes
/// nothing a flow could hold.
pub(super) fn key(d: &[u8], m: &mut Meta) -> Result<(), DropReason> {
    let q = quoted(d, m).ok_or(DropReason::IcmpErrorNoFlow)?;
    m.key = FlowKey {
        vrf: m.key.vrf,
        proto: q.proto,
        src: q.src,
        dst: q.dst,
        sport: q.sport,
        dport: q.dport,
    }
    .reversed();
    m.hash = m.key.hash();
    m.tcp_flags = 0;
    Ok(())
}

fn rd16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

fn wr16(d: &mut [u8], at: usize, v: u16) -> Option<()> {
    d.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// Replaces the address at `at` (4 or 16 bytes) with `a`; returns the old bytes.
fn put_addr(d: &mut [u8], at: usize, a: IpAddr) -> Option<Vec<u8>> {
    let new: Vec<u8> = match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let f = d.get_mut(at..at + new.len())?;
    let old = f.to_vec();
    f.copy_from_slice(&new);
    Some(old)
}

/// The ICMP message's extent: from its header to the end of the outer IP payload.
fn message_end(d: &[u8], m: &Meta) -> Option<usize> {
    let end = if m.v6 {
        m.l3 + 40 + usize::from(rd16(d, m.l3 + 4)?)
    } else {
        m.l3 + usize::from(rd16(d, m.l3 + 2)?)
    };
    (end <= d.len() && end >= m.l4 + icmp::HEADER_LEN).then_some(end)
}

/// The error's checksum as it would be over `d[m.l4..end]` (with the pseudo-header for
/// ICMPv6).
fn message_sum(d: &[u8], m: &Meta, end: usize) -> Option<u16> {
    let msg = d.get(m.l4..end)?;
    let s = if m.v6 {
        let a = |at: usize| -> Option<std::net::Ipv6Addr> {
            let o: [u8; 16] = d.get(at..at + 16)?.try_into().ok()?;
            Some(o.into())
        };
        checksum::pseudo_v6(a(m.l3 + 8)?, a(m.l3 + 24)?, 58, msg.len() as u32) + checksum::sum(msg)
    } else {
        checksum::sum(msg)
    };
    Some(checksum::fold(s))
}

/// Translates an error that follows a flow whose action is `nat` (see the module).
pub(super) fn translate(d: &mut [u8], m: &Meta, nat: &NatRewrite) -> Result<(), DropReason> {
    let end = message_end(d, m).ok_or(DropReason::RewriteFail)?;
    if message_sum(d, m, end) != Some(0xffff) {
        return Err(DropReason::BadChecksum);
    }
    let q = quoted(d, m).ok_or(DropReason::IcmpErrorNoFlow)?;
    rewrite(d, m, &q, nat).ok_or(DropReason::RewriteFail)?;
    wr16(d, m.l4 + 2, 0).ok_or(DropReason::RewriteFail)?;
    let c = !message_sum(d, m, end).ok_or(DropReason::RewriteFail)?;
    wr16(d, m.l4 + 2, c).ok_or(DropReason::RewriteFail)
}

fn rewrite(d: &mut [u8], m: &Meta, q: &Quoted, nat: &NatRewrite) -> Option<()> {
    let (src_at, dst_at) = if m.v6 { (8, 24) } else { (12, 16) };
    // The flow rewrites its key's source (the quoted packet's destination) or its
    // destination (the quoted packet's source, where the error goes).
    let outer_at = if nat.source {
        let outer_src = d.get(m.l3 + src_at..m.l3 + src_at + if m.v6 { 16 } else { 4 })?;
        let from_that_end = match m.key.src {
            IpAddr::V4(a) => outer_src == a.octets(),
            IpAddr::V6(a) => outer_src == a.octets(),
        };
        from_that_end.then_some(src_at)
    } else {
        Some(dst_at)
    };
    if let Some(at) = outer_at {
        put_addr(d, m.l3 + at, nat.addr)?;
        if !m.v6 {
            d.get_mut(m.l3 + 10..m.l3 + 12)?.fill(0);
            let hl = usize::from(d[m.l3] & 0xf) * 4;
            let c = checksum::checksum(d.get(m.l3..m.l3 + hl)?);
            wr16(d, m.l3 + 10, c)?;
        }
    }
    // The quoted packet: its destination if the flow rewrites the key's source, else its
    // source; and the matching port.
    let at = q.l3 + if nat.source { dst_at } else { src_at };
    let old = put_addr(d, at, nat.addr)?;
    let new = d.get(at..at + old.len())?.to_vec();
    if !m.v6 {
        // Only the quoted header's checksum field and address changed: update it.
        let c = checksum::update_bytes(rd16(d, q.l3 + 10)?, &old, &new);
        wr16(d, q.l3 + 10, c)?;
    }
    let (port_at, csum_at, pseudo) = match q.proto {
        6 => (if nat.source { 2 } else { 0 }, Some(16), true),
        17 => (if nat.source { 2 } else { 0 }, Some(6), true),
        132 => (if nat.source { 2 } else { 0 }, None, false),
        1 => (4, Some(2), false),
        58 => (4, Some(2), true),
        _ => return Some(()),
    };
    let (port_at, csum_at) = (q.l4 + port_at, csum_at.map(|c| q.l4 + c));
    // The quoted transport checksum, when the quote holds it (UDP's 0 means none).
    let csum_at =
        csum_at.filter(|at| d.len() >= at + 2 && !(q.proto == 17 && rd16(d, *at) == Some(0)));
    if let (Some(c_at), true) = (csum_at, pseudo) {
        let c = checksum::update_bytes(rd16(d, c_at)?, &old, &new);
        wr16(d, c_at, c)?;
    }
    if nat.port != 0 {
        let old_port = rd16(d, port_at)?;
        wr16(d, port_at, nat.port)?;
        if let Some(c_at) = csum_at {
            let c = checksum::update16(rd16(d, c_at)?, old_port, nat.port);
            wr16(d, c_at, c)?;
        }
    }
    Some(())
}
