//! The flow key of a packet: its IP header and transport ports, read into [`Meta`] by
//! classify (for packets from VMs, the host and the fabric) and by decap (for the packet a
//! tunnel carried). Shared by both stages, so it lives below them.

use std::net::IpAddr;

use super::{Disposition, DropReason, FragInfo, Meta};
use crate::flow::frag::Piece;
use crate::tables::VrfId;
use crate::wire::{self, IpProtocol, icmp};

fn drop(r: DropReason) -> Option<Disposition> {
    Some(Disposition::Drop(r))
}

/// Fills the flow key from the IP header at `l3`, or marks the packet dropped. A
/// fragment is marked as one ([`Meta::frag`]): a first fragment must hold its whole
/// transport header, a later one has no ports (the fragment stage finds them).
pub(super) fn parse_ip(d: &[u8], l3: usize, v6: bool, vrf: VrfId, m: &mut Meta) {
    m.l3 = l3;
    m.v6 = v6;
    m.vrf = vrf;
    let Some(ipb) = d.get(l3..) else {
        m.done = drop(DropReason::InvalidPacket);
        return;
    };
    let (src, dst, proto, l4_off, l4_len): (IpAddr, IpAddr, IpProtocol, usize, usize) = if v6 {
        let Ok(ip) = wire::ipv6::Packet::new_checked(ipb) else {
            m.done = drop(DropReason::InvalidPacket);
            return;
        };
        let r = match wire::ipv6::Repr::parse(&ip) {
            Ok(r) => r,
            Err(_) => {
                m.done = drop(DropReason::InvalidPacket);
                return;
            }
        };
        if let Some(h) = r.fragment.header() {
            let end = wire::ipv6::HEADER_LEN + usize::from(ip.payload_len());
            m.frag = Some(FragInfo {
                ident: h.ident,
                piece: Piece {
                    offset: u32::from(h.offset),
                    len: end.saturating_sub(h.data) as u32,
                    more: h.more,
                },
            });
        }
        if r.src.to_ipv4_mapped().is_some() || r.dst.to_ipv4_mapped().is_some() {
            m.done = drop(DropReason::MappedAddress);
            return;
        }
        (
            r.src.into(),
            r.dst.into(),
            r.protocol,
            r.upper_offset,
            r.upper_len,
        )
    } else {
        let Ok(ip) = wire::ipv4::Packet::new_checked(ipb) else {
            m.done = drop(DropReason::InvalidPacket);
            return;
        };
        let r = match wire::ipv4::Repr::parse(&ip) {
            Ok(r) => r,
            Err(wire::WireError::Checksum) => {
                m.done = drop(DropReason::BadChecksum);
                return;
            }
            Err(_) => {
                m.done = drop(DropReason::InvalidPacket);
                return;
            }
        };
        if r.fragment {
            m.frag = Some(FragInfo {
                ident: u32::from(r.ident),
                piece: Piece {
                    offset: u32::from(ip.frag_offset()),
                    len: r.payload_len as u32,
                    more: ip.more_frags(),
                },
            });
        }
        (
            r.src.into(),
            r.dst.into(),
            r.protocol,
            ip.header_len(),
            r.payload_len,
        )
    };
    let l4 = l3 + l4_off;
    m.l4 = l4;
    m.key = crate::flow::FlowKey {
        vrf,
        proto: proto.into(),
        src,
        dst,
        sport: 0,
        dport: 0,
    };
    let seg = &d[l4.min(d.len())..(l4 + l4_len).min(d.len())];
    match m.frag {
        // No transport header here: the fragment stage gives it its first fragment's ports.
        // A TCP fragment inside the TCP header rewrites its flags at reassembly (RFC 1858).
        Some(f) if f.piece.offset != 0 => {
            if proto == IpProtocol::Tcp && f.piece.offset < 20 {
                m.done = drop(DropReason::FragmentTiny);
            }
            return;
        }
        Some(_) => {
            let whole = match proto {
                IpProtocol::Tcp => wire::tcp::Packet::new_checked(seg).is_ok(),
                IpProtocol::Udp | IpProtocol::Icmp | IpProtocol::Icmpv6 => seg.len() >= 8,
                IpProtocol::Sctp => seg.len() >= 12,
                _ => true,
            };
            if !whole {
                m.done = drop(DropReason::FragmentTiny);
                return;
            }
        }
        None => {}
    }
    let (mut sport, mut dport, mut flags) = (0u16, 0u16, 0u8);
    match proto {
        IpProtocol::Tcp => match wire::tcp::Packet::new_checked(seg) {
            Ok(t) => (sport, dport, flags) = (t.src_port(), t.dst_port(), t.flags()),
            Err(_) => {
                m.done = drop(DropReason::InvalidTransport);
                return;
            }
        },
        // A first fragment holds the header, not the whole datagram its length says.
        IpProtocol::Udp if m.frag.is_some() => {
            (sport, dport) = (
                u16::from_be_bytes([seg[0], seg[1]]),
                u16::from_be_bytes([seg[2], seg[3]]),
            );
        }
        IpProtocol::Udp => match wire::udp::Packet::new_checked(seg) {
            Ok(u) => (sport, dport) = (u.src_port(), u.dst_port()),
            Err(_) => {
                m.done = drop(DropReason::InvalidTransport);
                return;
            }
        },
        // SCTP's common header starts with the ports, as TCP's and UDP's do; policy and
        // the flow key use them (NetworkPolicy ports apply to SCTP).
        IpProtocol::Sctp => match seg {
            [a, b, c, e, _, _, _, _, _, _, _, _, ..] => {
                (sport, dport) = (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *e]));
            }
            _ => {
                m.done = drop(DropReason::InvalidTransport);
                return;
            }
        },
        IpProtocol::Icmp | IpProtocol::Icmpv6 => match icmp::Packet::new_checked(seg) {
            Ok(i) if icmp::is_echo(i.msg_type()) => sport = i.echo_ident(),
            // Keyed by the packet it quotes once the sender was checked (see run()).
            Ok(i) if m.frag.is_none() && super::related::is_error(v6, i.msg_type()) => {
                m.icmp_error = true
            }
            Ok(_) => {}
            Err(_) => {
                m.done = drop(DropReason::InvalidTransport);
                return;
            }
        },
        _ => {}
    }
    m.tcp_flags = flags;
    m.key.sport = sport;
    m.key.dport = dport;
    m.hash = m.key.hash();
}
