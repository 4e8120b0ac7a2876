//! IPv6 headers (RFC 8200), with extension headers walked safely to the upper layer.

use std::net::Ipv6Addr;

use super::{IpProtocol, Result, WireError, be16, need, put16};

/// Fixed header length.
pub const HEADER_LEN: usize = 40;

/// Most extension headers we walk before giving up (a chain longer than this is refused
/// rather than walked without bound).
pub const MAX_EXT_HEADERS: usize = 8;

view! {
    /// A view of an IPv6 packet.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps after checking version 6 and that the payload length fits the buffer
    /// (trailing padding allowed).
    pub fn new_checked(buf: T) -> Result<Self> {
        need(buf.as_ref(), HEADER_LEN)?;
        let p = Packet { buf };
        if p.version() != 6 {
            return Err(WireError::Malformed);
        }
        need(p.buf.as_ref(), HEADER_LEN + usize::from(p.payload_len()))?;
        Ok(p)
    }

    /// Version field.
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[0] >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = self.buf.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        let b = self.buf.as_ref();
        (u32::from(b[1] & 0x0f) << 16) | (u32::from(b[2]) << 8) | u32::from(b[3])
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[6]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[7]
    }

    /// Source.
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[8..24]);
        Ipv6Addr::from(a)
    }

    /// Destination.
    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[24..40]);
        Ipv6Addr::from(a)
    }

    /// The payload after the fixed header (up to the payload length).
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Walks hop-by-hop, routing, destination-options and fragment headers. Returns the
    /// upper-layer protocol, the offset of its header inside `payload()`, and whether the
    /// packet is a non-first fragment (no upper-layer header to read then).
    pub fn upper_layer(&self) -> Result<(IpProtocol, usize, Fragment)> {
        let payload = self.payload();
        let mut next = self.next_header();
        let mut off = 0usize;
        let mut frag = Fragment::None;
        for _ in 0..=MAX_EXT_HEADERS {
            match next {
                // Hop-by-hop, routing, destination options: length in 8-octet units + 1.
                0 | 43 | 60 => {
                    need(payload, off + 2)?;
                    let len = (usize::from(payload[off + 1]) + 1) * 8;
                    need(payload, off + len)?;
                    next = payload[off];
                    off += len;
                }
                // Fragment header: 8 bytes; offset in the upper 13 bits of bytes 2..4, M in
                // bit 0, the identification in bytes 4..8.
                44 => {
                    need(payload, off + 8)?;
                    let fo = be16(payload, off + 2);
                    let h = FragHeader {
                        ident: u32::from_be_bytes([
                            payload[off + 4],
                            payload[off + 5],
                            payload[off + 6],
                            payload[off + 7],
                        ]),
                        offset: fo & 0xfff8,
                        more: fo & 1 != 0,
                        data: HEADER_LEN + off + 8,
                    };
                    frag = if h.offset != 0 {
                        Fragment::Later(h)
                    } else if h.more {
                        Fragment::First(h)
                    } else {
                        Fragment::None
                    };
                    next = payload[off];
                    off += 8;
                    if let Fragment::Later(_) = frag {
                        return Ok((IpProtocol::from(next), off, frag));
                    }
                }
                // No next header.
                59 => return Ok((IpProtocol::Other(59), off, frag)),
                _ => return Ok((IpProtocol::from(next), off, frag)),
            }
        }
        Err(WireError::Malformed)
    }
}

/// Fragmentation state of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented (or an atomic fragment).
    None,
    /// First fragment: holds the upper-layer header.
    First(FragHeader),
    /// A later fragment: no upper-layer header.
    Later(FragHeader),
}

impl Fragment {
    /// The fragment header, for a fragment.
    pub fn header(&self) -> Option<FragHeader> {
        match *self {
            Fragment::None => None,
            Fragment::First(h) | Fragment::Later(h) => Some(h),
        }
    }
}

/// What a fragment header says (RFC 8200 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragHeader {
    /// Identification of the datagram.
    pub ident: u32,
    /// Offset of this fragment's data in the fragmentable part, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Where this fragment's data starts, from the start of the IPv6 header.
    pub data: usize,
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version, traffic class and flow label.
    pub fn set_vtf(&mut self, tc: u8, flow: u32) {
        let b = self.buf.as_mut();
        b[0] = 0x60 | (tc >> 4);
        b[1] = (tc << 4) | ((flow >> 16) as u8 & 0x0f);
        b[2] = (flow >> 8) as u8;
        b[3] = flow as u8;
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buf.as_mut()[6] = v;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buf.as_mut()[7] = v;
    }

    /// Sets the source.
    pub fn set_src(&mut self, a: Ipv6Addr) {
        self.buf.as_mut()[8..24].copy_from_slice(&a.octets());
    }

    /// Sets the destination.
    pub fn set_dst(&mut self, a: Ipv6Addr) {
        self.buf.as_mut()[24..40].copy_from_slice(&a.octets());
    }
}

/// Parsed IPv6 header plus where the upper layer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source.
    pub src: Ipv6Addr,
    /// Destination.
    pub dst: Ipv6Addr,
    /// Upper-layer protocol (after extension headers).
    pub protocol: IpProtocol,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label.
    pub flow_label: u32,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub upper_offset: usize,
    /// Length of the upper-layer data.
    pub upper_len: usize,
    /// Fragmentation state.
    pub fragment: Fragment,
}

impl Repr {
    /// Reads the header and walks extension headers.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        let (protocol, off, fragment) = p.upper_layer()?;
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol,
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
            upper_offset: HEADER_LEN + off,
            upper_len: usize::from(p.payload_len()) - off,
            fragment,
        })
    }

    /// Writes a 40-byte header (no extension headers) for `payload_len` bytes of payload.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize) -> Result<()> {
        need(buf, HEADER_LEN)?;
        let len = u16::try_from(payload_len).map_err(|_| WireError::Malformed)?;
        let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_vtf(self.traffic_class, self.flow_label);
        p.set_payload_len(len);
        p.set_next_header(self.protocol.into());
        p.set_hop_limit(self.hop_limit);
        p.set_src(self.src);
        p.set_dst(self.dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0x00, 0x00, 0x00];
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(&[next, 64]);
        v.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn plain_udp_header() {
        let v = header(17, &[0u8; 8]);
        let r = Repr::parse(&Packet::new_checked(&v[..]).unwrap()).unwrap();
        assert_eq!(r.protocol, IpProtocol::Udp);
        assert_eq!((r.upper_offset, r.upper_len), (40, 8));
        assert_eq!(r.src, "fd00::1".parse::<Ipv6Addr>().unwrap());
        let mut out = [0u8; 40];
        r.emit(&mut out, 8).unwrap();
        assert_eq!(&out[..], &v[..40]);
    }

    #[test]
    fn extension_headers_are_skipped() {
        // Hop-by-hop (8 bytes, -> dst opts), dst opts (16 bytes, -> TCP), then 20 bytes TCP.
        let mut pl = vec![60, 0, 1, 4, 0, 0, 0, 0];
        pl.extend_from_slice(&[6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        pl.extend_from_slice(&[0u8; 20]);
        let v = header(0, &pl);
        let r = Repr::parse(&Packet::new_checked(&v[..]).unwrap()).unwrap();
        assert_eq!(r.protocol, IpProtocol::Tcp);
        assert_eq!((r.upper_offset, r.upper_len), (40 + 24, 20));
    }

    #[test]
    fn fragments_are_classified() {
        // Fragment header, offset 0, M=1 -> UDP
        let mut pl = vec![17, 0, 0x00, 0x01, 0, 0, 0, 1];
        pl.extend_from_slice(&[0u8; 8]);
        let v = header(44, &pl);
        let r = Repr::parse(&Packet::new_checked(&v[..]).unwrap()).unwrap();
        assert_eq!(r.protocol, IpProtocol::Udp);
        let h = r.fragment.header().unwrap();
        assert!(matches!(r.fragment, Fragment::First(_)));
        assert_eq!((h.ident, h.offset, h.more, h.data), (1, 0, true, 48));
        // Offset 8: later fragment.
        let pl = vec![17, 0, 0x00, 0x08, 0, 0, 0, 1, 1, 2, 3, 4];
        let v = header(44, &pl);
        let r = Repr::parse(&Packet::new_checked(&v[..]).unwrap()).unwrap();
        assert_eq!(
            r.fragment,
            Fragment::Later(FragHeader {
                ident: 1,
                offset: 8,
                more: false,
                data: 48
            })
        );
    }

    #[test]
    fn truncated_and_endless_chains_are_refused() {
        // Extension header claims more bytes than the payload has.
        let v = header(0, &[17, 5, 0, 0, 0, 0, 0, 0]);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap_err(), WireError::Truncated);
        // Ten chained destination-options headers: more than we walk.
        let mut pl = Vec::new();
        for _ in 0..10 {
            pl.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        let v = header(60, &pl);
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap_err(), WireError::Malformed);
        // Payload length beyond the buffer; wrong version.
        let mut v = header(17, &[0u8; 8]);
        v[5] = 9;
        assert_eq!(
            Packet::new_checked(&v[..]).unwrap_err(),
            WireError::Truncated
        );
        v[0] = 0x40;
        assert_eq!(
            Packet::new_checked(&v[..]).unwrap_err(),
            WireError::Malformed
        );
    }
}
