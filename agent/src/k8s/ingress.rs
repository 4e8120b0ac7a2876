//! Ingresses -> HAProxy load balancers, as Contrail's kube-manager lays them out: a
//! loadbalancer per Ingress (provider `opencontrail`, its VIP allocated by the agent in
//! the namespace's pod network or the network the Ingress's `opencontrail.org/network`
//! names), an HTTP listener on port 80, a pool per rule path (host, path, exact or
//! prefix) and one for the default backend, each with one member: the backend Service's
//! address and port (the Service's own native load balancer spreads the connections over
//! its pods). Two interfaces hold the VIP, one per HAProxy instance, on two of the
//! cluster's nodes (the same node twice in a one-node cluster): the first with the higher
//! local preference is the active one, the second its standby. Each node's
//! `haproxy-manager` runs the instances bound to it. With a public floating-IP pool the
//! Ingress also gets an external address. Ingresses of another controller (an
//! `kubernetes.io/ingress.class` or `spec.ingressClassName` other than `opencontrail`)
//! are left to it.

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::objects::{Event, Names, Out, Underlay, r, uuid_for};
use super::services::{put_listener, put_loadbalancer, put_member, put_pool};
use super::{Cluster, INGRESS_CLASS};
use crate::kinds::{Kind, fq_string};
use crate::proto::{self, object};

/// The class kube-manager serves.
pub const CLASS: &str = "opencontrail";
/// Local preference of the active instance's interface (the standby has the default).
pub const ACTIVE_PREFERENCE: u32 = 200;
/// HAProxy instances per Ingress.
pub const INSTANCES: usize = 2;

/// Whether an Ingress is kube-manager's to serve.
pub fn ours(ing: &Ingress) -> bool {
    let class = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INGRESS_CLASS))
        .cloned()
        .or_else(|| ing.spec.as_ref().and_then(|s| s.ingress_class_name.clone()));
    class.is_none_or(|c| c == CLASS)
}

/// A stable rank of the nodes for one Ingress (rendezvous hashing), so that its
/// instances stay where they are while the nodes they run on stay.
fn rank(ingress: &str, node: &str) -> u64 {
    crate::name_hash(&format!("{ingress}\0{node}"))
}

/// The nodes an Ingress's instances run on, active first.
pub fn placement<'a>(ns: &str, name: &str, nodes: impl Iterator<Item = &'a String>) -> Vec<String> {
    let key = format!("{ns}/{name}");
    let mut v: Vec<&String> = nodes.collect();
    v.sort_by_key(|n| (std::cmp::Reverse(rank(&key, n)), n.as_str()));
    if v.is_empty() {
        return vec![];
    }
    (0..INSTANCES).map(|i| v[i % v.len()].clone()).collect()
}

/// The FQ name of the interface of an Ingress's `i`th instance (0: the active one).
pub fn instance_interface(lb: &[String], i: usize) -> Vec<String> {
    let mut v = lb.to_vec();
    if let Some(leaf) = v.last_mut() {
        leaf.push_str(&format!("__haproxy-{i}"));
    }
    v
}

/// The address and port of a backend Service, if it has them yet.
fn backend(
    what: &str,
    ns: &str,
    b: &IngressBackend,
    (n, cluster, underlay): (&Names<'_>, &Cluster, &Underlay<'_>),
    events: &mut Vec<Event>,
) -> Option<(String, u16)> {
    let mut event = |reason: &str, message: String| {
        events.push(Event {
            object: what.to_string(),
            reason: reason.into(),
            message,
        })
    };
    let Some(svc) = &b.service else {
        event(
            "UnsupportedBackend",
            "only Service backends are served".into(),
        );
        return None;
    };
    let Some(spec) = cluster
        .services
        .get(&(ns.to_string(), svc.name.clone()))
        .and_then(|s| s.spec.as_ref())
    else {
        event(
            "BackendServiceNotFound",
            format!("Service {ns}/{} does not exist", svc.name),
        );
        return None;
    };
    let ports = spec.ports.iter().flatten();
    let port = match svc.port.as_ref() {
        Some(p) if p.number.is_some() => p.number,
        Some(p) => ports
            .clone()
            .find(|sp| sp.name.is_some() && sp.name == p.name)
            .map(|sp| sp.port),
        None => ports.clone().next().map(|sp| sp.port),
    }
    .and_then(|p| u16::try_from(p).ok());
    let Some(port) = port.filter(|p| *p > 0) else {
        event(
            "BackendPortNotFound",
            format!("Service {ns}/{} has no such port", svc.name),
        );
        return None;
    };
    let lb: Vec<String> = n
        .project(ns)
        .into_iter()
        .chain([n.service(ns, &svc.name)])
        .collect();
    let address = spec
        .cluster_ip
        .clone()
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        .or_else(|| underlay.addresses.get(&lb).cloned())?;
    Some((address, port))
}

/// The load-balancer objects of the cluster's Ingresses. `network` gives the network of
/// an Ingress (its annotation's, else its namespace's pod network) or why it has none.
pub(super) fn translate(
    out: &mut Out,
    n: &Names<'_>,
    cluster: &Cluster,
    network: impl Fn(&str, &str, &ObjectMeta) -> Result<Vec<String>, Event>,
    underlay: &Underlay<'_>,
    events: &mut Vec<Event>,
) {
    for ((ns, name), ing) in &cluster.ingresses {
        if ns == "kube-system" || !ours(ing) {
            continue;
        }
        let what = format!("Ingress {ns}/{name}");
        if !cluster.namespaces.contains_key(ns) {
            events.push(Event::namespace_not_found(what, ns));
            continue;
        }
        let net = match network(&what, ns, &ing.metadata) {
            Ok(fq) => fq,
            Err(e) => {
                events.push(e);
                continue;
            }
        };
        let hosts = placement(ns, name, cluster.nodes.keys());
        if hosts.is_empty() {
            events.push(Event {
                object: what,
                reason: "NoNodes".into(),
                message: "the cluster has no node to run HAProxy on".into(),
            });
            continue;
        }
        let spec = ing.spec.clone().unwrap_or_default();
        if spec.tls.as_ref().is_some_and(|t| !t.is_empty()) {
            events.push(Event {
                object: what.clone(),
                reason: "TlsNotSupported".into(),
                message: "served over HTTP only; the tls section is left out".into(),
            });
        }
        let project = n.project(ns);
        let leaf = n.ingress(ns, name);
        let under = |suffix: &str| -> Vec<String> {
            project
                .iter()
                .cloned()
                .chain([format!("{leaf}{suffix}")])
                .collect()
        };
        let lb = under("");
        let mut vmis = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let vmi = instance_interface(&lb, i);
            out.put(
                Kind::VirtualMachineInterface,
                vmi.clone(),
                object::Kind::VirtualMachineInterface(proto::VirtualMachineInterface {
                    uuid: uuid_for(Kind::VirtualMachineInterface, &vmi),
                    fq_name: vmi.clone(),
                    virtual_network_ref: Some(r(Kind::VirtualNetwork, &net)),
                    binding_host: host.clone(),
                    local_preference: if i == 0 { ACTIVE_PREFERENCE } else { 0 },
                    ..Default::default()
                }),
            );
            vmis.push(r(Kind::VirtualMachineInterface, &vmi));
        }
        put_loadbalancer(out, &lb, (String::new(), &net), CLASS, vmis);
        let listener = under("__http");
        put_listener(out, &listener, &lb, ("HTTP", 80, 0));
        // (pool suffix, host, path, exact, backend)
        let mut rules: Vec<(String, String, String, bool, &IngressBackend)> = Vec::new();
        if let Some(b) = &spec.default_backend {
            rules.push(("__default".into(), String::new(), String::new(), false, b));
        }
        for (j, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.clone().unwrap_or_default();
            // Hosts and paths go into HAProxy's configuration: a bad one is this rule's
            // event, and the rest of the Ingress still applies.
            if let Some(Err(e)) = (!host.is_empty()).then(|| crate::lbaas::check_host(&host)) {
                events.push(Event {
                    object: what.clone(),
                    reason: "InvalidIngressHost".into(),
                    message: format!("rules[{j}]: {e}; the rule is left out"),
                });
                continue;
            }
            for (k, p) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
                let path = p.path.clone().unwrap_or_default();
                if let Some(Err(e)) = (!path.is_empty()).then(|| crate::lbaas::check_path(&path)) {
                    events.push(Event {
                        object: what.clone(),
                        reason: "InvalidIngressPath".into(),
                        message: format!("rules[{j}].http.paths[{k}]: {e}; the path is left out"),
                    });
                    continue;
                }
                rules.push((
                    format!("__{j}-{k}"),
                    host.clone(),
                    path,
                    p.path_type == "Exact",
                    &p.backend,
                ));
            }
        }
        for (suffix, host, path, exact, b) in rules {
            let pool = under(&suffix);
            put_pool(
                out,
                &pool,
                &listener,
                ("HTTP", "ROUND_ROBIN"),
                (host, path, exact),
            );
            // A rule whose Service is not there (yet) stays, answering 503; the member is
            // named like everything kube-manager owns (the cluster's prefix).
            if let Some(backend) = backend(&what, ns, b, (n, cluster, underlay), events) {
                put_member(out, &pool, format!("{leaf}__backend"), backend);
            }
        }
        // An external address from the public pool, where the cluster has one.
        if let Some(pool) = &n.c.public_fip_pool
            && underlay.networks.contains(&fq_string(pool))
        {
            super::services::floating_ip(out, pool, format!("{leaf}__ext"), String::new(), &lb);
        }
    }
}
