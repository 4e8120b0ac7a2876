//! What a run measures and the point it measures: shared by the vrouter, testpmd and
//! OVS-DPDK runners.

use serde::{Deserialize, Serialize};

use crate::frames::Size;
use crate::scenario::Scenario;

/// How long each run lasts and where it runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Seconds measured.
    pub duration: f64,
    /// Seconds before measuring (flows set up, caches warm).
    pub warmup: f64,
    /// Hugepages mounted with room for a run.
    pub hugepages: bool,
    /// CPUs of the machine.
    pub cpus: usize,
}

/// One point of a sweep.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// The scenario.
    pub scenario: &'static dyn Scenario,
    /// Frame size.
    pub size: Size,
    /// Distinct flows in the traffic.
    pub flows: u32,
    /// Forwarding lcores.
    pub lcores: usize,
    /// RX burst.
    pub burst: usize,
}

/// A rate and what it costs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Measure {
    /// Million packets per second, all lcores.
    pub mpps: f64,
    /// Per lcore.
    pub mpps_per_lcore: f64,
    /// Gbit/s on the wire (preamble and gap included) per lcore, at the input size.
    pub gbps_per_lcore: f64,
    /// TSC cycles per packet on the forwarding lcores.
    pub cycles_per_packet: Option<f64>,
}

impl Measure {
    pub(crate) fn new(pps: f64, lcores: usize, size: Size, cycles: Option<f64>) -> Measure {
        let per = pps / lcores.max(1) as f64;
        Measure {
            mpps: pps / 1e6,
            mpps_per_lcore: per / 1e6,
            gbps_per_lcore: size.gbps(per),
            cycles_per_packet: cycles,
        }
    }
}

/// The last `n` non-empty lines of `s`, joined.
pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
