//! Source NAT: vm1 to addresses outside the overlay through the node's fabric address
//! (the default route's SNAT nexthop), a port from the UDP pool per flow.

use std::net::Ipv4Addr;

use crate::frames::{spread, vm1_udp};
use crate::scenario::Scenario;

/// vm1 -> 198.51.100.0/24, SNAT to the node's address.
#[derive(Debug)]
pub struct Snat;

impl Scenario for Snat {
    fn name(&self) -> &'static str {
        "snat"
    }
    fn about(&self) -> &'static str {
        "VM -> outside, source NAT to the node's fabric address (UDP port pool)"
    }
    fn output(&self) -> &'static str {
        "fabric"
    }
    fn max_flows(&self) -> Option<u32> {
        // The UDP pool of ip-fabric SNAT holds 1024 ports: one per flow.
        Some(1024)
    }
    fn frame(&self, flow: u32, len: usize) -> Vec<u8> {
        let (h, sport) = spread(flow, 250);
        vm1_udp(Ipv4Addr::new(198, 51, 100, 1 + h as u8), sport, 53, len)
    }
}
