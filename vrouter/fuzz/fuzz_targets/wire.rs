//! Every wire parser on arbitrary bytes: no panic, and what parses re-emits consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vrouter::wire;

fuzz_target!(|b: &[u8]| {
    if let Ok(f) = wire::ethernet::Frame::new_checked(b) {
        let _ = wire::ethernet::Repr::parse(&f);
    }
    if let Ok(t) = wire::vlan::Tag::new_checked(b) {
        let _ = wire::vlan::Repr::parse(&t);
    }
    if let Ok(p) = wire::arp::Packet::new_checked(b) {
        if let Ok(r) = wire::arp::Repr::parse(&p) {
            let mut out = [0u8; wire::arp::PACKET_LEN];
            r.emit(&mut out).expect("a parsed ARP packet re-emits");
            assert_eq!(&out[..], &b[..wire::arp::PACKET_LEN]);
        }
    }
    if let Ok(p) = wire::ipv4::Packet::new_checked(b) {
        let _ = wire::ipv4::Repr::parse(&p);
        let _ = p.payload();
    }
    if let Ok(p) = wire::ipv6::Packet::new_checked(b) {
        if let Ok(r) = wire::ipv6::Repr::parse(&p) {
            assert!(r.upper_offset + r.upper_len <= b.len());
        }
    }
    if let Ok(p) = wire::udp::Packet::new_checked(b) {
        let _ = p.payload();
    }
    if let Ok(p) = wire::tcp::Packet::new_checked(b) {
        let _ = p.payload();
    }
    if let Ok(p) = wire::icmp::Packet::new_checked(b) {
        let _ = wire::icmp::NdpRepr::parse(&p);
    }
    let _ = wire::mpls::Repr::parse(b);
    let _ = wire::gre::Repr::parse(b);
    let _ = wire::vxlan::Repr::parse(b);
});
