//! The vrouter's objects as configuration: what the start-up file (TOML) and the control
//! socket carry, and what the agent sends. Values are checked where they are applied to
//! the tables (the `vrouter` crate); here they are only described.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// A field with a value that cannot be used, naming the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {why}")]
pub struct InvalidValue {
    /// Which object.
    pub object: String,
    /// What is wrong.
    pub why: String,
}

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

/// The ip-fabric SNAT ranges: TCP 56000-57023, UDP 57024-58047.
pub const DEFAULT_SNAT_RANGES: [(u16, u16); 2] = [(56000, 57023), (57024, 58047)];

impl Default for SnatPortsCfg {
    fn default() -> Self {
        let [(t0, t1), (u0, u1)] = DEFAULT_SNAT_RANGES;
        SnatPortsCfg {
            tcp: [t0, t1],
            udp: [u0, u1],
        }
    }
}

impl SnatPortsCfg {
    /// Refuses empty ranges and privileged ports (below 1024: the host's services).
    pub fn validate(&self) -> Result<(), InvalidValue> {
        for (name, [a, b]) in [("tcp", self.tcp), ("udp", self.udp)] {
            if a > b || a < 1024 {
                return Err(InvalidValue {
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
