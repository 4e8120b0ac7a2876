//! Per-type validation: values in range, addresses inside their networks, no overlap or
//! duplicate, and the fields the API assigns (MAC, VNI, network id, tag id, addresses).

use std::net::IpAddr;

use tonic::Status;

use super::{Db, Net, invalid};
use crate::kinds::{Kind, meta};
use crate::proto::{self, Object, object};

/// Most allowed address pairs an interface may carry (each is checked per packet sent
/// from an address that is not the VM's own).
const MAX_ALLOWED_PAIRS: usize = 16;

/// A MAC an interface sends from, normalised: unicast only.
fn unicast_mac(name: &str, field: &str, s: &str) -> Result<String, Status> {
    let m: vrouter_api::MacAddr = s.parse().map_err(|e| invalid(name, field, e))?;
    if m.is_multicast() {
        return Err(invalid(name, field, "must be a unicast MAC"));
    }
    Ok(m.to_string())
}

/// Protocols rules accept, by name.
pub fn protocol_number(p: &str) -> Option<Option<u8>> {
    match p.to_ascii_lowercase().as_str() {
        "" | "any" => Some(None),
        "icmp" => Some(Some(1)),
        "tcp" => Some(Some(6)),
        "udp" => Some(Some(17)),
        "icmp6" | "ipv6-icmp" => Some(Some(58)),
        "sctp" => Some(Some(132)),
        n => n.parse::<u8>().ok().map(Some),
    }
}

fn ports(name: &str, field: &str, r: &proto::PortRange) -> Result<(), Status> {
    if r.start_port > 65535 || r.end_port > 65535 {
        return Err(invalid(name, field, "ports are 0..=65535"));
    }
    if r.start_port > r.end_port {
        return Err(invalid(
            name,
            field,
            format!("start {} above end {}", r.start_port, r.end_port),
        ));
    }
    Ok(())
}

fn rule(name: &str, field: &str, r: &mut proto::PolicyRule, sg: bool) -> Result<(), Status> {
    if !matches!(r.direction.as_str(), "" | "<>" | ">") {
        return Err(invalid(name, &format!("{field}.direction"), "is <> or >"));
    }
    if r.direction.is_empty() {
        r.direction = if sg { ">".into() } else { "<>".into() };
    }
    if protocol_number(&r.protocol).is_none() {
        return Err(invalid(
            name,
            &format!("{field}.protocol"),
            format!("{:?} is not a protocol", r.protocol),
        ));
    }
    match (sg, r.action.as_str()) {
        (true, "" | "pass") | (false, "pass" | "deny") => {}
        (false, "") => r.action = "pass".into(),
        (_, a) => return Err(invalid(name, &format!("{field}.action"), format!("{a:?}"))),
    }
    if !matches!(r.ethertype.as_str(), "" | "IPv4" | "IPv6") {
        return Err(invalid(
            name,
            &format!("{field}.ethertype"),
            "is IPv4 or IPv6",
        ));
    }
    for (side, addrs, prs) in [
        ("src", &r.src_addresses, &r.src_ports),
        ("dst", &r.dst_addresses, &r.dst_ports),
    ] {
        for (i, a) in addrs.iter().enumerate() {
            if !a.subnet.is_empty() {
                Net::parse(&a.subnet).map_err(|e| {
                    invalid(name, &format!("{field}.{side}_addresses[{i}].subnet"), e)
                })?;
            }
        }
        for (i, p) in prs.iter().enumerate() {
            ports(name, &format!("{field}.{side}_ports[{i}]"), p)?;
        }
    }
    if sg {
        let local = |a: &[proto::AddressType]| a.iter().any(|x| x.security_group == "local");
        if !local(&r.src_addresses) && !local(&r.dst_addresses) {
            return Err(invalid(
                name,
                field,
                "a security group rule has security_group \"local\" on one side",
            ));
        }
    }
    Ok(())
}

fn next_id(db: &Db, kind: Kind, get: impl Fn(&Object) -> u32) -> u32 {
    db.all()
        .filter(|o| crate::kinds::kind_of(o) == Some(kind))
        .map(&get)
        .max()
        .unwrap_or(0)
        + 1
}

fn mac_for(uuid: &str) -> String {
    let b = uuid::Uuid::parse_str(uuid)
        .map(|u| *u.as_bytes())
        .unwrap_or([0; 16]);
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// Allocates the first free usable address of the VN's subnets of `family`.
fn allocate(db: &mut Db, vn: &proto::VirtualNetwork, v6: bool) -> Option<IpAddr> {
    for s in db.vn_subnets(vn) {
        if s.net.addr.is_ipv6() != v6 {
            continue;
        }
        let size = s.net.size().min(1 << 24);
        let start = db.hint.get(&s.space).copied().unwrap_or(0) % size;
        for k in 0..size {
            let i = (start + k) % size;
            let Some(a) = s.net.nth(i) else { continue };
            if !s.net.usable(a) || a == s.gateway || a == s.dns {
                continue;
            }
            if db.ip_owner(&s.space, a).is_none() {
                db.hint.insert(s.space.clone(), i + 1);
                return Some(a);
            }
        }
    }
    None
}

/// Checks an address for an instance-ip or floating-ip and allocates one when empty.
fn address(
    db: &mut Db,
    name: &str,
    field: &str,
    uuid: &str,
    vn: &proto::VirtualNetwork,
    addr: &mut String,
    v6: bool,
) -> Result<(), Status> {
    if addr.is_empty() {
        let a = allocate(db, vn, v6).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "{name}: {field}: no free address in virtual-network {}",
                crate::kinds::fq_string(&vn.fq_name)
            ))
        })?;
        *addr = a.to_string();
        return Ok(());
    }
    let a: IpAddr = addr
        .parse()
        .map_err(|_| invalid(name, field, format!("{addr:?} is not an address")))?;
    let subnets = db.vn_subnets(vn);
    let Some(s) = subnets.iter().find(|s| s.net.contains(a)) else {
        return Err(invalid(
            name,
            field,
            format!(
                "{a} is in no subnet of virtual-network {}",
                crate::kinds::fq_string(&vn.fq_name)
            ),
        ));
    };
    if !s.net.usable(a) || a == s.gateway {
        return Err(invalid(
            name,
            field,
            format!(
                "{a} is the network, broadcast or gateway address of {}",
                s.net
            ),
        ));
    }
    if let Some(other) = db.ip_owner(&s.space, a)
        && other != uuid
    {
        let other = db.get(other).map_or_else(|| other.clone(), super::label);
        return Err(Status::already_exists(format!(
            "{name}: {field}: {a} is held by {other}"
        )));
    }
    *addr = a.to_string();
    Ok(())
}

/// The type-specific checks.
pub fn kind(db: &mut Db, name: &str, o: &mut Object, old: Option<&Object>) -> Result<(), Status> {
    let uuid = meta(o).0.to_string();
    match &mut o.kind {
        Some(object::Kind::NetworkIpam(i)) => {
            if !matches!(
                i.ipam_subnet_method.as_str(),
                "" | "user-defined-subnet" | "flat-subnet"
            ) {
                return Err(invalid(
                    name,
                    "ipam_subnet_method",
                    "is user-defined-subnet or flat-subnet",
                ));
            }
            if i.ipam_subnet_method.is_empty() {
                i.ipam_subnet_method = "user-defined-subnet".into();
            }
            subnets(name, "ipam_subnets", &i.ipam_subnets)?;
        }
        Some(object::Kind::VirtualNetwork(vn)) => {
            let mut nets: Vec<(String, Net)> = Vec::new();
            for (k, r) in vn.network_ipam_refs.iter().enumerate() {
                let f = format!("network_ipam_refs[{k}].subnets");
                subnets(name, &f, &r.subnets)?;
                let flat = r
                    .ipam
                    .as_ref()
                    .and_then(|i| db.get(&i.uuid))
                    .and_then(|o| match &o.kind {
                        Some(object::Kind::NetworkIpam(i)) => Some(i.clone()),
                        _ => None,
                    })
                    .filter(|i| i.ipam_subnet_method == "flat-subnet");
                if let Some(ipam) = &flat {
                    if !r.subnets.is_empty() {
                        return Err(invalid(
                            name,
                            &f,
                            "a flat-subnet ipam carries the subnets itself",
                        ));
                    }
                    for s in &ipam.ipam_subnets {
                        nets.push((
                            format!("ipam {}", s.prefix),
                            Net::parse(&s.prefix).expect("checked"),
                        ));
                    }
                } else {
                    for (j, s) in r.subnets.iter().enumerate() {
                        nets.push((format!("{f}[{j}]"), Net::parse(&s.prefix).expect("checked")));
                    }
                }
            }
            for (i, (fa, a)) in nets.iter().enumerate() {
                for (fb, b) in &nets[i + 1..] {
                    if a.overlaps(b) {
                        return Err(invalid(name, fa, format!("{a} overlaps {b} ({fb})")));
                    }
                }
            }
            if !matches!(vn.forwarding_mode.as_str(), "" | "l2" | "l3" | "l2_l3") {
                return Err(invalid(name, "forwarding_mode", "is l2, l3 or l2_l3"));
            }
            if vn.forwarding_mode.is_empty() {
                vn.forwarding_mode = "l2_l3".into();
            }
            let old_vn = old.and_then(|o| match &o.kind {
                Some(object::Kind::VirtualNetwork(v)) => Some(v.clone()),
                _ => None,
            });
            let others = || {
                db.list(Kind::VirtualNetwork)
                    .into_iter()
                    .filter_map(|o| match &o.kind {
                        Some(object::Kind::VirtualNetwork(v)) if v.uuid != uuid => Some(v.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            };
            vn.virtual_network_network_id = match &old_vn {
                Some(v) => v.virtual_network_network_id,
                None => next_id(db, Kind::VirtualNetwork, |o| match &o.kind {
                    Some(object::Kind::VirtualNetwork(v)) => v.virtual_network_network_id,
                    _ => 0,
                }),
            };
            if vn.vxlan_network_identifier == 0 {
                vn.vxlan_network_identifier = match &old_vn {
                    Some(v) => v.vxlan_network_identifier,
                    None => {
                        let used: Vec<u32> = others()
                            .iter()
                            .map(|v| v.vxlan_network_identifier)
                            .collect();
                        (vn.virtual_network_network_id..)
                            .find(|x| !used.contains(x))
                            .unwrap_or(1)
                    }
                };
            }
            if vn.vxlan_network_identifier >= 1 << 24 {
                return Err(invalid(name, "vxlan_network_identifier", "is 1..=16777215"));
            }
            if let Some(o) = others()
                .iter()
                .find(|v| v.vxlan_network_identifier == vn.vxlan_network_identifier)
            {
                return Err(Status::already_exists(format!(
                    "{name}: vxlan_network_identifier {} is used by virtual-network {}",
                    vn.vxlan_network_identifier,
                    crate::kinds::fq_string(&o.fq_name)
                )));
            }
            if let Some(old_vn) = &old_vn {
                if old_vn.ip_fabric_forwarding && !vn.ip_fabric_forwarding {
                    return Err(Status::failed_precondition(format!(
                        "{name}: ip_fabric_forwarding cannot be turned off once on"
                    )));
                }
                // Addresses in use must stay inside the subnets.
                let new_subnets = db.vn_subnets(vn);
                for o in db.all() {
                    if let Some(object::Kind::InstanceIp(i)) = &o.kind
                        && i.virtual_network_ref
                            .as_ref()
                            .is_some_and(|r| r.uuid == uuid)
                        && let Ok(a) = i.instance_ip_address.parse::<IpAddr>()
                        && !new_subnets.iter().any(|s| s.net.contains(a))
                    {
                        return Err(Status::failed_precondition(format!(
                            "{name}: network_ipam_refs: instance-ip {} ({a}) would be outside every subnet",
                            crate::kinds::fq_string(&i.fq_name)
                        )));
                    }
                }
            }
        }
        Some(object::Kind::VirtualMachineInterface(v)) => {
            if v.virtual_network_ref.is_none() {
                return Err(invalid(name, "virtual_network_ref", "is required"));
            }
            if v.mac_address.is_empty() {
                v.mac_address = match old {
                    Some(Object {
                        kind: Some(object::Kind::VirtualMachineInterface(o)),
                    }) => o.mac_address.clone(),
                    _ => mac_for(&uuid),
                };
            }
            v.mac_address = unicast_mac(name, "mac_address", &v.mac_address)?;
            if v.allowed_address_pairs.len() > MAX_ALLOWED_PAIRS {
                return Err(invalid(
                    name,
                    "allowed_address_pairs",
                    format!("at most {MAX_ALLOWED_PAIRS}"),
                ));
            }
            for (k, p) in v.allowed_address_pairs.iter_mut().enumerate() {
                let f = format!("allowed_address_pairs[{k}]");
                let net = Net::parse(&p.ip_prefix)
                    .map_err(|e| invalid(name, &format!("{f}.ip_prefix"), e))?;
                p.ip_prefix = net.to_string();
                if !p.mac.is_empty() {
                    p.mac = unicast_mac(name, &format!("{f}.mac"), &p.mac)?;
                }
            }
            vlan_tag(db, name, &uuid, v, old)?;
        }
        Some(object::Kind::InstanceIp(i)) => {
            let Some(vn) = i.virtual_network_ref.as_ref() else {
                return Err(invalid(name, "virtual_network_ref", "is required"));
            };
            let vn = db.vn(&vn.uuid).cloned().expect("resolved");
            let v6 = match i.instance_ip_family.as_str() {
                "" => i
                    .instance_ip_address
                    .parse::<IpAddr>()
                    .is_ok_and(|a| a.is_ipv6()),
                "v4" => false,
                "v6" => true,
                _ => return Err(invalid(name, "instance_ip_family", "is v4 or v6")),
            };
            i.instance_ip_family = if v6 { "v6" } else { "v4" }.into();
            let mut addr = std::mem::take(&mut i.instance_ip_address);
            address(db, name, "instance_ip_address", &uuid, &vn, &mut addr, v6)?;
            if addr.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6() != v6) {
                return Err(invalid(
                    name,
                    "instance_ip_address",
                    "does not match instance_ip_family",
                ));
            }
            i.instance_ip_address = addr;
        }
        Some(object::Kind::FloatingIp(f)) => {
            let pool = &f.fq_name[..4];
            let vn = db
                .by_fq(Kind::VirtualNetwork, &pool[..3])
                .and_then(|o| match &o.kind {
                    Some(object::Kind::VirtualNetwork(v)) => Some(v.clone()),
                    _ => None,
                })
                .expect("parent checked");
            if !f.fixed_ip_address.is_empty() && f.fixed_ip_address.parse::<IpAddr>().is_err() {
                return Err(invalid(name, "fixed_ip_address", "is not an address"));
            }
            let v6 = f
                .floating_ip_address
                .parse::<IpAddr>()
                .is_ok_and(|a| a.is_ipv6());
            let mut addr = std::mem::take(&mut f.floating_ip_address);
            address(db, name, "floating_ip_address", &uuid, &vn, &mut addr, v6)?;
            f.floating_ip_address = addr;
        }
        Some(object::Kind::SecurityGroup(sg)) => {
            for (k, r) in sg.security_group_entries.iter_mut().enumerate() {
                rule(name, &format!("security_group_entries[{k}]"), r, true)?;
            }
            sg.security_group_id = match old {
                Some(Object {
                    kind: Some(object::Kind::SecurityGroup(o)),
                }) => o.security_group_id,
                _ => next_id(db, Kind::SecurityGroup, |o| match &o.kind {
                    Some(object::Kind::SecurityGroup(s)) => s.security_group_id,
                    _ => 0,
                }),
            };
        }
        Some(object::Kind::NetworkPolicy(np)) => {
            for (k, r) in np.network_policy_entries.iter_mut().enumerate() {
                rule(name, &format!("network_policy_entries[{k}]"), r, false)?;
            }
        }
        Some(object::Kind::Tag(t)) => {
            if t.tag_type_name.is_empty() || t.tag_value.is_empty() {
                return Err(invalid(
                    name,
                    "tag_type_name",
                    "type and value are required",
                ));
            }
            let want = format!("{}={}", t.tag_type_name, t.tag_value);
            if t.fq_name.last() != Some(&want) {
                return Err(invalid(
                    name,
                    "fq_name",
                    format!("the last part is {want:?}"),
                ));
            }
            t.tag_id = match old {
                Some(Object {
                    kind: Some(object::Kind::Tag(o)),
                }) => o.tag_id,
                _ => next_id(db, Kind::Tag, |o| match &o.kind {
                    Some(object::Kind::Tag(t)) => t.tag_id,
                    _ => 0,
                }),
            };
        }
        Some(object::Kind::FirewallRule(r)) => {
            if !matches!(r.action.as_str(), "pass" | "deny") {
                return Err(invalid(name, "action", "is pass or deny"));
            }
            if !matches!(r.direction.as_str(), "" | "<>" | ">" | "<") {
                return Err(invalid(name, "direction", "is <>, > or <"));
            }
            if r.direction.is_empty() {
                r.direction = "<>".into();
            }
            for (k, s) in r.services.iter().enumerate() {
                let f = format!("services[{k}]");
                if protocol_number(&s.protocol).is_none() {
                    return Err(invalid(name, &format!("{f}.protocol"), "is not a protocol"));
                }
                if let Some(p) = &s.src_ports {
                    ports(name, &format!("{f}.src_ports"), p)?;
                }
                if let Some(p) = &s.dst_ports {
                    ports(name, &format!("{f}.dst_ports"), p)?;
                }
            }
            let tags = super::tags::TagIndex::new(db);
            for (f, e) in [("endpoint_1", &r.endpoint_1), ("endpoint_2", &r.endpoint_2)] {
                let Some(e) = e else { continue };
                let kinds = usize::from(!e.tags.is_empty())
                    + usize::from(!e.subnet.is_empty())
                    + usize::from(!e.virtual_network.is_empty())
                    + usize::from(e.any);
                if kinds > 1 {
                    return Err(invalid(
                        name,
                        f,
                        "is one of tags, subnet, virtual_network or any",
                    ));
                }
                if !e.subnet.is_empty() {
                    Net::parse(&e.subnet).map_err(|w| invalid(name, &format!("{f}.subnet"), w))?;
                }
                for (k, t) in e.tags.iter().enumerate() {
                    if let Err(why) = tags.resolve(t) {
                        return Err(Status::not_found(format!("{name}: {f}.tags[{k}]: {why}")));
                    }
                }
            }
            if !r.match_tags.is_empty() {
                return Err(Status::unimplemented(format!(
                    "{name}: match_tags is not supported"
                )));
            }
        }
        Some(object::Kind::Loadbalancer(lb)) => {
            if !matches!(
                lb.provider.as_str(),
                "" | "native" | "haproxy" | "opencontrail"
            ) {
                return Err(invalid(name, "provider", "is native or haproxy"));
            }
            // The VIP: allocated in the network when empty, else checked and reserved.
            if let Some(vn) = lb
                .virtual_network_ref
                .as_ref()
                .and_then(|r| db.vn(&r.uuid))
                .cloned()
            {
                let v6 = lb.vip_address.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6());
                let mut addr = std::mem::take(&mut lb.vip_address);
                if addr.is_empty()
                    && let Some(Object {
                        kind: Some(object::Kind::Loadbalancer(o)),
                    }) = old
                {
                    addr = o.vip_address.clone();
                }
                address(db, name, "vip_address", &uuid, &vn, &mut addr, v6)?;
                lb.vip_address = addr;
            } else if !lb.vip_address.is_empty() {
                lb.vip_address
                    .parse::<IpAddr>()
                    .map_err(|_| invalid(name, "vip_address", "is not an address"))?;
            }
        }
        Some(object::Kind::LoadbalancerListener(l)) => {
            if !matches!(
                l.protocol.as_str(),
                "TCP" | "UDP" | "HTTP" | "HTTPS" | "TERMINATED_HTTPS"
            ) {
                return Err(invalid(name, "protocol", "is TCP, UDP, HTTP or HTTPS"));
            }
            if !(1..=65535).contains(&l.protocol_port) {
                return Err(invalid(name, "protocol_port", "is 1..=65535"));
            }
            if l.node_port != 0 && !crate::kinds::NODE_PORTS.contains(&l.node_port) {
                let r = crate::kinds::NODE_PORTS;
                return Err(invalid(
                    name,
                    "node_port",
                    format!(
                        "{} is outside {}-{} (0: none)",
                        l.node_port,
                        r.start(),
                        r.end()
                    ),
                ));
            }
        }
        Some(object::Kind::LoadbalancerPool(p)) => {
            if !matches!(
                p.loadbalancer_method.as_str(),
                "" | "ROUND_ROBIN" | "LEAST_CONNECTIONS" | "SOURCE_IP"
            ) {
                return Err(invalid(
                    name,
                    "loadbalancer_method",
                    "is ROUND_ROBIN, LEAST_CONNECTIONS or SOURCE_IP",
                ));
            }
            // Both end up in an HAProxy configuration.
            if !p.host.is_empty() {
                super::names::check_host(&p.host).map_err(|e| invalid(name, "host", e))?;
            }
            if !p.path.is_empty() {
                super::names::check_path(&p.path).map_err(|e| invalid(name, "path", e))?;
            }
        }
        Some(object::Kind::LoadbalancerMember(m)) => {
            m.address.parse::<IpAddr>().map_err(|_| {
                invalid(
                    name,
                    "address",
                    format!("{:?} is not an address", m.address),
                )
            })?;
            if !(1..=65535).contains(&m.protocol_port) {
                return Err(invalid(name, "protocol_port", "is 1..=65535"));
            }
            if m.weight > 256 {
                return Err(invalid(name, "weight", "is 0..=256"));
            }
            if m.weight == 0 {
                m.weight = 1;
            }
        }
        Some(object::Kind::GlobalVrouterConfig(g)) => {
            let mut seen = Vec::new();
            for (k, e) in g.encapsulation_priorities.iter().enumerate() {
                if !matches!(e.as_str(), "MPLSoUDP" | "MPLSoGRE" | "VXLAN") {
                    return Err(invalid(
                        name,
                        &format!("encapsulation_priorities[{k}]"),
                        format!("{e:?} is not MPLSoUDP, MPLSoGRE or VXLAN"),
                    ));
                }
                if seen.contains(e) {
                    return Err(invalid(
                        name,
                        &format!("encapsulation_priorities[{k}]"),
                        "repeated",
                    ));
                }
                seen.push(e.clone());
            }
            for (k, p) in g.port_translation_pools.iter().enumerate() {
                let f = format!("port_translation_pools[{k}]");
                if !matches!(p.protocol.as_str(), "tcp" | "udp") {
                    return Err(invalid(name, &format!("{f}.protocol"), "is tcp or udp"));
                }
                // Below 1024 are the host's services: the node's address is shared.
                if p.start_port < 1024 || p.end_port > 65535 || p.start_port > p.end_port {
                    return Err(invalid(name, &f, "ports are 1024..=65535, start <= end"));
                }
                for q in &g.port_translation_pools[..k] {
                    if q.protocol == p.protocol {
                        return Err(invalid(name, &f, "a second pool for its protocol"));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn subnets(name: &str, field: &str, subnets: &[proto::Subnet]) -> Result<(), Status> {
    let mut nets: Vec<Net> = Vec::new();
    for (j, s) in subnets.iter().enumerate() {
        let f = format!("{field}[{j}]");
        let net = Net::parse(&s.prefix).map_err(|e| invalid(name, &format!("{f}.prefix"), e))?;
        for (which, a) in [("gateway", &s.gateway), ("dns_server", &s.dns_server)] {
            if a.is_empty() {
                continue;
            }
            let a: IpAddr = a
                .parse()
                .map_err(|_| invalid(name, &format!("{f}.{which}"), "is not an address"))?;
            if !net.usable(a) {
                return Err(invalid(
                    name,
                    &format!("{f}.{which}"),
                    format!("{a} is not a usable address of {net}"),
                ));
            }
        }
        if let Some(o) = nets.iter().find(|o| o.overlaps(&net)) {
            return Err(invalid(name, &f, format!("{net} overlaps {o}")));
        }
        nets.push(net);
    }
    Ok(())
}

/// A sub-interface's VLAN tag: kept from before, else the lowest free under the parent;
/// unique under the parent, 1 to 4094. No parent, no tag.
fn vlan_tag(
    db: &Db,
    name: &str,
    uuid: &str,
    v: &mut proto::VirtualMachineInterface,
    old: Option<&Object>,
) -> Result<(), Status> {
    let Some(parent) = v.parent_interface_ref.as_ref().map(|r| r.uuid.clone()) else {
        if v.sub_interface_vlan_tag != 0 {
            return Err(invalid(
                name,
                "sub_interface_vlan_tag",
                "needs parent_interface_ref",
            ));
        }
        return Ok(());
    };
    if parent == uuid {
        return Err(invalid(
            name,
            "parent_interface_ref",
            "is the interface itself",
        ));
    }
    let taken: Vec<u32> = db
        .list(Kind::VirtualMachineInterface)
        .iter()
        .filter_map(|o| match &o.kind {
            Some(object::Kind::VirtualMachineInterface(s))
                if s.uuid != uuid
                    && s.parent_interface_ref
                        .as_ref()
                        .is_some_and(|r| r.uuid == parent) =>
            {
                Some(s.sub_interface_vlan_tag)
            }
            _ => None,
        })
        .collect();
    if v.sub_interface_vlan_tag == 0 {
        v.sub_interface_vlan_tag = match old {
            Some(Object {
                kind: Some(object::Kind::VirtualMachineInterface(o)),
            }) if o
                .parent_interface_ref
                .as_ref()
                .is_some_and(|r| r.uuid == parent) =>
            {
                o.sub_interface_vlan_tag
            }
            _ => (1..=4094).find(|t| !taken.contains(t)).ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "{name}: every VLAN tag of the parent interface is in use"
                ))
            })?,
        };
    }
    if !(1..=4094).contains(&v.sub_interface_vlan_tag) {
        return Err(invalid(name, "sub_interface_vlan_tag", "is 1 to 4094"));
    }
    if taken.contains(&v.sub_interface_vlan_tag) {
        return Err(Status::already_exists(format!(
            "{name}: VLAN tag {} is taken under the parent interface",
            v.sub_interface_vlan_tag
        )));
    }
    Ok(())
}
