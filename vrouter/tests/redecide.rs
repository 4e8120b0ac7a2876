//! Flows after a change: a policy change decides again NAT'd flows (service, SNAT) and
//! flows whose next packet is a reply, in place (translation, nexthop and TCP state kept);
//! a reply half set up without a route heals when the route comes; a flow moved to
//! another node by a route change accepts replies from that node and no longer from the
//! old one; the way back to a node that translated a client survives route changes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use vrouter::config::{NexthopCfg, NexthopKind};
use vrouter::flow::{FlowInfo, TcpState};
use vrouter::pipeline::{Disposition, DropReason};
use vrouter::policy::{Action, Policy, Rule, RuleSet};
use vrouter::tables::{GlobalConfig, NhId, RouteEntry, TunnelKind, VifId};
use vrouter::testbed::*;
use vrouter::wire::{self, MacAddr};

use wire::tcp::flags::{ACK, SYN};

fn gw() -> MacAddr {
    GlobalConfig::default().vrouter_mac
}

/// A policy with one rule set that passes `proto`/`port` only, in one direction.
fn only(proto: u8, port: u16) -> RuleSet {
    RuleSet::new(
        format!("only-{proto}-{port}"),
        vec![Rule {
            proto: Some(proto),
            dport: (port, port),
            ..Rule::any(Action::Pass)
        }],
        Action::Deny,
        false,
    )
}

fn set_policy(tb: &mut Testbed, vif: VifId, policy: Option<Policy>) {
    let mut v = tb.writer.tables().vifs.get(vif.0).unwrap().as_ref().clone();
    v.policy = policy.map(Arc::new);
    tb.writer.add_vif(v).unwrap();
    tb.writer.publish();
}

fn ingress_only(tb: &mut Testbed, vif: VifId, proto: u8, port: u16) {
    let p = Policy {
        ingress: vec![only(proto, port)],
        egress: vec![],
    };
    set_policy(tb, vif, Some(p));
}

fn egress_only(tb: &mut Testbed, vif: VifId, proto: u8, port: u16) {
    let p = Policy {
        ingress: vec![],
        egress: vec![only(proto, port)],
    };
    set_policy(tb, vif, Some(p));
}

/// A TCP segment between two addresses (MACs as a VM on this node sends them).
fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Vec<u8> {
    let smac = if src.0 == VM2_IP { VM2_MAC } else { VM1_MAC };
    ipv4_frame(smac, gw(), src.0, dst.0, 6, src.1, dst.1, flags, b"")
}

fn flows(tb: &Testbed) -> Vec<FlowInfo> {
    tb.pipeline.flows().dump(0, usize::MAX).0
}

fn dropped(r: DropReason) -> Disposition {
    Disposition::Drop(r)
}

#[test]
fn a_service_flow_is_decided_again_keeping_its_backend_and_tcp_state() {
    let mut tb = Testbed::new(1024);
    let svc = Ipv4Addr::new(10, 1, 1, 200);
    tb.add_service((7, svc), &[(NH_VM2, 0, VM2_IP)], &[(6, 80, 8080)], false);
    let fwd = |flags| tcp((VM1_IP, 40000), (svc, 80), flags);
    let back = |flags| tcp((VM2_IP, 8080), (VM1_IP, 40000), flags);
    assert_eq!(tb.run_one(VM1, fwd(SYN), 1).0, Disposition::Tx(VM2));
    let (d, reply) = tb.run_one(VM2, back(SYN | ACK), 2);
    assert_eq!(d, Disposition::Tx(VM1));
    assert_eq!(
        reply[26..30],
        svc.octets(),
        "the reply leaves as the service"
    );
    assert_eq!(tb.run_one(VM1, fwd(ACK), 3).0, Disposition::Tx(VM2));
    let before = flows(&tb);
    assert!(before.iter().all(|f| f.tcp == TcpState::Established));

    // A change that still allows the flow: confirmed in place, nothing set up again.
    ingress_only(&mut tb, VM2, 6, 8080);
    assert_eq!(tb.run_one(VM1, fwd(ACK), 4).0, Disposition::Tx(VM2));
    assert_eq!(tb.pipeline.stats.flows_reevaluated, 1);
    assert_eq!(tb.pipeline.stats.flows_created, 1);
    let after = flows(&tb);
    assert_eq!(after.len(), 2);
    for (a, b) in before.iter().zip(&after) {
        assert_eq!((a.idx, a.key, a.created), (b.idx, b.key, b.created));
        assert_eq!(a.action.nat, b.action.nat, "translation kept");
        assert_eq!(b.tcp, TcpState::Established, "TCP state kept");
    }

    // The backend's port is closed: the translated flow is refused from its next packet
    // on, both ways, the reply first here.
    ingress_only(&mut tb, VM2, 6, 9999);
    assert_eq!(
        tb.run_one(VM2, back(ACK), 5).0,
        dropped(DropReason::PolicyDeny)
    );
    assert_eq!(
        tb.run_one(VM1, fwd(ACK), 5).0,
        dropped(DropReason::PolicyDeny)
    );
    assert_eq!(
        tb.pipeline.stats.flows_reevaluated, 2,
        "one decision per change"
    );

    // Open again: the refused flow is set up anew, to the same backend.
    set_policy(&mut tb, VM2, None);
    let (d, out) = tb.run_one(VM1, fwd(ACK), 6);
    assert_eq!(d, Disposition::Tx(VM2));
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), 8080);
    assert_eq!(tb.run_one(VM2, back(ACK), 6).0, Disposition::Tx(VM1));
}

#[test]
fn an_snat_flow_is_refused_by_a_new_egress_policy_and_its_port_returns_with_it() {
    let mut tb = Testbed::new(1024);
    let outside = Ipv4Addr::new(198, 51, 100, 7);
    let (d, out) = tb.run_one(VM1, tcp((VM1_IP, 41000), (outside, 443), SYN), 1);
    assert_eq!(d, Disposition::Tx(FABRIC));
    let port = u16::from_be_bytes([out[34], out[35]]);
    let synack = ipv4_frame(
        GATEWAY_MAC,
        FABRIC_MAC,
        outside,
        NODE_A,
        6,
        443,
        port,
        SYN | ACK,
        b"",
    );
    assert_eq!(
        tb.run_one(FABRIC, synack.clone(), 2).0,
        Disposition::Tx(VM1)
    );

    // vm1 may now reach port 80 only: the reply from outside is the first to see it.
    egress_only(&mut tb, VM1, 6, 80);
    assert_eq!(
        tb.run_one(FABRIC, synack, 3).0,
        dropped(DropReason::PolicyDeny)
    );
    assert_eq!(
        tb.run_one(VM1, tcp((VM1_IP, 41000), (outside, 443), ACK), 3)
            .0,
        dropped(DropReason::PolicyDeny)
    );
    assert_eq!(
        tb.snat.tcp.in_use(),
        1,
        "held by the refused pair until it goes"
    );
    let f = flows(&tb);
    assert!(tb.pipeline.flows().delete_pair(f[0].idx));
    assert_eq!(tb.snat.tcp.in_use(), 0, "the port came back with the pair");
}

#[test]
fn replies_are_decided_again_when_they_come_first() {
    let mut tb = Testbed::new(1024);
    let fwd = || vm1_udp(VM2_IP, 4000, 53, b"q");
    let back = || ipv4_frame(VM2_MAC, gw(), VM2_IP, VM1_IP, 17, 53, 4000, 0, b"a");
    assert_eq!(tb.run_one(VM1, fwd(), 1).0, Disposition::Tx(VM2));
    assert_eq!(tb.run_one(VM2, back(), 1).0, Disposition::Tx(VM1));
    // vm2 now takes TCP 22 only; the flow's next packet is vm2's.
    ingress_only(&mut tb, VM2, 6, 22);
    assert_eq!(
        tb.run_one(VM2, back(), 2).0,
        dropped(DropReason::PolicyDeny)
    );
    assert_eq!(tb.run_one(VM1, fwd(), 2).0, dropped(DropReason::PolicyDeny));
    assert_eq!(tb.pipeline.stats.flows_reevaluated, 1);
}

/// Node C: a second remote node, with a tunnel (nexthop 21) the agent would publish.
const NODE_C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

fn add_node_c(tb: &mut Testbed) -> NhId {
    let nh = NexthopCfg {
        id: 21,
        kind: NexthopKind::Tunnel {
            vif: FABRIC.0,
            src: NODE_A,
            dst: NODE_C,
            dmac: "02:fa:00:00:00:03".into(),
            smac: FABRIC_MAC.to_string(),
            encaps: vec![],
            inner_dmac: None,
        },
    };
    vrouter::config::apply_nexthop(&mut tb.writer, &nh).unwrap();
    tb.writer.publish();
    NhId(21)
}

fn route(tb: &mut Testbed, addr: Ipv4Addr, nh: NhId, label: u32) {
    let e = RouteEntry { nh, label, attr: 0 };
    tb.writer.add_route(RED, IpAddr::V4(addr), 32, e).unwrap();
    tb.writer.publish();
}

/// A UDP packet from `src` to vm1, as node `node` sends it over MPLSoUDP.
fn tunnelled(node: Ipv4Addr, src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let inner = ipv4_frame(
        MacAddr([2, 0xb, 0, 0, 0, 5]),
        gw(),
        src,
        VM1_IP,
        17,
        sport,
        53,
        0,
        b"hello",
    );
    let mut f = from_node_b(TunnelKind::MplsUdp, VM1_LABEL, &inner[14..]);
    let mut ip = wire::ipv4::Packet::new_unchecked(&mut f[14..34]);
    ip.set_src(node);
    ip.fill_checksum();
    f
}

/// The outer destination of an encapsulated frame.
fn outer_dst(f: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(f[30], f[31], f[32], f[33])
}

#[test]
fn a_reply_set_up_without_a_route_heals_when_the_route_arrives() {
    let mut tb = Testbed::new(1024);
    // A pod on node C whose route this node has not heard of yet.
    let pod_c = Ipv4Addr::new(10, 1, 3, 9);
    let c = add_node_c(&mut tb);
    tb.writer
        .del_route(RED, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        .unwrap();
    tb.writer.publish();
    assert_eq!(
        tb.run_one(FABRIC, tunnelled(NODE_C, pod_c, 5000), 1).0,
        Disposition::Tx(VM1)
    );
    let reply = || vm1_udp(pod_c, 53, 5000, b"answer");
    assert_eq!(tb.run_one(VM1, reply(), 2).0, dropped(DropReason::NoRoute));
    route(&mut tb, pod_c, c, 30);
    let (d, out) = tb.run_one(VM1, reply(), 3);
    assert_eq!(d, Disposition::Tx(FABRIC), "healed");
    assert_eq!(outer_dst(&out), NODE_C);
    assert_eq!(tb.pipeline.stats.flows_created, 1, "the same flow");
    // And the flow still takes node C's packets.
    assert_eq!(
        tb.run_one(FABRIC, tunnelled(NODE_C, pod_c, 5000), 4).0,
        Disposition::Tx(VM1)
    );
}

#[test]
fn a_flow_moved_to_another_node_takes_replies_from_that_node_only() {
    let mut tb = Testbed::new(1024);
    let c = add_node_c(&mut tb);
    let out = || vm1_udp(REMOTE_IP, 53, 5000, b"to remote");
    let (d, f) = tb.run_one(VM1, out(), 1);
    assert_eq!((d, outer_dst(&f)), (Disposition::Tx(FABRIC), NODE_B));
    assert_eq!(
        tb.run_one(FABRIC, tunnelled(NODE_B, REMOTE_IP, 5000), 1).0,
        Disposition::Tx(VM1)
    );
    // The remote pod moves to node C.
    route(&mut tb, REMOTE_IP, c, 31);
    let (d, f) = tb.run_one(VM1, out(), 2);
    assert_eq!((d, outer_dst(&f)), (Disposition::Tx(FABRIC), NODE_C));
    assert_eq!(
        tb.run_one(FABRIC, tunnelled(NODE_C, REMOTE_IP, 5000), 3).0,
        Disposition::Tx(VM1),
        "replies from the new node"
    );
    assert_eq!(
        tb.run_one(FABRIC, tunnelled(NODE_B, REMOTE_IP, 5000), 3).0,
        dropped(DropReason::TunnelSourceMismatch),
        "not from the old one"
    );
}

#[test]
fn the_way_back_to_a_node_that_translated_the_client_survives_route_changes() {
    let mut tb = Testbed::new(1024);
    // The agent's route to node B in the fabric VRF.
    let nh = NexthopCfg {
        id: 22,
        kind: NexthopKind::Encap {
            vif: FABRIC.0,
            dmac: NODE_B_MAC.to_string(),
            smac: FABRIC_MAC.to_string(),
        },
    };
    vrouter::config::apply_nexthop(&mut tb.writer, &nh).unwrap();
    let e = RouteEntry {
        nh: NhId(22),
        label: 0,
        attr: 0,
    };
    tb.writer
        .add_route(FABRIC_VRF, IpAddr::V4(NODE_B), 32, e)
        .unwrap();
    tb.writer.publish();
    // A client outside the overlay (routed only by the SNAT default) that node B let in
    // through a node port and sent on here.
    let client = Ipv4Addr::new(203, 0, 113, 50);
    assert_eq!(
        tb.run_one(FABRIC, tunnelled(NODE_B, client, 6000), 1).0,
        Disposition::Tx(VM1)
    );
    let reply = || vm1_udp(client, 53, 6000, b"answer");
    // Replies go to node B as they are (its kernel holds the translation).
    let (d, f) = tb.run_one(VM1, reply(), 2);
    assert_eq!((d, &f[..6]), (Disposition::Tx(FABRIC), &NODE_B_MAC.0[..]));
    // Any route change in the VRF (a new pod): the reply still goes back to node B, not
    // out through SNAT.
    route(&mut tb, Ipv4Addr::new(10, 1, 1, 77), NH_VM2, 0);
    let (d, f) = tb.run_one(VM1, reply(), 3);
    assert_eq!((d, &f[..6]), (Disposition::Tx(FABRIC), &NODE_B_MAC.0[..]));
    assert_eq!(outer_dst(&f), client, "as it was, not translated");
}
