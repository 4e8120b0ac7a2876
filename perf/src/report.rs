//! Results: the terminal table, JSON and CSV files, and the machine they were taken on.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::runner::{Measure, Row};
use crate::scenario::Kind;

/// What the figures were measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// CPUs online.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// DPDK version (pkg-config).
    pub dpdk: String,
    /// OVS version, when it ran.
    pub ovs: Option<String>,
    /// Hugepages used.
    pub hugepages: bool,
    /// When (UTC, RFC 3339).
    pub date: String,
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Machine {
    /// Describes this machine.
    pub fn here(hugepages: bool, ovs: bool) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: command_line("uname", &["-r"]).unwrap_or_default(),
            dpdk: command_line("pkg-config", &["--modversion", "libdpdk"]).unwrap_or_default(),
            ovs: if ovs {
                command_line("ovs-vsctl", &["--version"])
                    .and_then(|s| s.lines().next().map(str::to_string))
            } else {
                None
            },
            hugepages,
            date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
        }
    }
}

/// A whole run's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Where.
    pub machine: Machine,
    /// Seconds measured per run, after the warm-up.
    pub duration_s: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// One row per point.
    pub rows: Vec<Row>,
    /// Latency at offered rates.
    pub latency: Vec<crate::latency::Latency>,
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

fn mpps(m: Option<Measure>) -> String {
    opt(m.map(|m| m.mpps_per_lcore), 2)
}

/// The results as a text table (Mpps and Gbit/s per lcore).
pub fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<14} {:>5} {:>7} {:>3} {:>9} {:>7} {:>7} {:>9} {:>7} {:>8} {:>7} {:>7} {:>10}",
        "scenario",
        "size",
        "flows",
        "lc",
        "Mpps/lc",
        "Gb/s/lc",
        "cyc/pkt",
        "tp io",
        "vr/io",
        "tp mswap",
        "ovs",
        "vr/ovs",
        "setup/s/lc"
    );
    for r in rows {
        let v = r.vrouter;
        let _ = writeln!(
            t,
            "{:<14} {:>5} {:>7} {:>3} {:>9} {:>7} {:>7} {:>9} {:>7} {:>8} {:>7} {:>7} {:>10}",
            r.scenario,
            r.size,
            r.flows,
            r.lcores,
            mpps(v),
            opt(v.map(|m| m.gbps_per_lcore), 2),
            opt(v.and_then(|m| m.cycles_per_packet), 0),
            mpps(r.testpmd_io),
            opt(r.ratio_testpmd_io, 2),
            mpps(r.testpmd_macswap),
            mpps(r.ovs),
            opt(r.ratio_ovs, 2),
            match r.kind {
                Kind::Setup => opt(r.flow_setup_per_s_per_lcore.map(|x| x / 1e6), 2) + "M",
                Kind::Forward => "-".into(),
            },
        );
        for n in &r.notes {
            let _ = writeln!(t, "    note: {n}");
        }
    }
    t
}

/// What the tables were measured on and how.
pub fn header(res: &Results) -> String {
    let m = &res.machine;
    format!(
        "{} ({} CPUs), Linux {}, DPDK {}{}, {}; {} s measured after {} s warm-up per run; {}\n\
         Mpps/lc and Gb/s/lc per forwarding lcore (Gbit/s on the wire at the input size); cyc/pkt: TSC cycles of busy poll rounds per packet; tp: dpdk-testpmd on the same vdevs\n",
        m.cpu,
        m.cpus,
        m.kernel,
        m.dpdk,
        m.ovs
            .as_deref()
            .map(|o| format!(", {o}"))
            .unwrap_or_default(),
        if m.hugepages {
            "hugepages"
        } else {
            "no hugepages"
        },
        res.duration_s,
        res.warmup_s,
        m.date,
    )
}

/// The latency runs as a text table.
pub fn latency_table(rows: &[crate::latency::Latency]) -> String {
    let mut t = String::new();
    if rows.is_empty() {
        return t;
    }
    let _ = writeln!(
        t,
        "{:<14} {:>5} {:>6} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "latency",
        "size",
        "flows",
        "offered",
        "sent",
        "received",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us"
    );
    for l in rows {
        let _ = writeln!(
            t,
            "{:<14} {:>5} {:>6} {:>7.2}M {:>10} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
            l.scenario,
            l.size,
            l.flows,
            l.offered_mpps,
            l.sent,
            l.received,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            l.max_us
        );
    }
    t
}

/// Writes `results.json`, `results.csv` and `table.txt` into `dir`.
pub fn write(dir: &Path, res: &Results) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(res)? + "\n",
    )?;
    let mut w = csv::Writer::from_path(dir.join("results.csv"))?;
    w.write_record([
        "scenario",
        "kind",
        "size",
        "frame_bytes",
        "flows",
        "lcores",
        "burst",
        "vrouter_mpps",
        "vrouter_mpps_per_lcore",
        "vrouter_gbps_per_lcore",
        "vrouter_cycles_per_packet",
        "flow_setup_per_s_per_lcore",
        "testpmd_io_mpps_per_lcore",
        "testpmd_io_cycles_per_packet",
        "testpmd_macswap_mpps_per_lcore",
        "ovs_mpps_per_lcore",
        "ovs_cycles_per_packet",
        "ratio_testpmd_io",
        "ratio_ovs",
        "flow_bytes_per_entry",
        "notes",
    ])?;
    let f = |v: Option<f64>| v.map_or_else(String::new, |x| format!("{x:.4}"));
    for r in &res.rows {
        w.write_record([
            r.scenario.clone(),
            format!("{:?}", r.kind).to_lowercase(),
            r.size.clone(),
            format!("{:.1}", r.frame_bytes),
            r.flows.to_string(),
            r.lcores.to_string(),
            r.burst.to_string(),
            f(r.vrouter.map(|m| m.mpps)),
            f(r.vrouter.map(|m| m.mpps_per_lcore)),
            f(r.vrouter.map(|m| m.gbps_per_lcore)),
            f(r.vrouter.and_then(|m| m.cycles_per_packet)),
            f(r.flow_setup_per_s_per_lcore),
            f(r.testpmd_io.map(|m| m.mpps_per_lcore)),
            f(r.testpmd_io.and_then(|m| m.cycles_per_packet)),
            f(r.testpmd_macswap.map(|m| m.mpps_per_lcore)),
            f(r.ovs.map(|m| m.mpps_per_lcore)),
            f(r.ovs.and_then(|m| m.cycles_per_packet)),
            f(r.ratio_testpmd_io),
            f(r.ratio_ovs),
            f(r.flow_bytes_per_entry),
            r.notes.join("; "),
        ])?;
    }
    w.flush()?;
    std::fs::write(
        dir.join("table.txt"),
        header(res) + &table(&res.rows) + &latency_table(&res.latency),
    )?;
    Ok(())
}
