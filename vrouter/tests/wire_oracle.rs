//! Our wire views checked against an independent decoder/encoder (etherparse), both ways,
//! and against arbitrary bytes (never a panic).

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use vrouter::wire::{self, EtherType, IpProtocol, MacAddr, checksum};

const SMAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DMAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn udp4_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SMAC, DMAC)
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

fn tcp6_frame(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SMAC, DMAC)
        .ipv6(src, dst, 32)
        .tcp(sport, dport, 12345, 4096)
        .syn();
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

#[test]
fn etherparse_udp4_frame_reads_the_same_with_our_views() {
    let f = udp4_frame([10, 1, 1, 3], [10, 1, 1, 4], 33000, 53, b"hello vrouter");
    let eth = wire::ethernet::Frame::new_checked(&f[..]).unwrap();
    assert_eq!(eth.src(), MacAddr(SMAC));
    assert_eq!(eth.ethertype(), EtherType::Ipv4);
    let ip = wire::ipv4::Packet::new_checked(eth.payload()).unwrap();
    let r = wire::ipv4::Repr::parse(&ip).unwrap();
    assert_eq!(
        (r.src, r.dst, r.ttl),
        (Ipv4Addr::new(10, 1, 1, 3), Ipv4Addr::new(10, 1, 1, 4), 64)
    );
    assert_eq!(r.protocol, IpProtocol::Udp);
    let udp = wire::udp::Packet::new_checked(ip.payload()).unwrap();
    let ps = checksum::pseudo_v4(r.src, r.dst, 17, udp.len());
    assert!(
        udp.verify_checksum(ps),
        "etherparse's UDP checksum verifies with ours"
    );
    assert_eq!((udp.src_port(), udp.dst_port()), (33000, 53));
    assert_eq!(udp.payload(), b"hello vrouter");
}

#[test]
fn etherparse_tcp6_frame_reads_the_same_with_our_views() {
    let src: Ipv6Addr = "fd00:1::3".parse().unwrap();
    let dst: Ipv6Addr = "fd00:1::4".parse().unwrap();
    let f = tcp6_frame(src.octets(), dst.octets(), 40000, 443, b"x");
    let eth = wire::ethernet::Frame::new_checked(&f[..]).unwrap();
    assert_eq!(eth.ethertype(), EtherType::Ipv6);
    let ip = wire::ipv6::Packet::new_checked(eth.payload()).unwrap();
    let r = wire::ipv6::Repr::parse(&ip).unwrap();
    assert_eq!((r.src, r.dst, r.protocol), (src, dst, IpProtocol::Tcp));
    let seg = &eth.payload()[r.upper_offset..r.upper_offset + r.upper_len];
    let tcp = wire::tcp::Packet::new_checked(seg).unwrap();
    let ps = checksum::pseudo_v6(src, dst, 6, r.upper_len as u32);
    assert!(tcp.verify_checksum(ps));
    assert_eq!(tcp.flags() & wire::tcp::flags::SYN, wire::tcp::flags::SYN);
    assert_eq!(
        (tcp.src_port(), tcp.dst_port(), tcp.seq()),
        (40000, 443, 12345)
    );
}

/// Builds Ethernet + IPv4 + UDP with our emitters; etherparse must decode it with valid
/// checksums.
fn our_udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + payload.len()];
    wire::ethernet::Repr {
        src: MacAddr(SMAC),
        dst: MacAddr(DMAC),
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut f[..]));
    wire::ipv4::Repr {
        src,
        dst,
        protocol: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        ttl: 64,
        tos: 0,
        ident: 7,
        dont_frag: true,
        fragment: false,
        first_fragment: true,
    }
    .emit(&mut f[14..])
    .unwrap();
    wire::udp::Repr {
        src_port: sport,
        dst_port: dport,
        payload_len: payload.len(),
    }
    .emit(&mut f[34..])
    .unwrap();
    f[42..].copy_from_slice(payload);
    let mut u = wire::udp::Packet::new_unchecked(&mut f[34..]);
    u.fill_checksum(checksum::pseudo_v4(
        src,
        dst,
        17,
        (8 + payload.len()) as u16,
    ));
    f
}

fn etherparse_udp4(f: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16, Vec<u8>) {
    let p = SlicedPacket::from_ethernet(f).expect("etherparse decodes our frame");
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4")
    };
    let h = ip.header();
    let Some(TransportSlice::Udp(u)) = p.transport else {
        panic!("not UDP")
    };
    let hdr = h.to_header();
    assert_eq!(
        hdr.header_checksum,
        hdr.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let expect = u.to_header().calc_checksum_ipv4(&hdr, u.payload()).unwrap();
    assert_eq!(u.checksum(), expect, "UDP checksum");
    (
        h.source_addr(),
        h.destination_addr(),
        u.source_port(),
        u.destination_port(),
        u.payload().to_vec(),
    )
}

#[test]
fn our_udp4_frame_decodes_with_etherparse() {
    let f = our_udp4(
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::new(198, 51, 100, 7),
        6635,
        6635,
        b"mpls",
    );
    let (s, d, sp, dp, pl) = etherparse_udp4(&f);
    assert_eq!(
        (s, d, sp, dp),
        (
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(198, 51, 100, 7),
            6635,
            6635
        )
    );
    assert_eq!(pl, b"mpls");
}

proptest! {
    #[test]
    fn udp4_round_trips_through_etherparse(
        src in any::<u32>(), dst in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
        let f = our_udp4(src, dst, sp, dp, &payload);
        let got = etherparse_udp4(&f);
        prop_assert_eq!(got, (src, dst, sp, dp, payload.clone()));
        // And back through our own parser from etherparse's bytes.
        let theirs = udp4_frame(src.octets(), dst.octets(), sp, dp, &payload);
        let ip = wire::ipv4::Packet::new_checked(&theirs[14..]).unwrap();
        let r = wire::ipv4::Repr::parse(&ip).unwrap();
        prop_assert_eq!((r.src, r.dst), (src, dst));
        let u = wire::udp::Packet::new_checked(ip.payload()).unwrap();
        prop_assert!(u.verify_checksum(checksum::pseudo_v4(src, dst, 17, u.len())));
    }

    #[test]
    fn nat_rewrite_keeps_l3_and_l4_checksums_valid(
        src in any::<u32>(), new_src in any::<u32>(), sp in any::<u16>(), new_sp in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let dst = Ipv4Addr::new(10, 0, 0, 1);
        let mut f = our_udp4(Ipv4Addr::from(src), dst, sp, 80, &payload);
        let mut ip = wire::ipv4::Packet::new_checked(&mut f[14..]).unwrap();
        let (old, new) = ip.rewrite_src(Ipv4Addr::from(new_src));
        let mut u = wire::udp::Packet::new_checked(ip.payload_mut()).unwrap();
        let c = checksum::update32(u.checksum(), old, new);
        let c = checksum::update16(c, u.src_port(), new_sp);
        u.set_src_port(new_sp);
        u.set_checksum(c);
        let (s, _, p, _, pl) = etherparse_udp4(&f);
        prop_assert_eq!((s, p, pl), (Ipv4Addr::from(new_src), new_sp, payload));
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let b = &bytes[..];
        if let Ok(f) = wire::ethernet::Frame::new_checked(b) { let _ = wire::ethernet::Repr::parse(&f); }
        if let Ok(t) = wire::vlan::Tag::new_checked(b) { let _ = wire::vlan::Repr::parse(&t); }
        if let Ok(p) = wire::arp::Packet::new_checked(b) { let _ = wire::arp::Repr::parse(&p); }
        if let Ok(p) = wire::ipv4::Packet::new_checked(b) { let _ = wire::ipv4::Repr::parse(&p); let _ = p.payload(); }
        if let Ok(p) = wire::ipv6::Packet::new_checked(b) { let _ = wire::ipv6::Repr::parse(&p); }
        if let Ok(p) = wire::udp::Packet::new_checked(b) { let _ = p.payload(); let _ = p.verify_checksum(0); }
        if let Ok(p) = wire::tcp::Packet::new_checked(b) { let _ = p.payload(); let _ = wire::tcp::Repr::parse(&p); }
        if let Ok(p) = wire::icmp::Packet::new_checked(b) { let _ = wire::icmp::NdpRepr::parse(&p); }
        let _ = wire::mpls::Repr::parse(b);
        let _ = wire::gre::Repr::parse(b);
        let _ = wire::vxlan::Repr::parse(b);
    }
}
