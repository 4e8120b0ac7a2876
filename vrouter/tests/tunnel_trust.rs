//! Tunnel trust at the receiving node: only other nodes' tunnels are opened (a host on the
//! fabric that is not a node reaches no pod through one), and a decapsulated packet may
//! carry only a source its sending node speaks for: not one of this node's pods, not
//! another node's.

use std::net::{IpAddr, Ipv4Addr};

use vrouter::config::{NexthopCfg, NexthopKind};
use vrouter::pipeline::{Disposition, DropReason};
use vrouter::tables::{GlobalConfig, NhId, RouteEntry, TunnelKind};
use vrouter::testbed::*;
use vrouter::wire::{self, MacAddr};

const KINDS: [(TunnelKind, u32); 3] = [
    (TunnelKind::MplsUdp, VM1_LABEL),
    (TunnelKind::MplsGre, VM1_LABEL),
    (TunnelKind::Vxlan, VNI),
];

/// An inner packet from `src` to vm1, as `kind` carries it (IP under a label, Ethernet
/// under a VNI).
fn inner(kind: TunnelKind, src: Ipv4Addr) -> Vec<u8> {
    let f = ipv4_frame(
        MacAddr([2, 0xb, 0, 0, 0, 5]),
        GlobalConfig::default().vrouter_mac,
        src,
        VM1_IP,
        17,
        5000,
        53,
        0,
        b"hello",
    );
    match kind {
        TunnelKind::Vxlan => f,
        _ => f[14..].to_vec(),
    }
}

/// `from_node_b`'s frame with another outer source.
fn tunnel_from(node: Ipv4Addr, kind: TunnelKind, label: u32, inner: &[u8]) -> Vec<u8> {
    let mut f = from_node_b(kind, label, inner);
    let mut ip = wire::ipv4::Packet::new_unchecked(&mut f[14..34]);
    ip.set_src(node);
    ip.fill_checksum();
    f
}

#[test]
fn tunnels_from_a_fabric_address_that_is_no_node_are_not_opened() {
    let mut tb = Testbed::new(1024);
    let stranger = Ipv4Addr::new(192, 0, 2, 99);
    for (kind, label) in KINDS {
        let f = tunnel_from(stranger, kind, label, &inner(kind, REMOTE_IP));
        assert_eq!(
            tb.run_one(FABRIC, f, 1).0,
            Disposition::Drop(DropReason::UntrustedTunnel),
            "{kind:?}"
        );
        let f = from_node_b(kind, label, &inner(kind, REMOTE_IP));
        assert_eq!(tb.run_one(FABRIC, f, 1).0, Disposition::Tx(VM1), "{kind:?}");
    }
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::UntrustedTunnel), 3);

    // A node the fabric VRF routes to (the agent's route to each node) is known too,
    // without a tunnel to it: it may send a client it translated.
    let node_c = Ipv4Addr::new(192, 0, 2, 3);
    let nh = NexthopCfg {
        id: 20,
        kind: NexthopKind::Encap {
            vif: FABRIC.0,
            dmac: "02:fa:00:00:00:03".into(),
            smac: FABRIC_MAC.to_string(),
        },
    };
    vrouter::config::apply_nexthop(&mut tb.writer, &nh).unwrap();
    let e = RouteEntry {
        nh: NhId(20),
        label: 0,
        attr: 0,
    };
    tb.writer
        .add_route(FABRIC_VRF, IpAddr::V4(node_c), 32, e)
        .unwrap();
    tb.writer.publish();
    let client = Ipv4Addr::new(203, 0, 113, 5);
    let kind = TunnelKind::MplsUdp;
    let f = tunnel_from(node_c, kind, VM1_LABEL, &inner(kind, client));
    assert_eq!(tb.run_one(FABRIC, f, 2).0, Disposition::Tx(VM1));

    // Node B's tunnel nexthop now leads elsewhere: B is no longer a node of ours.
    let moved = NexthopCfg {
        id: NH_NODE_B.0,
        kind: NexthopKind::Tunnel {
            vif: FABRIC.0,
            src: NODE_A,
            dst: Ipv4Addr::new(192, 0, 2, 4),
            smac: FABRIC_MAC.to_string(),
            dmac: NODE_B_MAC.to_string(),
            encaps: vec![],
            inner_dmac: None,
        },
    };
    vrouter::config::apply_nexthop(&mut tb.writer, &moved).unwrap();
    tb.writer.publish();
    let f = from_node_b(kind, VM1_LABEL, &inner(kind, Ipv4Addr::new(10, 1, 2, 6)));
    assert_eq!(
        tb.run_one(FABRIC, f, 3).0,
        Disposition::Drop(DropReason::UntrustedTunnel)
    );
}

#[test]
fn a_node_may_not_send_as_one_of_our_pods_nor_as_another_nodes() {
    let mut tb = Testbed::new(1024);
    // Node C, with its own pod network.
    let node_c = Ipv4Addr::new(192, 0, 2, 3);
    let nh = NexthopCfg {
        id: 21,
        kind: NexthopKind::Tunnel {
            vif: FABRIC.0,
            src: NODE_A,
            dst: node_c,
            smac: FABRIC_MAC.to_string(),
            dmac: "02:fa:00:00:00:03".into(),
            encaps: vec![],
            inner_dmac: None,
        },
    };
    vrouter::config::apply_nexthop(&mut tb.writer, &nh).unwrap();
    let e = RouteEntry {
        nh: NhId(21),
        label: 30,
        attr: 0,
    };
    tb.writer
        .add_route(RED, IpAddr::V4(Ipv4Addr::new(10, 1, 3, 0)), 24, e)
        .unwrap();
    tb.writer.publish();
    for (kind, label) in KINDS {
        // As vm2, a pod of this node.
        let f = from_node_b(kind, label, &inner(kind, VM2_IP));
        assert_eq!(
            tb.run_one(FABRIC, f, 1).0,
            Disposition::Drop(DropReason::TunnelSourceMismatch),
            "{kind:?}"
        );
        // As a pod of node C.
        let f = from_node_b(kind, label, &inner(kind, Ipv4Addr::new(10, 1, 3, 7)));
        assert_eq!(
            tb.run_one(FABRIC, f, 1).0,
            Disposition::Drop(DropReason::TunnelSourceMismatch),
            "{kind:?}"
        );
        // Node C for its own pod, node B for its own: delivered.
        let own_c = tunnel_from(
            node_c,
            kind,
            label,
            &inner(kind, Ipv4Addr::new(10, 1, 3, 7)),
        );
        assert_eq!(tb.run_one(FABRIC, own_c, 1).0, Disposition::Tx(VM1));
        let own_b = from_node_b(kind, label, &inner(kind, REMOTE_IP));
        assert_eq!(tb.run_one(FABRIC, own_b, 1).0, Disposition::Tx(VM1));
    }
    // Flows set up by node B's and node C's first packets take only their own node's
    // tunnel packets afterwards: the same five-tuple from the other node is refused.
    for (kind, label) in KINDS {
        let f = from_node_b(kind, label, &inner(kind, Ipv4Addr::new(10, 1, 3, 7)));
        assert_eq!(
            tb.run_one(FABRIC, f, 2).0,
            Disposition::Drop(DropReason::TunnelSourceMismatch),
            "{kind:?}"
        );
    }
    assert_eq!(
        tb.pipeline
            .stats
            .drops
            .get(DropReason::TunnelSourceMismatch),
        9
    );
    assert_eq!(
        tb.pipeline.stats.flows_created, 2,
        "no flow for the forged ones"
    );

    // vm1 talks to node B's pod: its replies come from node B only.
    let (d, _) = tb.run_one(VM1, vm1_udp(REMOTE_IP, 7000, 7001, b"hi"), 3);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let reply = |node: Ipv4Addr| {
        let f = ipv4_frame(
            MacAddr([2, 0xb, 0, 0, 0, 5]),
            GlobalConfig::default().vrouter_mac,
            REMOTE_IP,
            VM1_IP,
            17,
            7001,
            7000,
            0,
            b"back",
        );
        tunnel_from(node, TunnelKind::MplsUdp, VM1_LABEL, &f[14..])
    };
    assert_eq!(
        tb.run_one(FABRIC, reply(node_c), 4).0,
        Disposition::Drop(DropReason::TunnelSourceMismatch)
    );
    assert_eq!(tb.run_one(FABRIC, reply(NODE_B), 4).0, Disposition::Tx(VM1));
}

/// An MPLSoGRE frame from node B whose GRE header carries a checksum (right or not).
fn gre_with_checksum(inner: &[u8], right: bool) -> Vec<u8> {
    let mut gre = vec![0x80, 0, 0x88, 0x47, 0, 0, 0, 0];
    gre.extend_from_slice(&((VM1_LABEL << 12) | 0x100 | 64).to_be_bytes());
    gre.extend_from_slice(inner);
    let c = wire::checksum::checksum(&gre) ^ u16::from(!right);
    gre[4..6].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0u8; 34];
    wire::ethernet::Repr {
        src: NODE_B_MAC,
        dst: FABRIC_MAC,
        ethertype: wire::EtherType::Ipv4,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut f[..14]));
    wire::ipv4::Repr::tunnel(NODE_B, NODE_A, wire::IpProtocol::Gre, gre.len())
        .emit(&mut f[14..34])
        .unwrap();
    f.extend_from_slice(&gre);
    f
}

#[test]
fn outer_ipv4_and_gre_checksums_are_verified() {
    let mut tb = Testbed::new(1024);
    let kind = TunnelKind::MplsUdp;
    let mut f = from_node_b(kind, VM1_LABEL, &inner(kind, REMOTE_IP));
    f[24] ^= 0x40;
    assert_eq!(
        tb.run_one(FABRIC, f, 1).0,
        Disposition::Drop(DropReason::BadChecksum),
        "outer header checksum"
    );
    let ip = inner(TunnelKind::MplsGre, REMOTE_IP);
    assert_eq!(
        tb.run_one(FABRIC, gre_with_checksum(&ip, false), 1).0,
        Disposition::Drop(DropReason::BadChecksum),
        "GRE checksum"
    );
    assert_eq!(
        tb.run_one(FABRIC, gre_with_checksum(&ip, true), 1).0,
        Disposition::Tx(VM1)
    );
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::BadChecksum), 2);
}

#[test]
fn a_flow_whose_reply_lost_its_route_for_a_moment_heals() {
    // Node B's client talks to vm1; vm1 answers through B's tunnel.
    let mut tb = Testbed::new(1024);
    let kind = TunnelKind::MplsUdp;
    let from_b = || from_node_b(kind, VM1_LABEL, &inner(kind, REMOTE_IP));
    let reply = || vm1_udp(REMOTE_IP, 53, 5000, b"answer");
    assert_eq!(tb.run_one(FABRIC, from_b(), 1).0, Disposition::Tx(VM1));
    assert_eq!(tb.run_one(VM1, reply(), 2).0, Disposition::Tx(FABRIC));

    // The route to B's pods goes (an agent restarting, say) and the reply finds none.
    let remote = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 0));
    let old = tb.writer.del_route(RED, remote, 24).unwrap();
    tb.writer
        .del_route(RED, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        .unwrap();
    tb.writer.publish();
    assert_eq!(
        tb.run_one(VM1, reply(), 3).0,
        Disposition::Drop(DropReason::NoRoute)
    );
    // B still speaks for its half: its packets still come in (they are what draws the
    // reply that heals the other half).
    assert_eq!(tb.run_one(FABRIC, from_b(), 4).0, Disposition::Tx(VM1));

    // The route is back: the reply goes out again, and B's packets still come in.
    tb.writer.add_route(RED, remote, 24, old).unwrap();
    tb.writer.publish();
    assert_eq!(tb.run_one(VM1, reply(), 5).0, Disposition::Tx(FABRIC));
    assert_eq!(tb.run_one(FABRIC, from_b(), 6).0, Disposition::Tx(VM1));
    assert_eq!(
        tb.pipeline
            .stats
            .drops
            .get(DropReason::TunnelSourceMismatch),
        0
    );
}
