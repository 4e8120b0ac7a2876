//! IEEE 802.1Q VLAN tag (the 4 bytes after the source MAC when the EtherType is 0x8100).

use super::{EtherType, Result, be16, need, put16};

/// Tag length (TCI + inner EtherType).
pub const HEADER_LEN: usize = 4;

view! {
    /// A view of a VLAN tag: TCI then the inner EtherType.
    Tag
}

impl<T: AsRef<[u8]>> Tag<T> {
    /// Wraps after checking the tag fits.
    pub fn new_checked(buf: T) -> Result<Self> {
        need(buf.as_ref(), HEADER_LEN)?;
        Ok(Tag { buf })
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (be16(self.buf.as_ref(), 0) >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        be16(self.buf.as_ref(), 0) & 0x1000 != 0
    }

    /// VLAN id (12 bits).
    pub fn vid(&self) -> u16 {
        be16(self.buf.as_ref(), 0) & 0x0fff
    }

    /// The EtherType of what follows the tag.
    pub fn inner_ethertype(&self) -> EtherType {
        EtherType::from(be16(self.buf.as_ref(), 2))
    }

    /// Bytes after the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tag<T> {
    /// Sets PCP, DEI and VID.
    pub fn set_tci(&mut self, pcp: u8, dei: bool, vid: u16) {
        let tci = (u16::from(pcp & 7) << 13) | (u16::from(dei) << 12) | (vid & 0x0fff);
        put16(self.buf.as_mut(), 0, tci);
    }

    /// Sets the inner EtherType.
    pub fn set_inner_ethertype(&mut self, e: EtherType) {
        put16(self.buf.as_mut(), 2, e.into());
    }
}

/// Parsed VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Priority.
    pub pcp: u8,
    /// Drop eligible.
    pub dei: bool,
    /// VLAN id.
    pub vid: u16,
    /// Inner EtherType.
    pub inner: EtherType,
}

impl Repr {
    /// Reads the tag. VID 4095 is reserved and refused.
    pub fn parse<T: AsRef<[u8]>>(t: &Tag<T>) -> Result<Repr> {
        if t.vid() == 0x0fff {
            return Err(super::WireError::Malformed);
        }
        Ok(Repr {
            pcp: t.pcp(),
            dei: t.dei(),
            vid: t.vid(),
            inner: t.inner_ethertype(),
        })
    }

    /// Writes the tag.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, t: &mut Tag<T>) {
        t.set_tci(self.pcp, self.dei, self.vid);
        t.set_inner_ethertype(self.inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tci_fields_round_trip() {
        let bytes = [0xa0, 0x64, 0x08, 0x00]; // pcp 5, dei 0, vid 100, IPv4
        let t = Tag::new_checked(&bytes[..]).unwrap();
        let r = Repr::parse(&t).unwrap();
        assert_eq!(
            (r.pcp, r.dei, r.vid, r.inner),
            (5, false, 100, EtherType::Ipv4)
        );
        let mut out = [0u8; 4];
        r.emit(&mut Tag::new_unchecked(&mut out[..]));
        assert_eq!(out, bytes);
    }

    #[test]
    fn reserved_vid_is_malformed() {
        assert!(Repr::parse(&Tag::new_checked(&[0x0f, 0xff, 0x08, 0x00][..]).unwrap()).is_err());
        assert!(Tag::new_checked(&[0u8; 3][..]).is_err());
    }
}
