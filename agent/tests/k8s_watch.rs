//! kube-manager's API-server source against kube's mock service: the watchers list
//! namespaces, pods, services, network policies, ingresses and nodes, then follow watch
//! events; the stream
//! never yields a half-listed cluster, follows adds and deletes, and what it yields
//! translates like manifests do.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use agent::k8s::{KubeConfig, translate, watch};
use futures::StreamExt;
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

fn pod(ns: &str, name: &str, rv: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "labels": {"app": name}},
           "spec": {"containers": [{"name": "c", "image": "i"}]}})
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "10"}, "items": items})
}

fn respond(v: String) -> Response<Body> {
    Response::builder()
        .body(Body::from(v.into_bytes()))
        .expect("response")
}

#[tokio::test]
async fn the_api_server_source_lists_then_follows_watch_events() {
    let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let server = tokio::spawn(async move {
        // Later watch requests are held open, as a server with nothing new does.
        let mut held = Vec::new();
        let mut watched = HashSet::new();
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let uri = req.uri().to_string();
            seen.push(uri.clone());
            let watching = uri.contains("watch=true");
            let kind = match req.uri().path() {
                "/api/v1/namespaces" => "namespaces",
                "/api/v1/pods" => "pods",
                "/api/v1/services" => "services",
                "/apis/networking.k8s.io/v1/networkpolicies" => "networkpolicies",
                "/apis/networking.k8s.io/v1/ingresses" => "ingresses",
                "/api/v1/nodes" => "nodes",
                _ => panic!("unexpected request {uri}"),
            };
            if !watching {
                let body = match kind {
                    "namespaces" => list(
                        "NamespaceList",
                        vec![
                            json!({"metadata": {"name": "default", "resourceVersion": "1"}}),
                            json!({"metadata": {"name": "dev", "resourceVersion": "2",
                                   "annotations": {"opencontrail.org/isolation": "true"}}}),
                        ],
                    ),
                    "pods" => list(
                        "PodList",
                        vec![pod("default", "a", "3"), pod("dev", "c", "4")],
                    ),
                    "services" => list("ServiceList", vec![]),
                    "ingresses" => list("IngressList", vec![]),
                    "nodes" => list(
                        "NodeList",
                        vec![json!({"metadata": {"name": "node1", "resourceVersion": "5"}})],
                    ),
                    _ => list("NetworkPolicyList", vec![]),
                };
                send.send_response(respond(body.to_string()));
            } else if kind == "pods" && watched.insert(kind) {
                // One watch answer: b is added, a deleted.
                let events = [
                    json!({"type": "ADDED", "object": pod("default", "b", "11")}),
                    json!({"type": "DELETED", "object": pod("default", "a", "12")}),
                ];
                let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
                send.send_response(respond(lines));
            } else {
                held.push(send);
            }
        }
        seen
    });

    let mut clusters = watch::clusters(client).boxed();
    let want: BTreeSet<(String, String)> = [("default", "b"), ("dev", "c")]
        .iter()
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect();
    let last = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let c = clusters.next().await.expect("the stream goes on");
            // Never a half-listed cluster.
            assert_eq!(c.namespaces.len(), 2, "both namespaces listed");
            assert!(c.nodes.contains_key("node1"), "the node listed");
            assert!(
                c.pods.contains_key(&("dev".into(), "c".into())),
                "listed pod kept"
            );
            let have: BTreeSet<(String, String)> = c.pods.keys().cloned().collect();
            if have == want {
                return c;
            }
        }
    })
    .await
    .expect("the watch events arrive");

    // What the API server gave translates like manifests do: b in the cluster network,
    // c in dev's isolated network, a gone.
    let t = translate::translate(&KubeConfig::default(), &last, &BTreeSet::new());
    let placed: Vec<(String, String, String)> = t
        .pods
        .iter()
        .map(|p| {
            (
                p.namespace.clone(),
                p.name.clone(),
                p.network.last().cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        vec![
            (
                "default".into(),
                "b".into(),
                "k8s-default-pod-network".into()
            ),
            ("dev".into(), "c".into(), "k8s-dev-pod-network".into()),
        ]
    );
    drop(clusters);
    let seen = server.await.expect("the mock server");
    for path in [
        "/api/v1/namespaces",
        "/api/v1/pods",
        "/api/v1/services",
        "/apis/networking.k8s.io/v1/networkpolicies",
        "/apis/networking.k8s.io/v1/ingresses",
        "/api/v1/nodes",
    ] {
        assert!(
            seen.iter()
                .any(|u| u.starts_with(path) && !u.contains("watch=true")),
            "listed {path}: {seen:?}"
        );
        assert!(
            seen.iter()
                .any(|u| u.starts_with(path) && u.contains("watch=true")),
            "watched {path}: {seen:?}"
        );
    }
}
