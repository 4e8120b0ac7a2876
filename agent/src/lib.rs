//! The control agent: holds VNC configuration (gRPC), resolves it into vrouter tables and
//! programs them over the vrouter's control socket; hosts the Kubernetes integration.
//!
//! Nothing is implemented here yet: the crate fixes the workspace layout.
#![forbid(unsafe_code)]
