//! ICMP (RFC 792) and ICMPv6 (RFC 4443) with the neighbour-discovery messages (RFC 4861)
//! that the vrouter answers for its gateway addresses.

use std::net::Ipv6Addr;

use super::checksum;
use super::{MacAddr, Result, WireError, be16, need, put16};

/// ICMPv4 echo request.
pub const ECHO_REQUEST_V4: u8 = 8;
/// ICMPv4 echo reply.
pub const ECHO_REPLY_V4: u8 = 0;
/// ICMPv4 destination unreachable.
pub const DEST_UNREACH_V4: u8 = 3;
/// ICMPv4 time exceeded.
pub const TIME_EXCEEDED_V4: u8 = 11;
/// ICMPv6 echo request.
pub const ECHO_REQUEST_V6: u8 = 128;
/// ICMPv6 echo reply.
pub const ECHO_REPLY_V6: u8 = 129;
/// ICMPv6 neighbour solicitation.
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 neighbour advertisement.
pub const NEIGHBOR_ADVERT: u8 = 136;

/// Header length (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;

view! {
    /// A view of an ICMP or ICMPv6 message.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps after checking the 8-byte header fits.
    pub fn new_checked(buf: T) -> Result<Self> {
        need(buf.as_ref(), HEADER_LEN)?;
        Ok(Packet { buf })
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }

    /// Code.
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }

    /// Echo identifier (echo messages), the flow's "port" for ICMP flows.
    pub fn echo_ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }

    /// Bytes after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }

    /// Verifies an ICMPv4 checksum (no pseudo-header).
    pub fn verify_checksum_v4(&self) -> bool {
        cfg!(fuzzing) || checksum::fold(checksum::sum(self.buf.as_ref())) == 0xffff
    }

    /// Verifies an ICMPv6 checksum with the IPv6 pseudo-header partial sum.
    pub fn verify_checksum_v6(&self, pseudo: u32) -> bool {
        cfg!(fuzzing) || checksum::fold(pseudo + checksum::sum(self.buf.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets type and code.
    pub fn set_type_code(&mut self, t: u8, c: u8) {
        let b = self.buf.as_mut();
        b[0] = t;
        b[1] = c;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v);
    }

    /// Fills an ICMPv4 checksum.
    pub fn fill_checksum_v4(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buf.as_ref());
        self.set_checksum(c);
    }

    /// Fills an ICMPv6 checksum with the pseudo-header partial sum.
    pub fn fill_checksum_v6(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = !checksum::fold(pseudo + checksum::sum(self.buf.as_ref()));
        self.set_checksum(c);
    }
}

/// True for ICMP(v6) echo messages, which carry an identifier usable as a flow port.
pub fn is_echo(t: u8) -> bool {
    matches!(
        t,
        ECHO_REQUEST_V4 | ECHO_REPLY_V4 | ECHO_REQUEST_V6 | ECHO_REPLY_V6
    )
}

/// A neighbour solicitation or advertisement (what we need of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpRepr {
    /// Solicitation (135) or advertisement (136).
    pub msg_type: u8,
    /// The target address.
    pub target: Ipv6Addr,
    /// Source (NS) or target (NA) link-layer address option, when present.
    pub lladdr: Option<MacAddr>,
    /// NA flags: router, solicited, override (bits 31..29 of the rest-of-header).
    pub flags: u8,
}

impl NdpRepr {
    /// Parses NS/NA bodies. Options are walked with their length checked (a zero-length
    /// option is malformed, RFC 4861 4.6).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<NdpRepr> {
        let t = p.msg_type();
        if (t != NEIGHBOR_SOLICIT && t != NEIGHBOR_ADVERT) || p.code() != 0 {
            return Err(WireError::Malformed);
        }
        let b = p.buf.as_ref();
        need(b, 24)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[8..24]);
        let mut lladdr = None;
        let mut off = 24;
        while off + 2 <= b.len() {
            let (kind, len) = (b[off], usize::from(b[off + 1]) * 8);
            if len == 0 {
                return Err(WireError::Malformed);
            }
            need(b, off + len)?;
            // 1 = source link-layer address (in NS), 2 = target link-layer (in NA).
            if (kind == 1 || kind == 2) && len >= 8 {
                let mut m = [0u8; 6];
                m.copy_from_slice(&b[off + 2..off + 8]);
                lladdr = Some(MacAddr(m));
            }
            off += len;
        }
        Ok(NdpRepr {
            msg_type: t,
            target: Ipv6Addr::from(a),
            lladdr,
            flags: b[4] >> 5,
        })
    }

    /// Length of the emitted message (with one link-layer option when `lladdr` is set).
    pub fn len(&self) -> usize {
        24 + if self.lladdr.is_some() { 8 } else { 0 }
    }

    /// Always false: an NDP message has at least its fixed part.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the message with a zero checksum (fill it with the pseudo-header after).
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        need(buf, self.len())?;
        buf[0] = self.msg_type;
        buf[1] = 0;
        put16(buf, 2, 0);
        buf[4] = self.flags << 5;
        buf[5..8].fill(0);
        buf[8..24].copy_from_slice(&self.target.octets());
        if let Some(m) = self.lladdr {
            buf[24] = if self.msg_type == NEIGHBOR_SOLICIT {
                1
            } else {
                2
            };
            buf[25] = 1;
            buf[26..32].copy_from_slice(&m.0);
        }
        Ok(())
    }

    /// The advertisement answering this solicitation from `mac` (solicited + override,
    /// plus router when we answer for a gateway).
    pub fn advert_from(&self, mac: MacAddr, router: bool) -> NdpRepr {
        NdpRepr {
            msg_type: NEIGHBOR_ADVERT,
            target: self.target,
            lladdr: Some(mac),
            flags: (u8::from(router) << 2) | 0b011,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_v4() {
        let mut m = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        let mut p = Packet::new_checked(&mut m[..]).unwrap();
        p.fill_checksum_v4();
        assert!(p.verify_checksum_v4());
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 1));
        assert!(is_echo(p.msg_type()));
    }

    #[test]
    fn neighbour_solicitation_and_advert() {
        let target: Ipv6Addr = "fd00::1".parse().unwrap();
        let ns = NdpRepr {
            msg_type: NEIGHBOR_SOLICIT,
            target,
            lladdr: Some(MacAddr([2, 0, 0, 0, 0, 9])),
            flags: 0,
        };
        let mut buf = [0u8; 32];
        ns.emit(&mut buf).unwrap();
        let parsed = NdpRepr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(parsed, ns);
        let na = parsed.advert_from(MacAddr([0, 0, 0x5e, 0, 1, 0]), true);
        assert_eq!(na.flags, 0b111);
        let mut out = [0u8; 32];
        na.emit(&mut out).unwrap();
        let back = NdpRepr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap();
        assert_eq!(back.lladdr, Some(MacAddr([0, 0, 0x5e, 0, 1, 0])));
        assert_eq!(back.msg_type, NEIGHBOR_ADVERT);
    }

    #[test]
    fn zero_length_option_is_malformed() {
        let mut buf = [0u8; 32];
        buf[0] = NEIGHBOR_SOLICIT;
        buf[24] = 1; // option type, length 0
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(NdpRepr::parse(&p).unwrap_err(), WireError::Malformed);
        assert!(NdpRepr::parse(&Packet::new_checked(&buf[..20]).unwrap()).is_err());
    }
}
