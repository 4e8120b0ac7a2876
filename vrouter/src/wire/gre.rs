//! GRE (RFC 2784 / 2890) as used by MPLSoGRE: protocol type 0x8847, optional checksum,
//! key and sequence fields accepted and skipped.

use super::{Result, WireError, be16, need, put16};

/// Length of the base header (no optional fields).
pub const BASE_LEN: usize = 4;

/// GRE protocol type for MPLS unicast.
pub const PROTO_MPLS: u16 = 0x8847;

/// Parsed GRE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Protocol type of the payload.
    pub protocol: u16,
    /// Header length including optional fields.
    pub header_len: usize,
    /// Key, when present.
    pub key: Option<u32>,
    /// A checksum (over the GRE header and payload) is present.
    pub checksum: bool,
}

impl Repr {
    /// Reads the header: version must be 0; routing (R) and strict source route bits
    /// are obsolete and refused.
    pub fn parse(buf: &[u8]) -> Result<Repr> {
        need(buf, BASE_LEN)?;
        let flags = be16(buf, 0);
        if flags & 0x0007 != 0 || flags & 0x4000 != 0 || flags & 0x0800 != 0 {
            return Err(WireError::Malformed);
        }
        let c = flags & 0x8000 != 0;
        let k = flags & 0x2000 != 0;
        let s = flags & 0x1000 != 0;
        let header_len = BASE_LEN + 4 * (usize::from(c) + usize::from(k) + usize::from(s));
        need(buf, header_len)?;
        let key = k.then(|| {
            let at = BASE_LEN + if c { 4 } else { 0 };
            u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
        });
        Ok(Repr {
            protocol: be16(buf, 2),
            header_len,
            key,
            checksum: c,
        })
    }

    /// Writes a base header (no optional fields) for `protocol`.
    pub fn emit_base(protocol: u16, buf: &mut [u8]) -> Result<()> {
        need(buf, BASE_LEN)?;
        put16(buf, 0, 0);
        put16(buf, 2, protocol);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_and_keyed_headers() {
        let mut b = [0u8; 4];
        Repr::emit_base(PROTO_MPLS, &mut b).unwrap();
        assert_eq!(b, [0, 0, 0x88, 0x47]);
        let r = Repr::parse(&b).unwrap();
        assert_eq!((r.protocol, r.header_len, r.key), (PROTO_MPLS, 4, None));
        // Checksum + key present.
        let b = [0xa0, 0, 0x88, 0x47, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        let r = Repr::parse(&b).unwrap();
        assert_eq!((r.header_len, r.key), (12, Some(0x1234)));
        assert_eq!(Repr::parse(&b[..8]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn version_and_routing_bits_are_refused() {
        assert_eq!(
            Repr::parse(&[0, 1, 0x88, 0x47]).unwrap_err(),
            WireError::Malformed
        );
        assert_eq!(
            Repr::parse(&[0x40, 0, 0x88, 0x47]).unwrap_err(),
            WireError::Malformed
        );
    }
}
