//! Rule sets: network policies per VN and security groups per interface, compiled to
//! the vrouter's rule sets.

use super::*;

pub(super) fn vn_policy_name(vn: &str) -> String {
    format!("{POLICY_PREFIX}vn/{vn}")
}

pub(super) fn vn_policy_list<'a>(
    db: &'a Db,
    vn_uuid: &str,
) -> Vec<(String, &'a proto::NetworkPolicy)> {
    let Some(vn) = db.vn(vn_uuid) else {
        return vec![];
    };
    vn.network_policy_refs
        .iter()
        .filter_map(|r| match db.get(&r.uuid).map(|o| &o.kind) {
            Some(Some(object::Kind::NetworkPolicy(np))) => Some((r.uuid.clone(), np)),
            _ => None,
        })
        .collect()
}

pub(super) fn vn_has_policies(db: &Db, vn_uuid: &str) -> bool {
    !vn_policy_list(db, vn_uuid).is_empty()
}

pub(super) fn vn_policies(c: &mut Ctx<'_>, ports: &BTreeMap<String, PortRec>) {
    let _ = ports;
    let used: BTreeSet<String> = c
        .out
        .vifs
        .values()
        .flat_map(|v| v.egress.iter())
        .filter(|n| n.starts_with(&format!("{POLICY_PREFIX}vn/")))
        .cloned()
        .collect();
    for name in used {
        let vn_uuid = name
            .trim_start_matches(&format!("{POLICY_PREFIX}vn/"))
            .to_string();
        let own = c.vns.get(&vn_uuid).map_or(0, |v| v.1);
        let mut rules = vec![RuleCfg {
            proto: None,
            src: EndpointCfg::default(),
            dst: EndpointCfg {
                vn: Some(own),
                ..Default::default()
            },
            sport: None,
            dport: None,
            action: ActionCfg::Pass,
        }];
        for (_, np) in vn_policy_list(c.db, &vn_uuid) {
            for r in &np.network_policy_entries {
                let action = if r.action == "deny" {
                    ActionCfg::Deny
                } else {
                    ActionCfg::Pass
                };
                let forward = expand(c, r, own, false, action);
                rules.extend(forward);
                if r.direction == "<>" {
                    rules.extend(expand(c, r, own, true, action));
                }
            }
        }
        c.out.policies.insert(
            name.clone(),
            PolicyCfg {
                name,
                rules,
                default: ActionCfg::Deny,
                network: true,
            },
        );
    }
}

/// An address of a rule as an endpoint match; none when it names something unknown
/// (the rule then matches nothing and is left out).
pub(super) fn endpoint(c: &Ctx<'_>, a: &proto::AddressType, own_vn: u32) -> Option<EndpointCfg> {
    if !a.subnet.is_empty() {
        return Some(EndpointCfg {
            prefix: Some(a.subnet.clone()),
            ..Default::default()
        });
    }
    if !a.security_group.is_empty() && a.security_group != "local" {
        let id = *c.sg_ids.get(&a.security_group)?;
        return Some(EndpointCfg {
            tags: Some(vec![id | SG_TAG]),
            ..Default::default()
        });
    }
    match a.virtual_network.as_str() {
        "" | "any" => Some(EndpointCfg::default()),
        "local" => Some(EndpointCfg {
            vn: Some(own_vn),
            ..Default::default()
        }),
        fq => {
            let u = c.vn_by_fq.get(fq)?;
            Some(EndpointCfg {
                vn: Some(c.vns.get(u)?.1),
                ..Default::default()
            })
        }
    }
}

pub(super) fn port_list(p: &[proto::PortRange]) -> Vec<Option<(u16, u16)>> {
    if p.is_empty() {
        return vec![None];
    }
    p.iter()
        .map(|r| {
            let (s, e) = (r.start_port as u16, r.end_port as u16);
            (s != 0 || e != 65535).then_some((s, e))
        })
        .collect()
}

pub(super) fn addr_list(c: &Ctx<'_>, a: &[proto::AddressType], own: u32) -> Vec<EndpointCfg> {
    if a.is_empty() {
        return vec![EndpointCfg::default()];
    }
    a.iter().filter_map(|x| endpoint(c, x, own)).collect()
}

/// A network-policy rule as vrouter rules; `mirror` swaps the sides (the `<>` reverse).
pub(super) fn expand(
    c: &Ctx<'_>,
    r: &proto::PolicyRule,
    own: u32,
    mirror: bool,
    action: ActionCfg,
) -> Vec<RuleCfg> {
    let proto = protocol_number(&r.protocol).flatten();
    let (mut sa, mut da) = (
        addr_list(c, &r.src_addresses, own),
        addr_list(c, &r.dst_addresses, own),
    );
    let (mut sp, mut dp) = (port_list(&r.src_ports), port_list(&r.dst_ports));
    if mirror {
        std::mem::swap(&mut sa, &mut da);
        std::mem::swap(&mut sp, &mut dp);
    }
    let mut out = Vec::new();
    for s in &sa {
        for d in &da {
            for spr in &sp {
                for dpr in &dp {
                    out.push(RuleCfg {
                        proto,
                        src: s.clone(),
                        dst: d.clone(),
                        sport: *spr,
                        dport: *dpr,
                        action,
                    });
                }
            }
        }
    }
    out
}

/// The ingress and egress rule sets of a combination of security groups: the union of
/// their rules (allow), default deny.
pub(super) fn sg_sets(
    c: &Ctx<'_>,
    vmi: &proto::VirtualMachineInterface,
    key: &str,
) -> (PolicyCfg, PolicyCfg) {
    let own = vmi
        .virtual_network_ref
        .as_ref()
        .and_then(|r| c.vns.get(&r.uuid))
        .map_or(0, |v| v.1);
    let mut ingress = Vec::new();
    let mut egress = Vec::new();
    let mut groups: Vec<&proto::SecurityGroup> = vmi
        .security_group_refs
        .iter()
        .filter_map(|r| match c.db.get(&r.uuid).map(|o| &o.kind) {
            Some(Some(object::Kind::SecurityGroup(sg))) => Some(sg),
            _ => None,
        })
        .collect();
    groups.sort_by_key(|g| g.security_group_id);
    for sg in groups {
        for r in &sg.security_group_entries {
            let local_dst = r.dst_addresses.iter().any(|a| a.security_group == "local");
            let proto = protocol_number(&r.protocol).flatten();
            let family = |e: EndpointCfg| {
                if e == EndpointCfg::default() && !r.ethertype.is_empty() {
                    EndpointCfg {
                        prefix: Some(
                            if r.ethertype == "IPv6" {
                                "::/0"
                            } else {
                                "0.0.0.0/0"
                            }
                            .into(),
                        ),
                        ..Default::default()
                    }
                } else {
                    e
                }
            };
            let remote: Vec<&proto::AddressType> = if local_dst {
                r.src_addresses.iter().collect()
            } else {
                r.dst_addresses.iter().collect()
            };
            let remote: Vec<EndpointCfg> = if remote.is_empty() {
                vec![EndpointCfg::default()]
            } else {
                remote.iter().filter_map(|a| endpoint(c, a, own)).collect()
            };
            for e in remote {
                let e = family(e);
                for sp in port_list(&r.src_ports) {
                    for dp in port_list(&r.dst_ports) {
                        let rule = |src, dst| RuleCfg {
                            proto,
                            src,
                            dst,
                            sport: sp,
                            dport: dp,
                            action: ActionCfg::Pass,
                        };
                        if local_dst {
                            ingress.push(rule(e.clone(), EndpointCfg::default()));
                        } else {
                            egress.push(rule(EndpointCfg::default(), e.clone()));
                        }
                    }
                }
            }
        }
    }
    let set = |dir: &str, rules| PolicyCfg {
        name: format!("{POLICY_PREFIX}sg/{key}/{dir}"),
        rules,
        default: ActionCfg::Deny,
        network: false,
    };
    (set("in", ingress), set("out", egress))
}
