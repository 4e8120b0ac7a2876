//! The whole pipeline on real bytes: local forwarding, the three encapsulations and their
//! decapsulation, ARP/ND answers, policy, ECMP, route changes, SNAT, and bad input. Every
//! output is decoded by etherparse (an independent decoder) or checked for its drop reason.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use vrouter::config::{NexthopCfg, NexthopKind};
use vrouter::nat::{PortPool, SnatPools};
use vrouter::pipeline::{Disposition, DropReason};
use vrouter::policy::{Action, Policy, Rule, RuleSet};
use vrouter::tables::{GlobalConfig, NhId, RouteEntry, TunnelKind};
use vrouter::testbed::*;
use vrouter::wire::{self, MacAddr, checksum};

fn gw() -> MacAddr {
    GlobalConfig::default().vrouter_mac
}

/// Decodes an Ethernet/IPv4/L4 frame with etherparse, checking every checksum.
struct Decoded {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    proto: u8,
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
}

fn decode(frame: &[u8]) -> Decoded {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse decodes the frame");
    let Some(LinkSlice::Ethernet2(eth)) = p.link else {
        panic!("no Ethernet")
    };
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let (sport, dport, payload) = match p.transport {
        Some(TransportSlice::Udp(u)) => {
            if u.checksum() != 0 {
                assert_eq!(
                    u.checksum(),
                    u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(),
                    "UDP checksum"
                );
            }
            (u.source_port(), u.destination_port(), u.payload().to_vec())
        }
        Some(TransportSlice::Tcp(t)) => {
            assert_eq!(
                t.checksum(),
                t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap(),
                "TCP checksum"
            );
            (t.source_port(), t.destination_port(), t.payload().to_vec())
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let ident = u16::from_be_bytes([i.slice()[4], i.slice()[5]]);
            assert_eq!(
                checksum::fold(checksum::sum(i.slice())),
                0xffff,
                "ICMP checksum"
            );
            (ident, 0, i.payload().to_vec())
        }
        _ => (0, 0, ip.payload().payload.to_vec()),
    };
    Decoded {
        src_mac: eth.source(),
        dst_mac: eth.destination(),
        src: h.source.into(),
        dst: h.destination.into(),
        ttl: h.time_to_live,
        proto: h.protocol.0,
        sport,
        dport,
        payload,
    }
}

#[test]
fn vm_to_vm_on_the_same_node_rewrites_l2_and_decrements_ttl() {
    let mut tb = Testbed::new(1024);
    let (d, out) = tb.run_one(VM1, vm1_udp(VM2_IP, 4000, 53, b"query"), 1);
    assert_eq!(d, Disposition::Tx(VM2));
    let o = decode(&out);
    assert_eq!((o.dst_mac, o.src_mac), (VM2_MAC.0, gw().0));
    assert_eq!((o.src, o.dst, o.ttl), (VM1_IP, VM2_IP, 63));
    assert_eq!(
        (o.sport, o.dport, o.payload.as_slice()),
        (4000, 53, &b"query"[..])
    );
    assert_eq!(
        (
            tb.pipeline.stats.flows_created,
            tb.pipeline.stats.flow_misses
        ),
        (1, 1)
    );
    // The second packet hits the flow; the reply uses the reverse entry.
    tb.run_one(VM1, vm1_udp(VM2_IP, 4000, 53, b"again"), 2);
    let reply = ipv4_frame(VM2_MAC, gw(), VM2_IP, VM1_IP, 17, 53, 4000, 0, b"answer");
    assert_eq!(tb.run_one(VM2, reply, 3).0, Disposition::Tx(VM1));
    assert_eq!(tb.pipeline.stats.flow_hits, 2);
    assert_eq!(tb.pipeline.stats.flows_created, 1);
}

fn set_encap(tb: &mut Testbed, first: TunnelKind) {
    let mut g = tb.writer.tables().global.as_ref().clone();
    g.encap_priority.retain(|k| *k != first);
    g.encap_priority.insert(0, first);
    tb.writer.set_global(g).unwrap();
    tb.writer.publish();
}

/// Strips our outer Ethernet/IPv4 and checks it; returns the bytes after the outer IP.
fn outer(frame: &[u8], proto: u8) -> Vec<u8> {
    let o = decode(frame);
    assert_eq!((o.src_mac, o.dst_mac), (FABRIC_MAC.0, NODE_B_MAC.0));
    assert_eq!((o.src, o.dst, o.ttl, o.proto), (NODE_A, NODE_B, 64, proto));
    let ihl = usize::from(frame[14] & 0xf) * 4;
    frame[14 + ihl..].to_vec()
}

#[test]
fn mpls_over_udp_encap_carries_the_inner_ip_packet_under_the_label() {
    let mut tb = Testbed::new(1024);
    let (d, out) = tb.run_one(VM1, vm1_udp(REMOTE_IP, 4000, 7, b"to-b"), 1);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let o = decode(&out);
    assert_eq!(o.dport, 6635);
    assert!(o.sport >= 0xc000, "entropy source port {}", o.sport);
    let mpls = wire::mpls::Repr::parse(&o.payload).unwrap();
    assert_eq!((mpls.label, mpls.bos), (REMOTE_LABEL, true));
    let inner = decode_ip(&o.payload[4..]);
    assert_eq!((inner.0, inner.1, inner.2), (VM1_IP, REMOTE_IP, 63));
    assert_eq!(tb.pipeline.stats.encap, 1);
}

/// Decodes a bare IPv4 packet with etherparse: (src, dst, ttl, payload).
fn decode_ip(b: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8, Vec<u8>) {
    let p = SlicedPacket::from_ip(b).expect("inner IP decodes");
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("inner not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    (
        h.source.into(),
        h.destination.into(),
        h.time_to_live,
        ip.payload().payload.to_vec(),
    )
}

#[test]
fn vxlan_and_mpls_over_gre_follow_the_encap_priority() {
    let mut tb = Testbed::new(1024);
    set_encap(&mut tb, TunnelKind::Vxlan);
    let (_, out) = tb.run_one(VM1, vm1_udp(REMOTE_IP, 4001, 7, b"vx"), 1);
    let o = decode(&out);
    assert_eq!(o.dport, 4789);
    assert_eq!(
        wire::vxlan::Repr::parse(&o.payload).unwrap().vni,
        REMOTE_LABEL
    );
    let inner = decode(&o.payload[8..]);
    assert_eq!(
        (inner.src, inner.dst, inner.payload.as_slice()),
        (VM1_IP, REMOTE_IP, &b"vx"[..])
    );

    set_encap(&mut tb, TunnelKind::MplsGre);
    let (_, out) = tb.run_one(VM1, vm1_udp(REMOTE_IP, 4002, 7, b"gre"), 2);
    let after_ip = outer(&out, 47);
    let gre = wire::gre::Repr::parse(&after_ip).unwrap();
    assert_eq!(gre.protocol, wire::gre::PROTO_MPLS);
    assert_eq!(
        wire::mpls::Repr::parse(&after_ip[4..]).unwrap().label,
        REMOTE_LABEL
    );
    assert_eq!(decode_ip(&after_ip[8..]).1, REMOTE_IP);
}

#[test]
fn tunnels_from_node_b_are_decapsulated_to_the_right_vm() {
    let mut tb = Testbed::new(1024);
    let inner_eth = ipv4_frame(
        MacAddr([2, 0xb, 0, 0, 0, 5]),
        gw(),
        REMOTE_IP,
        VM1_IP,
        17,
        9,
        4000,
        0,
        b"hi",
    );
    let inner_ip = inner_eth[14..].to_vec();
    for (kind, label, bytes) in [
        (TunnelKind::MplsUdp, VM1_LABEL, &inner_ip),
        (TunnelKind::MplsGre, VM1_LABEL, &inner_ip),
        (TunnelKind::Vxlan, VNI, &inner_eth),
    ] {
        let (d, out) = tb.run_one(FABRIC, from_node_b(kind, label, bytes), 1);
        assert_eq!(d, Disposition::Tx(VM1), "{kind:?}");
        let o = decode(&out);
        assert_eq!((o.dst_mac, o.src_mac), (VM1_MAC.0, gw().0), "{kind:?}");
        assert_eq!(
            (o.src, o.dst, o.ttl, o.payload.as_slice()),
            (REMOTE_IP, VM1_IP, 63, &b"hi"[..])
        );
    }
    assert_eq!(tb.pipeline.stats.decap, 3);
    // Unknown label / VNI are dropped with their reason.
    let (d, _) = tb.run_one(FABRIC, from_node_b(TunnelKind::MplsUdp, 999, &inner_ip), 2);
    assert_eq!(d, Disposition::Drop(DropReason::InvalidLabel));
    let (d, _) = tb.run_one(FABRIC, from_node_b(TunnelKind::Vxlan, 4242, &inner_eth), 2);
    assert_eq!(d, Disposition::Drop(DropReason::InvalidVni));
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::InvalidLabel), 1);
}

#[test]
fn arp_requests_are_answered_with_the_vrouter_mac() {
    let mut tb = Testbed::new(64);
    let f = arp_request(Ipv4Addr::new(10, 1, 1, 1));
    let req = wire::arp::Repr::parse(&wire::arp::Packet::new_checked(&f[14..]).unwrap()).unwrap();
    let (d, out) = tb.run_one(VM1, f.clone(), 1);
    assert_eq!(d, Disposition::Tx(VM1));
    let p = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Arp(arp)) = p.net else {
        panic!("ARP reply expected")
    };
    assert_eq!(arp.operation(), etherparse::ArpOperation::REPLY);
    assert_eq!(arp.sender_hw_addr(), &gw().0);
    assert_eq!(arp.sender_protocol_addr(), &[10, 1, 1, 1]);
    assert_eq!(arp.target_hw_addr(), &VM1_MAC.0);
    assert_eq!(&out[..6], &VM1_MAC.0);
    // A gratuitous ARP (the VM announcing itself) is not answered.
    let mut g = f.clone();
    wire::arp::Repr { tpa: VM1_IP, ..req }
        .emit(&mut g[14..])
        .unwrap();
    assert_eq!(
        tb.run_one(VM1, g, 2).0,
        Disposition::Drop(DropReason::Discard)
    );
    assert_eq!(tb.pipeline.stats.arp_replies, 1);
}

#[test]
fn ipv6_neighbour_solicitation_gets_an_advertisement_with_a_valid_checksum() {
    let mut tb = Testbed::new(64);
    let src: Ipv6Addr = "fd00:1::3".parse().unwrap();
    let target: Ipv6Addr = "fd00:1::1".parse().unwrap();
    let ns = wire::icmp::NdpRepr {
        msg_type: wire::icmp::NEIGHBOR_SOLICIT,
        target,
        lladdr: Some(VM1_MAC),
        flags: 0,
    };
    let mut f = vec![0u8; 14 + 40 + 32];
    wire::ethernet::Repr {
        src: VM1_MAC,
        dst: MacAddr([0x33, 0x33, 0xff, 0, 0, 1]),
        ethertype: wire::EtherType::Ipv6,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut f[..14]));
    let ip = wire::ipv6::Repr {
        src,
        dst: "ff02::1:ff00:1".parse().unwrap(),
        protocol: wire::IpProtocol::Icmpv6,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
        upper_offset: 40,
        upper_len: 32,
        fragment: wire::ipv6::Fragment::None,
    };
    ip.emit(&mut f[14..54], 32).unwrap();
    ns.emit(&mut f[54..]).unwrap();
    let ps = checksum::pseudo_v6(ip.src, ip.dst, 58, 32);
    wire::icmp::Packet::new_unchecked(&mut f[54..]).fill_checksum_v6(ps);

    let (d, out) = tb.run_one(VM1, f, 1);
    assert_eq!(d, Disposition::Tx(VM1));
    let p = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Ipv6(ip6)) = p.net else {
        panic!("IPv6 expected")
    };
    let (s, t) = (ip6.header().source_addr(), ip6.header().destination_addr());
    assert_eq!((s, t), (target, src));
    let icmp = &out[54..];
    assert!(
        wire::icmp::Packet::new_checked(icmp)
            .unwrap()
            .verify_checksum_v6(checksum::pseudo_v6(s, t, 58, 32))
    );
    let na = wire::icmp::NdpRepr::parse(&wire::icmp::Packet::new_checked(icmp).unwrap()).unwrap();
    assert_eq!(
        (na.msg_type, na.target, na.lladdr),
        (wire::icmp::NEIGHBOR_ADVERT, target, Some(gw()))
    );
    assert_eq!(tb.pipeline.stats.nd_replies, 1);
}

/// Gives VM2 an ingress rule set that passes only `proto` to port `port`.
fn vm2_ingress_only(tb: &mut Testbed, name: &str, proto: u8, port: u16) {
    set_vm2_policy(
        tb,
        Some(Policy {
            ingress: vec![RuleSet::new(
                name,
                vec![Rule {
                    proto: Some(proto),
                    dport: (port, port),
                    ..Rule::any(Action::Pass)
                }],
                Action::Deny,
                false,
            )],
            egress: vec![],
        }),
    );
}

fn set_vm2_policy(tb: &mut Testbed, policy: Option<Policy>) {
    let mut vm2 = tb.writer.tables().vifs.get(VM2.0).unwrap().as_ref().clone();
    vm2.policy = policy.map(Arc::new);
    tb.writer.add_vif(vm2).unwrap();
    tb.writer.publish();
}

#[test]
fn security_group_allows_tcp_80_only_and_denied_flows_stay_denied() {
    let mut tb = Testbed::new(1024);
    vm2_ingress_only(&mut tb, "sg-web", 6, 80);
    let tcp = |dport| {
        ipv4_frame(
            VM1_MAC,
            gw(),
            VM1_IP,
            VM2_IP,
            6,
            40000,
            dport,
            wire::tcp::flags::SYN,
            b"",
        )
    };
    assert_eq!(tb.run_one(VM1, tcp(80), 1).0, Disposition::Tx(VM2));
    assert_eq!(
        tb.run_one(VM1, tcp(81), 1).0,
        Disposition::Drop(DropReason::PolicyDeny)
    );
    assert_eq!(
        tb.run_one(VM1, vm1_udp(VM2_IP, 1, 80, b""), 1).0,
        Disposition::Drop(DropReason::PolicyDeny)
    );
    assert_eq!(
        tb.run_one(VM1, tcp(81), 2).0,
        Disposition::Drop(DropReason::PolicyDeny),
        "cached deny"
    );
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::PolicyDeny), 3);
    assert_eq!(
        tb.pipeline.stats.flows_created, 3,
        "the deny was set up once as a flow"
    );
}

#[test]
fn a_policy_change_decides_existing_flows_again() {
    let mut tb = Testbed::new(1024);
    let syn = |dport| {
        ipv4_frame(
            VM1_MAC,
            gw(),
            VM1_IP,
            VM2_IP,
            6,
            40000,
            dport,
            wire::tcp::flags::ACK,
            b"",
        )
    };
    let reply = ipv4_frame(
        VM2_MAC,
        gw(),
        VM2_IP,
        VM1_IP,
        6,
        81,
        40000,
        wire::tcp::flags::ACK,
        b"",
    );
    assert_eq!(tb.run_one(VM1, syn(81), 1).0, Disposition::Tx(VM2));
    assert_eq!(tb.run_one(VM2, reply.clone(), 1).0, Disposition::Tx(VM1));
    // Port 80 only: the established flow to 81 is denied from its next packet on.
    vm2_ingress_only(&mut tb, "sg-web", 6, 80);
    assert_eq!(
        tb.run_one(VM1, syn(81), 2).0,
        Disposition::Drop(DropReason::PolicyDeny)
    );
    assert_eq!(tb.pipeline.stats.flows_reevaluated, 1);
    assert_eq!(
        tb.run_one(VM2, reply.clone(), 2).0,
        Disposition::Drop(DropReason::PolicyDeny),
        "the reply entry went with it"
    );
    // An unrelated publish changes nothing: no second decision.
    tb.writer.publish();
    assert_eq!(
        tb.run_one(VM1, syn(81), 3).0,
        Disposition::Drop(DropReason::PolicyDeny)
    );
    assert_eq!(tb.pipeline.stats.flows_reevaluated, 1);
    // The policy goes: the denied flow passes again, both ways.
    set_vm2_policy(&mut tb, None);
    assert_eq!(tb.run_one(VM1, syn(81), 4).0, Disposition::Tx(VM2));
    assert_eq!(tb.run_one(VM2, reply, 4).0, Disposition::Tx(VM1));
    assert_eq!(tb.pipeline.stats.flows_reevaluated, 2);
}

#[test]
fn a_flow_decided_256_policy_changes_ago_is_decided_again() {
    let mut tb = Testbed::new(1024);
    let udp = || vm1_udp(VM2_IP, 4000, 81, b"x");
    assert_eq!(tb.run_one(VM1, udp(), 1).0, Disposition::Tx(VM2));
    // 256 changes that end where they began (no policy), the flow idle meanwhile: the
    // generation's low 8 bits are back where they were, the generation is not.
    let before = tb.writer.tables().policy_gen;
    for i in 0..128u16 {
        vm2_ingress_only(&mut tb, "sg-web", 6, 1000 + i);
        set_vm2_policy(&mut tb, None);
    }
    let now = tb.writer.tables().policy_gen;
    assert_eq!(now.wrapping_sub(before) % 256, 0, "{before} -> {now}");
    assert_ne!(now, before);
    assert_eq!(tb.run_one(VM1, udp(), 2).0, Disposition::Tx(VM2));
    assert_eq!(tb.pipeline.stats.flows_reevaluated, 1, "decided again");
}

#[test]
fn sctp_ports_are_matched_by_policy_and_a_short_sctp_header_is_invalid() {
    let mut tb = Testbed::new(1024);
    vm2_ingress_only(&mut tb, "sctp-80", 132, 80);
    // An SCTP common header: ports, verification tag, CRC32c (not checked by the router).
    let sctp = |dport: u16, len: usize| {
        let mut f = ipv4_frame(VM1_MAC, gw(), VM1_IP, VM2_IP, 132, 0, 0, 0, &[0; 4]);
        let l4 = &mut f[34..];
        l4[..2].copy_from_slice(&5000u16.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        l4[4..12].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
        f.truncate(34 + len);
        let total = (20 + len) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[24..26].fill(0);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    assert_eq!(tb.run_one(VM1, sctp(80, 12), 1).0, Disposition::Tx(VM2));
    assert_eq!(
        tb.run_one(VM1, sctp(81, 12), 1).0,
        Disposition::Drop(DropReason::PolicyDeny)
    );
    assert_eq!(
        tb.run_one(VM1, sctp(80, 8), 1).0,
        Disposition::Drop(DropReason::InvalidTransport)
    );
}

/// An SCTP packet (common header + one DATA chunk) with its CRC32c, `src:sport` ->
/// `dst:dport`, in an Ethernet frame from `smac`.
fn sctp_frame(
    smac: MacAddr,
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
) -> Vec<u8> {
    let mut sctp = Vec::new();
    sctp.extend_from_slice(&sport.to_be_bytes());
    sctp.extend_from_slice(&dport.to_be_bytes());
    sctp.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
    // DATA: type 0, flags B|E, length 16 + 4 bytes of data; TSN, stream 0/0, PPID 0.
    sctp.extend_from_slice(&[0, 3, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    sctp.extend_from_slice(b"ping");
    let c = crc32c::crc32c(&sctp);
    sctp[8..12].copy_from_slice(&c.to_le_bytes());
    let mut f = ipv4_frame(smac, gw(), src, dst, 132, 0, 0, 0, &[]);
    f.truncate(34);
    f.extend_from_slice(&sctp);
    let mut ip = wire::ipv4::Packet::new_unchecked(&mut f[14..34]);
    ip.set_total_len((20 + sctp.len()) as u16);
    ip.fill_checksum();
    f
}

/// What tshark says of each frame's SCTP: ports and checksum status.
fn tshark_sctp(frames: &[Vec<u8>]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("vr-sctp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sctp.pcap");
    vrouter::pcap::write(&file, frames).unwrap();
    let o = std::process::Command::new("tshark")
        .args(["-o", "sctp.checksum:CRC-32C", "-r"])
        .arg(&file)
        .args(["-T", "fields", "-e", "sctp.srcport", "-e", "sctp.dstport"])
        .args(["-e", "sctp.checksum.status"])
        .output()
        .expect("tshark");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn sctp_through_a_service_gets_its_port_translated_and_its_crc32c_computed_anew() {
    // The CRC-32C check value (RFC 3720 B.4).
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    let mut tb = Testbed::new(1024);
    let svc = Ipv4Addr::new(10, 1, 1, 201);
    tb.add_service(
        (8, svc),
        &[(NH_VM2, 0, VM2_IP)],
        &[(132, 3868, 3869)],
        false,
    );
    let out = tb.run_one(VM1, sctp_frame(VM1_MAC, (VM1_IP, 5000), (svc, 3868)), 1);
    assert_eq!(out.0, Disposition::Tx(VM2));
    let back = tb.run_one(VM2, sctp_frame(VM2_MAC, (VM2_IP, 3869), (VM1_IP, 5000)), 2);
    assert_eq!(back.0, Disposition::Tx(VM1));
    // tshark, an independent decoder, checks each CRC32c.
    let seen = tshark_sctp(&[out.1, back.1]);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let fields: Vec<Vec<&str>> = seen.iter().map(|l| l.split('\t').collect()).collect();
    assert_eq!(&fields[0][..2], ["5000", "3869"], "to the target port");
    assert_eq!(
        &fields[1][..2],
        ["3868", "5000"],
        "back from the service port"
    );
    for f in &fields {
        assert!(
            f[2] == "1" || f[2].eq_ignore_ascii_case("good"),
            "checksum status {f:?}"
        );
    }
}

fn member_of(d: Disposition) -> &'static str {
    match d {
        Disposition::Tx(v) if v == VM1 => "vm1",
        Disposition::Tx(v) if v == VM2 => "vm2",
        Disposition::Tx(v) if v == FABRIC => "node-b",
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn service_vip_spreads_flows_and_keeps_them_on_their_member() {
    // 600 flows from vm1: within its quota, a quarter of the table.
    let mut tb = Testbed::new(8192);
    let mut first = HashMap::new();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for sport in 0..600u16 {
        let (d, _) = tb.run_one(VM1, vm1_udp(VIP, 10000 + sport, 80, b"x"), 1);
        let m = member_of(d);
        first.insert(sport, m);
        *count.entry(m).or_default() += 1;
    }
    assert_eq!(count.len(), 3, "{count:?}");
    assert!(
        count.values().all(|c| *c > 120),
        "spread over all three: {count:?}"
    );

    // Removing vm2 from the composite: flows on vm1 and node B keep their member; flows
    // that were on vm2 move to another member.
    let snap = tb.writer.tables().nexthops.get(NH_VIP.0).unwrap().clone();
    let vrouter::tables::Nexthop::Composite(e) = snap.as_ref() else {
        panic!()
    };
    let without = e
        .without(&vrouter::tables::ecmp::Member {
            nh: NH_VM2,
            label: 0,
        })
        .unwrap();
    tb.writer
        .set_nexthop(
            NH_VIP,
            vrouter::tables::Nexthop::Composite(Arc::new(without)),
        )
        .unwrap();
    // Any route change bumps the VRF generation so flows re-check their nexthop.
    tb.writer
        .add_route(
            RED,
            IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
            32,
            RouteEntry {
                nh: NH_VM1,
                label: 0,
                attr: 0,
            },
        )
        .unwrap();
    tb.writer.publish();
    for sport in 0..600u16 {
        let (d, _) = tb.run_one(VM1, vm1_udp(VIP, 10000 + sport, 80, b"x"), 2);
        let now = member_of(d);
        if first[&sport] == "vm2" {
            assert_ne!(now, "vm2");
        } else {
            assert_eq!(now, first[&sport], "flow {sport} moved");
        }
    }
}

/// A TCP SYN from vm1.
fn vm1_syn(dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    ipv4_frame(
        VM1_MAC,
        gw(),
        VM1_IP,
        dst,
        6,
        sport,
        dport,
        wire::tcp::flags::SYN,
        b"",
    )
}

/// A service address over vm2 and a pod on node B, TCP 80 -> 8080 and UDP 53 -> 5353,
/// set through the configuration path.
fn with_service(tb: &mut Testbed) -> Ipv4Addr {
    with_service_affinity(tb, false)
}

fn with_service_affinity(tb: &mut Testbed, affinity: bool) -> Ipv4Addr {
    let svc = Ipv4Addr::new(10, 1, 1, 200);
    tb.add_service(
        (7, svc),
        &[(NH_VM2, 0, VM2_IP), (NH_NODE_B, REMOTE_LABEL, REMOTE_IP)],
        &[(6, 80, 8080), (17, 53, 5353)],
        affinity,
    );
    svc
}

#[test]
fn a_service_address_is_translated_to_a_backend_and_its_target_port_and_back() {
    let mut tb = Testbed::new(1024);
    let svc = with_service(&mut tb);
    // Connections spread over both backends; each one is translated to its backend.
    let mut local = None;
    let mut remote = 0;
    for sport in 40000..40064u16 {
        let syn = vm1_syn(svc, sport, 80);
        match tb.run_one(VM1, syn, 1) {
            (Disposition::Tx(VM2), out) => {
                let o = decode(&out);
                assert_eq!(
                    (o.src, o.dst, o.sport, o.dport),
                    (VM1_IP, VM2_IP, sport, 8080)
                );
                assert_eq!(o.dst_mac, VM2_MAC.0);
                local.get_or_insert(sport);
            }
            (Disposition::Tx(FABRIC), out) => {
                // MPLSoUDP to node B: the inner packet goes to the remote backend.
                let inner = &out[14 + 20 + 8 + 4..];
                assert_eq!(inner[9], 6, "TCP inside");
                let (src, dst, _, l4) = decode_ip(inner);
                assert_eq!((src, dst), (VM1_IP, REMOTE_IP));
                assert_eq!(u16::from_be_bytes([l4[2], l4[3]]), 8080);
                remote += 1;
            }
            other => panic!("unexpected {:?}", other.0),
        }
    }
    let sport = local.expect("some connections to vm2");
    assert!(remote > 0, "some connections to node B");
    // vm2's answer leaves as the service.
    let reply = ipv4_frame(
        VM2_MAC,
        gw(),
        VM2_IP,
        VM1_IP,
        6,
        8080,
        sport,
        wire::tcp::flags::SYN | wire::tcp::flags::ACK,
        b"",
    );
    let (d, back) = tb.run_one(VM2, reply, 2);
    assert_eq!(d, Disposition::Tx(VM1));
    let b = decode(&back);
    assert_eq!((b.src, b.dst, b.sport, b.dport), (svc, VM1_IP, 80, sport));
    // Later packets keep their backend.
    let again = ipv4_frame(
        VM1_MAC,
        gw(),
        VM1_IP,
        svc,
        6,
        sport,
        80,
        wire::tcp::flags::ACK,
        b"x",
    );
    assert_eq!(tb.run_one(VM1, again, 3).0, Disposition::Tx(VM2));

    // UDP 53 -> 5353; a port the service does not serve, and ICMP, are dropped.
    let mut udp_targets = std::collections::BTreeSet::new();
    for sport in 50000..50016u16 {
        let (d, out) = tb.run_one(VM1, vm1_udp(svc, sport, 53, b"q"), 4);
        if d == Disposition::Tx(VM2) {
            udp_targets.insert(decode(&out).dport);
        }
    }
    assert_eq!(udp_targets.into_iter().collect::<Vec<_>>(), vec![5353]);
    assert_eq!(
        tb.run_one(VM1, vm1_udp(svc, 1, 54, b"q"), 5).0,
        Disposition::Drop(DropReason::NoServicePort)
    );
    let ping = ipv4_frame(VM1_MAC, gw(), VM1_IP, svc, 1, 9, 0, 0, b"ping");
    assert_eq!(
        tb.run_one(VM1, ping, 5).0,
        Disposition::Drop(DropReason::NoServicePort)
    );
}

/// A backend calling its own service and landing on itself (hairpin): it sees the
/// service's address as the source (its own would be dropped by its kernel), and its
/// answer comes back to it from the service's address and port.
#[test]
fn a_pod_reaching_itself_through_its_service_talks_to_the_service_both_ways() {
    let mut tb = Testbed::new(1024);
    let svc = with_service(&mut tb);
    let syn = |sport| {
        ipv4_frame(
            VM2_MAC,
            gw(),
            VM2_IP,
            svc,
            6,
            sport,
            80,
            wire::tcp::flags::SYN,
            b"",
        )
    };
    let mut hairpin = None;
    for s in 48000..48064u16 {
        if let (Disposition::Tx(VM2), out) = tb.run_one(VM2, syn(s), 1) {
            hairpin = Some((s, out));
            break;
        }
    }
    let (sport, out) = hairpin.expect("a connection that lands on vm2 itself");
    let o = decode(&out);
    assert_eq!(
        (o.src, o.sport, o.dst, o.dport),
        (svc, sport, VM2_IP, 8080),
        "from the service, to the target port"
    );
    // vm2 answers the service; it gets the answer as the service's.
    let answer = ipv4_frame(
        VM2_MAC,
        gw(),
        VM2_IP,
        svc,
        6,
        8080,
        sport,
        wire::tcp::flags::SYN | wire::tcp::flags::ACK,
        b"",
    );
    let (d, out) = tb.run_one(VM2, answer, 2);
    assert_eq!(d, Disposition::Tx(VM2));
    let o = decode(&out);
    assert_eq!((o.src, o.sport, o.dst, o.dport), (svc, 80, VM2_IP, sport));
    // Another client's connections are translated one way only, as before.
    let (d, out) = tb.run_one(VM1, vm1_syn(svc, 48100, 80), 3);
    if d == Disposition::Tx(VM2) {
        assert_eq!(decode(&out).src, VM1_IP);
    }
}

#[test]
fn client_ip_affinity_sends_all_of_a_clients_connections_to_one_backend() {
    let mut tb = Testbed::new(1024);
    let svc = with_service_affinity(&mut tb, true);
    let mut seen = std::collections::BTreeSet::new();
    for sport in 44000..44064u16 {
        let d = tb.run_one(VM1, vm1_syn(svc, sport, 80), 1).0;
        assert!(matches!(d, Disposition::Tx(VM2 | FABRIC)), "{d:?}");
        seen.insert(format!("{d:?}"));
    }
    assert_eq!(seen.len(), 1, "one backend for vm1: {seen:?}");
    // The configuration reads back with the affinity.
    let nh = tb.writer.tables().nexthops.get(7).unwrap().clone();
    let cfg = vrouter::config::nexthop_cfg(NhId(7), &nh);
    assert!(matches!(
        cfg.kind,
        NexthopKind::Service { affinity: true, .. }
    ));
}

#[test]
fn policy_decides_a_service_flow_on_the_backend_and_its_target_port() {
    let mut tb = Testbed::new(1024);
    let svc = with_service(&mut tb);
    // vm2 takes TCP 8080 only: the service's 80 (translated to 8080) gets in.
    vm2_ingress_only(&mut tb, "sg-8080", 6, 8080);
    let mut passed = 0;
    for sport in 41000..41064u16 {
        let syn = vm1_syn(svc, sport, 80);
        match tb.run_one(VM1, syn, 1).0 {
            Disposition::Tx(VM2) => passed += 1,
            Disposition::Tx(FABRIC) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(passed > 0);
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::PolicyDeny), 0);
}

#[test]
fn a_network_policy_decides_a_service_flow_on_the_service_network() {
    // The VIP's route says VN 3 (the service's network); vm2, the local backend, is in
    // VN 2. vm1's network policy passes VN 3 only, and the backend's port 8080 only.
    let mut tb = Testbed::new(1024);
    let svc = with_service(&mut tb);
    let attr = |vn| vrouter::policy::EndpointAttr { vn, tags: vec![] };
    tb.writer.set_attr(2, attr(2)).unwrap();
    tb.writer.set_attr(3, attr(3)).unwrap();
    let mut vm2 = tb.writer.tables().vifs.get(VM2.0).unwrap().as_ref().clone();
    vm2.attr = 2;
    tb.writer.add_vif(vm2).unwrap();
    let vip = RouteEntry {
        nh: NhId(7),
        label: 0,
        attr: 3,
    };
    tb.writer.add_route(RED, IpAddr::V4(svc), 32, vip).unwrap();
    let egress = |network| {
        RuleSet::new(
            "vn-red",
            vec![Rule {
                dst: vrouter::policy::EndpointMatch::Vn(3),
                ..Rule::any(Action::Pass)
            }],
            Action::Deny,
            network,
        )
    };
    let backend_port = RuleSet::new(
        "fw",
        vec![Rule {
            proto: Some(6),
            dport: (8080, 8080),
            ..Rule::any(Action::Pass)
        }],
        Action::Deny,
        false,
    );
    let set_vm1 = |tb: &mut Testbed, sets: Vec<RuleSet>| {
        let mut vm1 = tb.writer.tables().vifs.get(VM1.0).unwrap().as_ref().clone();
        vm1.policy = Some(Arc::new(Policy {
            ingress: vec![],
            egress: sets,
        }));
        tb.writer.add_vif(vm1).unwrap();
        tb.writer.publish();
    };
    set_vm1(&mut tb, vec![egress(true), backend_port.clone()]);
    let mut to_vm2 = 0;
    for sport in 42000..42032u16 {
        match tb.run_one(VM1, vm1_syn(svc, sport, 80), 1).0 {
            Disposition::Tx(VM2) => to_vm2 += 1,
            Disposition::Tx(FABRIC) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(to_vm2 > 0);
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::PolicyDeny), 0);
    // The same rules as a security group's (not a network's) see the backend's VN (2, or
    // the remote backend's route's) and
    // deny; so does a network rule if the VIP's route is not in VN 3.
    set_vm1(&mut tb, vec![egress(false)]);
    assert_eq!(
        tb.run_one(VM1, vm1_syn(svc, 43000, 80), 2).0,
        Disposition::Drop(DropReason::PolicyDeny)
    );
    set_vm1(&mut tb, vec![egress(true)]);
    tb.writer
        .add_route(RED, IpAddr::V4(svc), 32, RouteEntry { attr: 2, ..vip })
        .unwrap();
    tb.writer.publish();
    assert_eq!(
        tb.run_one(VM1, vm1_syn(svc, 43001, 80), 3).0,
        Disposition::Drop(DropReason::PolicyDeny)
    );
}

/// Sends SYNs from the fabric (`frame(sport)`) until one is translated to vm2 (target
/// port 8080; the others go to the backend on node B) and returns its source port.
fn syn_to_vm2(tb: &mut Testbed, client: Ipv4Addr, frame: impl Fn(u16) -> Vec<u8>) -> u16 {
    for s in 45000..45064u16 {
        match tb.run_one(FABRIC, frame(s), 1) {
            (Disposition::Tx(VM2), out) => {
                let o = decode(&out);
                assert_eq!((o.src, o.dst, o.dport), (client, VM2_IP, 8080));
                return s;
            }
            (Disposition::Tx(FABRIC), _) => {}
            (other, _) => panic!("unexpected {other:?}"),
        }
    }
    panic!("no connection to vm2");
}

/// vm2's SYN-ACK to a client outside: where it went, and the frame.
fn vm2_answers(tb: &mut Testbed, client: Ipv4Addr, sport: u16) -> (Disposition, Vec<u8>) {
    let reply = ipv4_frame(
        VM2_MAC,
        gw(),
        VM2_IP,
        client,
        6,
        8080,
        sport,
        wire::tcp::flags::SYN | wire::tcp::flags::ACK,
        b"",
    );
    tb.run_one(VM2, reply, 2)
}

/// The fabric VRF's default: out of the fabric to the gateway (nexthop 8).
fn gateway_default(tb: &mut Testbed) {
    let gw_cfg = NexthopCfg {
        id: 8,
        kind: NexthopKind::Encap {
            vif: FABRIC.0,
            dmac: GATEWAY_MAC.to_string(),
            smac: FABRIC_MAC.to_string(),
        },
    };
    vrouter::config::apply_nexthop(&mut tb.writer, &gw_cfg).unwrap();
    let entry = RouteEntry {
        nh: NhId(8),
        label: 0,
        attr: 0,
    };
    tb.writer
        .add_route(FABRIC_VRF, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, entry)
        .unwrap();
    tb.writer.publish();
}

#[test]
fn a_node_port_reaches_the_service_from_the_fabric_and_from_pods_and_the_rest_is_the_hosts() {
    let mut tb = Testbed::new(1024);
    with_service(&mut tb);
    gateway_default(&mut tb);
    // The node's address: TCP 30080 is the service's port 80; the rest is the host's.
    for (id, kind) in [
        (9, NexthopKind::Receive { vif: HOST.0 }),
        (
            10,
            NexthopKind::NodePorts {
                ports: vec![vrouter::config::NodePortCfg {
                    proto: 6,
                    port: 30080,
                    service: 7,
                    service_port: 80,
                }],
                host: 9,
            },
        ),
    ] {
        vrouter::config::apply_nexthop(&mut tb.writer, &NexthopCfg { id, kind }).unwrap();
    }
    let node = RouteEntry {
        nh: NhId(10),
        label: 0,
        attr: 0,
    };
    for vrf in [FABRIC_VRF, RED] {
        tb.writer
            .add_route(vrf, IpAddr::V4(NODE_A), 32, node)
            .unwrap();
    }
    tb.writer.publish();
    let client = Ipv4Addr::new(198, 51, 100, 21);
    let to_node = |sport, dport| {
        ipv4_frame(
            GATEWAY_MAC,
            FABRIC_MAC,
            client,
            NODE_A,
            6,
            sport,
            dport,
            wire::tcp::flags::SYN,
            b"",
        )
    };
    // From outside: a backend on its target port; vm2 answers as the node's port.
    let sport = syn_to_vm2(&mut tb, client, |s| to_node(s, 30080));
    let (d, out) = vm2_answers(&mut tb, client, sport);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let o = decode(&out);
    assert_eq!(
        (o.src, o.dst, o.sport, o.dport, o.dst_mac),
        (NODE_A, client, 30080, sport, GATEWAY_MAC.0)
    );
    // A route change in vm2's VRF, which has no route to the client (the client is
    // routed in the fabric's, where the flow was set up): the answers still leave for
    // the gateway.
    tb.writer
        .del_route(RED, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        .unwrap();
    tb.writer.publish();
    let (d, out) = vm2_answers(&mut tb, client, sport);
    assert_eq!(d, Disposition::Tx(FABRIC));
    assert_eq!(decode(&out).dst_mac, GATEWAY_MAC.0);
    // Another port of the node: the host's, and no flow for it.
    let flows = tb.pipeline.stats.flows_created;
    assert_eq!(
        tb.run_one(FABRIC, to_node(46100, 22), 3).0,
        Disposition::Tx(HOST)
    );
    assert_eq!(tb.pipeline.stats.flows_created, flows);
    // From a pod: the node port too; another port of the node goes to the host.
    let (d, _) = tb.run_one(VM1, vm1_syn(NODE_A, 46200, 30080), 4);
    assert!(matches!(d, Disposition::Tx(VM2 | FABRIC)), "{d:?}");
    assert_eq!(
        tb.run_one(VM1, vm1_syn(NODE_A, 46201, 22), 4).0,
        Disposition::Tx(HOST)
    );
}

/// The service (nexthop 7) with an external address routed in the fabric VRF, whose
/// default goes to the gateway; the external address.
fn with_external_service(tb: &mut Testbed) -> Ipv4Addr {
    with_service(tb);
    let external = Ipv4Addr::new(203, 0, 113, 10);
    let entry = RouteEntry {
        nh: NhId(7),
        label: 0,
        attr: 0,
    };
    tb.writer
        .add_route(FABRIC_VRF, IpAddr::V4(external), 32, entry)
        .unwrap();
    tb.writer.publish();
    gateway_default(tb);
    external
}

#[test]
fn an_external_ip_routed_in_the_fabric_vrf_reaches_the_service_from_outside() {
    // The service's external address is routed in the fabric VRF (its network is joined
    // to ip-fabric), and the fabric VRF's default goes to the gateway.
    let mut tb = Testbed::new(1024);
    let external = with_external_service(&mut tb);
    let client = Ipv4Addr::new(198, 51, 100, 20);
    let syn = |dmac, sport| {
        ipv4_frame(
            GATEWAY_MAC,
            dmac,
            client,
            external,
            6,
            sport,
            80,
            wire::tcp::flags::SYN,
            b"",
        )
    };
    // To our fabric MAC: translated to a backend on its target port; vm2's answer leaves
    // through the gateway as the external address.
    let sport = syn_to_vm2(&mut tb, client, |s| syn(FABRIC_MAC, s));
    let (d, out) = vm2_answers(&mut tb, client, sport);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let o = decode(&out);
    assert_eq!(
        (o.src, o.dst, o.sport, o.dport),
        (external, client, 80, sport)
    );
    assert_eq!((o.src_mac, o.dst_mac), (FABRIC_MAC.0, GATEWAY_MAC.0));
    // A frame for another MAC on the fabric, or for an underlay address, is the host's.
    let other = MacAddr([0x02, 0xfa, 0, 0, 0, 0x33]);
    assert_eq!(
        tb.run_one(FABRIC, syn(other, 45100), 3).0,
        Disposition::Tx(HOST)
    );
    let underlay = ipv4_frame(
        GATEWAY_MAC,
        FABRIC_MAC,
        client,
        NODE_B,
        6,
        45101,
        22,
        wire::tcp::flags::SYN,
        b"",
    );
    assert_eq!(tb.run_one(FABRIC, underlay, 3).0, Disposition::Tx(HOST));
}

/// Both halves of a connection from outside the cluster to a backend on another node:
/// the node that translated it (here: a connection that went to node B's backend) finds
/// the backend's reply, sent back to its fabric MAC unencapsulated, in its flow table and
/// answers the client as the external address; the backend's node (here: vm1, reached
/// through a tunnel from node B) returns its replies to node B, whose own route in the
/// fabric VRF says how, instead of sending them the network's way out (no route, or the
/// SNAT default).
#[test]
fn replies_to_outside_clients_go_back_through_the_node_that_translated() {
    let mut tb = Testbed::new(1024);
    let external = with_external_service(&mut tb);
    let entry = |nh| RouteEntry {
        nh,
        label: 0,
        attr: 0,
    };

    // The translating node: a SYN that went to node B's backend (through the tunnel).
    let client = Ipv4Addr::new(198, 51, 100, 30);
    let mut sport = None;
    for s in 46000..46064u16 {
        let syn = ipv4_frame(
            GATEWAY_MAC,
            FABRIC_MAC,
            client,
            external,
            6,
            s,
            80,
            wire::tcp::flags::SYN,
            b"",
        );
        if let (Disposition::Tx(FABRIC), out) = tb.run_one(FABRIC, syn, 1) {
            // Tunnelled to node B (outer() checks the outer headers).
            assert!(!outer(&out, 17).is_empty());
            sport = Some(s);
            break;
        }
    }
    let sport = sport.expect("a connection to node B's backend");
    let reply = |src_mac| {
        ipv4_frame(
            src_mac,
            FABRIC_MAC,
            REMOTE_IP,
            client,
            6,
            8080,
            sport,
            wire::tcp::flags::SYN | wire::tcp::flags::ACK,
            b"",
        )
    };
    let (d, out) = tb.run_one(FABRIC, reply(NODE_B_MAC), 2);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let o = decode(&out);
    assert_eq!(
        (o.src, o.dst, o.sport, o.dport),
        (external, client, 80, sport),
        "answered as the external address"
    );
    assert_eq!((o.src_mac, o.dst_mac), (FABRIC_MAC.0, GATEWAY_MAC.0));
    // Underlay traffic through the node that no flow holds stays the host's.
    let stray = ipv4_frame(
        NODE_B_MAC,
        FABRIC_MAC,
        REMOTE_IP,
        Ipv4Addr::new(198, 51, 100, 99),
        6,
        8080,
        1234,
        wire::tcp::flags::ACK,
        b"",
    );
    assert_eq!(tb.run_one(FABRIC, stray, 2).0, Disposition::Tx(HOST));

    // The backend's node: node B tunnels a translated SYN from a client to vm1.
    let syn_from = |client: Ipv4Addr| {
        let inner = ipv4_frame(
            MacAddr([2, 0xb, 0, 0, 0, 5]),
            gw(),
            client,
            VM1_IP,
            6,
            47000,
            8080,
            wire::tcp::flags::SYN,
            b"",
        );
        from_node_b(TunnelKind::MplsUdp, VM1_LABEL, &inner[14..])
    };
    let vm1_answers = |tb: &mut Testbed, client: Ipv4Addr| {
        let reply = ipv4_frame(
            VM1_MAC,
            gw(),
            VM1_IP,
            client,
            6,
            8080,
            47000,
            wire::tcp::flags::SYN | wire::tcp::flags::ACK,
            b"",
        );
        tb.run_one(VM1, reply, 4)
    };
    // Without a route of node B's own, the reply takes the network's way out (here its
    // SNAT default's nexthop), never reaching node B.
    let first = Ipv4Addr::new(198, 51, 100, 31);
    assert_eq!(
        tb.run_one(FABRIC, syn_from(first), 3).0,
        Disposition::Tx(VM1)
    );
    let (_, out) = vm1_answers(&mut tb, first);
    assert_ne!(decode(&out).dst_mac, NODE_B_MAC.0);
    // With it (the agent makes one per node it learns routes from): back to node B as
    // it is, for node B to translate; the SNAT default does not take it.
    let direct = NexthopCfg {
        id: 11,
        kind: NexthopKind::Encap {
            vif: FABRIC.0,
            dmac: NODE_B_MAC.to_string(),
            smac: FABRIC_MAC.to_string(),
        },
    };
    vrouter::config::apply_nexthop(&mut tb.writer, &direct).unwrap();
    tb.writer
        .add_route(FABRIC_VRF, IpAddr::V4(NODE_B), 32, entry(NhId(11)))
        .unwrap();
    tb.writer.publish();
    let second = Ipv4Addr::new(198, 51, 100, 32);
    assert_eq!(
        tb.run_one(FABRIC, syn_from(second), 3).0,
        Disposition::Tx(VM1)
    );
    let (d, out) = vm1_answers(&mut tb, second);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let o = decode(&out);
    assert_eq!(
        (o.src, o.dst, o.sport, o.dport),
        (VM1_IP, second, 8080, 47000)
    );
    assert_eq!((o.src_mac, o.dst_mac), (FABRIC_MAC.0, NODE_B_MAC.0));
}

#[test]
fn a_flow_whose_destination_becomes_a_service_is_set_up_again_and_translated() {
    let mut tb = Testbed::new(1024);
    let dst = Ipv4Addr::new(10, 1, 2, 77);
    // Before: an address behind node B, reached through the tunnel as it is.
    assert_eq!(
        tb.run_one(VM1, vm1_syn(dst, 47000, 80), 1).0,
        Disposition::Tx(FABRIC)
    );
    // The address becomes a service (the service nexthop of `with_service`).
    with_service(&mut tb);
    let entry = RouteEntry {
        nh: NhId(7),
        label: 0,
        attr: 0,
    };
    tb.writer
        .add_route(RED, IpAddr::V4(dst), 32, entry)
        .unwrap();
    tb.writer.publish();
    let again = ipv4_frame(
        VM1_MAC,
        gw(),
        VM1_IP,
        dst,
        6,
        47000,
        80,
        wire::tcp::flags::ACK,
        b"x",
    );
    let (d, out) = tb.run_one(VM1, again, 2);
    match d {
        Disposition::Tx(VM2) => assert_eq!(decode(&out).dport, 8080),
        Disposition::Tx(FABRIC) => {
            let inner = &out[14 + 20 + 8 + 4..];
            let (_, to, _, l4) = decode_ip(inner);
            assert_eq!(to, REMOTE_IP);
            assert_eq!(u16::from_be_bytes([l4[2], l4[3]]), 8080);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(tb.pipeline.stats.flows_reevaluated, 1);
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::InvalidNexthop), 0);
}

#[test]
fn route_change_moves_existing_flows_to_the_new_nexthop() {
    let mut tb = Testbed::new(1024);
    let f = || vm1_udp(REMOTE_IP, 5555, 7, b"m");
    assert_eq!(tb.run_one(VM1, f(), 1).0, Disposition::Tx(FABRIC));
    // REMOTE_IP moves to this node (vm2's interface).
    tb.writer
        .add_route(
            RED,
            IpAddr::V4(REMOTE_IP),
            32,
            RouteEntry {
                nh: NH_VM2,
                label: 0,
                attr: 0,
            },
        )
        .unwrap();
    tb.writer.publish();
    assert_eq!(tb.run_one(VM1, f(), 2).0, Disposition::Tx(VM2));
    assert_eq!(tb.pipeline.stats.flows_reresolved, 1);
    assert_eq!(tb.pipeline.stats.flows_created, 1, "same flow, re-resolved");
    // The route goes away: the flow now drops with no_route.
    tb.writer.del_route(RED, IpAddr::V4(REMOTE_IP), 32).unwrap();
    tb.writer
        .del_route(RED, IpAddr::V4(Ipv4Addr::new(10, 1, 2, 0)), 24)
        .unwrap();
    tb.writer
        .del_route(RED, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        .unwrap();
    tb.writer.publish();
    assert_eq!(
        tb.run_one(VM1, f(), 3).0,
        Disposition::Drop(DropReason::NoRoute)
    );
}

#[test]
fn snat_translates_to_the_node_address_and_back() {
    let mut tb = Testbed::new(1024);
    let outside = Ipv4Addr::new(198, 51, 100, 7);
    let syn = ipv4_frame(
        VM1_MAC,
        gw(),
        VM1_IP,
        outside,
        6,
        41000,
        443,
        wire::tcp::flags::SYN,
        b"",
    );
    let (d, out) = tb.run_one(VM1, syn, 1);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let o = decode(&out);
    assert_eq!((o.src, o.dst, o.dport), (NODE_A, outside, 443));
    assert_eq!((o.dst_mac, o.src_mac), (GATEWAY_MAC.0, FABRIC_MAC.0));
    assert!(
        (56000..=57023).contains(&o.sport),
        "TCP SNAT port {}",
        o.sport
    );
    assert_eq!(tb.snat.tcp.in_use(), 1);

    let synack = ipv4_frame(
        GATEWAY_MAC,
        FABRIC_MAC,
        outside,
        NODE_A,
        6,
        443,
        o.sport,
        wire::tcp::flags::SYN | wire::tcp::flags::ACK,
        b"",
    );
    let (d, back) = tb.run_one(FABRIC, synack, 2);
    assert_eq!(d, Disposition::Tx(VM1));
    let b = decode(&back);
    assert_eq!(
        (b.src, b.dst, b.sport, b.dport),
        (outside, VM1_IP, 443, 41000)
    );
    assert_eq!(b.dst_mac, VM1_MAC.0);

    // ICMP echo is translated by identifier; UDP uses the UDP range.
    let ping = ipv4_frame(VM1_MAC, gw(), VM1_IP, outside, 1, 777, 0, 0, b"ping");
    let o = decode(&tb.run_one(VM1, ping, 3).1);
    assert!((57024..=58047).contains(&o.sport), "echo id {}", o.sport);
    let reply = {
        let mut f = ipv4_frame(
            GATEWAY_MAC,
            FABRIC_MAC,
            outside,
            NODE_A,
            1,
            o.sport,
            0,
            0,
            b"ping",
        );
        f[34] = wire::icmp::ECHO_REPLY_V4;
        wire::icmp::Packet::new_unchecked(&mut f[34..]).fill_checksum_v4();
        f
    };
    let (d, back) = tb.run_one(FABRIC, reply, 4);
    assert_eq!(d, Disposition::Tx(VM1));
    let b = decode(&back);
    assert_eq!((b.dst, b.sport), (VM1_IP, 777));

    // Aging frees the ports.
    tb.pipeline
        .flows()
        .age(1_000_000, &vrouter::flow::AgingConfig::millis());
    assert_eq!((tb.snat.tcp.in_use(), tb.snat.udp.in_use()), (0, 0));
}

#[test]
fn snat_port_exhaustion_is_counted_and_refused() {
    let pools = SnatPools::new(PortPool::new(56000, 56001), PortPool::new(57024, 57024));
    let mut tb = Testbed::with_snat(1024, pools);
    // Every port for vm1 (the default share is a quarter of the pool).
    let mut g = tb.writer.tables().global.as_ref().clone();
    g.vif_max_snat_ports = Some(16);
    tb.writer.set_global(g).unwrap();
    tb.writer.publish();
    let outside = Ipv4Addr::new(198, 51, 100, 7);
    let mut results = Vec::new();
    for sport in 0..3u16 {
        let f = ipv4_frame(
            VM1_MAC,
            gw(),
            VM1_IP,
            outside,
            6,
            1000 + sport,
            80,
            wire::tcp::flags::SYN,
            b"",
        );
        results.push(tb.run_one(VM1, f, 1).0);
    }
    assert_eq!(
        results[..2],
        [Disposition::Tx(FABRIC), Disposition::Tx(FABRIC)]
    );
    assert_eq!(results[2], Disposition::Drop(DropReason::NatNoPort));
    assert_eq!(tb.snat.tcp.exhausted(), 1);
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::NatNoPort), 1);
}

#[test]
fn bad_input_is_dropped_with_a_reason_never_a_panic() {
    let mut tb = Testbed::new(64);
    let good = vm1_udp(VM2_IP, 1, 2, b"abc");
    let mut bad_csum = good.clone();
    bad_csum[24] ^= 0xff;
    // A first fragment (more fragments) with only 4 bytes of the UDP header.
    let mut frag = good[..14 + 24].to_vec();
    frag[20] = 0x20;
    frag[16..18].copy_from_slice(&24u16.to_be_bytes());
    wire::ipv4::Packet::new_unchecked(&mut frag[14..34]).fill_checksum();
    let no_route = vm1_udp(Ipv4Addr::new(10, 1, 1, 200), 1, 2, b"abc");
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..20].to_vec(), DropReason::InvalidPacket),
        (good[..40].to_vec(), DropReason::InvalidPacket),
        (bad_csum, DropReason::BadChecksum),
        (frag, DropReason::FragmentTiny),
        (vec![0u8; 60], DropReason::InvalidProtocol),
    ];
    for (frame, reason) in cases {
        assert_eq!(
            tb.run_one(VM1, frame, 1).0,
            Disposition::Drop(reason),
            "{reason:?}"
        );
    }
    // 10.1.1.200 falls under the SNAT default route: remove it to see no_route.
    tb.writer
        .del_route(RED, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        .unwrap();
    tb.writer.publish();
    assert_eq!(
        tb.run_one(VM1, no_route, 1).0,
        Disposition::Drop(DropReason::NoRoute)
    );
    assert_eq!(
        tb.run_one(vrouter::tables::VifId(40), good.clone(), 1).0,
        Disposition::Drop(DropReason::InvalidVif)
    );
    // Host and non-tunnel fabric traffic are cross-connected.
    assert_eq!(tb.run_one(HOST, good.clone(), 1).0, Disposition::Tx(FABRIC));
    let to_host = ipv4_frame(
        NODE_B_MAC,
        FABRIC_MAC,
        NODE_B,
        NODE_A,
        6,
        1,
        22,
        wire::tcp::flags::SYN,
        b"",
    );
    assert_eq!(tb.run_one(FABRIC, to_host, 1).0, Disposition::Tx(HOST));
    assert_eq!(tb.pipeline.stats.drops.total(), 7);
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    fn valid_frames() -> Vec<Vec<u8>> {
        let inner = vm1_udp(VM1_IP, 1, 2, b"x");
        vec![
            vm1_udp(VM2_IP, 1000, 53, b"payload"),
            vm1_udp(REMOTE_IP, 1000, 53, b"payload"),
            ipv4_frame(
                VM1_MAC,
                gw(),
                VM1_IP,
                VM2_IP,
                6,
                1,
                80,
                wire::tcp::flags::SYN,
                b"",
            ),
            from_node_b(TunnelKind::MplsUdp, VM1_LABEL, &inner[14..]),
            from_node_b(TunnelKind::MplsGre, VM1_LABEL, &inner[14..]),
            from_node_b(TunnelKind::Vxlan, VNI, &inner),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Valid frames with bytes flipped and lengths cut, on every kind of interface:
        /// each gets a disposition, none panics.
        #[test]
        fn mutated_frames_never_panic(
            which in 0usize..6, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in any::<usize>(), vif in 0usize..3,
        ) {
            let mut tb = Testbed::new(256);
            let mut f = valid_frames()[which].clone();
            for (at, x) in flips {
                let n = f.len();
                f[at % n] ^= x;
            }
            let keep = f.len() - cut % (f.len() / 2);
            f.truncate(keep);
            let out = tb.run([VM1, FABRIC, HOST][vif], &[f], 1);
            prop_assert_eq!(out.len(), 1);
            prop_assert_eq!(tb.pipeline.stats.rx, 1);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), vif in 0usize..3) {
            let mut tb = Testbed::new(64);
            let out = tb.run([VM1, FABRIC, HOST][vif], &[bytes], 1);
            prop_assert_eq!(out.len(), 1);
        }
    }
}

#[test]
fn arp_inside_vxlan_is_answered_back_through_the_tunnel() {
    let mut tb = Testbed::new(64);
    let mut req = arp_request(Ipv4Addr::new(10, 1, 1, 3));
    req[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x50]); // a kernel VTEP's device
    req[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 0x50]);
    req[28..32].copy_from_slice(&[10, 1, 1, 50]);
    let (d, out) = tb.run_one(FABRIC, from_node_b(TunnelKind::Vxlan, VNI, &req), 1);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let o = decode(&out);
    assert_eq!(
        (o.src, o.dst, o.dport),
        (NODE_A, NODE_B, 4789),
        "turned around to the VTEP"
    );
    assert_eq!((o.src_mac, o.dst_mac), (FABRIC_MAC.0, NODE_B_MAC.0));
    assert_eq!(wire::vxlan::Repr::parse(&o.payload).unwrap().vni, VNI);
    let inner = &o.payload[8..];
    let reply =
        wire::arp::Repr::parse(&wire::arp::Packet::new_checked(&inner[14..]).unwrap()).unwrap();
    assert_eq!(reply.op, wire::arp::Operation::Reply);
    assert_eq!((reply.sha, reply.spa), (gw(), Ipv4Addr::new(10, 1, 1, 3)));
    assert_eq!(
        (reply.tha, reply.tpa),
        (MacAddr([2, 0, 0, 0, 0, 0x50]), Ipv4Addr::new(10, 1, 1, 50))
    );
    assert_eq!(&inner[..6], &[2, 0, 0, 0, 0, 0x50]);
    assert_eq!(tb.pipeline.stats.arp_replies, 1);
}

#[test]
fn a_vn_reached_through_a_policy_answers_in_its_own_vrf_and_vn_rules_decide() {
    // VM2 moves to a second VN (VRF 2, VN 2); the VRFs leak each other's VM route, as the
    // agent does for a network policy between the two VNs. VM1's egress rules match on VN.
    let mut tb = Testbed::new(1024);
    let blue = vrouter::tables::VrfId(2);
    let attr = |vn| vrouter::policy::EndpointAttr { vn, tags: vec![] };
    tb.writer.set_attr(1, attr(1)).unwrap();
    tb.writer.set_attr(2, attr(2)).unwrap();
    tb.writer.add_vrf(blue).unwrap();
    let mut vm1 = tb.writer.tables().vifs.get(VM1.0).unwrap().as_ref().clone();
    vm1.attr = 1;
    vm1.policy = Some(Arc::new(Policy {
        ingress: vec![],
        egress: vec![RuleSet::new(
            "vn-red",
            vec![Rule {
                proto: Some(6),
                dst: vrouter::policy::EndpointMatch::Vn(2),
                ..Rule::any(Action::Pass)
            }],
            Action::Deny,
            false,
        )],
    }));
    tb.writer.add_vif(vm1).unwrap();
    let mut vm2 = tb.writer.tables().vifs.get(VM2.0).unwrap().as_ref().clone();
    vm2.vrf = blue;
    vm2.attr = 2;
    tb.writer.add_vif(vm2).unwrap();
    let entry = |nh| RouteEntry {
        nh,
        label: 0,
        attr: 0,
    };
    tb.writer
        .add_route(blue, IpAddr::V4(VM2_IP), 32, entry(NH_VM2))
        .unwrap();
    tb.writer
        .add_route(blue, IpAddr::V4(VM1_IP), 32, entry(NH_VM1))
        .unwrap();
    tb.writer.publish();

    let syn = ipv4_frame(
        VM1_MAC,
        gw(),
        VM1_IP,
        VM2_IP,
        6,
        40000,
        80,
        wire::tcp::flags::SYN,
        b"",
    );
    let (d, out) = tb.run_one(VM1, syn, 1);
    assert_eq!(d, Disposition::Tx(VM2));
    assert_eq!(decode(&out).dst, VM2_IP);
    let synack = ipv4_frame(
        VM2_MAC,
        gw(),
        VM2_IP,
        VM1_IP,
        6,
        80,
        40000,
        wire::tcp::flags::SYN | wire::tcp::flags::ACK,
        b"",
    );
    let (d, out) = tb.run_one(VM2, synack, 2);
    assert_eq!(d, Disposition::Tx(VM1), "the reply finds the reverse entry");
    assert_eq!(decode(&out).dst_mac, VM1_MAC.0);
    assert_eq!(
        tb.pipeline.stats.flows_created, 1,
        "one pair, no second setup"
    );
    assert_eq!(tb.pipeline.stats.flow_hits, 1);

    // The VN rule passes TCP only.
    assert_eq!(
        tb.run_one(VM1, vm1_udp(VM2_IP, 5000, 53, b"q"), 3).0,
        Disposition::Drop(DropReason::PolicyDeny)
    );
}

/// The host reaches vm1 (and vm1 the host) once the fabric VRF holds vm1's route and the
/// VN's VRF the node's address as a receive nexthop, as a policy with the ip-fabric
/// network leaks them. Everything else from the host stays the underlay's.
#[test]
fn host_and_pods_reach_each_other_through_vhost0_when_routes_are_leaked() {
    use vrouter::tables::{Nexthop, NhId};
    let mut tb = Testbed::new(1024);
    let host_mac = FABRIC_MAC;
    let from_host = |dst: Ipv4Addr, sport: u16| {
        ipv4_frame(
            host_mac,
            gw(),
            NODE_A,
            dst,
            6,
            sport,
            80,
            wire::tcp::flags::SYN,
            b"",
        )
    };
    // Nothing leaked yet: the host's packet to vm1 is underlay traffic.
    assert_eq!(
        tb.run_one(HOST, from_host(VM1_IP, 1000), 1).0,
        Disposition::Tx(FABRIC)
    );
    let receive = NhId(9);
    tb.writer
        .set_nexthop(receive, Nexthop::Receive { vif: HOST })
        .unwrap();
    let entry = |nh| RouteEntry {
        nh,
        label: 0,
        attr: 0,
    };
    for (vrf, addr, nh) in [
        (FABRIC_VRF, VM1_IP, NH_VM1),
        (FABRIC_VRF, NODE_A, receive),
        (RED, NODE_A, receive),
    ] {
        tb.writer
            .add_route(vrf, IpAddr::V4(addr), 32, entry(nh))
            .unwrap();
    }
    tb.writer.publish();

    // ARP from the host for vm1 is answered by the vrouter; for another address it is
    // the underlay's.
    let mut arp = arp_request(VM1_IP);
    arp[6..12].copy_from_slice(&host_mac.0);
    let r = wire::arp::Repr {
        op: wire::arp::Operation::Request,
        sha: host_mac,
        spa: NODE_A,
        tha: MacAddr::ZERO,
        tpa: VM1_IP,
    };
    r.emit(&mut arp[14..]).unwrap();
    let (d, reply) = tb.run_one(HOST, arp.clone(), 2);
    assert_eq!(d, Disposition::Tx(HOST));
    let a = wire::arp::Repr::parse(&wire::arp::Packet::new_checked(&reply[14..]).unwrap()).unwrap();
    assert_eq!(
        (a.op, a.sha, a.spa),
        (wire::arp::Operation::Reply, gw(), VM1_IP)
    );
    let mut other = arp.clone();
    wire::arp::Repr {
        tpa: Ipv4Addr::new(192, 0, 2, 254),
        ..r
    }
    .emit(&mut other[14..])
    .unwrap();
    assert_eq!(tb.run_one(HOST, other, 2).0, Disposition::Tx(FABRIC));

    // Host -> vm1 and vm1's answer back to the host's MAC.
    let (d, out) = tb.run_one(HOST, from_host(VM1_IP, 1001), 3);
    assert_eq!(d, Disposition::Tx(VM1));
    let o = decode(&out);
    assert_eq!(
        (o.dst_mac, o.src, o.dst, o.ttl),
        (VM1_MAC.0, NODE_A, VM1_IP, 63)
    );
    let answer = ipv4_frame(VM1_MAC, gw(), VM1_IP, NODE_A, 6, 80, 1001, 0x12, b"");
    let (d, out) = tb.run_one(VM1, answer, 4);
    assert_eq!(d, Disposition::Tx(HOST));
    let o = decode(&out);
    assert_eq!((o.dst_mac, o.src_mac), (host_mac.0, gw().0));
    assert_eq!((o.src, o.dst, o.sport, o.dport), (VM1_IP, NODE_A, 80, 1001));
    assert_eq!(
        tb.pipeline.stats.flows_created, 1,
        "the answer hit the pair"
    );

    // vm1 -> host (the receive route in the VN's VRF), and the host's reply back.
    let (d, out) = tb.run_one(VM1, vm1_udp(NODE_A, 7000, 53, b"q"), 5);
    assert_eq!(d, Disposition::Tx(HOST));
    assert_eq!(decode(&out).dst_mac, host_mac.0);
    let back = ipv4_frame(host_mac, gw(), NODE_A, VM1_IP, 17, 53, 7000, 0, b"a");
    assert_eq!(tb.run_one(HOST, back, 6).0, Disposition::Tx(VM1));
    assert_eq!(tb.pipeline.stats.flows_created, 2);

    // The host's own underlay traffic still leaves on the fabric untouched.
    let under = ipv4_frame(host_mac, NODE_B_MAC, NODE_A, NODE_B, 17, 1, 2, 0, b"u");
    let (d, out) = tb.run_one(HOST, under.clone(), 7);
    assert_eq!((d, out), (Disposition::Tx(FABRIC), under));
}

/// A SYN from vm1 to node B's pod carrying MSS 1460 (and other options), built by
/// etherparse.
fn vm1_syn_with_mss(sport: u16) -> Vec<u8> {
    use etherparse::{PacketBuilder, TcpOptionElement};
    let b = PacketBuilder::ethernet2(VM1_MAC.0, gw().0)
        .ipv4(VM1_IP.octets(), REMOTE_IP.octets(), 64)
        .tcp(sport, 80, 1, 64240)
        .syn()
        .options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
        ])
        .unwrap();
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

/// The MSS option of a TCP segment inside `ip` (a bare IPv4 packet), its checksum checked.
fn mss_of(ip: &[u8]) -> Option<u16> {
    use etherparse::TcpOptionElement;
    let p = SlicedPacket::from_ip(ip).expect("inner IP decodes");
    let (Some(NetSlice::Ipv4(v4)), Some(TransportSlice::Tcp(t))) = (p.net, p.transport) else {
        panic!("not TCP over IPv4");
    };
    let h = v4.header();
    assert_eq!(
        t.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
        t.checksum(),
        "TCP checksum after the clamp"
    );
    t.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    })
}

#[test]
fn syns_into_a_tunnel_get_the_mss_that_fits_the_fabric_after_each_encapsulation() {
    // Fabric MTU 1500: the inner IP packet may be 1468 (MPLSoUDP: IP 20 + UDP 8 + label
    // 4), 1472 (MPLSoGRE: IP 20 + GRE 4 + label 4), 1450 (VXLAN: IP 20 + UDP 8 + VXLAN 8
    // + the inner Ethernet 14); less 40 for the inner IP and TCP headers.
    for (kind, sport, mss, inner_at) in [
        (TunnelKind::MplsUdp, 5001, 1428, 32),
        (TunnelKind::MplsGre, 5002, 1432, 28),
        (TunnelKind::Vxlan, 5003, 1410, 50),
    ] {
        let mut tb = Testbed::new(1024);
        set_encap(&mut tb, kind);
        let (d, out) = tb.run_one(VM1, vm1_syn_with_mss(sport), 1);
        assert_eq!(d, Disposition::Tx(FABRIC), "{kind:?}");
        assert_eq!(mss_of(&out[14 + inner_at..]), Some(mss), "{kind:?}");
        assert_eq!(tb.pipeline.stats.mss_clamped, 1, "{kind:?}");
    }
    // A segment that is not a SYN keeps its options; a SYN with a small MSS keeps it.
    let mut tb = Testbed::new(1024);
    let (_, out) = tb.run_one(VM1, vm1_syn(REMOTE_IP, 5004, 80), 1);
    assert_eq!(mss_of(&out[14 + 32..]), None);
    assert_eq!(tb.pipeline.stats.mss_clamped, 0);
}

#[test]
fn a_df_packet_too_big_for_the_tunnel_gets_fragmentation_needed_with_the_mtu_that_fits() {
    let mut tb = Testbed::new(1024);
    // 1472 bytes of UDP payload: a 1500-byte IP packet, DF set (as ping -M do sends).
    let big = vm1_udp(REMOTE_IP, 4100, 7, &[0x5a; 1472]);
    let (d, out) = tb.run_one(VM1, big.clone(), 1);
    assert_eq!(d, Disposition::Tx(VM1), "the error goes back to the sender");
    let p = SlicedPacket::from_ethernet(&out).expect("the error decodes");
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        panic!("not Ethernet")
    };
    assert_eq!((eth.source(), eth.destination()), (gw().0, VM1_MAC.0));
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!(
        (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination)),
        (NODE_A, VM1_IP)
    );
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not ICMP: {:?}", p.transport)
    };
    use etherparse::{Icmpv4Type, icmpv4::DestUnreachableHeader};
    // MPLSoUDP leaves 1500 - 20 - 8 - 4 = 1468 bytes for the inner packet.
    assert_eq!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1468
        })
    );
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type().calc_checksum(icmp.payload())
    );
    // It quotes the packet's IP header and the first 8 bytes after it.
    assert_eq!(icmp.payload(), &big[14..14 + 28]);
    assert_eq!(tb.pipeline.stats.icmp_errors, 1);

    // A packet that fits goes through; one without DF is cut into two that fit (see
    // tests/fragments.rs).
    let (d, _) = tb.run_one(VM1, vm1_udp(REMOTE_IP, 4100, 7, &[0x5a; 1440]), 2);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let mut no_df = big;
    no_df[20] &= !0x40;
    no_df[24..26].fill(0);
    let c = checksum::checksum(&no_df[14..34]);
    no_df[24..26].copy_from_slice(&c.to_be_bytes());
    let (d, _) = tb.run_one(VM1, no_df, 3);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let rest: Vec<_> = tb.released(3).into_iter().map(|(d, _)| d).collect();
    assert_eq!(rest, [Disposition::Tx(FABRIC)]);
    assert_eq!(tb.pipeline.stats.icmp_errors, 1);
    assert_eq!(tb.pipeline.stats.fragmented, 1);
}
