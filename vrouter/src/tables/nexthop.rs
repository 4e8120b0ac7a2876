//! Nexthops: what to do with a packet once its destination is known.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::ecmp::{Ecmp, EcmpError, Member};
use super::{NhId, VifId};
use crate::wire::MacAddr;

/// Overlay encapsulations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelKind {
    /// MPLS over UDP (RFC 7510), UDP port 6635.
    MplsUdp,
    /// MPLS over GRE.
    MplsGre,
    /// VXLAN (RFC 7348), UDP port 4789.
    Vxlan,
}

impl TunnelKind {
    /// Bit in an [`EncapSet`].
    pub const fn bit(self) -> u8 {
        match self {
            TunnelKind::MplsUdp => 1,
            TunnelKind::MplsGre => 2,
            TunnelKind::Vxlan => 4,
        }
    }

    /// Outer header bytes added (Ethernet + IPv4 + the tunnel's own headers).
    pub const fn overhead(self) -> usize {
        14 + 20
            + match self {
                TunnelKind::MplsUdp => 8 + 4,
                TunnelKind::MplsGre => 4 + 4,
                TunnelKind::Vxlan => 8 + 8 + 14,
            }
    }
}

/// The encapsulations a remote node accepts (bits of [`TunnelKind::bit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncapSet(pub u8);

impl EncapSet {
    /// Every encapsulation.
    pub const ALL: EncapSet = EncapSet(7);

    /// Whether `k` is in the set.
    pub fn has(self, k: TunnelKind) -> bool {
        self.0 & k.bit() != 0
    }
}

/// A tunnel to a remote node over the fabric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// Fabric interface to send on.
    pub out_vif: VifId,
    /// Our fabric IPv4 address.
    pub src: Ipv4Addr,
    /// The remote node's fabric IPv4 address.
    pub dst: Ipv4Addr,
    /// Our fabric MAC.
    pub smac: MacAddr,
    /// The fabric next hop's MAC (remote node or gateway).
    pub dmac: MacAddr,
    /// Encapsulations the remote node accepts.
    pub encaps: EncapSet,
    /// Inner destination MAC for VXLAN, when the remote end only takes frames for its own
    /// MAC (a kernel VXLAN device); by default the vrouter MAC, which vrouters accept.
    pub inner_dmac: Option<MacAddr>,
}

/// A nexthop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nexthop {
    /// Drop (counted as "discard").
    Discard,
    /// Deliver to the host stack through the host vif (vhost0).
    Receive {
        /// The host vif.
        vif: VifId,
    },
    /// Deliver on a local interface, rewriting the Ethernet header.
    Encap {
        /// Output interface.
        vif: VifId,
        /// Destination MAC (the VM's or pod's).
        dmac: MacAddr,
        /// Source MAC (the vrouter's on that interface).
        smac: MacAddr,
    },
    /// Encapsulate and send to a remote node.
    Tunnel(Tunnel),
    /// The neighbour is not resolved yet: the packet goes to the host/agent for ARP/ND.
    Resolve {
        /// Interface the neighbour is on.
        vif: VifId,
    },
    /// ECMP over members (service VIPs, multipath).
    Composite(Arc<Ecmp>),
    /// A service address balanced over backends with destination NAT (a native load
    /// balancer): flows pick a backend by hash and are translated to its address and the
    /// target port of the service port they came to.
    Service(Arc<Service>),
    /// The node's own address with NodePort services on it: a flow to one of the node
    /// ports goes to that port's service (as if to the service's port), anything else to
    /// the host nexthop.
    NodePorts(Arc<NodePorts>),
    /// Leave through the fabric with the source translated to the node's address (ip-fabric
    /// SNAT): flows through it get a port from the node's SNAT pool.
    Snat {
        /// Fabric interface.
        vif: VifId,
        /// The node's address the source becomes.
        ip: Ipv4Addr,
        /// Our fabric MAC.
        smac: MacAddr,
        /// The fabric gateway's MAC.
        dmac: MacAddr,
    },
    /// L2 flood to several nexthops (broadcast, unknown unicast).
    L2Flood {
        /// Members.
        members: Vec<NhId>,
    },
}

impl Nexthop {
    /// Short type name for dumps.
    pub fn kind(&self) -> &'static str {
        match self {
            Nexthop::Discard => "discard",
            Nexthop::Receive { .. } => "receive",
            Nexthop::Encap { .. } => "encap",
            Nexthop::Tunnel(_) => "tunnel",
            Nexthop::Resolve { .. } => "resolve",
            Nexthop::Composite(_) => "composite",
            Nexthop::Service(_) => "service",
            Nexthop::NodePorts(_) => "node-ports",
            Nexthop::Snat { .. } => "snat",
            Nexthop::L2Flood { .. } => "l2-flood",
        }
    }

    /// The nexthops and interfaces this one refers to, for validation.
    pub fn references(&self) -> (Vec<NhId>, Vec<VifId>) {
        match self {
            Nexthop::Discard => (vec![], vec![]),
            Nexthop::Receive { vif }
            | Nexthop::Resolve { vif }
            | Nexthop::Encap { vif, .. }
            | Nexthop::Snat { vif, .. } => (vec![], vec![*vif]),
            Nexthop::Tunnel(t) => (vec![], vec![t.out_vif]),
            Nexthop::Composite(e) => (e.members().iter().map(|m| m.nh).collect(), vec![]),
            Nexthop::Service(s) => (s.ecmp.members().iter().map(|m| m.nh).collect(), vec![]),
            Nexthop::NodePorts(n) => (
                n.ports.iter().map(|p| p.service).chain([n.host]).collect(),
                vec![],
            ),
            Nexthop::L2Flood { members } => (members.clone(), vec![]),
        }
    }
}

/// A node port: `port` on the node's address is the service nexthop's `service_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePort {
    /// IP protocol.
    pub proto: u8,
    /// Port on the node's address.
    pub port: u16,
    /// The service nexthop.
    pub service: NhId,
    /// The service port it stands for.
    pub service_port: u16,
}

/// The node ports of a node's address, and where the rest goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePorts {
    /// The ports (a handful; searched in order).
    pub ports: Vec<NodePort>,
    /// Everything else: the host (a receive nexthop).
    pub host: NhId,
}

impl NodePorts {
    /// The service and service port for a protocol and port of the node.
    #[inline]
    pub fn find(&self, proto: u8, port: u16) -> Option<(NhId, u16)> {
        self.ports
            .iter()
            .find(|p| p.proto == proto && p.port == port)
            .map(|p| (p.service, p.service_port))
    }
}

/// A port a service serves: `port` on the service address goes to `target` on the
/// backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePort {
    /// IP protocol.
    pub proto: u8,
    /// Port on the service address.
    pub port: u16,
    /// Port on the backend.
    pub target: u16,
}

/// A service's backends (ECMP members with their addresses) and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The backends' nexthops (encap or tunnel) and weights.
    pub ecmp: Ecmp,
    /// Each backend's address, in member order.
    pub backends: Vec<IpAddr>,
    /// The ports served.
    pub ports: Vec<ServicePort>,
    /// Client-IP affinity: a client's connections all go to one backend (the backend is
    /// picked by the client's address instead of the whole flow).
    pub client_ip_affinity: bool,
}

impl Service {
    /// A service over `(member, weight, address)` backends.
    pub fn new(
        backends: &[(Member, u32, IpAddr)],
        ports: Vec<ServicePort>,
    ) -> Result<Service, EcmpError> {
        let members: Vec<(Member, u32)> = backends.iter().map(|(m, w, _)| (*m, *w)).collect();
        Ok(Service {
            ecmp: Ecmp::new(&members)?,
            backends: backends.iter().map(|(_, _, a)| *a).collect(),
            ports,
            client_ip_affinity: false,
        })
    }

    /// The backend for a flow (by its hash, or by the client's address with client-IP
    /// affinity): its nexthop and label, and its address.
    #[inline]
    pub fn pick(&self, flow_hash: u32, client: IpAddr) -> (Member, IpAddr) {
        let hash = if self.client_ip_affinity {
            address_hash(client)
        } else {
            flow_hash
        };
        let i = self.ecmp.select_index(hash);
        (self.ecmp.members()[i], self.backends[i])
    }

    /// The backend port for a protocol and service port.
    #[inline]
    pub fn target(&self, proto: u8, port: u16) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.proto == proto && p.port == port)
            .map(|p| p.target)
    }
}

/// A well-mixed hash of an address (for client-IP affinity).
fn address_hash(a: IpAddr) -> u32 {
    let b = match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    let x = (b as u64) ^ ((b >> 64) as u64).rotate_left(17);
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

/// Picks the encapsulation for a tunnel: the first of the global priority list that the
/// remote node accepts.
pub fn choose_encap(priority: &[TunnelKind], accepted: EncapSet) -> Option<TunnelKind> {
    priority.iter().copied().find(|k| accepted.has(*k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encap_follows_priority_and_what_the_remote_accepts() {
        let prio = [TunnelKind::MplsGre, TunnelKind::MplsUdp, TunnelKind::Vxlan];
        assert_eq!(
            choose_encap(&prio, EncapSet::ALL),
            Some(TunnelKind::MplsGre)
        );
        let udp_vxlan = EncapSet(TunnelKind::MplsUdp.bit() | TunnelKind::Vxlan.bit());
        assert_eq!(choose_encap(&prio, udp_vxlan), Some(TunnelKind::MplsUdp));
        assert_eq!(choose_encap(&prio[..1], udp_vxlan), None);
    }

    #[test]
    fn overheads_match_header_sizes() {
        assert_eq!(TunnelKind::MplsUdp.overhead(), 14 + 20 + 8 + 4);
        assert_eq!(TunnelKind::Vxlan.overhead(), 14 + 20 + 8 + 8 + 14);
    }
}
