//! What a translation is made of, shared by the translation of pods and namespaces
//! ([`super::translate`]), of services, ingresses and network policies: the objects it
//! puts out ([`Out`], in dependency order), their names ([`Names`]), stable UUIDs
//! ([`uuid_for`]) and references ([`r`]), what could not be translated ([`Event`]),
//! where pods went ([`PodPlacement`]) and what the agent already holds ([`Underlay`]).

use std::collections::{BTreeMap, BTreeSet};

use super::KubeConfig;
use crate::kinds::{Kind, fq_string};
use crate::proto::{self, Object, object};

/// The domain of every project.
pub const DOMAIN: &str = "default-domain";

/// Something about an object that could not be done, reported like a Kubernetes event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `Pod ns/name`, `Namespace name`.
    pub object: String,
    /// A CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
}

impl Event {
    /// An object in a namespace that does not exist.
    pub fn namespace_not_found(object: String, ns: &str) -> Event {
        Event {
            object,
            reason: "NamespaceNotFound".into(),
            message: format!("namespace {ns} does not exist"),
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.reason, self.message)
    }
}

/// Where a pod went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlacement {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its interface's FQ name.
    pub vmi: Vec<String>,
    /// Its network's FQ name.
    pub network: Vec<String>,
    /// Container ports (number, protocol) it listens on.
    pub ports: Vec<(u16, String)>,
}

/// A reference to the object of `kind` named `fq`.
pub fn r(kind: Kind, fq: &[String]) -> proto::Ref {
    proto::Ref {
        r#type: kind.name().to_string(),
        uuid: String::new(),
        fq_name: fq.to_vec(),
    }
}

/// A stable UUID for an object of kube-manager's (so that a re-translation names the same
/// objects the same way).
pub fn uuid_for(kind: Kind, fq: &[String]) -> String {
    const NS: uuid::Uuid = uuid::Uuid::from_u128(0x6b75_6265_2d6d_616e_6167_6572_7672_7472);
    uuid::Uuid::new_v5(&NS, format!("{}:{}", kind.name(), fq_string(fq)).as_bytes()).to_string()
}

/// Where a pod network's traffic goes beyond the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// Overlay only.
    Overlay,
    /// Overlay, reaching outside through the node's address (ip-fabric SNAT).
    Snat,
    /// Forwarded in the underlay, no encapsulation (ip-fabric forwarding).
    Forwarded,
}

/// The names of the cluster's objects.
pub(super) struct Names<'a> {
    pub(super) c: &'a KubeConfig,
}

impl Names<'_> {
    pub(super) fn base(&self) -> Vec<String> {
        match &self.c.cluster_project {
            Some(p) => p.split(':').map(str::to_string).collect(),
            None => vec![DOMAIN.into(), format!("{}-default", self.c.cluster_name)],
        }
    }
    pub(super) fn project(&self, ns: &str) -> Vec<String> {
        match &self.c.cluster_project {
            Some(_) => self.base(),
            None => vec![DOMAIN.into(), format!("{}-{ns}", self.c.cluster_name)],
        }
    }
    pub(super) fn under(&self, project: &[String], leaf: String) -> Vec<String> {
        let mut v = project.to_vec();
        v.push(leaf);
        v
    }
    pub(super) fn in_base(&self, leaf: &str) -> Vec<String> {
        self.under(&self.base(), format!("{}-{leaf}", self.c.cluster_name))
    }
    pub(super) fn service(&self, ns: &str, svc: &str) -> String {
        format!("{}__svc__{ns}__{svc}", self.c.cluster_name)
    }
    pub(super) fn ingress(&self, ns: &str, name: &str) -> String {
        format!("{}__ingress__{ns}__{name}", self.c.cluster_name)
    }
    pub(super) fn pod_leaf(&self, ns: &str, pod: &str) -> String {
        self.pod(ns, pod)
    }
    pub(super) fn in_ns(&self, ns: &str, leaf: &str) -> Vec<String> {
        self.under(
            &self.project(ns),
            format!("{}-{ns}-{leaf}", self.c.cluster_name),
        )
    }
    pub(super) fn pod(&self, ns: &str, pod: &str) -> String {
        format!("{}__{ns}__{pod}", self.c.cluster_name)
    }
}

/// Collects objects by FQ name within their kind, in the order kinds depend on each other.
#[derive(Default)]
pub(super) struct Out {
    by_kind: BTreeMap<usize, BTreeMap<Vec<String>, Object>>,
}

/// Creation order: a kind only refers to kinds before it.
pub const ORDER: [Kind; 17] = [
    Kind::Project,
    Kind::NetworkIpam,
    Kind::Tag,
    Kind::SecurityGroup,
    Kind::NetworkPolicy,
    Kind::VirtualNetwork,
    Kind::VirtualMachine,
    Kind::VirtualMachineInterface,
    Kind::InstanceIp,
    Kind::FirewallRule,
    Kind::FirewallPolicy,
    Kind::ApplicationPolicySet,
    Kind::Loadbalancer,
    Kind::LoadbalancerListener,
    Kind::LoadbalancerPool,
    Kind::LoadbalancerMember,
    Kind::FloatingIp,
];

impl Out {
    pub(super) fn rank(kind: Kind) -> usize {
        ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
    }
    pub(super) fn has(&self, kind: Kind, fq: &[String]) -> bool {
        self.by_kind
            .get(&Out::rank(kind))
            .is_some_and(|m| m.contains_key(fq))
    }
    pub(super) fn put(&mut self, kind: Kind, fq: Vec<String>, o: object::Kind) {
        self.by_kind
            .entry(Out::rank(kind))
            .or_default()
            .insert(fq, Object { kind: Some(o) });
    }
    pub(super) fn project(&mut self, fq: &[String]) {
        self.put(
            Kind::Project,
            fq.to_vec(),
            object::Kind::Project(proto::Project {
                uuid: uuid_for(Kind::Project, fq),
                fq_name: fq.to_vec(),
            }),
        );
    }
    pub(super) fn flat_ipam(&mut self, fq: Vec<String>, subnets: &[String]) {
        self.put(
            Kind::NetworkIpam,
            fq.clone(),
            object::Kind::NetworkIpam(proto::NetworkIpam {
                uuid: uuid_for(Kind::NetworkIpam, &fq),
                fq_name: fq,
                ipam_subnet_method: "flat-subnet".into(),
                ipam_subnets: subnets
                    .iter()
                    .map(|s| proto::Subnet {
                        prefix: s.clone(),
                        ..Default::default()
                    })
                    .collect(),
            }),
        );
    }
    pub(super) fn network(&mut self, fq: Vec<String>, ipam: &[String], policies: &[Vec<String>]) {
        self.pod_network(fq, ipam, policies, Exit::Overlay);
    }
    /// A pod network, in the overlay (its pods may reach outside through the node's
    /// address) or forwarded in the underlay.
    pub(super) fn pod_network(
        &mut self,
        fq: Vec<String>,
        ipam: &[String],
        policies: &[Vec<String>],
        how: Exit,
    ) {
        self.put(
            Kind::VirtualNetwork,
            fq.clone(),
            object::Kind::VirtualNetwork(proto::VirtualNetwork {
                uuid: uuid_for(Kind::VirtualNetwork, &fq),
                fq_name: fq,
                network_ipam_refs: vec![proto::IpamRef {
                    ipam: Some(r(Kind::NetworkIpam, ipam)),
                    subnets: vec![],
                }],
                network_policy_refs: policies.iter().map(|p| r(Kind::NetworkPolicy, p)).collect(),
                forwarding_mode: "l2_l3".into(),
                fabric_snat: how == Exit::Snat,
                ip_fabric_forwarding: how == Exit::Forwarded,
                ..Default::default()
            }),
        );
    }
    pub(super) fn policy(&mut self, fq: Vec<String>, rules: Vec<proto::PolicyRule>) {
        self.put(
            Kind::NetworkPolicy,
            fq.clone(),
            object::Kind::NetworkPolicy(proto::NetworkPolicy {
                uuid: uuid_for(Kind::NetworkPolicy, &fq),
                fq_name: fq,
                network_policy_entries: rules,
            }),
        );
    }
    pub(super) fn tag(&mut self, project: &[String], ty: &str, value: &str) -> Vec<String> {
        let mut fq = project.to_vec();
        fq.push(format!("{ty}={value}"));
        self.put(
            Kind::Tag,
            fq.clone(),
            object::Kind::Tag(proto::Tag {
                uuid: uuid_for(Kind::Tag, &fq),
                fq_name: fq.clone(),
                tag_type_name: ty.into(),
                tag_value: value.into(),
                tag_id: 0,
            }),
        );
        fq
    }
    pub(super) fn objects(self) -> Vec<Object> {
        self.by_kind
            .into_values()
            .flat_map(|m| m.into_values())
            .collect()
    }
}

/// What the translation takes from the agent's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Underlay<'a> {
    /// FQ names (joined with ':') of the networks the agent holds.
    pub networks: &'a BTreeSet<String>,
    /// Nested mode: node address -> the FQ name of the VM interface that holds it.
    pub node_interfaces: &'a BTreeMap<String, Vec<String>>,
    /// Addresses the agent assigned, by instance-ip FQ name (pods' addresses for the
    /// members of services).
    pub addresses: &'a BTreeMap<Vec<String>, String>,
    /// The subnets of the public floating-IP pool's network (external IPs outside them
    /// are events, not objects the agent would refuse).
    pub public_subnets: &'a [String],
    /// FQ names (joined with ':') of the networks forwarded in the underlay now (they stay
    /// so: an annotation that turns forwarding off is an event).
    pub forwarded: &'a BTreeSet<String>,
}

static NO_NAMES: BTreeSet<String> = BTreeSet::new();
static NO_ADDRESSES: BTreeMap<Vec<String>, String> = BTreeMap::new();
static NO_INTERFACES: BTreeMap<String, Vec<String>> = BTreeMap::new();

impl Default for Underlay<'_> {
    /// An agent that holds nothing.
    fn default() -> Self {
        Underlay {
            networks: &NO_NAMES,
            node_interfaces: &NO_INTERFACES,
            addresses: &NO_ADDRESSES,
            public_subnets: &[],
            forwarded: &NO_NAMES,
        }
    }
}
