//! The flow hash's seed (its own test binary: the seed is process-wide). Another seed
//! moves keys to other buckets, so collisions worked out against one start do not carry
//! to the next; the table works the same under any seed, and what an entry keeps beside
//! the TCP flags (its node, the policy generation's high bits) stays whatever flags come.

use vrouter::flow::{
    AgingConfig, FlowAction, FlowKey, FlowTable, FlowVerdict, Hairpin, random_seed, seed_hash,
};
use vrouter::tables::{NhId, VrfId};

fn key(sport: u16) -> FlowKey {
    FlowKey {
        vrf: VrfId(1),
        proto: 6,
        src: "10.1.1.3".parse().unwrap(),
        dst: "10.1.2.5".parse().unwrap(),
        sport,
        dport: 80,
    }
}

#[test]
fn another_seed_gives_other_hashes_and_the_table_works_under_it() {
    let before: Vec<u64> = (0..64).map(|p| key(p).hash()).collect();
    let (a, b) = (random_seed(), random_seed());
    assert_ne!(a, b, "a new seed each time");
    seed_hash(a);
    let after: Vec<u64> = (0..64).map(|p| key(p).hash()).collect();
    assert!(before.iter().zip(&after).all(|(x, y)| x != y));

    let t = FlowTable::new(1024);
    let act = FlowAction {
        verdict: FlowVerdict::Forward,
        nh: NhId(3),
        label: 20,
        nat: None,
        hairpin: Hairpin::No,
        policy_gen: 0x0123_4567,
        route_gen: 1,
        mirror: false,
        from_node: u32::from(std::net::Ipv4Addr::new(192, 0, 2, 2)),
        pinned: false,
    };
    let aging = AgingConfig::millis();
    let (fi, _) = t
        .insert_pair((&key(1), &act), (&key(1).reversed(), &act), 0, &aging)
        .unwrap();
    // TCP flags go into the same word: the node stays.
    t.touch(fi, 60, 1, 0xff);
    let hit = t
        .lookup(&key(1), key(1).hash())
        .expect("found under the new seed");
    assert_eq!(hit.action, act);
}
