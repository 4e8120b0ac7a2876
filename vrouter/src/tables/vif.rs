//! Interfaces (vifs): the fabric NIC, vhost0 to the host, and pod/VM interfaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{VifId, VrfId};
use crate::policy::{Policy, addr_bits};
use crate::wire::MacAddr;

/// Interfaces whose flows and SNAT ports are counted against them (quotas): ids below
/// this (a flow entry keeps its owner in 16 bits).
pub const MAX_OWNERS: usize = 0xffff;

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
    /// The VM's own MAC (virtual vifs): frames from the VM must come from it or from an
    /// allowed address pair's MAC. `None`: any unicast MAC.
    pub vm_mac: Option<MacAddr>,
    /// Allowed address pairs: source prefixes the VM may send from besides its own
    /// addresses, each with the MAC it must use then (`None`: `vm_mac`).
    pub allowed: Vec<AllowedSource>,
}

/// An allowed address pair of a VMI (a VRRP address, a routed prefix behind the VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedSource {
    /// Prefix address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
    /// The MAC frames from these addresses carry; `None`: the VM's own.
    pub mac: Option<MacAddr>,
}

impl AllowedSource {
    fn contains(&self, a: IpAddr) -> bool {
        // The policy's 128-bit prefix match, within one family.
        let len = match self.addr {
            IpAddr::V4(_) => 96 + self.len.min(32),
            IpAddr::V6(_) => self.len.min(128),
        };
        let mask = crate::policy::prefix_mask(len);
        self.addr.is_ipv4() == a.is_ipv4() && addr_bits(a) & mask == addr_bits(self.addr) & mask
    }
}

impl Vif {
    /// Whether the VM behind this interface may send frames from `mac` at all: its own
    /// MAC or an allowed pair's (always, where no MAC is set).
    #[inline]
    pub fn mac_allowed(&self, mac: MacAddr) -> bool {
        match self.vm_mac {
            None => true,
            Some(own) => own == mac || self.allowed.iter().any(|a| a.mac == Some(mac)),
        }
    }

    /// Whether the VM may send from address `src` in a frame from `mac` (anti-spoofing):
    /// its own address with its own MAC, or an allowed pair's prefix with that pair's MAC.
    #[inline]
    pub fn source_allowed(&self, src: IpAddr, mac: MacAddr) -> bool {
        let own_mac = self.vm_mac.is_none_or(|m| m == mac);
        let own = match src {
            IpAddr::V4(a) => self.ip4 == Some(a),
            IpAddr::V6(a) => self.ip6 == Some(a),
        };
        (own && own_mac)
            || self
                .allowed
                .iter()
                .any(|p| p.contains(src) && p.mac.map_or(own_mac, |m| m == mac))
    }
}
