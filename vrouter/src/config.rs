//! The vrouter's objects as configuration: a static start-up file (TOML) today, and the
//! same objects over the control socket. [`Config::apply`] validates and applies them to a
//! [`TablesWriter`]; on the first error it stops, and the caller (start-up) refuses to run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::policy::{Action, EndpointMatch, Policy, Rule, RuleSet};
use crate::tables::ecmp::{Ecmp, Member};
use crate::tables::{
    EncapSet, GlobalConfig, Nexthop, NhId, RouteEntry, TableError, TablesWriter, Tunnel,
    TunnelKind, Vif, VifId, VifKind, VrfId,
};
use crate::tables::{NodePort, NodePorts, Service, ServicePort};
use crate::wire::MacAddr;

/// Encapsulation names as they appear in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encap {
    /// MPLS over UDP.
    MplsUdp,
    /// MPLS over GRE.
    MplsGre,
    /// VXLAN.
    Vxlan,
}

impl From<Encap> for TunnelKind {
    fn from(e: Encap) -> TunnelKind {
        match e {
            Encap::MplsUdp => TunnelKind::MplsUdp,
            Encap::MplsGre => TunnelKind::MplsGre,
            Encap::Vxlan => TunnelKind::Vxlan,
        }
    }
}

/// Node-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GlobalSection {
    /// Encapsulations in order of preference.
    #[serde(default)]
    pub encap_priority: Vec<Encap>,
    /// The gateway MAC the vrouter answers ARP/ND with.
    pub vrouter_mac: Option<String>,
    /// The fabric vif.
    pub fabric_vif: Option<u32>,
    /// The host vif (vhost0).
    pub host_vif: Option<u32>,
    /// Interface table size (at least 4096, and above the largest configured index).
    pub max_vifs: Option<u32>,
    /// Flow pairs one local VM may hold at once (default: a quarter of the table).
    pub vif_max_flows: Option<u32>,
    /// SNAT ports one local VM may hold at once (default: a quarter of the smaller pool).
    pub vif_max_snat_ports: Option<u32>,
    /// The node's SNAT port ranges (default TCP 56000-57023, UDP 57024-58047).
    pub snat_ports: Option<SnatPortsCfg>,
}

/// The ports of the node's address that source NAT hands out, per protocol (ICMP echo
/// identifiers come from the UDP range), each `[first, last]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnatPortsCfg {
    /// TCP ports.
    pub tcp: [u16; 2],
    /// UDP ports.
    pub udp: [u16; 2],
}

impl Default for SnatPortsCfg {
    fn default() -> Self {
        let [(t0, t1), (u0, u1)] = crate::nat::DEFAULT_RANGES;
        SnatPortsCfg {
            tcp: [t0, t1],
            udp: [u0, u1],
        }
    }
}

impl SnatPortsCfg {
    /// Refuses empty ranges and privileged ports (below 1024: the host's services).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, [a, b]) in [("tcp", self.tcp), ("udp", self.udp)] {
            if a > b || a < 1024 {
                return Err(ConfigError::Value {
                    object: format!("global.snat_ports.{name}"),
                    why: format!("{a}-{b} is not a range of unprivileged ports"),
                });
            }
        }
        Ok(())
    }
}

/// Interface kinds as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VifKindCfg {
    /// Fabric NIC.
    Physical,
    /// vhost0.
    Host,
    /// Pod / VM interface.
    Virtual,
    /// Agent interface.
    Agent,
}

/// An interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VifCfg {
    /// Index.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: VifKindCfg,
    /// Device: a host interface the vrouter serves itself (`packet:veth1`, no ethdev), a
    /// DPDK vdev spec (`net_tap0,iface=tap1`, `net_pcap0,rx_pcap=in.pcap`) or a PCI
    /// address. For DPDK devices the part before the first comma is the port name.
    pub device: Option<String>,
    /// MAC the vrouter uses on it.
    pub mac: String,
    /// VRF.
    pub vrf: u32,
    /// IPv4 address (the VM's, or the node's on the fabric).
    pub ip4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ip6: Option<Ipv6Addr>,
    /// MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Rule sets (by name) applied to flows arriving at the VM, all of which must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<String>,
    /// Rule sets (by name) applied to flows leaving the VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// Endpoint attribute record (VN, tags) of the VM behind it, for policy (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attr: u32,
    /// The VM's own MAC (virtual vifs): frames from the VM must come from it (or an
    /// allowed pair's MAC), and its packets from its own addresses. Absent: any unicast MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_mac: Option<String>,
    /// Allowed address pairs: source prefixes the VM may also send from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<AllowedCfg>,
}

/// An allowed address pair of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedCfg {
    /// `addr/len`.
    pub prefix: String,
    /// The MAC frames from these addresses carry (absent: the VM's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

/// An endpoint attribute record: the VN and tags that policy rules match on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttrCfg {
    /// Record id (1 and up; vifs and routes refer to it).
    pub id: u32,
    /// Virtual network id.
    #[serde(default)]
    pub vn: u32,
    /// Tag ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<u32>,
}

/// How a rule matches an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EndpointCfg {
    /// An address prefix, `a.b.c.d/len` or `x::/len`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A virtual network id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vn: Option<u32>,
    /// Tags that must all be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<u32>>,
}

/// Pass or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionCfg {
    /// Allow.
    Pass,
    /// Drop.
    Deny,
}

/// One rule; absent fields match anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleCfg {
    /// IP protocol number.
    pub proto: Option<u8>,
    /// Source endpoint.
    #[serde(default)]
    pub src: EndpointCfg,
    /// Destination endpoint.
    #[serde(default)]
    pub dst: EndpointCfg,
    /// Source ports `[first, last]`.
    pub sport: Option<(u16, u16)>,
    /// Destination ports `[first, last]`.
    pub dport: Option<(u16, u16)>,
    /// Action.
    pub action: ActionCfg,
}

/// A named, ordered rule set (a security group, network policy or firewall policy as
/// the agent compiles them): the first matching rule decides, else `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCfg {
    /// Name, referred to by vifs.
    pub name: String,
    /// Rules in order.
    #[serde(default)]
    pub rules: Vec<RuleCfg>,
    /// When nothing matches.
    pub default: ActionCfg,
    /// A virtual network's policy: a flow to a service address is decided on that
    /// address (the network the client reaches), not on the backend it is sent to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
}

fn default_mtu() -> u16 {
    1500
}

/// The smallest MTU an IPv4 link may have (RFC 791).
pub const MIN_MTU: u16 = 68;
/// The largest MTU a vif may have: jumbo frames of the common 9,216-byte NIC limit.
pub const MAX_MTU: u16 = 9198;

/// One ECMP member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberCfg {
    /// Member nexthop.
    pub nh: u32,
    /// Label / VNI.
    #[serde(default)]
    pub label: u32,
    /// Weight.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A nexthop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NexthopKind {
    /// Drop.
    Discard,
    /// To the host.
    Receive {
        /// Host vif.
        vif: u32,
    },
    /// Local delivery.
    Encap {
        /// Output vif.
        vif: u32,
        /// Destination MAC.
        dmac: String,
        /// Source MAC.
        smac: String,
    },
    /// Tunnel to a remote node.
    Tunnel {
        /// Fabric vif.
        vif: u32,
        /// Our fabric address.
        src: Ipv4Addr,
        /// Remote node.
        dst: Ipv4Addr,
        /// Our fabric MAC.
        smac: String,
        /// Next hop MAC on the fabric.
        dmac: String,
        /// Encapsulations the remote accepts (all when empty).
        #[serde(default)]
        encaps: Vec<Encap>,
        /// Inner destination MAC for VXLAN (a kernel VXLAN peer's device MAC).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inner_dmac: Option<String>,
    },
    /// Unresolved neighbour.
    Resolve {
        /// Interface.
        vif: u32,
    },
    /// Source NAT to the node's address.
    Snat {
        /// Fabric vif.
        vif: u32,
        /// Node address.
        ip: Ipv4Addr,
        /// Our fabric MAC.
        smac: String,
        /// Gateway MAC.
        dmac: String,
    },
    /// ECMP.
    Composite {
        /// Members.
        members: Vec<MemberCfg>,
    },
    /// A service address: ECMP over backends with destination NAT to the chosen one.
    Service {
        /// Backends.
        members: Vec<ServiceMemberCfg>,
        /// Ports served.
        ports: Vec<ServicePortCfg>,
        /// Client-IP affinity: a client's connections all go to one backend.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        affinity: bool,
    },
    /// The node's address with NodePort services: listed ports go to their service,
    /// the rest to `host` (a receive nexthop).
    NodePorts {
        /// The node ports.
        ports: Vec<NodePortCfg>,
        /// Where everything else goes.
        host: u32,
    },
    /// L2 flood to several nexthops.
    L2Flood {
        /// Member nexthops.
        members: Vec<u32>,
    },
}

impl NexthopKind {
    /// How deep its references go: 0 none, 1 to plain nexthops (composites, services),
    /// 2 to those (node ports name services). Set in increasing order, deleted in
    /// decreasing order.
    pub fn depth(&self) -> u8 {
        match self {
            NexthopKind::Composite { .. } | NexthopKind::Service { .. } => 1,
            NexthopKind::NodePorts { .. } => 2,
            _ => 0,
        }
    }
}

/// A backend of a service nexthop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceMemberCfg {
    /// Its nexthop (encap or tunnel).
    pub nh: u32,
    /// Label / VNI for a tunnel.
    #[serde(default)]
    pub label: u32,
    /// Weight.
    #[serde(default = "one")]
    pub weight: u32,
    /// Its address: the destination becomes this.
    pub addr: IpAddr,
}

/// A node port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePortCfg {
    /// IP protocol number.
    pub proto: u8,
    /// Port on the node's address.
    pub port: u16,
    /// The service nexthop.
    pub service: u32,
    /// The service port it stands for.
    pub service_port: u16,
}

/// A port a service serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePortCfg {
    /// IP protocol number.
    pub proto: u8,
    /// Port on the service address.
    pub port: u16,
    /// Port on the backend.
    pub target: u16,
}

/// A nexthop with its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexthopCfg {
    /// Index.
    pub id: u32,
    /// What it does.
    #[serde(flatten)]
    pub kind: NexthopKind,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCfg {
    /// VRF.
    pub vrf: u32,
    /// `a.b.c.d/len` or `x::/len`.
    pub prefix: String,
    /// Nexthop.
    pub nh: u32,
    /// Label / VNI.
    #[serde(default)]
    pub label: u32,
    /// Endpoint attribute record of the addresses behind it (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attr: u32,
}

/// A label mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCfg {
    /// MPLS label.
    pub label: u32,
    /// Nexthop.
    pub nh: u32,
}

/// A VNI mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VniCfg {
    /// VXLAN VNI.
    pub vni: u32,
    /// VRF.
    pub vrf: u32,
}

/// A VRF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrfCfg {
    /// Index.
    pub id: u32,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node-wide settings.
    #[serde(default)]
    pub global: GlobalSection,
    /// VRFs.
    #[serde(default, rename = "vrf")]
    pub vrfs: Vec<VrfCfg>,
    /// Interfaces.
    #[serde(default, rename = "vif")]
    pub vifs: Vec<VifCfg>,
    /// Nexthops.
    #[serde(default, rename = "nexthop")]
    pub nexthops: Vec<NexthopCfg>,
    /// Routes.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteCfg>,
    /// MPLS labels.
    #[serde(default, rename = "label")]
    pub labels: Vec<LabelCfg>,
    /// VXLAN VNIs.
    #[serde(default, rename = "vni")]
    pub vnis: Vec<VniCfg>,
    /// Rule sets that vifs refer to by name.
    #[serde(default, rename = "policy", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyCfg>,
    /// Endpoint attribute records.
    #[serde(default, rename = "attr", skip_serializing_if = "Vec::is_empty")]
    pub attrs: Vec<AttrCfg>,
}

/// A configuration error, naming the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file does not parse.
    #[error("{0}")]
    Syntax(String),
    /// A field's value is malformed.
    #[error("{object}: {why}")]
    Value {
        /// Which object.
        object: String,
        /// What is wrong.
        why: String,
    },
    /// The tables refused the object.
    #[error("{object}: {source}")]
    Table {
        /// Which object.
        object: String,
        /// Why.
        source: TableError,
    },
}

fn mac(object: &str, s: &str) -> Result<MacAddr, ConfigError> {
    s.parse().map_err(|why| ConfigError::Value {
        object: object.into(),
        why,
    })
}

/// A MAC a VM sends from: unicast only.
fn unicast_mac(object: &str, s: &str) -> Result<MacAddr, ConfigError> {
    let m = mac(object, s)?;
    if m.is_multicast() {
        return Err(ConfigError::Value {
            object: object.into(),
            why: format!("{s}: a VM's MAC must be unicast"),
        });
    }
    Ok(m)
}

/// Parses `addr/len`.
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("prefix {s:?} needs /length"))?;
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("prefix {s:?}: bad address"))?;
    let len: u8 = l.parse().map_err(|_| format!("prefix {s:?}: bad length"))?;
    Ok((addr, len))
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Applies everything to `w` (not published). Stops at the first refused object; the
    /// caller decides whether to roll back (`TablesWriter::transaction`).
    pub fn apply(&self, w: &mut TablesWriter) -> Result<(), ConfigError> {
        apply_global(w, &self.global)?;
        for v in &self.vrfs {
            w.add_vrf(VrfId(v.id))
                .map_err(table(format!("vrf {}", v.id)))?;
        }
        for a in &self.attrs {
            apply_attr(w, a)?;
        }
        let find = |n: &str| self.policies.iter().find(|p| p.name == n);
        for v in &self.vifs {
            apply_vif_with(w, v, &find)?;
        }
        // Nexthops that refer to others after them.
        let mut nexthops: Vec<&NexthopCfg> = self.nexthops.iter().collect();
        nexthops.sort_by_key(|n| n.kind.depth());
        for n in nexthops {
            apply_nexthop(w, n)?;
        }
        for r in &self.routes {
            apply_route(w, r)?;
        }
        for l in &self.labels {
            w.set_label(l.label, NhId(l.nh))
                .map_err(table(format!("label {}", l.label)))?;
        }
        for v in &self.vnis {
            w.set_vni(v.vni, VrfId(v.vrf))
                .map_err(table(format!("vni {}", v.vni)))?;
        }
        Ok(())
    }
}

fn table(object: String) -> impl FnOnce(TableError) -> ConfigError {
    move |source| ConfigError::Table { object, source }
}

/// Applies the node-wide settings.
pub fn apply_global(w: &mut TablesWriter, g: &GlobalSection) -> Result<(), ConfigError> {
    let mut global = GlobalConfig::default();
    if !g.encap_priority.is_empty() {
        global.encap_priority = g.encap_priority.iter().map(|e| (*e).into()).collect();
    }
    if let Some(m) = &g.vrouter_mac {
        global.vrouter_mac = mac("global.vrouter_mac", m)?;
    }
    global.fabric_vif = g.fabric_vif.map(VifId);
    global.host_vif = g.host_vif.map(VifId);
    global.vif_max_flows = g.vif_max_flows;
    global.vif_max_snat_ports = g.vif_max_snat_ports;
    if let Some(p) = &g.snat_ports {
        p.validate()?;
        global.snat_ports = Some((p.tcp, p.udp));
    }
    w.set_global(global).map_err(table("global".into()))
}

/// Adds or replaces an interface that names no rule set.
pub fn apply_vif(w: &mut TablesWriter, v: &VifCfg) -> Result<(), ConfigError> {
    apply_vif_with(w, v, &|_| None)
}

/// Sets an endpoint attribute record.
pub fn apply_attr(w: &mut TablesWriter, a: &AttrCfg) -> Result<(), ConfigError> {
    let object = format!("attr {}", a.id);
    if a.id == 0 {
        return Err(ConfigError::Value {
            object,
            why: "record 0 is the empty record and cannot be set".into(),
        });
    }
    let attr = crate::policy::EndpointAttr {
        vn: a.vn,
        tags: a.tags.clone(),
    };
    w.set_attr(a.id, attr).map_err(table(object))
}

fn compile_endpoint(object: &str, e: &EndpointCfg) -> Result<EndpointMatch, ConfigError> {
    let bad = |why: String| ConfigError::Value {
        object: object.into(),
        why,
    };
    match (&e.prefix, e.vn, &e.tags) {
        (None, None, None) => Ok(EndpointMatch::Any),
        (Some(p), None, None) => {
            let (a, l) = parse_prefix(p).map_err(bad)?;
            Ok(EndpointMatch::prefix(a, l))
        }
        (None, Some(vn), None) => Ok(EndpointMatch::Vn(vn)),
        (None, None, Some(t)) => {
            let mut t = t.clone();
            t.sort_unstable();
            Ok(EndpointMatch::Tags(t))
        }
        _ => Err(bad("an endpoint matches one of prefix, vn or tags".into())),
    }
}

fn action(a: ActionCfg) -> Action {
    match a {
        ActionCfg::Pass => Action::Pass,
        ActionCfg::Deny => Action::Deny,
    }
}

/// The most rules one rule set may hold (a bound on what one request can make every flow
/// setup and every interface that names the set carry; the agent's translations stay far
/// below it).
pub const MAX_RULES: usize = 65_536;

/// Compiles a named rule set.
pub fn compile_policy(p: &PolicyCfg) -> Result<RuleSet, ConfigError> {
    let object = format!("policy {}", p.name);
    if p.rules.len() > MAX_RULES {
        return Err(ConfigError::Value {
            object,
            why: format!("{} rules, more than {MAX_RULES}", p.rules.len()),
        });
    }
    let rules = p
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let o = format!("{object} rule {i}");
            Ok(Rule {
                proto: r.proto,
                src: compile_endpoint(&o, &r.src)?,
                dst: compile_endpoint(&o, &r.dst)?,
                sport: r.sport.unwrap_or((0, u16::MAX)),
                dport: r.dport.unwrap_or((0, u16::MAX)),
                action: action(r.action),
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(RuleSet::new(
        p.name.clone(),
        rules,
        action(p.default),
        p.network,
    ))
}

/// Adds or replaces an interface, resolving its rule-set names with `find`.
pub fn apply_vif_with<'p>(
    w: &mut TablesWriter,
    v: &VifCfg,
    find: &dyn Fn(&str) -> Option<&'p PolicyCfg>,
) -> Result<(), ConfigError> {
    let object = format!("vif {} ({})", v.id, v.name);
    if !(MIN_MTU..=MAX_MTU).contains(&v.mtu) {
        return Err(ConfigError::Value {
            object,
            why: format!("mtu {} not in {MIN_MTU}..={MAX_MTU}", v.mtu),
        });
    }
    let sets = |names: &[String]| -> Result<Vec<RuleSet>, ConfigError> {
        names
            .iter()
            .map(|n| {
                let p = find(n).ok_or_else(|| ConfigError::Value {
                    object: object.clone(),
                    why: format!("policy {n:?} is not defined"),
                })?;
                compile_policy(p)
            })
            .collect()
    };
    let (ingress, egress) = (sets(&v.ingress)?, sets(&v.egress)?);
    let policy =
        (!ingress.is_empty() || !egress.is_empty()).then(|| Arc::new(Policy { ingress, egress }));
    let vif = Vif {
        id: VifId(v.id),
        name: v.name.clone(),
        kind: match v.kind {
            VifKindCfg::Physical => VifKind::Physical,
            VifKindCfg::Host => VifKind::Host,
            VifKindCfg::Virtual => VifKind::Virtual,
            VifKindCfg::Agent => VifKind::Agent,
        },
        mac: mac(&object, &v.mac)?,
        vrf: VrfId(v.vrf),
        ip4: v.ip4,
        ip6: v.ip6,
        mtu: v.mtu,
        policy,
        attr: v.attr,
        vm_mac: v
            .vm_mac
            .as_deref()
            .map(|m| unicast_mac(&object, m))
            .transpose()?,
        allowed: v
            .allowed
            .iter()
            .map(|a| {
                let (addr, len) = parse_prefix(&a.prefix).map_err(|why| ConfigError::Value {
                    object: object.clone(),
                    why: format!("allowed address pair: {why}"),
                })?;
                if len > if addr.is_ipv4() { 32 } else { 128 } {
                    return Err(ConfigError::Value {
                        object: object.clone(),
                        why: format!("allowed address pair {:?}: length out of range", a.prefix),
                    });
                }
                Ok(crate::tables::AllowedSource {
                    addr,
                    len,
                    mac: a
                        .mac
                        .as_deref()
                        .map(|m| unicast_mac(&object, m))
                        .transpose()?,
                })
            })
            .collect::<Result<_, ConfigError>>()?,
    };
    w.add_vif(vif).map_err(table(object))
}

/// Adds or replaces a nexthop.
pub fn apply_nexthop(w: &mut TablesWriter, n: &NexthopCfg) -> Result<(), ConfigError> {
    let object = format!("nexthop {}", n.id);
    let nh = nexthop(&object, &n.kind)?;
    w.set_nexthop(NhId(n.id), nh).map_err(table(object))
}

/// Adds or replaces a route.
pub fn apply_route(w: &mut TablesWriter, r: &RouteCfg) -> Result<(), ConfigError> {
    let object = format!("route {} in vrf {}", r.prefix, r.vrf);
    let (addr, len) = parse_prefix(&r.prefix).map_err(|why| ConfigError::Value {
        object: object.clone(),
        why,
    })?;
    let e = RouteEntry {
        nh: NhId(r.nh),
        label: r.label,
        attr: r.attr,
    };
    w.add_route(VrfId(r.vrf), addr, len, e)
        .map(|_| ())
        .map_err(table(object))
}

impl VifCfg {
    /// The configuration form of a table interface (for dumps).
    pub fn from_vif(v: &Vif, device: Option<String>) -> VifCfg {
        VifCfg {
            id: v.id.0,
            name: v.name.clone(),
            kind: match v.kind {
                VifKind::Physical => VifKindCfg::Physical,
                VifKind::Host => VifKindCfg::Host,
                VifKind::Virtual => VifKindCfg::Virtual,
                VifKind::Agent => VifKindCfg::Agent,
            },
            device,
            mac: v.mac.to_string(),
            vrf: v.vrf.0,
            ip4: v.ip4,
            ip6: v.ip6,
            mtu: v.mtu,
            ingress: v
                .policy
                .iter()
                .flat_map(|p| p.ingress.iter().map(|r| r.name.clone()))
                .collect(),
            egress: v
                .policy
                .iter()
                .flat_map(|p| p.egress.iter().map(|r| r.name.clone()))
                .collect(),
            attr: v.attr,
            vm_mac: v.vm_mac.map(|m| m.to_string()),
            allowed: v
                .allowed
                .iter()
                .map(|a| AllowedCfg {
                    prefix: format!("{}/{}", a.addr, a.len),
                    mac: a.mac.map(|m| m.to_string()),
                })
                .collect(),
        }
    }
}

impl NexthopCfg {
    /// The configuration form of a table nexthop (for dumps).
    pub fn from_nexthop(id: NhId, n: &Nexthop) -> NexthopCfg {
        let encaps = |set: EncapSet| {
            [
                (TunnelKind::MplsUdp, Encap::MplsUdp),
                (TunnelKind::MplsGre, Encap::MplsGre),
                (TunnelKind::Vxlan, Encap::Vxlan),
            ]
            .into_iter()
            .filter(|(k, _)| set.has(*k))
            .map(|(_, e)| e)
            .collect()
        };
        let kind = match n {
            Nexthop::Discard => NexthopKind::Discard,
            Nexthop::Receive { vif } => NexthopKind::Receive { vif: vif.0 },
            Nexthop::Resolve { vif } => NexthopKind::Resolve { vif: vif.0 },
            Nexthop::Encap { vif, dmac, smac } => NexthopKind::Encap {
                vif: vif.0,
                dmac: dmac.to_string(),
                smac: smac.to_string(),
            },
            Nexthop::Snat {
                vif,
                ip,
                smac,
                dmac,
            } => NexthopKind::Snat {
                vif: vif.0,
                ip: *ip,
                smac: smac.to_string(),
                dmac: dmac.to_string(),
            },
            Nexthop::Tunnel(t) => NexthopKind::Tunnel {
                vif: t.out_vif.0,
                src: t.src,
                dst: t.dst,
                smac: t.smac.to_string(),
                dmac: t.dmac.to_string(),
                encaps: encaps(t.encaps),
                inner_dmac: t.inner_dmac.map(|m| m.to_string()),
            },
            Nexthop::Composite(e) => NexthopKind::Composite {
                members: e
                    .members()
                    .iter()
                    .zip(e.weights())
                    .map(|(m, w)| MemberCfg {
                        nh: m.nh.0,
                        label: m.label,
                        weight: *w,
                    })
                    .collect(),
            },
            Nexthop::Service(s) => NexthopKind::Service {
                members: s
                    .ecmp
                    .members()
                    .iter()
                    .zip(s.ecmp.weights())
                    .zip(&s.backends)
                    .map(|((m, w), a)| ServiceMemberCfg {
                        nh: m.nh.0,
                        label: m.label,
                        weight: *w,
                        addr: *a,
                    })
                    .collect(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| ServicePortCfg {
                        proto: p.proto,
                        port: p.port,
                        target: p.target,
                    })
                    .collect(),
                affinity: s.client_ip_affinity,
            },
            Nexthop::NodePorts(n) => NexthopKind::NodePorts {
                ports: n
                    .ports
                    .iter()
                    .map(|p| NodePortCfg {
                        proto: p.proto,
                        port: p.port,
                        service: p.service.0,
                        service_port: p.service_port,
                    })
                    .collect(),
                host: n.host.0,
            },
            Nexthop::L2Flood { members } => NexthopKind::L2Flood {
                members: members.iter().map(|m| m.0).collect(),
            },
        };
        NexthopCfg { id: id.0, kind }
    }
}

fn member(nh: u32, label: u32) -> Member {
    Member {
        nh: NhId(nh),
        label,
    }
}

fn nexthop(object: &str, k: &NexthopKind) -> Result<Nexthop, ConfigError> {
    let bad_members = |e: crate::tables::ecmp::EcmpError| ConfigError::Value {
        object: object.into(),
        why: e.to_string(),
    };
    Ok(match k {
        NexthopKind::Discard => Nexthop::Discard,
        NexthopKind::Receive { vif } => Nexthop::Receive { vif: VifId(*vif) },
        NexthopKind::Resolve { vif } => Nexthop::Resolve { vif: VifId(*vif) },
        NexthopKind::Encap { vif, dmac, smac } => Nexthop::Encap {
            vif: VifId(*vif),
            dmac: mac(object, dmac)?,
            smac: mac(object, smac)?,
        },
        NexthopKind::Snat {
            vif,
            ip,
            smac,
            dmac,
        } => Nexthop::Snat {
            vif: VifId(*vif),
            ip: *ip,
            smac: mac(object, smac)?,
            dmac: mac(object, dmac)?,
        },
        NexthopKind::Tunnel {
            vif,
            src,
            dst,
            smac,
            dmac,
            encaps,
            inner_dmac,
        } => Nexthop::Tunnel(Tunnel {
            out_vif: VifId(*vif),
            src: *src,
            dst: *dst,
            smac: mac(object, smac)?,
            dmac: mac(object, dmac)?,
            inner_dmac: inner_dmac.as_deref().map(|m| mac(object, m)).transpose()?,
            encaps: if encaps.is_empty() {
                EncapSet::ALL
            } else {
                EncapSet(encaps.iter().fold(0, |a, e| a | TunnelKind::from(*e).bit()))
            },
        }),
        NexthopKind::Composite { members } => {
            let m: Vec<_> = members
                .iter()
                .map(|m| (member(m.nh, m.label), m.weight))
                .collect();
            Nexthop::Composite(Arc::new(Ecmp::new(&m).map_err(bad_members)?))
        }
        NexthopKind::Service {
            members,
            ports,
            affinity,
        } => {
            let b: Vec<_> = members
                .iter()
                .map(|m| (member(m.nh, m.label), m.weight, m.addr))
                .collect();
            let ports = ports
                .iter()
                .map(|p| ServicePort {
                    proto: p.proto,
                    port: p.port,
                    target: p.target,
                })
                .collect();
            let mut s = Service::new(&b, ports).map_err(bad_members)?;
            s.client_ip_affinity = *affinity;
            Nexthop::Service(Arc::new(s))
        }
        NexthopKind::NodePorts { ports, host } => Nexthop::NodePorts(Arc::new(NodePorts {
            ports: ports
                .iter()
                .map(|p| NodePort {
                    proto: p.proto,
                    port: p.port,
                    service: NhId(p.service),
                    service_port: p.service_port,
                })
                .collect(),
            host: NhId(*host),
        })),
        NexthopKind::L2Flood { members } => Nexthop::L2Flood {
            members: members.iter().map(|m| NhId(*m)).collect(),
        },
    })
}
