//! Interfaces (vifs): the fabric NIC, vhost0 to the host, and pod/VM interfaces.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{VifId, VrfId};
use crate::policy::Policy;
use crate::wire::MacAddr;

/// What an interface connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VifKind {
    /// The physical (fabric) NIC: tunnels arrive and leave here.
    Physical,
    /// vhost0: the host kernel's interface into the vrouter.
    Host,
    /// A pod's or VM's interface (a VMI).
    Virtual,
    /// The agent's packet interface.
    Agent,
}

impl VifKind {
    /// Name used in dumps.
    pub fn name(self) -> &'static str {
        match self {
            VifKind::Physical => "physical",
            VifKind::Host => "host",
            VifKind::Virtual => "virtual",
            VifKind::Agent => "agent",
        }
    }
}

/// An interface as the datapath sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vif {
    /// Index.
    pub id: VifId,
    /// Name (tap or device name).
    pub name: String,
    /// Kind.
    pub kind: VifKind,
    /// The MAC the vrouter uses on this interface (source of frames it sends there, and
    /// the answer to ARP/ND for the VN gateway); for the host vif, the host interface's
    /// own MAC, which packets delivered to the host (receive nexthops) are addressed to.
    pub mac: MacAddr,
    /// The VRF packets from this interface are routed in.
    pub vrf: VrfId,
    /// The VM's IPv4 address (virtual vifs), or the node's fabric address (physical).
    pub ip4: Option<Ipv4Addr>,
    /// The VM's IPv6 address.
    pub ip6: Option<Ipv6Addr>,
    /// MTU of the interface.
    pub mtu: u16,
    /// Compiled policy; `None` means policy is off (flows still track and count).
    pub policy: Option<Arc<Policy>>,
    /// Endpoint attributes (VN, tags) of the VM behind this interface.
    pub attr: u32,
}
