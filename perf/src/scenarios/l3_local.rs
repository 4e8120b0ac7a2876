//! L3 forwarding between two local interfaces: vm1 -> vm2 in the same VRF.

use vrouter::testbed::VM2_IP;

use crate::frames::{spread, vm1_udp};
use crate::scenario::Scenario;

/// vm1 -> vm2.
#[derive(Debug)]
pub struct L3Local;

impl Scenario for L3Local {
    fn name(&self) -> &'static str {
        "l3-local"
    }
    fn about(&self) -> &'static str {
        "L3 forwarding between two local VM interfaces (route, flow, rewrite)"
    }
    fn output(&self) -> &'static str {
        "vm2"
    }
    fn frame(&self, flow: u32, len: usize) -> Vec<u8> {
        // One destination: flows differ in both ports.
        let (d, sport) = spread(flow, 64);
        vm1_udp(VM2_IP, sport, 9000 + d as u16, len)
    }
}
