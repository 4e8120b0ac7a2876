//! The vrouter datapath.
//!
//! Today this crate holds the environment probe used by `vrouter probe`; the sans-IO packet
//! core (wire views, tables, pipeline stages) and the lcore runtime come next.
#![forbid(unsafe_code)]

pub mod probe;
