//! The vrouter's objects as configuration applied to its tables: the start-up file
//! ([`Config`], TOML) and the same objects over the control socket (their types are
//! `vrouter_api::config`'s, re-exported here). [`Config::apply`] validates and applies
//! them to a [`TablesWriter`]; on the first error it stops, and the caller (start-up)
//! refuses to run.

pub use vrouter_api::config::*;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::policy::{Action, EndpointMatch, Policy, Rule, RuleSet};
use crate::tables::ecmp::{Ecmp, Member};
use crate::tables::{
    EncapSet, GlobalConfig, Nexthop, NhId, RouteEntry, TableError, TablesWriter, Tunnel,
    TunnelKind, Vif, VifId, VifKind, VrfId,
};
use crate::tables::{NodePort, NodePorts, Service, ServicePort};
use crate::wire::MacAddr;

/// Applies the objects' own check of a value.
impl From<InvalidValue> for ConfigError {
    fn from(e: InvalidValue) -> ConfigError {
        ConfigError::Value {
            object: e.object,
            why: e.why,
        }
    }
}

impl From<Encap> for TunnelKind {
    fn from(e: Encap) -> TunnelKind {
        match e {
            Encap::MplsUdp => TunnelKind::MplsUdp,
            Encap::MplsGre => TunnelKind::MplsGre,
            Encap::Vxlan => TunnelKind::Vxlan,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node-wide settings.
    #[serde(default)]
    pub global: GlobalSection,
    /// VRFs.
    #[serde(default, rename = "vrf")]
    pub vrfs: Vec<VrfCfg>,
    /// Interfaces.
    #[serde(default, rename = "vif")]
    pub vifs: Vec<VifCfg>,
    /// Nexthops.
    #[serde(default, rename = "nexthop")]
    pub nexthops: Vec<NexthopCfg>,
    /// Routes.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteCfg>,
    /// MPLS labels.
    #[serde(default, rename = "label")]
    pub labels: Vec<LabelCfg>,
    /// VXLAN VNIs.
    #[serde(default, rename = "vni")]
    pub vnis: Vec<VniCfg>,
    /// Rule sets that vifs refer to by name.
    #[serde(default, rename = "policy", skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyCfg>,
    /// Endpoint attribute records.
    #[serde(default, rename = "attr", skip_serializing_if = "Vec::is_empty")]
    pub attrs: Vec<AttrCfg>,
}

/// A configuration error, naming the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file does not parse.
    #[error("{0}")]
    Syntax(String),
    /// A field's value is malformed.
    #[error("{object}: {why}")]
    Value {
        /// Which object.
        object: String,
        /// What is wrong.
        why: String,
    },
    /// The tables refused the object.
    #[error("{object}: {source}")]
    Table {
        /// Which object.
        object: String,
        /// Why.
        source: TableError,
    },
}

fn mac(object: &str, s: &str) -> Result<MacAddr, ConfigError> {
    s.parse().map_err(|why| ConfigError::Value {
        object: object.into(),
        why,
    })
}

/// A MAC a VM sends from: unicast only.
fn unicast_mac(object: &str, s: &str) -> Result<MacAddr, ConfigError> {
    let m = mac(object, s)?;
    if m.is_multicast() {
        return Err(ConfigError::Value {
            object: object.into(),
            why: format!("{s}: a VM's MAC must be unicast"),
        });
    }
    Ok(m)
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Applies everything to `w` (not published). Stops at the first refused object; the
    /// caller decides whether to roll back (`TablesWriter::transaction`). Gives back the
    /// named rule sets, compiled once: the vifs hold them, and whoever changes them later
    /// (the control socket) starts from the same compiled sets.
    pub fn apply(
        &self,
        w: &mut TablesWriter,
    ) -> Result<std::collections::BTreeMap<String, RuleSet>, ConfigError> {
        apply_global(w, &self.global)?;
        for v in &self.vrfs {
            w.add_vrf(VrfId(v.id))
                .map_err(table(format!("vrf {}", v.id)))?;
        }
        for a in &self.attrs {
            apply_attr(w, a)?;
        }
        let compiled = self
            .policies
            .iter()
            .map(|p| Ok((p.name.clone(), compile_policy(p)?)))
            .collect::<Result<std::collections::BTreeMap<_, _>, ConfigError>>()?;
        let find = |n: &str| compiled.get(n).cloned();
        for v in &self.vifs {
            apply_vif_with(w, v, &find)?;
        }
        // Nexthops that refer to others after them.
        let mut nexthops: Vec<&NexthopCfg> = self.nexthops.iter().collect();
        nexthops.sort_by_key(|n| n.kind.depth());
        for n in nexthops {
            apply_nexthop(w, n)?;
        }
        for r in &self.routes {
            apply_route(w, r)?;
        }
        for l in &self.labels {
            w.set_label(l.label, NhId(l.nh))
                .map_err(table(format!("label {}", l.label)))?;
        }
        for v in &self.vnis {
            w.set_vni(v.vni, VrfId(v.vrf))
                .map_err(table(format!("vni {}", v.vni)))?;
        }
        Ok(compiled)
    }
}

fn table(object: String) -> impl FnOnce(TableError) -> ConfigError {
    move |source| ConfigError::Table { object, source }
}

/// Applies the node-wide settings.
pub fn apply_global(w: &mut TablesWriter, g: &GlobalSection) -> Result<(), ConfigError> {
    let mut global = GlobalConfig::default();
    if !g.encap_priority.is_empty() {
        global.encap_priority = g.encap_priority.iter().map(|e| (*e).into()).collect();
    }
    if let Some(m) = &g.vrouter_mac {
        global.vrouter_mac = mac("global.vrouter_mac", m)?;
    }
    global.fabric_vif = g.fabric_vif.map(VifId);
    global.host_vif = g.host_vif.map(VifId);
    global.vif_max_flows = g.vif_max_flows;
    global.vif_max_snat_ports = g.vif_max_snat_ports;
    if let Some(p) = &g.snat_ports {
        p.validate()?;
        global.snat_ports = Some((p.tcp, p.udp));
    }
    w.set_global(global).map_err(table("global".into()))
}

/// Adds or replaces an interface that names no rule set.
pub fn apply_vif(w: &mut TablesWriter, v: &VifCfg) -> Result<(), ConfigError> {
    apply_vif_with(w, v, &|_| None)
}

/// Sets an endpoint attribute record.
pub fn apply_attr(w: &mut TablesWriter, a: &AttrCfg) -> Result<(), ConfigError> {
    let object = format!("attr {}", a.id);
    if a.id == 0 {
        return Err(ConfigError::Value {
            object,
            why: "record 0 is the empty record and cannot be set".into(),
        });
    }
    let attr = crate::policy::EndpointAttr {
        vn: a.vn,
        tags: a.tags.clone(),
    };
    w.set_attr(a.id, attr).map_err(table(object))
}

fn compile_endpoint(object: &str, e: &EndpointCfg) -> Result<EndpointMatch, ConfigError> {
    let bad = |why: String| ConfigError::Value {
        object: object.into(),
        why,
    };
    match (&e.prefix, e.vn, &e.tags) {
        (None, None, None) => Ok(EndpointMatch::Any),
        (Some(p), None, None) => {
            let (a, l) = parse_prefix(p).map_err(bad)?;
            Ok(EndpointMatch::prefix(a, l))
        }
        (None, Some(vn), None) => Ok(EndpointMatch::Vn(vn)),
        (None, None, Some(t)) => {
            let mut t = t.clone();
            t.sort_unstable();
            Ok(EndpointMatch::Tags(t))
        }
        _ => Err(bad("an endpoint matches one of prefix, vn or tags".into())),
    }
}

fn action(a: ActionCfg) -> Action {
    match a {
        ActionCfg::Pass => Action::Pass,
        ActionCfg::Deny => Action::Deny,
    }
}

/// The most rules one rule set may hold (a bound on what one request can make every flow
/// setup and every interface that names the set carry; the agent's translations stay far
/// below it).
pub const MAX_RULES: usize = 65_536;

/// Compiles a named rule set.
pub fn compile_policy(p: &PolicyCfg) -> Result<RuleSet, ConfigError> {
    let object = format!("policy {}", p.name);
    if p.rules.len() > MAX_RULES {
        return Err(ConfigError::Value {
            object,
            why: format!("{} rules, more than {MAX_RULES}", p.rules.len()),
        });
    }
    let rules = p
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let o = format!("{object} rule {i}");
            Ok(Rule {
                proto: r.proto,
                src: compile_endpoint(&o, &r.src)?,
                dst: compile_endpoint(&o, &r.dst)?,
                sport: r.sport.unwrap_or((0, u16::MAX)),
                dport: r.dport.unwrap_or((0, u16::MAX)),
                action: action(r.action),
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(RuleSet::new(
        p.name.clone(),
        rules,
        action(p.default),
        p.network,
    ))
}

/// Adds or replaces an interface, resolving its rule-set names to compiled sets with
/// `find` (each compiled once, shared by the vifs that name it).
pub fn apply_vif_with(
    w: &mut TablesWriter,
    v: &VifCfg,
    find: &dyn Fn(&str) -> Option<RuleSet>,
) -> Result<(), ConfigError> {
    let object = format!("vif {} ({})", v.id, v.name);
    if !(MIN_MTU..=MAX_MTU).contains(&v.mtu) {
        return Err(ConfigError::Value {
            object,
            why: format!("mtu {} not in {MIN_MTU}..={MAX_MTU}", v.mtu),
        });
    }
    let sets = |names: &[String]| -> Result<Vec<RuleSet>, ConfigError> {
        names
            .iter()
            .map(|n| {
                find(n).ok_or_else(|| ConfigError::Value {
                    object: object.clone(),
                    why: format!("policy {n:?} is not defined"),
                })
            })
            .collect()
    };
    let (ingress, egress) = (sets(&v.ingress)?, sets(&v.egress)?);
    let policy =
        (!ingress.is_empty() || !egress.is_empty()).then(|| Arc::new(Policy { ingress, egress }));
    let vif = Vif {
        id: VifId(v.id),
        name: v.name.clone(),
        kind: match v.kind {
            VifKindCfg::Physical => VifKind::Physical,
            VifKindCfg::Host => VifKind::Host,
            VifKindCfg::Virtual => VifKind::Virtual,
            VifKindCfg::Agent => VifKind::Agent,
        },
        mac: mac(&object, &v.mac)?,
        vrf: VrfId(v.vrf),
        ip4: v.ip4,
        ip6: v.ip6,
        mtu: v.mtu,
        policy,
        attr: v.attr,
        vm_mac: v
            .vm_mac
            .as_deref()
            .map(|m| unicast_mac(&object, m))
            .transpose()?,
        allowed: v
            .allowed
            .iter()
            .map(|a| {
                let (addr, len) = parse_prefix(&a.prefix).map_err(|why| ConfigError::Value {
                    object: object.clone(),
                    why: format!("allowed address pair: {why}"),
                })?;
                if len > if addr.is_ipv4() { 32 } else { 128 } {
                    return Err(ConfigError::Value {
                        object: object.clone(),
                        why: format!("allowed address pair {:?}: length out of range", a.prefix),
                    });
                }
                Ok(crate::tables::AllowedSource {
                    addr,
                    len,
                    mac: a
                        .mac
                        .as_deref()
                        .map(|m| unicast_mac(&object, m))
                        .transpose()?,
                })
            })
            .collect::<Result<_, ConfigError>>()?,
    };
    w.add_vif(vif).map_err(table(object))
}

/// Adds or replaces a nexthop.
pub fn apply_nexthop(w: &mut TablesWriter, n: &NexthopCfg) -> Result<(), ConfigError> {
    let object = format!("nexthop {}", n.id);
    let nh = nexthop(&object, &n.kind)?;
    w.set_nexthop(NhId(n.id), nh).map_err(table(object))
}

/// Adds or replaces a route.
pub fn apply_route(w: &mut TablesWriter, r: &RouteCfg) -> Result<(), ConfigError> {
    let object = format!("route {} in vrf {}", r.prefix, r.vrf);
    let (addr, len) = parse_prefix(&r.prefix).map_err(|why| ConfigError::Value {
        object: object.clone(),
        why,
    })?;
    let e = RouteEntry {
        nh: NhId(r.nh),
        label: r.label,
        attr: r.attr,
    };
    w.add_route(VrfId(r.vrf), addr, len, e)
        .map(|_| ())
        .map_err(table(object))
}

/// The configuration form of a table interface (for dumps).
pub fn vif_cfg(v: &Vif, device: Option<String>) -> VifCfg {
    VifCfg {
        id: v.id.0,
        name: v.name.clone(),
        kind: match v.kind {
            VifKind::Physical => VifKindCfg::Physical,
            VifKind::Host => VifKindCfg::Host,
            VifKind::Virtual => VifKindCfg::Virtual,
            VifKind::Agent => VifKindCfg::Agent,
        },
        device,
        mac: v.mac.to_string(),
        vrf: v.vrf.0,
        ip4: v.ip4,
        ip6: v.ip6,
        mtu: v.mtu,
        ingress: v
            .policy
            .iter()
            .flat_map(|p| p.ingress.iter().map(|r| r.name.clone()))
            .collect(),
        egress: v
            .policy
            .iter()
            .flat_map(|p| p.egress.iter().map(|r| r.name.clone()))
            .collect(),
        attr: v.attr,
        vm_mac: v.vm_mac.map(|m| m.to_string()),
        allowed: v
            .allowed
            .iter()
            .map(|a| AllowedCfg {
                prefix: format!("{}/{}", a.addr, a.len),
                mac: a.mac.map(|m| m.to_string()),
            })
            .collect(),
    }
}

/// The configuration form of a table nexthop (for dumps).
pub fn nexthop_cfg(id: NhId, n: &Nexthop) -> NexthopCfg {
    let encaps = |set: EncapSet| {
        [
            (TunnelKind::MplsUdp, Encap::MplsUdp),
            (TunnelKind::MplsGre, Encap::MplsGre),
            (TunnelKind::Vxlan, Encap::Vxlan),
        ]
        .into_iter()
        .filter(|(k, _)| set.has(*k))
        .map(|(_, e)| e)
        .collect()
    };
    let kind = match n {
        Nexthop::Discard => NexthopKind::Discard,
        Nexthop::Receive { vif } => NexthopKind::Receive { vif: vif.0 },
        Nexthop::Resolve { vif } => NexthopKind::Resolve { vif: vif.0 },
        Nexthop::Encap { vif, dmac, smac } => NexthopKind::Encap {
            vif: vif.0,
            dmac: dmac.to_string(),
            smac: smac.to_string(),
        },
        Nexthop::Snat {
            vif,
            ip,
            smac,
            dmac,
        } => NexthopKind::Snat {
            vif: vif.0,
            ip: *ip,
            smac: smac.to_string(),
            dmac: dmac.to_string(),
        },
        Nexthop::Tunnel(t) => NexthopKind::Tunnel {
            vif: t.out_vif.0,
            src: t.src,
            dst: t.dst,
            smac: t.smac.to_string(),
            dmac: t.dmac.to_string(),
            encaps: encaps(t.encaps),
            inner_dmac: t.inner_dmac.map(|m| m.to_string()),
        },
        Nexthop::Composite(e) => NexthopKind::Composite {
            members: e
                .members()
                .iter()
                .zip(e.weights())
                .map(|(m, w)| MemberCfg {
                    nh: m.nh.0,
                    label: m.label,
                    weight: *w,
                })
                .collect(),
        },
        Nexthop::Service(s) => NexthopKind::Service {
            members: s
                .ecmp
                .members()
                .iter()
                .zip(s.ecmp.weights())
                .zip(&s.backends)
                .map(|((m, w), a)| ServiceMemberCfg {
                    nh: m.nh.0,
                    label: m.label,
                    weight: *w,
                    addr: *a,
                })
                .collect(),
            ports: s
                .ports
                .iter()
                .map(|p| ServicePortCfg {
                    proto: p.proto,
                    port: p.port,
                    target: p.target,
                })
                .collect(),
            affinity: s.client_ip_affinity,
        },
        Nexthop::NodePorts(n) => NexthopKind::NodePorts {
            ports: n
                .ports
                .iter()
                .map(|p| NodePortCfg {
                    proto: p.proto,
                    port: p.port,
                    service: p.service.0,
                    service_port: p.service_port,
                })
                .collect(),
            host: n.host.0,
        },
        Nexthop::L2Flood { members } => NexthopKind::L2Flood {
            members: members.iter().map(|m| m.0).collect(),
        },
    };
    NexthopCfg { id: id.0, kind }
}

fn member(nh: u32, label: u32) -> Member {
    Member {
        nh: NhId(nh),
        label,
    }
}

fn nexthop(object: &str, k: &NexthopKind) -> Result<Nexthop, ConfigError> {
    let bad_members = |e: crate::tables::ecmp::EcmpError| ConfigError::Value {
        object: object.into(),
        why: e.to_string(),
    };
    Ok(match k {
        NexthopKind::Discard => Nexthop::Discard,
        NexthopKind::Receive { vif } => Nexthop::Receive { vif: VifId(*vif) },
        NexthopKind::Resolve { vif } => Nexthop::Resolve { vif: VifId(*vif) },
        NexthopKind::Encap { vif, dmac, smac } => Nexthop::Encap {
            vif: VifId(*vif),
            dmac: mac(object, dmac)?,
            smac: mac(object, smac)?,
        },
        NexthopKind::Snat {
            vif,
            ip,
            smac,
            dmac,
        } => Nexthop::Snat {
            vif: VifId(*vif),
            ip: *ip,
            smac: mac(object, smac)?,
            dmac: mac(object, dmac)?,
        },
        NexthopKind::Tunnel {
            vif,
            src,
            dst,
            smac,
            dmac,
            encaps,
            inner_dmac,
        } => Nexthop::Tunnel(Tunnel {
            out_vif: VifId(*vif),
            src: *src,
            dst: *dst,
            smac: mac(object, smac)?,
            dmac: mac(object, dmac)?,
            inner_dmac: inner_dmac.as_deref().map(|m| mac(object, m)).transpose()?,
            encaps: if encaps.is_empty() {
                EncapSet::ALL
            } else {
                EncapSet(encaps.iter().fold(0, |a, e| a | TunnelKind::from(*e).bit()))
            },
        }),
        NexthopKind::Composite { members } => {
            let m: Vec<_> = members
                .iter()
                .map(|m| (member(m.nh, m.label), m.weight))
                .collect();
            Nexthop::Composite(Arc::new(Ecmp::new(&m).map_err(bad_members)?))
        }
        NexthopKind::Service {
            members,
            ports,
            affinity,
        } => {
            let b: Vec<_> = members
                .iter()
                .map(|m| (member(m.nh, m.label), m.weight, m.addr))
                .collect();
            let ports = ports
                .iter()
                .map(|p| ServicePort {
                    proto: p.proto,
                    port: p.port,
                    target: p.target,
                })
                .collect();
            let mut s = Service::new(&b, ports).map_err(bad_members)?;
            s.client_ip_affinity = *affinity;
            Nexthop::Service(Arc::new(s))
        }
        NexthopKind::NodePorts { ports, host } => Nexthop::NodePorts(Arc::new(NodePorts {
            ports: ports
                .iter()
                .map(|p| NodePort {
                    proto: p.proto,
                    port: p.port,
                    service: NhId(p.service),
                    service_port: p.service_port,
                })
                .collect(),
            host: NhId(*host),
        })),
        NexthopKind::L2Flood { members } => Nexthop::L2Flood {
            members: members.iter().map(|m| NhId(*m)).collect(),
        },
    })
}
