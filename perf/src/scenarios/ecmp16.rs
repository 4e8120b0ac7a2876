//! ECMP to a 16-member composite: vm1 to a service prefix behind 16 remote nodes.

use std::net::Ipv4Addr;

use vrouter::config::{Config, MemberCfg, NexthopCfg, NexthopKind, RouteCfg};
use vrouter::testbed::{FABRIC, FABRIC_MAC, NODE_A, NODE_B_MAC, RED, REMOTE_LABEL};

use crate::frames::{spread, vm1_udp};
use crate::scenario::Scenario;

/// First tunnel nexthop id of the members.
const FIRST_NH: u32 = 100;
/// The composite's id.
const COMPOSITE: u32 = 200;
/// Members.
pub const MEMBERS: u32 = 16;

/// vm1 -> 10.1.3.0/24 = ECMP over 16 nodes.
#[derive(Debug)]
pub struct Ecmp16;

impl Scenario for Ecmp16 {
    fn name(&self) -> &'static str {
        "ecmp16"
    }
    fn about(&self) -> &'static str {
        "VM -> 16-member ECMP composite of tunnels (hash per flow), MPLSoUDP"
    }
    fn output(&self) -> &'static str {
        "fabric"
    }
    fn frame(&self, flow: u32, len: usize) -> Vec<u8> {
        let (h, sport) = spread(flow, 250);
        vm1_udp(Ipv4Addr::new(10, 1, 3, 1 + h as u8), sport, 9001, len)
    }
    fn tables(&self, cfg: &mut Config) {
        for i in 0..MEMBERS {
            cfg.nexthops.push(NexthopCfg {
                id: FIRST_NH + i,
                kind: NexthopKind::Tunnel {
                    vif: FABRIC.0,
                    src: NODE_A,
                    dst: Ipv4Addr::new(192, 0, 2, 10 + i as u8),
                    smac: FABRIC_MAC.to_string(),
                    dmac: NODE_B_MAC.to_string(),
                    encaps: vec![],
                    inner_dmac: None,
                },
            });
        }
        cfg.nexthops.push(NexthopCfg {
            id: COMPOSITE,
            kind: NexthopKind::Composite {
                members: (0..MEMBERS)
                    .map(|i| MemberCfg {
                        nh: FIRST_NH + i,
                        label: REMOTE_LABEL,
                        weight: 1,
                    })
                    .collect(),
            },
        });
        cfg.routes.push(RouteCfg {
            vrf: RED.0,
            prefix: "10.1.3.0/24".into(),
            nh: COMPOSITE,
            label: 0,
            attr: 0,
        });
    }
}
