//! How the agent reaches etcd, and the roles that keep each node to its own keys.
//!
//! etcd is used as the operator sets it up: plain `http://` on a trusted loopback, or
//! `https://` with the CA that signed its server certificate (`--etcd-ca`); the agent
//! authenticates with a client certificate (`--etcd-cert`, `--etcd-key`: with etcd's
//! `--client-cert-auth` the certificate's common name is the etcd user) or with a user and
//! a password read from a file (`--etcd-user`, `--etcd-password-file`: never on a command
//! line). With authentication enabled, each node's user holds the role [`node_role`]:
//! read on every published route, write only under its own node's key prefix, so a node
//! (or whoever holds its credentials) cannot publish, replace or withdraw another node's
//! routes. [`provision`] creates those roles; `vrlab` runs its etcd that way.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_client::{
    Certificate, Client, ConnectOptions, Identity, Permission, TlsOptions, UserAddOptions,
};

/// The key prefix of published routes: `<prefix><node>/<vn>/<prefix>`; each node's
/// etcd role may write only under its own node's part.
pub const KEY_PREFIX: &str = "/vrouter/routes/";

/// The agent's etcd flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints for the route exchange between nodes (repeat or comma-separate);
    /// none: a single node. `https://` endpoints need --etcd-ca.
    #[arg(long = "etcd", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// The CA that signed etcd's server certificate (PEM).
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// The agent's client certificate for etcd (PEM); with etcd's --client-cert-auth its
    /// common name is the agent's etcd user.
    #[arg(long, requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The private key of --etcd-cert (PEM).
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// The agent's etcd user, for password authentication.
    #[arg(long, requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password (its first line).
    #[arg(long, requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

fn read(p: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

impl EtcdArgs {
    /// The connection options these flags describe; an error for a combination that
    /// cannot work (TLS files with `http://` endpoints, `https://` without a CA), or for
    /// a file that cannot be read. Checked at start, before anything runs.
    pub fn options(&self) -> Result<ConnectOptions> {
        let https = self.endpoints.iter().filter(|e| e.starts_with("https://"));
        let tls = self.etcd_ca.is_some() || self.etcd_cert.is_some();
        if let Some(e) = self.endpoints.iter().find(|e| {
            !(e.starts_with("https://") || e.starts_with("http://"))
                || e.contains(char::is_whitespace)
        }) {
            bail!("etcd endpoint {e:?}: http://HOST:PORT or https://HOST:PORT");
        }
        if https.count() != if tls { self.endpoints.len() } else { 0 } {
            bail!(
                "etcd endpoints {:?}: with --etcd-ca / --etcd-cert every endpoint is https://, \
                 without them every one is http://",
                self.endpoints
            );
        }
        let mut o = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if tls {
            let Some(ca) = &self.etcd_ca else {
                bail!("https:// etcd endpoints need --etcd-ca (the CA of etcd's certificate)");
            };
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(c), Some(k)) = (&self.etcd_cert, &self.etcd_key) {
                t = t.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            o = o.with_tls(t);
        }
        if let (Some(u), Some(p)) = (&self.etcd_user, &self.etcd_password_file) {
            let text = String::from_utf8(read(p)?)
                .with_context(|| format!("{}: not UTF-8", p.display()))?;
            let pw = text.lines().next().unwrap_or_default();
            if pw.is_empty() {
                bail!("{}: no password on its first line", p.display());
            }
            o = o.with_user(u.clone(), pw.to_string());
        }
        Ok(o)
    }

    /// Connects to one member of etcd that has a leader, trying the endpoints in turn
    /// from the one after the last call's start: a session stays on its member, and the
    /// next session (after that member was lost) goes to another. (etcd-client's own
    /// balance over several endpoints keeps sending requests to a member that is gone,
    /// so each client here has one endpoint, as etcd's own clients pin one.)
    pub async fn connect(&self) -> Result<Client> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let o = self.options()?;
        let n = self.endpoints.len();
        if n == 0 {
            bail!("no etcd endpoint given");
        }
        let start = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut failed = Vec::new();
        for i in 0..n {
            let e = &self.endpoints[(start + i) % n];
            match member(e, o.clone()).await {
                Ok(c) => return Ok(c),
                Err(err) => failed.push(format!("{e}: {err:#}")),
            }
        }
        bail!("connecting to etcd: {}", failed.join("; "))
    }
}

/// A client of the member at `endpoint`, if it answers within 5 s and knows a leader
/// (a member cut off from the others' majority serves nothing useful).
async fn member(endpoint: &str, o: ConnectOptions) -> Result<Client> {
    let mut c = Client::connect([endpoint], Some(o)).await?;
    let s = tokio::time::timeout(Duration::from_secs(5), c.status())
        .await
        .context("no answer in 5 s")??;
    if s.leader() == 0 {
        bail!("the member has no leader");
    }
    Ok(c)
}

/// The etcd role (and user) of a node: read on every route, write on its own.
pub fn node_role(node: Ipv4Addr) -> String {
    format!("vrouter-node-{node}")
}

/// The key prefix under which node `node` publishes (the trailing `/` keeps
/// 192.0.2.1 from covering 192.0.2.10).
pub fn node_prefix(node: Ipv4Addr) -> String {
    format!("{KEY_PREFIX}{node}/")
}

/// The etcd role that may write the cluster's configuration
/// ([`crate::cluster::CONFIG_PREFIX`]); every node role reads it.
pub const CONFIG_WRITER: &str = "vrouter-config-writer";

/// Sets up authentication on an etcd that has none yet: a `root` user (etcd's
/// administrator: with client-certificate authentication, the holder of a certificate
/// for the common name `root`) and, for each node, a role and user [`node_role`] that may
/// read every route and the cluster's configuration and write only its own routes. The
/// nodes in `config_writers` also hold [`CONFIG_WRITER`]: their agents' APIs may change
/// the configuration; the others' agents only follow it. Users have no password
/// (certificate authentication) unless `password` gives one for each. Ends by enabling
/// authentication; from then on only those users can use this etcd.
pub async fn provision(
    c: &mut Client,
    nodes: &[Ipv4Addr],
    config_writers: &[Ipv4Addr],
    password: Option<&dyn Fn(&str) -> String>,
) -> Result<()> {
    let add = async |c: &mut Client, name: &str| -> Result<()> {
        match password {
            Some(p) => c.user_add(name, p(name), None).await,
            None => {
                c.user_add(name, "", Some(UserAddOptions::new().with_no_pwd()))
                    .await
            }
        }
        .with_context(|| format!("adding etcd user {name}"))?;
        Ok(())
    };
    add(c, "root").await?;
    c.user_grant_role("root", "root")
        .await
        .context("granting root its role")?;
    let config = crate::cluster::CONFIG_PREFIX;
    c.role_add(CONFIG_WRITER)
        .await
        .with_context(|| format!("adding etcd role {CONFIG_WRITER}"))?;
    c.role_grant_permission(CONFIG_WRITER, Permission::read_write(config).with_prefix())
        .await?;
    for &n in nodes {
        let role = node_role(n);
        c.role_add(role.as_str())
            .await
            .with_context(|| format!("adding etcd role {role}"))?;
        c.role_grant_permission(role.as_str(), Permission::read(KEY_PREFIX).with_prefix())
            .await?;
        c.role_grant_permission(role.as_str(), Permission::read(config).with_prefix())
            .await?;
        c.role_grant_permission(
            role.as_str(),
            Permission::read_write(node_prefix(n)).with_prefix(),
        )
        .await?;
        add(c, &role).await?;
        c.user_grant_role(role.as_str(), role.as_str()).await?;
        if config_writers.contains(&n) {
            c.user_grant_role(role.as_str(), CONFIG_WRITER).await?;
        }
    }
    c.auth_enable()
        .await
        .context("enabling etcd authentication")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_tls_files_must_agree() {
        let a = |e: &[&str], ca: bool| EtcdArgs {
            endpoints: e.iter().map(|s| s.to_string()).collect(),
            etcd_ca: ca.then(|| "/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert!(a(&["http://127.0.0.1:2379"], false).options().is_ok());
        let err = |x: EtcdArgs| format!("{:#}", x.options().unwrap_err());
        assert!(err(a(&["https://127.0.0.1:2379"], false)).contains("every endpoint"));
        assert!(err(a(&["http://127.0.0.1:2379"], true)).contains("every endpoint"));
        assert!(err(a(&["127.0.0.1:2379"], false)).contains("http://HOST:PORT"));
        assert!(err(a(&["https://127.0.0.1:2379"], true)).contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn a_node_prefix_does_not_cover_another_node() {
        let a = node_prefix("192.0.2.1".parse().unwrap());
        assert!(!"/vrouter/routes/192.0.2.10/vn/10.0.0.1/32".starts_with(&a));
        assert!("/vrouter/routes/192.0.2.1/vn/10.0.0.1/32".starts_with(&a));
    }
}
