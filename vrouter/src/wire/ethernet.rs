//! Ethernet II frames (IEEE 802.3 header without FCS).

use super::{Result, be16, need, put16};

pub use vrouter_api::MacAddr;

/// EtherType values we name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800
    Ipv4,
    /// 0x0806
    Arp,
    /// 0x8100
    Vlan,
    /// 0x86dd
    Ipv6,
    /// 0x8847 (MPLS unicast)
    Mpls,
    /// Anything else.
    Other(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x86dd => EtherType::Ipv6,
            0x8847 => EtherType::Mpls,
            o => EtherType::Other(o),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(e: EtherType) -> u16 {
        match e {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Mpls => 0x8847,
            EtherType::Other(o) => o,
        }
    }
}

/// Ethernet header length.
pub const HEADER_LEN: usize = 14;

view! {
    /// A view of an Ethernet frame.
    Frame
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps after checking the header fits.
    pub fn new_checked(buf: T) -> Result<Self> {
        need(buf.as_ref(), HEADER_LEN)?;
        Ok(Frame { buf })
    }

    /// Destination MAC.
    pub fn dst(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[0..6]);
        MacAddr(m)
    }

    /// Source MAC.
    pub fn src(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[6..12]);
        MacAddr(m)
    }

    /// EtherType.
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(be16(self.buf.as_ref(), 12))
    }

    /// Bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC.
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buf.as_mut()[0..6].copy_from_slice(&m.0);
    }

    /// Sets the source MAC.
    pub fn set_src(&mut self, m: MacAddr) {
        self.buf.as_mut()[6..12].copy_from_slice(&m.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, e: EtherType) {
        put16(self.buf.as_mut(), 12, e.into());
    }

    /// Mutable bytes after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
}

/// Parsed Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source MAC.
    pub src: MacAddr,
    /// Destination MAC.
    pub dst: MacAddr,
    /// EtherType.
    pub ethertype: EtherType,
}

impl Repr {
    /// Reads the header.
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Repr {
        Repr {
            src: f.src(),
            dst: f.dst(),
            ethertype: f.ethertype(),
        }
    }

    /// Header length.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, f: &mut Frame<T>) {
        f.set_dst(self.dst);
        f.set_src(self.src);
        f.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request frame header captured from a Linux host.
    const FRAME: [u8; 14] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06,
    ];

    #[test]
    fn parse_and_emit_round_trip() {
        let f = Frame::new_checked(&FRAME[..]).unwrap();
        let r = Repr::parse(&f);
        assert_eq!(r.dst, MacAddr::BROADCAST);
        assert_eq!(r.src, MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(r.ethertype, EtherType::Arp);
        let mut out = [0u8; 14];
        r.emit(&mut Frame::new_unchecked(&mut out[..]));
        assert_eq!(out, FRAME);
    }

    #[test]
    fn short_frame_is_truncated() {
        assert!(Frame::new_checked(&FRAME[..13]).is_err());
    }

    #[test]
    fn mac_parses_and_prints() {
        let m: MacAddr = "02:00:0a:01:02:ff".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:0a:01:02:ff");
        assert!("02:00".parse::<MacAddr>().is_err());
        assert!("02:00:0a:01:02:ff:00".parse::<MacAddr>().is_err());
        assert!("zz:00:0a:01:02:ff".parse::<MacAddr>().is_err());
    }
}
