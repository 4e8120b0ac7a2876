//! Noisy neighbours: one VM may hold only its quota of the flow table and its share of
//! the SNAT ports (refused and counted beyond, the others unaffected, given back with
//! its flows); the SNAT ranges follow the configuration while ports are in use; a full
//! bucket gives up TCP that never completed its handshake before idle datagram flows.

use std::net::Ipv4Addr;

use vrouter::flow::{AgingConfig, FlowAction, FlowKey, FlowTable, FlowVerdict, Hairpin};
use vrouter::pipeline::{Disposition, DropReason};
use vrouter::tables::{GlobalConfig, NhId, VrfId};
use vrouter::testbed::*;
use vrouter::wire::tcp::flags as tcpf;

fn set_global(tb: &mut Testbed, f: impl FnOnce(&mut GlobalConfig)) {
    let mut g = tb.writer.tables().global.as_ref().clone();
    f(&mut g);
    tb.writer.set_global(g).unwrap();
    tb.writer.publish();
}

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// A TCP SYN from vm1 or vm2 to `dst`.
fn syn(vif: VifIdOf, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let (mac, ip) = match vif {
        VifIdOf::Vm1 => (VM1_MAC, VM1_IP),
        VifIdOf::Vm2 => (VM2_MAC, VM2_IP),
    };
    let gw = GlobalConfig::default().vrouter_mac;
    ipv4_frame(mac, gw, ip, dst, 6, sport, 443, tcpf::SYN, b"")
}

/// Deletes one of the flows vm1 sent (as aging or eviction would).
fn delete_a_vm1_flow(tb: &Testbed) {
    let one = tb
        .pipeline
        .flows()
        .dump(0, usize::MAX)
        .0
        .into_iter()
        .find(|i| i.forward && i.key.src == std::net::IpAddr::V4(VM1_IP))
        .expect("a flow from vm1");
    assert!(tb.pipeline.flows().delete_pair(one.idx));
}

#[derive(Clone, Copy)]
enum VifIdOf {
    Vm1,
    Vm2,
}

#[test]
fn a_vm_holds_at_most_its_quota_of_flows_and_the_others_keep_theirs() {
    let mut tb = Testbed::new(1024);
    assert_eq!(
        tb.pipeline.flows().default_quota(),
        128,
        "a quarter of the pairs"
    );
    set_global(&mut tb, |g| g.vif_max_flows = Some(4));
    let got: Vec<_> = (0..6)
        .map(|i| tb.run_one(VM1, vm1_udp(REMOTE_IP, 5000 + i, 53, b"q"), 1).0)
        .collect();
    assert_eq!(&got[..4], &[Disposition::Tx(FABRIC); 4]);
    assert_eq!(
        &got[4..],
        &[Disposition::Drop(DropReason::VifFlowLimit); 2],
        "vm1 is at its quota"
    );
    assert_eq!(tb.pipeline.stats.drops.get(DropReason::VifFlowLimit), 2);
    assert_eq!(tb.pipeline.flows().stats().over_quota, 2);
    assert_eq!(tb.pipeline.flows().owned_by(VM1.0), 4);
    // vm1's established flows go on; vm2 opens its own.
    assert_eq!(
        tb.run_one(VM1, vm1_udp(REMOTE_IP, 5000, 53, b"q"), 2).0,
        Disposition::Tx(FABRIC)
    );
    assert_eq!(
        tb.run_one(VM2, syn(VifIdOf::Vm2, REMOTE_IP, 7000), 2).0,
        Disposition::Tx(FABRIC)
    );
    // A flow from another node to vm1 counts against vm1 too.
    let inner = ipv4_frame(
        VM2_MAC,
        GlobalConfig::default().vrouter_mac,
        REMOTE_IP,
        VM1_IP,
        17,
        9,
        9,
        0,
        b"in",
    );
    let f = from_node_b(
        vrouter::tables::TunnelKind::MplsUdp,
        VM1_LABEL,
        &inner[14..],
    );
    assert_eq!(
        tb.run_one(FABRIC, f.clone(), 2).0,
        Disposition::Drop(DropReason::VifFlowLimit)
    );
    // A pair that goes gives its place back.
    delete_a_vm1_flow(&tb);
    assert_eq!(tb.pipeline.flows().owned_by(VM1.0), 3);
    assert_eq!(tb.run_one(FABRIC, f, 3).0, Disposition::Tx(VM1));
    // Aging gives back the rest.
    tb.pipeline.flows().age(10_000_000, &AgingConfig::millis());
    assert_eq!(tb.pipeline.flows().owned_by(VM1.0), 0);
    assert_eq!(tb.pipeline.flows().owned_by(VM2.0), 0);
}

#[test]
fn a_vm_holds_at_most_its_share_of_snat_ports() {
    let mut tb = Testbed::new(1024);
    assert_eq!(
        tb.snat.default_share(),
        256,
        "a quarter of a 1024-port pool"
    );
    set_global(&mut tb, |g| g.vif_max_snat_ports = Some(2));
    let got: Vec<_> = (0..3)
        .map(|i| tb.run_one(VM1, syn(VifIdOf::Vm1, OUTSIDE, 41000 + i), 1).0)
        .collect();
    assert_eq!(
        got,
        [
            Disposition::Tx(FABRIC),
            Disposition::Tx(FABRIC),
            Disposition::Drop(DropReason::VifSnatLimit)
        ]
    );
    assert_eq!(tb.snat.held_by(VM1.0), 2);
    assert_eq!(tb.snat.over_share(), 1);
    assert_eq!(
        tb.run_one(VM2, syn(VifIdOf::Vm2, OUTSIDE, 41000), 1).0,
        Disposition::Tx(FABRIC),
        "vm2 has its own share"
    );
    assert_eq!(tb.snat.tcp.in_use(), 3);
    delete_a_vm1_flow(&tb);
    assert_eq!((tb.snat.held_by(VM1.0), tb.snat.tcp.in_use()), (1, 2));
    assert_eq!(
        tb.run_one(VM1, syn(VifIdOf::Vm1, OUTSIDE, 42000), 2).0,
        Disposition::Tx(FABRIC)
    );
}

#[test]
fn snat_ranges_follow_the_configuration_and_ports_in_use_come_back() {
    let mut tb = Testbed::new(1024);
    let sport = |out: &[u8]| u16::from_be_bytes([out[34], out[35]]);
    let (d, out) = tb.run_one(VM1, syn(VifIdOf::Vm1, OUTSIDE, 41000), 1);
    assert_eq!(d, Disposition::Tx(FABRIC));
    assert!((56000..=57023).contains(&sport(&out)));
    set_global(&mut tb, |g| {
        g.snat_ports = Some(([61000, 61001], [61002, 61003]));
        // (The default share, a quarter of two ports, would stop vm1 first.)
        g.vif_max_snat_ports = Some(100);
    });
    for i in 0..2 {
        let (d, out) = tb.run_one(VM1, syn(VifIdOf::Vm1, OUTSIDE, 41001 + i), 2);
        assert_eq!(d, Disposition::Tx(FABRIC));
        assert!((61000..=61001).contains(&sport(&out)), "{}", sport(&out));
    }
    let (d, out) = tb.run_one(VM1, vm1_udp(OUTSIDE, 5000, 53, b"q"), 2);
    assert_eq!(d, Disposition::Tx(FABRIC));
    assert!((61002..=61003).contains(&sport(&out)));
    assert_eq!(
        tb.run_one(VM1, syn(VifIdOf::Vm1, OUTSIDE, 41003), 2).0,
        Disposition::Drop(DropReason::NatNoPort),
        "two TCP ports in the new range, both in use"
    );
    assert_eq!(
        tb.snat.tcp.in_use(),
        3,
        "the old range's port is still held"
    );
    tb.pipeline.flows().age(10_000_000, &AgingConfig::millis());
    assert_eq!((tb.snat.tcp.in_use(), tb.snat.udp.in_use()), (0, 0));
    assert_eq!(tb.snat.held_by(VM1.0), 0);
}

fn action() -> FlowAction {
    FlowAction {
        verdict: FlowVerdict::Forward,
        nh: NhId(1),
        label: 0,
        nat: None,
        hairpin: Hairpin::No,
        route_gen: 0,
        policy_gen: 0,
        mirror: false,
        from_node: 0,
        pinned: false,
    }
}

fn key(proto: u8, i: u16) -> FlowKey {
    FlowKey {
        vrf: VrfId(1),
        proto,
        src: "10.1.1.3".parse().unwrap(),
        dst: "10.9.9.9".parse().unwrap(),
        sport: 1000 + i,
        dport: 80,
    }
}

#[test]
fn a_full_bucket_gives_up_half_open_tcp_before_idle_datagram_flows() {
    // 16 entries: two buckets, which every key may use; 8 pairs fill them.
    let t = FlowTable::new(16);
    let aging = AgingConfig {
        evict_idle: 50,
        ..AgingConfig::millis()
    };
    let a = action();
    for i in 0..4 {
        let k = key(17, i);
        t.insert_pair((&k, &a), (&k.reversed(), &a), 0, &aging)
            .unwrap();
    }
    for i in 4..8 {
        let k = key(6, i);
        let (f, _) = t
            .insert_pair((&k, &a), (&k.reversed(), &a), 90, &aging)
            .unwrap();
        t.touch(f, 60, 90, tcpf::SYN);
    }
    assert_eq!(t.stats().active, 16);
    // The UDP flows are idler (100 against 10), but a SYN that was never answered goes
    // first.
    let k = key(17, 100);
    t.insert_pair((&k, &a), (&k.reversed(), &a), 100, &aging)
        .unwrap();
    assert_eq!(t.stats().evicted, 1);
    for i in 0..4 {
        let k = key(17, i);
        assert!(t.lookup(&k, k.hash()).is_some(), "udp {i} kept");
    }
    let open = (4..8)
        .filter(|&i| {
            let k = key(6, i);
            t.lookup(&k, k.hash()).is_some()
        })
        .count();
    assert_eq!(open, 3);
}
