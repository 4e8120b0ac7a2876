//! Helpers shared by the store-level tests.

use agent::proto::{Object, Ref, object::Kind as K};

/// A reference by type and FQ name.
pub fn r(t: &str, fq_name: Vec<String>) -> Ref {
    Ref {
        r#type: t.into(),
        uuid: String::new(),
        fq_name,
    }
}

/// An object of a kind.
pub fn obj(k: K) -> Object {
    Object { kind: Some(k) }
}

/// The project the store-level tests work in.
#[allow(dead_code)] // not every test binary uses it
pub const P: [&str; 2] = ["default-domain", "p"];

/// An FQ name in [`P`].
#[allow(dead_code)]
pub fn fq(name: &str) -> Vec<String> {
    P.iter()
        .map(|s| s.to_string())
        .chain([name.to_string()])
        .collect()
}

/// The project [`P`] and its user-defined-subnet ipam `ipam`.
#[allow(dead_code)]
pub fn project_and_ipam() -> [agent::store::Change; 2] {
    use agent::proto;
    use agent::store::Change;
    [
        Change::Create(obj(K::Project(proto::Project {
            fq_name: P.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }))),
        Change::Create(obj(K::NetworkIpam(proto::NetworkIpam {
            fq_name: fq("ipam"),
            ..Default::default()
        }))),
    ]
}

/// A node of the fabric without a fabric or host vif (192.0.2.1).
#[allow(dead_code)]
pub fn node() -> agent::oper::Node {
    agent::oper::Node {
        fabric_vif: 0,
        ip: "192.0.2.1".parse().unwrap(),
        mac: "02:fa:00:00:00:01".into(),
        vrouter_mac: "00:00:5e:00:01:00".into(),
        host_vif: None,
        fabric_vrf: 0,
        gateway_mac: None,
    }
}

/// The network "pods" with 10.1.0.0/24 on the project's ipam.
#[allow(dead_code)]
pub fn pods_network() -> agent::store::Change {
    use agent::proto;
    agent::store::Change::Create(obj(K::VirtualNetwork(proto::VirtualNetwork {
        fq_name: fq("pods"),
        network_ipam_refs: vec![proto::IpamRef {
            ipam: Some(r("network-ipam", fq("ipam"))),
            subnets: vec![proto::Subnet {
                prefix: "10.1.0.0/24".into(),
                ..Default::default()
            }],
        }],
        ..Default::default()
    })))
}
