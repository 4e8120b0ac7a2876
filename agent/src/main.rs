//! `agent`: the control agent daemon.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agent::api::Api;
use agent::oper::Bases;
use agent::persist::Store;
use agent::program::{self, Shared};
use agent::proto::{agent_api_server::AgentApiServer, config_api_server::ConfigApiServer};
use anyhow::{Context, Result};
use clap::Parser;

/// The control agent: serves VNC configuration over gRPC and programs the vrouter through
/// its control socket. Configuration is kept in an embedded store under --data-dir and
/// survives restarts; on (re)connect the vrouter is reconciled by diff.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Prometheus metrics listen address (`/metrics`); off when not given.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The vrouter's control socket.
    #[arg(long, default_value = vrouter::control::DEFAULT_SOCKET)]
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
    /// etcd endpoints for the route exchange between nodes (repeat or comma-separate);
    /// none: a single node.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Seconds a node's published routes outlive its agent.
    #[arg(long, default_value_t = 30)]
    route_ttl: i64,
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

/// A MAC address argument, checked and written the vrouter's way.
fn parse_mac(s: &str) -> Result<String, String> {
    s.parse::<vrouter::wire::MacAddr>()
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
    let store = Store::open(&args.data_dir)
        .with_context(|| format!("the store in {}", args.data_dir.display()))?;
    let shared = Arc::new(Shared::new(store)?);
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

    if !args.etcd.is_empty() {
        let (s, e, ttl) = (
            Arc::clone(&shared),
            args.etcd.clone(),
            args.route_ttl.max(2),
        );
        tokio::spawn(agent::routes::run(e, s, ttl));
    }

    let api = Api::with_devices(
        Arc::clone(&shared),
        agent::device::DevicePolicy {
            drivers: args.port_drivers.clone(),
        },
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ConfigApiServer<Api>>().await;
    health.set_serving::<AgentApiServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(agent::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    tracing::info!(listen = %args.listen, "serving the configuration API");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ConfigApiServer::new(api.clone()))
        .add_service(AgentApiServer::new(api))
        .serve_with_shutdown(args.listen, shutdown)
        .await
        .with_context(|| format!("gRPC server on {}", args.listen))?;
    tracing::info!("stopping");
    shared.stop.store(true, Ordering::Relaxed);
    shared.kick();
    let _ = reconciler.join();
    Ok(())
}
