//! `vrouter-cni`: the CNI plugin (spec 1.0.0; also 0.4.0 results, and STATUS from 1.1.0).
//! Called by a container runtime with `CNI_*` variables and the network configuration on
//! standard input; plugs the pod into the vrouter through the node's agent.
//!
//! ADD: finds the pod's interface (kube-manager's `<cluster>__<ns>__<pod>`; none yet is
//! "try again later", code 11), makes a veth pair whose pod end is `CNI_IFNAME` in
//! `CNI_NETNS`, gives the host end to the vrouter as an af_packet port through the agent,
//! sets the pod end's MAC, address and default route from what the agent assigned, waits
//! until the vrouter is programmed, and prints the result. DEL undoes it and succeeds when
//! there is nothing left to undo. CHECK compares the namespace, the host and the agent
//! with the previous result: the port is this sandbox's, the host end of its veth exists,
//! the pod's interface has the agent's MAC and every address and route of the result. STATUS says whether the agent and its vrouter are up. Errors are the
//! spec's JSON on standard output with a non-zero exit status.
//!
//! Network configuration fields besides the standard ones: `agent` (the agent's socket,
//! default `unix:/run/vrouter-agent/agent.sock`; the plugin needs the `ports` role there), `clusterName` (default `k8s`), `clusterProject`
//! (kube-manager's `cluster_project`), `mtu` (of the pod's interface and its host end;
//! default 1450: a 1500-byte fabric less the largest encapsulation, VXLAN's 50 bytes).

#![forbid(unsafe_code)]

use std::io::Read;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use agent::k8s::{KubeConfig, translate};
use agent::proto::{self, agent_api_client::AgentApiClient, config_api_client::ConfigApiClient};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::transport::Channel;

const SUPPORTED: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The spec's error codes used here.
mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific: CHECK found a difference.
    pub const CHECK_FAILED: u32 = 100;
}

#[derive(Debug)]
struct CniError {
    code: u32,
    msg: String,
    details: String,
}

fn err(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError {
        code,
        msg: msg.into(),
        details: details.into(),
    }
}

type Res<T> = Result<T, CniError>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(default = "default_agent")]
    agent: String,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    cluster_project: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    prev_result: Option<Value>,
}

/// A 1500-byte fabric less VXLAN's 50 bytes (outer IP, UDP, VXLAN, inner Ethernet), the
/// largest of the encapsulations: a pod's packets fit the fabric whichever is used.
const DEFAULT_MTU: u32 = 1450;

impl NetConf {
    /// The interface MTU, checked.
    fn mtu(&self) -> Res<u32> {
        let mtu = self.mtu.unwrap_or(DEFAULT_MTU);
        if !(1280..=u32::from(vrouter_api::config::MAX_MTU)).contains(&mtu) {
            return Err(err(
                code::INVALID_CONFIG,
                "invalid network configuration",
                format!(
                    "mtu {mtu} is outside 1280..={}",
                    vrouter_api::config::MAX_MTU
                ),
            ));
        }
        Ok(mtu)
    }
}

fn default_agent() -> String {
    agent::client::DEFAULT_TARGET.into()
}

/// The variables of one call.
#[derive(Debug)]
struct Env {
    container: String,
    netns: String,
    ifname: String,
    namespace: String,
    pod: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn need(name: &str) -> Res<String> {
    var(name).ok_or_else(|| err(code::INVALID_ENV, format!("{name} is not set"), ""))
}

impl Env {
    fn read(netns_required: bool) -> Res<Env> {
        let args = var("CNI_ARGS").unwrap_or_default();
        let arg = |k: &str| {
            args.split(';')
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        };
        let netns = if netns_required {
            need("CNI_NETNS")?
        } else {
            var("CNI_NETNS").unwrap_or_default()
        };
        Ok(Env {
            container: need("CNI_CONTAINERID")?,
            netns,
            ifname: need("CNI_IFNAME")?,
            namespace: arg("K8S_POD_NAMESPACE").ok_or_else(|| {
                err(
                    code::INVALID_ENV,
                    "CNI_ARGS has no K8S_POD_NAMESPACE",
                    args.clone(),
                )
            })?,
            pod: arg("K8S_POD_NAME").ok_or_else(|| {
                err(
                    code::INVALID_ENV,
                    "CNI_ARGS has no K8S_POD_NAME",
                    args.clone(),
                )
            })?,
        })
    }

    /// The host end of the veth pair: at most 15 bytes, stable for the attachment.
    fn host_ifname(&self) -> String {
        format!("vr{:08x}", self.hash() as u32)
    }

    fn hash(&self) -> u64 {
        agent::name_hash(&format!("{}/{}", self.container, self.ifname))
    }
}

/// Runs a command; its stderr is the error's details.
fn cmd(args: &[&str]) -> Res<String> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| err(code::IO, format!("running {}", args[0]), e.to_string()))?;
    if !o.status.success() {
        return Err(err(
            code::IO,
            format!("{} failed", args.join(" ")),
            String::from_utf8_lossy(&o.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).to_string())
}

/// Runs a command in the pod's network namespace (a path, as runtimes give it).
fn in_netns(netns: &str, args: &[&str]) -> Res<String> {
    let net = format!("--net={netns}");
    let mut v = vec!["nsenter", net.as_str()];
    v.extend_from_slice(args);
    cmd(&v)
}

async fn channel(conf: &NetConf) -> Res<Channel> {
    agent::client::parse(&conf.agent).map_err(|e| {
        err(
            code::INVALID_CONFIG,
            "agent is not an address",
            format!("{e:#}"),
        )
    })?;
    agent::client::connect_with(&conf.agent, None, Some(Duration::from_secs(10)))
        .await
        .map_err(|e| {
            err(
                code::TRY_AGAIN_LATER,
                format!("the agent at {} is not reachable", conf.agent),
                format!("{e:#}"),
            )
        })
}

fn kube_config(conf: &NetConf) -> KubeConfig {
    let mut k = KubeConfig::default();
    if let Some(n) = &conf.cluster_name {
        k.cluster_name = n.clone();
    }
    k.cluster_project = conf.cluster_project.clone();
    k
}

/// The pod's interface UUID (none: kube-manager has not made it).
async fn interface(ch: &Channel, conf: &NetConf, env: &Env) -> Res<Option<String>> {
    let fq = translate::pod_interface(&kube_config(conf), &env.namespace, &env.pod);
    match ConfigApiClient::new(ch.clone())
        .get(proto::Ref {
            r#type: "virtual-machine-interface".into(),
            uuid: String::new(),
            fq_name: fq,
        })
        .await
    {
        Ok(o) => Ok(match o.into_inner().kind {
            Some(proto::object::Kind::VirtualMachineInterface(v)) => Some(v.uuid),
            _ => None,
        }),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(err(
            code::TRY_AGAIN_LATER,
            "the agent refused the lookup",
            s.message(),
        )),
    }
}

async fn wait_programmed(a: &mut AgentApiClient<Channel>) -> Res<()> {
    let t = Instant::now();
    loop {
        let s = a
            .status(proto::Empty {})
            .await
            .map_err(|s| err(code::TRY_AGAIN_LATER, "agent status", s.message()))?
            .into_inner();
        if s.vrouter_connected && s.programmed_revision >= s.config_revision {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(10) {
            return Err(err(
                code::TRY_AGAIN_LATER,
                "the vrouter was not programmed in 10 s",
                s.last_error,
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn result(conf: &NetConf, env: &Env, info: &proto::PortInfo) -> Value {
    let v4 = conf.cni_version.starts_with("0.");
    // IPv4 first: the pod's primary address in a dual-stack pod.
    let mut addrs: Vec<&String> = info.ip_addresses.iter().collect();
    addrs.sort_by_key(|a| a.contains(':'));
    let ips: Vec<Value> = addrs
        .into_iter()
        .map(|a| {
            let six = a.contains(':');
            let gw = if six { &info.gateway6 } else { &info.gateway };
            let mut ip = json!({"address": a, "interface": 0});
            if !gw.is_empty() {
                ip["gateway"] = json!(gw);
            }
            if v4 {
                ip["version"] = json!(if six { "6" } else { "4" });
            }
            ip
        })
        .collect();
    let mut routes = Vec::new();
    if !info.gateway.is_empty() {
        routes.push(json!({"dst": "0.0.0.0/0", "gw": info.gateway}));
    }
    if !info.gateway6.is_empty() && info.ip_addresses.iter().any(|a| a.contains(':')) {
        routes.push(json!({"dst": "::/0", "gw": info.gateway6}));
    }
    let mut out = json!({
        "cniVersion": conf.cni_version,
        "interfaces": [{"name": env.ifname, "mac": info.mac_address, "sandbox": env.netns}],
        "ips": ips,
        "routes": routes,
        "dns": {},
    });
    if !info.dns_server.is_empty() {
        out["dns"] = json!({"nameservers": [info.dns_server]});
    }
    out
}

async fn add(conf: &NetConf, env: &Env) -> Res<Value> {
    let ch = channel(conf).await?;
    let uuid = interface(&ch, conf, env).await?.ok_or_else(|| {
        err(
            code::TRY_AGAIN_LATER,
            format!(
                "pod {}/{} has no interface yet (kube-manager has not translated it)",
                env.namespace, env.pod
            ),
            "",
        )
    })?;
    let host = env.host_ifname();
    // The pair is made inside the pod's namespace and the host end sent to ours.
    let pid = std::process::id().to_string();
    in_netns(
        &env.netns,
        &[
            "ip",
            "link",
            "add",
            &env.ifname,
            "type",
            "veth",
            "peer",
            "name",
            &host,
            "netns",
            &pid,
        ],
    )?;
    let plugged = plug(&ch, conf, env, &uuid, &host).await;
    if plugged.is_err() {
        let _ = cmd(&["ip", "link", "del", &host]);
    }
    plugged
}

async fn plug(ch: &Channel, conf: &NetConf, env: &Env, uuid: &str, host: &str) -> Res<Value> {
    let mtu_value = conf.mtu()?;
    let mtu = mtu_value.to_string();
    cmd(&["ip", "link", "set", host, "mtu", &mtu])?;
    cmd(&["ip", "link", "set", host, "up"])?;
    let mut a = AgentApiClient::new(ch.clone());
    let info = a
        .add_port(proto::Port {
            vmi_uuid: uuid.into(),
            // Served by the vrouter itself: no DPDK port per pod, so no limit of 32.
            device: format!("packet:{host}"),
            name: format!("pod-{}", &uuid[..8.min(uuid.len())]),
            // The vrouter's ring and its size checks follow the pod's link.
            mtu: mtu_value,
        })
        .await
        .map_err(|s| {
            err(
                code::TRY_AGAIN_LATER,
                "the agent refused the port",
                s.message(),
            )
        })?
        .into_inner();
    let ns = &env.netns;
    let dev = env.ifname.as_str();
    in_netns(ns, &["ip", "link", "set", "lo", "up"])?;
    in_netns(
        ns,
        &["ip", "link", "set", dev, "address", &info.mac_address],
    )?;
    in_netns(ns, &["ip", "link", "set", dev, "mtu", &mtu])?;
    in_netns(ns, &["ip", "link", "set", dev, "up"])?;
    // The vrouter reads the host end as raw frames: checksums must be complete.
    in_netns(ns, &["ethtool", "-K", dev, "tx", "off"])?;
    for a in &info.ip_addresses {
        // The agent assigned the address: no duplicate detection to wait for.
        if a.contains(':') {
            in_netns(ns, &["ip", "addr", "add", a, "dev", dev, "nodad"])?;
        } else {
            in_netns(ns, &["ip", "addr", "add", a, "dev", dev])?;
        }
    }
    if !info.gateway.is_empty() {
        in_netns(
            ns,
            &[
                "ip",
                "route",
                "replace",
                "default",
                "via",
                &info.gateway,
                "dev",
                dev,
            ],
        )?;
    }
    if !info.gateway6.is_empty() && info.ip_addresses.iter().any(|a| a.contains(':')) {
        in_netns(
            ns,
            &[
                "ip",
                "-6",
                "route",
                "replace",
                "default",
                "via",
                &info.gateway6,
                "dev",
                dev,
            ],
        )?;
    }
    wait_programmed(&mut a).await?;
    Ok(result(conf, env, &info))
}

/// DEL: unplugs this sandbox's port (only if the pod's port is still this container's:
/// a late DEL for an old sandbox leaves the new one's alone) and removes the host end of
/// its veth. With the agent away, the local part is done and DEL succeeds: the link goes,
/// and the port goes from the agent with the pod's interface.
async fn del(conf: &NetConf, env: &Env) -> Res<()> {
    let ours = format!("packet:{}", env.host_ifname());
    match channel(conf).await {
        Err(e) if e.code == code::TRY_AGAIN_LATER => {
            eprintln!(
                "vrouter-cni: DEL with the agent away ({}): local clean-up only",
                e.msg
            );
        }
        Err(e) => return Err(e),
        Ok(ch) => {
            if let Some(uuid) = interface(&ch, conf, env).await? {
                let mut a = AgentApiClient::new(ch.clone());
                let ports = a
                    .list_ports(proto::Empty {})
                    .await
                    .map_err(|s| err(code::TRY_AGAIN_LATER, "listing ports", s.message()))?
                    .into_inner()
                    .ports;
                let mine = ports.iter().any(|p| p.vmi_uuid == uuid && p.device == ours);
                if mine {
                    match a.delete_port(proto::PortRef { vmi_uuid: uuid }).await {
                        Ok(_) => {}
                        Err(s) if s.code() == tonic::Code::NotFound => {}
                        Err(s) => {
                            return Err(err(
                                code::TRY_AGAIN_LATER,
                                "the agent refused the delete",
                                s.message(),
                            ));
                        }
                    }
                }
            }
        }
    }
    // The host end (its peer goes with it); already gone is fine.
    let _ = cmd(&["ip", "link", "del", &env.host_ifname()]);
    Ok(())
}

async fn check(conf: &NetConf, env: &Env) -> Res<()> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| err(code::INVALID_CONFIG, "CHECK needs prevResult", ""))?;
    let ch = channel(conf).await?;
    let uuid = interface(&ch, conf, env)
        .await?
        .ok_or_else(|| err(code::CHECK_FAILED, "the pod has no interface", ""))?;
    let ports = AgentApiClient::new(ch)
        .list_ports(proto::Empty {})
        .await
        .map_err(|s| err(code::TRY_AGAIN_LATER, "listing ports", s.message()))?
        .into_inner()
        .ports;
    let info = ports.iter().find(|p| p.vmi_uuid == uuid).ok_or_else(|| {
        err(
            code::CHECK_FAILED,
            "the vrouter has no port for the pod",
            "",
        )
    })?;
    let drift = |msg: String, details: &str| Err(err(code::CHECK_FAILED, msg, details.trim()));
    let host = env.host_ifname();
    if info.device != format!("packet:{host}") {
        return drift(
            format!("the pod's port is {}, not this sandbox's", info.device),
            "",
        );
    }
    if cmd(&["ip", "link", "show", &host]).is_err() {
        return drift(format!("the host end {host} of the pod's link is gone"), "");
    }
    // The pod's interface as `ip -o <what> show dev IFNAME` sees it; gone is a failure.
    let show = |what: &str| {
        in_netns(&env.netns, &["ip", "-o", what, "show", "dev", &env.ifname]).map_err(|e| {
            err(
                code::CHECK_FAILED,
                format!("{} is missing", env.ifname),
                e.details,
            )
        })
    };
    let link = show("link")?;
    if !link.contains(&format!("link/ether {} ", info.mac_address)) {
        return drift(
            format!("{} does not have the MAC {}", env.ifname, info.mac_address),
            &link,
        );
    }
    let shown = show("addr")?;
    for ip in prev["ips"].as_array().into_iter().flatten() {
        let a = ip["address"].as_str().unwrap_or_default();
        if !info.ip_addresses.iter().any(|x| x == a) {
            return drift(format!("the agent no longer assigns {a}"), "");
        }
        if !shown.contains(&format!(" {a} ")) {
            return drift(format!("{} does not hold {a}", env.ifname), &shown);
        }
    }
    for r in prev["routes"].as_array().into_iter().flatten() {
        let dst = r["dst"].as_str().unwrap_or_default();
        let six = dst.contains(':');
        let table = in_netns(
            &env.netns,
            &["ip", if six { "-6" } else { "-4" }, "-o", "route", "show"],
        )
        .map_err(|e| err(code::CHECK_FAILED, "reading the pod's routes", e.details))?;
        let want = match dst {
            "0.0.0.0/0" | "::/0" => "default".to_string(),
            d => d.to_string(),
        };
        let gw = r["gw"].as_str();
        let found = table.lines().any(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let has = |k: &str, v: &str| t.windows(2).any(|w| w[0] == k && w[1] == v);
            t.first() == Some(&want.as_str())
                && gw.is_none_or(|g| has("via", g))
                && has("dev", &env.ifname)
        });
        if !found {
            return drift(
                format!(
                    "the route to {dst}{} is missing",
                    gw.map(|g| format!(" via {g}")).unwrap_or_default()
                ),
                &table,
            );
        }
    }
    Ok(())
}

async fn status(conf: &NetConf) -> Res<()> {
    let ch = channel(conf)
        .await
        .map_err(|e| err(code::NOT_AVAILABLE, e.msg, e.details))?;
    let s = AgentApiClient::new(ch)
        .status(proto::Empty {})
        .await
        .map_err(|s| err(code::NOT_AVAILABLE, "agent status", s.message()))?
        .into_inner();
    if !s.vrouter_connected {
        return Err(err(
            code::NOT_AVAILABLE,
            "the agent has no vrouter",
            s.last_error,
        ));
    }
    Ok(())
}

fn read_conf() -> Res<NetConf> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| err(code::IO, "reading the network configuration", e.to_string()))?;
    let conf: NetConf = serde_json::from_str(&text).map_err(|e| {
        err(
            code::DECODE,
            "the network configuration is not valid",
            e.to_string(),
        )
    })?;
    if conf.name.is_empty() {
        return Err(err(code::INVALID_CONFIG, "the network has no name", ""));
    }
    if !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(err(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {} is not supported", conf.cni_version),
            format!("supported: {}", SUPPORTED.join(", ")),
        ));
    }
    Ok(conf)
}

async fn run(command: &str, conf: &NetConf) -> Res<Option<Value>> {
    match command {
        "ADD" => Ok(Some(add(conf, &Env::read(true)?).await?)),
        "DEL" => del(conf, &Env::read(false)?).await.map(|_| None),
        "CHECK" => check(conf, &Env::read(true)?).await.map(|_| None),
        "STATUS" => status(conf).await.map(|_| None),
        other => Err(err(
            code::INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not supported"),
            "ADD, DEL, CHECK, STATUS, VERSION",
        )),
    }
}

fn main() -> ExitCode {
    let command = var("CNI_COMMAND").unwrap_or_default();
    if command == "VERSION" {
        // The configuration (its cniVersion) is not needed to answer.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        println!(
            "{}",
            json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED})
        );
        return ExitCode::SUCCESS;
    }
    let help = std::env::args().any(|a| a == "--help" || a == "-h");
    if command.is_empty() || help {
        eprintln!(
            "vrouter-cni: a CNI plugin (spec {}); a container runtime runs it with CNI_COMMAND, \
             CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME) \
             and the network configuration on standard input",
            SUPPORTED.join(", ")
        );
        return if help {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    }
    let conf = match read_conf() {
        Ok(c) => c,
        Err(e) => return fail("1.0.0", e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&conf.cni_version, err(code::IO, "runtime", e.to_string())),
    };
    match rt.block_on(run(&command, &conf)) {
        Ok(Some(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(&conf.cni_version, e),
    }
}

fn fail(version: &str, e: CniError) -> ExitCode {
    println!(
        "{}",
        json!({"cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details})
    );
    ExitCode::from(1)
}
