//! The vrouter daemon: `vrouter run --config FILE` forwards with the configured tables;
//! `vrouter probe` checks that DPDK works here and shows the ports it finds.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dpdk_bindings::EalBuilder;
use vrouter::config::Config;
use vrouter::{probe, runtime};

#[derive(Parser, Debug)]
#[command(name = "vrouter", version, about = "DPDK virtual router")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Boot the DPDK EAL, bring up every port and move a burst of test frames through it.
    ///
    /// EAL arguments follow `--`. Without any, the probe uses `--no-pci --vdev net_ring0
    /// --vdev net_null0`, on hugepages when the machine has them, else `--no-huge -m 256`.
    Probe {
        /// Test frames to send on each port (at most 64).
        #[arg(long, default_value_t = 32)]
        frames: usize,
        /// EAL arguments, passed to rte_eal_init as they are.
        #[arg(last = true)]
        eal: Vec<String>,
    },
    /// Write the demo: a configuration with net_pcap vifs and the input captures.
    Demo {
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
        /// Also write perf.toml and perf_in.pcap: this many flows replayed without end.
        #[arg(long)]
        perf_flows: Option<usize>,
        /// Encapsulation of the perf run.
        #[arg(long, value_enum, default_value = "vxlan")]
        encap: EncapArg,
    },
    /// Forward packets with the tables of a configuration file until SIGINT/SIGTERM.
    ///
    /// Every vif's `device` becomes an EAL `--vdev` (or `-a` for a PCI address), except
    /// host interfaces (`packet:<ifname>`), which the vrouter serves itself. EAL
    /// arguments after `--` are added; the defaults (-l 0-1, memory, file prefix) apply
    /// only where they give none.
    Run {
        /// The configuration (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Flow table entries.
        #[arg(long, default_value_t = 1 << 19)]
        flows: u32,
        /// Mbufs in the pool.
        #[arg(long, default_value_t = 16_383)]
        mbufs: u32,
        /// Stop after this many milliseconds without a received packet.
        #[arg(long)]
        exit_idle_ms: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration_s: Option<f64>,
        /// Stop after receiving this many packets (shared evenly by the lcores).
        #[arg(long)]
        max_packets: Option<u64>,
        /// Also count from this many seconds into the run on: the report's `window` is
        /// the steady state without start-up.
        #[arg(long)]
        warmup_s: Option<f64>,
        /// Packets one RX call takes at most (1-64).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=64))]
        burst: u16,
        /// Sleep this many microseconds when a forwarding lcore has found nothing for 1,024
        /// rounds in a row, until traffic comes back (0: poll without pause, the
        /// default). For labs and small machines that run several vrouters; it adds up to
        /// this much latency to the first packet after a quiet spell.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
        idle_sleep_us: u64,
        /// Frames (2 KiB each) in the receive ring of every host interface
        /// (`device = "packet:<ifname>"`).
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(16..=65536))]
        ring_frames: u32,
        /// Write the final report as JSON to this file.
        #[arg(long)]
        stats_json: Option<PathBuf>,
        /// Control socket for the agent and vrctl (mode 0600).
        #[arg(long, default_value = vrouter::control::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Run without a control socket.
        #[arg(long)]
        no_socket: bool,
        /// EAL arguments.
        #[arg(last = true)]
        eal: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EncapArg {
    Vxlan,
    MplsUdp,
    MplsGre,
}

fn has(args: &[String], names: &[&str]) -> bool {
    args.iter().any(|a| {
        names
            .iter()
            .any(|n| a == n || a.starts_with(&format!("{n}=")))
    })
}

/// EAL arguments for a run: devices from the config, then defaults the user did not set,
/// then the user's own.
fn run_eal_args(cfg: &Config, user: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    for v in &cfg.vifs {
        if let Some(dev) = v
            .device
            .as_deref()
            .filter(|d| runtime::host_iface(d).is_none())
        {
            let pci = dev.contains(':') && !dev.starts_with("net_");
            args.push(if pci { "-a" } else { "--vdev" }.to_string());
            args.push(dev.to_string());
        }
    }
    if !has(user, &["--no-huge", "-m", "--socket-mem"]) {
        if probe::hugepages_available() {
            args.extend(["--huge-unlink", "-m", "512"].map(String::from));
        } else {
            args.extend(["--no-huge", "-m", "512"].map(String::from));
        }
    }
    if !has(user, &["-l", "--lcores", "-c"]) {
        args.extend(["-l", "0-1"].map(String::from));
    }
    if !has(user, &["--file-prefix"]) {
        args.extend([
            "--file-prefix".to_string(),
            format!("vrouter{}", std::process::id()),
        ]);
    }
    if !has(user, &["--no-pci", "-a", "-b"]) && !args.iter().any(|a| a == "-a") {
        args.push("--no-pci".into());
    }
    if !has(user, &["--log-level"]) {
        args.extend(["--log-level", "lib.eal:error"].map(String::from));
    }
    args.extend(user.iter().cloned());
    args
}

fn print_report(r: &runtime::Report) {
    println!(
        "ran {:.2}s on {} forwarding lcore(s): rx {} tx {} flows created {} hits {} decap {} encap {} arp replies {}",
        r.seconds,
        r.lcores,
        r.counters.rx,
        r.counters.tx,
        r.counters.flows_created,
        r.counters.flow_hits,
        r.counters.decap,
        r.counters.encap,
        r.counters.arp_replies
    );
    if r.counters.rx > 0 {
        println!(
            "{:.1} cycles/packet in busy poll rounds (burst {})",
            r.busy_cycles as f64 / r.counters.rx as f64,
            r.burst
        );
    }
    if let Some(w) = &r.window {
        println!(
            "after warm-up: {:.2}s, rx {} tx {} ({:.3} Mpps)",
            w.seconds,
            w.rx,
            w.tx,
            w.tx as f64 / w.seconds.max(1e-9) / 1e6
        );
    }
    let mut vifs: Vec<_> = r.vifs.iter().collect();
    vifs.sort_by(|a, b| a.0.cmp(b.0));
    println!("{:<16} {:>10} {:>10} {:>10}", "vif", "rx", "tx", "tx_drop");
    for (name, c) in vifs {
        println!("{name:<16} {:>10} {:>10} {:>10}", c.rx, c.tx, c.tx_dropped);
    }
    for (reason, n) in r.counters.drops.nonzero() {
        println!("drop {reason:<22} {n}");
    }
    let f = &r.flow_table;
    println!(
        "flow table: active {} refused {} evicted {} aged {}",
        f.active, f.refused, f.evicted, f.aged
    );
}

fn default_eal_args() -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if probe::hugepages_available() {
        args.push("--huge-unlink".into());
        args.extend(["-m", "256"].map(String::from));
    } else {
        args.extend(["--no-huge", "-m", "256"].map(String::from));
    }
    args.extend(["--no-pci", "--vdev", "net_ring0", "--vdev", "net_null0"].map(String::from));
    args.extend([
        "--file-prefix".to_string(),
        format!("vrprobe{}", std::process::id()),
    ]);
    args.extend(["-l", "0", "--log-level", "lib.eal:error"].map(String::from));
    args
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Probe { frames, eal } => {
            let args = if eal.is_empty() {
                default_eal_args()
            } else {
                eal
            };
            println!("EAL arguments: {}", args.join(" "));
            let eal = EalBuilder::new("vrouter")
                .args(args)
                .init()
                .context("starting the DPDK EAL")?;
            let report = probe::run(&eal, frames)?;
            println!(
                "EAL up: {} lcore(s), {}, TSC {:.3} GHz, {} port(s)",
                report.lcores,
                if report.hugepages {
                    "hugepages"
                } else {
                    "no hugepages (--no-huge)"
                },
                report.tsc_hz as f64 / 1e9,
                report.ports.len()
            );
            for p in &report.ports {
                println!("{p}");
            }
            anyhow::ensure!(
                !report.ports.is_empty(),
                "no DPDK port found: add --vdev or -a DEVICE"
            );
        }
        Cmd::Demo {
            out,
            perf_flows,
            encap,
        } => {
            vrouter::demo::write(&out)?;
            println!("wrote {}/vrouter.toml and input captures", out.display());
            if let Some(n) = perf_flows {
                let e = match encap {
                    EncapArg::Vxlan => vrouter::config::Encap::Vxlan,
                    EncapArg::MplsUdp => vrouter::config::Encap::MplsUdp,
                    EncapArg::MplsGre => vrouter::config::Encap::MplsGre,
                };
                vrouter::demo::write_perf(&out, n, e)?;
                println!(
                    "wrote {}/perf.toml and perf_in.pcap ({n} flows)",
                    out.display()
                );
            }
        }
        Cmd::Run {
            config,
            flows,
            mbufs,
            exit_idle_ms,
            duration_s,
            max_packets,
            warmup_s,
            burst,
            idle_sleep_us,
            ring_frames,
            stats_json,
            socket,
            no_socket,
            eal,
        } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let cfg = Config::from_toml(&text)
                .with_context(|| format!("parsing {}", config.display()))?;
            let args = run_eal_args(&cfg, &eal);
            println!("EAL arguments: {}", args.join(" "));
            let eal = EalBuilder::new("vrouter")
                .args(args)
                .init()
                .context("starting the DPDK EAL")?;
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, Arc::clone(&stop))
                    .context("installing signal handlers")?;
            }
            let opts = runtime::Options {
                flows,
                mbufs,
                exit_idle: exit_idle_ms.map(Duration::from_millis),
                duration: duration_s.map(Duration::from_secs_f64),
                socket: (!no_socket).then_some(socket),
                burst: usize::from(burst),
                max_packets,
                warmup: warmup_s.map(Duration::from_secs_f64),
                ring_frames,
                idle_sleep: (idle_sleep_us > 0).then(|| Duration::from_micros(idle_sleep_us)),
                ..runtime::Options::default()
            };
            let report = runtime::run(&eal, &cfg, &opts, stop)?;
            print_report(&report);
            if let Some(p) = stats_json {
                std::fs::write(&p, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
        }
    }
    Ok(())
}
