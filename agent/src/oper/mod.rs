//! Config -> the vrouter objects this node needs. A pure function of the configuration,
//! the local ports, the routes other nodes publish and the node's own facts; ids come from
//! [`Ids`], which keeps them stable across runs so that a recomputation only differs
//! where the configuration did.
//!
//! What is built:
//! - a VRF per virtual network, its VNI mapped to it, an attribute record with its
//!   network id (policy rules match on it);
//! - per local port: a vif (the vrouter's MAC towards the VM, the VM's addresses), an
//!   encap nexthop to the VM's MAC, an MPLS label, an attribute record (VN, tags, and its
//!   security groups as tags);
//! - routes: a /32 or /128 per address of a local interface, per address other nodes
//!   publish (a tunnel nexthop per remote node and encapsulation), and an ECMP composite
//!   where an address has several paths (a service VIP on several interfaces, here or on
//!   other nodes); of several paths only those of the highest local preference count
//!   (an HAProxy load balancer's active instance over its standby); a network policy
//!   that passes traffic to another VN leaks that VN's routes into the VRF;
//! - compiled rule sets: per combination of security groups (ingress and egress, the
//!   union of their rules, default deny), and per VN with network policies (the implicit
//!   same-VN pass, then the policies' rules in order both ways for `<>`, default deny),
//!   and per application policy set that applies to the interface ([`crate::firewall`]).
//!
//! Files: this one holds the node's facts, the ids and [`desired`], which walks the
//! configuration once and calls `ports.rs` (local interfaces), `services.rs` (load
//! balancers and node ports), `routes.rs` (routes to nodes, the gateway, remote routes,
//! leaks) and `policy.rs` (network policies and security groups as rule sets).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use vrouter_api::config::{
    ActionCfg, AllowedCfg, AttrCfg, Encap, EndpointCfg, MemberCfg, NexthopCfg, NexthopKind,
    NodePortCfg, PolicyCfg, RouteCfg, RuleCfg, ServiceMemberCfg, ServicePortCfg, SnatPortsCfg,
    VifCfg, VifKindCfg,
};

use crate::firewall::{self, CompiledAps};
use crate::kinds::{Kind, fq_string};
use crate::persist::PortRec;
use crate::proto::{self, object};
use crate::store::Db;
use crate::store::check::protocol_number;

mod policy;
mod ports;
mod routes;
mod services;

use policy::*;
use ports::*;
use routes::*;
use services::*;

/// Prefix of the rule-set names the agent owns.
pub const POLICY_PREFIX: &str = "agent/";
/// Security groups appear in attribute records as tags with this bit set.
pub const SG_TAG: u32 = 1 << 31;

/// The node's own facts, read from the vrouter and the agent's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The fabric vif.
    pub fabric_vif: u32,
    /// The node's fabric address.
    pub ip: Ipv4Addr,
    /// The fabric interface's MAC.
    pub mac: String,
    /// The MAC the vrouter answers VMs with.
    pub vrouter_mac: String,
    /// The host vif (vhost0), if the vrouter has one.
    pub host_vif: Option<u32>,
    /// The VRF of the host and fabric vifs: the ip-fabric network's.
    pub fabric_vrf: u32,
    /// The fabric gateway's MAC: where traffic source-NATed to the node's address goes
    /// (ip-fabric SNAT); none: no SNAT.
    pub gateway_mac: Option<String>,
}

/// The network that stands for the underlay: its VRF is the vrouter's fabric VRF, and the
/// node's own address in it is delivered to the host. A network policy between it and a
/// pod network lets the host (kubelet probes, node services) and the pods reach each other.
pub const IP_FABRIC: &str = "default-domain:default-project:ip-fabric";

/// Where the agent's ids start (below: objects of the vrouter's own start-up config,
/// which the agent never touches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bases {
    /// First VRF.
    pub vrf: u32,
    /// First vif.
    pub vif: u32,
    /// First nexthop.
    pub nh: u32,
    /// First MPLS label.
    pub label: u32,
    /// First attribute record.
    pub attr: u32,
}

impl Default for Bases {
    fn default() -> Self {
        Bases {
            vrf: 1,
            vif: 16,
            nh: 64,
            label: 32,
            attr: 1,
        }
    }
}

/// Stable id assignment per namespace (`vrf`, `vif`, `nh`, `label`, `attr`).
#[derive(Debug, Clone, Default)]
pub struct Ids {
    map: BTreeMap<String, u32>,
    used: HashMap<&'static str, BTreeSet<u32>>,
    /// Next candidate per namespace.
    next: HashMap<&'static str, u32>,
    bases: Bases,
    live: BTreeSet<String>,
    /// Assignments made since the last [`Ids::take_changes`].
    added: Vec<(String, u32)>,
}

const NAMESPACES: [&str; 5] = ["vrf", "vif", "nh", "label", "attr"];

impl Ids {
    /// From stored assignments.
    pub fn new(bases: Bases, stored: BTreeMap<String, u32>) -> Ids {
        let mut used: HashMap<&'static str, BTreeSet<u32>> = HashMap::new();
        for (k, v) in &stored {
            if let Some(ns) = NAMESPACES.iter().find(|n| k.starts_with(&format!("{n}/"))) {
                used.entry(ns).or_default().insert(*v);
            }
        }
        Ids {
            map: stored,
            used,
            next: HashMap::new(),
            bases,
            live: BTreeSet::new(),
            added: Vec::new(),
        }
    }

    fn base(&self, ns: &str) -> u32 {
        match ns {
            "vrf" => self.bases.vrf,
            "vif" => self.bases.vif,
            "nh" => self.bases.nh,
            "label" => self.bases.label,
            _ => self.bases.attr,
        }
    }

    /// The id of `key` in `ns`, assigned on first use.
    pub fn get(&mut self, ns: &'static str, key: &str) -> u32 {
        let k = format!("{ns}/{key}");
        self.live.insert(k.clone());
        if let Some(v) = self.map.get(&k) {
            return *v;
        }
        let base = self.base(ns);
        let mut v = self.next.get(ns).copied().unwrap_or(base).max(base);
        let used = self.used.entry(ns).or_default();
        while used.contains(&v) {
            v += 1;
        }
        used.insert(v);
        self.next.insert(ns, v + 1);
        self.map.insert(k.clone(), v);
        self.added.push((k, v));
        v
    }

    /// Starts a computation: ids not asked for until [`Ids::unused`] are dead.
    pub fn begin(&mut self) {
        self.live.clear();
    }

    /// Keys not used by the last computation (free them once the vrouter dropped them).
    pub fn unused(&self) -> Vec<String> {
        self.map
            .keys()
            .filter(|k| !self.live.contains(*k))
            .cloned()
            .collect()
    }

    /// Frees keys.
    pub fn release(&mut self, keys: &[String]) {
        for k in keys {
            if let Some(v) = self.map.remove(k)
                && let Some(ns) = NAMESPACES.iter().find(|n| k.starts_with(&format!("{n}/")))
            {
                if let Some(u) = self.used.get_mut(ns) {
                    u.remove(&v);
                }
                let n = self.next.entry(ns).or_insert(v);
                *n = (*n).min(v);
            }
        }
    }

    /// New assignments since the last call.
    pub fn take_changes(&mut self) -> Vec<(String, u32)> {
        std::mem::take(&mut self.added)
    }
}

/// A route another node publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRoute {
    /// The publishing node's fabric address.
    pub node_ip: Ipv4Addr,
    /// Its fabric MAC.
    pub node_mac: String,
    /// Virtual network UUID.
    pub vn: String,
    /// `a.b.c.d/32`.
    pub prefix: String,
    /// MPLS label of the interface.
    pub label: u32,
    /// VXLAN VNI of the VN.
    pub vni: u32,
    /// Encapsulations the node accepts.
    pub encaps: Vec<String>,
    /// Security group UUIDs of the interface. A claim only: the receiving node takes an
    /// address's groups and tags from its configuration (`remote_tags`).
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Tag UUIDs of the interface (a claim, like `security_groups`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The interface's local preference (of several paths to one prefix, only those
    /// with the highest are used).
    #[serde(default = "default_preference")]
    pub preference: u32,
}

/// The preference of an interface that names none.
pub const DEFAULT_PREFERENCE: u32 = 100;

fn default_preference() -> u32 {
    DEFAULT_PREFERENCE
}

/// An interface's local preference.
fn preference(vmi: &proto::VirtualMachineInterface) -> u32 {
    match vmi.local_preference {
        0 => DEFAULT_PREFERENCE,
        p => p,
    }
}

/// HAProxy load balancers (the "opencontrail" or "haproxy" provider).
pub fn is_haproxy(lb: &proto::Loadbalancer) -> bool {
    matches!(lb.provider.as_str(), "opencontrail" | "haproxy")
}

/// Everything the vrouter should hold of the agent's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// VRFs.
    pub vrfs: BTreeSet<u32>,
    /// Attribute records.
    pub attrs: BTreeMap<u32, AttrCfg>,
    /// Rule sets.
    pub policies: BTreeMap<String, PolicyCfg>,
    /// Interfaces.
    pub vifs: BTreeMap<u32, VifCfg>,
    /// Nexthops.
    pub nexthops: BTreeMap<u32, NexthopCfg>,
    /// Routes by (VRF, prefix).
    pub routes: BTreeMap<(u32, String), RouteCfg>,
    /// MPLS labels.
    pub labels: BTreeMap<u32, u32>,
    /// VNIs.
    pub vnis: BTreeMap<u32, u32>,
    /// The routes this node publishes (without the node fields, filled by the publisher).
    pub published: Vec<RemoteRoute>,
    /// Local ports as the CNI / port API reports them.
    pub ports: BTreeMap<String, proto::PortInfo>,
    /// Routes of other nodes left out: their prefix is outside their network's subnets.
    pub refused_routes: usize,
    /// The SNAT port ranges of the global vrouter configuration (`None`: none is
    /// configured, the vrouter keeps its own).
    pub snat_ports: Option<SnatPortsCfg>,
}

/// Encapsulation names of the API.
pub fn encap_of(name: &str) -> Option<Encap> {
    match name {
        "MPLSoUDP" => Some(Encap::MplsUdp),
        "MPLSoGRE" => Some(Encap::MplsGre),
        "VXLAN" => Some(Encap::Vxlan),
        _ => None,
    }
}

/// The configured encapsulation priority (default MPLSoUDP, MPLSoGRE, VXLAN).
pub fn encap_priority(db: &Db) -> Vec<String> {
    db.list(Kind::GlobalVrouterConfig)
        .first()
        .and_then(|o| match &o.kind {
            Some(object::Kind::GlobalVrouterConfig(g))
                if !g.encapsulation_priorities.is_empty() =>
            {
                Some(g.encapsulation_priorities.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| vec!["MPLSoUDP".into(), "MPLSoGRE".into(), "VXLAN".into()])
}

fn host_prefix(a: IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

#[derive(Debug, Clone)]
struct Path {
    nh: u32,
    label: u32,
    attr: u32,
    pref: u32,
}

struct Ctx<'a> {
    db: &'a Db,
    ids: &'a mut Ids,
    out: Desired,
    /// VN uuid -> (vrf, network id, vni).
    vns: HashMap<String, (u32, u32, u32)>,
    /// VN fq string -> uuid.
    vn_by_fq: HashMap<String, String>,
    /// VNs forwarded in the underlay (ip-fabric forwarding), by uuid.
    forwarded: BTreeSet<String>,
    /// VRFs of the VNs with ip-fabric SNAT (not forwarded, not ip-fabric itself).
    snat_vrfs: Vec<u32>,
    /// SG fq string / uuid -> id.
    sg_ids: HashMap<String, u32>,
    /// Tag uuid -> id.
    tag_ids: HashMap<String, u32>,
    /// (VN uuid, prefix) -> paths.
    paths: BTreeMap<(String, String), Vec<Path>>,
    /// Application policy sets, compiled.
    aps: Vec<CompiledAps>,
}

/// Computes the desired state.
pub fn desired(
    db: &Db,
    node: &Node,
    ports: &BTreeMap<String, PortRec>,
    remote: &[RemoteRoute],
    ids: &mut Ids,
) -> Desired {
    ids.begin();
    let mut c = Ctx {
        db,
        ids,
        out: Desired::default(),
        vns: HashMap::new(),
        vn_by_fq: HashMap::new(),
        forwarded: BTreeSet::new(),
        snat_vrfs: Vec::new(),
        sg_ids: HashMap::new(),
        tag_ids: HashMap::new(),
        paths: BTreeMap::new(),
        aps: Vec::new(),
    };
    for o in db.list(Kind::SecurityGroup) {
        if let Some(object::Kind::SecurityGroup(sg)) = &o.kind {
            c.sg_ids
                .insert(fq_string(&sg.fq_name), sg.security_group_id);
            c.sg_ids.insert(sg.uuid.clone(), sg.security_group_id);
        }
    }
    for o in db.list(Kind::Tag) {
        if let Some(object::Kind::Tag(t)) = &o.kind {
            c.tag_ids.insert(t.uuid.clone(), t.tag_id);
        }
    }
    let mut ip_fabric = None;
    for o in db.list(Kind::VirtualNetwork) {
        if let Some(object::Kind::VirtualNetwork(vn)) = &o.kind {
            let is_fabric = fq_string(&vn.fq_name) == IP_FABRIC;
            let vrf = if is_fabric {
                ip_fabric = Some((vn.uuid.clone(), vn.virtual_network_network_id));
                node.fabric_vrf
            } else {
                let vrf = c.ids.get("vrf", &vn.uuid);
                c.out.vrfs.insert(vrf);
                c.out.vnis.insert(vn.vxlan_network_identifier, vrf);
                vrf
            };
            c.vns.insert(
                vn.uuid.clone(),
                (
                    vrf,
                    vn.virtual_network_network_id,
                    vn.vxlan_network_identifier,
                ),
            );
            c.vn_by_fq.insert(fq_string(&vn.fq_name), vn.uuid.clone());
            if vn.ip_fabric_forwarding {
                c.forwarded.insert(vn.uuid.clone());
            } else if vn.fabric_snat && !is_fabric {
                c.snat_vrfs.push(vrf);
            }
        }
    }
    let vn_ids: HashMap<String, u32> = c
        .vn_by_fq
        .iter()
        .filter_map(|(fq, u)| Some((fq.clone(), c.vns.get(u)?.1)))
        .collect();
    c.aps = firewall::compile(db, &vn_ids, &c.tag_ids, POLICY_PREFIX);
    // Instance IPs by interface; an HAProxy load balancer's VIP is an address of each of
    // its instances' interfaces.
    let vips: Vec<proto::InstanceIp> = db
        .list(Kind::Loadbalancer)
        .into_iter()
        .filter_map(|o| match &o.kind {
            Some(object::Kind::Loadbalancer(lb)) if is_haproxy(lb) => Some(lb),
            _ => None,
        })
        .filter(|lb| lb.vip_address.parse::<IpAddr>().is_ok())
        .map(|lb| proto::InstanceIp {
            uuid: lb.uuid.clone(),
            instance_ip_address: lb.vip_address.clone(),
            virtual_network_ref: lb.virtual_network_ref.clone(),
            virtual_machine_interface_refs: lb.virtual_machine_interface_refs.clone(),
            ..Default::default()
        })
        .collect();
    let mut iips: HashMap<&str, Vec<&proto::InstanceIp>> = HashMap::new();
    let instance_ips = db
        .list(Kind::InstanceIp)
        .into_iter()
        .filter_map(|o| match &o.kind {
            Some(object::Kind::InstanceIp(i)) => Some(i),
            _ => None,
        });
    for i in instance_ips.chain(&vips) {
        for r in &i.virtual_machine_interface_refs {
            iips.entry(r.uuid.as_str()).or_default().push(i);
        }
    }
    // Who owns each address in configuration: a remote route's tags and security groups
    // come from there, not from what its publisher claims.
    let mut owners: HashMap<(String, String), Vec<&proto::VirtualMachineInterface>> =
        HashMap::new();
    for (vmi_uuid, list) in &iips {
        let Some(object::Kind::VirtualMachineInterface(vmi)) =
            db.get(vmi_uuid).and_then(|o| o.kind.as_ref())
        else {
            continue;
        };
        for i in list {
            let (Ok(a), Some(vn)) = (
                i.instance_ip_address.parse::<IpAddr>(),
                i.virtual_network_ref
                    .as_ref()
                    .or(vmi.virtual_network_ref.as_ref()),
            ) else {
                continue;
            };
            owners
                .entry((vn.uuid.clone(), host_prefix(a)))
                .or_default()
                .push(vmi);
        }
    }
    let priority = encap_priority(db);
    for (vmi_uuid, port) in ports {
        let Some(proto::Object {
            kind: Some(object::Kind::VirtualMachineInterface(vmi)),
        }) = db.get(vmi_uuid)
        else {
            continue;
        };
        local_port(
            &mut c,
            node,
            vmi,
            port,
            iips.get(vmi_uuid.as_str()),
            &priority,
        );
    }
    for r in remote {
        let own = owners
            .get(&(r.vn.clone(), r.prefix.clone()))
            .map_or(&[][..], Vec::as_slice);
        remote_route(&mut c, node, r, own, &priority);
    }
    if let (Some((uuid, vn_id)), Some(host)) = (&ip_fabric, node.host_vif) {
        host_route(&mut c, node, host, uuid, *vn_id);
    }
    let mut paths = std::mem::take(&mut c.paths);
    // Of several paths to a prefix, those with the highest preference (an active
    // instance over its standby; equals are ECMP).
    for ps in paths.values_mut() {
        let top = ps.iter().map(|p| p.pref).max().unwrap_or(0);
        ps.retain(|p| p.pref == top);
    }
    let into = routes(&mut c, &paths);
    let on_nodes = services(&mut c, &paths, &into);
    node_ports(&mut c, on_nodes);
    fabric_snat(&mut c, node, ip_fabric.map(|(_, id)| id));
    node_routes(&mut c, node, remote);
    gateway_route(&mut c, node);
    vn_policies(&mut c, ports);
    c.out.snat_ports = snat_ports(db);
    c.out
}

/// The SNAT port ranges the global vrouter configuration gives (its pool of each
/// protocol; the default range for a protocol it leaves out), if it gives any.
pub fn snat_ports(db: &Db) -> Option<SnatPortsCfg> {
    let o = db.list(Kind::GlobalVrouterConfig).into_iter().next()?;
    let Some(object::Kind::GlobalVrouterConfig(g)) = &o.kind else {
        return None;
    };
    if g.port_translation_pools.is_empty() {
        return None;
    }
    let mut p = SnatPortsCfg::default();
    for pool in &g.port_translation_pools {
        // Checked at the API: 1024..=65535, start <= end, one pool per protocol.
        let (Ok(a), Ok(b)) = (u16::try_from(pool.start_port), u16::try_from(pool.end_port)) else {
            continue;
        };
        match pool.protocol.as_str() {
            "tcp" => p.tcp = [a, b],
            "udp" => p.udp = [a, b],
            _ => {}
        }
    }
    p.validate().is_ok().then_some(p)
}
