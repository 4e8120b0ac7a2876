//! The Internet checksum (RFC 1071), pseudo-headers, and incremental update (RFC 1624)
//! for rewriting addresses and ports without summing the whole packet again.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Ones'-complement sum of `data` as big-endian 16-bit words (odd tail padded with zero),
/// not yet folded. Add partial sums with `+`; fold with [`fold`].
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Four 16-bit words at a time; a u64 accumulator cannot overflow for any frame.
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]))
            + u64::from(u16::from_be_bytes([c[2], c[3]]))
            + u64::from(u16::from_be_bytes([c[4], c[5]]))
            + u64::from(u16::from_be_bytes([c[6], c[7]]));
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit partial sum into 16 bits (not complemented).
pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum to store for `data` (complement of the folded sum).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Partial sum of the IPv4 pseudo-header for TCP/UDP.
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + u32::from(proto) + u32::from(len)
}

/// Partial sum of the IPv6 pseudo-header for TCP/UDP/ICMPv6.
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + (len >> 16) + (len & 0xffff) + u32::from(next_header)
}

/// Updates checksum `hc` for a 16-bit field changing from `old` to `new`:
/// HC' = ~(~HC + ~m + m') (RFC 1624, eqn. 3), which avoids the -0 pitfall of RFC 1141.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!hc) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// Updates checksum `hc` for a 32-bit field (an IPv4 address) changing from `old` to `new`.
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!hc)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

/// Updates checksum `hc` for a byte range changing from `old` to `new` (same even length).
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let s = u32::from(!hc) + u32::from(!fold(sum(old))) + sum(new);
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        assert_eq!(
            fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        let mut data =
            *b"\x45\x00\x00\x54\x12\x34\x40\x00\x40\x01\x00\x00\xc0\xa8\x00\x01\xc0\xa8\x00\xc7";
        let c0 = checksum(&data);
        data[10..12].copy_from_slice(&c0.to_be_bytes());
        let old = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
        let new = u32::from_be_bytes([10, 1, 2, 3]);
        data[12..16].copy_from_slice(&new.to_be_bytes());
        let inc = update32(c0, old, new);
        data[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc, checksum(&data));
    }

    #[test]
    fn update16_never_yields_negative_zero_for_valid_data() {
        // A header whose sum folds to 0xffff before the change.
        let hc = 0x0000;
        assert_eq!(update16(hc, 0x0000, 0x0000), 0x0000);
    }
}
