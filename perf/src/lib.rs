//! vrperf: performance scenarios for the vrouter, measured side by side with dpdk-testpmd
//! and OVS-DPDK on the same vdevs.
//!
//! Nothing is implemented here yet: the crate fixes the workspace layout.
#![forbid(unsafe_code)]
