//! VM -> fabric with VXLAN: vm1 to VMs on node B, encapsulated with B's VNI.

use std::net::Ipv4Addr;

use vrouter::config::{Config, Encap};

use crate::frames::{spread, vm1_udp};
use crate::scenario::{OvsWork, Scenario};

/// vm1 -> 10.1.2.0/24 on node B, VXLAN.
#[derive(Debug)]
pub struct VxlanEncap;

/// The frame of flow `flow` towards node B's VMs.
pub fn to_node_b(flow: u32, len: usize) -> Vec<u8> {
    let (h, sport) = spread(flow, 250);
    vm1_udp(Ipv4Addr::new(10, 1, 2, 1 + h as u8), sport, 9001, len)
}

impl Scenario for VxlanEncap {
    fn name(&self) -> &'static str {
        "vxlan-encap"
    }
    fn about(&self) -> &'static str {
        "VM -> fabric, VXLAN encapsulation towards a remote node"
    }
    fn output(&self) -> &'static str {
        "fabric"
    }
    fn frame(&self, flow: u32, len: usize) -> Vec<u8> {
        to_node_b(flow, len)
    }
    fn tables(&self, cfg: &mut Config) {
        cfg.global.encap_priority = vec![Encap::Vxlan];
    }
    fn ovs(&self) -> Option<OvsWork> {
        Some(OvsWork::VxlanEncap)
    }
}
