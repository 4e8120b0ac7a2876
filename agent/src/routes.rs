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
//!   forwarding) and the session is retried.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};

use crate::oper::RemoteRoute;
use crate::program::Shared;

/// The key prefix of published routes.
pub const KEY_PREFIX: &str = "/vrouter/routes/";

fn key(r: &RemoteRoute) -> String {
    format!("{KEY_PREFIX}{}/{}/{}", r.node_ip, r.vn, r.prefix)
}

/// Runs the exchange until the agent stops.
pub async fn run(endpoints: Vec<String>, shared: Arc<Shared>, ttl: i64) {
    while !shared.stop.load(Ordering::Relaxed) {
        if let Err(e) = session(&endpoints, &shared, ttl).await {
            tracing::warn!("route exchange: {e:#}; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn learn(shared: &Shared, known: &BTreeMap<String, RemoteRoute>) {
    let routes: Vec<RemoteRoute> = known.values().cloned().collect();
    let mut cur = shared.remote.lock().unwrap_or_else(|e| e.into_inner());
    if *cur != routes {
        *cur = routes;
        drop(cur);
        shared.kick();
    }
}

async fn session(endpoints: &[String], shared: &Shared, ttl: i64) -> Result<()> {
    let mut c = Client::connect(endpoints, None)
        .await
        .context("connecting to etcd")?;
    let lease = c.lease_grant(ttl, None).await?.id();
    let (mut keeper, mut alive) = c.lease_keep_alive(lease).await?;
    let resp = c
        .get(KEY_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let mut known = BTreeMap::new();
    for kv in resp.kvs() {
        if let Ok(r) = serde_json::from_slice::<RemoteRoute>(kv.value()) {
            known.insert(String::from_utf8_lossy(kv.key()).into_owned(), r);
        }
    }
    learn(shared, &known);
    tracing::info!(routes = known.len(), "route exchange: connected to etcd");
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
                    .chain(known.keys().filter(|k| own.as_ref().is_some_and(|o| k.starts_with(o))))
                    .filter(|k| !want.contains_key(*k))
                    .cloned()
                    .collect();
                for k in stale {
                    c.delete(k.as_str(), None).await?;
                    published.remove(&k);
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
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let k = String::from_utf8_lossy(kv.key()).into_owned();
                    match ev.event_type() {
                        EventType::Put => match serde_json::from_slice::<RemoteRoute>(kv.value()) {
                            Ok(r) => {
                                known.insert(k, r);
                            }
                            Err(e) => tracing::warn!("route {k}: not a route ({e}); ignored"),
                        },
                        EventType::Delete => {
                            known.remove(&k);
                        }
                    }
                }
                learn(shared, &known);
            }
        }
    }
}
