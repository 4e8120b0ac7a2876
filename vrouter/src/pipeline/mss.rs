//! TCP MSS clamping on the way into a tunnel (what TF's vrouter does for every tunnelled
//! SYN): a SYN or SYN-ACK whose MSS option would let the peer send segments that do not fit
//! the fabric once encapsulated gets the largest MSS that fits, so bulk TCP between pods
//! never depends on ICMP reaching the sender. Applied to both directions, since each
//! side's SYN is encapsulated by its own node.

use crate::wire::{checksum, tcp};

/// Option kinds.
const END: u8 = 0;
const NOP: u8 = 1;
const MSS: u8 = 2;

/// Lowers the MSS option of the TCP segment at `seg` (its header and options) to `max`.
/// True if it was changed; the TCP checksum is updated incrementally. A SYN without an MSS
/// option is left alone (the peer then assumes 536, which fits any tunnel).
pub(super) fn clamp(seg: &mut [u8], max: u16) -> bool {
    let Ok(t) = tcp::Packet::new_checked(&seg[..]) else {
        return false;
    };
    if t.flags() & tcp::flags::SYN == 0 {
        return false;
    }
    let hl = t.header_len();
    let mut i = tcp::MIN_HEADER_LEN;
    while i < hl {
        match seg[i] {
            END => return false,
            NOP => i += 1,
            kind => {
                let Some(&len) = seg.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > hl {
                    return false;
                }
                if kind == MSS && len == 4 {
                    let old = u16::from_be_bytes([seg[i + 2], seg[i + 3]]);
                    if old <= max {
                        return false;
                    }
                    seg[i + 2..i + 4].copy_from_slice(&max.to_be_bytes());
                    let c = u16::from_be_bytes([seg[16], seg[17]]);
                    seg[16..18].copy_from_slice(&checksum::update16(c, old, max).to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

/// The MSS that fits an inner IP packet of at most `ip_max` bytes (`v6`: a 40-byte IP
/// header, else 20; a TCP header of 20).
pub(super) fn fits(ip_max: usize, v6: bool) -> u16 {
    let ip = if v6 { 40 } else { 20 };
    u16::try_from(ip_max.saturating_sub(ip + tcp::MIN_HEADER_LEN)).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN with options: MSS 1460, SACK permitted, timestamps, NOP, window scale.
    fn syn(flags: u8) -> Vec<u8> {
        let mut s = vec![0u8; 40];
        s[0..2].copy_from_slice(&40000u16.to_be_bytes());
        s[2..4].copy_from_slice(&80u16.to_be_bytes());
        s[12] = 10 << 4;
        s[13] = flags;
        s[20..40].copy_from_slice(&[
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        let sum = checksum::pseudo_v4([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 6, 40);
        let c = !checksum::fold(sum + checksum::sum(&s));
        s[16..18].copy_from_slice(&c.to_be_bytes());
        s
    }

    fn valid(s: &[u8]) -> bool {
        let sum = checksum::pseudo_v4([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 6, 40);
        checksum::fold(sum + checksum::sum(s)) == 0xffff
    }

    #[test]
    fn a_syn_and_a_syn_ack_are_clamped_with_a_valid_checksum_and_others_are_not() {
        for flags in [tcp::flags::SYN, tcp::flags::SYN | tcp::flags::ACK] {
            let mut s = syn(flags);
            assert!(valid(&s));
            assert!(clamp(&mut s, 1410));
            assert_eq!(u16::from_be_bytes([s[22], s[23]]), 1410);
            assert!(valid(&s), "checksum after the clamp");
            // Already small enough: unchanged.
            let before = s.clone();
            assert!(!clamp(&mut s, 1450));
            assert_eq!(s, before);
        }
        let mut ack = syn(tcp::flags::ACK);
        assert!(!clamp(&mut ack, 1000));
        // An option list that runs past the header, or a zero length, stops the walk.
        let mut bad = syn(tcp::flags::SYN);
        bad[20..24].copy_from_slice(&[8, 0, 0, 0]);
        assert!(!clamp(&mut bad, 1000));
        let mut bad = syn(tcp::flags::SYN);
        bad[20..24].copy_from_slice(&[8, 30, 0, 0]);
        assert!(!clamp(&mut bad, 1000));
        assert!(!clamp(&mut [0u8; 10], 1000));
    }

    #[test]
    fn the_mss_that_fits_leaves_room_for_the_headers() {
        assert_eq!(fits(1500 - 50, false), 1410);
        assert_eq!(fits(1500 - 50, true), 1390);
        assert_eq!(fits(10, false), 0);
    }
}
