//! `vrlab`: a one-host cluster lab. Nodes are vrouter + agent process pairs, pods are
//! network namespaces plugged into them, Kubernetes manifests go through kube-manager's
//! translation, and `probe` opens real connections between pods. The vrouters' fabric
//! ports (DPDK taps) share a Linux bridge with a host outside the cluster (`outside`,
//! 192.0.2.254, the fabric's gateway, listening on TCP 80 and UDP 53). With several nodes
//! the agents share the cluster's configuration and exchange routes through an etcd the
//! lab runs (TLS with the lab's own CA, authentication on, each node's agent allowed to
//! write only its own routes, the first node's also the configuration: the files are in
//! `DIR/pki`; `--etcd-members 3` makes it a cluster of three); manifests are synced once,
//! through the first node, as kube-manager does it, and pods are spread over the nodes.
//! `kill` and `start` crash and restart a node's agent or an etcd member, to see what the
//! cluster does without them.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent::cmd::{in_netns as in_ns, run};
use agent::k8s::{Cluster, KubeConfig, ingress, manifest, sync, translate};
use agent::proto::agent_api_client::AgentApiClient;
use agent::proto::config_api_client::ConfigApiClient;
use agent::proto::{self};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

mod etcd;
mod procs;

use procs::{Proc, Ready, alive, bin, kill, kill_wait, spawn, wait_for};

/// A one-host cluster lab: `up` starts the nodes (a vrouter and an agent each), `apply`
/// takes Kubernetes manifests (namespaces, pods, services, network policies) through
/// kube-manager and plugs every pod in as a network namespace listening on its
/// containerPorts, `probe` opens a real connection between pods, `down` removes it all.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where the lab keeps its state, configuration and logs.
    #[arg(long, env = "VRLAB_DIR", default_value = "/run/vrlab")]
    dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Starts the nodes.
    Up {
        /// Number of nodes (1 to 8).
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// A `[KUBERNETES]` configuration file for kube-manager.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Forwarding lcores of each node's vrouter (1 to 4). They sleep when idle, so a
        /// lab of several nodes shares a small machine.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4))]
        lcores: u32,
        /// Members of the lab's etcd (several nodes only): 3 or 5 make a cluster that
        /// keeps serving when one member is lost.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=5))]
        etcd_members: u32,
        /// Seconds a node's routes outlive its agent in etcd (the agents' --route-ttl;
        /// theirs by default).
        #[arg(long, value_parser = clap::value_parser!(u32).range(2..))]
        route_ttl: Option<u32>,
    },
    /// Kills processes of the lab at once (SIGKILL, as a crash would): `nodeN/agent`, or
    /// an etcd member, `etcdN`. The rest of the lab runs on.
    Kill {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Starts killed processes again, as `up` started them, and waits until they serve.
    Start {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Lists the processes `kill` and `start` take: name, pid, running or not.
    Ps,
    /// Applies manifests (files, directories or `-`), like `kubectl apply -f`.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Deletes the objects of manifests, like `kubectl delete -f`.
    Delete {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Lists the pods: namespace/name, address, network.
    Pods,
    /// Opens a connection from a pod: exit 0 if it connects, 1 if it is blocked. With
    /// --matrix, every pod to every pod (or, with --services, to every service), printed
    /// as a truth table.
    Probe {
        /// The client: a pod, `namespace/name`, a node's host, `node1`, or `outside`.
        #[arg(long, required_unless_present = "matrix")]
        from: Option<String>,
        /// The server: a pod `namespace/name`, a service `svc/namespace/name` (its
        /// cluster IP) or `ext/namespace/name` (its external IP), an ingress
        /// `ing/namespace/name` (its VIP) or `ing-ext/namespace/name` (its external IP),
        /// `outside` (the host outside the cluster), or an address.
        #[arg(long, required_unless_present = "matrix")]
        to: Option<String>,
        /// Port.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// TCP or UDP.
        #[arg(long, default_value = "TCP")]
        protocol: String,
        /// Every pair of pods.
        #[arg(long)]
        matrix: bool,
        /// With --matrix: the columns are the services.
        #[arg(long, requires = "matrix")]
        services: bool,
        /// With --matrix: only these pods (`namespace/name`, comma-separated), as rows
        /// and, without --services, as columns.
        #[arg(long, requires = "matrix", value_delimiter = ',')]
        among: Vec<String>,
        /// How long to wait for an answer.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// An HTTP GET of this path (exit 0 on a 2xx answer).
        #[arg(long, conflicts_with = "matrix")]
        path: Option<String>,
        /// The HTTP Host header (an HTTP GET of `/` without --path).
        #[arg(long, conflicts_with = "matrix")]
        host: Option<String>,
    },
    /// Lists the ingresses: VIP, external IP, and their HAProxy instances (node, pid,
    /// state; the first is the active one).
    Ingresses,
    /// Resolves a name in a pod, through its resolver (the cluster's DNS when the lab has
    /// a `cluster-dns` Service): exit 0 with the addresses, 1 if it does not resolve.
    Lookup {
        /// The pod, `namespace/name`.
        #[arg(long)]
        from: String,
        /// The name (`web`, `web.default.svc.cluster.local`, ...).
        name: String,
    },
    /// Stops the nodes and removes every namespace, link and file of the lab.
    Down,
    /// (inside a pod) Resolves a name and prints its addresses.
    #[command(hide = true)]
    Resolve { name: String },
    /// (inside a pod) Listens on ports, answering each connection or datagram with NAME.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: String,
        /// `PORT/PROTOCOL`, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ports: Vec<String>,
    },
    /// (inside a pod) Connects and prints what the server answered.
    #[command(hide = true)]
    Connect {
        addr: IpAddr,
        port: u16,
        protocol: String,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// An HTTP GET: the path, and the Host header.
        #[arg(long)]
        http_path: Option<String>,
        #[arg(long)]
        http_host: Option<String>,
    },
}

/// A node of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Node {
    name: String,
    ip: String,
    /// The node's host: a network namespace whose vhost0 is the vrouter's host port.
    #[serde(default)]
    netns: String,
    /// The host end of vhost0's pair (the vrouter's host port).
    #[serde(default)]
    host_if: String,
    socket: PathBuf,
    grpc: String,
    pids: Vec<u32>,
}

/// A pod plugged into a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct PodState {
    netns: String,
    veth: String,
    node: usize,
    vmi_uuid: String,
    ip: String,
    mac: String,
    network: String,
    server_pid: Option<u32>,
    ports: Vec<String>,
    /// Runs the cluster's DNS server (image `cluster-dns`) instead of the listeners.
    #[serde(default)]
    dns: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    nodes: Vec<Node>,
    /// By `namespace/name`.
    pods: BTreeMap<String, PodState>,
    /// The processes `vrlab kill` and `vrlab start` take: `nodeN/agent`, and the etcd
    /// members of a lab with several nodes (`etcd1`, ...).
    #[serde(default)]
    procs: BTreeMap<String, Proc>,
    /// The fabric bridge.
    #[serde(default)]
    bridge: Option<String>,
    /// The host outside the cluster, on the fabric: its namespace and listener.
    #[serde(default)]
    outside: Option<Outside>,
    /// Services' addresses by `namespace/name`.
    #[serde(default)]
    services: BTreeMap<String, String>,
    /// Services' external addresses by `namespace/name`.
    #[serde(default)]
    externals: BTreeMap<String, Vec<String>>,
    /// Ingresses by `namespace/name`.
    #[serde(default)]
    ingresses: BTreeMap<String, IngressState>,
}

/// An Ingress's load balancer: its VIP, external addresses, and HAProxy instances.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IngressState {
    vip: String,
    externals: Vec<String>,
    /// (node index, interface UUID), active first.
    instances: Vec<(usize, String)>,
}

/// A host on the fabric, outside the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outside {
    netns: String,
    pid: Option<u32>,
}

/// The lab's public network (external IPs), its floating-IP pool, and its subnet, which
/// the outside host routes through node 1.
const PUBLIC_POOL: [&str; 4] = ["default-domain", "default-project", "public", "pool"];
const PUBLIC_SUBNET: &str = "203.0.113.0/24";

/// The outside host's address and MAC (the fabric's gateway for the nodes).
const OUTSIDE_IP: &str = "192.0.2.254";
const OUTSIDE_MAC: &str = "02:fa:00:00:00:fe";

struct Lab {
    dir: PathBuf,
}

impl Lab {
    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    fn load(&self) -> Result<State> {
        let p = self.state_path();
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("no lab at {} (run `vrlab up`)", self.dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))
    }
    fn save(&self, s: &State) -> Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(s)?)?;
        std::fs::rename(&tmp, self.state_path())?;
        Ok(())
    }
    fn cluster(&self) -> Result<Cluster> {
        let p = self.dir.join("cluster.yaml");
        let mut c = Cluster::default();
        if p.exists() {
            c.apply(manifest::read(&p)?);
        }
        Ok(c)
    }
    /// The lab's `[KUBERNETES]` settings; external IPs come from the lab's public pool
    /// unless they name another.
    fn kube_config(&self) -> Result<KubeConfig> {
        let p = self.dir.join("kubernetes.conf");
        let mut c = if p.exists() {
            KubeConfig::load(&p)?
        } else {
            KubeConfig::default()
        };
        if c.public_fip_pool.is_none() {
            c.public_fip_pool = Some(PUBLIC_POOL.iter().map(|s| s.to_string()).collect());
        }
        Ok(c)
    }
}

/// How `up` makes each node and the lab's etcd.
struct Shape {
    lcores: u32,
    etcd_members: u32,
    route_ttl: Option<u32>,
}

fn up(lab: &Lab, nodes: u32, config: Option<PathBuf>, shape: Shape) -> Result<()> {
    let Shape {
        lcores,
        etcd_members,
        route_ttl,
    } = shape;
    if !(1..=8).contains(&nodes) {
        bail!("--nodes {nodes}: 1 to 8");
    }
    if etcd_members > 1 && nodes < 2 {
        bail!("--etcd-members {etcd_members}: a lab of one node has no etcd (--nodes 2 or more)");
    }
    if lab.state_path().exists() {
        bail!(
            "a lab is already up in {} (`vrlab down` first)",
            lab.dir.display()
        );
    }
    std::fs::create_dir_all(&lab.dir)?;
    if let Some(c) = config {
        KubeConfig::load(&c)?;
        std::fs::copy(&c, lab.dir.join("kubernetes.conf"))?;
    }
    let mut state = State::default();
    // The fabric: a bridge, with the outside host on it.
    let tag = short_hash(&lab.dir.display().to_string());
    let bridge = format!("vb{tag}");
    let _ = run(&["ip", "link", "del", &bridge]);
    run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
    quiet_arp(&bridge)?;
    run(&["ip", "link", "set", &bridge, "up"])?;
    state.bridge = Some(bridge.clone());
    lab.save(&state)?;
    state.outside = Some(outside(lab, &tag, &bridge)?);
    lab.save(&state)?;
    // Several nodes: an etcd for the cluster's configuration and the agents' routes.
    let mut etcd = None;
    if nodes > 1 {
        let ips: Vec<std::net::Ipv4Addr> = (1..=nodes)
            .map(|i| std::net::Ipv4Addr::new(192, 0, 2, i as u8))
            .collect();
        let e = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(etcd::start(&lab.dir, &ips, etcd_members))?;
        for (name, p) in &e.members {
            state.procs.insert(name.clone(), p.clone());
        }
        lab.save(&state)?;
        etcd = Some(e);
    }
    for i in 1..=nodes {
        let name = format!("node{i}");
        let dir = lab.dir.join(&name);
        std::fs::create_dir_all(&dir)?;
        let ip = format!("192.0.2.{i}");
        let cfg = dir.join("vrouter.toml");
        let tap = format!("vf{tag}{i}");
        let fabric = format!("net_tap0,iface={tap}");
        let mac = format!("02:fa:00:00:00:{i:02x}");
        // The host: vhost0 (the fabric's MAC and address) in the node's namespace.
        let host_ns = format!("vl{tag}-{name}");
        let host_end = format!("vh{tag}{i}");
        veth_host(
            (&host_ns, &host_end, None),
            ("vhost0", &mac, &format!("{ip}/24")),
            &["default", "dev", "vhost0"],
        )?;
        std::fs::write(
            &cfg,
            format!(
                "[global]\nfabric_vif = 0\nhost_vif = 1\nmax_vifs = 16384\n\n[[vrf]]\nid = 0\n\n\
                 [[vif]]\nid = 0\nname = \"fabric\"\nkind = \"physical\"\ndevice = \"{fabric}\"\n\
                 mac = \"{mac}\"\nvrf = 0\nip4 = \"{ip}\"\n\n\
                 [[vif]]\nid = 1\nname = \"vhost0\"\nkind = \"host\"\n\
                 device = \"packet:{host_end}\"\nmac = \"{mac}\"\nvrf = 0\nip4 = \"{ip}\"\n"
            ),
        )?;
        let socket = dir.join("vrouter.sock");
        let log = dir.join("vrouter.log");
        // One lcore: the forwarding loop is a plain thread. More: EAL workers, spread
        // over the machine's CPUs (lcore i on CPU i mod n).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lcore_args: Vec<String> = match lcores {
            1 => vec!["-l".into(), "0".into()],
            n => vec![
                "--lcores".into(),
                (0..=n as usize)
                    .map(|i| format!("{i}@{}", i % cpus))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
        };
        let vr = spawn(
            Command::new(bin("vrouter"))
                .args(["run", "--config"])
                .arg(&cfg)
                .arg("--socket")
                .arg(&socket)
                .args(["--mbufs", "8191", "--idle-sleep-us", "200"])
                .args(["--", "--no-huge", "-m", "512"])
                .args(&lcore_args)
                .args(["--file-prefix", &format!("vrlab{}-{i}", std::process::id())]),
            &log,
        )?;
        let mut node = Node {
            name: name.clone(),
            netns: host_ns,
            host_if: host_end.clone(),
            ip,
            socket: socket.clone(),
            grpc: String::new(),
            pids: vec![vr],
        };
        state.nodes.push(node.clone());
        lab.save(&state)?;
        wait_for("vrouter", &log, || {
            vrouter_api::control::Client::connect(&socket)
                .and_then(|mut c| c.call(vrouter_api::control::Op::Hello))
                .is_ok()
        })?;
        if let Some(bridge) = &state.bridge {
            quiet_arp(&tap)?;
            run(&["ip", "link", "set", &tap, "master", bridge])?;
            run(&["ip", "link", "set", &tap, "up"])?;
        }
        let asock = dir.join("agent.sock");
        let alog = dir.join("agent.log");
        // The node's host is a namespace the agent does not run in: its reserved-ports
        // list is a file beside the node's other files.
        let reserved = dir.join("reserved_ports");
        std::fs::write(&reserved, "")?;
        let mut argv = vec![
            bin("agent").display().to_string(),
            format!("--listen=unix:{}", asock.display()),
            format!("--vrouter-socket={}", socket.display()),
            format!("--data-dir={}", dir.join("agent-data").display()),
            format!("--reserved-ports={}", reserved.display()),
        ];
        argv.extend(["--resync-ms", "500", "--gateway-mac", OUTSIDE_MAC].map(String::from));
        argv.extend(etcd.iter().flat_map(|e| e.agent_args(&node.ip)));
        argv.extend(route_ttl.map(|t| format!("--route-ttl={t}")));
        let ag = Proc::spawn(argv, alog, Ready::Unix(asock.clone()))?;
        node.pids.push(ag.pid);
        node.grpc = format!("unix:{}", asock.display());
        state.nodes[(i - 1) as usize] = node;
        state.procs.insert(format!("{name}/agent"), ag.clone());
        lab.save(&state)?;
        ag.wait("agent")?;
        provision(&state.nodes[(i - 1) as usize])?;
        // The node's HAProxy instances (ingresses).
        let mlog = dir.join("haproxy-manager.log");
        let mg = spawn(
            Command::new(bin("haproxy-manager"))
                .arg(format!("--agent=unix:{}", asock.display()))
                .args([
                    "--host",
                    &name,
                    "--interval-ms",
                    "300",
                    "--restart-ms",
                    "500",
                ])
                .arg("--dir")
                .arg(dir.join("lb")),
            &mlog,
        )?;
        state.nodes[(i - 1) as usize].pids.push(mg);
        lab.save(&state)?;
        wait_for("haproxy-manager", &mlog, || {
            std::fs::read_to_string(&mlog).is_ok_and(|l| l.contains("managing HAProxy"))
        })?;
        println!(
            "{name}: vrouter {} agent unix:{}",
            socket.display(),
            asock.display()
        );
    }
    Ok(())
}

/// What a cluster's provisioning puts in every node's configuration: the ip-fabric
/// network (the underlay, where the node's host lives), and a public network with a
/// floating-IP pool for external IPs, joined to ip-fabric by a policy (its addresses
/// are routed in the underlay's VRF, reached from the fabric).
fn provision(n: &Node) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (mut c, _) = connect_node(n).await?;
        let fabric: Vec<String> = agent::oper::IP_FABRIC
            .split(':')
            .map(str::to_string)
            .collect();
        let pool: Vec<String> = PUBLIC_POOL.iter().map(|s| s.to_string()).collect();
        let under = |name: &str| -> Vec<String> {
            fabric[..2]
                .iter()
                .cloned()
                .chain([name.to_string()])
                .collect()
        };
        let reference = |kind: agent::kinds::Kind, fq: &[String]| proto::Ref {
            r#type: kind.name().into(),
            uuid: String::new(),
            fq_name: fq.to_vec(),
        };
        let policy = under("public-fabric");
        let network = |fq: Vec<String>| proto::AddressType {
            virtual_network: fq.join(":"),
            ..Default::default()
        };
        let objects = [
            proto::object::Kind::Project(proto::Project {
                fq_name: fabric[..2].to_vec(),
                ..Default::default()
            }),
            proto::object::Kind::NetworkPolicy(proto::NetworkPolicy {
                fq_name: policy.clone(),
                network_policy_entries: vec![proto::PolicyRule {
                    direction: "<>".into(),
                    protocol: "any".into(),
                    src_addresses: vec![network(pool[..3].to_vec())],
                    dst_addresses: vec![network(fabric.clone())],
                    action: "pass".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            proto::object::Kind::NetworkIpam(proto::NetworkIpam {
                fq_name: under("public-ipam"),
                ..Default::default()
            }),
            proto::object::Kind::VirtualNetwork(proto::VirtualNetwork {
                fq_name: fabric.clone(),
                network_policy_refs: vec![reference(agent::kinds::Kind::NetworkPolicy, &policy)],
                ..Default::default()
            }),
            proto::object::Kind::VirtualNetwork(proto::VirtualNetwork {
                fq_name: pool[..3].to_vec(),
                network_ipam_refs: vec![proto::IpamRef {
                    ipam: Some(reference(
                        agent::kinds::Kind::NetworkIpam,
                        &under("public-ipam"),
                    )),
                    subnets: vec![proto::Subnet {
                        prefix: PUBLIC_SUBNET.into(),
                        ..Default::default()
                    }],
                }],
                network_policy_refs: vec![reference(agent::kinds::Kind::NetworkPolicy, &policy)],
                ..Default::default()
            }),
            proto::object::Kind::FloatingIpPool(proto::FloatingIpPool {
                fq_name: pool.clone(),
                ..Default::default()
            }),
        ];
        for o in objects {
            match c.create(proto::Object { kind: Some(o) }).await {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                Err(s) => bail!("{}: provisioning ip-fabric: {}", n.name, s.message()),
            }
        }
        Ok(())
    })
}

/// Eight hex digits naming this lab's links (interface names are at most 15 bytes).
fn short_hash(s: &str) -> String {
    format!("{:08x}", agent::name_hash(s) as u32)
}

/// A pod's namespace: the lab's tag in it, so that two labs on one machine (each with
/// a `default/a`) never share one.
/// A pod's MTU in the lab.
const POD_MTU: &str = "1450";

fn netns_name(tag: &str, ns: &str, pod: &str) -> String {
    format!("vrlab{tag}-{ns}-{pod}")
}

/// Interface names are at most 15 bytes: a short stable hash of the lab and the pod.
fn veth_name(tag: &str, ns: &str, pod: &str) -> String {
    format!("vl{}", short_hash(&format!("{tag}/{ns}/{pod}")))
}

async fn connect_node(
    n: &Node,
) -> Result<(
    ConfigApiClient<tonic::transport::Channel>,
    AgentApiClient<tonic::transport::Channel>,
)> {
    let ch = agent::client::connect(&n.grpc, None)
        .await
        .with_context(|| n.name.clone())?;
    Ok((ConfigApiClient::new(ch.clone()), AgentApiClient::new(ch)))
}

/// Waits until a node's agent has programmed what it holds (and holds revision `at`).
async fn wait_programmed(
    a: &mut AgentApiClient<tonic::transport::Channel>,
    at: Option<u64>,
) -> Result<()> {
    agent::client::programmed(a, at, Duration::from_millis(20), Duration::from_secs(30)).await?;
    Ok(())
}

/// Translates the cluster, syncs it once, and makes the pods match.
async fn converge(lab: &Lab, cluster: &Cluster) -> Result<()> {
    let cfg = lab.kube_config()?;
    let mut state = lab.load()?;
    // The lab's nodes are the cluster's (where ingresses' HAProxy instances run).
    let mut with_nodes = cluster.clone();
    for n in &state.nodes {
        let mut node = k8s_openapi::api::core::v1::Node::default();
        node.metadata.name = Some(n.name.clone());
        with_nodes.nodes.entry(n.name.clone()).or_insert(node);
    }
    let cluster = &with_nodes;
    // The lab's agents share the cluster's configuration in etcd (one node: its own): it
    // is synced once, through the first node's agent, as kube-manager does it, and every
    // node follows.
    let (t, total, at) = {
        let (mut c, mut a) = connect_node(&state.nodes[0]).await?;
        let (t, total) = sync::sync(&cfg, &mut c, cluster).await?;
        let mut vips: BTreeMap<Vec<String>, String> = BTreeMap::new();
        let mut ext: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        for o in sync::actual(&mut c).await? {
            match o.kind {
                Some(proto::object::Kind::Loadbalancer(l)) => {
                    vips.insert(l.fq_name, l.vip_address);
                }
                Some(proto::object::Kind::FloatingIp(f)) => {
                    if let Some(lb) = &f.loadbalancer_ref {
                        ext.entry(lb.fq_name.clone())
                            .or_default()
                            .push(f.floating_ip_address.clone());
                    }
                }
                _ => {}
            }
        }
        state.ingresses.clear();
        for ((ns, name), ing) in &cluster.ingresses {
            let fq = translate::ingress_loadbalancer(&cfg, ns, name);
            let Some(vip) = vips.get(&fq).filter(|_| ingress::ours(ing)) else {
                continue;
            };
            let hosts = ingress::placement(ns, name, cluster.nodes.keys());
            let instances = hosts
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let node = state.nodes.iter().position(|n| n.name == *h)?;
                    let vmi = ingress::instance_interface(&fq, i);
                    Some((
                        node,
                        translate::uuid_for(agent::kinds::Kind::VirtualMachineInterface, &vmi),
                    ))
                })
                .collect();
            state.ingresses.insert(
                format!("{ns}/{name}"),
                IngressState {
                    vip: vip.clone(),
                    externals: ext.remove(&fq).unwrap_or_default(),
                    instances,
                },
            );
        }
        state.services.clear();
        state.externals.clear();
        for (ns, name) in cluster.services.keys() {
            let fq = translate::service_interface(&cfg, ns, name);
            let key = format!("{ns}/{name}");
            if let Some(v) = vips.get(&fq) {
                state.services.insert(key.clone(), v.clone());
            }
            if let Some(e) = ext.remove(&fq) {
                state.externals.insert(key, e);
            }
        }
        // Every node at the revision the sync left (etcd's revisions: one sequence for
        // all).
        let at = a
            .status(proto::Empty {})
            .await?
            .into_inner()
            .config_revision;
        (t, total, at)
    };
    for n in &state.nodes {
        let (_, mut a) = connect_node(n).await?;
        wait_programmed(&mut a, Some(at))
            .await
            .with_context(|| n.name.clone())?;
    }
    println!(
        "{}: {} created, {} updated, {} deleted",
        state.nodes[0].name, total.created, total.updated, total.deleted
    );
    for e in &t.events {
        println!("event: {e}");
    }
    for e in &total.refused {
        println!("event: Refused: {e}");
    }
    let placements = t.pods;
    lab.save(&state)?;
    dns_records(lab, &state)?;
    // Pods that went away.
    let keep: Vec<String> = placements
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    let gone: Vec<String> = state
        .pods
        .keys()
        .filter(|k| !keep.contains(k))
        .cloned()
        .collect();
    for k in gone {
        if let Some(p) = state.pods.remove(&k) {
            unplug(&state, &p).await;
            println!("pod {k} removed");
        }
        lab.save(&state)?;
    }
    // New pods, and pods whose address or listeners changed. One connection per node,
    // and its ports as they were before this round (a pod plugged now knows its address).
    let mut clients = Vec::new();
    let mut plugged = std::collections::HashMap::new();
    for n in &state.nodes {
        let (c, mut a) = connect_node(n).await?;
        for info in a.list_ports(proto::Empty {}).await?.into_inner().ports {
            plugged.insert(info.vmi_uuid.clone(), info);
        }
        clients.push((c, a));
    }
    for (i, p) in placements.iter().enumerate() {
        let key = format!("{}/{}", p.namespace, p.name);
        let node_ix = i % state.nodes.len();
        let (c, a) = &mut clients[node_ix];
        let vmi = c
            .get(proto::Ref {
                r#type: "virtual-machine-interface".into(),
                uuid: String::new(),
                fq_name: p.vmi.clone(),
            })
            .await
            .map_err(|s| anyhow!("{key}: interface: {}", s.message()))?
            .into_inner();
        let Some(proto::object::Kind::VirtualMachineInterface(vmi)) = vmi.kind else {
            bail!("{key}: not an interface");
        };
        let ports: Vec<String> = p.ports.iter().map(|(n, pr)| format!("{n}/{pr}")).collect();
        let existing = state.pods.get(&key).cloned();
        let mut ps = match existing {
            Some(mut ps) if ps.vmi_uuid == vmi.uuid => {
                // The address follows the interface (a pod moved to another network).
                let info = plugged
                    .get(&vmi.uuid)
                    .ok_or_else(|| anyhow!("{key}: port not plugged"))?;
                let ip = info.ip_addresses.first().cloned().unwrap_or_default();
                if ip != ps.ip {
                    address(&ps.netns, &ps.ip, &ip, &info.gateway)?;
                    println!("pod {key} {} -> {ip}", ps.ip);
                    ps.ip = ip;
                }
                ps
            }
            other => {
                if let Some(old) = other {
                    unplug(&state, &old).await;
                }
                let tag = short_hash(&lab.dir.display().to_string());
                let ps = plug(a, (&tag, &key), p, &vmi.uuid, node_ix).await?;
                state.pods.insert(key.clone(), ps.clone());
                lab.save(&state)?;
                println!("pod {key} {} on {}", ps.ip, state.nodes[node_ix].name);
                ps
            }
        };
        ps.network = p.network.join(":");
        let dns = cluster
            .pods
            .get(&(p.namespace.clone(), p.name.clone()))
            .and_then(|pod| pod.spec.as_ref())
            .is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.image.as_deref() == Some(DNS_IMAGE))
            });
        if ps.ports != ports || ps.server_pid.is_none() || ps.dns != dns {
            if let Some(pid) = ps.server_pid.take() {
                kill(pid);
            }
            ps.ports = ports;
            ps.dns = dns;
            ps.server_pid = if dns {
                Some(dns_server(lab, &ps.netns)?)
            } else {
                serve(lab, &key, &ps)?
            };
        }
        resolv_conf(&state, &p.namespace, &ps.netns)?;
        state.pods.insert(key, ps);
        lab.save(&state)?;
    }
    for (_, a) in &mut clients {
        wait_programmed(a, None).await?;
    }
    if state.nodes.len() > 1 {
        wait_routes(&state)?;
    }
    wait_ingresses(lab, &state);
    Ok(())
}

/// An instance's HAProxy pid, if it runs.
fn instance_pid(lab: &Lab, state: &State, node: usize, vmi: &str) -> Option<u32> {
    let n = state.nodes.get(node)?;
    let f = lab.dir.join(&n.name).join("lb").join(format!("{vmi}.pid"));
    let pid: u32 = std::fs::read_to_string(f).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Whether a process's network namespace has a TCP socket listening on `addr:port`.
fn listening(pid: u32, addr: &str, port: u16) -> bool {
    let Ok(ip) = addr.parse::<std::net::Ipv4Addr>() else {
        return false;
    };
    // /proc/net/tcp writes the address as the kernel holds it (little-endian here).
    let want = format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
    std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).is_ok_and(|t| {
        t.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        })
    })
}

/// Until every ingress's instances serve (their manager starts them a moment after the
/// configuration arrives).
fn wait_ingresses(lab: &Lab, state: &State) {
    let t = Instant::now();
    for (k, ing) in &state.ingresses {
        for (node, vmi) in &ing.instances {
            while !instance_pid(lab, state, *node, vmi).is_some_and(|p| listening(p, &ing.vip, 80))
            {
                if t.elapsed() > Duration::from_secs(20) {
                    println!(
                        "ingress {k}: the instance on {} does not serve yet",
                        state.nodes[*node].name
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let on: Vec<&str> = ing
            .instances
            .iter()
            .map(|(n, _)| state.nodes[*n].name.as_str())
            .collect();
        println!(
            "ingress {k} {} on {}{}",
            ing.vip,
            on.join(","),
            if ing.externals.is_empty() {
                String::new()
            } else {
                format!(" external {}", ing.externals.join(","))
            }
        );
    }
}

/// The ingresses and their instances (the first is the active one).
fn list_ingresses(lab: &Lab, state: &State) {
    for (k, ing) in &state.ingresses {
        println!(
            "{k} vip {} external {}",
            ing.vip,
            if ing.externals.is_empty() {
                "-".to_string()
            } else {
                ing.externals.join(",")
            }
        );
        for (i, (node, vmi)) in ing.instances.iter().enumerate() {
            let role = if i == 0 { "active" } else { "standby" };
            let name = agent::lbaas::instance_name(vmi);
            match instance_pid(lab, state, *node, vmi) {
                Some(pid) => println!(
                    "  {i} {} {name} pid {pid} {}, {role}",
                    state.nodes[*node].name,
                    if listening(pid, &ing.vip, 80) {
                        "serving"
                    } else {
                        "starting"
                    }
                ),
                None => println!(
                    "  {i} {} {name} pid - down, {role}",
                    state.nodes[*node].name
                ),
            }
        }
    }
}

/// Until every node's vrouter has a route to every pod (other nodes' pods come through
/// etcd, a moment after their node programmed them).
fn wait_routes(state: &State) -> Result<()> {
    let want: Vec<String> = state
        .pods
        .values()
        .filter_map(|p| p.ip.split('/').next().map(|a| format!("{a}/32")))
        .collect();
    let t = Instant::now();
    for n in &state.nodes {
        loop {
            let have = node_routes(&n.socket)?;
            let missing: Vec<&String> = want.iter().filter(|w| !have.contains(*w)).collect();
            if missing.is_empty() {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("{}: no route to {missing:?} after 30 s", n.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The prefixes of every VRF of a node's vrouter.
fn node_routes(socket: &Path) -> Result<std::collections::BTreeSet<String>> {
    use vrouter_api::control::{Client, Op};
    let mut c = Client::connect(socket)?;
    let vrfs = c.call(Op::DumpVrfs)?.data.unwrap_or_default();
    let mut out = std::collections::BTreeSet::new();
    for v in vrfs.as_array().into_iter().flatten() {
        let Some(vrf) = v["id"].as_u64().and_then(|x| u32::try_from(x).ok()) else {
            continue;
        };
        for r in c.dump_all(|cursor| Op::DumpRoutes { vrf, cursor })? {
            if let Some(p) = r["prefix"].as_str() {
                out.insert(p.to_string());
            }
        }
    }
    Ok(out)
}

fn address(netns: &str, old: &str, new: &str, gw: &str) -> Result<()> {
    if !old.is_empty() {
        in_ns(netns, &["ip", "addr", "del", old, "dev", "eth0"])?;
    }
    in_ns(netns, &["ip", "addr", "add", new, "dev", "eth0"])?;
    if !gw.is_empty() {
        in_ns(
            netns,
            &[
                "ip", "route", "replace", "default", "via", gw, "dev", "eth0",
            ],
        )?;
    }
    Ok(())
}

async fn plug(
    a: &mut AgentApiClient<tonic::transport::Channel>,
    (tag, key): (&str, &str),
    p: &translate::PodPlacement,
    vmi_uuid: &str,
    node: usize,
) -> Result<PodState> {
    let netns = netns_name(tag, &p.namespace, &p.name);
    let veth = veth_name(tag, &p.namespace, &p.name);
    let _ = run(&["ip", "netns", "del", &netns]);
    let _ = run(&["ip", "link", "del", &veth]);
    run(&["ip", "netns", "add", &netns])?;
    run(&[
        "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
    ])?;
    run(&["ip", "link", "set", &veth, "mtu", POD_MTU])?;
    run(&["ip", "link", "set", &veth, "up"])?;
    // The vrouter serves the host end itself (no DPDK port, so no limit of 32).
    let info = a
        .add_port(proto::Port {
            vmi_uuid: vmi_uuid.into(),
            device: format!("packet:{veth}"),
            name: format!("pod-{}", &vmi_uuid[..8]),
            mtu: POD_MTU.parse().unwrap_or(1500),
        })
        .await
        .map_err(|s| anyhow!("{key}: plugging: {}", s.message()))?
        .into_inner();
    let ip = info.ip_addresses.first().cloned().unwrap_or_default();
    for cmd in [
        vec!["ip", "link", "set", "lo", "up"],
        vec!["ip", "link", "set", "eth0", "address", &info.mac_address],
        // What the lab's 1500-byte fabric leaves after the largest encapsulation (VXLAN's
        // 50 bytes), as vrouter-cni gives pods.
        vec!["ip", "link", "set", "eth0", "mtu", POD_MTU],
        vec!["ip", "link", "set", "eth0", "up"],
        vec!["ethtool", "-K", "eth0", "tx", "off"],
    ] {
        in_ns(&netns, &cmd)?;
    }
    address(&netns, "", &ip, &info.gateway)?;
    Ok(PodState {
        netns,
        veth,
        node,
        vmi_uuid: vmi_uuid.into(),
        ip,
        mac: info.mac_address,
        network: p.network.join(":"),
        server_pid: None,
        dns: false,
        ports: vec![],
    })
}

async fn unplug(state: &State, p: &PodState) {
    if let Some(pid) = p.server_pid {
        kill(pid);
    }
    if let Some(n) = state.nodes.get(p.node)
        && let Ok((_, mut a)) = connect_node(n).await
    {
        let _ = a
            .delete_port(proto::PortRef {
                vmi_uuid: p.vmi_uuid.clone(),
            })
            .await;
    }
    let _ = run(&["ip", "netns", "del", &p.netns]);
    let _ = run(&["ip", "link", "del", &p.veth]);
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&p.netns));
}

/// A pod whose container has this image runs the cluster's DNS server.
const DNS_IMAGE: &str = "cluster-dns";
/// The cluster domain.
const CLUSTER_DOMAIN: &str = "cluster.local";

/// The cluster DNS's records: every Service's cluster IP under its name.
fn dns_records(lab: &Lab, state: &State) -> Result<()> {
    let mut r = agent::dns::Records::new(CLUSTER_DOMAIN);
    for (key, vip) in &state.services {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        if let Ok(ip) = vip.split('/').next().unwrap_or_default().parse() {
            r.add(&format!("{name}.{ns}.svc.{CLUSTER_DOMAIN}"), ip);
        }
    }
    // Written whole, then renamed: the server never reads half a file.
    let path = lab.dir.join("dns.records");
    let tmp = lab.dir.join("dns.records.new");
    std::fs::write(&tmp, r.to_text())?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Starts the DNS server in a pod and waits until it answers.
fn dns_server(lab: &Lab, netns: &str) -> Result<u32> {
    let records = lab.dir.join("dns.records");
    let args = [
        "--records".as_ref(),
        records.as_os_str(),
        "--domain".as_ref(),
        CLUSTER_DOMAIN.as_ref(),
    ];
    start_in(lab, netns, "cluster-dns", &args, Duration::from_secs(20))
        .context("the cluster DNS server did not start")
}

/// Starts one of our programs in a namespace (its log next to the lab's) and waits until
/// it says it is listening, at most `limit`.
fn start_in(
    lab: &Lab,
    netns: &str,
    program: &str,
    args: &[&std::ffi::OsStr],
    limit: Duration,
) -> Result<u32> {
    let log = lab.dir.join(format!("{netns}.log"));
    let pid = spawn(
        Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(bin(program))
            .args(args),
        &log,
    )?;
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening")
    {
        if t.elapsed() > limit {
            bail!(
                "{program} in {netns} is not listening after {limit:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(pid)
}

/// A pod's resolver configuration (`ip netns exec` puts /etc/netns/NAME/resolv.conf in
/// place of /etc/resolv.conf): the Service named `cluster-dns`, with Kubernetes' search
/// list; none while there is no such Service.
fn resolv_conf(state: &State, namespace: &str, netns: &str) -> Result<()> {
    let dir = Path::new("/etc/netns").join(netns);
    let server = state
        .services
        .iter()
        .find(|(k, _)| k.rsplit('/').next() == Some(DNS_IMAGE))
        .map(|(_, vip)| vip.clone());
    match server {
        Some(vip) => {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(
                dir.join("resolv.conf"),
                format!(
                    "nameserver {vip}
search {namespace}.svc.{CLUSTER_DOMAIN}                      svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}
options timeout:1 attempts:2
"
                ),
            )?;
        }
        None => {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(())
}

fn serve(lab: &Lab, key: &str, p: &PodState) -> Result<Option<u32>> {
    if p.ports.is_empty() {
        return Ok(None);
    }
    listen_in(lab, &p.netns, key, &p.ports).map(Some)
}

/// Starts `vrlab serve` in a namespace and waits until it listens.
fn listen_in(lab: &Lab, netns: &str, key: &str, ports: &[String]) -> Result<u32> {
    // Until it listens (a probe right after apply must find it).
    let ports = ports.join(",");
    let args = ["serve", "--name", key, "--ports", &ports].map(std::ffi::OsStr::new);
    start_in(lab, netns, "vrlab", &args, Duration::from_secs(5))
        .with_context(|| format!("{key}: the pod's listener did not start"))
}

/// A host namespace behind a veth pair (made anew): `end` in the root namespace, up and
/// on `bridge` if one is given; `inner` in `netns` with `mac` and `cidr`, checksum
/// offload off (the vrouter's af_packet and tap ports see whole packets), and `route`.
/// The lab's links in the host's own namespace (the bridge, the taps, the host ends of
/// the pairs) are the fabric's wires: the host's kernel, which would answer ARP on them
/// for its own addresses (one may be in the lab's fabric subnet), answers none there.
fn quiet_arp(dev: &str) -> Result<()> {
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/arp_ignore"), "8")
        .with_context(|| format!("arp_ignore on {dev}"))
}

fn veth_host(
    (netns, end, bridge): (&str, &str, Option<&str>),
    (inner, mac, cidr): (&str, &str, &str),
    route: &[&str],
) -> Result<()> {
    let _ = run(&["ip", "netns", "del", netns]);
    let _ = run(&["ip", "link", "del", end]);
    run(&["ip", "netns", "add", netns])?;
    run(&[
        "ip", "link", "add", end, "type", "veth", "peer", "name", inner, "netns", netns,
    ])?;
    quiet_arp(end)?;
    if let Some(b) = bridge {
        run(&["ip", "link", "set", end, "master", b])?;
    }
    run(&["ip", "link", "set", end, "up"])?;
    let mut add_route = vec!["ip", "route", "add"];
    add_route.extend_from_slice(route);
    for cmd in [
        vec!["ip", "link", "set", "lo", "up"],
        vec!["ip", "link", "set", inner, "address", mac],
        vec!["ip", "addr", "add", cidr, "dev", inner],
        vec!["ip", "link", "set", inner, "up"],
        vec!["ethtool", "-K", inner, "tx", "off"],
        add_route,
    ] {
        in_ns(netns, &cmd)?;
    }
    Ok(())
}

/// The host outside the cluster: a namespace on the fabric bridge, listening.
fn outside(lab: &Lab, tag: &str, bridge: &str) -> Result<Outside> {
    let netns = format!("vl{tag}-out");
    // External IPs are reached through node 1 (the first node's fabric address).
    veth_host(
        (&netns, &format!("vo{tag}"), Some(bridge)),
        ("eth0", OUTSIDE_MAC, &format!("{OUTSIDE_IP}/24")),
        &[PUBLIC_SUBNET, "via", "192.0.2.1"],
    )?;
    let mut o = Outside { netns, pid: None };
    o.pid = Some(listen_in(
        lab,
        &o.netns,
        "outside",
        &["80/TCP".into(), "53/UDP".into()],
    )?);
    Ok(o)
}

fn serve_ports(name: &str, ports: &[String]) -> Result<()> {
    let mut threads = Vec::new();
    for spec in ports {
        let (port, proto) = spec.split_once('/').unwrap_or((spec.as_str(), "TCP"));
        let port: u16 = port.parse().with_context(|| format!("port {spec:?}"))?;
        // The answer: who we are, and whom we saw (the source after any NAT).
        let name = name.to_string();
        let reply = move |peer: SocketAddr| format!("{name} {peer}\n").into_bytes();
        match proto.to_ascii_uppercase().as_str() {
            "TCP" => {
                let l = TcpListener::bind(("0.0.0.0", port))?;
                let reply = std::sync::Arc::new(reply);
                threads.push(std::thread::spawn(move || {
                    for s in l.incoming().flatten() {
                        let reply = std::sync::Arc::clone(&reply);
                        std::thread::spawn(move || answer_tcp(s, &*reply));
                    }
                }));
            }
            "UDP" => {
                let s = UdpSocket::bind(("0.0.0.0", port))?;
                threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 1500];
                    while let Ok((_, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&reply(from), from);
                    }
                }));
            }
            other => bail!("protocol {other:?} (TCP or UDP)"),
        }
    }
    println!("listening on {}", ports.join(","));
    std::io::stdout().flush()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Answers one connection: an HTTP request with a 200 whose body is the answer, anything
/// else (or silence for 200 ms) with the answer itself.
fn answer_tcp(mut s: TcpStream, reply: &dyn Fn(SocketAddr) -> Vec<u8>) {
    let Ok(peer) = s.peer_addr() else { return };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        req.extend_from_slice(&buf[..n]);
        if !req.starts_with(b"GET ") && !req.starts_with(b"HEAD ") || req.len() > 16384 {
            break;
        }
        if req.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let body = reply(peer);
    if req.starts_with(b"GET ") || req.starts_with(b"HEAD ") {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes());
        if req.starts_with(b"GET ") {
            let _ = s.write_all(&body);
        }
    } else {
        let _ = s.write_all(&body);
    }
}

/// An HTTP/1.1 GET: "STATUS BODY" (the body's first line).
fn http_get(to: SocketAddr, path: &str, host: &str, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&to, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vrlab\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| anyhow!("not an HTTP answer: {:?}", head.lines().next()))?;
    let via = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-served-by")
            .then(|| v.trim().to_string())
    });
    let mut out = format!("{status} {}", body.lines().next().unwrap_or("").trim());
    if let Some(v) = via {
        out.push_str(&format!("\nvia {v}"));
    }
    Ok(out)
}

/// Connects and returns the server's answer.
fn connect(addr: IpAddr, port: u16, protocol: &str, timeout: Duration) -> Result<String> {
    let to = SocketAddr::new(addr, port);
    let mut buf = [0u8; 256];
    match protocol.to_ascii_uppercase().as_str() {
        "TCP" => {
            let mut s = TcpStream::connect_timeout(&to, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            // Said at once, so that the server need not wait to tell us from HTTP.
            s.write_all(b"probe\n")?;
            let n = s.read(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
        }
        "UDP" => {
            let s = UdpSocket::bind(("0.0.0.0", 0))?;
            s.set_read_timeout(Some(timeout / 3))?;
            for _ in 0..3 {
                s.send_to(b"probe", to)?;
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string());
                }
            }
            bail!("no answer")
        }
        other => bail!("protocol {other:?} (TCP or UDP)"),
    }
}

/// One probe from a pod: `Ok(answer)` if it connected.
fn probe_one(
    state: &State,
    from: &str,
    to: &str,
    (port, protocol): (u16, &str),
    http: Option<(&str, &str)>,
    timeout_ms: u64,
) -> Result<std::result::Result<String, String>> {
    // From a pod, a node's host, or the outside host.
    let src_netns = match (state.pods.get(from), &state.outside) {
        (Some(p), _) => p.netns.as_str(),
        (None, Some(o)) if from == "outside" => o.netns.as_str(),
        _ => state
            .nodes
            .iter()
            .find(|n| n.name == from && !n.netns.is_empty())
            .map(|n| n.netns.as_str())
            .ok_or_else(|| anyhow!("no pod, node or outside host {from}"))?,
    };
    let addr = match to.parse::<IpAddr>() {
        Ok(a) => a.to_string(),
        Err(_) if to == "outside" => OUTSIDE_IP.to_string(),
        Err(_) if to.starts_with("ext/") => state
            .externals
            .get(&to["ext/".len()..])
            .and_then(|a| a.first())
            .ok_or_else(|| anyhow!("no external IP for service {}", &to["ext/".len()..]))?
            .clone(),
        Err(_) if to.starts_with("ing/") => state
            .ingresses
            .get(&to["ing/".len()..])
            .ok_or_else(|| anyhow!("no ingress {}", &to["ing/".len()..]))?
            .vip
            .clone(),
        Err(_) if to.starts_with("ing-ext/") => state
            .ingresses
            .get(&to["ing-ext/".len()..])
            .and_then(|i| i.externals.first())
            .ok_or_else(|| anyhow!("no external IP for ingress {}", &to["ing-ext/".len()..]))?
            .clone(),
        Err(_) if to.starts_with("svc/") => state
            .services
            .get(&to["svc/".len()..])
            .ok_or_else(|| anyhow!("no service {}", &to["svc/".len()..]))?
            .clone(),
        Err(_) => state
            .pods
            .get(to)
            .ok_or_else(|| anyhow!("no pod {to}"))?
            .ip
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    let o = Command::new("ip")
        .args(["netns", "exec", src_netns])
        .arg(bin("vrlab"))
        .args([
            "connect",
            &addr,
            &port.to_string(),
            protocol,
            "--timeout-ms",
            &timeout_ms.to_string(),
        ])
        .args(
            http.iter()
                .flat_map(|(path, host)| ["--http-path", path, "--http-host", host]),
        )
        .output()?;
    Ok(if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    })
}

/// Probes every (from, to) cell at once (a blocked one waits its whole timeout): whether
/// each connected.
fn probe_cells(
    state: &State,
    cells: &[(String, String)],
    (port, protocol): (u16, &str),
    timeout_ms: u64,
) -> Result<BTreeMap<(String, String), bool>> {
    std::thread::scope(|sc| {
        let jobs: Vec<_> = cells
            .iter()
            .map(|(f, t)| {
                sc.spawn(move || probe_one(state, f, t, (port, protocol), None, timeout_ms))
            })
            .collect();
        let mut out = BTreeMap::new();
        for (k, j) in cells.iter().zip(jobs) {
            let r = j.join().map_err(|_| anyhow!("a probe panicked"))?;
            out.insert(k.clone(), r?.is_ok());
        }
        Ok(out)
    })
}

fn matrix(
    state: &State,
    port: u16,
    protocol: &str,
    timeout_ms: u64,
    (services, among): (bool, &[String]),
) -> Result<()> {
    if let Some(p) = among.iter().find(|p| !state.pods.contains_key(*p)) {
        bail!("--among: no pod {p}");
    }
    let pods: Vec<String> = state
        .pods
        .keys()
        .filter(|p| among.is_empty() || among.contains(p))
        .cloned()
        .collect();
    let targets: Vec<String> = if services {
        state.services.keys().map(|s| format!("svc/{s}")).collect()
    } else {
        pods.clone()
    };
    let all: Vec<(String, String)> = pods
        .iter()
        .flat_map(|f| targets.iter().map(move |t| (f.clone(), t.clone())))
        .collect();
    let mut cells = probe_cells(state, &all, (port, protocol), timeout_ms)?;
    // A probe that got no answer may only have been slow (49 of them start at once, on a
    // machine that may be busy): a cell is blocked once a second probe, started after
    // that crowd, gets none either. A connection is never made by a slow machine, so
    // cells that connected need no second look.
    let unanswered: Vec<(String, String)> = cells
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(k, _)| k.clone())
        .collect();
    cells.extend(probe_cells(
        state,
        &unanswered,
        (port, protocol),
        timeout_ms * 2,
    )?);
    println!("{port}/{protocol}: rows from, columns to (listed below); . connects, X blocked");
    let w = pods.iter().map(String::len).max().unwrap_or(4);
    print!("{:w$}", "");
    for (i, _) in targets.iter().enumerate() {
        print!(" {i:>2}");
    }
    println!();
    for f in &pods {
        print!("{f:w$}");
        for t in &targets {
            print!(
                "  {}",
                if cells[&(f.clone(), t.clone())] {
                    "."
                } else {
                    "X"
                }
            );
        }
        println!();
    }
    println!("columns: {}", targets.join(" "));
    Ok(())
}

/// The lab's processes of these names; an error naming the ones it does not have.
fn procs_named<'a>(state: &'a State, names: &[String]) -> Result<Vec<&'a Proc>> {
    names
        .iter()
        .map(|n| {
            state.procs.get(n).ok_or_else(|| {
                let known: Vec<&str> = state.procs.keys().map(String::as_str).collect();
                anyhow!(
                    "no process {n:?} in this lab (it has: {})",
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// Starts the named processes again (the ones still running are left as they are), all
/// of them before waiting for any: etcd members that were all stopped serve only
/// together.
fn start_again(lab: &Lab, names: &[String]) -> Result<()> {
    let mut state = lab.load()?;
    let mut started = Vec::new();
    for n in names {
        let p = procs_named(&state, std::slice::from_ref(n))?[0].clone();
        if p.running() {
            continue;
        }
        let old = p.pid;
        let mut p = p;
        p.again()?;
        // A node's pids (which `down` stops in order) follow the new process.
        for node in &mut state.nodes {
            for pid in node.pids.iter_mut().filter(|pid| **pid == old) {
                *pid = p.pid;
            }
        }
        state.procs.insert(n.clone(), p.clone());
        lab.save(&state)?;
        started.push((n, p));
    }
    for (n, p) in &started {
        p.wait(n)?;
        if n.starts_with("etcd") {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(etcd::serves(&lab.dir, p))?;
        }
        println!("{n}: started, pid {}", p.pid);
    }
    Ok(())
}

fn down(lab: &Lab) -> Result<()> {
    let state = lab.load()?;
    for p in state.pods.values() {
        if let Some(pid) = p.server_pid {
            kill(pid);
        }
        let _ = run(&["ip", "netns", "del", &p.netns]);
        let _ = run(&["ip", "link", "del", &p.veth]);
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&p.netns));
    }
    // Last started first: the HAProxy manager withdraws its instances through the agent.
    for n in &state.nodes {
        for pid in n.pids.iter().rev() {
            kill_wait(*pid, Duration::from_secs(5));
        }
    }
    for (name, p) in &state.procs {
        if name.starts_with("etcd") {
            p.stop(Duration::from_secs(5));
        }
    }
    if let Some(o) = &state.outside {
        if let Some(pid) = o.pid {
            kill(pid);
        }
        let _ = run(&["ip", "netns", "del", &o.netns]);
    }
    for n in state.nodes.iter().filter(|n| !n.netns.is_empty()) {
        let _ = run(&["ip", "netns", "del", &n.netns]);
    }
    if let Some(b) = &state.bridge {
        let _ = run(&["ip", "link", "del", b]);
    }
    std::thread::sleep(Duration::from_millis(200));
    std::fs::remove_dir_all(&lab.dir).with_context(|| format!("removing {}", lab.dir.display()))?;
    println!("down");
    Ok(())
}

fn main() -> std::process::ExitCode {
    vrouter_api::quiet_broken_pipe();
    let a = Args::parse();
    match real_main(a) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("vrlab: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main(a: Args) -> Result<u8> {
    let lab = Lab { dir: a.dir.clone() };
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match a.cmd {
        Cmd::Up {
            nodes,
            config,
            lcores,
            etcd_members,
            route_ttl,
        } => up(
            &lab,
            nodes,
            config,
            Shape {
                lcores,
                etcd_members,
                route_ttl,
            },
        )?,
        Cmd::Kill { names } => {
            let state = lab.load()?;
            for p in procs_named(&state, &names)? {
                p.kill();
            }
        }
        Cmd::Start { names } => start_again(&lab, &names)?,
        Cmd::Ps => {
            for (name, p) in &lab.load()?.procs {
                let run = if p.running() { "running" } else { "stopped" };
                println!("{name}\t{}\t{run}", p.pid);
            }
        }
        Cmd::Apply { files } => {
            let mut cluster = lab.cluster()?;
            for f in &files {
                for s in cluster.apply(manifest::read(f)?) {
                    println!("{s}: kind not translated, left out");
                }
            }
            rt()?.block_on(converge(&lab, &cluster))?;
            std::fs::write(lab.dir.join("cluster.yaml"), cluster.to_yaml()?)?;
        }
        Cmd::Delete { files } => {
            let mut cluster = lab.cluster()?;
            for f in &files {
                cluster.delete(&manifest::read(f)?);
            }
            rt()?.block_on(converge(&lab, &cluster))?;
            std::fs::write(lab.dir.join("cluster.yaml"), cluster.to_yaml()?)?;
        }
        Cmd::Pods => {
            let s = lab.load()?;
            for (k, p) in &s.pods {
                println!("{k}\t{}\t{}\tnode{}", p.ip, p.network, p.node + 1);
            }
        }
        Cmd::Probe {
            from,
            to,
            port,
            protocol,
            matrix: all,
            services,
            among,
            timeout_ms,
            path,
            host,
        } => {
            let s = lab.load()?;
            if all {
                matrix(&s, port, &protocol, timeout_ms, (services, &among))?;
                return Ok(0);
            }
            let (from, to) = (from.unwrap_or_default(), to.unwrap_or_default());
            if path.is_some() || host.is_some() {
                let path = path.unwrap_or_else(|| "/".into());
                let host = host.unwrap_or_else(|| to.clone());
                let url = format!("http://{host}{path}");
                let r = probe_one(
                    &s,
                    &from,
                    &to,
                    (port, "TCP"),
                    Some((&path, &host)),
                    timeout_ms,
                )?;
                return Ok(match r {
                    Ok(answer) => {
                        // "STATUS BODY", the body "NAME PEER" from the lab's servers, then
                        // "via INSTANCE" when an HAProxy answered.
                        let (first, via) = answer.split_once('\n').unwrap_or((&answer, ""));
                        let (status, body) = first.split_once(' ').unwrap_or((first, ""));
                        let (name, seen) = body.split_once(' ').unwrap_or((body, "?"));
                        let via = if via.is_empty() {
                            String::new()
                        } else {
                            format!(" {via}")
                        };
                        if status.starts_with('2') {
                            println!("{from} -> {to} {url}: {status} ({name}) as {seen}{via}");
                            0
                        } else {
                            println!("{from} -> {to} {url}: {status}{via} {body}");
                            1
                        }
                    }
                    Err(why) => {
                        println!("{from} -> {to} {url}: blocked ({why})");
                        1
                    }
                });
            }
            return Ok(
                match probe_one(&s, &from, &to, (port, &protocol), None, timeout_ms)? {
                    Ok(answer) => {
                        // "NAME PEER": the server, and the source it saw.
                        let (name, seen) = answer.split_once(' ').unwrap_or((&answer, "?"));
                        println!("{from} -> {to} {port}/{protocol}: connected ({name}) as {seen}");
                        0
                    }
                    Err(why) => {
                        println!("{from} -> {to} {port}/{protocol}: blocked ({why})");
                        1
                    }
                },
            );
        }
        Cmd::Ingresses => list_ingresses(&lab, &lab.load()?),
        Cmd::Down => down(&lab)?,
        Cmd::Lookup { from, name } => {
            let s = lab.load()?;
            let p = s.pods.get(&from).ok_or_else(|| anyhow!("no pod {from}"))?;
            let o = Command::new("ip")
                .args(["netns", "exec", &p.netns])
                .arg(bin("vrlab"))
                .args(["resolve", &name])
                .output()?;
            let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
            return Ok(if o.status.success() {
                println!("{from}: {name} -> {out}");
                0
            } else {
                println!(
                    "{from}: {name} does not resolve ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                1
            });
        }
        Cmd::Resolve { name } => {
            use std::net::ToSocketAddrs;
            let addrs: Vec<String> = (name.as_str(), 0)
                .to_socket_addrs()
                .with_context(|| format!("resolving {name}"))?
                .map(|a| a.ip().to_string())
                .collect();
            println!("{}", addrs.join(" "));
        }
        Cmd::Serve { name, ports } => serve_ports(&name, &ports)?,
        Cmd::Connect {
            addr,
            port,
            protocol,
            timeout_ms,
            http_path,
            http_host,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let answer = match http_path {
                Some(path) => http_get(
                    SocketAddr::new(addr, port),
                    &path,
                    http_host.as_deref().unwrap_or("localhost"),
                    timeout,
                )?,
                None => connect(addr, port, &protocol, timeout)?,
            };
            println!("{answer}");
        }
    }
    Ok(0)
}
