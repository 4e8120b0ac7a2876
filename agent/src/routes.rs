//! Routes between nodes. Each agent publishes the addresses of its local interfaces
//! (prefix -> node address and MAC, MPLS label, VNI, security groups and tags) and learns
//! the other nodes' ones; the reconcile loop turns them into tunnel nexthops, routes and
//! ECMP composites. On a single node (the default) there is nothing to exchange; with
//! `--etcd` the exchange goes through etcd:
//!
//! - keys `/vrouter/routes/<node>/<vn>/<prefix>`, JSON values, attached to a lease of the
//!   publishing agent (kept alive; a node gone for longer than the TTL is withdrawn);
//! - a watch from the revision of the initial read, so no change falls in between;
//! - if etcd goes away, the last routes learned stay in place (the data path keeps
//!   forwarding) and the session is retried;
//! - every value read is checked ([`check`]) before it is learned: it sits under its own
//!   node's key, names a unicast MAC, a host prefix, labels and VNIs in range; one that is
//!   not is refused and counted (`agent_refused_routes_total`), and the rest goes on. The
//!   reconcile also keeps only prefixes inside their network's subnets;
//! - with etcd's authentication on, each node's user may write only under its own key
//!   ([`crate::etcd::node_role`]): etcd itself refuses a node that writes for another;
//! - a node whose agent is gone keeps its routes on the other nodes for a graceful period
//!   (`--route-grace`), while its vrouter still forwards: each agent holds a key of its own
//!   on its lease, `<prefix><node>/_node`. When the lease expires etcd deletes that key and
//!   the node's routes in one revision; routes deleted with their node's key are kept,
//!   stale (`agent_stale_routes`), until the node publishes them again (a route put
//!   replaces its stale copy; the node's key saying `published` ends the rest), or until
//!   the period ends. A route the node itself withdraws goes at once, as before. The same
//!   holds for routes that vanished while this agent was away from etcd.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};

use crate::etcd::EtcdArgs;

use crate::oper::RemoteRoute;
use crate::program::Shared;

pub use crate::etcd::KEY_PREFIX;

fn key(r: &RemoteRoute) -> String {
    format!("{KEY_PREFIX}{}/{}/{}", r.node_ip, r.vn, r.prefix)
}

/// The key that says a node's agent is alive (on its lease).
fn node_key(node: &str) -> String {
    format!("{KEY_PREFIX}{node}/{NODE_KEY}")
}

const NODE_KEY: &str = "_node";

/// The node a node key names (`<prefix><node>/_node`), if `k` is one.
fn node_of_key(k: &str) -> Option<&str> {
    let rest = k.strip_prefix(KEY_PREFIX)?.strip_suffix(NODE_KEY)?;
    let node = rest.strip_suffix('/')?;
    (!node.is_empty() && !node.contains('/')).then_some(node)
}

/// The node a route key names.
fn node_of_route(k: &str) -> &str {
    k.strip_prefix(KEY_PREFIX)
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
}

/// What a node key holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct NodeMark {
    /// The agent has published its whole set since it (re)started.
    #[serde(default)]
    published: bool,
}

/// Routes kept after their node's agent went away, with when.
type Stale = BTreeMap<String, (RemoteRoute, std::time::Instant)>;

/// Highest local preference taken (the API's are 0, 100 and 200).
const MAX_PREFERENCE: u32 = 65_535;

/// Checks a route read from etcd under key `k`: whatever wrote it, it may speak only for
/// the node, network and prefix its key names, and its values must make sense to program.
pub fn check(k: &str, r: &RemoteRoute) -> Result<(), String> {
    if k != key(r) {
        return Err(format!(
            "the value names node {}, network {:?} and prefix {:?}, not its key's",
            r.node_ip, r.vn, r.prefix
        ));
    }
    let mac: vrouter_api::MacAddr = r
        .node_mac
        .parse()
        .map_err(|e| format!("node_mac {:?}: {e}", r.node_mac))?;
    if mac.is_multicast() || mac.0 == [0; 6] {
        return Err(format!("node_mac {mac} is not a unicast address"));
    }
    let (addr, len) = vrouter_api::config::parse_prefix(&r.prefix)?;
    let host = if addr.is_ipv4() { 32 } else { 128 };
    if len != host {
        return Err(format!("prefix {} is not a host prefix", r.prefix));
    }
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err(format!("prefix {} is not a unicast host", r.prefix));
    }
    if !(16..1 << 20).contains(&r.label) {
        return Err(format!("label {} is outside 16..2^20", r.label));
    }
    if r.vni >= 1 << 24 {
        return Err(format!("vni {} is outside 0..2^24", r.vni));
    }
    if r.preference > MAX_PREFERENCE {
        return Err(format!(
            "preference {} is over {MAX_PREFERENCE}",
            r.preference
        ));
    }
    if r.encaps.iter().any(|e| crate::oper::encap_of(e).is_none()) {
        return Err(format!(
            "encaps {:?}: MPLSoUDP, MPLSoGRE or VXLAN",
            r.encaps
        ));
    }
    Ok(())
}

/// Learns one value from etcd: checked, or refused and counted.
fn read_route(shared: &Shared, k: &str, v: &[u8]) -> Option<RemoteRoute> {
    let refused = |why: String| {
        shared.stats.refused_routes.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key = %k.escape_debug(), %why, "route refused");
    };
    match serde_json::from_slice::<RemoteRoute>(v) {
        Ok(r) => match check(k, &r) {
            Ok(()) => Some(r),
            Err(why) => {
                refused(why);
                None
            }
        },
        Err(e) => {
            refused(format!("not a route: {e}"));
            None
        }
    }
}

/// Runs the exchange until the agent stops; routes of nodes whose agent went away are
/// kept for `grace`.
pub async fn run(etcd: EtcdArgs, shared: Arc<Shared>, ttl: i64, grace: Duration) {
    let mut held = Held {
        known: BTreeMap::new(),
        stale: Stale::new(),
        grace,
    };
    while !shared.stop.load(Ordering::Relaxed) {
        if let Err(e) = session(&etcd, &shared, ttl, &mut held).await {
            tracing::warn!("route exchange: {e:#}; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// What the exchange holds across its sessions.
struct Held {
    known: BTreeMap<String, RemoteRoute>,
    stale: Stale,
    grace: Duration,
}

impl Held {
    /// A route gone with its node's agent: kept, stale.
    fn keep_stale(&mut self, k: &str) {
        if let Some(r) = self.known.remove(k) {
            self.stale
                .insert(k.to_string(), (r, std::time::Instant::now()));
        }
    }

    /// Stale routes past the period go; whether any went.
    fn expire(&mut self) -> bool {
        let grace = self.grace;
        let before = self.stale.len();
        self.stale.retain(|_, (_, since)| since.elapsed() < grace);
        before != self.stale.len()
    }
}

fn learn(shared: &Shared, held: &Held) {
    shared
        .stats
        .stale_routes
        .store(held.stale.len() as u64, Ordering::Relaxed);
    let mut all: BTreeMap<&String, &RemoteRoute> =
        held.stale.iter().map(|(k, (r, _))| (k, r)).collect();
    all.extend(held.known.iter());
    let routes: Vec<RemoteRoute> = all.into_values().cloned().collect();
    let mut cur = shared.remote.lock().unwrap_or_else(|e| e.into_inner());
    if *cur != routes {
        *cur = routes;
        drop(cur);
        shared.kick();
    }
    shared.routes_learned.store(true, Ordering::Release);
}

async fn session(etcd: &EtcdArgs, shared: &Shared, ttl: i64, held: &mut Held) -> Result<()> {
    let mut c = etcd.connect().await?;
    let lease = c.lease_grant(ttl, None).await?.id();
    let (mut keeper, mut alive) = c.lease_keep_alive(lease).await?;
    let resp = c
        .get(KEY_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let mut known = BTreeMap::new();
    let mut alive_nodes = std::collections::BTreeSet::new();
    for kv in resp.kvs() {
        let k = String::from_utf8_lossy(kv.key()).into_owned();
        if let Some(n) = node_of_key(&k) {
            alive_nodes.insert(n.to_string());
        } else if let Some(r) = read_route(shared, &k, kv.value()) {
            known.insert(k, r);
        }
    }
    // Routes learned before that are gone with their node's agent (while this one was
    // away from etcd): stale, as if seen going.
    let gone: Vec<String> = held
        .known
        .keys()
        .filter(|k| !known.contains_key(*k) && !alive_nodes.contains(node_of_route(k)))
        .cloned()
        .collect();
    for k in gone {
        held.keep_stale(&k);
    }
    for k in known.keys() {
        held.stale.remove(k);
    }
    held.known = known;
    learn(shared, held);
    tracing::info!(
        routes = held.known.len(),
        "route exchange: connected to etcd"
    );
    let (_watcher, mut stream) = c
        .watch(
            KEY_PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        )
        .await?;
    let mut published: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut marked = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ka = tokio::time::interval(Duration::from_secs((ttl / 3).max(1) as u64));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                // Publish only what a completed reconcile computed: a restarting agent
                // must not withdraw its routes before it knows them.
                if shared.stats.reconciles.load(Ordering::Acquire) == 0 {
                    continue;
                }
                let want: BTreeMap<String, Vec<u8>> = shared
                    .desired
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .published
                    .iter()
                    .map(|r| (key(r), serde_json::to_vec(r).unwrap_or_default()))
                    .collect();
                for (k, v) in &want {
                    if published.get(k) != Some(v) {
                        c.put(k.as_str(), v.clone(), Some(PutOptions::new().with_lease(lease))).await?;
                        published.insert(k.clone(), v.clone());
                    }
                }
                // Ours no longer wanted: from this session, or left by an earlier one.
                let own = want
                    .keys()
                    .next()
                    .and_then(|k| k.strip_prefix(KEY_PREFIX))
                    .and_then(|k| k.split('/').next())
                    .map(|n| format!("{KEY_PREFIX}{n}/"));
                let stale: Vec<String> = published
                    .keys()
                    .chain(held.known.keys().filter(|k| own.as_ref().is_some_and(|o| k.starts_with(o))))
                    .filter(|k| !want.contains_key(*k))
                    .cloned()
                    .collect();
                for k in stale {
                    c.delete(k.as_str(), None).await?;
                    published.remove(&k);
                }
                // The whole set is out: the node's key says so (on the lease, so that
                // it goes with the routes), and the others drop what they kept stale.
                if !marked && let Some(node) = want.keys().next().map(|k| node_of_route(k).to_string()) {
                    let mark = serde_json::to_vec(&NodeMark { published: true }).unwrap_or_default();
                    c.put(node_key(&node), mark, Some(PutOptions::new().with_lease(lease))).await?;
                    marked = true;
                }
                if held.expire() {
                    learn(shared, held);
                }
            }
            _ = ka.tick() => {
                keeper.keep_alive().await?;
                if alive.message().await?.is_none() {
                    bail!("the lease keep-alive stream ended");
                }
            }
            msg = stream.message() => {
                let Some(resp) = msg? else { bail!("the watch ended") };
                if resp.canceled() {
                    bail!("the watch was cancelled (compacted?)");
                }
                // Node keys deleted, by revision: an expired lease takes its node's key
                // and routes in one revision.
                let died: std::collections::BTreeSet<(i64, String)> = resp
                    .events()
                    .iter()
                    .filter(|ev| ev.event_type() == EventType::Delete)
                    .filter_map(|ev| {
                        let kv = ev.kv()?;
                        let n = node_of_key(kv.key_str().ok()?)?;
                        Some((kv.mod_revision(), n.to_string()))
                    })
                    .collect();
                for (_, n) in &died {
                    tracing::warn!(
                        node = %n,
                        "a node's agent went away (its lease expired): its routes stay, stale, until it publishes again or the graceful period ends"
                    );
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let k = String::from_utf8_lossy(kv.key()).into_owned();
                    if let Some(n) = node_of_key(&k) {
                        if ev.event_type() == EventType::Put
                            && serde_json::from_slice::<NodeMark>(kv.value()).is_ok_and(|m| m.published)
                        {
                            let n = n.to_string();
                            held.stale.retain(|k, _| node_of_route(k) != n);
                        }
                        continue;
                    }
                    match ev.event_type() {
                        EventType::Put => {
                            held.stale.remove(&k);
                            match read_route(shared, &k, kv.value()) {
                                Some(r) => {
                                    held.known.insert(k, r);
                                }
                                // A refused value replaces nothing good: what the key
                                // held before is withdrawn.
                                None => {
                                    held.known.remove(&k);
                                }
                            }
                        }
                        EventType::Delete => {
                            if died.contains(&(kv.mod_revision(), node_of_route(&k).to_string())) {
                                held.keep_stale(&k);
                            } else {
                                held.known.remove(&k);
                            }
                        }
                    }
                }
                learn(shared, held);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_are_told_from_routes() {
        assert_eq!(node_of_key(&node_key("192.0.2.2")), Some("192.0.2.2"));
        assert_eq!(node_of_key("/vrouter/routes/_node"), None);
        assert_eq!(node_of_key("/vrouter/routes/a/b/_node"), None);
        assert_eq!(node_of_key(&key(&route())), None);
        assert_eq!(node_of_route(&key(&route())), "192.0.2.2");
    }

    fn route() -> RemoteRoute {
        RemoteRoute {
            node_ip: "192.0.2.2".parse().unwrap(),
            node_mac: "02:fa:00:00:00:02".into(),
            vn: "vn-uuid".into(),
            prefix: "10.60.0.11/32".into(),
            label: 33,
            vni: 5,
            encaps: vec!["MPLSoUDP".into(), "VXLAN".into()],
            security_groups: vec![],
            tags: vec![],
            preference: 100,
        }
    }

    #[test]
    fn a_route_speaks_only_for_its_key_with_sane_values() {
        let ok = route();
        assert_eq!(check(&key(&ok), &ok), Ok(()));
        let k = key(&ok);
        let mut other_node = ok.clone();
        other_node.node_ip = "192.0.2.1".parse().unwrap();
        assert!(
            check(&k, &other_node)
                .unwrap_err()
                .contains("not its key's")
        );
        for (f, says) in [
            (|r: &mut RemoteRoute| r.prefix = "0.0.0.0/0".into()) as fn(&mut RemoteRoute),
            |r| r.prefix = "10.60.0.0/24".into(),
            |r| r.prefix = "224.0.0.1/32".into(),
            |r| r.node_mac = "ff:ff:ff:ff:ff:ff".into(),
            |r| r.node_mac = "not a mac".into(),
            |r| r.label = 3,
            |r| r.label = 1 << 20,
            |r| r.vni = 1 << 24,
            |r| r.preference = 1 << 20,
            |r| r.encaps = vec!["IPIP".into()],
        ]
        .into_iter()
        .zip(0..)
        {
            let mut r = ok.clone();
            f(&mut r);
            assert!(check(&key(&r), &r).is_err(), "case {says}: {r:?}");
        }
    }
}
