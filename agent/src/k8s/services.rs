//! Services -> native load balancers, as Contrail's kube-manager lays them out: a
//! loadbalancer per Service (its VIP the Service's clusterIP, or one the agent allocates,
//! in the namespace's service network), a listener and a pool per port, and a member per
//! ready pod the selector selects, at the pod's address and the port's target port (a
//! named target port resolved on each pod). The agent turns them into a service nexthop:
//! ECMP over the members at the source vrouter, the destination translated to the chosen
//! pod and target port. Members follow the pods (and their labels) on every translation;
//! a pod whose address the agent has not assigned yet joins on the next one. External
//! addresses (LoadBalancer, spec.externalIPs) are floating IPs of the public pool that
//! refer to the load balancer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;
use super::objects::{Event, Names, Out, PodPlacement, Underlay, r, uuid_for};
use crate::kinds::Kind;
use crate::proto::{self, object};

fn ready(pod: &Pod) -> bool {
    !pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "False")
}

/// The target port of a Service port on one pod.
fn target(port: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod) -> Option<u16> {
    let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into());
    match &port.target_port {
        None => u16::try_from(port.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.clone().unwrap_or_else(|| "TCP".into()) == proto
            })
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Whether kube-manager makes load-balancer objects for a Service at all.
fn translated(ns: &str, spec: &k8s_openapi::api::core::v1::ServiceSpec) -> bool {
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    ns != "kube-system" && kind != "ExternalName" && spec.cluster_ip.as_deref() != Some("None")
}

/// Which Service each external IP belongs to: the first to claim it, by creation time
/// (Services without one after those with one), then namespace and name. A later
/// claimant gets an event, and the address stays with its owner whatever the order in
/// which objects are listed or synced.
fn external_ip_owners(cluster: &Cluster) -> BTreeMap<std::net::IpAddr, String> {
    let mut by_age: Vec<_> = cluster
        .services
        .iter()
        .filter_map(|((ns, name), svc)| {
            let spec = svc.spec.as_ref().filter(|s| translated(ns, s))?;
            let created = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
            Some(((created.is_none(), created, ns, name), spec))
        })
        .collect();
    by_age.sort_by(|a, b| a.0.cmp(&b.0));
    let mut owners = BTreeMap::new();
    for ((_, _, ns, name), spec) in by_age {
        for a in spec.external_ips.iter().flatten() {
            if let Ok(ip) = a.parse() {
                owners.entry(ip).or_insert_with(|| format!("{ns}/{name}"));
            }
        }
    }
    owners
}

/// A Service's external addresses: floating IPs of the public pool on its load balancer,
/// each of spec.externalIPs that belongs to it ([`external_ip_owners`]), or one the
/// agent allocates for a LoadBalancer Service that names none.
fn external_ips(
    out: &mut Out,
    n: &Names<'_>,
    (what, kind, spec): (&str, &str, &k8s_openapi::api::core::v1::ServiceSpec),
    (lb, me, owners): (&[String], &str, &BTreeMap<std::net::IpAddr, String>),
    underlay: &Underlay<'_>,
    events: &mut Vec<Event>,
) {
    let wanted: Vec<String> = spec.external_ips.clone().unwrap_or_default();
    if wanted.is_empty() && kind != "LoadBalancer" {
        return;
    }
    let event = |events: &mut Vec<Event>, reason: &str, message: String| {
        events.push(Event {
            object: what.to_string(),
            reason: reason.into(),
            message,
        })
    };
    let Some(pool) = n.c.public_fip_pool.as_ref() else {
        event(
            events,
            "NoFloatingIpPool",
            "external IPs need public_fip_pool in [KUBERNETES]".into(),
        );
        return;
    };
    if !underlay.networks.contains(&crate::kinds::fq_string(pool)) {
        event(
            events,
            "FloatingIpPoolNotFound",
            format!(
                "floating-IP pool {} does not exist",
                crate::kinds::fq_string(pool)
            ),
        );
        return;
    }
    let leaf = lb.last().cloned().unwrap_or_default();
    let mut addresses: Vec<(String, String)> = Vec::new();
    if wanted.is_empty() {
        addresses.push((format!("{leaf}__ext"), String::new()));
    }
    for a in wanted {
        let public = |ip: std::net::IpAddr| {
            underlay.public_subnets.iter().any(|s| {
                crate::store::Net::parse(s).is_ok_and(|net| net.contains(ip) && net.usable(ip))
            })
        };
        match a.parse::<std::net::IpAddr>() {
            Ok(ip) if owners.get(&ip).is_some_and(|o| o != me) => event(
                events,
                "ExternalIPTaken",
                format!(
                    "{ip} belongs to Service {}, which claimed it first",
                    owners[&ip]
                ),
            ),
            Ok(ip) if !public(ip) => event(
                events,
                "ExternalIPNotInPool",
                format!(
                    "{ip} is not an address of the pool's network ({})",
                    underlay.public_subnets.join(", ")
                ),
            ),
            Ok(ip) => addresses.push((
                format!("{leaf}__{}", ip.to_string().replace(':', "-")),
                ip.to_string(),
            )),
            Err(_) => event(
                events,
                "InvalidExternalIP",
                format!("{a:?} is not an address"),
            ),
        }
    }
    for (name, address) in addresses {
        floating_ip(out, pool, name, address, lb);
    }
}

/// A floating IP of `pool` (empty address: the agent allocates one) on a load balancer.
pub(super) fn floating_ip(
    out: &mut Out,
    pool: &[String],
    name: String,
    address: String,
    lb: &[String],
) {
    let fq: Vec<String> = pool.iter().cloned().chain([name]).collect();
    out.put(
        Kind::FloatingIp,
        fq.clone(),
        object::Kind::FloatingIp(proto::FloatingIp {
            uuid: uuid_for(Kind::FloatingIp, &fq),
            fq_name: fq,
            floating_ip_address: address,
            virtual_machine_interface_refs: vec![],
            fixed_ip_address: String::new(),
            loadbalancer_ref: Some(r(Kind::Loadbalancer, lb)),
        }),
    );
}

/// A load balancer: its VIP (empty: the agent allocates one) in `network`, its provider,
/// and the interfaces of its instances (HAProxy's; none for native ones).
pub(super) fn put_loadbalancer(
    out: &mut Out,
    fq: &[String],
    (vip, network): (String, &[String]),
    provider: &str,
    interfaces: Vec<proto::Ref>,
) {
    out.put(
        Kind::Loadbalancer,
        fq.to_vec(),
        object::Kind::Loadbalancer(proto::Loadbalancer {
            uuid: uuid_for(Kind::Loadbalancer, fq),
            fq_name: fq.to_vec(),
            vip_address: vip,
            virtual_network_ref: Some(r(Kind::VirtualNetwork, network)),
            provider: provider.into(),
            virtual_machine_interface_refs: interfaces,
        }),
    );
}

/// A listener of load balancer `lb`.
pub(super) fn put_listener(
    out: &mut Out,
    fq: &[String],
    lb: &[String],
    (protocol, port, node_port): (&str, u32, u32),
) {
    out.put(
        Kind::LoadbalancerListener,
        fq.to_vec(),
        object::Kind::LoadbalancerListener(proto::LoadbalancerListener {
            uuid: uuid_for(Kind::LoadbalancerListener, fq),
            fq_name: fq.to_vec(),
            loadbalancer_ref: Some(r(Kind::Loadbalancer, lb)),
            protocol: protocol.into(),
            protocol_port: port,
            node_port,
        }),
    );
}

/// A pool of `listener`; `http`: the requests it serves (host, path, exact), for HAProxy.
pub(super) fn put_pool(
    out: &mut Out,
    fq: &[String],
    listener: &[String],
    (protocol, method): (&str, &str),
    http: (String, String, bool),
) {
    let (host, path, path_exact) = http;
    out.put(
        Kind::LoadbalancerPool,
        fq.to_vec(),
        object::Kind::LoadbalancerPool(proto::LoadbalancerPool {
            uuid: uuid_for(Kind::LoadbalancerPool, fq),
            fq_name: fq.to_vec(),
            loadbalancer_listener_ref: Some(r(Kind::LoadbalancerListener, listener)),
            protocol: protocol.into(),
            loadbalancer_method: method.into(),
            session_persistence: String::new(),
            host,
            path,
            path_exact,
        }),
    );
}

/// A member of a pool (its FQ name: the pool's and `leaf`).
pub(super) fn put_member(
    out: &mut Out,
    pool: &[String],
    leaf: String,
    (address, port): (String, u16),
) {
    let member: Vec<String> = pool.iter().cloned().chain([leaf]).collect();
    out.put(
        Kind::LoadbalancerMember,
        member.clone(),
        object::Kind::LoadbalancerMember(proto::LoadbalancerMember {
            uuid: uuid_for(Kind::LoadbalancerMember, &member),
            fq_name: member,
            address,
            protocol_port: u32::from(port),
            weight: 1,
        }),
    );
}

/// A NodePort or LoadBalancer Service port's node port (the API server assigns it; a
/// NodePort Service's port without one is an event, a LoadBalancer's may have none).
fn node_port(
    what: &str,
    kind: &str,
    port: &k8s_openapi::api::core::v1::ServicePort,
    events: &mut Vec<Event>,
) -> u32 {
    if !matches!(kind, "NodePort" | "LoadBalancer") {
        return 0;
    }
    let range = crate::kinds::NODE_PORTS;
    match port.node_port.and_then(|p| u32::try_from(p).ok()) {
        Some(p) if range.contains(&p) => p,
        Some(p) if p != 0 => {
            events.push(Event {
                object: what.to_string(),
                reason: "NodePortOutOfRange".into(),
                message: format!(
                    "port {}: nodePort {p} is outside {}-{}; not served on the nodes",
                    port.port,
                    range.start(),
                    range.end()
                ),
            });
            0
        }
        _ if kind == "LoadBalancer" => 0,
        _ => {
            events.push(Event {
                object: what.to_string(),
                reason: "NodePortNotAssigned".into(),
                message: format!("port {}: no nodePort", port.port),
            });
            0
        }
    }
}

/// The load-balancer objects of the cluster's Services.
pub(super) fn translate(
    out: &mut Out,
    n: &Names<'_>,
    cluster: &Cluster,
    placed: &[PodPlacement],
    network_of: impl Fn(&str) -> Vec<String>,
    underlay: &Underlay<'_>,
    events: &mut Vec<Event>,
) {
    let owners = external_ip_owners(cluster);
    for ((ns, name), svc) in &cluster.services {
        let Some(spec) = svc.spec.as_ref().filter(|s| translated(ns, s)) else {
            continue;
        };
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
        let what = format!("Service {ns}/{name}");
        if !cluster.namespaces.contains_key(ns) {
            events.push(Event::namespace_not_found(what, ns));
            continue;
        }
        let project = n.project(ns);
        let leaf = n.service(ns, name);
        let lb: Vec<String> = project.iter().cloned().chain([leaf.clone()]).collect();
        put_loadbalancer(
            out,
            &lb,
            (cluster_ip.to_string(), &network_of(ns)),
            "native",
            vec![],
        );
        let me = format!("{ns}/{name}");
        external_ips(
            out,
            n,
            (&what, kind, spec),
            (&lb, &me, &owners),
            underlay,
            events,
        );
        // The pods behind it: selected, ready, with an interface and an address.
        let backends: Vec<(&Pod, &PodPlacement)> = match &spec.selector {
            Some(sel) if !sel.is_empty() => placed
                .iter()
                .filter(|p| p.namespace == *ns)
                .filter_map(|p| {
                    let pod = cluster.pods.get(&(p.namespace.clone(), p.name.clone()))?;
                    let labels = pod.metadata.labels.clone().unwrap_or_default();
                    (sel.iter().all(|(k, v)| labels.get(k) == Some(v)) && ready(pod))
                        .then_some((pod, p))
                })
                .collect(),
            _ => vec![],
        };
        let method = if spec.session_affinity.as_deref() == Some("ClientIP") {
            "SOURCE_IP"
        } else {
            "ROUND_ROBIN"
        };
        for (i, port) in spec.ports.iter().flatten().enumerate() {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            if !matches!(protocol.as_str(), "TCP" | "UDP") {
                events.push(Event {
                    object: what.clone(),
                    reason: "UnsupportedProtocol".into(),
                    message: format!("port {}: {protocol} is not load balanced", port.port),
                });
                continue;
            }
            let under = |suffix: String| -> Vec<String> {
                project.iter().cloned().chain([suffix]).collect()
            };
            let listener = under(format!("{leaf}__{i}"));
            let np = node_port(&what, kind, port, events);
            let number = u32::try_from(port.port).unwrap_or(0);
            put_listener(out, &listener, &lb, (&protocol, number, np));
            let pool = under(format!("{leaf}__{i}__pool"));
            put_pool(
                out,
                &pool,
                &listener,
                (&protocol, method),
                Default::default(),
            );
            for (pod, p) in &backends {
                let leaf = n.pod_leaf(&p.namespace, &p.name);
                let (Some(addr), Some(tp)) = (
                    underlay.addresses.get(std::slice::from_ref(&leaf)),
                    target(port, pod),
                ) else {
                    continue;
                };
                put_member(out, &pool, leaf, (addr.clone(), tp));
            }
        }
    }
}
