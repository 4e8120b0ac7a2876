//! Manifests: YAML (or JSON) files with one or more documents, `kind: List` included, as
//! `kubectl apply -f` takes them. Applying a document creates or replaces the object of
//! that kind, namespace and name; deleting removes it. Kinds kube-manager does not
//! translate are counted and left out; a document that does not parse is an error naming
//! its file and position, and nothing of that file is applied.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use serde::Deserialize;

use super::Cluster;

/// One object of a manifest.
#[derive(Debug, Clone)]
pub enum Doc {
    /// A namespace.
    Namespace(Box<Namespace>),
    /// A pod.
    Pod(Box<Pod>),
    /// A service.
    Service(Box<Service>),
    /// A NetworkPolicy (networking.k8s.io/v1).
    NetworkPolicy(Box<NetworkPolicy>),
    /// An Ingress (networking.k8s.io/v1).
    Ingress(Box<Ingress>),
    /// A node.
    Node(Box<Node>),
    /// A kind kube-manager does not translate (kind, name).
    Other(String, String),
}

impl Doc {
    /// `kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        let m = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or("default"),
                meta.name.as_deref().unwrap_or("")
            )
        };
        match self {
            Doc::Namespace(n) => format!("Namespace {}", n.metadata.name.as_deref().unwrap_or("")),
            Doc::Pod(p) => format!("Pod {}", m(&p.metadata)),
            Doc::Service(s) => format!("Service {}", m(&s.metadata)),
            Doc::NetworkPolicy(n) => format!("NetworkPolicy {}", m(&n.metadata)),
            Doc::Ingress(i) => format!("Ingress {}", m(&i.metadata)),
            Doc::Node(n) => format!("Node {}", n.metadata.name.as_deref().unwrap_or("")),
            Doc::Other(k, n) => format!("{k} {n}"),
        }
    }
}

fn name_of(v: &serde_yaml::Value) -> String {
    v.get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_string()
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_yaml::Value, what: &str) -> Result<T> {
    serde_yaml::from_value(v).with_context(|| format!("{what}: not a valid object"))
}

fn doc(v: serde_yaml::Value, out: &mut Vec<Doc>) -> Result<()> {
    if v.is_null() {
        return Ok(());
    }
    let kind = v
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    let api = v
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    if kind.is_empty() || api.is_empty() {
        bail!("a document without apiVersion and kind");
    }
    let name = name_of(&v);
    if kind != "List" && name.is_empty() {
        bail!("{kind}: metadata.name is required");
    }
    let what = format!("{kind} {name}");
    let d = match (api.as_str(), kind.as_str()) {
        (_, "List") => {
            let items = v
                .get("items")
                .and_then(|i| i.as_sequence())
                .cloned()
                .unwrap_or_default();
            for i in items {
                doc(i, out)?;
            }
            return Ok(());
        }
        ("v1", "Namespace") => Doc::Namespace(Box::new(typed(v, &what)?)),
        ("v1", "Pod") => Doc::Pod(Box::new(typed(v, &what)?)),
        ("v1", "Service") => Doc::Service(Box::new(typed(v, &what)?)),
        ("networking.k8s.io/v1", "NetworkPolicy") => Doc::NetworkPolicy(Box::new(typed(v, &what)?)),
        ("networking.k8s.io/v1", "Ingress") => Doc::Ingress(Box::new(typed(v, &what)?)),
        ("v1", "Node") => Doc::Node(Box::new(typed(v, &what)?)),
        _ => Doc::Other(kind, name),
    };
    out.push(d);
    Ok(())
}

/// The documents of one YAML or JSON text (`---`-separated).
pub fn parse(text: &str) -> Result<Vec<Doc>> {
    let mut out = Vec::new();
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = serde_yaml::Value::deserialize(d).with_context(|| format!("document {}", i + 1))?;
        doc(v, &mut out).with_context(|| format!("document {}", i + 1))?;
    }
    Ok(out)
}

/// The manifest files of a path: the file itself, or the `.yaml`, `.yml` and `.json`
/// files of a directory (not recursive), in name order.
pub fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The documents of a file or directory, or of standard input for `-`.
pub fn read(path: &Path) -> Result<Vec<Doc>> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading standard input")?;
        return parse(&text).context("standard input");
    }
    let mut out = Vec::new();
    for f in files(path)? {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        out.extend(parse(&text).with_context(|| format!("in {}", f.display()))?);
    }
    Ok(out)
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Cluster {
    /// Creates or replaces each document's object (namespaced objects without a
    /// namespace go to `default`); returns the kinds left out.
    pub fn apply(&mut self, docs: Vec<Doc>) -> Vec<String> {
        let mut skipped = Vec::new();
        for d in docs {
            match d {
                Doc::Namespace(n) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    self.namespaces.insert(name, *n);
                }
                Doc::Pod(mut p) => {
                    let k = key(&p.metadata);
                    p.metadata.namespace = Some(k.0.clone());
                    self.pods.insert(k, *p);
                }
                Doc::Service(mut s) => {
                    let k = key(&s.metadata);
                    s.metadata.namespace = Some(k.0.clone());
                    self.node_ports(&k, &mut s);
                    self.services.insert(k, *s);
                }
                Doc::NetworkPolicy(mut n) => {
                    let k = key(&n.metadata);
                    n.metadata.namespace = Some(k.0.clone());
                    self.network_policies.insert(k, *n);
                }
                Doc::Ingress(mut i) => {
                    let k = key(&i.metadata);
                    i.metadata.namespace = Some(k.0.clone());
                    self.ingresses.insert(k, *i);
                }
                Doc::Node(n) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    self.nodes.insert(name, *n);
                }
                other @ Doc::Other(..) => skipped.push(other.describe()),
            }
        }
        skipped
    }

    /// Node ports as the API server assigns them: a NodePort or LoadBalancer Service's
    /// port without one keeps the one it had (same port and protocol), else gets the
    /// lowest free one of 30000-32767 (none when all are taken).
    fn node_ports(&self, k: &(String, String), s: &mut Service) {
        let Some(spec) = s.spec.as_mut() else { return };
        if !matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
            return;
        }
        let before = self.services.get(k).and_then(|o| o.spec.as_ref());
        let mut taken: std::collections::BTreeSet<i32> = self
            .services
            .iter()
            .filter(|(other, _)| *other != k)
            .flat_map(|(_, o)| o.spec.iter().flat_map(|s| s.ports.iter().flatten()))
            .filter_map(|p| p.node_port)
            .collect();
        taken.extend(spec.ports.iter().flatten().filter_map(|p| p.node_port));
        for p in spec
            .ports
            .iter_mut()
            .flatten()
            .filter(|p| p.node_port.is_none())
        {
            let kept = before
                .and_then(|b| {
                    b.ports.iter().flatten().find(|o| {
                        o.port == p.port && o.protocol == p.protocol && o.node_port.is_some()
                    })
                })
                .and_then(|o| o.node_port)
                .filter(|n| !taken.contains(n));
            p.node_port = kept.or_else(|| {
                crate::kinds::NODE_PORTS
                    .filter_map(|n| i32::try_from(n).ok())
                    .find(|n| !taken.contains(n))
            });
            taken.extend(p.node_port);
        }
    }

    /// Removes each document's object; deleting a namespace deletes what is in it.
    pub fn delete(&mut self, docs: &[Doc]) {
        for d in docs {
            match d {
                Doc::Namespace(n) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    self.namespaces.remove(&name);
                    self.pods.retain(|(ns, _), _| *ns != name);
                    self.services.retain(|(ns, _), _| *ns != name);
                    self.network_policies.retain(|(ns, _), _| *ns != name);
                    self.ingresses.retain(|(ns, _), _| *ns != name);
                }
                Doc::Pod(p) => {
                    self.pods.remove(&key(&p.metadata));
                }
                Doc::Service(s) => {
                    self.services.remove(&key(&s.metadata));
                }
                Doc::NetworkPolicy(n) => {
                    self.network_policies.remove(&key(&n.metadata));
                }
                Doc::Ingress(i) => {
                    self.ingresses.remove(&key(&i.metadata));
                }
                Doc::Node(n) => {
                    self.nodes
                        .remove(n.metadata.name.as_deref().unwrap_or_default());
                }
                Doc::Other(..) => {}
            }
        }
    }

    /// Every object as one YAML stream (what `vrlab` keeps between commands).
    pub fn to_yaml(&self) -> Result<String> {
        let mut out = String::new();
        let mut put = |kind: &str, api: &str, v: serde_json::Value| -> Result<()> {
            let mut v = v;
            v["kind"] = kind.into();
            v["apiVersion"] = api.into();
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&v)?);
            Ok(())
        };
        for n in self.namespaces.values() {
            put("Namespace", "v1", serde_json::to_value(n)?)?;
        }
        for p in self.pods.values() {
            put("Pod", "v1", serde_json::to_value(p)?)?;
        }
        for s in self.services.values() {
            put("Service", "v1", serde_json::to_value(s)?)?;
        }
        for n in self.network_policies.values() {
            put(
                "NetworkPolicy",
                "networking.k8s.io/v1",
                serde_json::to_value(n)?,
            )?;
        }
        for i in self.ingresses.values() {
            put("Ingress", "networking.k8s.io/v1", serde_json::to_value(i)?)?;
        }
        for n in self.nodes.values() {
            put("Node", "v1", serde_json::to_value(n)?)?;
        }
        Ok(out)
    }
}
