//! TCP headers (RFC 9293): ports, flags and offsets; options are carried opaquely.

use super::checksum;
use super::{Result, WireError, be16, be32, need, put16};

/// Header length without options.
pub const MIN_HEADER_LEN: usize = 20;

/// TCP flag bits.
pub mod flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
}

view! {
    /// A view of a TCP segment.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps after checking the header (with options) fits and data offset >= 5.
    pub fn new_checked(buf: T) -> Result<Self> {
        need(buf.as_ref(), MIN_HEADER_LEN)?;
        let p = Packet { buf };
        let hl = p.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        need(p.buf.as_ref(), hl)?;
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

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }

    /// Acknowledgement number.
    pub fn ack(&self) -> u32 {
        be32(self.buf.as_ref(), 8)
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[12] >> 4) * 4
    }

    /// Flag byte (FIN..CWR).
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }

    /// Window.
    pub fn window(&self) -> u16 {
        be16(self.buf.as_ref(), 14)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 16)
    }

    /// Data after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }

    /// Verifies the checksum over the whole segment with the pseudo-header partial sum.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        cfg!(fuzzing) || checksum::fold(pseudo + checksum::sum(self.buf.as_ref())) == 0xffff
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

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 16, v);
    }

    /// Computes the checksum over the whole buffer (header + data).
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = !checksum::fold(pseudo + checksum::sum(self.buf.as_ref()));
        self.set_checksum(c);
    }
}

/// Parsed TCP header (what flows and policy need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Flags.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
}

impl Repr {
    /// Reads the header.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            flags: p.flags(),
            seq: p.seq(),
            ack: p.ack(),
        }
    }

    /// Writes a 20-byte header (window 65535, zero checksum).
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        need(buf, MIN_HEADER_LEN)?;
        let b = &mut buf[..MIN_HEADER_LEN];
        put16(b, 0, self.src_port);
        put16(b, 2, self.dst_port);
        b[4..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..12].copy_from_slice(&self.ack.to_be_bytes());
        b[12] = 5 << 4;
        b[13] = self.flags;
        put16(b, 14, 0xffff);
        put16(b, 16, 0);
        put16(b, 18, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn syn_round_trip_and_checksum() {
        let r = Repr {
            src_port: 40000,
            dst_port: 80,
            flags: flags::SYN,
            seq: 1000,
            ack: 0,
        };
        let mut seg = [0u8; 20];
        r.emit(&mut seg).unwrap();
        let ps = checksum::pseudo_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            20,
        );
        let mut p = Packet::new_checked(&mut seg[..]).unwrap();
        p.fill_checksum(ps);
        assert!(p.verify_checksum(ps));
        assert_eq!(Repr::parse(&p), r);
    }

    #[test]
    fn bad_data_offset() {
        let mut seg = [0u8; 20];
        seg[12] = 4 << 4;
        assert_eq!(
            Packet::new_checked(&seg[..]).unwrap_err(),
            WireError::Malformed
        );
        seg[12] = 6 << 4; // 24 bytes of header in a 20-byte buffer
        assert_eq!(
            Packet::new_checked(&seg[..]).unwrap_err(),
            WireError::Truncated
        );
    }
}
