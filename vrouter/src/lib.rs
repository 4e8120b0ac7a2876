//! The vrouter datapath.
//!
//! - [`wire`]: zero-copy header views (Ethernet ... VXLAN) with parse/emit.
//! - [`probe`]: `vrouter probe`, the DPDK environment check.
#![forbid(unsafe_code)]

pub mod probe;
pub mod wire;
