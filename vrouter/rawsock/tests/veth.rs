//! Frames through a real veth pair: sent on one end by a [`TxSocket`], received on the
//! other by an [`RxRing`].

use std::process::Command;

use rawsock::{RxRing, TxSocket, ifindex};

/// A veth pair removed on drop.
struct Veth(String, String);

impl Veth {
    fn new(tag: &str) -> Veth {
        let a = format!("rs{}{tag}a", std::process::id() % 100_000);
        let b = format!("rs{}{tag}b", std::process::id() % 100_000);
        let _ = Command::new("ip")
            .args(["link", "del", &a])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["link", "add", &a, "type", "veth", "peer", "name", &b])
            .status()
            .expect("ip")
            .success();
        assert!(ok, "creating veth {a}/{b}");
        for d in [&a, &b] {
            // No IPv6 router solicitations or other chatter of the host's own.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{d}/disable_ipv6"), "1");
            assert!(
                Command::new("ip")
                    .args(["link", "set", d, "up"])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        Veth(a, b)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0b]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0a]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental EtherType
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Receives until `want` frames of ours arrived or 10 s passed.
fn collect(ring: &mut RxRing, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let t = std::time::Instant::now();
    while got.len() < want && t.elapsed() < std::time::Duration::from_secs(10) {
        ring.recv(64, |f| {
            if f.data.get(12..14) == Some(&[0x88, 0xb5]) {
                got.push(f.data.to_vec());
            }
        });
        std::thread::yield_now();
    }
    got
}

#[test]
fn frames_cross_a_veth_in_order_and_intact() {
    let v = Veth::new("o");
    let mut ring = RxRing::open(ifindex(&v.1).unwrap(), 256, 1500).unwrap();
    let mut tx = TxSocket::new().unwrap();
    let out = ifindex(&v.0).unwrap();
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| frame(i, 60 + (i as usize % 1454)))
        .collect();
    let mut sent = 0;
    let mut got = Vec::new();
    for chunk in frames.chunks(50) {
        sent += tx.send(out, chunk.iter().map(Vec::as_slice));
        // Drain as we go: the ring holds 256 frames.
        got.extend(collect(&mut ring, 50));
    }
    assert_eq!(sent, 1000);
    assert_eq!(got.len(), 1000, "every frame arrives");
    assert_eq!(got, frames, "in order, byte for byte");
}

#[test]
fn a_full_ring_drops_and_counts_and_recovers() {
    let v = Veth::new("f");
    let mut ring = RxRing::open(ifindex(&v.1).unwrap(), 32, 1500).unwrap();
    assert_eq!(ring.frames(), 32);
    let _ = ring.stats();
    let mut tx = TxSocket::new().unwrap();
    let out = ifindex(&v.0).unwrap();
    let frames: Vec<Vec<u8>> = (0..64u32).map(|i| frame(i, 100)).collect();
    assert_eq!(tx.send(out, frames.iter().map(Vec::as_slice)), 64);
    // Wait until the kernel has dealt with all 64 (stored or dropped), then drain.
    let (mut seen, mut drops) = (0, 0);
    let t = std::time::Instant::now();
    while seen < 64 && t.elapsed() < std::time::Duration::from_secs(10) {
        let s = ring.stats().unwrap();
        (seen, drops) = (seen + s.packets, drops + s.drops);
    }
    assert_eq!(seen, 64, "the kernel saw every frame");
    assert_eq!(drops, 32, "and counts what the full ring could not store");
    let got = collect(&mut ring, 32);
    assert_eq!(
        got[..],
        frames[..32],
        "the ring holds the first 32, in order"
    );
    assert!(!ring.ready(), "and nothing else");
    // Room again: the next frames arrive.
    assert_eq!(tx.send(out, frames[..8].iter().map(Vec::as_slice)), 8);
    assert_eq!(collect(&mut ring, 8), frames[..8].to_vec());
}

#[test]
fn oversized_frames_are_skipped_and_the_rest_sent() {
    let v = Veth::new("m");
    let mut ring = RxRing::open(ifindex(&v.1).unwrap(), 64, 1500).unwrap();
    let mut tx = TxSocket::new().unwrap();
    let out = ifindex(&v.0).unwrap();
    let big = frame(1, 1514 + 100); // over the 1500 MTU
    let small = [frame(0, 64), frame(2, 64)];
    let sent = tx.send(
        out,
        [small[0].as_slice(), big.as_slice(), small[1].as_slice()],
    );
    assert_eq!(sent, 2);
    assert_eq!(collect(&mut ring, 2), small.to_vec());
}

#[test]
fn frames_beyond_a_ring_frame_are_marked_truncated() {
    let v = Veth::new("t");
    for d in [&v.0, &v.1] {
        assert!(
            Command::new("ip")
                .args(["link", "set", d, "mtu", "9000"])
                .status()
                .unwrap()
                .success()
        );
    }
    let mut ring = RxRing::open(ifindex(&v.1).unwrap(), 64, 1500).unwrap();
    let mut tx = TxSocket::new().unwrap();
    let jumbo = frame(7, 4000);
    assert_eq!(tx.send(ifindex(&v.0).unwrap(), [jumbo.as_slice()]), 1);
    let mut seen = None;
    let t = std::time::Instant::now();
    while seen.is_none() && t.elapsed() < std::time::Duration::from_secs(10) {
        ring.recv(8, |f| {
            if f.data.get(12..14) == Some(&[0x88, 0xb5]) {
                seen = Some((f.truncated, f.data.len()));
            }
        });
    }
    let (truncated, len) = seen.expect("the jumbo frame arrives");
    assert!(truncated && len < 4000, "{len}");
}

/// A ring opened for a 9,000-byte MTU holds full jumbo frames whole, in order, across
/// the ends of its 64 KiB blocks (several frames to a block, none straddling one).
#[test]
fn a_jumbo_ring_holds_9000_byte_frames_whole() {
    let v = Veth::new("j");
    for d in [&v.0, &v.1] {
        assert!(
            Command::new("ip")
                .args(["link", "set", d, "mtu", "9000"])
                .status()
                .unwrap()
                .success()
        );
    }
    let mut ring = RxRing::open(ifindex(&v.1).unwrap(), 64, 9000).unwrap();
    assert!(ring.max_frame() >= 9018, "{}", ring.max_frame());
    assert!(ring.frames() >= 64);
    let mut tx = TxSocket::new().unwrap();
    let out = ifindex(&v.0).unwrap();
    // More frames than the ring holds, sent in chunks and drained as they come, so the
    // ring wraps and every block boundary is crossed.
    let frames: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let mut f = frame(i, 9014 - (i as usize % 3) * 1000);
            for (j, b) in f[18..].iter_mut().enumerate() {
                *b = (j as u32).wrapping_mul(7).wrapping_add(i) as u8;
            }
            f
        })
        .collect();
    let mut got = Vec::new();
    for chunk in frames.chunks(20) {
        assert_eq!(tx.send(out, chunk.iter().map(Vec::as_slice)), chunk.len());
        got.extend(collect(&mut ring, 20));
    }
    assert_eq!(got.len(), frames.len(), "every jumbo frame arrives");
    assert!(got == frames, "whole and in order");
}

#[test]
fn a_missing_interface_is_an_error() {
    assert!(ifindex("rs-no-such-if").is_err());
    assert!(ifindex("a\0b").is_err());
    assert!(RxRing::open(0x7fff_fff0, 16, 1500).is_err());
    // Sending to an interface that does not exist sends nothing.
    let mut tx = TxSocket::new().unwrap();
    assert_eq!(tx.send(0x7fff_fff0, [frame(0, 64).as_slice()]), 0);
}
