//! NetworkPolicy (networking.k8s.io/v1) -> the firewall-policy framework, with the
//! semantics Kubernetes defines:
//!
//! - a pod is isolated for ingress (egress) when a policy of that type selects it; then a
//!   connection to (from) it is allowed only if some rule of some such policy allows it;
//!   the rules of all policies add up; a connection must be allowed at both ends;
//! - the node a pod runs on always reaches it (kubelet probes) and is reached by it.
//!
//! Two cluster-wide application policy sets carry them, `<cluster>-ingress` and
//! `<cluster>-egress` (global, all applications); every interface evaluates both and a
//! flow must pass both, which keeps the two halves apart. Each runs: the node's pass,
//! the allow rules of every policy (a firewall policy per NetworkPolicy and direction),
//! the isolation denies (to or from every selected pod), and a final pass for pods no
//! policy selects.
//!
//! Selectors become tags: pod labels are `label=<key>=<value>` tags and the namespace is a
//! `namespace=<name>` tag, both in the namespace's project, so `matchLabels`, `In` and
//! `Exists` are sums of tag conjunctions (the values `Exists` spans are those the pods
//! carry; the translation is redone on every change, so this stays exact). Selectors with
//! `NotIn` / `DoesNotExist`, and named ports (whose numbers depend on the pod), are
//! expanded to the pods they select, each named by its `pod=<name>` tag. Namespace
//! selectors are evaluated here (on the namespace's labels and the automatic
//! `kubernetes.io/metadata.name`) to the namespaces they select. An `ipBlock` is its CIDR
//! with the `except` blocks cut out, as a list of prefixes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;
use super::objects::{Event, Names, Out, uuid_for};
use crate::kinds::{Kind, fq_string};
use crate::oper::IP_FABRIC;
use crate::proto::{self, object};

/// Parent of the cluster-wide firewall objects (VNC's global policy management).
pub const GLOBAL: &str = "default-policy-management";

/// The label every namespace carries with its name.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The most firewall rules one NetworkPolicy may expand to in each direction (peers x
/// ports x selected pods, an ipBlock's CIDR less its except blocks). A policy above it
/// gets a `PolicyTooLarge` event and none of its rules: the pods it selects stay isolated
/// (fail closed), and every other policy applies.
pub const MAX_POLICY_RULES: usize = 10_000;

/// Whether a label selector selects an object with these labels. An unknown operator
/// selects nothing.
pub fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && sel.match_expressions.iter().flatten().all(|e| {
            let have = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => !have.is_some_and(|v| values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// A pod with an interface, as policies see it.
#[derive(Debug, Clone)]
pub struct PodView {
    /// Namespace.
    pub ns: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Named container ports: (name, protocol) -> number.
    pub named: BTreeMap<(String, String), u16>,
}

/// The peers and ports of one ingress or egress rule.
type Block<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// One side of a firewall rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Any,
    Tags(Vec<String>),
    Subnet(String),
    Network(String),
}

impl End {
    fn to_proto(&self) -> proto::FirewallEndpoint {
        match self {
            End::Any => proto::FirewallEndpoint {
                any: true,
                ..Default::default()
            },
            End::Tags(t) => proto::FirewallEndpoint {
                tags: t.clone(),
                ..Default::default()
            },
            End::Subnet(s) => proto::FirewallEndpoint {
                subnet: s.clone(),
                ..Default::default()
            },
            End::Network(n) => proto::FirewallEndpoint {
                virtual_network: n.clone(),
                ..Default::default()
            },
        }
    }
}

/// What a rule lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Svc {
    /// Every protocol and port.
    Any,
    /// A protocol, a port range (all ports when none).
    Ports(String, Option<(u16, u16)>),
    /// A named port of the destination pod.
    Named(String, String),
}

/// A firewall rule before naming.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Fr {
    action: &'static str,
    from: End,
    to: End,
    /// (protocol, ports) or any.
    service: Option<(String, Option<(u16, u16)>)>,
}

struct Ctx<'a> {
    n: &'a Names<'a>,
    out: &'a Out,
    cluster: &'a Cluster,
    pods: &'a [PodView],
}

impl Ctx<'_> {
    fn tag(&self, ns: &str, name: String) -> String {
        let mut fq = self.n.project(ns);
        fq.push(name);
        fq_string(&fq)
    }

    fn ns_tag(&self, ns: &str) -> String {
        self.tag(ns, format!("namespace={ns}"))
    }

    fn pod_end(&self, p: &PodView) -> End {
        End::Tags(vec![
            self.ns_tag(&p.ns),
            self.tag(&p.ns, format!("pod={}", p.name)),
        ])
    }

    fn tag_exists(&self, fq: &str) -> bool {
        let fq: Vec<String> = fq.split(':').map(str::to_string).collect();
        self.out.has(Kind::Tag, &fq)
    }

    /// The pods of `ns` a selector selects.
    fn pods_in<'p>(&'p self, ns: &str, sel: &LabelSelector) -> Vec<&'p PodView> {
        self.pods
            .iter()
            .filter(|p| p.ns == ns && selects(sel, &p.labels))
            .collect()
    }

    /// The pods of `ns` a selector selects, as sums of tag conjunctions.
    fn select(&self, ns: &str, sel: &LabelSelector) -> Vec<End> {
        let exprs = sel.match_expressions.as_deref().unwrap_or_default();
        let concrete = exprs
            .iter()
            .any(|e| !matches!(e.operator.as_str(), "In" | "Exists"));
        if concrete {
            return self
                .pods_in(ns, sel)
                .into_iter()
                .map(|p| self.pod_end(p))
                .collect();
        }
        let mut alts: Vec<Vec<String>> = vec![vec![self.ns_tag(ns)]];
        for (k, v) in sel.match_labels.iter().flatten() {
            for a in &mut alts {
                a.push(self.tag(ns, format!("label={k}={v}")));
            }
        }
        for e in exprs {
            let values: BTreeSet<String> = if e.operator == "In" {
                e.values.iter().flatten().cloned().collect()
            } else {
                self.pods
                    .iter()
                    .filter(|p| p.ns == ns)
                    .filter_map(|p| p.labels.get(&e.key).cloned())
                    .collect()
            };
            // `In` over several keys multiplies: past the cap, name the pods instead (at
            // most the namespace's pods, whatever the selector).
            if alts.len().saturating_mul(values.len()) > MAX_POLICY_RULES {
                return self
                    .pods_in(ns, sel)
                    .into_iter()
                    .map(|p| self.pod_end(p))
                    .collect();
            }
            alts = alts
                .iter()
                .flat_map(|a| {
                    values.iter().map(move |v| {
                        let mut a = a.clone();
                        a.push(self.tag(ns, format!("label={}={v}", e.key)));
                        a
                    })
                })
                .collect();
        }
        // A conjunction with a tag no pod carries selects nothing.
        alts.into_iter()
            .filter(|a| a.iter().all(|t| self.tag_exists(t)))
            .map(|mut a| {
                a.sort();
                a.dedup();
                End::Tags(a)
            })
            .collect()
    }

    /// The namespaces a namespace selector selects.
    fn namespaces(&self, sel: &LabelSelector) -> Vec<String> {
        self.cluster
            .namespaces
            .iter()
            .filter(|(name, ns)| {
                let mut labels = ns.metadata.labels.clone().unwrap_or_default();
                labels.insert(NAME_LABEL.into(), (*name).clone());
                selects(sel, &labels)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A peer: its endpoints, and the pods it stands for (none for an ipBlock).
    fn peer(
        &self,
        ns: &str,
        p: &NetworkPolicyPeer,
        events: &mut Vec<Event>,
        what: &str,
    ) -> (Vec<End>, Option<Vec<&PodView>>) {
        if let Some(b) = &p.ip_block {
            let except = b.except.as_deref().unwrap_or_default();
            return match cidr_minus(&b.cidr, except, MAX_POLICY_RULES) {
                Ok(v) => (v.into_iter().map(End::Subnet).collect(), None),
                Err(why) => {
                    events.push(Event {
                        object: what.to_string(),
                        reason: "InvalidIpBlock".into(),
                        message: why,
                    });
                    (vec![], None)
                }
            };
        }
        let namespaces = match &p.namespace_selector {
            Some(s) => self.namespaces(s),
            None => vec![ns.to_string()],
        };
        let everything = LabelSelector::default();
        let sel = p.pod_selector.as_ref().unwrap_or(&everything);
        let mut ends = Vec::new();
        let mut pods = Vec::new();
        for m in &namespaces {
            ends.extend(self.select(m, sel));
            pods.extend(self.pods_in(m, sel));
        }
        (ends, Some(pods))
    }
}

fn services(ports: Option<&Vec<NetworkPolicyPort>>) -> Vec<Svc> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![Svc::Any];
    };
    ports
        .iter()
        .map(|p| {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            match &p.port {
                None => Svc::Ports(proto, None),
                Some(IntOrString::Int(n)) => {
                    let lo = u16::try_from(*n).unwrap_or(0);
                    let hi = p
                        .end_port
                        .and_then(|e| u16::try_from(e).ok())
                        .filter(|e| *e >= lo)
                        .unwrap_or(lo);
                    Svc::Ports(proto, Some((lo, hi)))
                }
                Some(IntOrString::String(name)) => match name.parse::<u16>() {
                    Ok(n) => Svc::Ports(proto, Some((n, n))),
                    Err(_) => Svc::Named(name.clone(), proto),
                },
            }
        })
        .collect()
}

/// `cidr` without the `except` blocks, as prefixes in address order; an error where that
/// takes more than `limit` prefixes. The work is about the number of except blocks times
/// the prefix length, whatever their layout.
pub fn cidr_minus(cidr: &str, except: &[String], limit: usize) -> Result<Vec<String>, String> {
    fn parse(s: &str) -> Result<(IpAddr, u128, u8), String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR"))?;
        let a: IpAddr = a.parse().map_err(|_| format!("{s:?} is not a CIDR"))?;
        let l: u8 = l.parse().map_err(|_| format!("{s:?} is not a CIDR"))?;
        let (bits, max) = match a {
            IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        };
        if l > max {
            return Err(format!("{s:?}: prefix length above {max}"));
        }
        Ok((a, bits & mask(l), l))
    }
    fn mask(len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        }
    }
    /// `net/len` less the blocks of `ex` (sorted, none inside another, all inside
    /// `net/len`): the half-prefixes that hold no block are kept whole.
    fn walk(net: u128, len: u8, ex: &[(u128, u8)], out: &mut Vec<(u128, u8)>, limit: usize) {
        if out.len() > limit {
            return;
        }
        match ex.first() {
            None => out.push((net, len)),
            // A block as wide as this prefix: nothing of it is left.
            Some(&(_, l)) if l <= len => {}
            Some(_) => {
                let bit = 1u128 << (127 - u32::from(len));
                let split = ex.partition_point(|&(e, _)| e & bit == 0);
                walk(net, len + 1, &ex[..split], out, limit);
                walk(net | bit, len + 1, &ex[split..], out, limit);
            }
        }
    }
    let (a, net, len) = parse(cidr)?;
    let mut ex = Vec::with_capacity(except.len());
    for e in except {
        let (b, n, l) = parse(e)?;
        if b.is_ipv4() != a.is_ipv4() || l < len || n & mask(len) != net {
            return Err(format!("except {e:?} is not inside {cidr:?}"));
        }
        ex.push((n, l));
    }
    // Sorted by address then length, a block inside another comes right after it (or
    // after another block inside it): keep only the outermost.
    ex.sort_unstable();
    let mut outer: Vec<(u128, u8)> = Vec::with_capacity(ex.len());
    for (n, l) in ex {
        if !outer
            .last()
            .is_some_and(|&(o, ol)| ol <= l && n & mask(ol) == o)
        {
            outer.push((n, l));
        }
    }
    let mut out = Vec::new();
    walk(net, len, &outer, &mut out, limit);
    if out.len() > limit {
        return Err(format!(
            "{cidr:?} without its {} except blocks is more than {limit} prefixes",
            except.len()
        ));
    }
    Ok(out
        .into_iter()
        .map(|(n, l)| {
            if a.is_ipv4() {
                format!("{}/{l}", std::net::Ipv4Addr::from((n >> 96) as u32))
            } else {
                format!("{}/{l}", std::net::Ipv6Addr::from(n))
            }
        })
        .collect())
}

/// Whether a policy is of a type (defaulted as the API server does: Ingress always,
/// Egress when it has egress rules).
fn has_type(p: &NetworkPolicy, ty: &str) -> bool {
    let spec = p.spec.as_ref();
    match spec.and_then(|s| s.policy_types.as_ref()) {
        Some(t) => t.iter().any(|x| x == ty),
        None => {
            ty == "Ingress"
                || spec
                    .and_then(|s| s.egress.as_ref())
                    .is_some_and(|e| !e.is_empty())
        }
    }
}

/// The firewall objects of the cluster's network policies (nothing without policies).
pub(super) fn translate(
    out: &mut Out,
    n: &Names<'_>,
    cluster: &Cluster,
    pods: &[PodView],
    events: &mut Vec<Event>,
) {
    if cluster.network_policies.is_empty() {
        return;
    }
    let c = &n.c.cluster_name;
    let mut ingress_fps: Vec<Vec<String>> = Vec::new();
    let mut egress_fps: Vec<Vec<String>> = Vec::new();
    let mut isolate_in: Vec<Fr> = Vec::new();
    let mut isolate_out: Vec<Fr> = Vec::new();
    let mut policies: Vec<(Vec<String>, Vec<Fr>)> = Vec::new();
    {
        let ctx = Ctx {
            n,
            out,
            cluster,
            pods,
        };
        for ((ns, name), p) in &cluster.network_policies {
            let what = format!("NetworkPolicy {ns}/{name}");
            if ns == "kube-system" {
                continue;
            }
            if !cluster.namespaces.contains_key(ns) {
                events.push(Event::namespace_not_found(what, ns));
                continue;
            }
            let everything = LabelSelector::default();
            let spec = p.spec.as_ref();
            let sel = spec
                .and_then(|s| s.pod_selector.as_ref())
                .unwrap_or(&everything);
            let selected = ctx.select(ns, sel);
            let selected_pods = ctx.pods_in(ns, sel);
            for (ty, ingress) in [("Ingress", true), ("Egress", false)] {
                if !has_type(p, ty) {
                    continue;
                }
                let mut rules = Vec::new();
                let mut too_large = false;
                for s in &selected {
                    let deny = Fr {
                        action: "deny",
                        from: if ingress { End::Any } else { s.clone() },
                        to: if ingress { s.clone() } else { End::Any },
                        service: None,
                    };
                    if ingress {
                        isolate_in.push(deny);
                    } else {
                        isolate_out.push(deny);
                    }
                }
                let blocks: Vec<Block<'_>> = if ingress {
                    spec.and_then(|s| s.ingress.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                        .collect()
                } else {
                    spec.and_then(|s| s.egress.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                        .collect()
                };
                'blocks: for (peers, ports) in blocks {
                    // The other side: any, or the peers' endpoints and pods.
                    let mut others: Vec<End> = Vec::new();
                    let mut other_pods: Vec<&PodView> = Vec::new();
                    match peers.filter(|p| !p.is_empty()) {
                        None => {
                            others.push(End::Any);
                            other_pods.extend(pods.iter());
                        }
                        Some(peers) => {
                            for peer in peers {
                                let (e, ps) = ctx.peer(ns, peer, events, &what);
                                others.extend(e);
                                other_pods.extend(ps.into_iter().flatten());
                                if others.len() > MAX_POLICY_RULES {
                                    too_large = true;
                                    break 'blocks;
                                }
                            }
                        }
                    }
                    // Rules run from the sending side to the receiving one; a named port
                    // is the receiving pod's.
                    let (senders, receivers, receiving_pods) = if ingress {
                        (&others, &selected, &selected_pods)
                    } else {
                        (&selected, &others, &other_pods)
                    };
                    let svcs = services(ports);
                    let named = svcs.iter().any(|s| matches!(s, Svc::Named(..)));
                    let fanout = if named {
                        receiving_pods.len().max(receivers.len())
                    } else {
                        receivers.len()
                    };
                    let cost = senders
                        .len()
                        .saturating_mul(fanout)
                        .saturating_mul(svcs.len());
                    if rules.len().saturating_add(cost) > MAX_POLICY_RULES {
                        too_large = true;
                        break 'blocks;
                    }
                    for svc in svcs {
                        let mut add = |from: &End, to: &End, service| {
                            rules.push(Fr {
                                action: "pass",
                                from: from.clone(),
                                to: to.clone(),
                                service,
                            })
                        };
                        match &svc {
                            Svc::Named(port, proto) => {
                                let key = (port.clone(), proto.clone());
                                for d in receiving_pods {
                                    let Some(&num) = d.named.get(&key) else {
                                        continue;
                                    };
                                    for f in senders {
                                        let ports = Some((num, num));
                                        add(f, &ctx.pod_end(d), Some((proto.clone(), ports)));
                                    }
                                }
                            }
                            Svc::Ports(p, r) => {
                                for f in senders {
                                    for t in receivers {
                                        add(f, t, Some((p.clone(), *r)));
                                    }
                                }
                            }
                            Svc::Any => {
                                for f in senders {
                                    for t in receivers {
                                        add(f, t, None);
                                    }
                                }
                            }
                        }
                    }
                }
                let dir = if ingress { "ingress" } else { "egress" };
                if too_large {
                    events.push(Event {
                        object: what.clone(),
                        reason: "PolicyTooLarge".into(),
                        message: format!(
                            "its {dir} rules expand to more than {MAX_POLICY_RULES} firewall \
                             rules; none of them apply and the pods it selects stay isolated"
                        ),
                    });
                    rules.clear();
                }
                let fp = n.in_ns(ns, &format!("{name}-{dir}"));
                if ingress {
                    ingress_fps.push(fp.clone());
                } else {
                    egress_fps.push(fp.clone());
                }
                policies.push((fp, rules));
            }
        }
    }
    for (fp, rules) in policies {
        firewall_policy(out, fp, rules);
    }
    let global = |leaf: &str| vec![GLOBAL.to_string(), format!("{c}-{leaf}")];
    let node = global("allow-node");
    firewall_policy(
        out,
        node.clone(),
        vec![Fr {
            action: "pass",
            from: End::Network(IP_FABRIC.into()),
            to: End::Any,
            service: None,
        }],
    );
    let all = global("allow-all");
    firewall_policy(
        out,
        all.clone(),
        vec![Fr {
            action: "pass",
            from: End::Any,
            to: End::Any,
            service: None,
        }],
    );
    for (dir, fps, deny) in [
        ("ingress", ingress_fps, isolate_in),
        ("egress", egress_fps, isolate_out),
    ] {
        let iso = global(&format!("{dir}-isolation"));
        firewall_policy(out, iso.clone(), deny);
        let mut seq = vec![node.clone()];
        seq.extend(fps);
        seq.push(iso);
        seq.push(all.clone());
        let aps = global(dir);
        out.put(
            Kind::ApplicationPolicySet,
            aps.clone(),
            object::Kind::ApplicationPolicySet(proto::ApplicationPolicySet {
                uuid: uuid_for(Kind::ApplicationPolicySet, &aps),
                fq_name: aps,
                firewall_policy_refs: seq
                    .iter()
                    .enumerate()
                    .map(|(i, fp)| proto::SequencedRef {
                        r#ref: Some(super::objects::r(Kind::FirewallPolicy, fp)),
                        sequence: i.to_string(),
                    })
                    .collect(),
                tag_refs: vec![],
                all_applications: true,
            }),
        );
    }
}

/// A firewall policy and its rules, named `<its name>-<i>` beside it.
fn firewall_policy(out: &mut Out, fq: Vec<String>, rules: Vec<Fr>) {
    let (leaf, parent) = fq.split_last().expect("an FQ name");
    let mut refs = Vec::new();
    let mut seen = BTreeSet::new();
    for r in rules {
        // The same rule twice (two peers with the same endpoints) is made once.
        if seen.contains(&r) {
            continue;
        }
        let mut rfq = parent.to_vec();
        rfq.push(format!("{leaf}-{}", seen.len()));
        out.put(
            Kind::FirewallRule,
            rfq.clone(),
            object::Kind::FirewallRule(proto::FirewallRule {
                uuid: uuid_for(Kind::FirewallRule, &rfq),
                fq_name: rfq.clone(),
                action: r.action.into(),
                services: r
                    .service
                    .iter()
                    .map(|(p, ports)| proto::FirewallService {
                        protocol: p.to_ascii_lowercase(),
                        src_ports: None,
                        dst_ports: ports.map(|(s, e)| proto::PortRange {
                            start_port: u32::from(s),
                            end_port: u32::from(e),
                        }),
                    })
                    .collect(),
                endpoint_1: Some(r.from.to_proto()),
                endpoint_2: Some(r.to.to_proto()),
                direction: ">".into(),
                match_tags: vec![],
            }),
        );
        refs.push(proto::SequencedRef {
            r#ref: Some(super::objects::r(Kind::FirewallRule, &rfq)),
            sequence: seen.len().to_string(),
        });
        seen.insert(r);
    }
    out.put(
        Kind::FirewallPolicy,
        fq.clone(),
        object::Kind::FirewallPolicy(proto::FirewallPolicy {
            uuid: uuid_for(Kind::FirewallPolicy, &fq),
            fq_name: fq,
            firewall_rule_refs: refs,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_minus_cuts_the_except_blocks_out() {
        assert_eq!(
            cidr_minus("10.0.0.0/24", &[], 100).unwrap(),
            vec!["10.0.0.0/24"]
        );
        assert_eq!(
            cidr_minus("10.0.0.0/24", &["10.0.0.128/25".into()], 100).unwrap(),
            vec!["10.0.0.0/25"]
        );
        assert_eq!(
            cidr_minus("10.0.0.0/30", &["10.0.0.1/32".into()], 100).unwrap(),
            vec!["10.0.0.0/32", "10.0.0.2/31"]
        );
        assert_eq!(
            cidr_minus("10.0.0.7/29", &["10.0.0.0/29".into()], 100).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            cidr_minus("fd00::/126", &["fd00::3/128".into()], 100).unwrap(),
            vec!["fd00::/127", "fd00::2/128"]
        );
        assert!(cidr_minus("10.0.0.0/24", &["10.0.1.0/25".into()], 100).is_err());
        assert!(cidr_minus("10.0.0.0/33", &[], 100).is_err());
        assert!(cidr_minus("nonsense", &[], 100).is_err());
        // Nested and repeated blocks count once.
        assert_eq!(
            cidr_minus(
                "10.0.0.0/30",
                &[
                    "10.0.0.2/31".into(),
                    "10.0.0.3/32".into(),
                    "10.0.0.2/31".into()
                ],
                100
            )
            .unwrap(),
            vec!["10.0.0.0/31"]
        );
    }

    /// Thousands of except blocks (work in proportion to them), and refused past the limit
    /// rather than grown.
    #[test]
    fn cidr_minus_with_thousands_of_blocks() {
        let except: Vec<String> = (0..5000u32)
            .map(|i| {
                let a = std::net::Ipv4Addr::from(0x0a00_0000 + i * 3331 % (1 << 24));
                format!("{a}/32")
            })
            .collect();
        let all = cidr_minus("10.0.0.0/8", &except, usize::MAX).unwrap();
        let kept: u64 = all
            .iter()
            .map(|p| 1u64 << (32 - p.split_once('/').unwrap().1.parse::<u32>().unwrap()))
            .sum();
        assert_eq!(kept, (1 << 24) - 5000);
        let err = cidr_minus("10.0.0.0/8", &except, 10_000).unwrap_err();
        assert!(err.contains("more than 10000 prefixes"), "{err}");
    }

    proptest::proptest! {
        /// The prefixes cover exactly the addresses of the CIDR outside every block, once.
        #[test]
        fn cidr_minus_keeps_exactly_the_rest(
            blocks in proptest::collection::vec((0u32..256, 24u8..=32), 0..12),
        ) {
            let except: Vec<String> = blocks
                .iter()
                .map(|(h, l)| {
                    let net = (0x0a00_0000 | h) & (u32::MAX << (32 - u32::from(*l)));
                    format!("{}/{l}", std::net::Ipv4Addr::from(net))
                })
                .collect();
            let inside = |a: u32, p: &str| {
                let (n, l) = p.split_once('/').unwrap();
                let n = u32::from(n.parse::<std::net::Ipv4Addr>().unwrap());
                let l: u32 = l.parse().unwrap();
                l == 0 || a >> (32 - l) == n >> (32 - l)
            };
            let out = cidr_minus("10.0.0.0/24", &except, 1000).unwrap();
            for h in 0..256u32 {
                let a = 0x0a00_0000 | h;
                let excluded = except.iter().any(|e| inside(a, e));
                let covers = out.iter().filter(|p| inside(a, p)).count();
                proptest::prop_assert_eq!(covers, usize::from(!excluded), "10.0.0.{}", h);
            }
        }
    }
}
