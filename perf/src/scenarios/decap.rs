//! Fabric -> VM: MPLSoUDP from node B with vm1's label, decapsulated and delivered.

use std::net::Ipv4Addr;

use vrouter::tables::TunnelKind;
use vrouter::testbed::{VM1_IP, VM1_LABEL, from_node_b};

use crate::frames::{ip_udp, spread};
use crate::scenario::Scenario;

/// Outer Ethernet, IPv4, UDP and the label.
const TUNNEL: usize = 14 + 20 + 8 + 4;

/// node B's VMs -> vm1 over MPLSoUDP.
#[derive(Debug)]
pub struct Decap;

impl Scenario for Decap {
    fn name(&self) -> &'static str {
        "decap"
    }
    fn about(&self) -> &'static str {
        "fabric -> VM, MPLS-over-UDP decapsulation by label"
    }
    fn input(&self) -> &'static str {
        "fabric"
    }
    fn output(&self) -> &'static str {
        "vm1"
    }
    fn min_size(&self) -> usize {
        // The inner IPv4 + UDP packet with a 4-byte payload, FCS included.
        TUNNEL + 32 + crate::frames::FCS
    }
    fn frame(&self, flow: u32, len: usize) -> Vec<u8> {
        let (h, sport) = spread(flow, 250);
        let inner = ip_udp(
            Ipv4Addr::new(10, 1, 2, 1 + h as u8),
            VM1_IP,
            sport,
            9001,
            len.saturating_sub(TUNNEL),
        );
        from_node_b(TunnelKind::MplsUdp, VM1_LABEL, &inner)
    }
}
