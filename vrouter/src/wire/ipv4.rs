//! IPv4 headers (RFC 791), with options carried opaquely and fragments flagged.

use std::net::Ipv4Addr;

use super::checksum;
use super::{IpProtocol, Result, WireError, be16, need, put16};

/// Header length without options.
pub const MIN_HEADER_LEN: usize = 20;

view! {
    /// A view of an IPv4 packet.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps after checking: version 4, IHL >= 5, header and total length within the
    /// buffer, total length >= header length. Trailing bytes beyond the total length (an
    /// Ethernet pad) are allowed; `payload` excludes them.
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        need(b, MIN_HEADER_LEN)?;
        let p = Packet { buf };
        if p.version() != 4 {
            return Err(WireError::Malformed);
        }
        let hl = p.header_len();
        let tl = usize::from(p.total_len());
        if hl < MIN_HEADER_LEN || tl < hl {
            return Err(WireError::Malformed);
        }
        need(p.buf.as_ref(), tl)?;
        Ok(p)
    }

    /// Version field.
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[0] >> 4
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[0] & 0x0f) * 4
    }

    /// DSCP and ECN byte.
    pub fn tos(&self) -> u8 {
        self.buf.as_ref()[1]
    }

    /// Total length.
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        be16(self.buf.as_ref(), 6) & 0x4000 != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        be16(self.buf.as_ref(), 6) & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buf.as_ref(), 6) & 0x1fff) << 3
    }

    /// True for any fragment (first, middle or last).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[8]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buf.as_ref()[9])
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 10)
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.buf.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// True when the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        cfg!(fuzzing)
            || checksum::fold(checksum::sum(&self.buf.as_ref()[..self.header_len()])) == 0xffff
    }

    /// The payload (up to total length; padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length (a multiple of 4, 20..=60).
    pub fn set_version_ihl(&mut self, header_len: usize) {
        self.buf.as_mut()[0] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP/ECN byte.
    pub fn set_tos(&mut self, v: u8) {
        self.buf.as_mut()[1] = v;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v);
    }

    /// Sets flags and fragment offset: DF, MF, offset in bytes (multiple of 8).
    pub fn set_frag(&mut self, df: bool, mf: bool, offset: u16) {
        let v = (u16::from(df) << 14) | (u16::from(mf) << 13) | ((offset >> 3) & 0x1fff);
        put16(self.buf.as_mut(), 6, v);
    }

    /// Sets the TTL (checksum not updated).
    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[8] = v;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buf.as_mut()[9] = p.into();
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 10, v);
    }

    /// Sets the source address (checksum not updated).
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[12..16].copy_from_slice(&a.octets());
    }

    /// Sets the destination address (checksum not updated).
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[16..20].copy_from_slice(&a.octets());
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buf.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Decrements the TTL and updates the checksum incrementally. Returns the new TTL.
    pub fn decrement_ttl(&mut self) -> u8 {
        let b = self.buf.as_ref();
        let old = be16(b, 8);
        let ttl = b[8].saturating_sub(1);
        let new = (u16::from(ttl) << 8) | (old & 0xff);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_ttl(ttl);
        self.set_checksum(c);
        ttl
    }

    /// Rewrites the source address, updating the header checksum; returns the checksum
    /// delta inputs (old, new) for the L4 checksum too.
    pub fn rewrite_src(&mut self, a: Ipv4Addr) -> (u32, u32) {
        let old = u32::from(self.src());
        let new = u32::from(a);
        let c = checksum::update32(self.checksum(), old, new);
        self.set_src(a);
        self.set_checksum(c);
        (old, new)
    }

    /// Rewrites the destination address, updating the header checksum.
    pub fn rewrite_dst(&mut self, a: Ipv4Addr) -> (u32, u32) {
        let old = u32::from(self.dst());
        let new = u32::from(a);
        let c = checksum::update32(self.checksum(), old, new);
        self.set_dst(a);
        self.set_checksum(c);
        (old, new)
    }

    /// Mutable payload (up to total length).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buf.as_mut()[hl..tl]
    }
}

/// Parsed IPv4 header (options are not kept; `header_len` says how long they were).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Payload length (total length minus header).
    pub payload_len: usize,
    /// TTL.
    pub ttl: u8,
    /// DSCP/ECN.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't fragment.
    pub dont_frag: bool,
    /// This is a fragment: ports of TCP/UDP are only in the first one.
    pub fragment: bool,
    /// First fragment (offset 0) or not a fragment.
    pub first_fragment: bool,
}

impl Repr {
    /// The outer header of a tunnel packet: TTL 64, don't-fragment, identification 0.
    pub fn tunnel(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload_len: usize) -> Repr {
        Repr {
            src,
            dst,
            protocol,
            payload_len,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
            fragment: false,
            first_fragment: true,
        }
    }

    /// Reads the header, refusing a bad checksum. Options are accepted and skipped;
    /// fragments are accepted and flagged.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        if !p.verify_checksum() {
            return Err(WireError::Checksum);
        }
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - p.header_len(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            fragment: p.is_fragment(),
            first_fragment: p.frag_offset() == 0,
        })
    }

    /// Length of the header `emit` writes (no options).
    pub const fn header_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Writes a 20-byte header with checksum into the front of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        need(buf, MIN_HEADER_LEN)?;
        let total = MIN_HEADER_LEN + self.payload_len;
        let total = u16::try_from(total).map_err(|_| WireError::Malformed)?;
        let mut p = Packet::new_unchecked(&mut buf[..MIN_HEADER_LEN]);
        p.set_version_ihl(MIN_HEADER_LEN);
        p.set_tos(self.tos);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_frag(self.dont_frag, false, 0);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src);
        p.set_dst(self.dst);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ICMP echo 192.168.0.1 -> 192.168.0.199, captured with tcpdump, 84 bytes total
    // (header only here plus the first payload bytes, total length adjusted to match).
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x1c, 0x1f, 0x3a, 0x40, 0x00, 0x40, 0x01, 0x99, 0xdf, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn packet() -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v.extend_from_slice(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0]); // echo request, 8 bytes
        let c = checksum::checksum(&v[..20]);
        v[10..12].copy_from_slice(&[0, 0]);
        let c2 = checksum::checksum(&v[..20]);
        assert!(c == 0 || c2 != 0);
        v[10..12].copy_from_slice(&c2.to_be_bytes());
        v
    }

    #[test]
    fn deconstruct() {
        let v = packet();
        let p = Packet::new_checked(&v[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r.src, Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(r.dst, Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(r.protocol, IpProtocol::Icmp);
        assert_eq!(r.payload_len, 8);
        assert!(r.dont_frag && !r.fragment);
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn emit_matches_parsed_bytes() {
        let v = packet();
        let r = Repr::parse(&Packet::new_checked(&v[..]).unwrap()).unwrap();
        let mut out = [0u8; 20];
        r.emit(&mut out).unwrap();
        assert_eq!(&out[..], &v[..20]);
    }

    #[test]
    fn padding_beyond_total_length_is_excluded() {
        let mut v = packet();
        v.extend_from_slice(&[0xee; 18]); // Ethernet minimum-size pad
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn negative_cases() {
        let v = packet();
        assert_eq!(
            Packet::new_checked(&v[..19]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad = v.clone();
        bad[0] = 0x65; // version 6
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut bad = v.clone();
        bad[0] = 0x44; // IHL 4 (16 bytes)
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut bad = v.clone();
        bad[3] = 0xff; // total length beyond the buffer
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad = v.clone();
        bad[3] = 19; // total length shorter than the header
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut bad = v.clone();
        bad[11] ^= 1;
        let p = Packet::new_checked(&bad[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap_err(), WireError::Checksum);
    }

    #[test]
    fn options_are_skipped_and_fragments_flagged() {
        let mut v = vec![
            0x46, 0, 0, 28, 0, 1, 0x20, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        v.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        v.extend_from_slice(&[0xaa; 4]);
        let c = checksum::checksum(&v[..24]);
        v[10..12].copy_from_slice(&c.to_be_bytes());
        let p = Packet::new_checked(&v[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload(), &[0xaa; 4]);
        assert!(r.fragment && r.first_fragment);
    }

    #[test]
    fn ttl_and_address_rewrites_keep_the_checksum_valid() {
        let mut v = packet();
        let mut p = Packet::new_checked(&mut v[..]).unwrap();
        assert_eq!(p.decrement_ttl(), 63);
        p.rewrite_src(Ipv4Addr::new(10, 9, 8, 7));
        p.rewrite_dst(Ipv4Addr::new(172, 16, 0, 1));
        assert!(p.verify_checksum());
        let r = Repr::parse(&p).unwrap();
        assert_eq!((r.ttl, r.src), (63, Ipv4Addr::new(10, 9, 8, 7)));
    }
}
