//! `agent`: the control agent daemon.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agent::api::Api;
use agent::listen::Listen;
use agent::oper::Bases;
use agent::persist::Store;
use agent::program::{self, Shared};
use agent::proto::{agent_api_server::AgentApiServer, config_api_server::ConfigApiServer};
use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::UnixListener;

/// The control agent: serves VNC configuration over gRPC and programs the vrouter through
/// its control socket. Configuration is kept in an embedded store under --data-dir and
/// survives restarts; on (re)connect the vrouter is reconciled by diff.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where the gRPC API is served (repeat for several): `unix:PATH`, a Unix socket whose
    /// callers are known by their peer credentials, or `HOST:PORT`, served with mutual TLS
    /// only (--tls-cert, --tls-key, --tls-client-ca).
    #[arg(long, default_value = agent::client::DEFAULT_TARGET)]
    listen: Vec<agent::listen::Listen>,
    /// The group a Unix socket belongs to (mode 0660; without it 0600, root only). Its
    /// members can connect; what they may call is what --grant gives them.
    #[arg(long)]
    socket_group: Option<String>,
    /// Roles for callers other than root and the agent's own user (repeat): ROLES=SUBJECT,
    /// ROLES from read, ports, config, admin joined with `+`; SUBJECT uid:N, gid:N,
    /// user:NAME, group:NAME (Unix socket) or cn:NAME (a TLS client certificate). E.g.
    /// `ports=group:vrouter-cni`, `config=cn:kube-manager`.
    #[arg(long = "grant")]
    grants: Vec<agent::auth::Grant>,
    #[command(flatten)]
    tls: agent::listen::ServerTls,
    /// Prometheus metrics listen address (`/metrics`); off when not given. Give a loopback
    /// address unless the scraper is elsewhere: the page is not authenticated.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The vrouter's control socket.
    #[arg(long, default_value = vrouter_api::control::DEFAULT_SOCKET)]
    vrouter_socket: PathBuf,
    /// Where the configuration store lives.
    #[arg(long, default_value = "/var/lib/vrouter-agent")]
    data_dir: PathBuf,
    /// The node's fabric address, when the vrouter's fabric vif has none (or there is no
    /// fabric).
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// The MAC the vrouter uses towards VMs (gateway and ARP answers).
    #[arg(long, default_value = "00:00:5e:00:01:00")]
    vrouter_mac: String,
    /// The fabric gateway's MAC: pods of networks with ip-fabric SNAT reach outside the
    /// overlay through it, with the node's address; without it there is no SNAT.
    #[arg(long, value_parser = parse_mac)]
    gateway_mac: Option<String>,
    /// First vif index the agent uses (lower ones belong to the vrouter's start-up config).
    #[arg(long, default_value_t = Bases::default().vif)]
    vif_base: u32,
    /// First VRF the agent uses.
    #[arg(long, default_value_t = Bases::default().vrf)]
    vrf_base: u32,
    /// First nexthop the agent uses.
    #[arg(long, default_value_t = Bases::default().nh)]
    nh_base: u32,
    /// First MPLS label the agent uses.
    #[arg(long, default_value_t = Bases::default().label)]
    label_base: u32,
    #[command(flatten)]
    etcd: agent::etcd::EtcdArgs,
    /// Where the VNC configuration lives: `local`, the embedded store under --data-dir
    /// (a node of its own); `etcd`, the cluster's, in the etcd of --etcd, written through
    /// any agent and followed by every one (--data-dir then keeps this node's copy, which
    /// it programs from while etcd is away).
    #[arg(long, value_enum, default_value_t = ConfigStore::Local)]
    config_store: ConfigStore,
    #[command(flatten)]
    etcd_limits: agent::cluster::Limits,
    /// Seconds a node's published routes outlive its agent.
    #[arg(long, default_value_t = 30)]
    route_ttl: i64,
    /// Seconds the other nodes keep a node's routes after its agent went away (its lease
    /// expired) while its vrouter may still forward; replaced when it publishes again.
    #[arg(long, default_value_t = 300)]
    route_grace: u64,
    /// Full resync with the vrouter at least this often (milliseconds).
    #[arg(long, default_value_t = 5000)]
    resync_ms: u64,
    /// Drivers a port plugged through AddPort may use (comma-separated): `packet` (the
    /// host end of a veth, served by the vrouter itself), `af_packet` (the same through
    /// DPDK's PMD, a port each), `tap` (a new tap device). Nothing else: no files, no NICs.
    #[arg(long, value_delimiter = ',', default_value = "packet,af_packet,tap")]
    port_drivers: Vec<agent::device::Driver>,
    /// The host's reserved-ports list the SNAT port ranges are added to, so that the
    /// host's own connections never take one (`none`: leave it alone).
    #[arg(long, default_value = agent::reserve::PROC_PATH)]
    reserved_ports: String,
}

/// Where the configuration lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ConfigStore {
    /// The embedded store.
    Local,
    /// The cluster's, in etcd.
    Etcd,
}

/// A MAC address argument, checked and written the vrouter's way.
fn parse_mac(s: &str) -> Result<String, String> {
    s.parse::<vrouter_api::MacAddr>()
        .map(|m| m.to_string())
        .map_err(|e| format!("{s:?}: {e}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let group = args
        .socket_group
        .as_deref()
        .map(agent::listen::group_id)
        .transpose()?;
    if args.listen.iter().any(|l| matches!(l, Listen::Tcp(_))) {
        // Refuse a TCP listener without TLS before anything starts.
        args.tls.config()?;
    }
    if !args.etcd.endpoints.is_empty() {
        // Unusable etcd flags are refused before anything starts.
        args.etcd.options()?;
    } else if args.config_store == ConfigStore::Etcd {
        anyhow::bail!("--config-store etcd needs --etcd (the cluster's etcd endpoints)");
    }
    let store = Store::open(&args.data_dir)
        .with_context(|| format!("the store in {}", args.data_dir.display()))?;
    let mut shared = Shared::new(store)?;
    shared.auth = Arc::new(agent::auth::Policy::new(
        args.grants.clone(),
        agent::auth::own_uid(),
    ));
    let shared = Arc::new(shared);
    tracing::info!(
        objects = shared.db.read().map(|d| d.len()).unwrap_or(0),
        dir = %args.data_dir.display(),
        "configuration loaded"
    );
    let opts = program::Options {
        socket: args.vrouter_socket.clone(),
        bases: Bases {
            vrf: args.vrf_base,
            vif: args.vif_base,
            nh: args.nh_base,
            label: args.label_base,
            attr: 1,
        },
        vrouter_mac: args.vrouter_mac.clone(),
        node_ip: args.node_ip,
        gateway_mac: args.gateway_mac.clone(),
        resync: Duration::from_millis(args.resync_ms.max(100)),
        reserved_ports: (args.reserved_ports != "none").then(|| args.reserved_ports.clone().into()),
        first_routes: (!args.etcd.endpoints.is_empty()).then_some(Duration::from_secs(10)),
    };
    let loop_shared = Arc::clone(&shared);
    let reconciler = std::thread::Builder::new()
        .name("reconcile".into())
        .spawn(move || program::run(loop_shared, opts))?;

    if let Some(m) = args.metrics {
        let (s, sock) = (Arc::clone(&shared), args.vrouter_socket.clone());
        tokio::spawn(async move {
            if let Err(e) = agent::metrics::serve(m, s, sock).await {
                tracing::error!("metrics endpoint: {e:#}");
            }
        });
    }

    if !args.etcd.endpoints.is_empty() {
        let (s, e, ttl) = (
            Arc::clone(&shared),
            args.etcd.clone(),
            args.route_ttl.max(2),
        );
        let grace = Duration::from_secs(args.route_grace);
        tokio::spawn(agent::routes::run(e, s, ttl, grace));
    }

    let mut api = Api::with_devices(
        Arc::clone(&shared),
        agent::device::DevicePolicy {
            drivers: args.port_drivers.clone(),
        },
    );
    if args.config_store == ConfigStore::Etcd {
        let head = shared.store.meta(agent::api::META_HEAD)?.unwrap_or(0);
        let cluster = Arc::new(agent::cluster::Cluster::new(
            args.etcd.clone(),
            args.etcd_limits.clone(),
            head,
        ));
        api = api.with_cluster(Arc::clone(&cluster));
        tokio::spawn(agent::cluster::follow(cluster, Arc::new(api.clone())));
    } else {
        // This store's configuration is its own from now on: should it follow a
        // cluster again, it reads that whole.
        shared.store.forget(agent::api::META_CLUSTER)?;
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ConfigApiServer<Api>>().await;
    health.set_serving::<AgentApiServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(agent::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut sockets = Vec::new();
    for l in &args.listen {
        let mut builder = tonic::transport::Server::builder();
        if let Listen::Tcp(_) = l {
            builder = builder.tls_config(args.tls.config()?)?;
        }
        let router = builder
            .layer(agent::auth::AuthLayer(Arc::clone(&shared.auth)))
            .add_service(health_service.clone())
            .add_service(reflection.clone())
            .add_service(ConfigApiServer::new(api.clone()))
            .add_service(AgentApiServer::new(api.clone()));
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match l {
            Listen::Unix(path) => {
                let std = agent::listen::bind_unix(path, group)?;
                let ino = std::fs::metadata(path)?.ino();
                sockets.push((path.clone(), ino));
                let incoming =
                    tokio_stream::wrappers::UnixListenerStream::new(UnixListener::from_std(std)?);
                tracing::info!(socket = %path.display(), "serving the configuration API");
                let what = path.display().to_string();
                servers.spawn(async move {
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                        .with_context(|| format!("gRPC server on {what}"))
                });
            }
            Listen::Tcp(addr) => {
                let addr = *addr;
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr}"))?;
                tracing::info!(listen = %addr, "serving the configuration API (mutual TLS)");
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
                servers.spawn(async move {
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                        .with_context(|| format!("gRPC server on {addr}"))
                });
            }
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    let failed = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        r = servers.join_next() => r,
    };
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    for (path, ino) in sockets {
        // Only the socket this agent made: a newer agent may have replaced it.
        if std::fs::metadata(&path).is_ok_and(|m| m.ino() == ino) {
            let _ = std::fs::remove_file(&path);
        }
    }
    if let Some(r) = failed {
        shared.stop.store(true, Ordering::Relaxed);
        shared.kick();
        r??;
        anyhow::bail!("a gRPC server ended");
    }
    tracing::info!("stopping");
    shared.stop.store(true, Ordering::Relaxed);
    shared.kick();
    let _ = reconciler.join();
    Ok(())
}
