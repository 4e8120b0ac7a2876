//! Runs one measurement point: writes the captures and the vrouter configuration, runs the
//! real `vrouter` daemon on them and the references (dpdk-testpmd io and macswap, OVS-DPDK
//! where the scenario has the same work) on the same vdevs, one after the other.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::frames::{FCS, Size};
pub use crate::measure::{Measure, Point, Timing, last_lines};
use crate::ovs;
use crate::scenario::{self, Kind};

/// Where the programs are and how long each run lasts.
#[derive(Debug, Clone)]
pub struct Env {
    /// The vrouter binary.
    pub vrouter: PathBuf,
    /// dpdk-testpmd, when references are wanted.
    pub testpmd: Option<PathBuf>,
    /// OVS-DPDK, when it is installed and wanted.
    pub ovs: Option<ovs::Ovs>,
    /// Seconds measured.
    pub duration: f64,
    /// Seconds before measuring (flows set up, caches warm).
    pub warmup: f64,
    /// Scratch directory.
    pub work: PathBuf,
    /// Hugepages mounted with room for a run.
    pub hugepages: bool,
    /// CPUs of the machine.
    pub cpus: usize,
}

impl Timing {
    /// The timing of runs in `env`.
    pub fn of(env: &Env) -> Timing {
        Timing {
            duration: env.duration,
            warmup: env.warmup,
            hugepages: env.hugepages,
            cpus: env.cpus,
        }
    }
}

/// The result of one point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Forwarding rate or flow setup.
    pub kind: Kind,
    /// Frame size ("64" .. "1518", "imix").
    pub size: String,
    /// Mean frame size in bytes (FCS included).
    pub frame_bytes: f64,
    /// Distinct flows.
    pub flows: u32,
    /// Forwarding lcores.
    pub lcores: usize,
    /// RX burst.
    pub burst: usize,
    /// The vrouter's forwarding rate (steady state).
    pub vrouter: Option<Measure>,
    /// New flows per second per lcore (flow-setup runs).
    pub flow_setup_per_s_per_lcore: Option<f64>,
    /// dpdk-testpmd io forwarding on the same vdevs.
    pub testpmd_io: Option<Measure>,
    /// dpdk-testpmd macswap forwarding on the same vdevs.
    pub testpmd_macswap: Option<Measure>,
    /// OVS-DPDK doing the same work.
    pub ovs: Option<Measure>,
    /// vrouter / testpmd io.
    pub ratio_testpmd_io: Option<f64>,
    /// vrouter / OVS-DPDK.
    pub ratio_ovs: Option<f64>,
    /// Flow table bytes per entry.
    pub flow_bytes_per_entry: Option<f64>,
    /// Flow table entries.
    pub flow_table_entries: Option<u64>,
    /// Drops in the vrouter by reason.
    pub drops: BTreeMap<String, u64>,
    /// What went wrong or is worth knowing.
    pub notes: Vec<String>,
}

/// Reference rates already measured, by (capture, lcores, burst, mode).
#[derive(Debug, Default)]
pub struct Cache {
    testpmd: HashMap<(u64, usize, usize, &'static str), Option<Measure>>,
}

/// The steps of a point, for progress output.
pub fn steps(p: &Point, env: &Env) -> u64 {
    let mut n = 1;
    if env.testpmd.is_some() {
        n += 2;
    }
    if env.ovs.is_some() && p.scenario.ovs().is_some() {
        n += 1;
    }
    n
}

/// Frames of every queue: queue `q` replays the flows `i` with `i % lcores == q`; sizes
/// cycle through the size's pattern.
pub fn queue_frames(p: &Point) -> Vec<Vec<Vec<u8>>> {
    let s = p.scenario;
    let size = p.size.at_least(s.min_size());
    let pattern = size.pattern();
    let flows = p.flows.max(1);
    let per_queue = flows.div_ceil(p.lcores as u32).max(1) as usize;
    (0..p.lcores)
        .map(|q| {
            // At least one frame of each size in the pattern.
            let n = per_queue.max(pattern.len());
            (0..n)
                .map(|k| {
                    let flow = ((k % per_queue) * p.lcores + q) as u32 % flows;
                    s.frame(flow, pattern[k % pattern.len()] - FCS)
                })
                .collect()
        })
        .collect()
}

/// The EAL lcore list: the main lcore on CPU 0, forwarding lcore i on CPU i (wrapping
/// onto the CPUs there are).
pub fn lcore_list(lcores: usize, cpus: usize) -> String {
    let cpus = cpus.max(1);
    (0..=lcores)
        .map(|i| format!("{i}@{}", i % cpus))
        .collect::<Vec<_>>()
        .join(",")
}

/// Pool size for the replayed frames (net_pcap's infinite_rx keeps each one in an mbuf)
/// and the traffic in flight.
fn mbufs_for(frames: usize, lcores: usize) -> u32 {
    let need = frames + 8192 * lcores + 8192;
    (need.div_ceil(1024) * 1024 - 1) as u32
}

/// EAL memory in MB for a pool of `mbufs` (2.5 KB each with headers) and the rest.
fn memory_mb(mbufs: u32) -> u64 {
    u64::from(mbufs) * 2560 / (1 << 20) + 256
}

fn memory_args(env: &Env, mbufs: u32) -> Vec<String> {
    let m = memory_mb(mbufs).to_string();
    if env.hugepages {
        vec!["--huge-unlink".into(), "-m".into(), m]
    } else {
        vec!["--no-huge".into(), "-m".into(), m]
    }
}

fn frames_hash(queues: &[Vec<Vec<u8>>]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    queues.hash(&mut h);
    h.finish()
}

/// Runs one point: the vrouter, then each reference (from `cache` when it has the same
/// capture and lcores). `step` is called before each program runs.
pub fn run_point(
    env: &Env,
    p: &Point,
    cache: &mut Cache,
    mut step: impl FnMut(&str),
) -> Result<Row> {
    let s = p.scenario;
    let size = p.size.at_least(s.min_size());
    let flows = match s.max_flows() {
        Some(m) => p.flows.min(m),
        None => p.flows,
    };
    let p = Point { flows, ..*p };
    let mut notes = Vec::new();
    if flows != p.flows {
        notes.push(format!("flows capped at {flows}"));
    }
    let dir = env.work.join(format!(
        "{}-{}-{}-{}-{}",
        s.name(),
        size,
        flows,
        p.lcores,
        p.burst
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let queues = queue_frames(&p);
    let total: usize = queues.iter().map(Vec::len).sum();
    let mut rx_args = Vec::new();
    for (q, frames) in queues.iter().enumerate() {
        let f = dir.join(format!("q{q}.pcap"));
        vrouter::pcap::write(&f, frames).with_context(|| format!("writing {}", f.display()))?;
        rx_args.push(format!("rx_pcap={}", f.display()));
    }
    let input = format!("net_pcap0,{},infinite_rx=1", rx_args.join(","));
    let output = "net_null0,no-rx=1".to_string();
    let mbufs = mbufs_for(total, p.lcores);

    let mut row = Row {
        scenario: s.name().into(),
        kind: s.kind(),
        size: size.to_string(),
        frame_bytes: size.mean(),
        flows,
        lcores: p.lcores,
        burst: p.burst,
        vrouter: None,
        flow_setup_per_s_per_lcore: None,
        testpmd_io: None,
        testpmd_macswap: None,
        ovs: None,
        ratio_testpmd_io: None,
        ratio_ovs: None,
        flow_bytes_per_entry: None,
        flow_table_entries: None,
        drops: BTreeMap::new(),
        notes,
    };

    step(&format!("{} {} B {} flows: vrouter", s.name(), size, flows));
    match run_vrouter(env, &p, &dir, &input, &output, mbufs, size) {
        Ok(v) => {
            row.vrouter = v.measure;
            row.flow_setup_per_s_per_lcore = v.setup_rate;
            row.flow_bytes_per_entry = Some(v.flow_bytes_per_entry);
            row.flow_table_entries = Some(v.flow_entries);
            row.drops = v.drops;
            row.notes.extend(v.notes);
        }
        Err(e) => row.notes.push(format!("vrouter: {e:#}")),
    }
    if let Some(tp) = &env.testpmd {
        let key = frames_hash(&queues);
        for mode in ["io", "macswap"] {
            step(&format!(
                "{} {} B {} flows: testpmd {mode}",
                s.name(),
                size,
                flows
            ));
            let k = (key, p.lcores, p.burst, mode);
            let m = match cache.testpmd.get(&k) {
                Some(m) => *m,
                None => {
                    let r = run_testpmd(env, tp, &p, &dir, &input, &output, mbufs, size, mode);
                    let m = match r {
                        Ok(m) => Some(m),
                        Err(e) => {
                            row.notes.push(format!("testpmd {mode}: {e:#}"));
                            None
                        }
                    };
                    cache.testpmd.insert(k, m);
                    m
                }
            };
            match mode {
                "io" => row.testpmd_io = m,
                _ => row.testpmd_macswap = m,
            }
        }
    }
    if let (Some(o), Some(work)) = (&env.ovs, s.ovs()) {
        step(&format!(
            "{} {} B {} flows: OVS-DPDK",
            s.name(),
            size,
            flows
        ));
        match o.run(work, &p, &dir, &rx_args, mbufs, size, Timing::of(env)) {
            Ok(m) => row.ovs = Some(m),
            Err(e) => row.notes.push(format!("ovs-dpdk: {e:#}")),
        }
    }
    if let Some(v) = row.vrouter {
        row.ratio_testpmd_io = row.testpmd_io.map(|t| v.mpps / t.mpps);
        row.ratio_ovs = row.ovs.map(|o| v.mpps / o.mpps);
    }
    Ok(row)
}

struct VrouterResult {
    measure: Option<Measure>,
    setup_rate: Option<f64>,
    flow_bytes_per_entry: f64,
    flow_entries: u64,
    drops: BTreeMap<String, u64>,
    notes: Vec<String>,
}

/// Flow table entries for `flows` pairs: two entries each, at most a quarter full, and
/// never below the daemon's default.
fn table_entries(flows: u32) -> u32 {
    (u64::from(flows) * 8)
        .next_power_of_two()
        .clamp(1 << 19, 1 << 24) as u32
}

#[allow(clippy::too_many_arguments)]
fn run_vrouter(
    env: &Env,
    p: &Point,
    dir: &Path,
    input: &str,
    output: &str,
    mbufs: u32,
    size: Size,
) -> Result<VrouterResult> {
    let s = p.scenario;
    let cfg = scenario::config(s, input, output);
    let cfg_path = dir.join("vrouter.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
    let stats = dir.join("vrouter.json");
    let _ = std::fs::remove_file(&stats);
    let mut cmd = Command::new(&env.vrouter);
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg_path)
        .arg("--no-socket")
        .args(["--flows", &table_entries(p.flows).to_string()])
        .args(["--mbufs", &mbufs.to_string()])
        .args(["--burst", &p.burst.to_string()])
        .arg("--stats-json")
        .arg(&stats);
    match s.kind() {
        Kind::Forward => {
            cmd.args(["--duration-s", &(env.warmup + env.duration).to_string()])
                .args(["--warmup-s", &env.warmup.to_string()]);
        }
        Kind::Setup => {
            // One pass: every packet a new flow. The duration only bounds a stuck run.
            cmd.args(["--max-packets", &p.flows.to_string()])
                .args(["--duration-s", "120"]);
        }
    }
    cmd.arg("--")
        .args(["--lcores", &lcore_list(p.lcores, env.cpus)])
        .args(memory_args(env, mbufs))
        .args(["--file-prefix", &format!("vrperf{}", std::process::id())]);
    let out = cmd
        .output()
        .with_context(|| format!("running {}", env.vrouter.display()))?;
    std::fs::write(
        dir.join("vrouter.log"),
        [&out.stdout[..], &out.stderr[..]].concat(),
    )?;
    if !out.status.success() {
        bail!(
            "exited with {}: {}",
            out.status,
            last_lines(&String::from_utf8_lossy(&out.stderr), 3)
        );
    }
    let r: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&stats).with_context(|| format!("reading {}", stats.display()))?,
    )?;
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let tsc_hz = u(&r["tsc_hz"]).max(1) as f64;
    let mut notes = Vec::new();
    let drops: BTreeMap<String, u64> = r["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), u(v)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default();
    let ft = &r["flow_table"];
    let entries = u(&ft["capacity"]);
    let bytes = u(&ft["memory_bytes"]);
    let (measure, setup_rate) = match s.kind() {
        Kind::Forward => {
            let w = &r["window"];
            if w.is_null() {
                bail!("the run ended before the warm-up did");
            }
            let (secs, rx, tx, busy) = (
                f(&w["seconds"]),
                u(&w["rx"]),
                u(&w["tx"]),
                u(&w["busy_cycles"]),
            );
            if tx == 0 {
                bail!("nothing forwarded (drops: {drops:?})");
            }
            if (tx as f64) < rx as f64 * 0.99 {
                notes.push(format!("forwarded {tx} of {rx} received"));
            }
            let cycles = (rx > 0).then(|| busy as f64 / rx as f64);
            (
                Some(Measure::new(tx as f64 / secs, p.lcores, size, cycles)),
                None,
            )
        }
        Kind::Setup => {
            let created = u(&r["flows_created"]);
            let busy = u(&r["busy_cycles"]);
            let rx = u(&r["rx"]);
            if created == 0 || busy == 0 {
                bail!("no flow set up (drops: {drops:?})");
            }
            if created < p.flows as u64 {
                notes.push(format!("{created} of {} flows set up", p.flows));
            }
            // The busy cycles of all lcores: flows per busy second is the rate per lcore.
            let rate = created as f64 / (busy as f64 / tsc_hz);
            let cycles = busy as f64 / rx.max(1) as f64;
            let pps = rx as f64 / (busy as f64 / tsc_hz) * p.lcores as f64;
            (
                Some(Measure::new(pps, p.lcores, size, Some(cycles))),
                Some(rate),
            )
        }
    };
    Ok(VrouterResult {
        measure,
        setup_rate,
        flow_bytes_per_entry: bytes as f64 / entries.max(1) as f64,
        flow_entries: entries,
        drops,
        notes,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_testpmd(
    env: &Env,
    testpmd: &Path,
    p: &Point,
    dir: &Path,
    input: &str,
    output: &str,
    mbufs: u32,
    size: Size,
    mode: &str,
) -> Result<Measure> {
    let secs = (env.warmup + env.duration).ceil() as u64 + 1;
    let n = p.lcores.to_string();
    let out = Command::new("timeout")
        .args(["-s", "INT", "-k", "10", &secs.to_string()])
        .arg(testpmd)
        .args(["--lcores", &lcore_list(p.lcores, env.cpus)])
        .args(memory_args(env, mbufs))
        .args([
            "--no-pci",
            "--file-prefix",
            &format!("tp{}", std::process::id()),
        ])
        .args(["--vdev", input, "--vdev", output])
        .args(["--log-level", "lib.eal:error", "--"])
        .arg(format!("--forward-mode={mode}"))
        .args(["--auto-start", "--stats-period=1", "--record-core-cycles"])
        .arg(format!("--total-num-mbufs={}", mbufs + 1))
        .arg(format!("--nb-cores={n}"))
        .arg(format!("--rxq={n}"))
        .arg(format!("--txq={n}"))
        .arg(format!("--burst={}", p.burst))
        .stdin(std::process::Stdio::null())
        .output()
        .context("running dpdk-testpmd")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(dir.join(format!("testpmd-{mode}.log")), &text)?;
    let samples = rx_pps_samples(&text);
    // The first samples cover start-up and the first pass over the capture.
    let skip = env.warmup.ceil() as usize;
    let mut steady: Vec<f64> = samples.iter().skip(skip).copied().collect();
    if steady.is_empty() {
        bail!(
            "no rate in its output ({}): {}",
            out.status,
            last_lines(&String::from_utf8_lossy(&out.stderr), 3)
        );
    }
    steady.sort_by(f64::total_cmp);
    let pps = steady[steady.len() / 2];
    Ok(Measure::new(pps, p.lcores, size, cycles_per_packet(&text)))
}

/// Port 0's Rx-pps of each periodic display (testpmd shows every port in turn; port 0
/// is the replaying input).
pub fn rx_pps_samples(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut port: Option<u32> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("######################## NIC statistics for port") {
            port = rest.split_whitespace().next().and_then(|x| x.parse().ok());
        } else if let Some(rest) = l.strip_prefix("Rx-pps:") {
            if port == Some(0) {
                if let Some(v) = rest.split_whitespace().next().and_then(|x| x.parse().ok()) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// testpmd's "CPU cycles/packet=X" (with --record-core-cycles), at the end of a run.
pub fn cycles_per_packet(text: &str) -> Option<f64> {
    text.lines().rev().find_map(|l| {
        let i = l.find("CPU cycles/packet=")?;
        l[i + "CPU cycles/packet=".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::by_name;

    #[test]
    fn testpmd_output_is_read_per_port() {
        let text = "\
  ######################## NIC statistics for port 0  ########################
  RX-packets: 1          RX-missed: 0          RX-bytes:  60
  Throughput (since last show)
  Rx-pps:     21000000          Rx-bps:  1
  Tx-pps:            0          Tx-bps:  0
  ######################## NIC statistics for port 1  ########################
  Rx-pps:            0          Rx-bps:  0
  Tx-pps:     21000000          Tx-bps:  1
  ######################## NIC statistics for port 0  ########################
  Rx-pps:     23000000          Rx-bps:  1
  ######################## NIC statistics for port 1  ########################
  Rx-pps:            0          Rx-bps:  0
  CPU cycles/packet=104.25 (busy cycles=1 / total io packets=2) at 2000 MHz Clock
";
        assert_eq!(rx_pps_samples(text), vec![21e6, 23e6]);
        assert_eq!(cycles_per_packet(text), Some(104.25));
        assert_eq!(cycles_per_packet("nothing"), None);
    }

    #[test]
    fn lcores_wrap_onto_the_cpus() {
        assert_eq!(lcore_list(1, 2), "0@0,1@1");
        assert_eq!(lcore_list(2, 2), "0@0,1@1,2@0");
        assert_eq!(lcore_list(4, 16), "0@0,1@1,2@2,3@3,4@4");
    }

    #[test]
    fn queues_split_the_flows_and_cycle_sizes() {
        let s = by_name("vxlan-encap").expect("scenario");
        let p = Point {
            scenario: s,
            size: Size::Imix,
            flows: 1000,
            lcores: 2,
            burst: 32,
        };
        let q = queue_frames(&p);
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].len(), 500);
        // Sizes follow the IMIX pattern (without FCS).
        for (k, f) in q[0].iter().enumerate() {
            assert_eq!(f.len(), crate::frames::IMIX[k % 12] - FCS);
        }
        // Distinct flows across both queues: 1000 distinct (dst, sport) pairs.
        let mut keys = std::collections::HashSet::new();
        for f in q.iter().flatten() {
            keys.insert((f[30..34].to_vec(), f[34..36].to_vec()));
        }
        assert_eq!(keys.len(), 1000);
        // A scenario's minimum size is applied.
        let d = Point {
            scenario: by_name("decap").expect("decap"),
            size: Size::Fixed(64),
            flows: 1,
            lcores: 1,
            burst: 32,
        };
        assert_eq!(queue_frames(&d)[0][0].len(), 82 - FCS);
    }

    #[test]
    fn pools_and_tables_are_sized_for_the_run() {
        assert_eq!(mbufs_for(1000, 1), 17407);
        assert!(mbufs_for(262_144, 1) as usize >= 262_144 + 8192);
        assert_eq!(table_entries(1), 1 << 19);
        assert_eq!(table_entries(262_144), 1 << 21);
    }
}
