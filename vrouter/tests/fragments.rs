//! Fragments through the whole pipeline: later fragments follow their first one's flow
//! (its policy decision, its NAT, its nexthop), in order or not; overlaps and tiny
//! fragments are dropped; packets too big for the tunnel are cut (IPv4, DF clear) or
//! answered (ICMPv6 "packet too big"). Every datagram that comes out is put back together
//! by etherparse's reassembler, an independent one, and compared with what went in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use etherparse::defrag::IpDefragPool;
use etherparse::{Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use vrouter::flow::frag::HOLD_MS;
use vrouter::pipeline::{Disposition, DropReason};
use vrouter::policy::{Action, Policy, Rule, RuleSet};
use vrouter::tables::{GlobalConfig, RouteEntry, TunnelKind};
use vrouter::testbed::*;
use vrouter::wire::{self, MacAddr, checksum};

const VM1_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3);
const VM2_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 4);
const REMOTE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 5);
/// MPLSoUDP leaves 1500 - 20 - 8 - 4 bytes of the fabric for the inner packet.
const ROOM: usize = 1468;

fn gw() -> MacAddr {
    GlobalConfig::default().vrouter_mac
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A UDP datagram from vm1 (Ethernet + IPv4, DF clear) with IP identification `ident`.
fn udp4(dst: Ipv4Addr, dport: u16, ident: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vm1_udp(dst, 4000, dport, payload);
    let mut ip = wire::ipv4::Packet::new_unchecked(&mut f[14..]);
    ip.set_ident(ident);
    ip.set_frag(false, false, 0);
    ip.fill_checksum();
    f
}

/// Cuts an Ethernet + IPv4 frame (no options) into fragments of `chunk` data bytes.
fn fragment4(frame: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let data = &frame[34..14 + total];
    data.chunks(chunk)
        .enumerate()
        .map(|(k, piece)| {
            let mut f = frame[..34].to_vec();
            f.extend_from_slice(piece);
            let mut ip = wire::ipv4::Packet::new_unchecked(&mut f[14..]);
            ip.set_total_len((20 + piece.len()) as u16);
            ip.set_frag(false, (k + 1) * chunk < data.len(), (k * chunk) as u16);
            ip.fill_checksum();
            f
        })
        .collect()
}

/// A UDP datagram from vm1 over IPv6.
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(VM1_MAC.0, gw().0)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(4000, dport);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

/// Cuts an Ethernet + IPv6 frame (no extension headers) into fragments of `chunk` bytes,
/// each with a fragment header of identification `ident`.
fn fragment6(frame: &[u8], chunk: usize, ident: u32) -> Vec<Vec<u8>> {
    let next = frame[20];
    let data = &frame[54..];
    data.chunks(chunk)
        .enumerate()
        .map(|(k, piece)| {
            let mut f = frame[..54].to_vec();
            f[20] = 44;
            f[18..20].copy_from_slice(&((8 + piece.len()) as u16).to_be_bytes());
            let more = (k + 1) * chunk < data.len();
            let off = (k * chunk) as u16 | u16::from(more);
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&off.to_be_bytes());
            f.extend_from_slice(&ident.to_be_bytes());
            f.extend_from_slice(piece);
            f
        })
        .collect()
}

/// Puts the datagrams among `packets` back together with etherparse (`ip`: bare IP
/// packets, else Ethernet frames), checking every IPv4 header checksum; returns each
/// complete datagram's payload.
fn reassemble(packets: &[Vec<u8>], ip: bool) -> Vec<Vec<u8>> {
    let mut pool = IpDefragPool::<(), ()>::new();
    packets
        .iter()
        .filter_map(|f| {
            let s = if ip {
                SlicedPacket::from_ip(f)
            } else {
                SlicedPacket::from_ethernet(f)
            }
            .expect("etherparse decodes it");
            if let Some(NetSlice::Ipv4(v4)) = &s.net {
                let h = v4.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
            }
            pool.process_sliced_packet(&s, (), ())
                .expect("the fragments fit together")
                .map(|p| p.payload)
        })
        .collect()
}

fn out(results: &[(Disposition, Vec<u8>)]) -> Vec<Vec<u8>> {
    results.iter().map(|(_, b)| b.clone()).collect()
}

fn dispositions(results: &[(Disposition, Vec<u8>)]) -> Vec<Disposition> {
    results.iter().map(|(d, _)| *d).collect()
}

#[test]
fn ipv4_fragments_follow_their_first_ones_flow_in_order_or_not() {
    let mut tb = Testbed::new(1024);
    let datagram = udp4(VM2_IP, 53, 1, &pattern(4000));
    let frags = fragment4(&datagram, 1480);
    assert_eq!(frags.len(), 3);
    let r = tb.run(VM1, &frags, 1);
    assert_eq!(dispositions(&r), [Disposition::Tx(VM2); 3]);
    assert_eq!(reassemble(&out(&r), false), [datagram[34..].to_vec()]);
    assert_eq!(tb.pipeline.stats.fragments, 3);
    assert_eq!(
        tb.pipeline.stats.flows_created, 1,
        "one flow for the datagram"
    );

    // The later fragments first: held, then sent right after their first one.
    let datagram = udp4(VM2_IP, 53, 2, &pattern(4000));
    let frags = fragment4(&datagram, 1480);
    let r = tb.run(VM1, &[frags[2].clone(), frags[1].clone()], 2);
    assert_eq!(dispositions(&r), [Disposition::Hold; 2]);
    assert_eq!(tb.pipeline.stats.frag_held, 2);
    let mut r = tb.run(VM1, &frags[..1], 3);
    let released = tb.released(3);
    assert_eq!(dispositions(&released), [Disposition::Tx(VM2); 2]);
    r.extend(released);
    assert_eq!(dispositions(&r)[0], Disposition::Tx(VM2));
    assert_eq!(reassemble(&out(&r), false), [datagram[34..].to_vec()]);
    assert_eq!(tb.pipeline.stats.frag_released, 2);

    // A fragment whose first one never comes is dropped once its time is up.
    let lost = fragment4(&udp4(VM2_IP, 53, 3, &pattern(4000)), 1480);
    assert_eq!(tb.run_one(VM1, lost[1].clone(), 4).0, Disposition::Hold);
    tb.pipeline.expire_fragments(4 + HOLD_MS - 1);
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::FragmentTimeout), 0);
    tb.pipeline.expire_fragments(4 + HOLD_MS);
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::FragmentTimeout), 1);
    assert!(tb.released(5).is_empty());
}

fn vm2_allows_only_udp(tb: &mut Testbed, port: u16) {
    let mut vm2 = tb.writer.tables().vifs.get(VM2.0).unwrap().as_ref().clone();
    vm2.policy = Some(Arc::new(Policy {
        ingress: vec![RuleSet::new(
            "udp-only",
            vec![Rule {
                proto: Some(17),
                dport: (port, port),
                ..Rule::any(Action::Pass)
            }],
            Action::Deny,
            false,
        )],
        egress: vec![],
    }));
    tb.writer.add_vif(vm2).unwrap();
    tb.writer.publish();
}

#[test]
fn policy_on_ports_decides_every_fragment_of_a_datagram() {
    let mut tb = Testbed::new(1024);
    vm2_allows_only_udp(&mut tb, 53);
    let allowed = fragment4(&udp4(VM2_IP, 53, 10, &pattern(3000)), 1480);
    let r = tb.run(VM1, &allowed, 1);
    assert_eq!(dispositions(&r), [Disposition::Tx(VM2); 3]);

    // To another port: the first fragment is denied, and so is every later one, though
    // they carry no port.
    let denied = fragment4(&udp4(VM2_IP, 54, 11, &pattern(3000)), 1480);
    let r = tb.run(VM1, &denied, 2);
    assert_eq!(
        dispositions(&r),
        [Disposition::Drop(DropReason::PolicyDeny); 3]
    );
    // Also when they come first and wait for it.
    let denied = fragment4(&udp4(VM2_IP, 54, 12, &pattern(3000)), 1480);
    let r = tb.run(VM1, &[denied[1].clone(), denied[2].clone()], 3);
    assert_eq!(dispositions(&r), [Disposition::Hold; 2]);
    let r = tb.run(VM1, &denied[..1], 4);
    assert_eq!(
        dispositions(&r),
        [Disposition::Drop(DropReason::PolicyDeny)]
    );
    assert_eq!(
        dispositions(&tb.released(4)),
        [Disposition::Drop(DropReason::PolicyDeny); 2]
    );
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::PolicyDeny), 6);
    assert_eq!(tb.pipeline.stats.forwarded, 3);
}

#[test]
fn overlapping_and_tiny_fragments_are_dropped_and_counted() {
    let mut tb = Testbed::new(1024);
    // RFC 1858: a second fragment that overlaps the first one's transport header.
    let datagram = udp4(VM2_IP, 53, 20, &pattern(200));
    let frags = fragment4(&datagram, 64);
    let mut overlap = fragment4(&datagram, 56)[1].clone();
    overlap[34..42].fill(0xee);
    let r = tb.run(VM1, &[frags[0].clone(), overlap, frags[1].clone()], 1);
    assert_eq!(
        dispositions(&r),
        [
            Disposition::Tx(VM2),
            Disposition::Drop(DropReason::FragmentOverlap),
            Disposition::Drop(DropReason::FragmentOverlap),
        ],
        "once spoiled, the rest of the datagram is dropped"
    );
    // A duplicate is an overlap too.
    let frags = fragment4(&udp4(VM2_IP, 53, 21, &pattern(200)), 64);
    let r = tb.run(VM1, &[frags[0].clone(), frags[0].clone()], 2);
    assert_eq!(
        dispositions(&r)[1],
        Disposition::Drop(DropReason::FragmentOverlap)
    );
    // A TCP fragment at offset 8 could rewrite the flags of the first one's header.
    let syn = ipv4_frame(
        VM1_MAC,
        gw(),
        VM1_IP,
        VM2_IP,
        6,
        4000,
        80,
        0x02,
        &pattern(64),
    );
    let mut tiny = fragment4(&syn, 8)[1].clone();
    tiny[14 + 9] = 6;
    let (d, _) = tb.run_one(VM1, tiny, 3);
    assert_eq!(d, Disposition::Drop(DropReason::FragmentTiny));
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::FragmentOverlap), 3);
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::FragmentTiny), 1);
}

/// The inner IP packet of one of our MPLSoUDP frames to node B.
fn inner_of(frame: &[u8]) -> Vec<u8> {
    assert!(frame.len() - 14 <= 1500, "fits the fabric: {}", frame.len());
    let o = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(TransportSlice::Udp(u)) = o.transport else {
        panic!("not MPLSoUDP")
    };
    assert_eq!(u.destination_port(), 6635);
    let mpls = wire::mpls::Repr::parse(u.payload()).unwrap();
    assert_eq!(mpls.label, REMOTE_LABEL);
    u.payload()[4..].to_vec()
}

#[test]
fn packets_too_big_for_the_tunnel_without_df_are_cut_to_fit_and_arrive_whole() {
    let mut tb = Testbed::new(1024);
    // A pod with a 1500-byte MTU sends a 4000-byte datagram: 1500-byte fragments, each
    // too big once encapsulated, so each is cut again.
    let datagram = udp4(REMOTE_IP, 53, 30, &pattern(4000));
    let frags = fragment4(&datagram, 1480);
    let mut r = tb.run(VM1, &frags, 1);
    r.extend(tb.released(1));
    assert_eq!(dispositions(&r), [Disposition::Tx(FABRIC); 5]);
    let inner: Vec<_> = r.iter().map(|(_, f)| inner_of(f)).collect();
    assert!(inner.iter().all(|p| p.len() <= ROOM));
    assert_eq!(reassemble(&inner, true), [datagram[34..].to_vec()]);
    assert_eq!(tb.pipeline.stats.fragmented, 2);
    assert_eq!(tb.pipeline.stats.fragments_made, 4);

    // A whole datagram (a pod with a larger MTU) is cut into pieces of the most that fits.
    let datagram = udp4(REMOTE_IP, 53, 31, &pattern(4000));
    let mut r = tb.run(VM1, std::slice::from_ref(&datagram), 2);
    r.extend(tb.released(2));
    assert_eq!(dispositions(&r), [Disposition::Tx(FABRIC); 3]);
    let inner: Vec<_> = r.iter().map(|(_, f)| inner_of(f)).collect();
    assert_eq!(inner[0].len(), 20 + (ROOM - 20) / 8 * 8);
    assert_eq!(reassemble(&inner, true), [datagram[34..].to_vec()]);
}

#[test]
fn fragments_from_another_node_reach_the_pod_whatever_their_order() {
    for kind in [TunnelKind::MplsUdp, TunnelKind::MplsGre] {
        let mut tb = Testbed::new(1024);
        let datagram = ipv4_frame(
            MacAddr([2, 0xb, 0, 0, 0, 5]),
            gw(),
            REMOTE_IP,
            VM1_IP,
            17,
            5000,
            53,
            0,
            &pattern(3000),
        );
        let mut datagram = datagram;
        let mut ip = wire::ipv4::Packet::new_unchecked(&mut datagram[14..]);
        ip.set_frag(false, false, 0);
        ip.fill_checksum();
        let frags = fragment4(&datagram, 1400);
        let tunnelled: Vec<_> = frags
            .iter()
            .map(|f| from_node_b(kind, VM1_LABEL, &f[14..]))
            .collect();
        // The last one first.
        let mut r = tb.run(FABRIC, &tunnelled[2..], 1);
        assert_eq!(dispositions(&r), [Disposition::Hold]);
        r = tb.run(FABRIC, &tunnelled[..2], 2);
        r.extend(tb.released(2));
        assert_eq!(dispositions(&r), [Disposition::Tx(VM1); 3], "{kind:?}");
        assert_eq!(reassemble(&out(&r), false), [datagram[34..].to_vec()]);
    }
}

#[test]
fn snat_translates_every_fragment_and_the_datagram_checksum_stays_right() {
    let mut tb = Testbed::new(1024);
    let outside = Ipv4Addr::new(198, 51, 100, 7);
    let datagram = udp4(outside, 53, 40, &pattern(3000));
    let frags = fragment4(&datagram, 1480);
    let r = tb.run(VM1, &frags, 1);
    assert_eq!(dispositions(&r), [Disposition::Tx(FABRIC); 3]);
    for (_, f) in &r {
        let s = SlicedPacket::from_ethernet(f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = s.net else {
            panic!("not IPv4")
        };
        assert_eq!(Ipv4Addr::from(ip.header().source()), NODE_A);
    }
    let udp = reassemble(&out(&r), false).remove(0);
    assert_eq!(&udp[8..], &datagram[42..], "the data is untouched");
    let ps = checksum::pseudo_v4(NODE_A, outside, 17, udp.len() as u16);
    assert_eq!(
        checksum::fold(ps + checksum::sum(&udp)),
        0xffff,
        "the UDP checksum covers the translated datagram"
    );
}

fn with_ipv6(tb: &mut Testbed) {
    for (vif, ip) in [(VM1, VM1_IP6), (VM2, VM2_IP6)] {
        let mut v = tb.writer.tables().vifs.get(vif.0).unwrap().as_ref().clone();
        v.ip6 = Some(ip);
        tb.writer.add_vif(v).unwrap();
    }
    for (ip, plen, nh, label) in [
        (VM1_IP6, 128, NH_VM1, 0),
        (VM2_IP6, 128, NH_VM2, 0),
        (REMOTE_IP6, 64, NH_NODE_B, REMOTE_LABEL),
    ] {
        let e = RouteEntry { nh, label, attr: 0 };
        tb.writer.add_route(RED, IpAddr::V6(ip), plen, e).unwrap();
    }
    tb.writer.publish();
}

#[test]
fn ipv6_fragments_follow_their_first_ones_flow_and_policy() {
    let mut tb = Testbed::new(1024);
    with_ipv6(&mut tb);
    let datagram = udp6(VM1_IP6, VM2_IP6, 53, &pattern(4000));
    let frags = fragment6(&datagram, 1448, 0x1234_5678);
    assert_eq!(frags.len(), 3);
    // Out of order: the middle one waits for the first.
    let r = tb.run(VM1, &frags[1..2], 1);
    assert_eq!(dispositions(&r), [Disposition::Hold]);
    let mut r = tb.run(VM1, &[frags[0].clone(), frags[2].clone()], 2);
    r.extend(tb.released(2));
    assert_eq!(dispositions(&r), [Disposition::Tx(VM2); 3]);
    assert_eq!(reassemble(&out(&r), false), [datagram[54..].to_vec()]);

    // Every fragment of a datagram to a denied port is dropped.
    vm2_allows_only_udp(&mut tb, 53);
    let denied = fragment6(&udp6(VM1_IP6, VM2_IP6, 54, &pattern(4000)), 1448, 7);
    let r = tb.run(VM1, &denied, 3);
    assert_eq!(
        dispositions(&r),
        [Disposition::Drop(DropReason::PolicyDeny); 3]
    );
}

#[test]
fn an_ipv6_packet_too_big_for_the_tunnel_gets_packet_too_big_with_the_mtu_that_fits() {
    let mut tb = Testbed::new(1024);
    with_ipv6(&mut tb);
    let big = udp6(VM1_IP6, REMOTE_IP6, 53, &pattern(1452));
    assert_eq!(big.len() - 14, 1500);
    let (d, err) = tb.run_one(VM1, big.clone(), 1);
    assert_eq!(d, Disposition::Tx(VM1), "the error goes back to the sender");
    let p = SlicedPacket::from_ethernet(&err).expect("the error decodes");
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let h = ip.header().to_header();
    assert_eq!(Ipv6Addr::from(h.destination), VM1_IP6);
    let src = Ipv6Addr::from(h.source);
    assert_eq!(
        src.segments()[0],
        0xfe80,
        "from the vrouter's link-local address"
    );
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        panic!("not ICMPv6: {:?}", p.transport)
    };
    assert_eq!(
        icmp.icmp_type(),
        Icmpv6Type::PacketTooBig { mtu: ROOM as u32 }
    );
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type()
            .calc_checksum(h.source, h.destination, icmp.payload())
            .unwrap()
    );
    // As much of the packet as keeps the error within 1,280 bytes.
    assert_eq!(err.len() - 14, 1280);
    assert_eq!(icmp.payload(), &big[14..14 + 1280 - 48]);
    // A packet that fits goes through.
    let (d, _) = tb.run_one(VM1, udp6(VM1_IP6, REMOTE_IP6, 53, &pattern(1400)), 2);
    assert_eq!(d, Disposition::Tx(FABRIC));
}

#[test]
fn a_later_icmpv6_fragment_is_data_whatever_its_first_byte() {
    let mut tb = Testbed::new(1024);
    with_ipv6(&mut tb);
    // An echo whose data is all 135 (a neighbour solicitation's type) and 143 (MLD): the
    // later fragments start with those bytes and are forwarded all the same.
    for byte in [135, 136, 143] {
        let b = PacketBuilder::ethernet2(VM1_MAC.0, gw().0)
            .ipv6(VM1_IP6.octets(), VM2_IP6.octets(), 64)
            .icmpv6_echo_request(7, u16::from(byte));
        let mut f = Vec::new();
        b.write(&mut f, &[byte; 3000]).unwrap();
        let frags = fragment6(&f, 1424, u32::from(byte));
        let r = tb.run(VM1, &frags, 1);
        assert_eq!(dispositions(&r), [Disposition::Tx(VM2); 3], "data {byte}");
        assert_eq!(reassemble(&out(&r), false), [f[54..].to_vec()]);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Packet conservation through the pipeline: whatever datagrams come (whole or cut,
    /// in any order, to a local pod or through the tunnel, cut again there, some
    /// corrupted), every packet in, and every fragment the vrouter makes, leaves once:
    /// given an output or dropped under one reason, also the fragments held for a first
    /// one that never came, once they time out.
    #[test]
    fn every_packet_in_is_counted_out_exactly_once(
        dgrams in proptest::collection::vec(
            (0usize..5000, proptest::bool::ANY, 0usize..4, 0usize..8,
             proptest::collection::vec((0usize..2000, 1u8..=255), 0..2)),
            1..8,
        ),
    ) {
        let mut tb = Testbed::new(256);
        let mut now = 1;
        for (k, (size, remote, chunking, turn, flips)) in dgrams.iter().enumerate() {
            let dst = if *remote { REMOTE_IP } else { VM2_IP };
            let d = udp4(dst, 53, k as u16, &pattern(*size));
            let mut frames = match chunking {
                0 => vec![d],
                c => fragment4(&d, 8 * (50 + 60 * c)),
            };
            let n = frames.len();
            frames.rotate_left(turn % n);
            for (at, x) in flips {
                let f = &mut frames[0];
                let len = f.len();
                f[at % len] ^= x;
            }
            tb.run(VM1, &frames, now);
            tb.released(now);
            now += 1;
        }
        tb.pipeline.expire_fragments(now + HOLD_MS * 10);
        let s = &tb.pipeline.stats;
        proptest::prop_assert_eq!(
            s.rx + s.fragments_made - s.fragmented,
            s.forwarded + s.drops.total(),
            "{:?}",
            s
        );
    }
}
