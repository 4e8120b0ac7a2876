//! A route another node publishes names tags and security groups, but the receiving node
//! takes an address's tags and groups from its own configuration: a node cannot give its
//! pod another pod's labels (and so pass another tenant's policy) by publishing them.

mod common;

use std::collections::BTreeMap;

use agent::kinds::Kind;
use agent::oper::{Bases, Desired, Ids, RemoteRoute, SG_TAG, desired};
use agent::proto::{self, object::Kind as K};
use agent::store::{Change, Db};
use common::{fq, node, obj, pods_network, project_and_ipam, r};

fn db() -> Db {
    let mut db = Db::new();
    let mut changes = Vec::from(project_and_ipam());
    changes.extend([
        Change::Create(obj(K::Tag(proto::Tag {
            fq_name: fq("label=app=web"),
            tag_type_name: "label".into(),
            tag_value: "app=web".into(),
            ..Default::default()
        }))),
        Change::Create(obj(K::Tag(proto::Tag {
            fq_name: fq("label=app=db"),
            tag_type_name: "label".into(),
            tag_value: "app=db".into(),
            ..Default::default()
        }))),
        Change::Create(obj(K::SecurityGroup(proto::SecurityGroup {
            fq_name: fq("web"),
            ..Default::default()
        }))),
        Change::Create(obj(K::SecurityGroup(proto::SecurityGroup {
            fq_name: fq("db"),
            ..Default::default()
        }))),
        pods_network(),
    ]);
    // A web pod (on another node) and two backends of one service address.
    for (name, tag, sg, a) in [
        ("web", "label=app=web", "web", "10.1.0.12"),
        ("db-1", "label=app=db", "db", "10.1.0.21"),
        ("db-2", "label=app=db", "db", "10.1.0.22"),
    ] {
        changes.push(Change::Create(obj(K::VirtualMachineInterface(
            proto::VirtualMachineInterface {
                fq_name: fq(name),
                virtual_network_ref: Some(r("virtual-network", fq("pods"))),
                tag_refs: vec![r("tag", fq(tag))],
                security_group_refs: vec![r("security-group", fq(sg))],
                ..Default::default()
            },
        ))));
        changes.push(Change::Create(obj(K::InstanceIp(proto::InstanceIp {
            fq_name: vec![format!("{name}-ip")],
            instance_ip_address: a.into(),
            virtual_network_ref: Some(r("virtual-network", fq("pods"))),
            virtual_machine_interface_refs: vec![r("virtual-machine-interface", fq(name))],
            ..Default::default()
        }))));
    }
    changes.push(Change::Create(obj(K::InstanceIp(proto::InstanceIp {
        fq_name: vec!["db-vip".into()],
        instance_ip_address: "10.1.0.100".into(),
        virtual_network_ref: Some(r("virtual-network", fq("pods"))),
        virtual_machine_interface_refs: vec![
            r("virtual-machine-interface", fq("db-1")),
            r("virtual-machine-interface", fq("db-2")),
        ],
        service_instance_ip: true,
        ..Default::default()
    }))));
    db.apply(changes).expect("the configuration is valid");
    db
}

fn uuid(db: &Db, kind: Kind, name: &str) -> String {
    agent::kinds::meta(db.by_fq(kind, &fq(name)).unwrap())
        .0
        .to_string()
}

fn tag_id(db: &Db, name: &str) -> u32 {
    match &db.by_fq(Kind::Tag, &fq(name)).unwrap().kind {
        Some(K::Tag(t)) => t.tag_id,
        _ => unreachable!(),
    }
}

fn sg_id(db: &Db, name: &str) -> u32 {
    match &db.by_fq(Kind::SecurityGroup, &fq(name)).unwrap().kind {
        Some(K::SecurityGroup(s)) => s.security_group_id | SG_TAG,
        _ => unreachable!(),
    }
}

/// The attribute tags programmed for the route to `prefix`.
fn tags_for(d: &Desired, prefix: &str) -> Vec<u32> {
    let r = d
        .routes
        .values()
        .find(|r| r.prefix == prefix)
        .unwrap_or_else(|| panic!("a route to {prefix}"));
    let mut t = d.attrs[&r.attr].tags.clone();
    t.sort_unstable();
    t
}

#[test]
fn remote_tags_and_groups_come_from_configuration_not_from_the_publisher() {
    let db = db();
    let vn = uuid(&db, Kind::VirtualNetwork, "pods");
    let claim = |prefix: &str, tags: &[&str], sgs: &[&str]| RemoteRoute {
        node_ip: "192.0.2.2".parse().unwrap(),
        node_mac: "02:fa:00:00:00:02".into(),
        vn: vn.clone(),
        prefix: prefix.into(),
        label: 40,
        vni: 0,
        encaps: vec!["MPLSoUDP".into()],
        security_groups: sgs
            .iter()
            .map(|n| uuid(&db, Kind::SecurityGroup, n))
            .collect(),
        tags: tags.iter().map(|n| uuid(&db, Kind::Tag, n)).collect(),
        preference: agent::oper::DEFAULT_PREFERENCE,
    };
    let remote = vec![
        // The web pod's node claims the db labels and group for it.
        claim("10.1.0.12/32", &["label=app=db"], &["db"]),
        // An address configuration gives to no interface, claiming the db labels.
        claim("10.1.0.50/32", &["label=app=db"], &["db"]),
        // The service address both db backends hold: the claim is kept where an owner
        // carries it, the web label (no owner's) is not.
        claim(
            "10.1.0.100/32",
            &["label=app=db", "label=app=web"],
            &["db", "web"],
        ),
    ];
    let node = node();
    let mut ids = Ids::new(Bases::default(), BTreeMap::new());
    let d = desired(&db, &node, &BTreeMap::new(), &remote, &mut ids);
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v
    };
    assert_eq!(
        tags_for(&d, "10.1.0.12/32"),
        sorted(vec![tag_id(&db, "label=app=web"), sg_id(&db, "web")]),
        "the web pod keeps its own labels and group"
    );
    assert_eq!(tags_for(&d, "10.1.0.50/32"), Vec::<u32>::new());
    assert_eq!(
        tags_for(&d, "10.1.0.100/32"),
        sorted(vec![tag_id(&db, "label=app=db"), sg_id(&db, "db")])
    );
}
