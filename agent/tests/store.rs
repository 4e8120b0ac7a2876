//! The configuration database on its own: all-or-nothing batches, address management,
//! references that block deletes, and fields the API assigns and keeps.

mod common;

use agent::proto::{self, Object, object::Kind as K};
use agent::store::{Change, Db};
use common::{P, fq, obj, project_and_ipam, r};
use tonic::Code;

fn vn(name: &str, ipam: &str, prefix: &str) -> Object {
    obj(K::VirtualNetwork(proto::VirtualNetwork {
        fq_name: fq(name),
        network_ipam_refs: vec![proto::IpamRef {
            ipam: Some(r("network-ipam", fq(ipam))),
            subnets: if prefix.is_empty() {
                vec![]
            } else {
                vec![proto::Subnet {
                    prefix: prefix.into(),
                    ..Default::default()
                }]
            },
        }],
        ..Default::default()
    }))
}

fn iip(name: &str, net: &str, addr: &str) -> Object {
    obj(K::InstanceIp(proto::InstanceIp {
        fq_name: vec![name.into()],
        instance_ip_address: addr.into(),
        virtual_network_ref: Some(r("virtual-network", fq(net))),
        ..Default::default()
    }))
}

fn base() -> Db {
    let mut db = Db::new();
    let mut changes = Vec::from(project_and_ipam());
    changes.push(Change::Create(obj(K::NetworkIpam(proto::NetworkIpam {
        fq_name: fq("flat"),
        ipam_subnet_method: "flat-subnet".into(),
        ipam_subnets: vec![proto::Subnet {
            prefix: "10.32.0.0/12".into(),
            ..Default::default()
        }],
        ..Default::default()
    }))));
    db.apply(changes).unwrap();
    db
}

fn addr(o: &Object) -> String {
    match &o.kind {
        Some(K::InstanceIp(i)) => i.instance_ip_address.clone(),
        _ => panic!("not an instance-ip"),
    }
}

#[test]
fn a_failed_batch_leaves_no_trace() {
    let mut db = base();
    let (n, rev) = (db.len(), db.revision());
    let e = db
        .apply(vec![
            Change::Create(vn("red", "ipam", "10.1.0.0/24")),
            Change::Create(iip("a", "red", "10.1.0.3")),
            Change::Create(iip("b", "red", "10.1.0.3")),
        ])
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().starts_with("change 2:"), "{}", e.message());
    // The refused change is named for a client that applies the rest without it.
    assert_eq!(
        e.metadata()
            .get(agent::store::CHANGE_INDEX)
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_eq!((db.len(), db.revision()), (n, rev));
    // The indexes were rolled back too: the same names and address are free.
    db.apply(vec![
        Change::Create(vn("red", "ipam", "10.1.0.0/24")),
        Change::Create(iip("a", "red", "10.1.0.3")),
    ])
    .unwrap();
}

#[test]
fn addresses_are_allocated_without_duplicates_and_reused_after_delete() {
    let mut db = base();
    db.apply(vec![Change::Create(vn("small", "ipam", "10.9.0.0/29"))])
        .unwrap();
    // .0 network, .1 gateway, .2 DNS, .7 broadcast: .3 to .6 remain.
    let mut got = Vec::new();
    for i in 0..4 {
        let c = db
            .apply(vec![Change::Create(iip(&format!("i{i}"), "small", ""))])
            .unwrap();
        got.push(addr(c.objects[0].as_ref().unwrap()));
    }
    assert_eq!(got, ["10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
    let e = db
        .apply(vec![Change::Create(iip("i4", "small", ""))])
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    db.apply(vec![Change::Delete(r("instance-ip", vec!["i1".into()]))])
        .unwrap();
    let c = db
        .apply(vec![Change::Create(iip("i5", "small", ""))])
        .unwrap();
    assert_eq!(addr(c.objects[0].as_ref().unwrap()), "10.9.0.4");
    for (a, code) in [
        ("10.9.0.1", Code::InvalidArgument),
        ("10.9.0.7", Code::InvalidArgument),
        ("10.9.1.3", Code::InvalidArgument),
        ("10.9.0.3", Code::AlreadyExists),
        ("not-an-ip", Code::InvalidArgument),
    ] {
        let e = db
            .apply(vec![Change::Create(iip("x", "small", a))])
            .unwrap_err();
        assert_eq!(e.code(), code, "{a}: {}", e.message());
        assert!(
            e.message().contains("instance_ip_address"),
            "{}",
            e.message()
        );
    }
}

#[test]
fn a_flat_subnet_is_one_address_space_across_networks() {
    let mut db = base();
    db.apply(vec![
        Change::Create(vn("pods-a", "flat", "")),
        Change::Create(vn("pods-b", "flat", "")),
        Change::Create(iip("a", "pods-a", "10.32.0.10")),
    ])
    .unwrap();
    let e = db
        .apply(vec![Change::Create(iip("b", "pods-b", "10.32.0.10"))])
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());
    // A user-defined subnet next to a flat ipam must not carry its own subnets.
    let e = db
        .apply(vec![Change::Create(vn("bad", "flat", "10.99.0.0/24"))])
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[test]
fn referenced_objects_cannot_be_deleted_and_names_cannot_change() {
    let mut db = base();
    let c = db
        .apply(vec![
            Change::Create(vn("red", "ipam", "10.1.0.0/24")),
            Change::Create(iip("a", "red", "")),
        ])
        .unwrap();
    let red = c.objects[0].clone().unwrap();
    let e = db
        .apply(vec![Change::Delete(r("virtual-network", fq("red")))])
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("instance-ip a"), "{}", e.message());
    let e = db
        .apply(vec![Change::Delete(r(
            "project",
            P.iter().map(|s| s.to_string()).collect(),
        ))])
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "children block a delete"
    );

    // Updates keep the assigned fields; the FQ name is fixed.
    let Some(K::VirtualNetwork(mut v)) = red.kind.clone() else {
        unreachable!()
    };
    let id = v.virtual_network_network_id;
    v.virtual_network_network_id = 0;
    v.vxlan_network_identifier = 0;
    let c = db
        .apply(vec![Change::Update(obj(K::VirtualNetwork(v.clone())))])
        .unwrap();
    let Some(K::VirtualNetwork(after)) = c.objects[0].clone().unwrap().kind else {
        unreachable!()
    };
    assert_eq!(after.virtual_network_network_id, id);
    assert_ne!(after.vxlan_network_identifier, 0);
    v.fq_name = fq("blue");
    let e = db
        .apply(vec![Change::Update(obj(K::VirtualNetwork(v.clone())))])
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Shrinking the subnets under a used address is refused.
    v.fq_name = fq("red");
    v.network_ipam_refs[0].subnets[0].prefix = "10.2.0.0/24".into();
    let e = db
        .apply(vec![Change::Update(obj(K::VirtualNetwork(v)))])
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());

    db.apply(vec![
        Change::Delete(r("instance-ip", vec!["a".into()])),
        Change::Delete(r("virtual-network", fq("red"))),
    ])
    .unwrap();
    assert!(
        db.by_fq(agent::kinds::Kind::VirtualNetwork, &fq("red"))
            .is_none()
    );
}

fn vmi(name: &str, parent: Option<&str>, tag: u32) -> Object {
    obj(K::VirtualMachineInterface(proto::VirtualMachineInterface {
        fq_name: fq(name),
        virtual_network_ref: Some(r("virtual-network", fq("red"))),
        parent_interface_ref: parent.map(|p| r("virtual-machine-interface", fq(p))),
        sub_interface_vlan_tag: tag,
        ..Default::default()
    }))
}

fn tag_of(o: &Option<Object>) -> u32 {
    match o.as_ref().and_then(|o| o.kind.as_ref()) {
        Some(K::VirtualMachineInterface(v)) => v.sub_interface_vlan_tag,
        _ => panic!("not an interface"),
    }
}

/// Nested mode: pods' interfaces are sub-interfaces of their node VM's interface, told
/// apart by VLAN tags the store assigns (lowest free), keeps and keeps unique.
#[test]
fn sub_interfaces_get_unique_vlan_tags_under_their_parent() {
    let mut db = base();
    db.apply(vec![
        Change::Create(vn("red", "ipam", "10.1.0.0/24")),
        Change::Create(vmi("vm", None, 0)),
    ])
    .unwrap();
    let c = db
        .apply(vec![
            Change::Create(vmi("pod1", Some("vm"), 0)),
            Change::Create(vmi("pod2", Some("vm"), 0)),
        ])
        .unwrap();
    assert_eq!((tag_of(&c.objects[0]), tag_of(&c.objects[1])), (1, 2));
    // An update without a tag keeps it.
    let c = db
        .apply(vec![Change::Update(vmi("pod2", Some("vm"), 0))])
        .unwrap();
    assert_eq!(tag_of(&c.objects[0]), 2);
    // Taken, out of range, or without a parent: refused, nothing changed.
    let e = db
        .apply(vec![Change::Create(vmi("pod3", Some("vm"), 2))])
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());
    let e = db
        .apply(vec![Change::Create(vmi("pod3", Some("vm"), 4095))])
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = db
        .apply(vec![Change::Create(vmi("pod3", None, 7))])
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = db
        .apply(vec![Change::Create(vmi("pod3", Some("nowhere"), 0))])
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The parent cannot go while its sub-interfaces are there; a freed tag is reused.
    let e = db
        .apply(vec![Change::Delete(r(
            "virtual-machine-interface",
            fq("vm"),
        ))])
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    db.apply(vec![Change::Delete(r(
        "virtual-machine-interface",
        fq("pod1"),
    ))])
    .unwrap();
    let c = db
        .apply(vec![Change::Create(vmi("pod3", Some("vm"), 0))])
        .unwrap();
    assert_eq!(tag_of(&c.objects[0]), 1);
}

#[test]
fn pools_with_hosts_or_paths_haproxy_would_read_as_directives_are_refused() {
    let mut db = base();
    let rev = db.revision();
    for (host, path, field) in [
        (
            "",
            "/x\n    http-request return status 200 file /etc/shadow if TRUE\n#",
            "path",
        ),
        ("", "/a' if TRUE", "path"),
        ("shop.example.com if TRUE", "/", "host"),
        ("a\nb", "/", "host"),
    ] {
        let e = db
            .apply(vec![Change::Create(obj(K::LoadbalancerPool(
                proto::LoadbalancerPool {
                    fq_name: fq("pool"),
                    host: host.into(),
                    path: path.into(),
                    ..Default::default()
                },
            )))])
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{host:?} {path:?}: {e}");
        assert!(e.message().contains(field), "{host:?} {path:?}: {e}");
        assert_eq!(db.revision(), rev);
    }
}
