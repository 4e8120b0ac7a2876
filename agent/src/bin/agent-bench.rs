//! `agent-bench`: how fast configuration reaches the vrouter's tables.
//!
//! `agent-bench socket --socket S`: route updates per second through the vrouter's control
//! socket (one route per request, and batches of 1000), and the reference for the agent
//! runs: N interfaces programmed straight through the socket (vif, nexthop, label, route
//! each) in batches.
//!
//! `agent-bench agent --target URL --socket S`: through a running agent's gRPC API: N
//! interfaces (VMI + instance-ip + port), V service VIPs of B backends each (ECMP
//! composites), P security groups attached to interfaces (compiled rule sets), each timed
//! from the first request until the vrouter's tables reflect it (checked by dumping them);
//! with `--follower` agents (other nodes over the same cluster configuration), until they
//! have programmed it too.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::proto::{self, Object, Ref, object::Kind as K};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use vrouter_api::control::{Client, Op};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Time configuration on its way to the vrouter's tables"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Control-socket rates and the direct-programming reference.
    Socket {
        /// The vrouter's control socket.
        #[arg(long)]
        socket: PathBuf,
        /// Interfaces for the reference run.
        #[arg(long, default_value_t = 10_000)]
        interfaces: u32,
        /// Routes for the rate runs.
        #[arg(long, default_value_t = 20_000)]
        routes: u32,
    },
    /// Through the agent's API.
    Agent {
        /// The agent: `unix:PATH`.
        #[arg(long, default_value = agent::client::DEFAULT_TARGET)]
        target: String,
        /// The vrouter's control socket (to check its tables).
        #[arg(long)]
        socket: PathBuf,
        /// Interfaces.
        #[arg(long, default_value_t = 10_000)]
        interfaces: u32,
        /// Service VIPs.
        #[arg(long, default_value_t = 1000)]
        vips: u32,
        /// Backends per VIP.
        #[arg(long, default_value_t = 4)]
        backends: u32,
        /// Security groups (each on its own interface).
        #[arg(long, default_value_t = 1000)]
        policies: u32,
        /// Another node's agent over the same cluster configuration (`--config-store
        /// etcd`; repeat): each timing runs until every one has programmed it too.
        #[arg(long = "follower")]
        followers: Vec<String>,
    },
}

fn call(c: &mut Client, op: Op) -> Result<Value> {
    let r = c.call(op)?;
    if !r.ok {
        bail!("vrouter refused: {:?}", r.error);
    }
    Ok(r.data.unwrap_or(Value::Null))
}

fn row(what: &str, n: u64, t: Duration) {
    println!(
        "{what:<58} {n:>8} in {:>8.3} s = {:>10.0} /s",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64()
    );
}

fn socket_bench(socket: &Path, interfaces: u32, routes: u32) -> Result<()> {
    let mut c = Client::connect(socket).context("the vrouter's control socket")?;
    let vrf = 4000;
    call(&mut c, Op::AddVrf { id: vrf })?;
    call(
        &mut c,
        Op::SetNexthop(serde_json::from_value(
            serde_json::json!({"id": 60000, "type": "discard"}),
        )?),
    )?;
    let route = |i: u32| {
        Op::AddRoute(vrouter_api::config::RouteCfg {
            vrf,
            prefix: format!("10.{}.{}.{}/32", 100 + (i >> 16), (i >> 8) & 255, i & 255),
            nh: 60000,
            label: 0,
            attr: 0,
        })
    };
    let t = Instant::now();
    for i in 0..routes {
        call(&mut c, route(i))?;
    }
    row("route updates, one per request", routes.into(), t.elapsed());
    let t = Instant::now();
    for chunk in (0..routes).collect::<Vec<_>>().chunks(1000) {
        call(
            &mut c,
            Op::Batch {
                ops: chunk.iter().map(|i| route(*i + routes)).collect(),
            },
        )?;
    }
    row("route updates, batches of 1000", routes.into(), t.elapsed());

    // The reference: interfaces programmed directly (vif, nexthop, label, route each).
    let t = Instant::now();
    let base = 16;
    let mut ops = Vec::new();
    for i in 0..interfaces {
        let id = base + i;
        ops.push(Op::AddVif(serde_json::from_value(serde_json::json!({
            "id": id, "name": format!("ref{i}"), "kind": "virtual",
            "mac": "00:00:5e:00:01:00", "vrf": vrf,
            "ip4": format!("10.200.{}.{}", i >> 8, i & 255),
        }))?));
        ops.push(Op::SetNexthop(serde_json::from_value(serde_json::json!({
            "id": 100_000 + i, "type": "encap", "vif": id,
            "dmac": "02:00:00:00:00:01", "smac": "00:00:5e:00:01:00",
        }))?));
        ops.push(Op::SetLabel(vrouter_api::config::LabelCfg {
            label: 100_000 + i,
            nh: 100_000 + i,
        }));
        ops.push(Op::AddRoute(vrouter_api::config::RouteCfg {
            vrf,
            prefix: format!("10.200.{}.{}/32", i >> 8, i & 255),
            nh: 100_000 + i,
            label: 100_000 + i,
            attr: 0,
        }));
    }
    let n = ops.len();
    while !ops.is_empty() {
        let rest = ops.split_off(ops.len().min(2000));
        call(&mut c, Op::Batch { ops })?;
        ops = rest;
    }
    let direct = t.elapsed();
    row(
        &format!("reference: {interfaces} interfaces straight to the socket ({n} ops)"),
        interfaces.into(),
        direct,
    );
    println!("reference_seconds {:.3}", direct.as_secs_f64());
    // Clean up so that an agent run on the same vrouter starts from its own state.
    let mut del = Vec::new();
    for i in 0..interfaces {
        del.push(Op::DelRoute {
            vrf,
            prefix: format!("10.200.{}.{}/32", i >> 8, i & 255),
        });
        del.push(Op::DelLabel { label: 100_000 + i });
        del.push(Op::DelNexthop { id: 100_000 + i });
        del.push(Op::DelVif { id: base + i });
    }
    for i in 0..2 * routes {
        del.push(Op::DelRoute {
            vrf,
            prefix: format!("10.{}.{}.{}/32", 100 + (i >> 16), (i >> 8) & 255, i & 255),
        });
    }
    del.push(Op::DelNexthop { id: 60000 });
    del.push(Op::DelVrf { id: vrf });
    while !del.is_empty() {
        let rest = del.split_off(del.len().min(2000));
        call(&mut c, Op::Batch { ops: del })?;
        del = rest;
    }
    Ok(())
}

fn r(t: &str, fq: &[String]) -> Ref {
    Ref {
        r#type: t.into(),
        uuid: String::new(),
        fq_name: fq.to_vec(),
    }
}

fn fq(name: &str) -> Vec<String> {
    vec!["default-domain".into(), "bench".into(), name.into()]
}

fn create(o: K) -> proto::Change {
    proto::Change {
        change: Some(proto::change::Change::Create(Object { kind: Some(o) })),
    }
}

fn update(o: K) -> proto::Change {
    proto::Change {
        change: Some(proto::change::Change::Update(Object { kind: Some(o) })),
    }
}

type Config = proto::config_api_client::ConfigApiClient<tonic::transport::Channel>;
type AgentC = proto::agent_api_client::AgentApiClient<tonic::transport::Channel>;

async fn batches(c: &mut Config, changes: Vec<proto::Change>) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for chunk in changes.chunks(1000) {
        let r = c
            .batch(proto::BatchRequest {
                changes: chunk.to_vec(),
            })
            .await?;
        out.extend(r.into_inner().objects);
    }
    Ok(out)
}

/// Until the writer and every follower have programmed the writer's revision.
async fn programmed_all(a: &mut AgentC, followers: &mut [AgentC]) -> Result<()> {
    let (every, limit) = (Duration::from_millis(5), Duration::from_secs(600));
    let at = agent::client::programmed(a, None, every, limit)
        .await?
        .config_revision;
    for f in followers {
        agent::client::programmed(f, Some(at), every, limit)
            .await
            .context("a follower")?;
    }
    Ok(())
}

fn count(socket: &Path, op: impl FnMut(u32) -> Op, f: impl Fn(&Value) -> bool) -> Result<usize> {
    let mut c = Client::connect(socket)?;
    Ok(c.dump_all(op)?.iter().filter(|v| f(v)).count())
}

async fn agent_bench(
    target: String,
    socket: PathBuf,
    n: u32,
    vips: u32,
    backends: u32,
    policies: u32,
    followers: Vec<String>,
) -> Result<()> {
    let mut fs = Vec::new();
    for f in &followers {
        fs.push(AgentC::new(agent::client::connect(f, None).await?));
    }
    let ch = agent::client::connect(&target, None).await?;
    let mut c = Config::new(ch.clone());
    let mut a = AgentC::new(ch);
    let t = Instant::now();
    batches(
        &mut c,
        vec![
            create(K::Project(proto::Project {
                fq_name: vec!["default-domain".into(), "bench".into()],
                ..Default::default()
            })),
            create(K::NetworkIpam(proto::NetworkIpam {
                fq_name: fq("ipam"),
                ..Default::default()
            })),
            create(K::VirtualNetwork(proto::VirtualNetwork {
                fq_name: fq("net"),
                network_ipam_refs: vec![proto::IpamRef {
                    ipam: Some(r("network-ipam", &fq("ipam"))),
                    subnets: vec![proto::Subnet {
                        prefix: "10.128.0.0/14".into(),
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            })),
        ],
    )
    .await?;
    let mut changes = Vec::new();
    for i in 0..n {
        let name = format!("vmi{i}");
        changes.push(create(K::VirtualMachineInterface(
            proto::VirtualMachineInterface {
                fq_name: fq(&name),
                virtual_network_ref: Some(r("virtual-network", &fq("net"))),
                ..Default::default()
            },
        )));
        changes.push(create(K::InstanceIp(proto::InstanceIp {
            fq_name: vec![format!("ip{i}")],
            virtual_network_ref: Some(r("virtual-network", &fq("net"))),
            virtual_machine_interface_refs: vec![r("virtual-machine-interface", &fq(&name))],
            ..Default::default()
        })));
    }
    let objs = batches(&mut c, changes).await?;
    let api = t.elapsed();
    let vmis: Vec<proto::VirtualMachineInterface> = objs
        .into_iter()
        .filter_map(|o| match o.kind {
            Some(K::VirtualMachineInterface(v)) => Some(v),
            _ => None,
        })
        .collect();
    for chunk in vmis.chunks(2000) {
        a.add_ports(proto::Ports {
            ports: chunk
                .iter()
                .map(|v| proto::Port {
                    vmi_uuid: v.uuid.clone(),
                    device: String::new(),
                    name: v.fq_name[2].clone(),
                    mtu: 0,
                })
                .collect(),
        })
        .await?;
    }
    programmed_all(&mut a, &mut fs).await?;
    let total = t.elapsed();
    let vifs = count(
        &socket,
        |cursor| Op::DumpVifs { cursor },
        |v| v["id"].as_u64() >= Some(16),
    )?;
    if vifs != n as usize {
        bail!("{vifs} vifs in the vrouter, {n} wanted");
    }
    row(
        &format!("{n} interfaces: API (VMI + instance-ip)"),
        n.into(),
        api,
    );
    row(
        &format!("{n} interfaces: API -> vrouter tables (ports included)"),
        n.into(),
        total,
    );
    println!("agent_interfaces_seconds {:.3}", total.as_secs_f64());

    // VIPs: an instance-ip on `backends` interfaces each -> a composite per VIP.
    let t = Instant::now();
    let mut changes = Vec::new();
    for v in 0..vips {
        changes.push(create(K::InstanceIp(proto::InstanceIp {
            fq_name: vec![format!("vip{v}")],
            service_instance_ip: true,
            virtual_network_ref: Some(r("virtual-network", &fq("net"))),
            virtual_machine_interface_refs: (0..backends)
                .map(|b| {
                    r(
                        "virtual-machine-interface",
                        &fq(&format!("vmi{}", (v * backends + b) % n)),
                    )
                })
                .collect(),
            ..Default::default()
        })));
    }
    batches(&mut c, changes).await?;
    programmed_all(&mut a, &mut fs).await?;
    let vip_t = t.elapsed();
    let comps = count(
        &socket,
        |cursor| Op::DumpNexthops { cursor },
        |v| v["type"] == "composite",
    )?;
    if comps != vips as usize {
        bail!("{comps} composites in the vrouter, {vips} wanted");
    }
    row(
        &format!("{vips} service VIPs x {backends} backends -> composites"),
        vips.into(),
        vip_t,
    );
    println!("agent_vips_seconds {:.3}", vip_t.as_secs_f64());

    // Policies: a security group per interface (two rules each), attached.
    let t = Instant::now();
    let mut changes = Vec::new();
    for p in 0..policies {
        changes.push(create(K::SecurityGroup(proto::SecurityGroup {
            fq_name: fq(&format!("sg{p}")),
            security_group_entries: vec![
                proto::PolicyRule {
                    protocol: "tcp".into(),
                    src_addresses: vec![proto::AddressType {
                        subnet: format!("10.{}.0.0/16", p % 256),
                        ..Default::default()
                    }],
                    dst_addresses: vec![proto::AddressType {
                        security_group: "local".into(),
                        ..Default::default()
                    }],
                    dst_ports: vec![proto::PortRange {
                        start_port: 80 + p % 1000,
                        end_port: 80 + p % 1000,
                    }],
                    ..Default::default()
                },
                proto::PolicyRule {
                    protocol: "any".into(),
                    src_addresses: vec![proto::AddressType {
                        security_group: "local".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        })));
    }
    for (p, v) in vmis.iter().take(policies as usize).enumerate() {
        let mut v = v.clone();
        v.security_group_refs = vec![r("security-group", &fq(&format!("sg{p}")))];
        changes.push(update(K::VirtualMachineInterface(v)));
    }
    batches(&mut c, changes).await?;
    programmed_all(&mut a, &mut fs).await?;
    let pol_t = t.elapsed();
    let sets = {
        let mut cl = Client::connect(&socket)?;
        call(&mut cl, Op::DumpPolicies)?
            .as_array()
            .map_or(0, Vec::len)
    };
    if sets < 2 * policies as usize {
        bail!("{sets} rule sets in the vrouter, {} wanted", 2 * policies);
    }
    row(
        &format!("{policies} security groups attached -> compiled rule sets"),
        policies.into(),
        pol_t,
    );
    println!("agent_policies_seconds {:.3}", pol_t.as_secs_f64());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Socket {
            socket,
            interfaces,
            routes,
        } => socket_bench(&socket, interfaces, routes),
        Cmd::Agent {
            target,
            socket,
            interfaces,
            vips,
            backends,
            policies,
            followers,
        } => {
            agent_bench(
                target, socket, interfaces, vips, backends, policies, followers,
            )
            .await
        }
    }
}
