//! UDP (RFC 768).

use super::checksum;
use super::{Result, WireError, be16, need, put16};

/// Header length.
pub const HEADER_LEN: usize = 8;

view! {
    /// A view of a UDP datagram.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps after checking the header fits and the length field is within 8..=buffer.
    pub fn new_checked(buf: T) -> Result<Self> {
        need(buf.as_ref(), HEADER_LEN)?;
        let p = Packet { buf };
        let len = usize::from(p.len());
        if len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        need(p.buf.as_ref(), len)?;
        Ok(p)
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }

    /// Length field (header + data).
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }

    /// True when the length field says no data follows the header.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field (0 = none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }

    /// The data after the header (up to the length field).
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Verifies the checksum given the pseudo-header partial sum. A zero checksum means
    /// "none" and passes (allowed over IPv4; RFC 6935 allows it for tunnels over IPv6).
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        if cfg!(fuzzing) || self.checksum() == 0 {
            return true;
        }
        let b = &self.buf.as_ref()[..usize::from(self.len())];
        checksum::fold(pseudo + checksum::sum(b)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 0, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v);
    }

    /// Sets the length.
    pub fn set_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 6, v);
    }

    /// Computes the checksum over header + data with the pseudo-header partial sum.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let len = usize::from(self.len());
        let c = !checksum::fold(pseudo + checksum::sum(&self.buf.as_ref()[..len]));
        // 0 means "no checksum": send 0xffff instead (RFC 768).
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Mutable data after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buf.as_mut()[HEADER_LEN..len]
    }
}

/// Parsed UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Data length (without header).
    pub payload_len: usize,
}

impl Repr {
    /// Reads the header (checksum checked separately, since it needs the IP pseudo-header).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: usize::from(p.len()) - HEADER_LEN,
        }
    }

    /// Writes the header with a zero checksum (fill it afterwards if wanted).
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        need(buf, HEADER_LEN)?;
        let len = u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| WireError::Malformed)?;
        let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        p.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    // DNS query 192.168.1.10:53000 -> 192.168.1.1:53, 12 bytes of data.
    fn datagram() -> Vec<u8> {
        let mut v = vec![0xcf, 0x08, 0x00, 0x35, 0x00, 0x14, 0x00, 0x00];
        v.extend_from_slice(&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        v
    }

    fn pseudo() -> u32 {
        checksum::pseudo_v4(
            Ipv4Addr::new(192, 168, 1, 10),
            Ipv4Addr::new(192, 168, 1, 1),
            17,
            20,
        )
    }

    #[test]
    fn fill_then_verify() {
        let mut v = datagram();
        let mut p = Packet::new_checked(&mut v[..]).unwrap();
        p.fill_checksum(pseudo());
        assert!(p.verify_checksum(pseudo()));
        let r = Repr::parse(&p);
        assert_eq!((r.src_port, r.dst_port, r.payload_len), (53000, 53, 12));
        v[9] ^= 0xff;
        assert!(
            !Packet::new_checked(&v[..])
                .unwrap()
                .verify_checksum(pseudo())
        );
    }

    #[test]
    fn length_field_is_checked() {
        let mut v = datagram();
        v[5] = 7;
        assert_eq!(
            Packet::new_checked(&v[..]).unwrap_err(),
            WireError::Malformed
        );
        v[5] = 0x40;
        assert_eq!(
            Packet::new_checked(&v[..]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn emit_round_trip() {
        let r = Repr {
            src_port: 1,
            dst_port: 4789,
            payload_len: 50,
        };
        let mut out = [0u8; 8];
        r.emit(&mut out).unwrap();
        assert_eq!(out, [0, 1, 0x12, 0xb5, 0, 58, 0, 0]);
    }
}
