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

/// NodePorts: the node's address (a receive nexthop wherever it is routed) becomes a
/// node-ports nexthop, its ports going to their services and the rest to the host.
fn node_ports(c: &mut Ctx<'_>, ports: Vec<NodePortCfg>) {
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

/// Another node reached on the fabric as it is, no encapsulation: an encap nexthop out
/// of the fabric vif to its MAC (one per node).
fn direct_nh(c: &mut Ctx<'_>, node: &Node, (ip, mac): (Ipv4Addr, &str)) -> u32 {
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
fn node_routes(c: &mut Ctx<'_>, node: &Node, remote: &[RemoteRoute]) {
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
fn gateway_route(c: &mut Ctx<'_>, node: &Node) {
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
fn default_routes(c: &mut Ctx<'_>, (nh, kind): (u32, NexthopKind), vrfs: &[u32], attr: u32) {
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
fn fabric_snat(c: &mut Ctx<'_>, node: &Node, fabric_vn: Option<u32>) {
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

/// The objects of one kind that refer to `uuid` or are its children, in UUID order.
fn referring<'a, T>(
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
fn services(
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

fn sgs_of(c: &Ctx<'_>, vmi: &proto::VirtualMachineInterface) -> Vec<u32> {
    let mut v: Vec<u32> = vmi
        .security_group_refs
        .iter()
        .filter_map(|r| c.sg_ids.get(&r.uuid).copied())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn local_port(
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
fn allowed_sources(vmi: &proto::VirtualMachineInterface, addrs: &[IpAddr]) -> Vec<AllowedCfg> {
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
fn host_route(c: &mut Ctx<'_>, node: &Node, host: u32, vn_uuid: &str, vn_id: u32) {
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
fn set_attr(c: &mut Ctx<'_>, id: u32, vn: u32, mut tags: Vec<u32>) {
    tags.sort_unstable();
    tags.dedup();
    c.out.attrs.insert(id, AttrCfg { id, vn, tags });
}

/// Whether a remote route's prefix lies in one of its network's subnets.
fn in_subnets(db: &Db, r: &RemoteRoute) -> bool {
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
fn remote_tags(
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

fn remote_route(
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
fn leaks(db: &Db, vn_uuid: &str, vn_by_fq: &HashMap<String, String>) -> BTreeSet<String> {
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
fn routes(
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

fn vn_policy_name(vn: &str) -> String {
    format!("{POLICY_PREFIX}vn/{vn}")
}

fn vn_policy_list<'a>(db: &'a Db, vn_uuid: &str) -> Vec<(String, &'a proto::NetworkPolicy)> {
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

fn vn_has_policies(db: &Db, vn_uuid: &str) -> bool {
    !vn_policy_list(db, vn_uuid).is_empty()
}

fn vn_policies(c: &mut Ctx<'_>, ports: &BTreeMap<String, PortRec>) {
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
fn endpoint(c: &Ctx<'_>, a: &proto::AddressType, own_vn: u32) -> Option<EndpointCfg> {
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

fn port_list(p: &[proto::PortRange]) -> Vec<Option<(u16, u16)>> {
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

fn addr_list(c: &Ctx<'_>, a: &[proto::AddressType], own: u32) -> Vec<EndpointCfg> {
    if a.is_empty() {
        return vec![EndpointCfg::default()];
    }
    a.iter().filter_map(|x| endpoint(c, x, own)).collect()
}

/// A network-policy rule as vrouter rules; `mirror` swaps the sides (the `<>` reverse).
fn expand(
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
fn sg_sets(c: &Ctx<'_>, vmi: &proto::VirtualMachineInterface, key: &str) -> (PolicyCfg, PolicyCfg) {
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
