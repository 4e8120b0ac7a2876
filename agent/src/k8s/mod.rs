//! kube-manager: Kubernetes objects -> VNC objects, kept in sync through the agent's API.
//!
//! - [`KubeConfig`]: the `[KUBERNETES]` section (cluster name, subnets, cluster project /
//!   network, ip-fabric options), read from a file and overridden by flags.
//! - [`Cluster`]: the Kubernetes objects kube-manager sees (namespaces, pods, services,
//!   network policies), filled from manifests ([`manifest`]) with `kubectl apply`
//!   semantics.
//! - [`translate`]: a pure function from the cluster to the VNC objects it stands for,
//!   with the events of objects that could not be translated (a missing custom network).
//! - [`netpol`]: NetworkPolicy -> application policy sets, firewall policies and rules.
//! - [`sync`]: diff against what the agent holds of kube-manager's objects; one
//!   all-or-nothing batch of creates, updates and deletes in dependency order.

pub mod ingress;
pub mod manifest;
pub mod netpol;
pub mod objects;
pub mod services;
pub mod sync;
pub mod translate;
pub mod watch;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};

/// The `[KUBERNETES]` section of Contrail's `contrail-kubernetes.conf`, as far as the
/// translation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeConfig {
    /// Prefix of every object kube-manager creates (projects are `<cluster>-<namespace>`).
    pub cluster_name: String,
    /// Subnets of the pod ipam (a flat subnet shared by every pod network).
    pub pod_subnets: Vec<String>,
    /// Subnets of the service ipam.
    pub service_subnets: Vec<String>,
    /// Subnets of the ip-fabric ipam (pod networks with ip-fabric forwarding).
    pub ip_fabric_subnets: Vec<String>,
    /// One project for every namespace (`domain:project`) instead of one each.
    pub cluster_project: Option<String>,
    /// An existing network (FQ name) to use as the cluster's pod network.
    pub cluster_network: Option<String>,
    /// Pod networks in the underlay (no encapsulation) by default.
    pub ip_fabric_forwarding: bool,
    /// Source NAT to the node's address for pods by default.
    pub ip_fabric_snat: bool,
    /// Nested mode: the cluster runs in VMs whose interfaces another agent owns; pods get
    /// sub-interfaces of the VM's interface.
    pub nested_mode: bool,
    /// The floating-IP pool (FQ name: domain, project, network, pool) that LoadBalancer
    /// Services' external IPs come from.
    pub public_fip_pool: Option<Vec<String>>,
    /// Networks (FQ names, or `domain:project:*` for a project's) that any namespace may
    /// name in `opencontrail.org/network`; a namespace may always name its own project's.
    pub shared_networks: Vec<String>,
}

impl Default for KubeConfig {
    fn default() -> Self {
        KubeConfig {
            cluster_name: "k8s".into(),
            pod_subnets: vec!["10.32.0.0/12".into()],
            service_subnets: vec!["10.96.0.0/12".into()],
            ip_fabric_subnets: vec!["10.64.0.0/12".into()],
            cluster_project: None,
            cluster_network: None,
            ip_fabric_forwarding: false,
            ip_fabric_snat: false,
            nested_mode: false,
            public_fip_pool: None,
            shared_networks: Vec::new(),
        }
    }
}

/// Values as Contrail writes them: `['10.32.0.0/12', ...]`, or a comma-separated list.
fn list_value(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn bool_value(key: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        other => bail!("{key}: {other:?} is not a boolean"),
    }
}

impl KubeConfig {
    /// Whether the operator shares network `fq` with every namespace.
    pub fn shares(&self, fq: &[String]) -> bool {
        let name = fq.join(":");
        self.shared_networks
            .iter()
            .any(|s| match s.strip_suffix(":*") {
                Some(project) => fq.len() == 3 && fq[..2].join(":") == project,
                None => *s == name,
            })
    }

    /// Reads the `[KUBERNETES]` section of an INI file. Written here rather than with an
    /// INI crate because Contrail's values are Python lists (`['a', 'b']`), which those
    /// crates hand back as strings anyway; unknown keys of the section are errors, other
    /// sections are ignored.
    pub fn parse(text: &str) -> Result<KubeConfig> {
        let mut c = KubeConfig::default();
        let mut in_section = false;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                in_section = line.eq_ignore_ascii_case("[KUBERNETES]");
                continue;
            }
            if !in_section {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                bail!("line {}: expected key = value: {raw:?}", n + 1);
            };
            let (k, v) = (k.trim(), v.trim());
            let s = || v.trim_matches(|c| c == '\'' || c == '"').to_string();
            match k {
                "cluster_name" => c.cluster_name = s(),
                "pod_subnets" => c.pod_subnets = list_value(v),
                "service_subnets" => c.service_subnets = list_value(v),
                "ip_fabric_subnets" => c.ip_fabric_subnets = list_value(v),
                "cluster_project" => c.cluster_project = fq_setting(v),
                "cluster_network" => c.cluster_network = fq_setting(v),
                "ip_fabric_forwarding" => c.ip_fabric_forwarding = bool_value(k, v)?,
                "ip_fabric_snat" => c.ip_fabric_snat = bool_value(k, v)?,
                "nested_mode" => c.nested_mode = bool_value(k, v)?,
                "shared_networks" => c.shared_networks = list_value(v),
                "public_fip_pool" => {
                    c.public_fip_pool = Some(
                        fip_pool_setting(v)
                            .with_context(|| format!("line {}: public_fip_pool {v:?}", n + 1))?,
                    )
                }
                other => bail!("line {}: unknown key {other:?} in [KUBERNETES]", n + 1),
            }
        }
        c.check()?;
        Ok(c)
    }

    /// Reads a file (see [`KubeConfig::parse`]).
    pub fn load(path: &Path) -> Result<KubeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        KubeConfig::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Refuses what cannot work: an empty or odd cluster name, no pod or service subnet,
    /// a subnet that is not an address/length.
    pub fn check(&self) -> Result<()> {
        if self.cluster_name.is_empty()
            || !self
                .cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            bail!(
                "cluster_name {:?}: letters, digits and '-' only",
                self.cluster_name
            );
        }
        for (what, subnets) in [
            ("pod_subnets", &self.pod_subnets),
            ("service_subnets", &self.service_subnets),
            ("ip_fabric_subnets", &self.ip_fabric_subnets),
        ] {
            if subnets.is_empty() && what != "ip_fabric_subnets" {
                bail!("{what}: at least one subnet");
            }
            for s in subnets {
                // The store's own prefix parse: what passes here passes there.
                if let Err(e) = crate::store::Net::parse(s) {
                    bail!("{what}: {s:?} is not ADDRESS/LENGTH: {e}");
                }
            }
        }
        Ok(())
    }
}

/// `{'domain': 'd', 'project': 'p', 'name': 'n'}` (Contrail's form) or `d:p:n`.
fn fq_setting(v: &str) -> Option<String> {
    let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
    if v.is_empty() {
        return None;
    }
    let fq = if v.starts_with('{') {
        json_fq(v, false)
    } else {
        fq_annotation(v)
    };
    Some(fq.map_or_else(|| v.to_string(), |fq| fq.join(":")))
}

/// A floating-IP pool as Contrail writes it, `{'domain': .., 'project': .., 'network': ..,
/// 'name': ..}`, or `domain:project:network:pool`.
fn fip_pool_setting(v: &str) -> Result<Vec<String>> {
    let v = v.trim();
    let fq: Vec<String> = if v.starts_with('{') {
        let j: serde_json::Value =
            serde_json::from_str(&v.replace('\'', "\"")).context("not a dictionary")?;
        ["domain", "project", "network", "name"]
            .iter()
            .map(|k| {
                j.get(*k)
                    .and_then(|x| x.as_str())
                    .map(str::to_string)
                    .with_context(|| format!("no {k:?}"))
            })
            .collect::<Result<_>>()?
    } else {
        v.trim_matches(|c| c == '\'' || c == '"')
            .split(':')
            .map(str::to_string)
            .collect()
    };
    if fq.len() != 4 || fq.iter().any(|p| p.is_empty() || p.contains(':')) {
        bail!("domain, project, network and pool names are needed");
    }
    Ok(fq)
}

/// `{"domain": .., "project": .., "name": ..}` as an FQ name; `name` only if `leaf`.
fn json_fq(v: &str, leaf: bool) -> Option<Vec<String>> {
    let j: serde_json::Value = serde_json::from_str(&v.replace('\'', "\"")).ok()?;
    let part = |k: &str| j.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let mut out = Vec::new();
    if let Some(d) = part("domain") {
        out.push(d);
    }
    if let Some(p) = part("project") {
        out.push(p);
    }
    if leaf {
        out.push(part("name")?);
    }
    (out.len() >= 2).then_some(out)
}

/// A network named in an annotation: Contrail's JSON form
/// (`{"domain": "default-domain", "project": "admin", "name": "vn1"}`) or an FQ name
/// joined with ':'. `None` if it is neither.
pub fn fq_annotation(v: &str) -> Option<Vec<String>> {
    let v = v.trim();
    if v.starts_with('{') {
        return json_fq(v, true);
    }
    let parts: Vec<String> = v.split(':').map(str::to_string).collect();
    (parts.len() >= 2 && parts.iter().all(|p| !p.is_empty())).then_some(parts)
}

/// The Kubernetes objects kube-manager translates, by namespace and name.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods by (namespace, name).
    pub pods: BTreeMap<(String, String), Pod>,
    /// Services by (namespace, name).
    pub services: BTreeMap<(String, String), Service>,
    /// Network policies by (namespace, name).
    pub network_policies: BTreeMap<(String, String), NetworkPolicy>,
    /// Ingresses by (namespace, name).
    pub ingresses: BTreeMap<(String, String), Ingress>,
    /// The cluster's nodes by name (where an ingress's HAProxy instances run).
    pub nodes: BTreeMap<String, Node>,
}

/// Annotation: isolate a namespace's pods (and by default its services).
pub const ISOLATION: &str = "opencontrail.org/isolation";
/// Annotation: `"false"` leaves an isolated namespace's services reachable by others.
pub const ISOLATION_SERVICE: &str = "opencontrail.org/isolation.service";
/// Annotation: the network a pod, or every pod of a namespace, goes into.
pub const NETWORK: &str = "opencontrail.org/network";
/// Annotation: a namespace's pod network in the underlay.
pub const IP_FABRIC_FORWARDING: &str = "opencontrail.org/ip_fabric_forwarding";
/// Annotation: a namespace's pods reach outside through the node's address.
pub const IP_FABRIC_SNAT: &str = "opencontrail.org/ip_fabric_snat";
/// Annotation: the ingress controller an Ingress is for; kube-manager takes those
/// without one or with `opencontrail`.
pub const INGRESS_CLASS: &str = "kubernetes.io/ingress.class";
