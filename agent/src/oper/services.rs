//! Services: load balancers and node ports as service nexthops (ECMP over the
//! backends), their VIP routes and the VMIs they refer to.

use super::*;

/// NodePorts: the node's address (a receive nexthop wherever it is routed) becomes a
/// node-ports nexthop, its ports going to their services and the rest to the host.
pub(super) fn node_ports(c: &mut Ctx<'_>, ports: Vec<NodePortCfg>) {
    let host = c
        .out
        .nexthops
        .values()
        .find(|n| matches!(n.kind, NexthopKind::Receive { .. }))
        .map(|n| n.id);
    let (Some(host), false) = (host, ports.is_empty()) else {
        return;
    };
    let id = c.ids.get("nh", "node-ports");
    c.out.nexthops.insert(
        id,
        NexthopCfg {
            id,
            kind: NexthopKind::NodePorts { ports, host },
        },
    );
    for r in c.out.routes.values_mut().filter(|r| r.nh == host) {
        r.nh = id;
    }
}

/// The objects of one kind that refer to `uuid` or are its children, in UUID order.
pub(super) fn referring<'a, T>(
    db: &'a Db,
    uuid: &str,
    pick: impl Fn(&'a object::Kind) -> Option<&'a T>,
) -> Vec<&'a T> {
    let mut v: Vec<&String> = db.referrers(uuid).collect();
    v.sort();
    v.into_iter()
        .filter_map(|u| db.get(u)?.kind.as_ref())
        .filter_map(pick)
        .collect()
}

/// Native load balancers: each with a VIP and listeners becomes a service nexthop over
/// its members (the paths of their addresses, local or remote) with the listeners' ports
/// mapped to the members' ports, routed at the VIP in its network's VRF and in the VRFs
/// that network's routes leak into. An HAProxy load balancer's VIP is its instances'
/// address (routed to the active one): only its floating IPs get a service nexthop, to
/// the VIP at the listeners' ports. Returns the node ports of the listeners.
pub(super) fn services(
    c: &mut Ctx<'_>,
    paths: &BTreeMap<(String, String), Vec<Path>>,
    into: &HashMap<String, Vec<u32>>,
) -> Vec<NodePortCfg> {
    let mut node_ports = Vec::new();
    let by_addr: HashMap<&str, &Path> = paths
        .iter()
        .filter_map(|((_, prefix), ps)| Some((prefix.as_str(), ps.first()?)))
        .collect();
    for o in c.db.list(Kind::Loadbalancer) {
        let Some(object::Kind::Loadbalancer(lb)) = &o.kind else {
            continue;
        };
        let haproxy = is_haproxy(lb);
        if !haproxy && !matches!(lb.provider.as_str(), "" | "native") {
            continue;
        }
        let (Ok(vip), Some(vn)) = (
            lb.vip_address.parse::<IpAddr>(),
            lb.virtual_network_ref.as_ref().map(|r| r.uuid.clone()),
        ) else {
            continue;
        };
        let mut ports = Vec::new();
        let mut members: Vec<ServiceMemberCfg> = Vec::new();
        let mut affinity = false;
        let mut on_nodes = Vec::new();
        // Listeners refer to the loadbalancer, pools to a listener; members are children
        // of their pool.
        let listeners = referring(c.db, &lb.uuid, |k| match k {
            object::Kind::LoadbalancerListener(l) => Some(l),
            _ => None,
        });
        for l in listeners {
            let proto = match l.protocol.as_str() {
                "UDP" => 17,
                _ => 6,
            };
            let pools = referring(c.db, &l.uuid, |k| match k {
                object::Kind::LoadbalancerPool(p) => Some(p),
                _ => None,
            });
            let mut target = None;
            // HAProxy listens on the VIP itself: its external addresses go to the VIP
            // (the active instance) at the listener's port.
            if haproxy {
                if let Some(p) = by_addr.get(host_prefix(vip).as_str())
                    && members.is_empty()
                {
                    members.push(ServiceMemberCfg {
                        nh: p.nh,
                        label: p.label,
                        weight: 1,
                        addr: vip,
                    });
                }
                ports.push(ServicePortCfg {
                    proto,
                    port: l.protocol_port as u16,
                    target: l.protocol_port as u16,
                });
                continue;
            }
            for pool in pools {
                affinity |= pool.loadbalancer_method == "SOURCE_IP";
                let pool_members = referring(c.db, &pool.uuid, |k| match k {
                    object::Kind::LoadbalancerMember(m) => Some(m),
                    _ => None,
                });
                for m in pool_members {
                    let Ok(addr) = m.address.parse::<IpAddr>() else {
                        continue;
                    };
                    // A member without a path (its pod is gone) is left out.
                    let Some(p) = by_addr.get(host_prefix(addr).as_str()) else {
                        continue;
                    };
                    target.get_or_insert(m.protocol_port as u16);
                    if !members.iter().any(|x| x.addr == addr) {
                        members.push(ServiceMemberCfg {
                            nh: p.nh,
                            label: p.label,
                            weight: m.weight.max(1),
                            addr,
                        });
                    }
                }
            }
            ports.push(ServicePortCfg {
                proto,
                port: l.protocol_port as u16,
                target: target.unwrap_or(l.protocol_port as u16),
            });
            if let Ok(port @ 1..) = u16::try_from(l.node_port) {
                on_nodes.push((proto, port, l.protocol_port as u16));
            }
        }
        if members.is_empty() || ports.is_empty() {
            continue;
        }
        members.sort_by_key(|m| m.addr);
        let id = c.ids.get("nh", &format!("svc/{}", lb.uuid));
        for (proto, port, service_port) in on_nodes {
            // A node port taken already (by an earlier load balancer) stays with it.
            if !node_ports
                .iter()
                .any(|p: &NodePortCfg| p.proto == proto && p.port == port)
            {
                node_ports.push(NodePortCfg {
                    proto,
                    port,
                    service: id,
                    service_port,
                });
            }
        }
        c.out.nexthops.insert(
            id,
            NexthopCfg {
                id,
                kind: NexthopKind::Service {
                    members,
                    ports,
                    affinity,
                },
            },
        );
        let prefix = host_prefix(vip);
        // The VIP is in the service's network: network policies decide on it.
        let Some(&(_, vn_id, _)) = c.vns.get(&vn) else {
            continue;
        };
        // An HAProxy VIP is routed to its instances, as their address.
        let mut at = Vec::new();
        if !haproxy {
            let attr = c.ids.get("attr", &format!("vip/{}", lb.uuid));
            set_attr(c, attr, vn_id, vec![]);
            at.push((prefix, vn, attr));
        }
        // Its floating IPs (external addresses), in their pool's network.
        for f in referring(c.db, &lb.uuid, |k| match k {
            object::Kind::FloatingIp(f) => Some(f),
            _ => None,
        }) {
            let (Ok(addr), Some(fvn)) = (
                f.floating_ip_address.parse::<IpAddr>(),
                f.fq_name
                    .get(..3)
                    .and_then(|fq| c.vn_by_fq.get(&fq_string(fq)))
                    .cloned(),
            ) else {
                continue;
            };
            let Some(&(_, fvn_id, _)) = c.vns.get(&fvn) else {
                continue;
            };
            let fattr = c.ids.get("attr", &format!("fip/{}", f.uuid));
            set_attr(c, fattr, fvn_id, vec![]);
            at.push((host_prefix(addr), fvn, fattr));
        }
        for (prefix, vn, attr) in at {
            for &vrf in into.get(&vn).into_iter().flatten() {
                c.out.routes.insert(
                    (vrf, prefix.clone()),
                    RouteCfg {
                        vrf,
                        prefix: prefix.clone(),
                        nh: id,
                        label: 0,
                        attr,
                    },
                );
            }
        }
    }
    node_ports
}
