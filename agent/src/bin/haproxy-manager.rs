//! `haproxy-manager`: runs, on one node, the HAProxy instances of the load balancers
//! bound to it (see [`agent::lbaas`]), and keeps them running.
//!
//! Each instance is a network namespace with one interface, plugged into the vrouter
//! through the agent (an af_packet port on the host end of a veth pair, as a pod's CNI
//! plugs it), holding the VIP, with HAProxy running in it in the foreground. The manager
//! reads the agent's configuration every `--interval-ms`:
//!
//! - a new instance is set up, plugged and started (its configuration checked with
//!   `haproxy -c` first: a configuration HAProxy refuses is logged and not run);
//! - a changed configuration is checked and reloaded without dropping connections (a new
//!   HAProxy takes over the listening sockets, `-sf`, the old one finishes its
//!   connections);
//! - an instance no longer bound here is stopped, unplugged and removed.
//!
//! An HAProxy that exits on its own has its port withdrawn at once, so the vrouter routes
//! the VIP to the standby instance; it is started again after `--restart-ms` (doubling
//! while it keeps failing, up to 30 s) and plugged back in once it runs. On SIGINT or
//! SIGTERM every instance is stopped and removed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use agent::cmd::{in_netns as in_ns, run};
use agent::kinds::Kind;
use agent::lbaas::{self, Instance, Objects};
use agent::proto::{self, agent_api_client::AgentApiClient, config_api_client::ConfigApiClient};
use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use tonic::transport::Channel;

/// Runs the HAProxy instances of the load balancers bound to this node.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The agent: `unix:PATH` (its node-local socket).
    #[arg(long, default_value = agent::client::DEFAULT_TARGET)]
    agent: String,
    /// This node's name: instances whose interface has it as binding_host run here
    /// (default: the host name).
    #[arg(long)]
    host: Option<String>,
    /// Where the instances' configurations and pid files go.
    #[arg(long, default_value = "/var/lib/haproxy-manager")]
    dir: PathBuf,
    /// The HAProxy binary.
    #[arg(long, default_value = "haproxy")]
    haproxy: String,
    /// How often the configuration is read, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// How long a failed HAProxy waits before it is started again, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    restart_ms: u64,
    /// The user HAProxy runs as once it has bound its ports (Debian's package makes it).
    #[arg(long, default_value = "haproxy")]
    user: String,
    /// The group HAProxy runs as.
    #[arg(long, default_value = "haproxy")]
    group: String,
}

/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An HAProxy that ran this long is healthy again (its failures are forgotten).
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// One instance this node runs.
struct Running {
    inst: Instance,
    netns: String,
    veth: String,
    /// The HAProxy serving now, and when it started.
    child: Option<(Child, Instant)>,
    /// HAProxies finishing their connections after a reload.
    retiring: Vec<Child>,
    /// The port is in the vrouter.
    plugged: bool,
    /// Failures in a row, and when to start again.
    failures: u32,
    restart_at: Option<Instant>,
    /// A configuration HAProxy refused (not run until it changes).
    refused: bool,
    /// Device names used so far (a new one for every plug).
    attaches: u32,
}

fn short(uuid: &str) -> String {
    uuid.chars().filter(|c| *c != '-').take(10).collect()
}

/// An instance's namespace and the host end of its pair, from its interface's UUID.
fn link_names(vmi: &str) -> (String, String) {
    (format!("vrlb-{}", short(vmi)), format!("lbh{}", short(vmi)))
}

struct Manager {
    args: Args,
    host: String,
    config: ConfigApiClient<Channel>,
    agent: AgentApiClient<Channel>,
    running: BTreeMap<String, Running>,
    /// Instances whose set-up failed: failures in a row, and when to try again.
    failed: BTreeMap<String, (u32, Instant)>,
    /// How every HAProxy drops its privileges.
    sandbox: lbaas::Sandbox,
}

impl Manager {
    fn cfg_path(&self, vmi: &str) -> PathBuf {
        self.args.dir.join(format!("{vmi}.cfg"))
    }

    fn pid_path(&self, vmi: &str) -> PathBuf {
        self.args.dir.join(format!("{vmi}.pid"))
    }

    /// The agent's load-balancer objects.
    async fn objects(&mut self) -> Result<Objects> {
        let mut all = Vec::new();
        for kind in [
            Kind::Loadbalancer,
            Kind::LoadbalancerListener,
            Kind::LoadbalancerPool,
            Kind::LoadbalancerMember,
            Kind::VirtualMachineInterface,
        ] {
            let l = self
                .config
                .list(proto::ListRequest {
                    r#type: kind.name().into(),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("listing {}", kind.name()))?
                .into_inner();
            all.extend(l.objects);
        }
        Ok(Objects::from_objects(all))
    }

    /// Writes and checks a configuration.
    fn write_config(&self, inst: &Instance) -> Result<PathBuf> {
        let path = self.cfg_path(&inst.vmi_uuid);
        let tmp = path.with_extension("cfg.new");
        let text = lbaas::sandboxed(&inst.config, &self.sandbox);
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        let o = Command::new(&self.args.haproxy)
            .env(lbaas::INSTANCE_ENV, lbaas::instance_name(&inst.vmi_uuid))
            .args(["-c", "-q", "-f"])
            .arg(&tmp)
            .output()
            .with_context(|| format!("running {}", self.args.haproxy))?;
        if !o.status.success() {
            bail!(
                "HAProxy refuses the configuration: {}",
                String::from_utf8_lossy(&o.stdout).trim().to_string()
                    + String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Starts HAProxy in the instance's namespace (taking over from `old`, if any).
    fn spawn(&self, r: &Running, old: Option<u32>) -> Result<Child> {
        let cfg = self.cfg_path(&r.inst.vmi_uuid);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &r.netns, &self.args.haproxy, "-db", "-f"])
            .arg(&cfg)
            .env(lbaas::INSTANCE_ENV, lbaas::instance_name(&r.inst.vmi_uuid))
            .stdin(Stdio::null());
        if let Some(pid) = old {
            c.args(["-sf", &pid.to_string()]);
        }
        let child = c
            .spawn()
            .with_context(|| format!("starting {}", self.args.haproxy))?;
        std::fs::write(self.pid_path(&r.inst.vmi_uuid), format!("{}\n", child.id()))?;
        Ok(child)
    }

    /// Makes the namespace and its veth pair afresh, and plugs the host end in.
    async fn plug_new(&mut self, r: &mut Running) -> Result<proto::PortInfo> {
        let _ = run(&["ip", "netns", "del", &r.netns]);
        let _ = run(&["ip", "link", "del", &r.veth]);
        run(&["ip", "netns", "add", &r.netns])?;
        run(&[
            "ip", "link", "add", &r.veth, "type", "veth", "peer", "name", "eth0", "netns", &r.netns,
        ])?;
        run(&["ip", "link", "set", &r.veth, "up"])?;
        self.plug(r)
            .await
            .map_err(|e| anyhow::anyhow!("the agent refused the port: {}", e.message()))
    }

    async fn plug(&mut self, r: &mut Running) -> Result<proto::PortInfo, tonic::Status> {
        r.attaches += 1;
        let info = self
            .agent
            .add_port(proto::Port {
                vmi_uuid: r.inst.vmi_uuid.clone(),
                // Served by the vrouter itself: no DPDK port per instance.
                device: format!("packet:{}", r.veth),
                name: lbaas::instance_name(&r.inst.vmi_uuid),
                mtu: 0,
            })
            .await?
            .into_inner();
        r.plugged = true;
        Ok(info)
    }

    async fn unplug(&mut self, r: &mut Running) {
        if !r.plugged {
            return;
        }
        match self
            .agent
            .delete_port(proto::PortRef {
                vmi_uuid: r.inst.vmi_uuid.clone(),
            })
            .await
        {
            Ok(_) => r.plugged = false,
            Err(s) if s.code() == tonic::Code::NotFound => r.plugged = false,
            Err(s) => tracing::warn!(lb = %r.inst.lb_name, "withdrawing the port: {}", s.message()),
        }
    }

    /// Sets a new instance up: namespace, port, addresses, configuration, HAProxy.
    async fn start(&mut self, inst: Instance) -> Result<Running> {
        let (netns, veth) = link_names(&inst.vmi_uuid);
        let mut r = Running {
            netns,
            veth,
            inst,
            child: None,
            retiring: Vec::new(),
            plugged: false,
            failures: 0,
            restart_at: None,
            refused: false,
            attaches: 0,
        };
        let info = match self.plug_new(&mut r).await {
            Ok(i) => i,
            Err(e) => {
                self.remove(&mut r).await;
                return Err(e);
            }
        };
        let addressed = (|| -> Result<()> {
            for cmd in [
                vec!["ip", "link", "set", "lo", "up"],
                vec!["ip", "link", "set", "eth0", "address", &info.mac_address],
                vec!["ip", "link", "set", "eth0", "up"],
                // The vrouter reads the host end as raw frames: checksums must be complete.
                vec!["ethtool", "-K", "eth0", "tx", "off"],
            ] {
                in_ns(&r.netns, &cmd)?;
            }
            for a in &info.ip_addresses {
                in_ns(&r.netns, &["ip", "addr", "add", a, "dev", "eth0"])?;
            }
            if !info.gateway.is_empty() {
                in_ns(
                    &r.netns,
                    &["ip", "route", "replace", "default", "via", &info.gateway],
                )?;
            }
            Ok(())
        })();
        if let Err(e) = addressed {
            self.remove(&mut r).await;
            return Err(e);
        }
        match self.write_config(&r.inst) {
            Ok(_) => {
                let c = self.spawn(&r, None)?;
                tracing::info!(lb = %r.inst.lb_name, vip = %r.inst.vip, netns = %r.netns, pid = c.id(), "instance started");
                r.child = Some((c, Instant::now()));
            }
            Err(e) => {
                tracing::error!(lb = %r.inst.lb_name, "{e:#}");
                r.refused = true;
                self.unplug(&mut r).await;
            }
        }
        Ok(r)
    }

    /// Stops HAProxy and removes everything of the instance.
    async fn remove(&mut self, r: &mut Running) {
        self.unplug(r).await;
        for mut c in r
            .child
            .take()
            .map(|(c, _)| c)
            .into_iter()
            .chain(r.retiring.drain(..))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = run(&["ip", "netns", "del", &r.netns]);
        let _ = run(&["ip", "link", "del", &r.veth]);
        let _ = std::fs::remove_file(self.cfg_path(&r.inst.vmi_uuid));
        let _ = std::fs::remove_file(self.pid_path(&r.inst.vmi_uuid));
    }

    /// A changed configuration: checked, then HAProxy reloaded.
    fn reload(&mut self, r: &mut Running, inst: Instance) {
        r.inst = inst;
        match self.write_config(&r.inst) {
            Ok(_) => {
                r.refused = false;
                let old = r.child.take();
                match self.spawn(r, old.as_ref().map(|(c, _)| c.id())) {
                    Ok(c) => {
                        tracing::info!(lb = %r.inst.lb_name, pid = c.id(), "configuration reloaded");
                        r.child = Some((c, Instant::now()));
                        r.retiring.extend(old.map(|(c, _)| c));
                    }
                    Err(e) => {
                        tracing::error!(lb = %r.inst.lb_name, "reloading: {e:#}");
                        r.child = old;
                    }
                }
            }
            Err(e) => {
                tracing::error!(lb = %r.inst.lb_name, "keeping the running configuration: {e:#}");
                r.refused = r.child.is_none();
            }
        }
    }

    /// Reads the configuration and makes the instances match it.
    async fn sync(&mut self) -> Result<()> {
        let objects = self.objects().await?;
        let want: BTreeMap<String, Instance> = lbaas::instances(&objects, &self.host)
            .into_iter()
            .map(|i| (i.vmi_uuid.clone(), i))
            .collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(mut r) = self.running.remove(&k) {
                self.remove(&mut r).await;
                tracing::info!(lb = %r.inst.lb_name, "instance removed");
            }
        }
        self.failed.retain(|k, _| want.contains_key(k));
        for (k, inst) in want {
            match self.running.remove(&k) {
                Some(mut r) if r.inst.vip != inst.vip => {
                    // A new address: made again.
                    self.remove(&mut r).await;
                    self.start_logged(inst).await;
                }
                Some(mut r) => {
                    if r.inst.config != inst.config {
                        self.reload(&mut r, inst);
                        if !r.refused && !r.plugged && r.child.is_some() {
                            // It ran refused before: now it serves.
                            if let Err(e) = self.plug(&mut r).await {
                                tracing::warn!(lb = %r.inst.lb_name, "plugging: {}", e.message());
                            }
                        }
                    }
                    self.running.insert(k, r);
                }
                None => self.start_logged(inst).await,
            }
        }
        Ok(())
    }

    /// Sets an instance up; one whose set-up failed is tried again after a back-off
    /// (`--restart-ms`, doubling up to 30 s), not on every read of the configuration.
    async fn start_logged(&mut self, inst: Instance) {
        let (k, name) = (inst.vmi_uuid.clone(), inst.lb_name.clone());
        if self
            .failed
            .get(&k)
            .is_some_and(|(_, at)| Instant::now() < *at)
        {
            return;
        }
        match self.start(inst).await {
            Ok(r) => {
                self.failed.remove(&k);
                self.running.insert(k, r);
            }
            Err(e) => {
                let n = self.failed.get(&k).map_or(1, |(n, _)| n + 1);
                let wait = Duration::from_millis(self.args.restart_ms)
                    .saturating_mul(1 << (n - 1).min(16))
                    .min(MAX_BACKOFF);
                self.failed.insert(k, (n, Instant::now() + wait));
                tracing::error!(lb = %name, retry_in_ms = wait.as_millis() as u64, "starting an instance: {e:#}");
            }
        }
    }

    /// Reaps finished HAProxies; withdraws and schedules a restart for a failed one;
    /// restarts those whose time has come.
    async fn supervise(&mut self) {
        let keys: Vec<String> = self.running.keys().cloned().collect();
        for k in keys {
            let Some(mut r) = self.running.remove(&k) else {
                continue;
            };
            r.retiring.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            let exited = match r.child.as_mut() {
                Some((c, started)) => match c.try_wait() {
                    Ok(Some(status)) => Some(status),
                    Ok(None) => {
                        if started.elapsed() > HEALTHY_AFTER {
                            r.failures = 0;
                        }
                        None
                    }
                    Err(_) => None,
                },
                None => None,
            };
            if let Some(status) = exited {
                r.child = None;
                self.unplug(&mut r).await;
                r.failures += 1;
                let wait = Duration::from_millis(self.args.restart_ms)
                    .saturating_mul(1 << (r.failures - 1).min(16))
                    .min(MAX_BACKOFF);
                r.restart_at = Some(Instant::now() + wait);
                tracing::warn!(lb = %r.inst.lb_name, %status, restart_in_ms = wait.as_millis() as u64, "HAProxy exited: port withdrawn");
            }
            if r.child.is_none() && !r.refused && r.restart_at.is_some_and(|t| Instant::now() >= t)
            {
                r.restart_at = None;
                match self.spawn(&r, None) {
                    Ok(c) => {
                        tracing::info!(lb = %r.inst.lb_name, pid = c.id(), "HAProxy restarted");
                        r.child = Some((c, Instant::now()));
                        // Plugged back in once it listens (or fails again first).
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        let alive = r
                            .child
                            .as_mut()
                            .is_some_and(|(c, _)| matches!(c.try_wait(), Ok(None)));
                        if alive && let Err(e) = self.plug(&mut r).await {
                            tracing::warn!(lb = %r.inst.lb_name, "plugging back: {}", e.message());
                        }
                    }
                    Err(e) => {
                        tracing::error!(lb = %r.inst.lb_name, "restarting: {e:#}");
                        r.restart_at = Some(Instant::now() + MAX_BACKOFF);
                    }
                }
            }
            self.running.insert(k, r);
        }
    }

    /// What an earlier run left (it was killed before it could remove its instances):
    /// its HAProxies (by their pid files), its ports in the agent, namespaces and links.
    /// The instances still bound here are set up afresh by the first sync.
    async fn remove_leftovers(&mut self) -> Result<()> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.args.dir)?.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "pid") {
                // A pid from an earlier run may belong to anything by now (a reboot, pid
                // reuse): only an HAProxy running this instance's configuration is ended.
                let cfg = path.with_extension("cfg");
                if let Some(pid) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok())
                {
                    if runs_config(pid, &cfg) {
                        let _ = run(&["kill", &pid.to_string()]);
                    } else {
                        tracing::info!(pid, file = %path.display(), "stale pid file: not an HAProxy of ours, left alone");
                    }
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        let ports = self.agent.list_ports(proto::Empty {}).await?.into_inner();
        for p in ports.ports.iter().filter(|p| p.name.starts_with("lb-")) {
            let _ = self
                .agent
                .delete_port(proto::PortRef {
                    vmi_uuid: p.vmi_uuid.clone(),
                })
                .await;
            let (netns, veth) = link_names(&p.vmi_uuid);
            let _ = run(&["ip", "netns", "del", &netns]);
            let _ = run(&["ip", "link", "del", &veth]);
            n += 1;
        }
        if n > 0 {
            tracing::info!(instances = n, "removed what an earlier run left");
        }
        Ok(())
    }

    async fn shutdown(&mut self) {
        let all: Vec<String> = self.running.keys().cloned().collect();
        for k in all {
            if let Some(mut r) = self.running.remove(&k) {
                self.remove(&mut r).await;
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

async fn connect(addr: &str) -> Result<Channel> {
    let t = Instant::now();
    loop {
        agent::client::parse(addr).map_err(|e| anyhow!("--agent: {e:#}"))?;
        match agent::client::connect(addr, None).await {
            Ok(c) => return Ok(c),
            Err(e) if t.elapsed() > Duration::from_secs(30) => {
                bail!("{e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether process `pid` is an HAProxy started with configuration file `cfg` (its command
/// line, from /proc, names the file after `-f`).
fn runs_config(pid: u32, cfg: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let want = cfg.as_os_str().as_encoded_bytes();
    args.windows(2).any(|w| w[0] == b"-f" && w[1] == want)
}

/// Whether `name` is an entry of the colon-separated database `file` (/etc/passwd,
/// /etc/group).
fn in_db(file: &str, name: &str) -> bool {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

/// The instances' sandbox: the user and group given (they must exist) and an empty
/// root-owned directory under --dir as the chroot.
fn sandbox(args: &Args) -> Result<lbaas::Sandbox> {
    if !in_db("/etc/passwd", &args.user) {
        bail!(
            "--user {:?} does not exist (Debian's haproxy package creates \"haproxy\"; or pass --user nobody)",
            args.user
        );
    }
    if !in_db("/etc/group", &args.group) {
        bail!(
            "--group {:?} does not exist (or pass --group nogroup)",
            args.group
        );
    }
    let chroot = args.dir.join("chroot");
    std::fs::create_dir_all(&chroot).with_context(|| format!("creating {}", chroot.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&chroot, std::fs::Permissions::from_mode(0o755))?;
    }
    if std::fs::read_dir(&chroot)?.next().is_some() {
        bail!("{} is HAProxy's chroot and must be empty", chroot.display());
    }
    Ok(lbaas::Sandbox {
        user: args.user.clone(),
        group: args.group.clone(),
        chroot,
    })
}

async fn real_main(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let host = args.host.clone().unwrap_or_else(hostname);
    if host.is_empty() {
        bail!("no host name: pass --host");
    }
    Command::new(&args.haproxy)
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("{} is needed (Debian's haproxy)", args.haproxy))?;
    let sandbox = sandbox(&args)?;
    let ch = connect(&args.agent).await?;
    let interval = Duration::from_millis(args.interval_ms.max(100));
    let mut m = Manager {
        host,
        config: ConfigApiClient::new(ch.clone()),
        agent: AgentApiClient::new(ch),
        running: BTreeMap::new(),
        failed: BTreeMap::new(),
        sandbox,
        args,
    };
    if let Err(e) = m.remove_leftovers().await {
        tracing::warn!("removing what an earlier run left: {e:#}");
    }
    tracing::info!(host = %m.host, agent = %m.args.agent, "managing HAProxy instances");
    println!("managing HAProxy instances of {}", m.host);
    let _ = std::io::stdout().flush();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut next_sync = Instant::now();
    loop {
        if Instant::now() >= next_sync {
            if let Err(e) = m.sync().await {
                tracing::warn!("reading the configuration: {e:#}");
            }
            next_sync = Instant::now() + interval;
        }
        m.supervise().await;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    tracing::info!("stopping every instance");
    m.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("haproxy-manager: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haproxy-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_names_fit_a_link_name() {
        let s = super::short("6b756265-2d6d-616e-6167-657276727472");
        assert_eq!(s, "6b7562652d");
        assert!(format!("lbh{s}").len() <= 15);
    }
}
