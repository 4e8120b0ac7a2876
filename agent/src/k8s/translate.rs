//! The cluster -> VNC objects, as Contrail's kube-manager lays them out:
//!
//! - every namespace is a project `<cluster>-<namespace>` (or the shared cluster project);
//! - default mode: one pod network and one service network for the cluster
//!   (`<cluster>-default-pod-network`, `<cluster>-default-service-network`, in project
//!   `<cluster>-default`), on flat-subnet ipams holding the configured pod and service
//!   subnets, with a network policy between the two;
//! - an isolated namespace (`opencontrail.org/isolation: "true"`) gets its own pod network
//!   and service network with a policy between them (the 5.0 design); one-way rules let
//!   its pods open connections to the cluster's pods and services while nobody outside
//!   opens one to them (networks are apart unless a policy joins them). With
//!   `opencontrail.org/isolation.service: "false"` its service network is reachable, one
//!   way, from the cluster's pods and from every other isolated namespace's pods; the
//!   client's network policy decides a service flow on the service address, so the
//!   backends need no opening of their own;
//! - a pod is a virtual-machine, an interface in its network (custom annotation, the
//!   namespace's, its isolated network, or the cluster's) and an instance-ip allocated
//!   there; its labels are tags (`label=<key>=<value>`) on the interface, with
//!   `namespace=<name>`;
//! - kube-system pods and host-network pods are in the underlay: nothing is made for them;
//! - network policies are firewall policies in two cluster-wide application policy sets
//!   ([`super::netpol`]).
//!
//! Names carry the cluster name, which is how [`super::sync`] knows its own objects.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::netpol::{self, PodView};
pub use super::objects::{DOMAIN, Event, ORDER, PodPlacement, Underlay, r, uuid_for};
use super::objects::{Exit, Names, Out};
use super::{
    Cluster, IP_FABRIC_FORWARDING, IP_FABRIC_SNAT, ISOLATION, ISOLATION_SERVICE, KubeConfig,
    NETWORK, fq_annotation,
};
use super::{ingress, services};
use crate::kinds::{Kind, fq_string};
use crate::oper::IP_FABRIC;
use crate::proto::{self, Object, object};

/// The translation of a cluster.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// The VNC objects, in dependency order.
    pub objects: Vec<Object>,
    /// Objects that could not be translated.
    pub events: Vec<Event>,
    /// The pods that have an interface.
    pub pods: Vec<PodPlacement>,
    /// Policies of kube-manager's to attach to networks it does not own (the ip-fabric
    /// network): (network, policy) FQ names.
    pub attachments: Vec<(Vec<String>, Vec<String>)>,
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn is_true(meta: &ObjectMeta, key: &str) -> bool {
    annotation(meta, key).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn is_false(meta: &ObjectMeta, key: &str) -> bool {
    annotation(meta, key).is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
}

/// A namespace's pod network: each of ip-fabric forwarding and SNAT from its annotation,
/// else the global option; forwarding wins (SNAT is ignored with it).
fn exit_of(cfg: &KubeConfig, meta: &ObjectMeta) -> Exit {
    let flag = |key: &str, global: bool| {
        if is_true(meta, key) {
            true
        } else if is_false(meta, key) {
            false
        } else {
            global
        }
    };
    if flag(IP_FABRIC_FORWARDING, cfg.ip_fabric_forwarding) {
        Exit::Forwarded
    } else if flag(IP_FABRIC_SNAT, cfg.ip_fabric_snat) {
        Exit::Snat
    } else {
        Exit::Overlay
    }
}

/// Passes everything between two networks, both ways.
fn pass_all(a: &[String], b: &[String]) -> proto::PolicyRule {
    proto::PolicyRule {
        direction: "<>".into(),
        ..one_way(a, b)
    }
}

/// Passes connections opened from network `a` to network `b`.
fn one_way(a: &[String], b: &[String]) -> proto::PolicyRule {
    proto::PolicyRule {
        direction: ">".into(),
        protocol: "any".into(),
        src_addresses: vec![proto::AddressType {
            virtual_network: fq_string(a),
            ..Default::default()
        }],
        dst_addresses: vec![proto::AddressType {
            virtual_network: fq_string(b),
            ..Default::default()
        }],
        action: "pass".into(),
        ..Default::default()
    }
}

/// The FQ name of the loadbalancer kube-manager makes for a Service.
pub fn service_interface(cfg: &KubeConfig, namespace: &str, service: &str) -> Vec<String> {
    let n = Names { c: cfg };
    n.under(&n.project(namespace), n.service(namespace, service))
}

/// The FQ name of the load balancer kube-manager makes for an Ingress.
pub fn ingress_loadbalancer(cfg: &KubeConfig, namespace: &str, ingress: &str) -> Vec<String> {
    let n = Names { c: cfg };
    n.under(&n.project(namespace), n.ingress(namespace, ingress))
}

/// The FQ name of the interface kube-manager makes for a pod (what the CNI plugin plugs).
pub fn pod_interface(cfg: &KubeConfig, namespace: &str, pod: &str) -> Vec<String> {
    let n = Names { c: cfg };
    n.under(&n.project(namespace), n.pod(namespace, pod))
}

/// An isolated namespace's networks.
pub(super) struct Isolated {
    pods: Vec<String>,
    svc: Vec<String>,
    /// The policies on its pod network and on its service network.
    on_pods: Vec<Vec<String>>,
    on_svc: Vec<Vec<String>>,
}

/// Translates the cluster. `existing_networks` are the FQ names (joined with ':') of the
/// networks the agent holds, for custom-network annotations.
pub fn translate(
    cfg: &KubeConfig,
    cluster: &Cluster,
    existing_networks: &BTreeSet<String>,
) -> Translation {
    translate_nested(cfg, cluster, existing_networks, &BTreeMap::new())
}

/// [`translate`] with, for nested mode, the interfaces of the VMs the cluster's nodes run
/// in: node address (a pod's `status.hostIP`) -> that VM interface's FQ name. In nested
/// mode a pod's interface is a sub-interface of its node's (the agent assigns it a VLAN
/// tag); a pod whose node has no interface there is an event.
pub fn translate_nested(
    cfg: &KubeConfig,
    cluster: &Cluster,
    existing_networks: &BTreeSet<String>,
    node_interfaces: &BTreeMap<String, Vec<String>>,
) -> Translation {
    translate_with(
        cfg,
        cluster,
        &Underlay {
            networks: existing_networks,
            node_interfaces,
            ..Underlay::default()
        },
    )
}

/// [`translate`] with everything it can take from the agent.
pub fn translate_with(cfg: &KubeConfig, cluster: &Cluster, underlay: &Underlay<'_>) -> Translation {
    let n = Names { c: cfg };
    let existing_networks = underlay.networks;
    let mut out = Out::default();
    let mut events = Vec::new();
    let base = n.base();
    out.project(&base);
    let pod_ipam = n.in_base("pod-ipam");
    let svc_ipam = n.in_base("service-ipam");
    out.flat_ipam(pod_ipam.clone(), &cfg.pod_subnets);
    out.flat_ipam(svc_ipam.clone(), &cfg.service_subnets);

    let default_pods = match &cfg.cluster_network {
        Some(fq) => fq.split(':').map(str::to_string).collect(),
        None => n.in_base("default-pod-network"),
    };
    let default_svc = n.in_base("default-service-network");
    let pod_svc = n.in_base("default-pod-service");
    out.policy(pod_svc.clone(), vec![pass_all(&default_pods, &default_svc)]);

    // The node (kubelet probes, host-network pods) reaches every pod network through a
    // policy with the ip-fabric network, where the cluster has one.
    let fabric: Vec<String> = IP_FABRIC.split(':').map(str::to_string).collect();
    let node_access = existing_networks
        .contains(IP_FABRIC)
        .then(|| n.in_base("ip-fabric-pod"));
    let mut node_rules = Vec::new();
    let with_node = |mut v: Vec<Vec<String>>| {
        v.extend(node_access.clone());
        v
    };

    // Isolated namespaces, and the policies the cluster's networks take part in. Virtual
    // networks reach each other only through policies, and a one-way rule lets its
    // source open connections but nobody open one to it (replies ride on the flow): that
    // is all the isolation there is, no security group, so that an open service's
    // backends stay reachable through it.
    let mut isolated: BTreeMap<String, Isolated> = BTreeMap::new();
    let mut on_default_pods = with_node(vec![pod_svc.clone()]);
    let mut on_default_svc = vec![pod_svc];
    for (name, ns) in &cluster.namespaces {
        if name == "kube-system" {
            continue;
        }
        let project = n.project(name);
        out.project(&project);
        if !is_true(&ns.metadata, ISOLATION) {
            continue;
        }
        let pods = n.in_ns(name, "pod-network");
        let svc = n.in_ns(name, "service-network");
        let own = n.in_ns(name, "pod-service");
        out.policy(own.clone(), vec![pass_all(&pods, &svc)]);
        // Its pods reach the cluster's pods and services.
        let egress = n.in_ns(name, "cluster-access");
        out.policy(
            egress.clone(),
            vec![one_way(&pods, &default_pods), one_way(&pods, &default_svc)],
        );
        on_default_pods.push(egress.clone());
        on_default_svc.push(egress.clone());
        node_rules.push(pass_all(&fabric, &pods));
        isolated.insert(
            name.clone(),
            Isolated {
                on_pods: with_node(vec![own.clone(), egress]),
                on_svc: vec![own],
                pods,
                svc,
            },
        );
    }
    // With `isolation.service: "false"` a namespace's services are reached from the
    // cluster's pods and every other isolated namespace's pods.
    let open: Vec<String> = isolated
        .keys()
        .filter(|ns| is_false(&cluster.namespaces[*ns].metadata, ISOLATION_SERVICE))
        .cloned()
        .collect();
    for name in &open {
        let access = n.in_ns(name, "service-access");
        let svc = isolated[name].svc.clone();
        let mut rules = vec![one_way(&default_pods, &svc)];
        for (other, i) in isolated.iter_mut() {
            if other != name {
                rules.push(one_way(&i.pods, &svc));
                i.on_pods.push(access.clone());
            }
        }
        out.policy(access.clone(), rules);
        on_default_pods.push(access.clone());
        if let Some(i) = isolated.get_mut(name) {
            i.on_svc.push(access);
        }
    }
    // Pod networks forwarded in the underlay take their addresses from the ip-fabric
    // subnets (the ipam stays while the cluster has them: a forwarded network keeps it).
    let fabric_ipam = n.in_base("ip-fabric-ipam");
    if !cfg.ip_fabric_subnets.is_empty() {
        out.flat_ipam(fabric_ipam.clone(), &cfg.ip_fabric_subnets);
    }
    let pod_network = |out: &mut Out, fq: Vec<String>, policies: &[Vec<String>], how| {
        if how == Exit::Forwarded {
            out.pod_network(fq, &fabric_ipam, policies, how);
        } else {
            out.pod_network(fq, &pod_ipam, policies, how);
        }
    };
    let mut checked_exit = |what: &str, meta: &ObjectMeta, network: &[String]| {
        let how = exit_of(cfg, meta);
        // Forwarding, once on, stays on.
        if how != Exit::Forwarded && underlay.forwarded.contains(&fq_string(network)) {
            events.push(Event {
                object: what.to_string(),
                reason: "IpFabricForwardingImmutable".into(),
                message: format!(
                    "{} stays forwarded in the underlay: once on, ip-fabric forwarding cannot be turned off",
                    fq_string(network)
                ),
            });
            return Exit::Forwarded;
        }
        if how == Exit::Forwarded && cfg.ip_fabric_subnets.is_empty() {
            events.push(Event {
                object: what.to_string(),
                reason: "NoIpFabricSubnets".into(),
                message: "ip-fabric forwarding needs ip_fabric_subnets; left in the overlay".into(),
            });
            return Exit::Overlay;
        }
        how
    };
    for (name, i) in &isolated {
        let how = checked_exit(
            &format!("Namespace {name}"),
            &cluster.namespaces[name].metadata,
            &i.pods,
        );
        pod_network(&mut out, i.pods.clone(), &i.on_pods, how);
        out.network(i.svc.clone(), &svc_ipam, &i.on_svc);
    }
    if cfg.cluster_network.is_none() {
        // The default namespace decides for the cluster's pod network.
        let meta = cluster
            .namespaces
            .get("default")
            .map(|ns| ns.metadata.clone())
            .unwrap_or_default();
        let how = checked_exit("Namespace default", &meta, &default_pods);
        pod_network(&mut out, default_pods.clone(), &on_default_pods, how);
        node_rules.push(pass_all(&fabric, &default_pods));
    }
    let mut attachments = Vec::new();
    if let Some(p) = &node_access {
        out.policy(p.clone(), node_rules);
        attachments.push((fabric.clone(), p.clone()));
    }
    out.network(default_svc.clone(), &svc_ipam, &on_default_svc);

    let mut pods = Vec::new();
    for ((ns, name), pod) in &cluster.pods {
        if let Some(p) = pod_objects(
            &mut out,
            &n,
            cluster,
            (ns, name, pod),
            &default_pods,
            isolated.get(ns),
            underlay,
            &mut events,
        ) {
            pods.push(p);
        }
    }
    let views: Vec<PodView> = pods
        .iter()
        .filter_map(|p| {
            let pod = cluster.pods.get(&(p.namespace.clone(), p.name.clone()))?;
            let named = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|cp| {
                    Some((
                        (
                            cp.name.clone()?,
                            cp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        ),
                        u16::try_from(cp.container_port).ok()?,
                    ))
                })
                .collect();
            Some(PodView {
                ns: p.namespace.clone(),
                name: p.name.clone(),
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                named,
            })
        })
        .collect();
    netpol::translate(&mut out, &n, cluster, &views, &mut events);
    let service_networks: BTreeMap<String, Vec<String>> = isolated
        .iter()
        .map(|(ns, i)| (ns.clone(), i.svc.clone()))
        .collect();
    services::translate(
        &mut out,
        &n,
        cluster,
        &pods,
        |ns| service_networks.get(ns).unwrap_or(&default_svc).clone(),
        underlay,
        &mut events,
    );
    ingress::translate(
        &mut out,
        &n,
        cluster,
        |what, ns, meta| {
            network_of(
                what,
                (meta, "ingress"),
                (&n, ns),
                &cluster.namespaces[ns].metadata,
                &default_pods,
                isolated.get(ns),
                existing_networks,
            )
        },
        underlay,
        &mut events,
    );
    Translation {
        objects: out.objects(),
        events,
        pods,
        attachments,
    }
}

/// The network of a namespace's pod or ingress: the custom network its own annotation
/// (else its namespace's) names, which must exist and be the namespace's to use (see
/// [`custom_network_allowed`]); else the namespace's pod network.
#[allow(clippy::too_many_arguments)]
pub(super) fn network_of(
    what: &str,
    (meta, word): (&ObjectMeta, &str),
    (n, ns): (&Names<'_>, &str),
    namespace: &ObjectMeta,
    default_pods: &[String],
    isolated: Option<&Isolated>,
    existing: &BTreeSet<String>,
) -> Result<Vec<String>, Event> {
    let custom = annotation(meta, NETWORK)
        .map(|v| (v, word))
        .or_else(|| annotation(namespace, NETWORK).map(|v| (v, "namespace")));
    let Some((v, from)) = custom else {
        return Ok(match isolated {
            Some(i) => i.pods.clone(),
            None => default_pods.to_vec(),
        });
    };
    let Some(fq) = fq_annotation(v) else {
        return Err(Event {
            object: what.to_string(),
            reason: "InvalidNetwork".into(),
            message: format!("{NETWORK} on the {from}: {v:?} is not a network name"),
        });
    };
    if let Err(why) = custom_network_allowed(n, ns, &fq, default_pods) {
        return Err(Event {
            object: what.to_string(),
            reason: "NetworkNotAllowed".into(),
            message: format!("{NETWORK} on the {from}: {}: {why}", fq_string(&fq)),
        });
    }
    if !existing.contains(&fq_string(&fq)) {
        return Err(Event {
            object: what.to_string(),
            reason: "NetworkNotFound".into(),
            message: format!(
                "{NETWORK} on the {from}: network {} does not exist",
                fq_string(&fq)
            ),
        });
    }
    Ok(fq)
}

/// Whether namespace `ns` may put its pods (or ingresses) in network `fq`: the cluster's
/// pod network, a network of the namespace's own project, or one the operator shares
/// (`shared_networks`); never the ip-fabric network nor the public floating-IP pool's
/// network, which would put a tenant in the underlay or the outside world.
pub(super) fn custom_network_allowed(
    n: &Names<'_>,
    ns: &str,
    fq: &[String],
    default_pods: &[String],
) -> Result<(), String> {
    let name = fq_string(fq);
    if name == crate::oper::IP_FABRIC {
        return Err("the ip-fabric network is the underlay's, not a pod network".into());
    }
    if n.c
        .public_fip_pool
        .as_ref()
        .is_some_and(|p| p.len() > 3 && p[..3] == fq[..])
    {
        return Err("the public floating-IP pool's network is not a pod network".into());
    }
    if fq == default_pods || n.c.shares(fq) {
        return Ok(());
    }
    if fq.len() == 3 && fq[..2] == n.project(ns)[..] {
        return Ok(());
    }
    Err(format!(
        "not a network of project {} (the operator shares others with shared_networks)",
        fq_string(&n.project(ns))
    ))
}

#[allow(clippy::too_many_arguments)]
fn pod_objects(
    out: &mut Out,
    n: &Names<'_>,
    cluster: &Cluster,
    (ns, name, pod): (&String, &String, &Pod),
    default_pods: &[String],
    isolated: Option<&Isolated>,
    underlay: &Underlay<'_>,
    events: &mut Vec<Event>,
) -> Option<PodPlacement> {
    let existing = underlay.networks;
    let what = format!("Pod {ns}/{name}");
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if ns == "kube-system" || host_network {
        return None;
    }
    let Some(namespace) = cluster.namespaces.get(ns) else {
        events.push(Event::namespace_not_found(what, ns));
        return None;
    };
    let network = match network_of(
        &what,
        (&pod.metadata, "pod"),
        (n, ns),
        &namespace.metadata,
        default_pods,
        isolated,
        existing,
    ) {
        Ok(fq) => fq,
        Err(e) => {
            events.push(e);
            return None;
        }
    };
    // Nested mode: the pod rides on its node's VM interface.
    let parent = if n.c.nested_mode {
        let host = pod.status.as_ref().and_then(|s| s.host_ip.clone());
        match host.as_ref().and_then(|h| underlay.node_interfaces.get(h)) {
            Some(fq) => Some(fq.clone()),
            None => {
                events.push(Event {
                    object: what,
                    reason: "NodeInterfaceNotFound".into(),
                    message: match host {
                        Some(h) => format!("nested mode: no interface holds the node address {h}"),
                        None => "nested mode: the pod has no hostIP yet".into(),
                    },
                });
                return None;
            }
        }
    } else {
        None
    };
    let project = n.project(ns);
    let leaf = n.pod(ns, name);
    let vm = vec![leaf.clone()];
    out.put(
        Kind::VirtualMachine,
        vm.clone(),
        object::Kind::VirtualMachine(proto::VirtualMachine {
            uuid: uuid_for(Kind::VirtualMachine, &vm),
            fq_name: vm.clone(),
        }),
    );
    let mut tags = vec![out.tag(&project, "namespace", ns)];
    for (k, v) in pod.metadata.labels.iter().flatten() {
        tags.push(out.tag(&project, "label", &format!("{k}={v}")));
    }
    // The pod itself, for policies that name pods one by one.
    tags.push(out.tag(&project, "pod", name));
    let vmi = n.under(&project, leaf.clone());
    out.put(
        Kind::VirtualMachineInterface,
        vmi.clone(),
        object::Kind::VirtualMachineInterface(proto::VirtualMachineInterface {
            uuid: uuid_for(Kind::VirtualMachineInterface, &vmi),
            fq_name: vmi.clone(),
            mac_address: String::new(),
            virtual_network_ref: Some(r(Kind::VirtualNetwork, &network)),
            virtual_machine_ref: Some(r(Kind::VirtualMachine, &vm)),
            tag_refs: tags.iter().map(|t| r(Kind::Tag, t)).collect(),
            parent_interface_ref: parent.as_ref().map(|p| r(Kind::VirtualMachineInterface, p)),
            security_group_refs: Vec::new(),
            sub_interface_vlan_tag: 0,
            ..Default::default()
        }),
    );
    let iip = vec![leaf];
    out.put(
        Kind::InstanceIp,
        iip.clone(),
        object::Kind::InstanceIp(proto::InstanceIp {
            uuid: uuid_for(Kind::InstanceIp, &iip),
            fq_name: iip,
            virtual_network_ref: Some(r(Kind::VirtualNetwork, &network)),
            virtual_machine_interface_refs: vec![r(Kind::VirtualMachineInterface, &vmi)],
            instance_ip_family: "v4".into(),
            ..Default::default()
        }),
    );
    let ports = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            u16::try_from(p.container_port)
                .ok()
                .map(|n| (n, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        })
        .collect();
    Some(PodPlacement {
        namespace: ns.clone(),
        name: name.clone(),
        vmi,
        network,
        ports,
    })
}
