//! The vrouter datapath.
//!
//! - [`wire`]: zero-copy header views (Ethernet ... VXLAN) with parse/emit.
//! - [`tables`]: vifs, VRFs and routes, nexthops, labels, VNIs (snapshot + writer).
//! - [`capture`]: bounded capture of a vif's frames.
//! - [`config`]: the objects as a start-up file (TOML), applied to the tables.
//! - [`control`]: the control socket (framed, versioned JSON) for the agent and `vrctl`.
//! - [`demo`]: the `make run` demo's configuration and traffic.
//! - [`flow`]: the flow table (exact match, paired entries, aging, eviction).
//! - [`nat`]: SNAT port pools.
//! - [`packet`]: the buffer trait stages work on (`Mbuf` in the daemon, `VecBuf` in tests).
//! - [`pcap`]: pcap files for test inputs, outputs and the demo.
//! - [`pipeline`]: per-burst stages and drop reasons.
//! - [`policy`]: compiled rule sets evaluated at flow setup.
//! - [`testbed`]: a one-node topology and frame builders for tests, benches and the demo.
//! - [`runtime`]: the DPDK lcore runtime around the pipeline.
//! - [`probe`]: `vrouter probe`, the DPDK environment check.
#![forbid(unsafe_code)]

pub mod capture;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod flow;
pub mod nat;
pub mod packet;
pub mod pcap;
pub mod pipeline;
pub mod policy;
pub mod probe;
pub mod runtime;
pub mod tables;
pub mod testbed;
pub mod wire;
