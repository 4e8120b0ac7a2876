//! VXLAN (RFC 7348): 8-byte header after UDP port 4789.

use super::{Result, WireError, be32, need, put32};

/// Header length.
pub const HEADER_LEN: usize = 8;

/// IANA UDP port.
pub const UDP_PORT: u16 = 4789;

/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Parsed VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// VXLAN network identifier.
    pub vni: u32,
}

impl Repr {
    /// Reads the header; the I flag (valid VNI) must be set, as RFC 7348 requires.
    pub fn parse(buf: &[u8]) -> Result<Repr> {
        need(buf, HEADER_LEN)?;
        if buf[0] & 0x08 == 0 {
            return Err(WireError::Malformed);
        }
        Ok(Repr {
            vni: be32(buf, 4) >> 8,
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        need(buf, HEADER_LEN)?;
        if self.vni > MAX_VNI {
            return Err(WireError::Malformed);
        }
        put32(buf, 0, 0x0800_0000);
        put32(buf, 4, self.vni << 8);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_round_trip() {
        let b = [0x08, 0, 0, 0, 0x00, 0x12, 0x34, 0x00];
        let r = Repr::parse(&b).unwrap();
        assert_eq!(r.vni, 0x1234);
        let mut out = [0xffu8; 8];
        r.emit(&mut out).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn missing_i_flag_and_big_vni() {
        assert_eq!(
            Repr::parse(&[0, 0, 0, 0, 0, 0, 1, 0]).unwrap_err(),
            WireError::Malformed
        );
        assert!(Repr { vni: MAX_VNI + 1 }.emit(&mut [0u8; 8]).is_err());
        assert_eq!(Repr::parse(&[8, 0, 0]).unwrap_err(), WireError::Truncated);
    }
}
