//! One trait for every scenario, like testpmd's forwarding engines: a scenario says which
//! vif the traffic enters and leaves by, builds the frames of each flow and adjusts the
//! tables of the one-node testbed topology (`vrouter::testbed`). The runner does the rest.

use vrouter::config::{Config, Encap};

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Forwarding rate in the steady state: flows are set up during the warm-up.
    Forward,
    /// Flow setup: one pass over the flows, every packet a new flow.
    Setup,
}

/// Encapsulation work that OVS-DPDK can do too (for the reference run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum OvsWork {
    /// VXLAN encapsulation towards one remote VTEP.
    VxlanEncap,
}

/// A performance scenario.
pub trait Scenario: Sync + std::fmt::Debug {
    /// Short name (command line, results).
    fn name(&self) -> &'static str;
    /// One line on what it exercises.
    fn about(&self) -> &'static str;
    /// The vif the traffic enters by (it gets the replaying net_pcap device).
    fn input(&self) -> &'static str {
        "vm1"
    }
    /// The vif the traffic leaves by (it gets a net_null device).
    fn output(&self) -> &'static str;
    /// Smallest frame size (FCS included) the scenario's packets fit in.
    fn min_size(&self) -> usize {
        64
    }
    /// Most flows the scenario supports (e.g. the SNAT port pool).
    fn max_flows(&self) -> Option<u32> {
        None
    }
    /// The frame of flow `flow`, `len` bytes long without FCS.
    fn frame(&self, flow: u32, len: usize) -> Vec<u8>;
    /// Changes to the testbed topology (routes, nexthops, policies, encapsulation).
    fn tables(&self, _cfg: &mut Config) {}
    /// What the run measures.
    fn kind(&self) -> Kind {
        Kind::Forward
    }
    /// The same work for OVS-DPDK, where it has it.
    fn ovs(&self) -> Option<OvsWork> {
        None
    }
}

/// The testbed topology with `input` on `input_dev` and `output` on `output_dev` and a
/// jumbo-frame fabric, then the scenario's changes.
pub fn config(s: &dyn Scenario, input_dev: &str, output_dev: &str) -> Config {
    let mut cfg = vrouter::testbed::config(|name| {
        if name == s.input() {
            Some(input_dev.to_string())
        } else if name == s.output() {
            Some(output_dev.to_string())
        } else {
            None
        }
    });
    cfg.global.encap_priority = vec![Encap::MplsUdp];
    // Every flow of a run comes from or goes to one VM: its quotas are the whole table
    // and the whole SNAT pool (runs measure forwarding, not the quotas).
    cfg.global.vif_max_flows = Some(u32::MAX);
    cfg.global.vif_max_snat_ports = Some(u32::MAX);
    // The underlay carries jumbo frames, as encapsulating deployments set it up: a
    // 1518-byte VM frame fits once encapsulated.
    for v in cfg.vifs.iter_mut().filter(|v| v.name == "fabric") {
        v.mtu = 9000;
    }
    s.tables(&mut cfg);
    cfg
}
