//! Brings the agent's configuration to a translation: kube-manager's objects (those whose
//! FQ name carries the cluster name) that the translation lacks are deleted, missing ones
//! created, changed ones updated, in one batch, which the agent applies entirely or not at
//! all; a change it refuses is left out (an event for that object) and the rest is sent
//! again, so one bad object stops nothing else. Fields the agent assigns (UUIDs, MACs,
//! VNIs, ids, addresses) are kept.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use tonic::transport::Channel;

use super::KubeConfig;
use super::translate::{ORDER, Translation};
use crate::kinds::{self, Kind, fq_string};
use crate::proto::config_api_client::ConfigApiClient;
use crate::proto::{self, Object, change, object};

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Objects created.
    pub created: usize,
    /// Objects updated.
    pub updated: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// Changes the agent refused, each with why (`kind fq-name: message`): left out, the
    /// rest applied; tried again at the next sync.
    pub refused: Vec<String>,
}

impl Report {
    /// Whether anything was created, updated or deleted.
    pub fn changed(&self) -> bool {
        self.created + self.updated + self.deleted > 0
    }

    /// Adds another round's counts.
    pub fn add(&mut self, o: Report) {
        self.created += o.created;
        self.updated += o.updated;
        self.deleted += o.deleted;
        self.refused.extend(o.refused);
    }
}

/// One sync of a cluster into an agent's configuration, as kube-manager does it: the
/// underlay read from the agent (networks, public subnets, forwarded ports, the nodes'
/// interfaces in nested mode), the cluster translated and applied; pods' addresses come
/// from the agent, so services get the members of new pods on a further round (three at
/// most). Returns the last translation and what was done (the last round's refusals).
pub async fn sync(
    cfg: &KubeConfig,
    c: &mut ConfigApiClient<Channel>,
    cluster: &super::Cluster,
) -> Result<(Translation, Report)> {
    let networks = networks(c).await?;
    let public = public_subnets(cfg, c).await?;
    let forwarded = forwarded(c).await?;
    let nodes = if cfg.nested_mode {
        node_interfaces(c).await?
    } else {
        Default::default()
    };
    let mut report = Report::default();
    let mut rounds = 0;
    loop {
        let addresses = addresses(c).await?;
        let t = super::translate::translate_with(
            cfg,
            cluster,
            &super::translate::Underlay {
                networks: &networks,
                node_interfaces: &nodes,
                addresses: &addresses,
                public_subnets: &public,
                forwarded: &forwarded,
            },
        );
        let round = apply(cfg, c, &t).await?;
        rounds += 1;
        let done = !round.changed() || rounds == 3;
        // The last round's refusals are the ones that stand.
        report.refused.clear();
        report.add(round);
        if done {
            return Ok((t, report));
        }
    }
}

/// What a change is about, for a refusal's event.
fn change_subject(c: &proto::Change) -> String {
    match &c.change {
        Some(change::Change::Create(o)) | Some(change::Change::Update(o)) => {
            let kind = kinds::kind_of(o).map_or("object", |k| k.name());
            format!("{kind} {}", fq_string(kinds::meta(o).1))
        }
        Some(change::Change::Delete(r)) => {
            if r.fq_name.is_empty() {
                format!("delete {} {}", r.r#type, r.uuid)
            } else {
                format!("delete {} {}", r.r#type, fq_string(&r.fq_name))
            }
        }
        None => "empty change".into(),
    }
}

/// Sends the changes as one batch; when the agent refuses one of them (it names which),
/// that change is left out with its reason and the rest is sent again, so one bad object
/// (a taken address, a missing network) stops nothing else. At most one round per change;
/// an error that names no change (the agent away) is returned as it is.
pub async fn send_isolating(
    c: &mut ConfigApiClient<Channel>,
    mut changes: Vec<proto::Change>,
) -> Result<Vec<String>> {
    let mut refused = Vec::new();
    while !changes.is_empty() {
        let status = match c
            .batch(proto::BatchRequest {
                changes: changes.clone(),
            })
            .await
        {
            Ok(_) => break,
            Err(s) => s,
        };
        let index = status
            .metadata()
            .get(crate::store::CHANGE_INDEX)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&i| i < changes.len());
        let Some(i) = index else {
            anyhow::bail!("the agent refused the changes: {}", status.message());
        };
        let bad = changes.remove(i);
        let message = status.message();
        let message = message
            .strip_prefix(&format!("change {i}: "))
            .unwrap_or(message);
        let subject = change_subject(&bad);
        // The agent's messages usually start with the object already.
        let message = message
            .strip_prefix(&format!("{subject}: "))
            .unwrap_or(message);
        refused.push(format!("{subject}: {message}"));
    }
    Ok(refused)
}

/// Whether an object with this FQ name is kube-manager's.
pub fn owned(cfg: &KubeConfig, kind: Kind, fq: &[String]) -> bool {
    let c = &cfg.cluster_name;
    let mine = |s: &String| s.starts_with(&format!("{c}-")) || s.starts_with(&format!("{c}__"));
    match kind {
        // Tags in a shared cluster project carry only the namespace / label in their name.
        Kind::Tag => {
            fq.len() == 3
                && (mine(&fq[1])
                    || cfg
                        .cluster_project
                        .as_deref()
                        .is_some_and(|p| fq_string(&fq[..2]) == p))
        }
        _ => fq.last().is_some_and(mine),
    }
}

fn owned_obj(cfg: &KubeConfig, o: &Object) -> bool {
    owned(
        cfg,
        kinds::kind_of(o).unwrap_or(Kind::Project),
        kinds::meta(o).1,
    )
}

/// The object as compared: no UUIDs, references by type and FQ name only, assigned
/// fields cleared.
fn comparable(o: &Object) -> Object {
    let mut o = o.clone();
    if let Some((uuid, _)) = kinds::meta_mut(&mut o) {
        uuid.clear();
    }
    for (_, _, r) in kinds::refs_mut(&mut o) {
        r.uuid.clear();
    }
    match &mut o.kind {
        Some(object::Kind::VirtualNetwork(v)) => {
            v.vxlan_network_identifier = 0;
            v.virtual_network_network_id = 0;
        }
        Some(object::Kind::VirtualMachineInterface(v)) => {
            v.mac_address.clear();
            v.sub_interface_vlan_tag = 0;
        }
        Some(object::Kind::InstanceIp(i)) => i.instance_ip_address.clear(),
        Some(object::Kind::SecurityGroup(s)) => s.security_group_id = 0,
        Some(object::Kind::Tag(t)) => t.tag_id = 0,
        Some(object::Kind::Loadbalancer(l)) => l.vip_address.clear(),
        Some(object::Kind::FloatingIp(f)) => f.floating_ip_address.clear(),
        _ => {}
    }
    o
}

/// `desired` with what cannot change once set: a network forwarded in the underlay stays
/// so (with its ipam), whatever the annotations say now.
fn pin(desired: &Object, actual: &Object) -> Object {
    let mut o = desired.clone();
    if let (Some(object::Kind::VirtualNetwork(d)), Some(object::Kind::VirtualNetwork(a))) =
        (&mut o.kind, &actual.kind)
        && a.ip_fabric_forwarding
    {
        d.ip_fabric_forwarding = true;
        d.fabric_snat = false;
        d.network_ipam_refs = a.network_ipam_refs.clone();
    }
    o
}

/// `desired` with what the agent assigned to `actual`.
fn adopt(desired: &Object, actual: &Object) -> Object {
    let mut o = desired.clone();
    let uuid = kinds::meta(actual).0.to_string();
    if let Some((u, _)) = kinds::meta_mut(&mut o) {
        *u = uuid;
    }
    match (&mut o.kind, &actual.kind) {
        (Some(object::Kind::VirtualNetwork(d)), Some(object::Kind::VirtualNetwork(a))) => {
            d.vxlan_network_identifier = a.vxlan_network_identifier;
            d.virtual_network_network_id = a.virtual_network_network_id;
        }
        (
            Some(object::Kind::VirtualMachineInterface(d)),
            Some(object::Kind::VirtualMachineInterface(a)),
        ) => {
            d.mac_address = a.mac_address.clone();
            d.sub_interface_vlan_tag = a.sub_interface_vlan_tag;
        }
        (Some(object::Kind::InstanceIp(d)), Some(object::Kind::InstanceIp(a)))
            if d.instance_ip_address.is_empty() =>
        {
            d.instance_ip_address = a.instance_ip_address.clone();
        }
        (Some(object::Kind::SecurityGroup(d)), Some(object::Kind::SecurityGroup(a))) => {
            d.security_group_id = a.security_group_id;
        }
        (Some(object::Kind::Tag(d)), Some(object::Kind::Tag(a))) => d.tag_id = a.tag_id,
        (Some(object::Kind::Loadbalancer(d)), Some(object::Kind::Loadbalancer(a)))
            if d.vip_address.is_empty() =>
        {
            d.vip_address = a.vip_address.clone();
        }
        (Some(object::Kind::FloatingIp(d)), Some(object::Kind::FloatingIp(a)))
            if d.floating_ip_address.is_empty() =>
        {
            d.floating_ip_address = a.floating_ip_address.clone();
        }
        _ => {}
    }
    o
}

/// The changes that take `actual` (the agent's objects of the kinds kube-manager makes)
/// to `desired`: creates and updates in dependency order, then deletes of kube-manager's
/// own objects that are no longer desired, in reverse order. Objects it did not create
/// (a shared cluster project) are used as they are.
pub fn plan(cfg: &KubeConfig, desired: &[Object], actual: &[Object]) -> Vec<proto::Change> {
    let key = |o: &Object| {
        let k = kinds::kind_of(o).unwrap_or(Kind::Project);
        (
            ORDER.iter().position(|x| *x == k).unwrap_or(ORDER.len()),
            kinds::meta(o).1.to_vec(),
        )
    };
    let have: BTreeMap<_, &Object> = actual.iter().map(|o| (key(o), o)).collect();
    let want: BTreeSet<_> = desired.iter().map(key).collect();
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    for d in desired {
        match have.get(&key(d)) {
            None => creates.push((key(d), d.clone())),
            Some(a) => {
                let d = pin(d, a);
                if comparable(a) != comparable(&d) && owned_obj(cfg, &d) {
                    updates.push((key(&d), adopt(&d, a)));
                }
            }
        }
    }
    creates.sort_by(|a, b| a.0.cmp(&b.0));
    updates.sort_by(|a, b| a.0.cmp(&b.0));
    let mut deletes: Vec<_> = actual
        .iter()
        .filter(|a| !want.contains(&key(a)) && owned_obj(cfg, a))
        .collect();
    deletes.sort_by_key(|a| std::cmp::Reverse(key(a)));
    let mut out: Vec<proto::Change> = Vec::new();
    for (_, o) in creates {
        out.push(proto::Change {
            change: Some(change::Change::Create(o)),
        });
    }
    for (_, o) in updates {
        out.push(proto::Change {
            change: Some(change::Change::Update(o)),
        });
    }
    for a in deletes {
        let k = kinds::kind_of(a).unwrap_or(Kind::Project);
        out.push(proto::Change {
            change: Some(change::Change::Delete(proto::Ref {
                r#type: k.name().into(),
                uuid: kinds::meta(a).0.to_string(),
                fq_name: kinds::meta(a).1.to_vec(),
            })),
        });
    }
    out
}

/// Updates of the networks kube-manager does not own (the ip-fabric network) that give
/// them exactly kube-manager's policy references `attachments` asks for, keeping every
/// other reference they have.
pub fn attach(
    cfg: &KubeConfig,
    attachments: &[(Vec<String>, Vec<String>)],
    actual: &[Object],
) -> Vec<proto::Change> {
    let mut out = Vec::new();
    for o in actual {
        let Some(object::Kind::VirtualNetwork(vn)) = &o.kind else {
            continue;
        };
        if owned(cfg, Kind::VirtualNetwork, &vn.fq_name) {
            continue;
        }
        let want: Vec<&Vec<String>> = attachments
            .iter()
            .filter(|(net, _)| *net == vn.fq_name)
            .map(|(_, p)| p)
            .collect();
        let mut refs: Vec<proto::Ref> = vn
            .network_policy_refs
            .iter()
            .filter(|r| !owned(cfg, Kind::NetworkPolicy, &r.fq_name) || want.contains(&&r.fq_name))
            .cloned()
            .collect();
        for p in want {
            if !refs.iter().any(|r| r.fq_name == *p) {
                refs.push(proto::Ref {
                    r#type: Kind::NetworkPolicy.name().into(),
                    uuid: String::new(),
                    fq_name: p.clone(),
                });
            }
        }
        if refs.len() != vn.network_policy_refs.len()
            || refs
                .iter()
                .zip(&vn.network_policy_refs)
                .any(|(a, b)| a.fq_name != b.fq_name)
        {
            let mut vn = vn.clone();
            vn.network_policy_refs = refs;
            out.push(proto::Change {
                change: Some(change::Change::Update(Object {
                    kind: Some(object::Kind::VirtualNetwork(vn)),
                })),
            });
        }
    }
    out
}

/// The ports ip-fabric SNAT reserves on every node: TCP 56000-57023, UDP 57024-58047.
pub const SNAT_PORTS: [(&str, u32, u32); 2] = [("tcp", 56000, 57023), ("udp", 57024, 58047)];

/// The change that records [`SNAT_PORTS`] in the global vrouter configuration (creating
/// it, or adding what it lacks and keeping the rest), or none when they are there.
pub fn reserve_ports(actual: Option<&proto::GlobalVrouterConfig>) -> Option<proto::Change> {
    let mut g = actual
        .cloned()
        .unwrap_or_else(|| proto::GlobalVrouterConfig {
            fq_name: vec![
                "default-global-system-config".into(),
                "default-global-vrouter-config".into(),
            ],
            ..Default::default()
        });
    let mut added = false;
    for (protocol, start_port, end_port) in SNAT_PORTS {
        let pool = proto::PortTranslationPool {
            protocol: protocol.into(),
            start_port,
            end_port,
        };
        if !g.port_translation_pools.contains(&pool) {
            g.port_translation_pools.push(pool);
            added = true;
        }
    }
    let o = Object {
        kind: Some(object::Kind::GlobalVrouterConfig(g)),
    };
    added.then(|| proto::Change {
        change: Some(if actual.is_some() {
            change::Change::Update(o)
        } else {
            change::Change::Create(o)
        }),
    })
}

/// The agent's objects of the kinds kube-manager makes.
pub async fn actual(c: &mut ConfigApiClient<Channel>) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for k in ORDER {
        let list = c
            .list(proto::ListRequest {
                r#type: k.name().into(),
                parent_fq_name: vec![],
            })
            .await
            .with_context(|| format!("listing {}", k.name()))?
            .into_inner();
        out.extend(list.objects);
    }
    Ok(out)
}

/// Every object of a kind the agent holds.
async fn list(c: &mut ConfigApiClient<Channel>, kind: Kind) -> Result<proto::ListResponse> {
    Ok(c.list(proto::ListRequest {
        r#type: kind.name().into(),
        parent_fq_name: vec![],
    })
    .await
    .with_context(|| format!("listing {}", kind.name()))?
    .into_inner())
}

/// The FQ names of the networks and floating-IP pools the agent holds (for custom-network
/// annotations and external IPs).
pub async fn networks(c: &mut ConfigApiClient<Channel>) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for kind in [Kind::VirtualNetwork, Kind::FloatingIpPool] {
        let list = list(c, kind).await?;
        out.extend(list.objects.iter().map(|o| fq_string(kinds::meta(o).1)));
    }
    Ok(out)
}

/// The FQ names (joined with ':') of the networks the agent forwards in the underlay.
pub async fn forwarded(c: &mut ConfigApiClient<Channel>) -> Result<BTreeSet<String>> {
    Ok(list(c, Kind::VirtualNetwork)
        .await?
        .objects
        .iter()
        .filter_map(|o| match &o.kind {
            Some(object::Kind::VirtualNetwork(v)) if v.ip_fabric_forwarding => {
                Some(fq_string(&v.fq_name))
            }
            _ => None,
        })
        .collect())
}

/// The subnets of the public floating-IP pool's network (none without a pool or network).
pub async fn public_subnets(
    cfg: &KubeConfig,
    c: &mut ConfigApiClient<Channel>,
) -> Result<Vec<String>> {
    let Some(pool) = &cfg.public_fip_pool else {
        return Ok(vec![]);
    };
    let vns = list(c, Kind::VirtualNetwork).await?;
    let Some(vn) = vns.objects.iter().find_map(|o| match &o.kind {
        Some(object::Kind::VirtualNetwork(v)) if v.fq_name[..] == pool[..3] => Some(v.clone()),
        _ => None,
    }) else {
        return Ok(vec![]);
    };
    let ipams = list(c, Kind::NetworkIpam).await?;
    let mut out = Vec::new();
    for r in &vn.network_ipam_refs {
        if r.subnets.is_empty() {
            // A flat-subnet ipam: its own subnets.
            let fq = r
                .ipam
                .as_ref()
                .map(|i| i.fq_name.clone())
                .unwrap_or_default();
            for o in &ipams.objects {
                if let Some(object::Kind::NetworkIpam(i)) = &o.kind
                    && i.fq_name == fq
                {
                    out.extend(i.ipam_subnets.iter().map(|s| s.prefix.clone()));
                }
            }
        }
        out.extend(r.subnets.iter().map(|s| s.prefix.clone()));
    }
    Ok(out)
}

/// Applies a translation to one agent in one batch; a change the agent refuses is left
/// out and reported (see [`send_isolating`]), the rest applies.
pub async fn apply(
    cfg: &KubeConfig,
    c: &mut ConfigApiClient<Channel>,
    t: &Translation,
) -> Result<Report> {
    let have = actual(c).await?;
    let global = list(c, Kind::GlobalVrouterConfig).await?;
    let global = global.objects.iter().find_map(|o| match &o.kind {
        Some(object::Kind::GlobalVrouterConfig(g)) => Some(g),
        _ => None,
    });
    let mut changes: Vec<proto::Change> = reserve_ports(global).into_iter().collect();
    changes.extend(plan(cfg, &t.objects, &have));
    // Attachments after the creates and updates (the policies exist), before the deletes
    // (a policy that goes is detached first).
    let at = changes
        .iter()
        .position(|c| matches!(c.change, Some(change::Change::Delete(_))))
        .unwrap_or(changes.len());
    let attached = attach(cfg, &t.attachments, &have);
    changes.splice(at..at, attached);
    let mut r = Report::default();
    let count = |r: &mut Report, ch: &proto::Change, n: isize| {
        let f = match &ch.change {
            Some(change::Change::Create(_)) => &mut r.created,
            Some(change::Change::Update(_)) => &mut r.updated,
            Some(change::Change::Delete(_)) => &mut r.deleted,
            None => return,
        };
        *f = f.saturating_add_signed(n);
    };
    for ch in &changes {
        count(&mut r, ch, 1);
    }
    let all = changes.clone();
    r.refused = send_isolating(c, changes).await?;
    // Refused changes did not happen: take them out of the counts.
    for line in r.refused.clone() {
        if let Some(ch) = all
            .iter()
            .find(|ch| line.starts_with(&format!("{}: ", change_subject(ch))))
        {
            count(&mut r, ch, -1);
        }
    }
    Ok(r)
}

/// Nested mode: the interfaces that hold each address (node address -> interface FQ name),
/// from the agent's instance IPs.
pub async fn node_interfaces(
    c: &mut ConfigApiClient<Channel>,
) -> Result<BTreeMap<String, Vec<String>>> {
    let list = list(c, Kind::InstanceIp).await?;
    let mut out = BTreeMap::new();
    for o in list.objects {
        if let Some(object::Kind::InstanceIp(i)) = o.kind
            && let Some(vmi) = i.virtual_machine_interface_refs.first()
        {
            out.insert(i.instance_ip_address, vmi.fq_name.clone());
        }
    }
    Ok(out)
}

/// The addresses the agent assigned, by instance-ip FQ name (pods' addresses, for the
/// members of services) and by loadbalancer FQ name (services' VIPs, for the backends of
/// ingresses).
pub async fn addresses(c: &mut ConfigApiClient<Channel>) -> Result<BTreeMap<Vec<String>, String>> {
    let iips = list(c, Kind::InstanceIp).await?.objects;
    let lbs = list(c, Kind::Loadbalancer).await?.objects;
    Ok(iips
        .into_iter()
        .chain(lbs)
        .filter_map(|o| match o.kind {
            Some(object::Kind::InstanceIp(i)) => Some((i.fq_name, i.instance_ip_address)),
            Some(object::Kind::Loadbalancer(l)) => Some((l.fq_name, l.vip_address)),
            _ => None,
        })
        .filter(|(_, a)| !a.is_empty())
        .collect())
}
