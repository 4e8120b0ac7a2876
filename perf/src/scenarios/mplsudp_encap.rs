//! VM -> fabric with MPLS over UDP: vm1 to VMs on node B, with B's label.

use vrouter::config::{Config, Encap};

use crate::scenario::Scenario;
use crate::scenarios::vxlan_encap::to_node_b;

/// vm1 -> 10.1.2.0/24 on node B, MPLSoUDP.
#[derive(Debug)]
pub struct MplsUdpEncap;

impl Scenario for MplsUdpEncap {
    fn name(&self) -> &'static str {
        "mplsudp-encap"
    }
    fn about(&self) -> &'static str {
        "VM -> fabric, MPLS-over-UDP encapsulation towards a remote node"
    }
    fn output(&self) -> &'static str {
        "fabric"
    }
    fn frame(&self, flow: u32, len: usize) -> Vec<u8> {
        to_node_b(flow, len)
    }
    fn tables(&self, cfg: &mut Config) {
        cfg.global.encap_priority = vec![Encap::MplsUdp];
    }
}
