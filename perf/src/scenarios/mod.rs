//! The scenarios, one file each.

pub mod decap;
pub mod ecmp16;
pub mod flow_setup;
pub mod l3_local;
pub mod mplsudp_encap;
pub mod snat;
pub mod vxlan_encap;
