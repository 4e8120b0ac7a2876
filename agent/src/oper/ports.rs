//! Local ports: each one's vif, nexthop, label, attribute record, security groups and
//! allowed sources.

use super::*;

pub(super) fn sgs_of(c: &Ctx<'_>, vmi: &proto::VirtualMachineInterface) -> Vec<u32> {
    let mut v: Vec<u32> = vmi
        .security_group_refs
        .iter()
        .filter_map(|r| c.sg_ids.get(&r.uuid).copied())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub(super) fn local_port(
    c: &mut Ctx<'_>,
    node: &Node,
    vmi: &proto::VirtualMachineInterface,
    port: &PortRec,
    iips: Option<&Vec<&proto::InstanceIp>>,
    priority: &[String],
) {
    let Some(vn_uuid) = vmi.virtual_network_ref.as_ref().map(|r| r.uuid.clone()) else {
        return;
    };
    let Some(&(vrf, vn_id, vni)) = c.vns.get(&vn_uuid) else {
        return;
    };
    let vif = c.ids.get("vif", &vmi.uuid);
    let nh = c.ids.get("nh", &format!("vmi/{}", vmi.uuid));
    let label = c.ids.get("label", &vmi.uuid);
    let attr = c.ids.get("attr", &format!("vmi/{}", vmi.uuid));
    let sgs = sgs_of(c, vmi);
    let mut tags: Vec<u32> = vmi
        .tag_refs
        .iter()
        .filter_map(|r| c.tag_ids.get(&r.uuid).copied())
        .collect();
    tags.sort_unstable();
    let applied: Vec<PolicyCfg> = c
        .aps
        .iter()
        .filter(|a| a.applies(&tags))
        .map(|a| a.set.clone())
        .collect();
    tags.extend(sgs.iter().map(|s| s | SG_TAG));
    set_attr(c, attr, vn_id, tags);
    let (mut ingress, mut egress) = (Vec::new(), Vec::new());
    // Each application policy set that applies decides in both directions.
    for set in applied {
        ingress.push(set.name.clone());
        egress.push(set.name.clone());
        c.out.policies.insert(set.name.clone(), set);
    }
    if !vmi.security_group_refs.is_empty() {
        let key = sgs.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let (i, e) = sg_sets(c, vmi, &key);
        ingress.push(i.name.clone());
        egress.push(e.name.clone());
        c.out.policies.insert(i.name.clone(), i);
        c.out.policies.insert(e.name.clone(), e);
    }
    if vn_has_policies(c.db, &vn_uuid) {
        egress.push(vn_policy_name(&vn_uuid));
    }
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut info = proto::PortInfo {
        vmi_uuid: vmi.uuid.clone(),
        device: port.device.clone(),
        name: port.name.clone(),
        vif,
        mac_address: vmi.mac_address.clone(),
        ..Default::default()
    };
    let vn = c.db.vn(&vn_uuid).cloned();
    let subnets = vn.as_ref().map(|v| c.db.vn_subnets(v)).unwrap_or_default();
    for i in iips.into_iter().flatten() {
        let Ok(a) = i.instance_ip_address.parse::<IpAddr>() else {
            continue;
        };
        let iip_vn = i
            .virtual_network_ref
            .as_ref()
            .map_or(vn_uuid.clone(), |r| r.uuid.clone());
        c.paths
            .entry((iip_vn, host_prefix(a)))
            .or_default()
            .push(Path {
                nh,
                label,
                attr,
                pref: preference(vmi),
            });
        if i.service_instance_ip {
            continue;
        }
        addrs.push(a);
        if let Some(s) = subnets.iter().find(|s| s.net.contains(a)) {
            info.ip_addresses.push(format!("{a}/{}", s.net.len));
            match a {
                IpAddr::V4(_) => {
                    info.gateway = s.gateway.to_string();
                    info.dns_server = s.dns.to_string();
                }
                IpAddr::V6(_) => info.gateway6 = s.gateway.to_string(),
            }
        }
    }
    // Every address of the interface is published, service addresses included: the
    // nodes that see several publishers build the ECMP composite.
    for i in iips.into_iter().flatten() {
        if let Ok(a) = i.instance_ip_address.parse::<IpAddr>() {
            c.out.published.push(RemoteRoute {
                node_ip: node.ip,
                node_mac: node.mac.clone(),
                vn: i
                    .virtual_network_ref
                    .as_ref()
                    .map_or(vn_uuid.clone(), |r| r.uuid.clone()),
                prefix: host_prefix(a),
                label,
                vni,
                encaps: priority.to_vec(),
                security_groups: vmi
                    .security_group_refs
                    .iter()
                    .map(|r| r.uuid.clone())
                    .collect(),
                tags: vmi.tag_refs.iter().map(|r| r.uuid.clone()).collect(),
                preference: preference(vmi),
            });
        }
    }
    let name = if port.name.is_empty() {
        format!("vmi-{}", &vmi.uuid[..8.min(vmi.uuid.len())])
    } else {
        port.name.clone()
    };
    c.out.vifs.insert(
        vif,
        VifCfg {
            id: vif,
            name,
            kind: VifKindCfg::Virtual,
            device: (!port.device.is_empty()).then(|| port.device.clone()),
            mac: node.vrouter_mac.clone(),
            vrf,
            ip4: addrs.iter().find_map(|a| match a {
                IpAddr::V4(v) => Some(*v),
                _ => None,
            }),
            ip6: addrs.iter().find_map(|a| match a {
                IpAddr::V6(v) => Some(*v),
                _ => None,
            }),
            mtu: port.mtu,
            ingress,
            egress,
            attr,
            // Anti-spoofing: the pod sends from its MAC and addresses, and the pairs'.
            vm_mac: Some(vmi.mac_address.clone()),
            allowed: allowed_sources(vmi, &addrs),
        },
    );
    c.out.nexthops.insert(
        nh,
        NexthopCfg {
            id: nh,
            kind: NexthopKind::Encap {
                vif,
                dmac: vmi.mac_address.clone(),
                smac: node.vrouter_mac.clone(),
            },
        },
    );
    c.out.labels.insert(label, nh);
    c.out.ports.insert(vmi.uuid.clone(), info);
}

/// What an interface may send from besides its first address of each family (the vif's
/// own): its other instance IPs (an address several interfaces share, which their VMs
/// answer from) and its allowed address pairs.
pub(super) fn allowed_sources(
    vmi: &proto::VirtualMachineInterface,
    addrs: &[IpAddr],
) -> Vec<AllowedCfg> {
    let first4 = addrs.iter().position(IpAddr::is_ipv4);
    let first6 = addrs.iter().position(IpAddr::is_ipv6);
    addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != first4 && Some(*i) != first6)
        .map(|(_, a)| AllowedCfg {
            prefix: host_prefix(*a),
            mac: None,
        })
        .chain(vmi.allowed_address_pairs.iter().map(|p| AllowedCfg {
            prefix: p.ip_prefix.clone(),
            mac: (!p.mac.is_empty()).then(|| p.mac.clone()),
        }))
        .collect()
}

/// The node's address in the ip-fabric network: delivered to the host through vhost0.
pub(super) fn host_route(c: &mut Ctx<'_>, node: &Node, host: u32, vn_uuid: &str, vn_id: u32) {
    let nh = c.ids.get("nh", "receive/host");
    c.out.nexthops.insert(
        nh,
        NexthopCfg {
            id: nh,
            kind: NexthopKind::Receive { vif: host },
        },
    );
    let attr = c.ids.get("attr", "host");
    set_attr(c, attr, vn_id, vec![]);
    c.paths
        .entry((vn_uuid.to_string(), host_prefix(IpAddr::V4(node.ip))))
        .or_default()
        .push(Path {
            nh,
            label: 0,
            attr,
            pref: DEFAULT_PREFERENCE,
        });
}

/// An attribute record (tags sorted, as the vrouter keeps them, so that diffs compare).
pub(super) fn set_attr(c: &mut Ctx<'_>, id: u32, vn: u32, mut tags: Vec<u32>) {
    tags.sort_unstable();
    tags.dedup();
    c.out.attrs.insert(id, AttrCfg { id, vn, tags });
}
