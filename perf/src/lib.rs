//! vrperf: testpmd-style performance runs of the vrouter, measured side by side with
//! dpdk-testpmd and OVS-DPDK on the same vdevs, in the same run.
//!
//! A [`scenario::Scenario`] (one file each under `scenarios/`) says where traffic enters
//! and leaves and how the tables look; [`runner`] writes the captures, runs the real
//! `vrouter` daemon on a replaying net_pcap (`infinite_rx`) into net_null, then
//! dpdk-testpmd (io, macswap) and OVS-DPDK on the same devices; [`report`] and [`plot`]
//! write the table, JSON, CSV and PNG files. [`latency`] measures per-packet latency at
//! an offered rate with stamped frames through ring-backed ports, in process. [`pods`]
//! measures pod interfaces on real veths: idle ones beside busy ones, and the vrouter's
//! own rings against DPDK's af_packet PMD.
#![forbid(unsafe_code)]

pub mod frames;
pub mod latency;
pub mod measure;
pub mod ovs;
pub mod plot;
pub mod pods;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod scenarios;
