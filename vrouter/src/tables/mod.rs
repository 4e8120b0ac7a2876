//! The vrouter's tables: interfaces, VRFs with their routes, nexthops (incl. ECMP
//! composites), MPLS labels, VXLAN VNIs, and policies.
//!
//! Forwarding lcores read an immutable [`Snapshot`]; the single control thread changes a
//! [`TablesWriter`] and publishes a new snapshot. Snapshots are built from persistent,
//! structurally shared pieces, so publishing copies only what changed.

pub mod lpm;
pub mod pvec;

use std::fmt;

macro_rules! table_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u32);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

table_id!(
    /// A nexthop index.
    NhId, "nh "
);
table_id!(
    /// An interface (vif) index.
    VifId, "vif "
);
table_id!(
    /// A VRF index.
    VrfId, "vrf "
);

pub mod ecmp;
pub mod nexthop;
pub mod snapshot;
pub mod vif;

pub use lpm::RouteEntry;
pub use nexthop::{
    EncapSet, Nexthop, NodePort, NodePorts, Service, ServicePort, Tunnel, TunnelKind,
};
pub use snapshot::{
    GlobalConfig, Snapshot, TableError, TableReader, TableSizes, TablesWriter, Vrf,
};
pub use vif::{AllowedSource, Vif, VifKind};
