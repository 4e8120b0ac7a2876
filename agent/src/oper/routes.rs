//! Routes: to other nodes (tunnel nexthops), to the gateway, the defaults, the
//! ip-fabric SNAT, routes other nodes publish (checked against the configuration, their
//! tags and groups from it) and the routes policies leak between networks.

use super::*;

/// Another node reached on the fabric as it is, no encapsulation: an encap nexthop out
/// of the fabric vif to its MAC (one per node).
pub(super) fn direct_nh(c: &mut Ctx<'_>, node: &Node, (ip, mac): (Ipv4Addr, &str)) -> u32 {
    let nh = c.ids.get("nh", &format!("direct/{ip}"));
    c.out.nexthops.insert(
        nh,
        NexthopCfg {
            id: nh,
            kind: NexthopKind::Encap {
                vif: node.fabric_vif,
                dmac: mac.to_string(),
                smac: node.mac.clone(),
            },
        },
    );
    nh
}

/// The other nodes on the fabric, each by its own address in the fabric VRF: an encap
/// nexthop to its MAC. Replies of connections another node translated for a client
/// outside the cluster (an external IP or a node port of that node, a backend here) go
/// back to it this way.
pub(super) fn node_routes(c: &mut Ctx<'_>, node: &Node, remote: &[RemoteRoute]) {
    let nodes: BTreeMap<Ipv4Addr, &str> = remote
        .iter()
        .filter(|r| r.node_ip != node.ip)
        .map(|r| (r.node_ip, r.node_mac.as_str()))
        .collect();
    for (ip, mac) in nodes {
        let nh = direct_nh(c, node, (ip, mac));
        let prefix = host_prefix(IpAddr::V4(ip));
        c.out
            .routes
            .entry((node.fabric_vrf, prefix.clone()))
            .or_insert(RouteCfg {
                vrf: node.fabric_vrf,
                prefix,
                nh,
                label: 0,
                attr: 0,
            });
    }
}

/// The fabric VRF's default: out of the fabric to the gateway, for answers to addresses
/// outside the cluster (clients of external IPs, SNAT's peers). The underlay's own, so
/// host traffic is still cross-connected as it is.
pub(super) fn gateway_route(c: &mut Ctx<'_>, node: &Node) {
    let Some(gw) = &node.gateway_mac else {
        return;
    };
    let nh = c.ids.get("nh", "gateway");
    let kind = NexthopKind::Encap {
        vif: node.fabric_vif,
        dmac: gw.clone(),
        smac: node.mac.clone(),
    };
    default_routes(c, (nh, kind), &[node.fabric_vrf], 0);
}

/// A nexthop, and the default route to it in each of `vrfs` that has none.
pub(super) fn default_routes(
    c: &mut Ctx<'_>,
    (nh, kind): (u32, NexthopKind),
    vrfs: &[u32],
    attr: u32,
) {
    c.out.nexthops.insert(nh, NexthopCfg { id: nh, kind });
    let prefix = "0.0.0.0/0".to_string();
    for &vrf in vrfs {
        c.out
            .routes
            .entry((vrf, prefix.clone()))
            .or_insert_with(|| RouteCfg {
                vrf,
                prefix: prefix.clone(),
                nh,
                label: 0,
                attr,
            });
    }
}

/// ip-fabric SNAT: a network with `fabric_snat` (and not forwarded in the underlay) gets a
/// default route to a SNAT nexthop, so what it does not route otherwise leaves through the
/// fabric to the gateway with the node's address and a port of the node's pool. The
/// route's attributes name the ip-fabric network: policies decide on it as the underlay.
pub(super) fn fabric_snat(c: &mut Ctx<'_>, node: &Node, fabric_vn: Option<u32>) {
    let Some(gw) = &node.gateway_mac else {
        return;
    };
    let vrfs = std::mem::take(&mut c.snat_vrfs);
    if vrfs.is_empty() {
        return;
    }
    let nh = c.ids.get("nh", "snat");
    let kind = NexthopKind::Snat {
        vif: node.fabric_vif,
        ip: node.ip,
        smac: node.mac.clone(),
        dmac: gw.clone(),
    };
    let attr = c.ids.get("attr", "snat");
    set_attr(c, attr, fabric_vn.unwrap_or(0), vec![]);
    default_routes(c, (nh, kind), &vrfs, attr);
}

/// Whether a remote route's prefix lies in one of its network's subnets.
pub(super) fn in_subnets(db: &Db, r: &RemoteRoute) -> bool {
    let Some(addr) = r
        .prefix
        .split('/')
        .next()
        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
    else {
        return false;
    };
    match db.get(&r.vn).and_then(|o| o.kind.as_ref()) {
        Some(object::Kind::VirtualNetwork(vn)) => {
            db.vn_subnets(vn).iter().any(|s| s.net.contains(addr))
        }
        _ => false,
    }
}

/// A remote address's tags and security groups (as attribute tags), as configuration
/// gives them: those of the interface that owns the address; of an address several
/// interfaces share (a service's), those the publisher names that one of the owners
/// carries; of an address configuration does not know, none. A node cannot give its
/// pods another pod's labels or groups by publishing them.
pub(super) fn remote_tags(
    c: &Ctx<'_>,
    owners: &[&proto::VirtualMachineInterface],
    r: &RemoteRoute,
) -> Vec<u32> {
    let of = |v: &proto::VirtualMachineInterface| -> Vec<u32> {
        v.tag_refs
            .iter()
            .filter_map(|t| c.tag_ids.get(&t.uuid).copied())
            .chain(sgs_of(c, v).into_iter().map(|s| s | SG_TAG))
            .collect()
    };
    match owners {
        [one] => of(one),
        many => {
            let allowed: BTreeSet<u32> = many.iter().flat_map(|v| of(v)).collect();
            r.tags
                .iter()
                .filter_map(|t| c.tag_ids.get(t).copied())
                .chain(
                    r.security_groups
                        .iter()
                        .filter_map(|s| c.sg_ids.get(s).map(|id| id | SG_TAG)),
                )
                .filter(|t| allowed.contains(t))
                .collect()
        }
    }
}

pub(super) fn remote_route(
    c: &mut Ctx<'_>,
    node: &Node,
    r: &RemoteRoute,
    owners: &[&proto::VirtualMachineInterface],
    priority: &[String],
) {
    if r.node_ip == node.ip || !c.vns.contains_key(&r.vn) {
        return;
    }
    // Another node may speak only for addresses of the network's own subnets.
    if !in_subnets(c.db, r) {
        c.out.refused_routes += 1;
        return;
    }
    // A network forwarded in the underlay reaches the node's pods as they are, no
    // encapsulation: out of the fabric to the node's MAC.
    let direct = c.forwarded.contains(&r.vn);
    let Some(encap) = priority
        .iter()
        .find(|e| r.encaps.contains(e))
        .and_then(|e| encap_of(e))
        .or(direct.then_some(Encap::MplsUdp))
    else {
        return;
    };
    let nh = if direct {
        direct_nh(c, node, (r.node_ip, &r.node_mac))
    } else {
        let nh = c.ids.get("nh", &format!("tunnel/{}/{encap:?}", r.node_ip));
        let kind = NexthopKind::Tunnel {
            vif: node.fabric_vif,
            src: node.ip,
            dst: r.node_ip,
            smac: node.mac.clone(),
            dmac: r.node_mac.clone(),
            encaps: vec![encap],
            inner_dmac: None,
        };
        c.out.nexthops.insert(nh, NexthopCfg { id: nh, kind });
        nh
    };
    let attr = c.ids.get("attr", &format!("route/{}/{}", r.vn, r.prefix));
    let vn_id = c.vns[&r.vn].1;
    let tags = remote_tags(c, owners, r);
    set_attr(c, attr, vn_id, tags);
    let label = if direct {
        0
    } else if encap == Encap::Vxlan {
        r.vni
    } else {
        r.label
    };
    c.paths
        .entry((r.vn.clone(), r.prefix.clone()))
        .or_default()
        .push(Path {
            nh,
            label,
            attr,
            pref: r.preference,
        });
}

/// The VNs whose routes a VN's VRF also holds: those a passing rule of its policies names.
pub(super) fn leaks(
    db: &Db,
    vn_uuid: &str,
    vn_by_fq: &HashMap<String, String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, np) in vn_policy_list(db, vn_uuid) {
        for r in &np.network_policy_entries {
            if r.action != "pass" {
                continue;
            }
            for a in r.src_addresses.iter().chain(&r.dst_addresses) {
                if let Some(u) = vn_by_fq.get(&a.virtual_network)
                    && u != vn_uuid
                {
                    out.insert(u.clone());
                }
            }
        }
    }
    out
}

/// Routes for every path, in the VRFs that hold their VN's routes; returns those VRFs
/// by VN.
pub(super) fn routes(
    c: &mut Ctx<'_>,
    paths: &BTreeMap<(String, String), Vec<Path>>,
) -> HashMap<String, Vec<u32>> {
    let vns: Vec<String> = c.vns.keys().cloned().collect();
    // Which VRFs get each VN's routes: its own, and those leaking it.
    let mut into: HashMap<String, Vec<u32>> = HashMap::new();
    for vn in &vns {
        into.entry(vn.clone()).or_default().push(c.vns[vn].0);
        for other in leaks(c.db, vn, &c.vn_by_fq) {
            into.entry(other).or_default().push(c.vns[vn].0);
        }
    }
    for ((vn, prefix), ps) in paths {
        let (nh, label, attr) = if let [p] = ps.as_slice() {
            (p.nh, p.label, p.attr)
        } else {
            let mut ps = ps.clone();
            ps.sort_by_key(|p| (p.nh, p.label));
            ps.dedup_by_key(|p| (p.nh, p.label));
            let id = c.ids.get("nh", &format!("ecmp/{vn}/{prefix}"));
            c.out.nexthops.insert(
                id,
                NexthopCfg {
                    id,
                    kind: NexthopKind::Composite {
                        members: ps
                            .iter()
                            .map(|p| MemberCfg {
                                nh: p.nh,
                                label: p.label,
                                weight: 1,
                            })
                            .collect(),
                    },
                },
            );
            (id, 0, ps[0].attr)
        };
        for vrf in into.get(vn).into_iter().flatten() {
            c.out.routes.insert(
                (*vrf, prefix.clone()),
                RouteCfg {
                    vrf: *vrf,
                    prefix: prefix.clone(),
                    nh,
                    label,
                    attr,
                },
            );
        }
    }
    into
}
