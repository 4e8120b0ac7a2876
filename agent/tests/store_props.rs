//! Random sequences of changes, well-formed or not, against the configuration database:
//! nothing panics, a refused change leaves the database exactly as it was, and what is
//! stored always holds the invariants (addresses unique and inside their networks,
//! references resolvable).

use agent::kinds::{Kind, meta};
use agent::proto::{self, Object, Ref, object::Kind as K};
use agent::store::{Change, Db};
use proptest::prelude::*;

const P: [&str; 2] = ["d", "p"];

fn fq(n: &str) -> Vec<String> {
    vec![P[0].into(), P[1].into(), n.into()]
}

fn r(t: &str, fq_name: Vec<String>) -> Ref {
    Ref {
        r#type: t.into(),
        uuid: String::new(),
        fq_name,
    }
}

fn snapshot(db: &Db) -> (u64, Vec<Vec<u8>>) {
    use prost::Message;
    let mut v: Vec<Vec<u8>> = db.all().map(|o| o.encode_to_vec()).collect();
    v.sort();
    (db.revision(), v)
}

fn change() -> impl Strategy<Value = Change> {
    let name = prop::sample::select(vec!["a", "b", "c"]);
    let prefix = prop::sample::select(vec![
        "10.0.0.0/24",
        "10.0.0.0/16",
        "10.0.1.0/24",
        "10.0.0.0/33",
        "10.0.0.1/24",
        "fd00::/64",
        "garbage",
        "",
    ]);
    let addr = prop::sample::select(vec![
        "",
        "10.0.0.3",
        "10.0.0.3",
        "10.0.1.9",
        "10.0.0.255",
        "fd00::5",
        "1.2.3.4",
        "x",
    ]);
    prop_oneof![
        (name.clone(), prefix, any::<u8>()).prop_map(|(n, p, vni)| {
            Change::Create(Object {
                kind: Some(K::VirtualNetwork(proto::VirtualNetwork {
                    fq_name: fq(n),
                    vxlan_network_identifier: u32::from(vni % 4),
                    network_ipam_refs: vec![proto::IpamRef {
                        ipam: Some(r("network-ipam", fq("ipam"))),
                        subnets: vec![proto::Subnet {
                            prefix: p.into(),
                            ..Default::default()
                        }],
                    }],
                    ..Default::default()
                })),
            })
        }),
        (name.clone(), name.clone(), addr).prop_map(|(i, n, a)| {
            Change::Create(Object {
                kind: Some(K::InstanceIp(proto::InstanceIp {
                    fq_name: vec![format!("ip-{i}")],
                    instance_ip_address: a.into(),
                    virtual_network_ref: Some(r("virtual-network", fq(n))),
                    ..Default::default()
                })),
            })
        }),
        (name.clone(), name.clone()).prop_map(|(v, n)| {
            Change::Create(Object {
                kind: Some(K::VirtualMachineInterface(proto::VirtualMachineInterface {
                    fq_name: fq(&format!("vmi-{v}")),
                    virtual_network_ref: Some(r("virtual-network", fq(n))),
                    ..Default::default()
                })),
            })
        }),
        name.clone()
            .prop_map(|n| Change::Delete(r("virtual-network", fq(n)))),
        name.clone()
            .prop_map(|n| Change::Delete(r("instance-ip", vec![format!("ip-{n}")]))),
        name.prop_map(|n| Change::Delete(r("virtual-machine-interface", fq(&format!("vmi-{n}"))))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn refused_changes_leave_no_trace_and_invariants_hold(
        batches in prop::collection::vec(prop::collection::vec(change(), 1..4), 1..12)
    ) {
        let mut db = Db::new();
        db.apply(vec![
            Change::Create(Object { kind: Some(K::Project(proto::Project {
                fq_name: vec![P[0].into(), P[1].into()], ..Default::default() })) }),
            Change::Create(Object { kind: Some(K::NetworkIpam(proto::NetworkIpam {
                fq_name: fq("ipam"), ..Default::default() })) }),
        ]).unwrap();
        for b in batches {
            let before = snapshot(&db);
            if db.apply(b).is_err() {
                prop_assert_eq!(snapshot(&db), before);
            }
            // Invariants of what is stored.
            let mut seen = std::collections::HashSet::new();
            for o in db.list(Kind::InstanceIp) {
                let Some(K::InstanceIp(i)) = &o.kind else { unreachable!() };
                let vn_ref = i.virtual_network_ref.as_ref().unwrap();
                let vn = db.vn(&vn_ref.uuid).expect("referenced VN exists");
                let a: std::net::IpAddr = i.instance_ip_address.parse().expect("an address");
                prop_assert!(db.vn_subnets(vn).iter().any(|s| s.net.contains(a)));
                prop_assert!(seen.insert((vn_ref.uuid.clone(), a)), "duplicate {}", a);
            }
            for o in db.all() {
                for u in agent::kinds::ref_uuids(o) {
                    prop_assert!(db.get(&u).is_some(), "{} refers to missing {}", meta(o).0, u);
                }
            }
        }
    }
}
