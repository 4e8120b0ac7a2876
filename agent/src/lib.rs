//! The control agent: holds VNC configuration (served over gRPC), resolves it into the
//! vrouter's objects and programs them over the vrouter's control socket by diff.
//!
//! - [`proto`]: the generated gRPC types and services (`proto/vnc.proto`).
//! - [`kinds`]: the object types, their FQ-name shapes, parents and references.
//! - [`store`]: the configuration database: validation, indexes, all-or-nothing batches.
//! - [`persist`]: the embedded on-disk store (redb) that survives restarts.
//! - [`cluster`]: the cluster's configuration in etcd, written by any agent, followed
//!   by every one (`--config-store etcd`).
//! - [`oper`]: config -> the vrouter objects this node needs (VRFs, vifs, nexthops, ECMP,
//!   routes, labels, VNIs, compiled policies), with stable ids.
//! - [`firewall`]: application policy sets, firewall policies and rules -> rule sets.
//! - [`program`]: the reconcile loop: diff against the vrouter's tables, apply.
//! - [`routes`]: routes exchanged between nodes (etcd, or none on a single node).
//! - [`etcd`]: the connection to etcd (TLS, authentication) and the per-node roles.
//! - [`api`]: the gRPC services.
//! - [`auth`]: who may call what (peer credentials on the Unix socket, client
//!   certificates over mutual TLS), decided before any handler runs.
//! - [`listen`]: the listeners (Unix sockets with their mode set before they appear, TCP
//!   with mutual TLS).
//! - [`client`]: how the other programs reach the agent (`unix:PATH`, `https://`).
//! - [`device`]: the allow-list of devices a port plugged through the API may use.
//! - [`metrics`]: the Prometheus text endpoint.
//! - [`pki`]: a small CA for labs and tests (etcd's and the agents' certificates).
//! - [`k8s`]: kube-manager: Kubernetes objects -> VNC objects through the agent's API.
//! - [`lbaas`]: HAProxy load balancers: a node's instances and their configuration
//!   (`haproxy-manager` runs them).

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod cmd;
pub mod device;
pub mod dns;
pub mod etcd;
pub mod firewall;
pub mod k8s;
pub mod kinds;
pub mod lbaas;
pub mod listen;
pub mod metrics;
pub mod oper;
pub mod persist;
pub mod pki;
pub mod program;
pub mod reserve;
pub mod routes;
pub mod store;

/// A stable 64-bit FNV-1a hash of a name, for deriving short interface and device names
/// (at most 15 bytes for Linux links) from longer ones.
pub fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Generated from `proto/vnc.proto`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod proto {
    tonic::include_proto!("vnc.v1");

    /// The encoded descriptors, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vnc_descriptor");
}
