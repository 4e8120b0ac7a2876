//! ICMP errors through the pipeline: the vrouter answers a pod's packet whose TTL runs
//! out; an error from a pod, a router on the fabric or another node follows the flow of
//! the packet it quotes (and only such a flow), and through a service or SNAT it is
//! translated back in its outer and its quoted headers, so the sender's stack can match
//! it to its socket. Every error that comes out is checked by etherparse (outer header,
//! ICMP checksum, the quoted header's checksum, the quoted UDP checksum when whole).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    Icmpv4Type, Icmpv6Type, Ipv4HeaderSlice, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use vrouter::pipeline::{Disposition, DropReason};
use vrouter::tables::{GlobalConfig, RouteEntry};
use vrouter::testbed::*;
use vrouter::wire::{self, MacAddr, checksum};

const VM1_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3);
const VM2_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 4);
/// A router on the fabric.
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn gw() -> MacAddr {
    GlobalConfig::default().vrouter_mac
}

/// An Ethernet + IPv4 + ICMP error frame quoting `quote` (an IP packet, whole).
fn error4(
    (smac, dmac): (MacAddr, MacAddr),
    (src, dst): (Ipv4Addr, Ipv4Addr),
    (t, code, rest): (u8, u8, [u8; 4]),
    quote: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![t, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quote);
    let c = checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0u8; 14 + 20];
    wire::ethernet::Repr {
        src: smac,
        dst: dmac,
        ethertype: wire::EtherType::Ipv4,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut f[..14]));
    wire::ipv4::Repr {
        dont_frag: false,
        ..wire::ipv4::Repr::tunnel(src, dst, wire::IpProtocol::Icmp, icmp.len())
    }
    .emit(&mut f[14..34])
    .unwrap();
    f.extend_from_slice(&icmp);
    f
}

/// What an IPv4 error that came out says: (outer src, outer dst, type, quoted src, quoted
/// dst, quoted ports, quoted bytes), every checksum checked.
struct Err4 {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: Icmpv4Type,
    q_src: Ipv4Addr,
    q_dst: Ipv4Addr,
    q_ports: (u16, u16),
    quote: Vec<u8>,
}

fn decode4(frame: &[u8]) -> Err4 {
    let p = SlicedPacket::from_ethernet(frame).expect("the error decodes");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "outer header");
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP: {:?}", p.transport)
    };
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type().calc_checksum(icmp.payload()),
        "ICMP checksum"
    );
    let quote = icmp.payload().to_vec();
    let q = Ipv4HeaderSlice::from_slice(&quote).expect("the quoted header decodes");
    let qh = q.to_header();
    assert_eq!(
        qh.header_checksum,
        qh.calc_header_checksum(),
        "quoted header"
    );
    let l4 = &quote[q.slice().len()..];
    let ports = (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    );
    if qh.protocol.0 == 17 && l4.len() == usize::from(qh.total_len) - q.slice().len() {
        let ps = checksum::pseudo_v4(q.source_addr(), q.destination_addr(), 17, l4.len() as u16);
        assert_eq!(
            checksum::fold(ps + checksum::sum(l4)),
            0xffff,
            "quoted UDP checksum"
        );
    }
    Err4 {
        src: h.source.into(),
        dst: h.destination.into(),
        kind: icmp.icmp_type(),
        q_src: q.source_addr(),
        q_dst: q.destination_addr(),
        q_ports: ports,
        quote,
    }
}

#[test]
fn a_pods_packet_whose_ttl_runs_out_gets_time_exceeded_from_the_node() {
    let mut tb = Testbed::new(1024);
    let mut ttl1 = vm1_udp(VM2_IP, 4000, 33434, b"probe");
    ttl1[22] = 1;
    wire::ipv4::Packet::new_unchecked(&mut ttl1[14..34]).fill_checksum();
    let (d, out) = tb.run_one(VM1, ttl1.clone(), 1);
    assert_eq!(d, Disposition::Tx(VM1), "back to the sender");
    let e = decode4(&out);
    assert_eq!((e.src, e.dst), (NODE_A, VM1_IP));
    assert_eq!(
        e.kind,
        Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
    );
    assert_eq!(e.quote, &ttl1[14..14 + 28], "its header and 8 bytes");
    assert_eq!(tb.pipeline.stats.icmp_errors, 1);

    // The same from another node: dropped (the sender is not on this link).
    let inner = ipv4_frame(
        MacAddr([2, 0xb, 0, 0, 0, 5]),
        gw(),
        REMOTE_IP,
        VM1_IP,
        17,
        5,
        6,
        0,
        b"x",
    );
    let mut inner = inner[14..].to_vec();
    inner[8] = 1;
    wire::ipv4::Packet::new_unchecked(&mut inner[..20]).fill_checksum();
    let (d, _) = tb.run_one(
        FABRIC,
        from_node_b(vrouter::tables::TunnelKind::MplsUdp, VM1_LABEL, &inner),
        2,
    );
    assert_eq!(d, Disposition::Drop(DropReason::TtlExpired));
}

fn with_ipv6(tb: &mut Testbed) {
    for (vif, ip, nh) in [(VM1, VM1_IP6, NH_VM1), (VM2, VM2_IP6, NH_VM2)] {
        let mut v = tb.writer.tables().vifs.get(vif.0).unwrap().as_ref().clone();
        v.ip6 = Some(ip);
        tb.writer.add_vif(v).unwrap();
        let e = RouteEntry {
            nh,
            label: 0,
            attr: 0,
        };
        tb.writer.add_route(RED, IpAddr::V6(ip), 128, e).unwrap();
    }
    tb.writer.publish();
}

fn udp6(smac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, hops: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac.0, gw().0)
        .ipv6(src.octets(), dst.octets(), hops)
        .udp(4000, 53);
    let mut f = Vec::new();
    b.write(&mut f, b"query").unwrap();
    f
}

/// Checks an ICMPv6 error that came out; returns (source, type, quote).
fn decode6(frame: &[u8]) -> (Ipv6Addr, Icmpv6Type, Vec<u8>) {
    let p = SlicedPacket::from_ethernet(frame).expect("the error decodes");
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let h = ip.header().to_header();
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        panic!("not ICMPv6: {:?}", p.transport)
    };
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type()
            .calc_checksum(h.source, h.destination, icmp.payload())
            .unwrap(),
        "ICMPv6 checksum"
    );
    (h.source.into(), icmp.icmp_type(), icmp.payload().to_vec())
}

#[test]
fn an_ipv6_packet_whose_hop_limit_runs_out_gets_time_exceeded() {
    let mut tb = Testbed::new(1024);
    with_ipv6(&mut tb);
    let probe = udp6(VM1_MAC, VM1_IP6, VM2_IP6, 1);
    let (d, out) = tb.run_one(VM1, probe.clone(), 1);
    assert_eq!(d, Disposition::Tx(VM1));
    let (src, kind, quote) = decode6(&out);
    assert_eq!(src.segments()[0], 0xfe80);
    assert_eq!(
        kind,
        Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded)
    );
    assert_eq!(quote, &probe[14..]);
}

#[test]
fn an_error_follows_the_flow_of_the_packet_it_quotes_and_sets_none_up() {
    let mut tb = Testbed::new(1024);
    let (d, delivered) = tb.run_one(VM1, vm1_udp(VM2_IP, 4000, 53, b"query"), 1);
    assert_eq!(d, Disposition::Tx(VM2));
    // vm2's stack has nothing on port 53: "port unreachable", quoting what it received.
    let unreach = error4(
        (VM2_MAC, gw()),
        (VM2_IP, VM1_IP),
        (3, 3, [0; 4]),
        &delivered[14..],
    );
    let (d, out) = tb.run_one(VM2, unreach, 2);
    assert_eq!(d, Disposition::Tx(VM1), "the flow's way back");
    let e = decode4(&out);
    assert_eq!(
        (e.src, e.dst, e.q_src, e.q_dst),
        (VM2_IP, VM1_IP, VM1_IP, VM2_IP)
    );
    assert_eq!(e.q_ports, (4000, 53));
    assert_eq!(tb.pipeline.stats.flows_created, 1, "no flow of its own");

    // Quoting a packet that no flow carried: dropped, though ICMP is not denied.
    let forged = vm1_udp(VM2_IP, 4999, 53, b"never sent");
    let (d, _) = tb.run_one(
        VM2,
        error4(
            (VM2_MAC, gw()),
            (VM2_IP, VM1_IP),
            (3, 3, [0; 4]),
            &forged[14..],
        ),
        3,
    );
    assert_eq!(d, Disposition::Drop(DropReason::IcmpErrorNoFlow));

    // IPv6: "port unreachable" (type 1 code 4) back along an IPv6 flow.
    with_ipv6(&mut tb);
    let (d, delivered) = tb.run_one(VM1, udp6(VM1_MAC, VM1_IP6, VM2_IP6, 64), 4);
    assert_eq!(d, Disposition::Tx(VM2));
    let b = PacketBuilder::ethernet2(VM2_MAC.0, gw().0)
        .ipv6(VM2_IP6.octets(), VM1_IP6.octets(), 64)
        .icmpv6(Icmpv6Type::DestinationUnreachable(
            etherparse::icmpv6::DestUnreachableCode::Port,
        ));
    let mut unreach6 = Vec::new();
    b.write(&mut unreach6, &delivered[14..]).unwrap();
    let (d, out) = tb.run_one(VM2, unreach6, 5);
    assert_eq!(d, Disposition::Tx(VM1));
    let (src, _, quote) = decode6(&out);
    assert_eq!((src, quote.as_slice()), (VM2_IP6, &delivered[14..]));
}

/// A service 10.1.1.200 (UDP 53 -> 5353) whose one backend is vm2.
fn with_service(tb: &mut Testbed) -> Ipv4Addr {
    let svc = Ipv4Addr::new(10, 1, 1, 200);
    tb.add_service((7, svc), &[(NH_VM2, 0, VM2_IP)], &[(17, 53, 5353)], false);
    svc
}

#[test]
fn an_error_from_a_service_backend_comes_back_from_the_service() {
    let mut tb = Testbed::new(1024);
    let svc = with_service(&mut tb);
    let (d, delivered) = tb.run_one(VM1, vm1_udp(svc, 4000, 53, b"query"), 1);
    assert_eq!(d, Disposition::Tx(VM2));
    assert_eq!(
        u16::from_be_bytes([delivered[36], delivered[37]]),
        5353,
        "translated to the target port"
    );
    let unreach = error4(
        (VM2_MAC, gw()),
        (VM2_IP, VM1_IP),
        (3, 3, [0; 4]),
        &delivered[14..],
    );
    let (d, out) = tb.run_one(VM2, unreach, 2);
    assert_eq!(d, Disposition::Tx(VM1));
    let e = decode4(&out);
    // vm1 sent to the service: the error comes from it and quotes what vm1 sent.
    assert_eq!((e.src, e.dst), (svc, VM1_IP));
    assert_eq!((e.q_src, e.q_dst, e.q_ports), (VM1_IP, svc, (4000, 53)));
}

#[test]
fn errors_from_the_fabric_reach_the_pod_behind_snat_translated_back() {
    let mut tb = Testbed::new(1024);
    let (d, sent) = tb.run_one(VM1, vm1_udp(OUTSIDE, 4000, 53, b"query"), 1);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let snat_port = u16::from_be_bytes([sent[34], sent[35]]);
    // A router on the way: "fragmentation needed", next-hop MTU 1400, to the node.
    let need_frag = error4(
        (GATEWAY_MAC, FABRIC_MAC),
        (ROUTER, NODE_A),
        (3, 4, [0, 0, 0x05, 0x78]),
        &sent[14..],
    );
    let (d, out) = tb.run_one(FABRIC, need_frag, 2);
    assert_eq!(d, Disposition::Tx(VM1), "to the pod behind the translation");
    let e = decode4(&out);
    assert_eq!((e.src, e.dst), (ROUTER, VM1_IP));
    assert_eq!(
        e.kind,
        Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 }
        )
    );
    assert_eq!((e.q_src, e.q_dst, e.q_ports), (VM1_IP, OUTSIDE, (4000, 53)));
    assert_ne!(snat_port, 4000, "the port was translated too");

    // A ping translated the same way, its identifier included.
    let gwm = gw();
    let ping = ipv4_frame(VM1_MAC, gwm, VM1_IP, OUTSIDE, 1, 77, 0, 0, b"ping");
    let (d, sent) = tb.run_one(VM1, ping, 3);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let exceeded = error4(
        (GATEWAY_MAC, FABRIC_MAC),
        (ROUTER, NODE_A),
        (11, 0, [0; 4]),
        &sent[14..],
    );
    let (d, out) = tb.run_one(FABRIC, exceeded, 4);
    assert_eq!(d, Disposition::Tx(VM1));
    let e = decode4(&out);
    assert_eq!((e.dst, e.q_src), (VM1_IP, VM1_IP));
    assert_eq!(
        u16::from_be_bytes([e.quote[24], e.quote[25]]),
        77,
        "echo id"
    );

    // An error to the node about something no flow carried is the host's.
    let other = vm1_udp(OUTSIDE, 1, 2, b"x");
    let mut host_pkt = other[14..].to_vec();
    host_pkt[12..16].copy_from_slice(&NODE_A.octets());
    wire::ipv4::Packet::new_unchecked(&mut host_pkt[..20]).fill_checksum();
    let err = error4(
        (GATEWAY_MAC, FABRIC_MAC),
        (ROUTER, NODE_A),
        (3, 3, [0; 4]),
        &host_pkt,
    );
    assert_eq!(tb.run_one(FABRIC, err, 5).0, Disposition::Tx(HOST));
}
