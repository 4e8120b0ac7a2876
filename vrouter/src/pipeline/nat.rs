//! Stage 3: address and port translation from the flow's NAT decision, with incremental
//! checksum updates (RFC 1624) of the IPv4 header and the TCP/UDP/ICMP checksum, and
//! SCTP's CRC32c computed anew when a port changes.

use std::net::IpAddr;

use super::{Ctx, Disposition, DropReason, Meta};
use crate::flow::NatRewrite;
use crate::packet::PacketBuf;
use crate::wire::{checksum, ipv4};

pub(super) fn run<B: PacketBuf>(_ctx: &mut Ctx<'_>, pkts: &mut [B], metas: &mut [Meta]) {
    for (p, m) in pkts.iter_mut().zip(metas.iter_mut()) {
        let Some(nat) = m.action.and_then(|a| a.nat) else {
            continue;
        };
        if !m.pending() {
            continue;
        }
        let second = m.action.and_then(|a| a.hairpin.rewrite(&m.key));
        if m.icmp_error {
            // An error is translated back in its outer and its quoted headers.
            let r = super::related::translate(p.data_mut(), m, &nat).and_then(|()| {
                second.map_or(Ok(()), |n| super::related::translate(p.data_mut(), m, &n))
            });
            if let Err(r) = r {
                m.done = Some(Disposition::Drop(r));
            }
            continue;
        }
        if rewrite(p.data_mut(), m, &nat).is_none()
            || second.is_some_and(|n| rewrite(p.data_mut(), m, &n).is_none())
        {
            m.done = Some(Disposition::Drop(DropReason::RewriteFail));
        }
    }
}

/// Offset of the L4 checksum for a protocol, and whether it covers the pseudo-header.
fn l4_csum(proto: u8) -> Option<(usize, bool)> {
    match proto {
        6 => Some((16, true)),
        17 => Some((6, true)),
        1 => Some((2, false)),
        58 => Some((2, true)),
        _ => None,
    }
}

/// A UDP checksum that computes to 0 is sent as 0xFFFF (RFC 768): 0 means "none".
fn udp_nonzero(proto: u8, c: u16) -> u16 {
    if proto == 17 && c == 0 { 0xFFFF } else { c }
}

fn rd16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

fn wr16(d: &mut [u8], at: usize, v: u16) -> Option<()> {
    d.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

fn rewrite(d: &mut [u8], m: &Meta, nat: &NatRewrite) -> Option<()> {
    let proto = m.key.proto;
    // A later fragment carries no transport header: only its addresses change (the
    // first fragment's checksum took the whole change).
    let later = m.later_fragment();
    let csum = l4_csum(proto).filter(|_| !later);
    // UDP over IPv4 may carry no checksum (0): leave it so.
    let csum_at = csum
        .map(|(off, pseudo)| (m.l4 + off, pseudo))
        .filter(|(at, _)| !(proto == 17 && !m.v6 && rd16(d, *at) == Some(0)));

    // Address.
    match (nat.addr, m.v6) {
        (IpAddr::V4(a), false) => {
            let mut ip = ipv4::Packet::new_checked(d.get_mut(m.l3..)?).ok()?;
            let (old, new) = if nat.source {
                ip.rewrite_src(a)
            } else {
                ip.rewrite_dst(a)
            };
            if let Some((at, true)) = csum_at {
                let c = checksum::update32(rd16(d, at)?, old, new);
                wr16(d, at, udp_nonzero(proto, c))?;
            }
        }
        (IpAddr::V6(a), true) => {
            let at = m.l3 + if nat.source { 8 } else { 24 };
            let old: [u8; 16] = d.get(at..at + 16)?.try_into().ok()?;
            d.get_mut(at..at + 16)?.copy_from_slice(&a.octets());
            if let Some((c_at, true)) = csum_at {
                let c = checksum::update_bytes(rd16(d, c_at)?, &old, &a.octets());
                wr16(d, c_at, udp_nonzero(proto, c))?;
            }
        }
        _ => return None,
    }

    // Port (TCP/UDP/SCTP) or echo identifier (ICMP, both directions).
    if nat.port != 0 && !later {
        let field = match proto {
            6 | 17 | 132 => m.l4 + if nat.source { 0 } else { 2 },
            1 | 58 => m.l4 + 4,
            _ => return Some(()),
        };
        let old = rd16(d, field)?;
        wr16(d, field, nat.port)?;
        if proto == 132 {
            return sctp_checksum(d, m);
        }
        if let Some((at, _)) = csum_at.or(csum.map(|(o, p)| (m.l4 + o, p))) {
            if !(proto == 17 && rd16(d, at) == Some(0)) {
                let c = checksum::update16(rd16(d, at)?, old, nat.port);
                wr16(d, at, udp_nonzero(proto, c))?;
            }
        }
    }
    Some(())
}

/// SCTP's checksum is a CRC32c over the whole SCTP packet (RFC 9260 appendix A), stored
/// in little-endian order, with no pseudo-header: a port change means computing it anew.
/// A fragment (the first, the only one with ports) does not hold the whole packet: its
/// checksum is left, and the receiver drops the datagram.
fn sctp_checksum(d: &mut [u8], m: &Meta) -> Option<()> {
    if m.frag.is_some() {
        return Some(());
    }
    let end = if m.v6 {
        m.l3 + 40 + usize::from(rd16(d, m.l3 + 4)?)
    } else {
        m.l3 + usize::from(rd16(d, m.l3 + 2)?)
    };
    let pkt = d.get_mut(m.l4..end)?;
    pkt.get_mut(8..12)?.fill(0);
    let c = crc32c::crc32c(pkt);
    pkt[8..12].copy_from_slice(&c.to_le_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::tables::VrfId;

    /// IPv4 (20 bytes) + UDP (8) + a 2-byte payload `w`, checksums valid.
    fn udp(src: Ipv4Addr, dst: Ipv4Addr, w: u16) -> Vec<u8> {
        let mut d = vec![0u8; 30];
        ipv4::Repr::tunnel(src, dst, crate::wire::IpProtocol::Udp, 10)
            .emit(&mut d[..20])
            .unwrap();
        d[20..22].copy_from_slice(&4000u16.to_be_bytes());
        d[22..24].copy_from_slice(&53u16.to_be_bytes());
        d[24..26].copy_from_slice(&10u16.to_be_bytes());
        d[28..30].copy_from_slice(&w.to_be_bytes());
        let c = !checksum::fold(checksum::pseudo_v4(src, dst, 17, 10) + checksum::sum(&d[20..]));
        d[26..28].copy_from_slice(&udp_nonzero(17, c).to_be_bytes());
        d
    }

    #[test]
    fn a_udp_checksum_that_updates_to_zero_is_sent_as_ffff() {
        let (src, dst, to) = (
            Ipv4Addr::new(10, 1, 1, 3),
            Ipv4Addr::new(10, 1, 1, 100),
            Ipv4Addr::new(10, 1, 1, 12),
        );
        let mut m = Meta::new(VrfId(1));
        (m.l3, m.l4, m.key.proto) = (0, 20, 17);
        let nat = NatRewrite {
            source: false,
            addr: to.into(),
            port: 0,
            pooled: false,
        };
        // The payload word for which the update lands on 0 (one exists: the update is a
        // bijection of the old checksum, which the payload sets).
        let w = (0..=u16::MAX)
            .find(|w| {
                let d = udp(src, dst, *w);
                let old = u16::from_be_bytes([d[26], d[27]]);
                old != 0 && checksum::update32(old, u32::from(dst), u32::from(to)) == 0
            })
            .expect("a payload whose checksum updates to 0");
        let mut d = udp(src, dst, w);
        rewrite(&mut d, &m, &nat).unwrap();
        assert_eq!(
            u16::from_be_bytes([d[26], d[27]]),
            0xFFFF,
            "never 0: no checksum"
        );
        // And it verifies.
        let s = checksum::pseudo_v4(src, to, 17, 10) + checksum::sum(&d[20..]);
        assert_eq!(checksum::fold(s), 0xFFFF);
    }
}
