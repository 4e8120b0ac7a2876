//! Frame sizes (fixed or IMIX) and the UDP frames the scenarios send.
//!
//! Sizes are Ethernet frame sizes as RFC 2544 counts them: with the 4-byte FCS, which the
//! captures do not hold. A "64-byte" frame is 60 bytes in the pcap file.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use vrouter::testbed;
use vrouter::wire::MacAddr;

/// Ethernet FCS, counted in frame sizes but absent from captures.
pub const FCS: usize = 4;
/// Preamble, start delimiter and inter-frame gap: what a frame costs on the wire beyond
/// its size.
pub const WIRE_OVERHEAD: usize = 20;

/// Simple IMIX (7:4:1 of 64, 570 and 1518 bytes), in an order that spreads the sizes.
pub const IMIX: [usize; 12] = [64, 570, 64, 64, 570, 64, 1518, 64, 570, 64, 64, 570];

/// A frame size or the IMIX mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Size {
    /// Every frame this long (FCS included).
    Fixed(usize),
    /// The simple IMIX.
    Imix,
}

impl Size {
    /// The sizes the capture cycles through.
    pub fn pattern(&self) -> Vec<usize> {
        match self {
            Size::Fixed(n) => vec![*n],
            Size::Imix => IMIX.to_vec(),
        }
    }

    /// Mean frame size.
    pub fn mean(&self) -> f64 {
        let p = self.pattern();
        p.iter().sum::<usize>() as f64 / p.len() as f64
    }

    /// Raises fixed sizes below `min` to `min` (a scenario's smallest valid frame).
    pub fn at_least(self, min: usize) -> Size {
        match self {
            Size::Fixed(n) if n < min => Size::Fixed(min),
            s => s,
        }
    }

    /// Bits per second on the wire at `pps` packets per second.
    pub fn gbps(&self, pps: f64) -> f64 {
        pps * (self.mean() + WIRE_OVERHEAD as f64) * 8.0 / 1e9
    }

    /// X axis position for plots (IMIX at its mean size).
    pub fn x(&self) -> f64 {
        self.mean()
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Fixed(n) => write!(f, "{n}"),
            Size::Imix => f.write_str("imix"),
        }
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Size, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(Size::Imix);
        }
        let n: usize = s
            .parse()
            .map_err(|_| format!("{s:?}: a frame size is a number of bytes or \"imix\""))?;
        if !(64..=1518).contains(&n) {
            return Err(format!("{n}: frame sizes go from 64 to 1518 bytes"));
        }
        Ok(Size::Fixed(n))
    }
}

/// A UDP frame from vm1 to the vrouter (its gateway) for `dst`, `len` bytes long without
/// FCS (the payload pads it; at least 42 + 4 bytes).
pub fn vm1_udp(dst: Ipv4Addr, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len.saturating_sub(42).max(4)];
    testbed::vm1_udp(dst, sport, dport, &payload)
}

/// An IPv4 UDP packet (no Ethernet header) of `len` bytes, for tunnels that carry IP.
pub fn ip_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len.saturating_sub(28).max(4)];
    let f = testbed::ipv4_frame(
        MacAddr::ZERO,
        MacAddr::ZERO,
        src,
        dst,
        17,
        sport,
        dport,
        0,
        &payload,
    );
    f[14..].to_vec()
}

/// Spreads flow number `i` over `hosts` destination hosts and source ports from 1024:
/// (host index, source port). Distinct `i` below `hosts * 64512` give distinct pairs.
pub fn spread(i: u32, hosts: u32) -> (u32, u16) {
    (i % hosts, 1024 + ((i / hosts) % 64512) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_measure() {
        assert_eq!("64".parse::<Size>(), Ok(Size::Fixed(64)));
        assert_eq!("IMIX".parse::<Size>(), Ok(Size::Imix));
        assert!("63".parse::<Size>().is_err());
        assert!("1519".parse::<Size>().is_err());
        assert!("big".parse::<Size>().is_err());
        // 7 x 64 + 4 x 570 + 1518 over 12.
        assert!((Size::Imix.mean() - (7.0 * 64.0 + 4.0 * 570.0 + 1518.0) / 12.0).abs() < 1e-9);
        // 64-byte frames at 14.88 Mpps fill 10 Gbit/s.
        assert!((Size::Fixed(64).gbps(14_880_952.0) - 10.0).abs() < 0.001);
        assert_eq!(Size::Fixed(64).at_least(78), Size::Fixed(78));
        assert_eq!(Size::Imix.at_least(78), Size::Imix);
    }

    #[test]
    fn frames_have_the_asked_length_and_parse() {
        for len in [60, 124, 1514] {
            let f = vm1_udp(Ipv4Addr::new(10, 1, 2, 1), 1024, 9001, len);
            assert_eq!(f.len(), len);
            let p = etherparse_free_check(&f);
            assert_eq!(p, 17);
        }
        let p = ip_udp(
            Ipv4Addr::new(10, 1, 2, 5),
            Ipv4Addr::new(10, 1, 1, 3),
            5,
            6,
            100,
        );
        assert_eq!(p.len(), 100);
        assert_eq!(p[0] >> 4, 4);
    }

    /// The IP protocol of an Ethernet + IPv4 frame, checked with our own parser.
    fn etherparse_free_check(f: &[u8]) -> u8 {
        let ip = vrouter::wire::ipv4::Packet::new_checked(&f[14..]).expect("valid IPv4");
        ip.protocol().into()
    }

    #[test]
    fn spread_is_distinct() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..300_000 {
            assert!(seen.insert(spread(i, 250)));
        }
    }
}
