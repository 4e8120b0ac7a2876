//! The scenarios, one file each.

pub mod decap;
pub mod ecmp16;
pub mod flow_setup;
pub mod l3_local;
pub mod mplsudp_encap;
pub mod snat;
pub mod vxlan_encap;

use crate::scenario::Scenario;

/// Every scenario, in the order the standard set runs them.
pub fn all() -> Vec<&'static dyn Scenario> {
    vec![
        &l3_local::L3Local,
        &vxlan_encap::VxlanEncap,
        &mplsudp_encap::MplsUdpEncap,
        &decap::Decap,
        &ecmp16::Ecmp16,
        &flow_setup::FlowSetup,
        &snat::Snat,
    ]
}

/// The scenario called `name`.
pub fn by_name(name: &str) -> Option<&'static dyn Scenario> {
    all().into_iter().find(|s| s.name() == name)
}
