//! `kube-manager`: translates Kubernetes objects into VNC objects and keeps one or more
//! agents in sync with them.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use agent::k8s::{Cluster, KubeConfig, manifest, sync, watch};
use agent::proto::config_api_client::ConfigApiClient;
use anyhow::{Context, Result};
use clap::Parser;

/// Kubernetes -> VNC: namespaces become projects, pods virtual-machines with an interface
/// and an instance-ip, labels tags; isolated namespaces get their own pod and service
/// networks; network policies become firewall policies. The source is a Kubernetes API
/// server (`--kube`: watched, in-cluster or through KUBECONFIG) or a set of manifests
/// (files, directories, or `-` for standard input, applied in order like
/// `kubectl apply -f`). Every agent given gets the same objects, in one all-or-nothing
/// batch each; agents that share the cluster's configuration (`--config-store etcd`) are
/// written once (--shared-config).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// An agent: `unix:PATH` on its node, or `https://HOST:PORT` (mutual TLS, with
    /// --agent-ca/--agent-cert/--agent-key). Repeat for several nodes.
    #[arg(long, default_value = agent::client::DEFAULT_TARGET)]
    agent: Vec<String>,
    /// The agents share one configuration (theirs is the cluster's, `--config-store
    /// etcd`): it is written once, through the first agent that answers, the others
    /// tried in turn when it is away.
    #[arg(long)]
    shared_config: bool,
    #[command(flatten)]
    tls: agent::client::TlsFiles,
    /// A file with a `[KUBERNETES]` section (Contrail's contrail-kubernetes.conf).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `cluster_name`.
    #[arg(long)]
    cluster_name: Option<String>,
    /// Overrides `pod_subnets` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pod_subnets: Vec<String>,
    /// Overrides `service_subnets` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    service_subnets: Vec<String>,
    /// Overrides `cluster_project` (`domain:project`).
    #[arg(long)]
    cluster_project: Option<String>,
    /// Overrides `cluster_network` (an existing network's FQ name).
    #[arg(long)]
    cluster_network: Option<String>,
    /// Manifests: files, directories (their .yaml/.yml/.json files) or `-`.
    #[arg(
        short = 'f',
        long = "filename",
        required_unless_present = "kube",
        conflicts_with = "kube"
    )]
    files: Vec<PathBuf>,
    /// Watch a Kubernetes API server instead (the in-cluster service account, else
    /// KUBECONFIG or ~/.kube/config); every change re-syncs the agents.
    #[arg(long)]
    kube: bool,
    /// Keep running: read the manifests again and re-sync every --interval-ms.
    #[arg(long)]
    watch: bool,
    /// Poll interval with --watch.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

fn config(a: &Args) -> Result<KubeConfig> {
    let mut c = match &a.config {
        Some(p) => KubeConfig::load(p)?,
        None => KubeConfig::default(),
    };
    if let Some(n) = &a.cluster_name {
        c.cluster_name = n.clone();
    }
    if !a.pod_subnets.is_empty() {
        c.pod_subnets = a.pod_subnets.clone();
    }
    if !a.service_subnets.is_empty() {
        c.service_subnets = a.service_subnets.clone();
    }
    if a.cluster_project.is_some() {
        c.cluster_project = a.cluster_project.clone();
    }
    if a.cluster_network.is_some() {
        c.cluster_network = a.cluster_network.clone();
    }
    c.check()?;
    Ok(c)
}

fn read(files: &[PathBuf]) -> Result<Cluster> {
    let mut cluster = Cluster::default();
    for f in files {
        let skipped = cluster.apply(manifest::read(f)?);
        for s in skipped {
            eprintln!("kube-manager: {s}: kind not translated, left out");
        }
    }
    Ok(cluster)
}

async fn once(
    cfg: &KubeConfig,
    agents: &[String],
    shared: bool,
    tls: &agent::client::TlsFiles,
    cluster: &Cluster,
    quiet: bool,
) -> Result<()> {
    if shared {
        // One configuration for all: written once, through the first agent that takes
        // it; the others are there for when it is away.
        let mut last = None;
        for a in agents {
            match once_to(cfg, a, tls, cluster, quiet).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    eprintln!("kube-manager: {e:#}; trying the next agent");
                    last = Some(e);
                }
            }
        }
        return Err(last.unwrap_or_else(|| anyhow::anyhow!("no agent given")));
    }
    for a in agents {
        once_to(cfg, a, tls, cluster, quiet).await?;
    }
    Ok(())
}

async fn once_to(
    cfg: &KubeConfig,
    a: &str,
    tls: &agent::client::TlsFiles,
    cluster: &Cluster,
    quiet: bool,
) -> Result<()> {
    let mut c = ConfigApiClient::new(
        agent::client::connect(a, Some(tls))
            .await
            .with_context(|| format!("agent {a}"))?,
    );
    let (t, r) = sync::sync(cfg, &mut c, cluster)
        .await
        .with_context(|| format!("agent {a}"))?;
    for e in &r.refused {
        eprintln!("kube-manager: event: Refused: {e}");
    }
    if r.changed() || !quiet {
        println!(
            "{a}: {} pods, {} created, {} updated, {} deleted",
            t.pods.len(),
            r.created,
            r.updated,
            r.deleted
        );
        for e in &t.events {
            eprintln!("kube-manager: event: {e}");
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let run = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(a)));
    match run {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-manager: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Follows the API server: each change (with the ones that come within 200 ms) is synced.
async fn follow(
    cfg: &KubeConfig,
    agents: &[String],
    shared: bool,
    tls: &agent::client::TlsFiles,
) -> Result<()> {
    use futures::StreamExt;
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes API server configured (in-cluster or KUBECONFIG): {e}")
    })?;
    let mut clusters = watch::clusters(client).boxed();
    let mut first = true;
    loop {
        let mut cluster = tokio::select! {
            c = clusters.next() => match c {
                Some(c) => c,
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        // Changes coming within 200 ms of each other are taken together, but for 2 s at
        // most: a cluster that changes every 100 ms is still synced.
        let since = std::time::Instant::now();
        while since.elapsed() < Duration::from_secs(2) {
            match tokio::time::timeout(Duration::from_millis(200), clusters.next()).await {
                Ok(Some(c)) => cluster = c,
                _ => break,
            }
        }
        match once(cfg, agents, shared, tls, &cluster, !first).await {
            Ok(()) => first = false,
            Err(e) => eprintln!("kube-manager: {e:#}"),
        }
    }
}

async fn run(a: Args) -> Result<()> {
    let cfg = config(&a)?;
    if a.kube {
        return follow(&cfg, &a.agent, a.shared_config, &a.tls).await;
    }
    if !a.watch {
        let cluster = read(&a.files)?;
        return once(&cfg, &a.agent, a.shared_config, &a.tls, &cluster, false).await;
    }
    let mut first = true;
    loop {
        // A manifest that does not parse or an agent that is away is reported and tried
        // again; nothing is applied from a half-read set of manifests.
        match read(&a.files) {
            Ok(cluster) => {
                if let Err(e) =
                    once(&cfg, &a.agent, a.shared_config, &a.tls, &cluster, !first).await
                {
                    eprintln!("kube-manager: {e:#}");
                } else {
                    first = false;
                }
            }
            Err(e) => eprintln!("kube-manager: {e:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(a.interval_ms)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
