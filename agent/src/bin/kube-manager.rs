//! `kube-manager`: translates Kubernetes objects into VNC objects and keeps one or more
//! agents in sync with them.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use agent::k8s::{Cluster, KubeConfig, manifest, sync, translate, watch};
use agent::proto::config_api_client::ConfigApiClient;
use anyhow::{Context, Result};
use clap::Parser;

/// Kubernetes -> VNC: namespaces become projects, pods virtual-machines with an interface
/// and an instance-ip, labels tags; isolated namespaces get their own pod and service
/// networks; network policies become firewall policies. The source is a Kubernetes API
/// server (`--kube`: watched, in-cluster or through KUBECONFIG) or a set of manifests
/// (files, directories, or `-` for standard input, applied in order like
/// `kubectl apply -f`). Every agent given gets the same objects, in one all-or-nothing
/// batch each.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// An agent: `unix:PATH` on its node, or `https://HOST:PORT` (mutual TLS, with
    /// --agent-ca/--agent-cert/--agent-key). Repeat for several nodes.
    #[arg(long, default_value = agent::client::DEFAULT_TARGET)]
    agent: Vec<String>,
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
    tls: &agent::client::TlsFiles,
    cluster: &Cluster,
    quiet: bool,
) -> Result<()> {
    for a in agents {
        let mut c = ConfigApiClient::new(agent::client::connect(a, Some(tls)).await?);
        let networks = sync::networks(&mut c).await?;
        let public = sync::public_subnets(cfg, &mut c).await?;
        let forwarded = sync::forwarded(&mut c).await?;
        let nodes = if cfg.nested_mode {
            sync::node_interfaces(&mut c).await?
        } else {
            Default::default()
        };
        // Pods' addresses come from the agent: services get the members of new pods on a
        // second round.
        let mut r = sync::Report::default();
        let mut t;
        let mut rounds = 0;
        loop {
            let addresses = sync::addresses(&mut c).await?;
            t = translate::translate_with(
                cfg,
                cluster,
                &translate::Underlay {
                    networks: &networks,
                    node_interfaces: &nodes,
                    addresses: &addresses,
                    public_subnets: &public,
                    forwarded: &forwarded,
                },
            );
            let round = sync::apply(cfg, &mut c, &t)
                .await
                .with_context(|| format!("agent {a}"))?;
            rounds += 1;
            let done = !round.changed() || rounds == 3;
            // The last round's refusals are the ones that stand.
            r.refused.clear();
            r.add(round);
            if done {
                break;
            }
        }
        for e in &r.refused {
            eprintln!("kube-manager: event: Refused: {e}");
        }
        let changed = r.changed();
        if changed || !quiet {
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
async fn follow(cfg: &KubeConfig, agents: &[String], tls: &agent::client::TlsFiles) -> Result<()> {
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
        match once(cfg, agents, tls, &cluster, !first).await {
            Ok(()) => first = false,
            Err(e) => eprintln!("kube-manager: {e:#}"),
        }
    }
}

async fn run(a: Args) -> Result<()> {
    let cfg = config(&a)?;
    if a.kube {
        return follow(&cfg, &a.agent, &a.tls).await;
    }
    if !a.watch {
        let cluster = read(&a.files)?;
        return once(&cfg, &a.agent, &a.tls, &cluster, false).await;
    }
    let mut first = true;
    loop {
        // A manifest that does not parse or an agent that is away is reported and tried
        // again; nothing is applied from a half-read set of manifests.
        match read(&a.files) {
            Ok(cluster) => {
                if let Err(e) = once(&cfg, &a.agent, &a.tls, &cluster, !first).await {
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
