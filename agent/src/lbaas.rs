//! HAProxy load balancers (provider `opencontrail` or `haproxy`): which instances a node
//! runs and the HAProxy configuration of each. A load balancer names the interfaces of
//! its instances; an interface bound to a node (`binding_host`) is an instance that
//! node's `haproxy-manager` runs: a network namespace plugged into the vrouter through
//! that interface, holding the VIP, with an HAProxy inside. The interfaces' local
//! preferences make one instance active and the others standbys (the vrouter routes the
//! VIP to the highest); an instance whose HAProxy is down has its port withdrawn, so the
//! next one takes the traffic.
//!
//! The configuration is a pure function of the objects, so that a change is a reload only
//! when the text changes. HTTP listeners route by the pools' host and path: an exact path
//! before a prefix, longer paths before shorter ones, a pool that names a host before
//! one that does not; the pool with neither is the default backend. A prefix matches
//! itself and what lies under it, element by element (`/a` takes `/a` and `/a/b`, not
//! `/ab`); a host `*.example.com` takes the names under `example.com`. A pool with no
//! member answers 503. TCP listeners forward to their (first) pool. HTTP answers carry
//! `X-Served-By` with the instance's name (`LB_INSTANCE` in HAProxy's environment), so
//! that one can tell which instance served.
//!
//! Hosts and paths come from tenants (Ingress rules): [`check_host`] and [`check_path`]
//! are what the store and kube-manager let through, and the configuration writes them in
//! single quotes (HAProxy's literal quoting), so nothing in them is a directive, a comment
//! or a variable. The FQ name in the header comment is written printable only. An instance
//! runs as an unprivileged user in an empty chroot ([`Sandbox`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::oper::is_haproxy;
use crate::proto::{self, object};
pub use crate::store::names::{check_host, check_path};

/// The environment variable that names an instance to its HAProxy.
pub const INSTANCE_ENV: &str = "LB_INSTANCE";

/// An instance's name: its port's (`lb-` and the interface UUID's first 8 digits).
pub fn instance_name(vmi_uuid: &str) -> String {
    format!("lb-{}", &vmi_uuid[..8.min(vmi_uuid.len())])
}

/// One HAProxy instance a node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The interface through which it is plugged in.
    pub vmi_uuid: String,
    /// Its load balancer.
    pub lb_uuid: String,
    /// The load balancer's FQ name, joined with ':'.
    pub lb_name: String,
    /// The VIP it listens on.
    pub vip: String,
    /// The HAProxy configuration.
    pub config: String,
}

/// The objects the instances are made of, by kind, from the agent's configuration.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Load balancers.
    pub loadbalancers: Vec<proto::Loadbalancer>,
    /// Listeners.
    pub listeners: Vec<proto::LoadbalancerListener>,
    /// Pools.
    pub pools: Vec<proto::LoadbalancerPool>,
    /// Members (children of their pool: `fq_name[..4]` is the pool's).
    pub members: Vec<proto::LoadbalancerMember>,
    /// Interfaces.
    pub interfaces: Vec<proto::VirtualMachineInterface>,
}

impl Objects {
    /// Sorts a flat list of objects into their kinds (others are left out).
    pub fn from_objects(objects: impl IntoIterator<Item = proto::Object>) -> Objects {
        let mut o = Objects::default();
        for x in objects {
            match x.kind {
                Some(object::Kind::Loadbalancer(v)) => o.loadbalancers.push(v),
                Some(object::Kind::LoadbalancerListener(v)) => o.listeners.push(v),
                Some(object::Kind::LoadbalancerPool(v)) => o.pools.push(v),
                Some(object::Kind::LoadbalancerMember(v)) => o.members.push(v),
                Some(object::Kind::VirtualMachineInterface(v)) => o.interfaces.push(v),
                _ => {}
            }
        }
        o
    }
}

/// The instances bound to `host`, in interface order.
pub fn instances(o: &Objects, host: &str) -> Vec<Instance> {
    let vmis: BTreeMap<&str, &proto::VirtualMachineInterface> =
        o.interfaces.iter().map(|v| (v.uuid.as_str(), v)).collect();
    let mut out = Vec::new();
    for lb in o.loadbalancers.iter().filter(|lb| is_haproxy(lb)) {
        if lb.vip_address.parse::<std::net::IpAddr>().is_err() {
            continue;
        }
        let config = config(o, lb);
        for r in &lb.virtual_machine_interface_refs {
            if vmis
                .get(r.uuid.as_str())
                .is_some_and(|v| v.binding_host == host)
            {
                out.push(Instance {
                    vmi_uuid: r.uuid.clone(),
                    lb_uuid: lb.uuid.clone(),
                    lb_name: lb.fq_name.join(":"),
                    vip: lb.vip_address.clone(),
                    config: config.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.vmi_uuid.cmp(&b.vmi_uuid));
    out
}

/// A value written as one HAProxy word in single quotes (no escapes, no variables inside).
/// Callers pass values [`check_host`] / [`check_path`] took, which hold no quote; one that
/// does anyway is cut at it, never let out of the word.
fn quoted(v: &str) -> String {
    let v = v.split('\'').next().unwrap_or_default();
    format!("'{v}'")
}

/// Text for a comment line: printable ASCII only (a newline would end the comment).
fn comment(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// How an instance's HAProxy drops its privileges once it has bound its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// User and group it runs as.
    pub user: String,
    /// Group.
    pub group: String,
    /// An empty directory it is chrooted into.
    pub chroot: std::path::PathBuf,
}

/// `config` with the sandbox's `user`, `group` and `chroot` in its `global` section.
pub fn sandboxed(config: &str, s: &Sandbox) -> String {
    let lines = format!(
        "global\n    user {}\n    group {}\n    chroot {}\n",
        quoted(&s.user),
        quoted(&s.group),
        quoted(&s.chroot.display().to_string())
    );
    config.replacen("global\n", &lines, 1)
}

/// A name HAProxy accepts for a section or an ACL.
fn ident(prefix: &str, uuid: &str) -> String {
    let short: String = uuid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("{prefix}{short}")
}

/// How specific a pool's match is (higher first).
fn specificity(p: &proto::LoadbalancerPool) -> (bool, bool, usize) {
    (!p.host.is_empty(), p.path_exact, p.path.len())
}

/// The host condition: exact (case-insensitive, port ignored) or a wildcard's suffix.
fn host_acl(host: &str) -> String {
    match host.strip_prefix('*') {
        Some(suffix) => format!("hdr(host),field(1,:) -m end -i {}", quoted(suffix)),
        None => format!("hdr(host),field(1,:) -m str -i {}", quoted(host)),
    }
}

/// The HAProxy configuration of one load balancer.
pub fn config(o: &Objects, lb: &proto::Loadbalancer) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# {} ({})",
        comment(&lb.fq_name.join(":")),
        comment(&lb.uuid)
    );
    s.push_str(
        "global\n    maxconn 4096\n\n\
         defaults\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n",
    );
    let mut listeners: Vec<&proto::LoadbalancerListener> = o
        .listeners
        .iter()
        .filter(|l| {
            l.loadbalancer_ref
                .as_ref()
                .is_some_and(|r| r.uuid == lb.uuid)
        })
        .collect();
    listeners.sort_by_key(|l| (l.protocol_port, l.uuid.clone()));
    let mut backends = String::new();
    for l in listeners {
        let http = matches!(l.protocol.as_str(), "HTTP" | "");
        let mut pools: Vec<&proto::LoadbalancerPool> = o
            .pools
            .iter()
            .filter(|p| {
                p.loadbalancer_listener_ref
                    .as_ref()
                    .is_some_and(|r| r.uuid == l.uuid)
            })
            .collect();
        pools.sort_by(|a, b| {
            specificity(b)
                .cmp(&specificity(a))
                .then_with(|| a.uuid.cmp(&b.uuid))
        });
        let _ = writeln!(s, "frontend {}", ident("listener-", &l.uuid));
        let _ = writeln!(s, "    bind {}:{}", lb.vip_address, l.protocol_port);
        if http {
            s.push_str("    mode http\n    option forwardfor\n");
            let _ = writeln!(
                s,
                "    http-response set-header X-Served-By \"${{{INSTANCE_ENV}}}\""
            );
        } else {
            s.push_str("    mode tcp\n");
        }
        let mut default = None;
        for p in &pools {
            let name = ident("pool-", &p.uuid);
            if !http || (p.host.is_empty() && p.path.is_empty()) {
                default.get_or_insert(name);
                continue;
            }
            let mut conds = Vec::new();
            if !p.host.is_empty() {
                let _ = writeln!(s, "    acl {name}-host {}", host_acl(&p.host));
                conds.push(format!("{name}-host"));
            }
            if !p.path.is_empty() {
                let prefix = p.path.trim_end_matches('/');
                if p.path_exact {
                    let _ = writeln!(s, "    acl {name}-path path -m str {}", quoted(&p.path));
                    conds.push(format!("{name}-path"));
                } else if !prefix.is_empty() {
                    // Lines of one ACL name are alternatives.
                    let _ = writeln!(s, "    acl {name}-path path -m str {}", quoted(prefix));
                    let _ = writeln!(
                        s,
                        "    acl {name}-path path -m beg {}",
                        quoted(&format!("{prefix}/"))
                    );
                    conds.push(format!("{name}-path"));
                }
            }
            if conds.is_empty() {
                // A prefix of "/" alone: every request of any host.
                default.get_or_insert(name);
                continue;
            }
            let _ = writeln!(s, "    use_backend {name} if {}", conds.join(" "));
        }
        if let Some(d) = default {
            let _ = writeln!(s, "    default_backend {d}");
        }
        s.push('\n');
        for p in pools {
            let name = ident("pool-", &p.uuid);
            let _ = writeln!(backends, "backend {name}");
            let _ = writeln!(backends, "    mode {}", if http { "http" } else { "tcp" });
            let balance = match p.loadbalancer_method.as_str() {
                "LEAST_CONNECTIONS" => "leastconn",
                "SOURCE_IP" => "source",
                _ => "roundrobin",
            };
            let _ = writeln!(backends, "    balance {balance}");
            let mut members: Vec<&proto::LoadbalancerMember> = o
                .members
                .iter()
                .filter(|m| m.fq_name.len() == p.fq_name.len() + 1)
                .filter(|m| m.fq_name[..p.fq_name.len()] == p.fq_name[..])
                .collect();
            members.sort_by(|a, b| a.fq_name.cmp(&b.fq_name));
            for m in members {
                let addr = match m.address.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V6(a)) => format!("[{a}]"),
                    Ok(a) => a.to_string(),
                    Err(_) => continue,
                };
                let _ = writeln!(
                    backends,
                    "    server {} {addr}:{} weight {}",
                    ident("member-", &m.uuid),
                    m.protocol_port,
                    m.weight.max(1)
                );
            }
            backends.push('\n');
        }
    }
    s.push_str(&backends);
    s
}
