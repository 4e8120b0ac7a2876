//! Native load balancers resolved by the agent: a loadbalancer with a VIP, listeners,
//! a pool and members becomes a service nexthop over the members' paths (local pods and
//! a pod on another node), the listeners' ports mapped to the members' ports, routed at
//! the VIP in the service network and in the pod network that a policy joins to it.

mod common;

use std::collections::BTreeMap;

use agent::oper::{Bases, Ids, RemoteRoute, desired};
use agent::persist::PortRec;
use agent::proto::{self, object::Kind as K};
use agent::store::{Change, Db};
use common::{fq, node, obj, project_and_ipam, r};
use vrouter_api::config::{NexthopKind, ServicePortCfg};

fn net(name: &str, prefix: &str, policies: &[&str]) -> Change {
    Change::Create(obj(K::VirtualNetwork(proto::VirtualNetwork {
        fq_name: fq(name),
        network_ipam_refs: vec![proto::IpamRef {
            ipam: Some(r("network-ipam", fq("ipam"))),
            subnets: vec![proto::Subnet {
                prefix: prefix.into(),
                ..Default::default()
            }],
        }],
        network_policy_refs: policies
            .iter()
            .map(|p| r("network-policy", fq(p)))
            .collect(),
        ..Default::default()
    })))
}

fn pod(name: &str, addr: &str) -> Vec<Change> {
    vec![
        Change::Create(obj(K::VirtualMachineInterface(
            proto::VirtualMachineInterface {
                fq_name: fq(name),
                virtual_network_ref: Some(r("virtual-network", fq("pods"))),
                ..Default::default()
            },
        ))),
        Change::Create(obj(K::InstanceIp(proto::InstanceIp {
            fq_name: vec![format!("{name}-ip")],
            instance_ip_address: addr.into(),
            virtual_network_ref: Some(r("virtual-network", fq("pods"))),
            virtual_machine_interface_refs: vec![r("virtual-machine-interface", fq(name))],
            ..Default::default()
        }))),
    ]
}

#[test]
fn a_native_load_balancer_becomes_a_service_nexthop_routed_at_its_vip() {
    let mut db = Db::new();
    let mut changes = Vec::from(project_and_ipam());
    changes.extend([
        Change::Create(obj(K::NetworkPolicy(proto::NetworkPolicy {
            fq_name: fq("pods-svc"),
            network_policy_entries: vec![proto::PolicyRule {
                direction: "<>".into(),
                protocol: "any".into(),
                src_addresses: vec![proto::AddressType {
                    virtual_network: "default-domain:p:pods".into(),
                    ..Default::default()
                }],
                dst_addresses: vec![proto::AddressType {
                    virtual_network: "default-domain:p:svc".into(),
                    ..Default::default()
                }],
                action: "pass".into(),
                ..Default::default()
            }],
            ..Default::default()
        }))),
        net("pods", "10.1.0.0/24", &["pods-svc"]),
        net("svc", "10.2.0.0/24", &["pods-svc"]),
        net("public", "203.0.113.0/24", &[]),
        Change::Create(obj(K::FloatingIpPool(proto::FloatingIpPool {
            fq_name: [fq("public"), vec!["pool".into()]].concat(),
            ..Default::default()
        }))),
    ]);
    changes.extend(pod("a", "10.1.0.11"));
    changes.extend(pod("b", "10.1.0.12"));
    changes.extend([
        Change::Create(obj(K::Loadbalancer(proto::Loadbalancer {
            fq_name: fq("web"),
            vip_address: "10.2.0.10".into(),
            virtual_network_ref: Some(r("virtual-network", fq("svc"))),
            provider: "native".into(),
            ..Default::default()
        }))),
        Change::Create(obj(K::LoadbalancerListener(proto::LoadbalancerListener {
            fq_name: fq("web-80"),
            loadbalancer_ref: Some(r("loadbalancer", fq("web"))),
            protocol: "TCP".into(),
            protocol_port: 80,
            ..Default::default()
        }))),
        Change::Create(obj(K::LoadbalancerPool(proto::LoadbalancerPool {
            fq_name: fq("web-80-pool"),
            loadbalancer_listener_ref: Some(r("loadbalancer-listener", fq("web-80"))),
            protocol: "TCP".into(),
            ..Default::default()
        }))),
    ]);
    // Its external address: a floating IP of the public pool (allocated).
    changes.push(Change::Create(obj(K::FloatingIp(proto::FloatingIp {
        fq_name: [fq("public"), vec!["pool".into(), "web-ext".into()]].concat(),
        loadbalancer_ref: Some(r("loadbalancer", fq("web"))),
        ..Default::default()
    }))));
    for (m, addr) in [
        ("a", "10.1.0.11"),
        ("b", "10.1.0.12"),
        ("c", "10.1.0.13"),
        ("gone", "10.1.0.99"),
    ] {
        let mut f = fq("web-80-pool");
        f.push(m.into());
        changes.push(Change::Create(obj(K::LoadbalancerMember(
            proto::LoadbalancerMember {
                fq_name: f,
                address: addr.into(),
                protocol_port: 8080,
                ..Default::default()
            },
        ))));
    }
    db.apply(changes).expect("the configuration is valid");

    let uuid = |name: &str| {
        agent::kinds::meta(
            db.by_fq(agent::kinds::Kind::VirtualMachineInterface, &fq(name))
                .unwrap(),
        )
        .0
        .to_string()
    };
    let vn_uuid = agent::kinds::meta(
        db.by_fq(agent::kinds::Kind::VirtualNetwork, &fq("pods"))
            .unwrap(),
    )
    .0
    .to_string();
    let ports: BTreeMap<String, PortRec> = ["a", "b"]
        .iter()
        .map(|n| {
            (
                uuid(n),
                PortRec {
                    vmi_uuid: uuid(n),
                    device: String::new(),
                    name: n.to_string(),
                    mtu: 1500,
                },
            )
        })
        .collect();
    // Backend c runs on another node.
    let remote = vec![RemoteRoute {
        node_ip: "192.0.2.2".parse().unwrap(),
        node_mac: "02:fa:00:00:00:02".into(),
        vn: vn_uuid,
        prefix: "10.1.0.13/32".into(),
        label: 40,
        vni: 0,
        encaps: vec!["MPLSoUDP".into()],
        security_groups: vec![],
        tags: vec![],
        preference: agent::oper::DEFAULT_PREFERENCE,
    }];
    let node = node();
    let mut ids = Ids::new(Bases::default(), BTreeMap::new());
    let d = desired(&db, &node, &ports, &remote, &mut ids);

    let (id, members, ports) = d
        .nexthops
        .values()
        .find_map(|n| match &n.kind {
            NexthopKind::Service { members, ports, .. } => Some((n.id, members, ports)),
            _ => None,
        })
        .expect("a service nexthop");
    let addrs: Vec<String> = members.iter().map(|m| m.addr.to_string()).collect();
    assert_eq!(
        addrs,
        vec!["10.1.0.11", "10.1.0.12", "10.1.0.13"],
        "the member without a pod is left out"
    );
    // Local members are the pods' encap nexthops, the remote one a tunnel with its label.
    let kind = |nh: u32| d.nexthops[&nh].kind.clone();
    assert!(matches!(kind(members[0].nh), NexthopKind::Encap { .. }));
    assert!(matches!(kind(members[2].nh), NexthopKind::Tunnel { .. }));
    assert_eq!(members[2].label, 40);
    assert_eq!(
        ports,
        &vec![ServicePortCfg {
            proto: 6,
            port: 80,
            target: 8080
        }]
    );
    // Routed at the VIP in the service network and, through the policy, the pod network.
    let at: Vec<u32> = d
        .routes
        .values()
        .filter(|r| r.prefix == "10.2.0.10/32")
        .map(|r| {
            assert_eq!(r.nh, id);
            r.vrf
        })
        .collect();
    assert_eq!(at.len(), 2, "{at:?}");
    // And at the floating IP, in the public network's VRF, with an attribute record naming
    // that network.
    let fip = db
        .list(agent::kinds::Kind::FloatingIp)
        .into_iter()
        .find_map(|o| match &o.kind {
            Some(K::FloatingIp(f)) => Some(f.floating_ip_address.clone()),
            _ => None,
        })
        .unwrap();
    assert!(fip.starts_with("203.0.113."), "{fip}");
    let routes: Vec<&vrouter_api::config::RouteCfg> = d
        .routes
        .values()
        .filter(|r| r.prefix == format!("{fip}/32"))
        .collect();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].nh, id);
    assert!(!at.contains(&routes[0].vrf));
    let vn = d.attrs[&routes[0].attr].vn;
    assert_ne!(
        vn,
        d.attrs[&d
            .routes
            .values()
            .find(|r| r.prefix == "10.2.0.10/32")
            .unwrap()
            .attr]
            .vn
    );
}
