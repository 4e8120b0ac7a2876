//! The lab's etcd: one member or a cluster of several on this host, served over TLS to
//! clients with certificates of the lab's CA only, authentication on, each node's agent
//! with a user that may write only its own routes (the first node's also the
//! configuration). The files are in `DIR/pki`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::procs::{Proc, Ready, free_port};

/// The lab's etcd: its members (named `etcd1`, `etcd2`, ...) and their client URLs.
pub struct LabEtcd {
    pub members: Vec<(String, Proc)>,
    pub urls: Vec<String>,
    pki: PathBuf,
}

impl LabEtcd {
    /// The agent flags for node `ip`: every member's URL.
    pub fn agent_args(&self, ip: &str) -> Vec<String> {
        let f = |n: &str| self.pki.join(n).display().to_string();
        vec![
            format!("--etcd={}", self.urls.join(",")),
            format!("--etcd-ca={}", f("ca.pem")),
            format!("--etcd-cert={}", f(&format!("{ip}.pem"))),
            format!("--etcd-key={}", f(&format!("{ip}.key"))),
            "--config-store=etcd".into(),
        ]
    }
}

/// Path text for a command line kept in the lab's state.
fn text(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .with_context(|| format!("{}: the lab's directory must be UTF-8", p.display()))
}

/// Starts `members` etcd members on free ports; when another process takes one of them
/// between the look-up and etcd's bind (tests run side by side), tries again with new
/// ones. Then gives each of `nodes` its role ([`agent::etcd::provision`]) and turns
/// authentication on.
pub async fn start(dir: &Path, nodes: &[Ipv4Addr], members: u32) -> Result<LabEtcd> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    std::fs::set_permissions(&pki, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let ca = agent::pki::Ca::new("vrlab CA")?;
    ca.write_ca(&pki.join("ca.pem"))?;
    let (cert, key) = ca.write(&pki, "etcd", "etcd", &["127.0.0.1", "localhost"])?;
    ca.write(&pki, "root", "root", &[])?;
    for n in nodes {
        ca.write(&pki, &n.to_string(), &agent::etcd::node_role(*n), &[])?;
    }
    let names: Vec<String> = (1..=members).map(|i| format!("etcd{i}")).collect();
    let mut last = String::new();
    for _ in 0..5 {
        let mut ports = Vec::new();
        for _ in &names {
            ports.push((free_port()?, free_port()?));
        }
        let peer = |p: u16| format!("http://127.0.0.1:{p}");
        let cluster: Vec<String> = names
            .iter()
            .zip(&ports)
            .map(|(n, (_, p))| format!("{n}={}", peer(*p)))
            .collect();
        let mut started = Vec::new();
        for (name, (client, p)) in names.iter().zip(&ports) {
            let url = format!("https://127.0.0.1:{client}");
            let data = dir.join(name);
            let _ = std::fs::remove_dir_all(&data);
            let mut argv: Vec<String> = vec!["etcd".into(), "--name".into(), name.clone()];
            argv.extend(["--data-dir".into(), text(&data)?]);
            for (f, v) in [
                ("--listen-client-urls", url.clone()),
                ("--advertise-client-urls", url.clone()),
                ("--cert-file", text(&cert)?),
                ("--key-file", text(&key)?),
                ("--trusted-ca-file", text(&pki.join("ca.pem"))?),
                ("--listen-peer-urls", peer(*p)),
                ("--initial-advertise-peer-urls", peer(*p)),
                ("--initial-cluster", cluster.join(",")),
                ("--initial-cluster-token", "vrlab".into()),
            ] {
                argv.extend([f.into(), v]);
            }
            argv.push("--client-cert-auth".into());
            let log = dir.join(format!("{name}.log"));
            let p = Proc::spawn(argv, log, Ready::Tcp(*client))
                .context("etcd (Debian's etcd-server) is needed for several nodes")?;
            started.push((name.clone(), p, url));
        }
        let mut failed = None;
        for (name, p, _) in &started {
            if let Err(e) = p.wait(name) {
                failed = Some(format!("{e:#}"));
                break;
            }
        }
        let Some(e) = failed else {
            let urls: Vec<String> = started.iter().map(|(_, _, u)| u.clone()).collect();
            let root = agent::etcd::EtcdArgs {
                endpoints: urls.clone(),
                etcd_ca: Some(pki.join("ca.pem")),
                etcd_cert: Some(pki.join("root.pem")),
                etcd_key: Some(pki.join("root.key")),
                ..Default::default()
            };
            if let Err(e) = provision(&root, nodes).await {
                for (_, p, _) in &started {
                    p.kill();
                }
                return Err(e);
            }
            return Ok(LabEtcd {
                members: started.into_iter().map(|(n, p, _)| (n, p)).collect(),
                urls,
                pki,
            });
        };
        for (_, p, _) in &started {
            p.kill();
        }
        if !e.contains("address already in use") {
            bail!("etcd did not start: {e}");
        }
        last = e;
    }
    bail!("etcd did not start: its ports were taken five times:\n{last}")
}

/// Provisions the nodes' roles once the members have elected a leader (a member serves
/// its port before it has; a linearizable read fails until then).
async fn provision(root: &agent::etcd::EtcdArgs, nodes: &[Ipv4Addr]) -> Result<()> {
    let t = std::time::Instant::now();
    let mut c = root.connect().await?;
    while let Err(e) = c.get("/vrouter/", None).await {
        if t.elapsed() > std::time::Duration::from_secs(30) {
            bail!("the lab's etcd has no leader after 30 s: {e}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The first node's agent is where the lab writes the configuration.
    agent::etcd::provision(&mut c, nodes, &nodes[..1], None).await
}

/// Waits (30 s at most) until the member `p` serves a linearizable read: it is back in
/// its cluster, which has a leader, and has caught up with it.
pub async fn serves(dir: &Path, p: &Proc) -> Result<()> {
    let url = p
        .argv
        .iter()
        .skip_while(|a| *a != "--advertise-client-urls")
        .nth(1)
        .context("an etcd member without a client URL")?;
    let pki = dir.join("pki");
    let root = agent::etcd::EtcdArgs {
        endpoints: vec![url.clone()],
        etcd_ca: Some(pki.join("ca.pem")),
        etcd_cert: Some(pki.join("root.pem")),
        etcd_key: Some(pki.join("root.key")),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    loop {
        let r = async {
            let mut c = root.connect().await?;
            let o = etcd_client::GetOptions::new()
                .with_keys_only()
                .with_limit(1);
            c.get("/vrouter/", Some(o)).await?;
            anyhow::Ok(())
        }
        .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) if t.elapsed() > std::time::Duration::from_secs(30) => {
                bail!("{url} does not serve after 30 s: {e:#}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}
