//! `vrperf pods`: pod interfaces (veth host ends) as the vrouter serves them, measured.
//!
//! Two busy pods, vm1 -> vm2 (the `l3-local` tables), each on a real veth pair: a
//! generator sends UDP frames into vm1's pair and a sink counts what comes out of vm2's,
//! both on CPU 0 while the forwarding lcore has CPU 1. Each variant is one vrouter run in
//! the same invocation:
//! - `packet` with 2 interfaces, then with N idle interfaces beside the busy ones (the
//!   vrouter's own rings: idle ones must cost the busy ones next to nothing);
//! - `af_packet PMD` with 2 interfaces: DPDK's af_packet ethdev on the same veths, the
//!   reference for per-pod throughput.
//!
//! The generator and the kernel bound the offered rate on a small machine, so besides the
//! rate forwarded each row gives the lcore's cycles per packet in rounds that moved
//! packets, and the capacity they imply (TSC rate / cycles per packet): the ratio between
//! rows is that of their capacities. The offered rate counts the whole run (start-up
//! included); forwarded, cycles and capacity the measured window only. Cycles per packet
//! include the kernel's work in the lcore's send calls (veth transmit), so they are far
//! above an ethdev's; at a rate below capacity bursts are short and the figure is an
//! upper bound.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use rawsock::{MAX_BATCH, RxRing, TxSocket};
use serde::Serialize;
use vrouter::config::VifCfg;
use vrouter::testbed::VM2_IP;

use crate::frames::vm1_udp;
use crate::measure::last_lines;
use crate::scenarios::l3_local::L3Local;

/// A `vrperf pods` run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The vrouter binary.
    pub vrouter: PathBuf,
    /// Idle interfaces of the variants beside the two busy ones (0 is always run).
    pub idle: Vec<usize>,
    /// Frame length without FCS.
    pub len: usize,
    /// Seconds measured per variant.
    pub duration: f64,
    /// Seconds before measuring.
    pub warmup: f64,
    /// Also run DPDK's af_packet PMD on the same veths.
    pub pmd: bool,
    /// Also run bulk TCP between two pods.
    pub tcp: bool,
    /// Scratch directory.
    pub work: PathBuf,
}

/// One variant's result.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What ran.
    pub variant: String,
    /// Interfaces the vrouter served (busy and idle).
    pub interfaces: usize,
    /// Frames the generator offered per second (Mpps).
    pub offered_mpps: f64,
    /// Frames the vrouter forwarded per second in the measured window (Mpps).
    pub forwarded_mpps: f64,
    /// Share of what the vrouter sent over the whole run that reached the sink (the
    /// rest the kernel dropped on the way, e.g. a full sink ring).
    pub delivered: f64,
    /// Lcore cycles per packet in rounds that moved packets.
    pub cycles_per_packet: f64,
    /// TSC rate / cycles per packet (Mpps).
    pub capacity_mpps: f64,
    /// Capacity relative to `packet` with two interfaces.
    pub ratio: f64,
}

/// A bulk TCP result: one stream from vm1's pod to vm2's, through the vrouter.
#[derive(Debug, Clone, Serialize)]
pub struct TcpRow {
    /// What ran.
    pub variant: String,
    /// Payload Gbit/s the receiver counted over the measured seconds.
    pub gbps: f64,
    /// Relative to the first TCP row (the vrouter's rings).
    pub ratio: f64,
}

/// Network namespaces made for the run, removed on drop.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

const TCP_SERVER: &str = r#"
import socket, sys, time
ip, warm = sys.argv[1], float(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, 5201)); s.listen(1); print("ready", flush=True)
s.settimeout(60); c, _ = s.accept(); c.settimeout(30)
n, t0, start = 0, None, None
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    now = time.time()
    if t0 is None:
        t0 = now
    if start is None and now - t0 >= warm:
        start, n = now, 0
    n += len(d)
print(n, (time.time() - start) if start else 0.0, flush=True)
"#;

const TCP_CLIENT: &str = r#"
import socket, sys, time
ip, secs = sys.argv[1], float(sys.argv[2])
end = time.time() + 60
while True:
    try:
        s = socket.create_connection((ip, 5201), timeout=2); break
    except OSError:
        if time.time() > end: raise
        time.sleep(0.2)
buf = b"x" * (1 << 20); stop = time.time() + secs
while time.time() < stop:
    s.sendall(buf)
s.close()
"#;

/// Bulk TCP between two pods (network namespaces on veth pairs, addresses and MACs of the
/// testbed's vm1 and vm2) through the vrouter, on its rings or on the af_packet PMD.
pub fn tcp(opts: &Options) -> Result<Vec<TcpRow>> {
    use vrouter::testbed::{VM1_IP, VM1_MAC, VM2_MAC};
    let tag = std::process::id() % 10_000;
    let ns = Netns(vec![format!("vpt0n{tag}"), format!("vpt1n{tag}")]);
    let hosts = [format!("vpt0h{tag}"), format!("vpt1h{tag}")];
    for ((n, h), (ip, mac)) in
        ns.0.iter()
            .zip(&hosts)
            .zip([(VM1_IP, VM1_MAC), (VM2_IP, VM2_MAC)])
    {
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(std::process::Stdio::null())
            .status();
        ip_batch(
            &[],
            &format!(
                "netns add {n}\nlink add {h} type veth peer name eth0 netns {n}\nlink set {h} up\n"
            ),
        )?;
        let (mac, addr) = (mac.to_string(), format!("{ip}/24"));
        ip_batch(
            &["-n", n],
            &format!(
                "link set lo up\nlink set eth0 address {mac}\naddr add {addr} dev eth0\nlink set eth0 up\n"
            ),
        )?;
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{h}/disable_ipv6"), "1");
        // Raw frames need complete checksums: no TX offload in the pods.
        let o = Command::new("ip")
            .args(["netns", "exec", n, "ethtool", "-K", "eth0", "tx", "off"])
            .output()
            .context("ethtool")?;
        if !o.status.success() {
            bail!(
                "ethtool in {n}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
    let _links = Pairs(hosts.iter().map(|h| (h.clone(), String::new())).collect());
    let mut rows: Vec<TcpRow> = Vec::new();
    for (label, pmd) in [("packet", false), ("af_packet PMD", true)] {
        if pmd && !opts.pmd {
            continue;
        }
        eprintln!("vrperf pods: TCP, {label} ...");
        let gbps =
            tcp_variant(opts, &ns.0, &hosts, pmd).with_context(|| format!("TCP, {label}"))?;
        let base = rows.first().map_or(gbps, |r| r.gbps);
        rows.push(TcpRow {
            variant: label.into(),
            gbps,
            ratio: gbps / base.max(f64::MIN_POSITIVE),
        });
    }
    Ok(rows)
}

fn tcp_variant(opts: &Options, ns: &[String], hosts: &[String], pmd: bool) -> Result<f64> {
    let dev = |i: usize| {
        if pmd {
            format!("net_af_packet{i},iface={}", hosts[i])
        } else {
            format!("packet:{}", hosts[i])
        }
    };
    let cfg = crate::scenario::config(&L3Local, &dev(0), &dev(1));
    let dir = opts.work.join(if pmd { "tcp_pmd" } else { "tcp_packet" });
    std::fs::create_dir_all(&dir)?;
    let cfg_path = dir.join("vrouter.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
    let total = opts.warmup + opts.duration;
    let mut vr = Command::new(&opts.vrouter)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .arg("--no-socket")
        .args(["--duration-s", &(total + 20.0).to_string()])
        .args(["--", "--lcores", "0@0,1@1", "--no-huge", "-m", "512"])
        .args(["--file-prefix", &format!("vrperftcp{}", std::process::id())])
        .stdout(std::fs::File::create(dir.join("vrouter.log"))?)
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", opts.vrouter.display()))?;
    let py = |n: &str, code: &str, args: &[String]| {
        let mut c = Command::new("ip");
        c.args([
            "netns", "exec", n, "taskset", "-c", "0", "python3", "-u", "-c", code,
        ])
        .args(args);
        c
    };
    let mut server = py(
        &ns[1],
        TCP_SERVER,
        &[VM2_IP.to_string(), opts.warmup.to_string()],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .context("the TCP receiver")?;
    let mut out = std::io::BufReader::new(server.stdout.take().context("receiver stdout")?);
    let mut line = String::new();
    use std::io::BufRead;
    out.read_line(&mut line)?;
    let result = (|| -> Result<f64> {
        if line.trim() != "ready" {
            bail!("the receiver did not start: {line:?}");
        }
        let client = py(&ns[0], TCP_CLIENT, &[VM2_IP.to_string(), total.to_string()])
            .status()
            .context("the TCP sender")?;
        if !client.success() {
            bail!(
                "the sender failed ({client}): is the vrouter forwarding? see {}",
                dir.display()
            );
        }
        line.clear();
        out.read_line(&mut line)?;
        let mut w = line.split_whitespace();
        let bytes: f64 = w
            .next()
            .and_then(|x| x.parse().ok())
            .context("receiver's count")?;
        let secs: f64 = w
            .next()
            .and_then(|x| x.parse().ok())
            .context("receiver's time")?;
        if secs <= 0.0 {
            bail!("the stream ended within the warm-up");
        }
        Ok(bytes * 8.0 / secs / 1e9)
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = vr.kill();
    let _ = vr.wait();
    result
}

/// Veth pairs made for the run, removed on drop.
struct Pairs(Vec<(String, String)>);

impl Pairs {
    fn make(names: Vec<(String, String)>) -> Result<Pairs> {
        let pairs = Pairs(names);
        let mut batch = String::new();
        for (h, p) in &pairs.0 {
            batch.push_str(&format!("link add {h} type veth peer name {p}\n"));
        }
        ip_batch(&[], &batch)?;
        let mut up = String::new();
        for (h, p) in &pairs.0 {
            for d in [h, p] {
                // No IPv6 chatter of the host's own on the measured links.
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{d}/disable_ipv6"), "1");
                up.push_str(&format!("link set {d} up\n"));
            }
        }
        ip_batch(&[], &up)?;
        Ok(pairs)
    }
}

impl Drop for Pairs {
    fn drop(&mut self) {
        let mut del = String::new();
        for (h, _) in &self.0 {
            del.push_str(&format!("link del {h}\n"));
        }
        let _ = ip_batch(&[], &del);
    }
}

/// `ip [GLOBAL...] -batch -` with `commands` on its input.
fn ip_batch(global: &[&str], commands: &str) -> Result<()> {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args(global)
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running ip")?;
    c.stdin
        .take()
        .context("ip's stdin")?
        .write_all(commands.as_bytes())?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!("ip -batch: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs every variant; rows in the order run.
pub fn run(opts: &Options) -> Result<Vec<Row>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!("vrperf pods needs 2 CPUs: the lcore on one, generator and sink on the other");
    }
    std::fs::create_dir_all(&opts.work)?;
    let tag = std::process::id() % 10_000;
    let busy = Pairs::make(
        (0..2)
            .map(|i| (format!("vpb{i}h{tag}"), format!("vpb{i}p{tag}")))
            .collect(),
    )
    .context("making the busy pods' veth pairs (root needed)")?;
    let most = opts.idle.iter().copied().max().unwrap_or(0);
    let idle = Pairs::make(
        (0..most)
            .map(|i| (format!("vpi{i}h{tag}"), format!("vpi{i}p{tag}")))
            .collect(),
    )
    .context("making the idle interfaces' veth pairs")?;
    let mut variants: Vec<(String, bool, usize)> = vec![("packet".into(), false, 0)];
    for &n in opts.idle.iter().filter(|n| **n > 0) {
        variants.push((format!("packet + {n} idle"), false, n));
    }
    if opts.pmd {
        variants.push(("af_packet PMD".into(), true, 0));
    }
    let mut rows: Vec<Row> = Vec::new();
    for (label, pmd, n) in variants {
        eprintln!("vrperf pods: {label} ...");
        let mut row = variant(opts, &label, pmd, &busy.0, &idle.0[..n])
            .with_context(|| format!("variant {label}"))?;
        let base = rows.first().map_or(row.capacity_mpps, |r| r.capacity_mpps);
        row.ratio = row.capacity_mpps / base.max(f64::MIN_POSITIVE);
        rows.push(row);
    }
    Ok(rows)
}

fn variant(
    opts: &Options,
    label: &str,
    pmd: bool,
    busy: &[(String, String)],
    idle: &[(String, String)],
) -> Result<Row> {
    let dev = |i: usize| {
        if pmd {
            format!("net_af_packet{i},iface={}", busy[i].0)
        } else {
            format!("packet:{}", busy[i].0)
        }
    };
    let mut cfg = crate::scenario::config(&L3Local, &dev(0), &dev(1));
    let vm2 = cfg
        .vifs
        .iter()
        .find(|v| v.name == "vm2")
        .cloned()
        .context("vm2 in the tables")?;
    for (k, (h, _)) in idle.iter().enumerate() {
        cfg.vifs.push(VifCfg {
            id: 16 + k as u32,
            name: format!("idle{k}"),
            device: Some(format!("packet:{h}")),
            ip4: Some(std::net::Ipv4Addr::from(0x0a01_8000 + k as u32)),
            ..vm2.clone()
        });
    }
    let dir = opts.work.join(label.replace([' ', '+'], "_"));
    std::fs::create_dir_all(&dir)?;
    let cfg_path = dir.join("vrouter.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
    let stats = dir.join("vrouter.json");
    let _ = std::fs::remove_file(&stats);

    let stop = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let frames: Vec<Vec<u8>> = (0..16)
        .map(|f| vm1_udp(VM2_IP, 1024 + f, 9000, opts.len))
        .collect();
    let into = rawsock::ifindex(&busy[0].1)?;
    let out_of = rawsock::ifindex(&busy[1].1)?;
    let mut sink_ring = RxRing::open(out_of, 4096, 1500).context("the sink's ring")?;
    let mut gen_sock = TxSocket::new().context("the generator's socket")?;
    let sink = {
        let (stop, delivered) = (Arc::clone(&stop), Arc::clone(&delivered));
        std::thread::spawn(move || {
            let _ = rawsock::pin_current_thread(0);
            while !stop.load(Ordering::Relaxed) {
                let n = sink_ring.recv(MAX_BATCH, |_| {});
                delivered.fetch_add(n as u64, Ordering::Relaxed);
                if n == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    let gen_thread = {
        let (stop, offered) = (Arc::clone(&stop), Arc::clone(&offered));
        std::thread::spawn(move || {
            let _ = rawsock::pin_current_thread(0);
            let refs: Vec<&[u8]> = frames
                .iter()
                .cycle()
                .take(MAX_BATCH)
                .map(Vec::as_slice)
                .collect();
            while !stop.load(Ordering::Relaxed) {
                let n = gen_sock.send(into, refs.iter().copied());
                offered.fetch_add(n as u64, Ordering::Relaxed);
                if n == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    let t0 = std::time::Instant::now();
    let out = Command::new(&opts.vrouter)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .arg("--no-socket")
        .args(["--duration-s", &(opts.warmup + opts.duration).to_string()])
        .args(["--warmup-s", &opts.warmup.to_string()])
        .arg("--stats-json")
        .arg(&stats)
        .args(["--", "--lcores", "0@0,1@1", "--no-huge", "-m", "512"])
        .args([
            "--file-prefix",
            &format!("vrperfpods{}", std::process::id()),
        ])
        .output()
        .with_context(|| format!("running {}", opts.vrouter.display()));
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = gen_thread.join();
    let _ = sink.join();
    let out = out?;
    std::fs::write(
        dir.join("vrouter.log"),
        [&out.stdout[..], &out.stderr[..]].concat(),
    )?;
    if !out.status.success() {
        bail!(
            "vrouter exited with {}: {}",
            out.status,
            last_lines(&String::from_utf8_lossy(&out.stderr), 3)
        );
    }
    let r: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&stats).with_context(|| format!("reading {}", stats.display()))?,
    )?;
    let w = &r["window"];
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let (wsecs, rx, tx, busy_cycles) = (
        w["seconds"].as_f64().unwrap_or(0.0),
        u(&w["rx"]),
        u(&w["tx"]),
        u(&w["busy_cycles"]),
    );
    if rx == 0 || wsecs <= 0.0 {
        bail!(
            "nothing forwarded in the measured window ({})",
            dir.display()
        );
    }
    let cpp = busy_cycles as f64 / rx as f64;
    let tsc = u(&r["tsc_hz"]).max(1) as f64;
    Ok(Row {
        variant: label.to_string(),
        interfaces: 2 + idle.len(),
        offered_mpps: offered.load(Ordering::Relaxed) as f64 / secs / 1e6,
        forwarded_mpps: tx as f64 / wsecs / 1e6,
        delivered: delivered.load(Ordering::Relaxed) as f64 / u(&r["tx"]).max(1) as f64,
        cycles_per_packet: cpp,
        capacity_mpps: tsc / cpp / 1e6,
        ratio: 1.0,
    })
}

/// The TCP rows as a table.
pub fn tcp_table(rows: &[TcpRow]) -> String {
    let mut s = format!(
        "{:<22} {:>9} {:>6}\n",
        "bulk TCP, 1 stream", "Gbit/s", "ratio"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<22} {:>9.2} {:>6.3}\n",
            r.variant, r.gbps, r.ratio
        ));
    }
    s
}

/// The rows as a table.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<22} {:>6} {:>9} {:>9} {:>9} {:>10} {:>9} {:>6}\n",
        "variant", "ifaces", "offered", "forwarded", "delivered", "cycles/pkt", "capacity", "ratio"
    );
    s.push_str(&format!(
        "{:<22} {:>6} {:>9} {:>9} {:>9} {:>10} {:>9} {:>6}\n",
        "", "", "Mpps", "Mpps", "share", "", "Mpps", ""
    ));
    for r in rows {
        s.push_str(&format!(
            "{:<22} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>9.2} {:>6.3}\n",
            r.variant,
            r.interfaces,
            r.offered_mpps,
            r.forwarded_mpps,
            r.delivered,
            r.cycles_per_packet,
            r.capacity_mpps,
            r.ratio
        ));
    }
    s
}

/// Where a run keeps its files.
pub fn work_dir(keep: bool) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vrperf-pods{}", std::process::id()));
    if !keep {
        let _ = std::fs::remove_dir_all(&d);
    }
    d
}

/// Removes the scratch directory unless kept.
pub fn clean(dir: &Path, keep: bool) {
    if !keep {
        let _ = std::fs::remove_dir_all(dir);
    }
}
