//! ARP for IPv4 over Ethernet (RFC 826), the only ARP the vrouter answers or sends.

use std::net::Ipv4Addr;

use super::{MacAddr, Result, WireError, be16, need, put16};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// 1
    Request,
    /// 2
    Reply,
}

view! {
    /// A view of an ARP packet.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps after checking the length.
    pub fn new_checked(buf: T) -> Result<Self> {
        need(buf.as_ref(), PACKET_LEN)?;
        Ok(Packet { buf })
    }

    /// Hardware type (1 = Ethernet).
    pub fn htype(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }

    /// Protocol type (0x0800 = IPv4).
    pub fn ptype(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }

    /// Hardware address length.
    pub fn hlen(&self) -> u8 {
        self.buf.as_ref()[4]
    }

    /// Protocol address length.
    pub fn plen(&self) -> u8 {
        self.buf.as_ref()[5]
    }

    /// Raw operation code.
    pub fn oper(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }

    fn mac_at(&self, at: usize) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[at..at + 6]);
        MacAddr(m)
    }

    fn ip_at(&self, at: usize) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
    }

    /// Sender hardware address.
    pub fn sha(&self) -> MacAddr {
        self.mac_at(8)
    }

    /// Sender protocol address.
    pub fn spa(&self) -> Ipv4Addr {
        self.ip_at(14)
    }

    /// Target hardware address.
    pub fn tha(&self) -> MacAddr {
        self.mac_at(18)
    }

    /// Target protocol address.
    pub fn tpa(&self) -> Ipv4Addr {
        self.ip_at(24)
    }
}

/// Parsed Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Request or reply.
    pub op: Operation,
    /// Sender MAC.
    pub sha: MacAddr,
    /// Sender IPv4.
    pub spa: Ipv4Addr,
    /// Target MAC.
    pub tha: MacAddr,
    /// Target IPv4.
    pub tpa: Ipv4Addr,
}

impl Repr {
    /// Reads an Ethernet/IPv4 ARP packet; other hardware or protocol types are malformed
    /// for us.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        if p.htype() != 1 || p.ptype() != 0x0800 || p.hlen() != 6 || p.plen() != 4 {
            return Err(WireError::Malformed);
        }
        let op = match p.oper() {
            1 => Operation::Request,
            2 => Operation::Reply,
            _ => return Err(WireError::Malformed),
        };
        Ok(Repr {
            op,
            sha: p.sha(),
            spa: p.spa(),
            tha: p.tha(),
            tpa: p.tpa(),
        })
    }

    /// Writes the packet (28 bytes).
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        need(buf, PACKET_LEN)?;
        put16(buf, 0, 1);
        put16(buf, 2, 0x0800);
        buf[4] = 6;
        buf[5] = 4;
        put16(buf, 6, if self.op == Operation::Request { 1 } else { 2 });
        buf[8..14].copy_from_slice(&self.sha.0);
        buf[14..18].copy_from_slice(&self.spa.octets());
        buf[18..24].copy_from_slice(&self.tha.0);
        buf[24..28].copy_from_slice(&self.tpa.octets());
        Ok(())
    }

    /// The reply to this request from `mac` (which owns `self.tpa`).
    pub fn reply_from(&self, mac: MacAddr) -> Repr {
        Repr {
            op: Operation::Reply,
            sha: mac,
            spa: self.tpa,
            tha: self.sha,
            tpa: self.spa,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // "Who has 10.1.1.1? Tell 10.1.1.3" from 02:00:00:00:00:03.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x03, 10, 1,
        1, 3, 0, 0, 0, 0, 0, 0, 10, 1, 1, 1,
    ];

    #[test]
    fn request_parses_and_reply_emits() {
        let r = Repr::parse(&Packet::new_checked(&REQUEST[..]).unwrap()).unwrap();
        assert_eq!(r.op, Operation::Request);
        assert_eq!(r.spa, Ipv4Addr::new(10, 1, 1, 3));
        assert_eq!(r.tpa, Ipv4Addr::new(10, 1, 1, 1));
        let gw = MacAddr([0, 0, 0x5e, 0, 1, 0]);
        let mut out = [0u8; 28];
        r.reply_from(gw).emit(&mut out).unwrap();
        let back = Repr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap();
        assert_eq!(back.op, Operation::Reply);
        assert_eq!((back.sha, back.spa), (gw, Ipv4Addr::new(10, 1, 1, 1)));
        assert_eq!((back.tha, back.tpa), (r.sha, r.spa));
        let mut again = [0u8; 28];
        r.emit(&mut again).unwrap();
        assert_eq!(again, REQUEST);
    }

    #[test]
    fn wrong_types_and_ops_are_malformed() {
        let mut bad = REQUEST;
        bad[1] = 6; // IEEE 802 hardware
        assert_eq!(
            Repr::parse(&Packet::new_checked(&bad[..]).unwrap()),
            Err(WireError::Malformed)
        );
        let mut bad = REQUEST;
        bad[7] = 9;
        assert!(Repr::parse(&Packet::new_checked(&bad[..]).unwrap()).is_err());
        assert!(Packet::new_checked(&REQUEST[..27]).is_err());
    }
}
