//! Reaching the agent's gRPC API: `unix:PATH`, the node's local socket (what the CNI
//! plugin, haproxy-manager and a node-local kube-manager use; the agent knows the caller
//! from its peer credentials), or `https://HOST:PORT`, mutual TLS from another machine (a
//! client certificate and key, and the CA that signed the agent's certificate). Plain TCP
//! is not served.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the agent serves by default.
pub const DEFAULT_SOCKET: &str = "/run/vrouter-agent/agent.sock";

/// The default target, `unix:` + [`DEFAULT_SOCKET`].
pub const DEFAULT_TARGET: &str = "unix:/run/vrouter-agent/agent.sock";

/// A client's TLS files, for an `https://` target.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsFiles {
    /// The CA that signed the agent's certificate (PEM), for an https:// agent.
    #[arg(long = "agent-ca", env = "VROUTER_AGENT_CA")]
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), for an https:// agent.
    #[arg(long = "agent-cert", env = "VROUTER_AGENT_CERT")]
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM), for an https:// agent.
    #[arg(long = "agent-key", env = "VROUTER_AGENT_KEY")]
    pub key: Option<PathBuf>,
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

/// What a target names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TLS endpoint (`https://HOST:PORT`).
    Tls(String),
}

/// Parses a target: `unix:PATH`, an absolute path, or `https://HOST:PORT`.
pub fn parse(target: &str) -> Result<Target> {
    if let Some(p) = target
        .strip_prefix("unix://")
        .or_else(|| target.strip_prefix("unix:"))
    {
        if p.is_empty() {
            bail!("{target:?}: unix: needs a path");
        }
        return Ok(Target::Unix(p.into()));
    }
    if target.starts_with('/') {
        return Ok(Target::Unix(target.into()));
    }
    if target.starts_with("https://") {
        return Ok(Target::Tls(target.to_string()));
    }
    if target.starts_with("http://") {
        bail!(
            "{target:?}: the agent serves no plain TCP; use unix:PATH on the node or https://HOST:PORT (mutual TLS)"
        );
    }
    bail!("{target:?}: an agent is unix:PATH or https://HOST:PORT")
}

/// An endpoint for the target, not yet connected.
fn endpoint(target: &Target, tls: Option<&TlsFiles>) -> Result<Endpoint> {
    let ep = match target {
        // The URI is not used for a Unix socket: the connector below dials the path.
        Target::Unix(_) => Endpoint::from_static("http://agent.local"),
        Target::Tls(url) => {
            let files = tls.filter(|t| t.ca.is_some() && t.cert.is_some() && t.key.is_some());
            let Some(t) = files else {
                bail!("{url}: an https:// agent needs --agent-ca, --agent-cert and --agent-key");
            };
            let (ca, cert, key) = (
                read(t.ca.as_deref().unwrap_or(Path::new("")))?,
                read(t.cert.as_deref().unwrap_or(Path::new("")))?,
                read(t.key.as_deref().unwrap_or(Path::new("")))?,
            );
            Endpoint::from_shared(url.clone())
                .with_context(|| format!("{url:?}: not a URL"))?
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca))
                        .identity(Identity::from_pem(cert, key)),
                )
                .with_context(|| format!("{url}: TLS set-up"))?
        }
    };
    Ok(ep.connect_timeout(Duration::from_secs(5)))
}

/// Connects to the agent at `target`.
pub async fn connect(target: &str, tls: Option<&TlsFiles>) -> Result<Channel> {
    connect_with(target, tls, None).await
}

/// Connects to the agent at `target`; each call on the channel times out after
/// `request_timeout` when one is given.
pub async fn connect_with(
    target: &str,
    tls: Option<&TlsFiles>,
    request_timeout: Option<Duration>,
) -> Result<Channel> {
    let t = parse(target)?;
    let mut ep = endpoint(&t, tls)?;
    if let Some(d) = request_timeout {
        ep = ep.timeout(d);
    }
    let ch = match t {
        Target::Unix(path) => {
            ep.connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))
            .await
        }
        Target::Tls(_) => ep.connect().await,
    };
    ch.with_context(|| format!("connecting to the agent at {target}"))
}

/// Polls an agent's status (every `every`, for `limit` at most) until its vrouter is
/// programmed with the configuration it holds, and that configuration has reached
/// revision `at` when one is given (another node's, over the cluster's configuration:
/// etcd's revisions are one sequence). Returns the last status.
pub async fn programmed(
    a: &mut crate::proto::agent_api_client::AgentApiClient<Channel>,
    at: Option<u64>,
    every: Duration,
    limit: Duration,
) -> Result<crate::proto::AgentStatus> {
    let end = std::time::Instant::now() + limit;
    loop {
        let s = a.status(crate::proto::Empty {}).await?.into_inner();
        let want = at.unwrap_or(0).max(s.config_revision);
        if s.vrouter_connected && s.config_revision >= want && s.programmed_revision >= want {
            return Ok(s);
        }
        if std::time::Instant::now() > end {
            bail!(
                "the agent did not program revision {want} in {limit:?} (it holds {}, has programmed {}): {}",
                s.config_revision,
                s.programmed_revision,
                s.last_error
            );
        }
        tokio::time::sleep(every).await;
    }
}
