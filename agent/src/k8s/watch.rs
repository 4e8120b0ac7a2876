//! A Kubernetes API server as kube-manager's source: kube-rs watchers on namespaces, pods,
//! services, network policies, ingresses (all namespaces) and nodes keep a [`Cluster`] up
//! to date. The stream yields the whole cluster after every change, once each of the initial
//! listings is complete (never a half-listed cluster: a sync from it would delete what
//! was not listed yet). A watcher that loses its connection lists again with back-off;
//! its re-listing replaces what it had, so deletes missed meanwhile are not kept.

use std::collections::BTreeMap;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};

use super::Cluster;

/// One watcher's event (moved once per event, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Change {
    Namespace(Event<Namespace>),
    Pod(Event<Pod>),
    Service(Event<Service>),
    NetworkPolicy(Event<NetworkPolicy>),
    Ingress(Event<Ingress>),
    Node(Event<Node>),
}

/// A kind's objects while its (re-)listing is in progress.
struct Kind<K, Key> {
    listing: Option<BTreeMap<Key, K>>,
    listed: bool,
}

impl<K, Key: Ord> Default for Kind<K, Key> {
    fn default() -> Self {
        Kind {
            listing: None,
            listed: false,
        }
    }
}

impl<K: Resource + Clone, Key: Ord> Kind<K, Key> {
    /// Applies an event to `map`; true when `map` changed.
    fn on(&mut self, ev: Event<K>, map: &mut BTreeMap<Key, K>, key: impl Fn(&K) -> Key) -> bool {
        match ev {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                if let Some(l) = &mut self.listing {
                    l.insert(key(&o), o);
                }
                false
            }
            Event::InitDone => {
                if let Some(l) = self.listing.take() {
                    *map = l;
                }
                self.listed = true;
                true
            }
            Event::Apply(o) => {
                map.insert(key(&o), o);
                true
            }
            Event::Delete(o) => map.remove(&key(&o)).is_some(),
        }
    }
}

fn namespaced<K: Resource>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// What the watchers have seen.
#[derive(Default)]
struct State {
    cluster: Cluster,
    namespaces: Kind<Namespace, String>,
    pods: Kind<Pod, (String, String)>,
    services: Kind<Service, (String, String)>,
    policies: Kind<NetworkPolicy, (String, String)>,
    ingresses: Kind<Ingress, (String, String)>,
    nodes: Kind<Node, String>,
}

impl State {
    fn on(&mut self, c: Change) -> bool {
        let cl = &mut self.cluster;
        match c {
            Change::Namespace(e) => self.namespaces.on(e, &mut cl.namespaces, |o| o.name_any()),
            Change::Pod(e) => self.pods.on(e, &mut cl.pods, namespaced),
            Change::Service(e) => self.services.on(e, &mut cl.services, namespaced),
            Change::NetworkPolicy(e) => self.policies.on(e, &mut cl.network_policies, namespaced),
            Change::Ingress(e) => self.ingresses.on(e, &mut cl.ingresses, namespaced),
            Change::Node(e) => self.nodes.on(e, &mut cl.nodes, |o| o.name_any()),
        }
    }

    fn listed(&self) -> bool {
        self.namespaces.listed
            && self.pods.listed
            && self.services.listed
            && self.policies.listed
            && self.ingresses.listed
            && self.nodes.listed
    }
}

/// The cluster after every change, from the API server `client` talks to. Watch errors
/// (the server away, a watch expired) are logged and retried with back-off.
pub fn clusters(client: Client) -> impl Stream<Item = Cluster> {
    let cfg = watcher::Config::default();
    let streams: Vec<BoxStream<'static, Result<Change, watcher::Error>>> = vec![
        watcher::watcher(Api::<Namespace>::all(client.clone()), cfg.clone())
            .default_backoff()
            .map(|e| e.map(Change::Namespace))
            .boxed(),
        watcher::watcher(Api::<Pod>::all(client.clone()), cfg.clone())
            .default_backoff()
            .map(|e| e.map(Change::Pod))
            .boxed(),
        watcher::watcher(Api::<Service>::all(client.clone()), cfg.clone())
            .default_backoff()
            .map(|e| e.map(Change::Service))
            .boxed(),
        watcher::watcher(Api::<NetworkPolicy>::all(client.clone()), cfg.clone())
            .default_backoff()
            .map(|e| e.map(Change::NetworkPolicy))
            .boxed(),
        watcher::watcher(Api::<Ingress>::all(client.clone()), cfg.clone())
            .default_backoff()
            .map(|e| e.map(Change::Ingress))
            .boxed(),
        watcher::watcher(Api::<Node>::all(client), cfg)
            .default_backoff()
            .map(|e| e.map(Change::Node))
            .boxed(),
    ];
    let mut state = State::default();
    futures::stream::select_all(streams).filter_map(move |ev| {
        let out = match ev {
            Ok(c) => (state.on(c) && state.listed()).then(|| state.cluster.clone()),
            Err(e) => {
                tracing::warn!(error = %e, "watching the API server");
                None
            }
        };
        std::future::ready(out)
    })
}
