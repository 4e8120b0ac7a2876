//! MPLS label stack entries (RFC 3032), as carried by MPLSoUDP (RFC 7510) and MPLSoGRE.

use super::{Result, WireError, be32, need, put32};

/// One label stack entry.
pub const ENTRY_LEN: usize = 4;

/// Largest label value (20 bits).
pub const MAX_LABEL: u32 = (1 << 20) - 1;

/// A parsed label stack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Label (20 bits).
    pub label: u32,
    /// Traffic class (3 bits).
    pub tc: u8,
    /// Bottom of stack.
    pub bos: bool,
    /// TTL.
    pub ttl: u8,
}

impl Repr {
    /// Reads the first entry of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Repr> {
        need(buf, ENTRY_LEN)?;
        let v = be32(buf, 0);
        Ok(Repr {
            label: v >> 12,
            tc: ((v >> 9) & 7) as u8,
            bos: v & 0x100 != 0,
            ttl: v as u8,
        })
    }

    /// Writes the entry into the first 4 bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        need(buf, ENTRY_LEN)?;
        if self.label > MAX_LABEL {
            return Err(WireError::Malformed);
        }
        let v = (self.label << 12)
            | (u32::from(self.tc & 7) << 9)
            | (u32::from(self.bos) << 8)
            | u32::from(self.ttl);
        put32(buf, 0, v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_entry_round_trip() {
        // label 16, tc 0, bottom of stack, ttl 64
        let bytes = [0x00, 0x01, 0x01, 0x40];
        let r = Repr::parse(&bytes).unwrap();
        assert_eq!(
            r,
            Repr {
                label: 16,
                tc: 0,
                bos: true,
                ttl: 64
            }
        );
        let mut out = [0u8; 4];
        r.emit(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn out_of_range_label_and_short_buffer() {
        let r = Repr {
            label: MAX_LABEL + 1,
            tc: 0,
            bos: true,
            ttl: 1,
        };
        assert_eq!(r.emit(&mut [0u8; 4]).unwrap_err(), WireError::Malformed);
        assert_eq!(Repr::parse(&[0, 1, 1]).unwrap_err(), WireError::Truncated);
    }
}
