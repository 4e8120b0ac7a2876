//! Flow table behaviour: pairs, actions, aging, eviction, a model check, and concurrency.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;
use vrouter::flow::{
    AgingConfig, FlowAction, FlowKey, FlowTable, FlowVerdict, Hairpin, NatRewrite, TcpState,
};
use vrouter::pipeline::DropReason;
use vrouter::tables::{NhId, VrfId};
use vrouter::wire::tcp::flags as tcpf;

fn key(proto: u8, src: &str, dst: &str, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        vrf: VrfId(1),
        proto,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport,
        dport,
    }
}

fn fwd(nh: u32) -> FlowAction {
    FlowAction {
        verdict: FlowVerdict::Forward,
        nh: NhId(nh),
        label: 16,
        nat: None,
        hairpin: Hairpin::No,
        policy_gen: 0,
        route_gen: 3,
        mirror: false,
        from_node: 0,
        pinned: false,
    }
}

const AGING: AgingConfig = AgingConfig {
    tcp_established: 1000,
    tcp_opening: 100,
    tcp_closed: 10,
    other: 500,
    evict_idle: 50,
};

#[test]
fn a_pair_is_found_from_both_sides_with_its_actions() {
    let t = FlowTable::new(1024);
    let k = key(17, "10.1.1.3", "10.2.2.4", 5000, 53);
    let r = k.reversed();
    let nat = FlowAction {
        nat: Some(NatRewrite {
            source: true,
            addr: "192.0.2.10".parse().unwrap(),
            port: 56001,
            pooled: false,
        }),
        ..fwd(7)
    };
    let (fi, ri) = t
        .insert_pair((&k, &nat), (&r, &fwd(8)), 100, &AGING)
        .unwrap();
    let hf = t.lookup(&k, k.hash()).unwrap();
    let hr = t.lookup(&r, r.hash()).unwrap();
    assert_eq!((hf.idx, hf.rflow, hr.idx, hr.rflow), (fi, ri, ri, fi));
    assert_eq!(hf.action, nat);
    assert_eq!(hr.action.nh, NhId(8));
    assert_eq!(hr.action.route_gen, 3);
    assert!(
        t.lookup(&key(17, "10.1.1.3", "10.2.2.4", 5001, 53), 0)
            .is_none()
    );
    assert_eq!(t.stats().active, 2);

    // IPv6 NAT addresses and drop reasons survive the encoding too.
    let k6 = key(6, "fd00::3", "fd00::4", 1, 2);
    let deny = FlowAction::drop(DropReason::PolicyDeny);
    let nat6 = FlowAction {
        nat: Some(NatRewrite {
            source: false,
            addr: "fd00::99".parse().unwrap(),
            port: 0,
            pooled: false,
        }),
        ..fwd(1)
    };
    t.insert_pair((&k6, &deny), (&k6.reversed(), &nat6), 100, &AGING)
        .unwrap();
    assert_eq!(
        t.lookup(&k6, k6.hash()).unwrap().action.verdict,
        FlowVerdict::Drop(DropReason::PolicyDeny)
    );
    assert_eq!(
        t.lookup(&k6.reversed(), k6.reversed().hash())
            .unwrap()
            .action,
        nat6
    );
}

#[test]
fn a_flow_translated_both_ways_keeps_its_hairpin_mark_whatever_its_tcp_flags() {
    let t = FlowTable::new(1024);
    let k = key(6, "10.1.1.3", "10.96.0.10", 40000, 80);
    let r = key(6, "10.1.1.3", "10.96.0.10", 8080, 40000);
    let rewrite = |source, addr: &str, port| NatRewrite {
        source,
        addr: addr.parse().unwrap(),
        port,
        pooled: false,
    };
    let there = FlowAction {
        nat: Some(rewrite(false, "10.1.1.3", 8080)),
        hairpin: Hairpin::Source,
        ..fwd(7)
    };
    let back = FlowAction {
        nat: Some(rewrite(true, "10.96.0.10", 80)),
        hairpin: Hairpin::Destination,
        ..fwd(7)
    };
    let (fi, ri) = t
        .insert_pair((&k, &there), (&r, &back), 100, &AGING)
        .unwrap();
    use vrouter::wire::tcp::flags as f;
    t.touch(fi, 60, 101, f::SYN);
    t.touch(ri, 60, 102, f::SYN | f::ACK);
    t.touch(fi, 60, 103, f::ACK);
    assert_eq!(t.lookup(&k, k.hash()).unwrap().action, there);
    assert_eq!(t.lookup(&r, r.hash()).unwrap().action, back);
    // The TCP state reads only the flags.
    let dump = t.dump(0, 16).0;
    assert!(
        dump.iter()
            .all(|i| i.tcp == vrouter::flow::TcpState::Established),
        "{dump:?}"
    );
    assert!(dump.iter().any(|i| i.action == there));
}

#[test]
fn update_action_and_delete_pair() {
    let t = FlowTable::new(64);
    let k = key(6, "10.0.0.1", "10.0.0.2", 1000, 80);
    t.insert_pair((&k, &fwd(1)), (&k.reversed(), &fwd(2)), 0, &AGING)
        .unwrap();
    let hit = t.lookup(&k, k.hash()).unwrap();
    assert!(t.update_action(&hit, &fwd(9)));
    assert_eq!(t.lookup(&k, k.hash()).unwrap().action.nh, NhId(9));
    assert!(t.delete_pair(hit.idx));
    assert!(t.lookup(&k, k.hash()).is_none());
    assert!(t.lookup(&k.reversed(), k.reversed().hash()).is_none());
    assert!(!t.delete_pair(hit.idx), "already gone");
    assert!(!t.update_action(&hit, &fwd(1)), "stale hit refused");
    assert_eq!(t.stats().active, 0);
}

#[test]
fn aging_follows_tcp_state_and_counters_are_kept() {
    let t = FlowTable::new(256);
    let est = key(6, "10.0.0.1", "10.0.0.2", 1000, 80);
    let opening = key(6, "10.0.0.1", "10.0.0.2", 1001, 80);
    let closed = key(6, "10.0.0.1", "10.0.0.2", 1002, 80);
    let udp = key(17, "10.0.0.1", "10.0.0.2", 1003, 53);
    let mut idx = HashMap::new();
    for k in [est, opening, closed, udp] {
        idx.insert(
            k.sport,
            t.insert_pair((&k, &fwd(1)), (&k.reversed(), &fwd(2)), 0, &AGING)
                .unwrap(),
        );
    }
    let (f, r) = idx[&1000];
    t.touch(f, 60, 0, tcpf::SYN);
    t.touch(r, 60, 0, tcpf::SYN | tcpf::ACK);
    t.touch(f, 1500, 0, tcpf::ACK);
    t.touch(idx[&1001].0, 60, 0, tcpf::SYN);
    let (f2, r2) = idx[&1002];
    t.touch(f2, 60, 0, tcpf::SYN);
    t.touch(r2, 60, 0, tcpf::SYN | tcpf::ACK);
    t.touch(f2, 60, 0, tcpf::FIN | tcpf::ACK);
    t.touch(r2, 60, 0, tcpf::FIN | tcpf::ACK);

    let (flows, _) = t.dump(0, 100);
    let est_info = flows.iter().find(|i| i.idx == f).unwrap();
    assert_eq!(
        (est_info.packets, est_info.bytes, est_info.tcp),
        (2, 1560, TcpState::Established)
    );
    assert!(est_info.forward);

    assert_eq!(t.age(20, &AGING), 1, "closed TCP goes after 10");
    assert_eq!(t.age(150, &AGING), 1, "half-open TCP after 100");
    assert_eq!(t.age(600, &AGING), 1, "UDP after 500");
    assert!(t.lookup(&est, est.hash()).is_some(), "established stays");
    assert_eq!(t.age(1000, &AGING), 1);
    assert_eq!(t.stats().aged, 4);
    assert_eq!(t.stats().active, 0);
}

/// Keys that all land in the same two buckets of a 16-entry table (2 buckets of 8).
fn keys(n: usize) -> Vec<FlowKey> {
    (0..n as u16)
        .map(|p| key(6, "10.0.0.1", "10.0.0.2", 2000 + p, 80))
        .collect()
}

#[test]
fn full_table_evicts_unestablished_but_refuses_over_established() {
    let t = FlowTable::new(16);
    let mut inserted = Vec::new();
    for k in keys(8) {
        let (f, r) = t
            .insert_pair((&k, &fwd(1)), (&k.reversed(), &fwd(2)), 0, &AGING)
            .unwrap();
        inserted.push((k, f, r));
    }
    assert_eq!(t.stats().active, 16);
    // Half-open flows may be evicted for a new one.
    let newk = key(6, "10.9.9.9", "10.0.0.2", 1, 80);
    t.insert_pair((&newk, &fwd(1)), (&newk.reversed(), &fwd(2)), 1, &AGING)
        .unwrap();
    assert!(t.stats().evicted >= 1);

    // Establish every flow now in the table: nothing may be evicted any more.
    let (flows, _) = t.dump(0, 100);
    for f in flows.iter().filter(|f| f.forward) {
        t.touch(f.idx, 60, 2, tcpf::SYN | tcpf::ACK);
        t.touch(f.rflow, 60, 2, tcpf::SYN | tcpf::ACK);
    }
    let before = t.stats();
    let another = key(6, "10.8.8.8", "10.0.0.2", 1, 80);
    let err = t.insert_pair(
        (&another, &fwd(1)),
        (&another.reversed(), &fwd(2)),
        3,
        &AGING,
    );
    assert!(err.is_err());
    let after = t.stats();
    assert_eq!(after.refused, before.refused + 1);
    assert_eq!(
        after.active, before.active,
        "a refused insert changes nothing"
    );
    for f in flows.iter().filter(|f| f.forward) {
        assert!(
            t.lookup(&f.key, f.key.hash()).is_some(),
            "established flow kept"
        );
    }
}

#[test]
fn memory_per_flow_entry_is_128_bytes_plus_signature() {
    let t = FlowTable::new(1 << 20);
    assert_eq!(t.capacity(), 1 << 20);
    assert_eq!(t.memory_bytes(), (1 << 20) * 132);
    assert!(t.memory_bytes() <= 256 << 20);
}

proptest! {
    #[test]
    fn behaves_like_a_map_of_pairs(ops in proptest::collection::vec((0u8..3, 0u16..40), 1..200)) {
        let t = FlowTable::new(4096);
        let mut model: HashMap<FlowKey, u32> = HashMap::new();
        for (op, p) in ops {
            let k = key(17, "10.0.0.1", "10.0.0.2", 1000 + p, 53);
            match op {
                0 if !model.contains_key(&k) => {
                    t.insert_pair((&k, &fwd(u32::from(p))), (&k.reversed(), &fwd(1000)), 0, &AGING).unwrap();
                    model.insert(k, u32::from(p));
                    model.insert(k.reversed(), 1000);
                }
                1 => {
                    if let Some(h) = t.lookup(&k, k.hash()) {
                        prop_assert!(t.delete_pair(h.idx));
                        model.remove(&k);
                        model.remove(&k.reversed());
                    }
                }
                _ => {}
            }
            for q in 0..40u16 {
                let k = key(17, "10.0.0.1", "10.0.0.2", 1000 + q, 53);
                let got = t.lookup(&k, k.hash()).map(|h| h.action.nh.0);
                prop_assert_eq!(got, model.get(&k).copied());
            }
        }
        prop_assert_eq!(t.stats().active as usize, model.len());
    }
}

#[test]
fn concurrent_writers_and_readers_never_see_a_torn_entry() {
    // Each flow's nexthop is derived from its key; a reader that ever sees a key with
    // another key's action has read a torn entry.
    let t = Arc::new(FlowTable::new(1 << 12));
    let nh_of = |k: &FlowKey| NhId((k.hash() as u32) & 0xffff);
    let mut handles = Vec::new();
    for thread in 0..2u16 {
        let t = Arc::clone(&t);
        handles.push(std::thread::spawn(move || {
            let mut seen = 0u64;
            for round in 0..30u16 {
                for p in 0..400u16 {
                    let k = FlowKey {
                        vrf: VrfId(u32::from(thread)),
                        proto: 17,
                        src: IpAddr::from([10, 0, (p >> 8) as u8, p as u8]),
                        dst: IpAddr::from([10, 1, 0, round as u8]),
                        sport: p,
                        dport: round,
                    };
                    let r = k.reversed();
                    let a = FlowAction {
                        nh: nh_of(&k),
                        ..fwd(0)
                    };
                    let b = FlowAction {
                        nh: nh_of(&r),
                        ..fwd(0)
                    };
                    let _ = t.insert_pair((&k, &a), (&r, &b), u64::from(round), &AGING);
                }
                for p in 0..400u16 {
                    for vrf in 0..2u32 {
                        let k = FlowKey {
                            vrf: VrfId(vrf),
                            proto: 17,
                            src: IpAddr::from([10, 0, (p >> 8) as u8, p as u8]),
                            dst: IpAddr::from([10, 1, 0, round as u8]),
                            sport: p,
                            dport: round,
                        };
                        if let Some(h) = t.lookup(&k, k.hash()) {
                            assert_eq!(h.action.nh, nh_of(&k), "torn read");
                            seen += 1;
                            if p % 3 == 0 {
                                t.delete_pair(h.idx);
                            }
                        }
                    }
                }
                t.age(u64::from(round) + 1000, &AGING);
            }
            seen
        }));
    }
    let seen: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(seen > 1000, "the readers found flows ({seen})");
    assert_eq!(t.stats().active, 0, "everything aged out");
}

#[test]
fn half_full_table_of_structured_keys_refuses_nothing() {
    // Sequential ports and one varying address octet, like real traffic from one subnet:
    // two-choice placement into the less loaded bucket must absorb them at half load.
    let t = FlowTable::new(1 << 17);
    for i in 0..(1usize << 15) {
        let k = FlowKey {
            vrf: VrfId(1),
            proto: 17,
            src: IpAddr::from([10, 1, 2, 1 + (i % 250) as u8]),
            dst: IpAddr::from([10, 1, 1, 3]),
            sport: 1024 + (i / 250) as u16,
            dport: 7,
        };
        t.insert_pair((&k, &fwd(1)), (&k.reversed(), &fwd(2)), 0, &AGING)
            .unwrap();
    }
    let s = t.stats();
    assert_eq!((s.refused, s.evicted, s.active), (0, 0, 1 << 16));
}
