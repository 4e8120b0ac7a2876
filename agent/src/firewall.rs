//! The firewall-policy framework compiled into vrouter rule sets.
//!
//! An application-policy-set (APS) applies to every interface when `all_applications` is
//! set, else to the interfaces that carry all of its tags. Each APS that applies becomes
//! one rule set on the interface, in both directions: its firewall policies in sequence
//! order, each policy's rules in sequence order, the first matching rule decides, and a
//! flow that no rule matches is denied (end an APS with a pass-all policy to make it
//! permissive). Since every rule set of an interface must pass a flow, separate APSs add
//! up as a logical AND, which is how kube-manager keeps the ingress and egress halves of
//! Kubernetes network policy apart.
//!
//! A rule's `direction` is relative to its endpoints: `>` matches flows from endpoint 1 to
//! endpoint 2, `<` the other way, `<>` both. An endpoint is any, a subnet, a virtual
//! network or a set of tags that must all be present. Tags are named as `type=value`
//! (a global tag, or the only tag of that name) or by their full FQ name joined with `:`
//! (`default-domain:proj:label=app=web`), which is how project-scoped tags are told apart.

use std::collections::HashMap;

use vrouter_api::config::{ActionCfg, EndpointCfg, PolicyCfg, RuleCfg};

use crate::kinds::{Kind, fq_string};
use crate::proto::{self, object};
use crate::store::Db;
use crate::store::check::protocol_number;
pub use crate::store::tags::TagIndex;

/// An APS compiled for the vrouter.
#[derive(Debug, Clone)]
pub struct CompiledAps {
    /// Applies to every interface.
    pub all: bool,
    /// Else to interfaces with all of these tag ids (sorted).
    pub tags: Vec<u32>,
    /// The rule set.
    pub set: PolicyCfg,
}

impl CompiledAps {
    /// Whether it applies to an interface with these tags (sorted).
    pub fn applies(&self, tags: &[u32]) -> bool {
        self.all || self.tags.iter().all(|t| tags.binary_search(t).is_ok())
    }
}

/// Orders sequence strings numerically part by part (`1.10` after `1.9`), the others
/// after them.
fn sequence_key(s: &str) -> (bool, Vec<u64>, String) {
    let parts: Option<Vec<u64>> = s.split('.').map(|p| p.parse().ok()).collect();
    match parts {
        Some(p) if !s.is_empty() => (false, p, String::new()),
        _ => (true, vec![], s.to_string()),
    }
}

fn in_sequence<'a, T>(
    db: &'a Db,
    refs: &'a [proto::SequencedRef],
    pick: impl Fn(&'a object::Kind) -> Option<&'a T>,
) -> Vec<&'a T> {
    let mut v: Vec<(usize, &proto::SequencedRef)> = refs.iter().enumerate().collect();
    v.sort_by_key(|(i, r)| (sequence_key(&r.sequence), *i));
    v.into_iter()
        .filter_map(|(_, r)| r.r#ref.as_ref())
        .filter_map(|r| db.get(&r.uuid))
        .filter_map(|o| o.kind.as_ref().and_then(&pick))
        .collect()
}

/// An endpoint as a match; `None` when it names something that does not exist (the rule
/// then matches nothing and is left out).
fn endpoint(
    e: Option<&proto::FirewallEndpoint>,
    tags: &TagIndex,
    vn_ids: &HashMap<String, u32>,
) -> Option<EndpointCfg> {
    let Some(e) = e else {
        return Some(EndpointCfg::default());
    };
    if !e.tags.is_empty() {
        let mut ids = e
            .tags
            .iter()
            .map(|t| tags.resolve(t).ok())
            .collect::<Option<Vec<u32>>>()?;
        ids.sort_unstable();
        ids.dedup();
        return Some(EndpointCfg {
            tags: Some(ids),
            ..Default::default()
        });
    }
    if !e.subnet.is_empty() {
        return Some(EndpointCfg {
            prefix: Some(e.subnet.clone()),
            ..Default::default()
        });
    }
    if !e.virtual_network.is_empty() {
        return Some(EndpointCfg {
            vn: Some(*vn_ids.get(&e.virtual_network)?),
            ..Default::default()
        });
    }
    Some(EndpointCfg::default())
}

/// A port range (none: any port).
type Ports = Option<(u16, u16)>;

fn range(p: Option<&proto::PortRange>) -> Ports {
    let p = p?;
    let (s, e) = (p.start_port as u16, p.end_port as u16);
    (s != 0 || e != u16::MAX).then_some((s, e))
}

/// One firewall rule as vrouter rules.
pub fn expand_rule(
    r: &proto::FirewallRule,
    tags: &TagIndex,
    vn_ids: &HashMap<String, u32>,
) -> Vec<RuleCfg> {
    let (Some(e1), Some(e2)) = (
        endpoint(r.endpoint_1.as_ref(), tags, vn_ids),
        endpoint(r.endpoint_2.as_ref(), tags, vn_ids),
    ) else {
        return vec![];
    };
    let action = if r.action == "deny" {
        ActionCfg::Deny
    } else {
        ActionCfg::Pass
    };
    let services: Vec<(Option<u8>, Ports, Ports)> = if r.services.is_empty() {
        vec![(None, None, None)]
    } else {
        r.services
            .iter()
            .filter_map(|s| {
                Some((
                    protocol_number(&s.protocol)?,
                    range(s.src_ports.as_ref()),
                    range(s.dst_ports.as_ref()),
                ))
            })
            .collect()
    };
    let mut ways = Vec::new();
    if matches!(r.direction.as_str(), ">" | "<>" | "") {
        ways.push((&e1, &e2));
    }
    if matches!(r.direction.as_str(), "<" | "<>" | "") {
        ways.push((&e2, &e1));
    }
    let mut out = Vec::new();
    for (src, dst) in ways {
        for &(proto, sport, dport) in &services {
            out.push(RuleCfg {
                proto,
                src: src.clone(),
                dst: dst.clone(),
                sport,
                dport,
                action,
            });
        }
    }
    out
}

/// Every APS of the database, compiled. `vn_ids` maps network FQ names (joined with
/// `:`) to network ids; `tag_ids` tag UUIDs to ids.
pub fn compile(
    db: &Db,
    vn_ids: &HashMap<String, u32>,
    tag_ids: &HashMap<String, u32>,
    name_prefix: &str,
) -> Vec<CompiledAps> {
    let tags = TagIndex::new(db);
    let mut out = Vec::new();
    for o in db.list(Kind::ApplicationPolicySet) {
        let Some(object::Kind::ApplicationPolicySet(aps)) = &o.kind else {
            continue;
        };
        let mut rules = Vec::new();
        let policies = in_sequence(db, &aps.firewall_policy_refs, |k| match k {
            object::Kind::FirewallPolicy(p) => Some(p),
            _ => None,
        });
        for fp in policies {
            let frs = in_sequence(db, &fp.firewall_rule_refs, |k| match k {
                object::Kind::FirewallRule(r) => Some(r),
                _ => None,
            });
            for fr in frs {
                rules.extend(expand_rule(fr, &tags, vn_ids));
            }
        }
        let mut aps_tags: Vec<u32> = aps
            .tag_refs
            .iter()
            .filter_map(|r| tag_ids.get(&r.uuid).copied())
            .collect();
        aps_tags.sort_unstable();
        aps_tags.dedup();
        // An APS bound to tags that are gone applies to nothing.
        if !aps.all_applications
            && (aps.tag_refs.is_empty() || aps_tags.len() != aps.tag_refs.len())
        {
            continue;
        }
        out.push(CompiledAps {
            all: aps.all_applications,
            tags: aps_tags,
            set: PolicyCfg {
                name: format!("{name_prefix}aps/{}", fq_string(&aps.fq_name)),
                rules,
                default: ActionCfg::Deny,
                network: false,
            },
        });
    }
    out.sort_by(|a, b| a.set.name.cmp(&b.set.name));
    out
}
