//! Typed identifiers, so a queue id cannot be passed where a port id is expected.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw value DPDK uses.
            pub const fn raw(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// An ethdev port.
    PortId(u16), "port "
);
id_type!(
    /// An RX or TX queue of a port.
    QueueId(u16), "queue "
);
id_type!(
    /// An EAL logical core.
    LcoreId(u32), "lcore "
);
id_type!(
    /// A NUMA socket (`-1` is `SOCKET_ID_ANY`).
    SocketId(i32), "socket "
);

impl SocketId {
    /// Any socket: let DPDK choose.
    pub const ANY: SocketId = SocketId(-1);
}

impl LcoreId {
    /// The EAL lcore the calling thread runs on, or `None` on a non-EAL thread.
    pub fn current() -> Option<LcoreId> {
        // SAFETY: shim_lcore_id reads the per-thread lcore id; no preconditions.
        let id = unsafe { crate::ffi::shim_lcore_id() };
        (id != u32::MAX).then_some(LcoreId(id))
    }
}
