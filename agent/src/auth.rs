//! Who may call what on the agent's gRPC API, decided at the edge, before any handler runs.
//!
//! A caller is known by how it reached the agent:
//! - over the Unix socket, by the kernel's peer credentials (`SO_PEERCRED`): root and the
//!   agent's own user may do everything; anyone else gets what `--grant` gives their uid,
//!   their primary group or one of their supplementary groups (read from
//!   `/proc/<pid>/status` while the connection is open);
//! - over TCP, only with mutual TLS: by the common name of the client certificate the
//!   agent's client CA signed (`--grant ...=cn:NAME`).
//!
//! Roles: `read` (Get, List, Watch, ListPorts, Status, health, reflection), `ports`
//! (AddPort, AddPorts, DeletePort: the CNI plugin, haproxy-manager), `config` (Create,
//! Update, Delete, Batch: kube-manager, an operator), `admin` (all three). A method the
//! table below does not name needs every role. A refused call gets `PERMISSION_DENIED`,
//! is logged with the caller and counted (`agent_api_refused_total`).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};

/// A set of roles.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// Nothing.
    pub const NONE: Roles = Roles(0);
    /// Read configuration, ports and status; watch.
    pub const READ: Roles = Roles(1);
    /// Plug and unplug local ports.
    pub const PORTS: Roles = Roles(2);
    /// Write configuration.
    pub const CONFIG: Roles = Roles(4);
    /// Everything.
    pub const ADMIN: Roles = Roles(7);

    /// Whether every role of `need` is in this set.
    pub fn covers(self, need: Roles) -> bool {
        self.0 & need.0 == need.0
    }

    /// Both sets.
    pub fn union(self, o: Roles) -> Roles {
        Roles(self.0 | o.0)
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Roles::ADMIN {
            return f.write_str("admin");
        }
        let names: Vec<&str> = [
            (Roles::READ, "read"),
            (Roles::PORTS, "ports"),
            (Roles::CONFIG, "config"),
        ]
        .into_iter()
        .filter(|(r, _)| self.covers(*r))
        .map(|(_, n)| n)
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join("+"))
        }
    }
}

impl FromStr for Roles {
    type Err = String;

    fn from_str(s: &str) -> Result<Roles, String> {
        s.split('+').try_fold(Roles::NONE, |acc, r| {
            Ok(acc.union(match r {
                "read" => Roles::READ,
                // Plugging a port means looking at ports and status too.
                "ports" => Roles::PORTS.union(Roles::READ),
                "config" => Roles::CONFIG.union(Roles::READ),
                "admin" => Roles::ADMIN,
                _ => return Err(format!("{r:?}: a role is read, ports, config or admin")),
            }))
        })
    }
}

/// The roles a method needs; a method not named here needs every role.
pub fn needed(path: &str) -> Roles {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    match (service, method) {
        ("vnc.v1.ConfigApi", "Get" | "List" | "Watch") => Roles::READ,
        ("vnc.v1.ConfigApi", "Create" | "Update" | "Delete" | "Batch") => Roles::CONFIG,
        ("vnc.v1.AgentApi", "ListPorts" | "Status") => Roles::READ,
        ("vnc.v1.AgentApi", "AddPort" | "AddPorts" | "DeletePort") => Roles::PORTS,
        ("grpc.health.v1.Health", _) => Roles::READ,
        ("grpc.reflection.v1.ServerReflection", _) => Roles::READ,
        _ => Roles::ADMIN,
    }
}

/// Whom a grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user id (over the Unix socket).
    Uid(u32),
    /// A group id: the caller's primary or a supplementary group (over the Unix socket).
    Gid(u32),
    /// The common name of a client certificate (over mutual TLS).
    Cn(String),
}

/// `ROLES=SUBJECT`: roles (`read`, `ports`, `config`, `admin`, joined with `+`) for `uid:N`,
/// `gid:N`, `user:NAME`, `group:NAME` (resolved through /etc/passwd and /etc/group when
/// parsed) or `cn:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What is granted.
    pub roles: Roles,
    /// To whom.
    pub subject: Subject,
}

impl FromStr for Grant {
    type Err = String;

    fn from_str(s: &str) -> Result<Grant, String> {
        let (roles, who) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: a grant is ROLES=uid:N|gid:N|user:NAME|group:NAME|cn:NAME")
        })?;
        let roles: Roles = roles.parse()?;
        let (kind, name) = who.split_once(':').ok_or_else(|| {
            format!("{who:?}: a subject is uid:N, gid:N, user:NAME, group:NAME or cn:NAME")
        })?;
        let id = |n: &str| {
            n.parse::<u32>()
                .map_err(|_| format!("{n:?}: not a numeric id"))
        };
        let subject = match kind {
            "uid" => Subject::Uid(id(name)?),
            "gid" => Subject::Gid(id(name)?),
            "user" => Subject::Uid(lookup("/etc/passwd", name)?),
            "group" => Subject::Gid(lookup("/etc/group", name)?),
            "cn" if !name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control) => {
                Subject::Cn(name.to_string())
            }
            "cn" => {
                return Err(format!(
                    "{name:?}: a common name of 1 to 64 printable characters"
                ));
            }
            _ => {
                return Err(format!(
                    "{kind:?}: a subject is uid, gid, user, group or cn"
                ));
            }
        };
        Ok(Grant { roles, subject })
    }
}

/// The id of `name` in a passwd- or group-format file (name:x:id:...).
fn lookup(file: &str, name: &str) -> Result<u32, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (n, _, id) = (f.next()?, f.next()?, f.next()?);
            (n == name).then(|| id.parse().ok()).flatten()
        })
        .next()
        .ok_or_else(|| format!("{name:?}: not in {file}"))
}

/// The numbers of a `Uid:`/`Gid:`/`Groups:` line of a /proc status file.
fn status_ids(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The agent's effective user id.
pub fn own_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_ids(&s, "Uid:").get(1).copied())
        .unwrap_or(0)
}

/// Who a refused caller was, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A local process.
    Local {
        /// Its user id.
        uid: u32,
        /// Its primary group.
        gid: u32,
        /// Its process id.
        pid: Option<i32>,
    },
    /// A TLS client.
    Tls {
        /// The certificate's common name ("" when it has none).
        cn: String,
        /// Where it connected from.
        addr: Option<std::net::SocketAddr>,
    },
    /// Nothing the agent can vouch for (plain TCP: never served).
    Unknown,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Local { uid, gid, pid } => {
                write!(f, "uid {uid} gid {gid}")?;
                if let Some(p) = pid {
                    write!(f, " pid {p}")?;
                }
                Ok(())
            }
            Caller::Tls { cn, addr } => {
                write!(f, "certificate cn={cn:?}")?;
                if let Some(a) = addr {
                    write!(f, " from {a}")?;
                }
                Ok(())
            }
            Caller::Unknown => f.write_str("an unauthenticated peer"),
        }
    }
}

/// Decides callers' roles.
#[derive(Debug)]
pub struct Policy {
    grants: Vec<Grant>,
    own_uid: u32,
    /// Calls refused.
    pub refused: AtomicU64,
}

impl Policy {
    /// A policy with these grants, for an agent running as `own_uid`.
    pub fn new(grants: Vec<Grant>, own_uid: u32) -> Policy {
        Policy {
            grants,
            own_uid,
            refused: AtomicU64::new(0),
        }
    }

    /// The roles of a local process.
    pub fn local(&self, uid: u32, gids: &BTreeSet<u32>) -> Roles {
        if uid == 0 || uid == self.own_uid {
            return Roles::ADMIN;
        }
        self.grants
            .iter()
            .filter(|g| match g.subject {
                Subject::Uid(u) => u == uid,
                Subject::Gid(g) => gids.contains(&g),
                Subject::Cn(_) => false,
            })
            .fold(Roles::NONE, |acc, g| acc.union(g.roles))
    }

    /// The roles of a TLS client with this certificate common name.
    pub fn tls(&self, cn: &str) -> Roles {
        self.grants
            .iter()
            .filter(|g| matches!(&g.subject, Subject::Cn(c) if c == cn))
            .fold(Roles::NONE, |acc, g| acc.union(g.roles))
    }

    /// The caller of a request and its roles, from what the transport put in its
    /// extensions.
    pub fn caller(&self, ext: &http::Extensions) -> (Caller, Roles) {
        if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
            let cn = tls
                .peer_certs()
                .and_then(|c| c.first().and_then(|der| common_name(der)))
                .unwrap_or_default();
            let roles = if cn.is_empty() {
                Roles::NONE
            } else {
                self.tls(&cn)
            };
            let addr = tls.get_ref().remote_addr;
            return (Caller::Tls { cn, addr }, roles);
        }
        if let Some(cred) = ext.get::<UdsConnectInfo>().and_then(|u| u.peer_cred) {
            let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
            let mut gids = BTreeSet::from([gid]);
            // Supplementary groups matter only to a caller the uid alone does not decide.
            if uid != 0 && uid != self.own_uid {
                if let Some(status) =
                    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
                {
                    // The pid is the connecting process's; it must still be that user's.
                    if status_ids(&status, "Uid:").first() == Some(&uid) {
                        gids.extend(status_ids(&status, "Groups:"));
                    }
                }
            }
            return (Caller::Local { uid, gid, pid }, self.local(uid, &gids));
        }
        (Caller::Unknown, Roles::NONE)
    }
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

/// The tower layer that puts a [`Policy`] in front of every service.
#[derive(Debug, Clone)]
pub struct AuthLayer(pub Arc<Policy>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            policy: Arc::clone(&self.0),
        }
    }
}

/// A service behind the policy.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    policy: Arc<Policy>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let need = needed(req.uri().path());
        let (caller, roles) = self.policy.caller(req.extensions());
        if roles.covers(need) {
            return Box::pin(self.inner.call(req));
        }
        self.policy.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            method = req.uri().path(),
            %caller,
            has = %roles,
            needs = %need,
            "call refused"
        );
        let status = tonic::Status::permission_denied(format!(
            "{} needs the {need} role; {caller} has {roles}",
            req.uri().path()
        ));
        Box::pin(std::future::ready(Ok(status.into_http())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_need_their_roles_and_unknown_ones_need_all() {
        assert_eq!(needed("/vnc.v1.ConfigApi/List"), Roles::READ);
        assert_eq!(needed("/vnc.v1.ConfigApi/Batch"), Roles::CONFIG);
        assert_eq!(needed("/vnc.v1.AgentApi/AddPort"), Roles::PORTS);
        assert_eq!(needed("/vnc.v1.AgentApi/Status"), Roles::READ);
        assert_eq!(needed("/vnc.v1.AgentApi/Reboot"), Roles::ADMIN);
        assert_eq!(needed("/other.Svc/Get"), Roles::ADMIN);
        assert_eq!(needed("garbage"), Roles::ADMIN);
    }

    #[test]
    fn grants_parse_and_bad_ones_say_why() {
        let g: Grant = "ports=uid:1000".parse().unwrap();
        assert_eq!(g.subject, Subject::Uid(1000));
        assert!(g.roles.covers(Roles::PORTS) && g.roles.covers(Roles::READ));
        assert!(!g.roles.covers(Roles::CONFIG));
        let g: Grant = "read+config=cn:kube-manager".parse().unwrap();
        assert_eq!(g.subject, Subject::Cn("kube-manager".into()));
        let root: Grant = "admin=user:root".parse().unwrap();
        assert_eq!(root.subject, Subject::Uid(0));
        for bad in [
            "ports",
            "write=uid:1",
            "read=uid:x",
            "read=host:a",
            "read=cn:",
            "read=user:no-such-user-here",
        ] {
            assert!(bad.parse::<Grant>().is_err(), "{bad}");
        }
    }

    #[test]
    fn local_callers_get_their_grants_and_root_gets_everything() {
        let p = Policy::new(
            vec![
                "ports=gid:600".parse().unwrap(),
                "read=uid:1001".parse().unwrap(),
                "config=cn:km".parse().unwrap(),
            ],
            0,
        );
        assert_eq!(p.local(0, &BTreeSet::new()), Roles::ADMIN);
        assert_eq!(p.local(1001, &BTreeSet::from([1001])), Roles::READ);
        let r = p.local(1002, &BTreeSet::from([1002, 600]));
        assert!(r.covers(Roles::PORTS) && !r.covers(Roles::CONFIG));
        assert_eq!(p.local(1003, &BTreeSet::from([1003])), Roles::NONE);
        assert!(p.tls("km").covers(Roles::CONFIG));
        assert_eq!(p.tls("other"), Roles::NONE);
        // An agent run as a user of its own trusts that user like root.
        assert_eq!(
            Policy::new(vec![], 42).local(42, &BTreeSet::new()),
            Roles::ADMIN
        );
    }

    #[test]
    fn proc_status_lines_give_their_ids() {
        let s =
            "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nGroups:\t4 24 27 \n";
        assert_eq!(status_ids(s, "Uid:"), vec![1000, 1000, 1000, 1000]);
        assert_eq!(status_ids(s, "Groups:"), vec![4, 24, 27]);
        assert!(status_ids(s, "Nope:").is_empty());
        assert_eq!(
            own_uid(),
            status_ids(
                &std::fs::read_to_string("/proc/self/status").unwrap(),
                "Uid:"
            )[1]
        );
    }
}
