//! Routes between nodes. Each agent publishes the addresses of its local interfaces
//! (prefix -> node address, label, VNI) and learns the other nodes' ones. On a single node
//! (the default) there is nothing to exchange; with `--etcd` the exchange goes through
//! etcd (see [`crate::routes::etcd`]).

/// The key prefix of published routes: `<prefix><node>/<vn>/<ip prefix>`.
pub const KEY_PREFIX: &str = "/vrouter/routes/";
