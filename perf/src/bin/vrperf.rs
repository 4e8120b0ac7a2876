//! vrperf: forwarding-rate and flow-setup runs of the vrouter beside dpdk-testpmd and
//! OVS-DPDK on the same vdevs. `vrperf standard` is what `make bench` runs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use perf::frames::Size;
use perf::ovs::Ovs;
use perf::report::{self, Machine, Results};
use perf::runner::{self, Cache, Env, Point};
use perf::scenario::{Kind, Scenario};
use perf::scenarios;

#[derive(Parser, Debug)]
#[command(
    name = "vrperf",
    version,
    about = "Packets per second of the vrouter, beside dpdk-testpmd and OVS-DPDK on the same vdevs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List the scenarios.
    List,
    /// Run the points given (every combination of the options).
    Run {
        /// Scenarios (names from `vrperf list`, or "all").
        #[arg(long, short, value_delimiter = ',', default_value = "vxlan-encap")]
        scenario: Vec<String>,
        /// Frame sizes in bytes with FCS (64..1518), or "imix".
        #[arg(long, value_delimiter = ',', default_value = "64")]
        size: Vec<Size>,
        /// Distinct flows in the traffic (1..1M; flow-setup runs set each one up once).
        #[arg(long, value_delimiter = ',', default_value = "65536")]
        flows: Vec<u32>,
        /// Forwarding lcores.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        lcores: Vec<usize>,
        #[command(flatten)]
        common: Common,
    },
    /// Per-packet latency (p50/p99/p99.9) at an offered rate: stamped frames through
    /// the vrouter on ring-backed ports, in this process.
    Latency {
        /// A forwarding scenario.
        #[arg(long, short, default_value = "vxlan-encap")]
        scenario: String,
        /// Frame size (FCS included) or "imix".
        #[arg(long, default_value = "64")]
        size: Size,
        /// Distinct flows.
        #[arg(long, default_value_t = 1024)]
        flows: u32,
        /// Offered rate in Mpps.
        #[arg(long, default_value_t = 1.0)]
        rate_mpps: f64,
        /// Seconds measured.
        #[arg(long, default_value_t = 3.0)]
        duration_s: f64,
        /// Seconds offered before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup_s: f64,
        /// Print the result as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Pod interfaces on real veth pairs: two busy pods alone, then beside idle
    /// interfaces, then on DPDK's af_packet PMD; lcore cycles per packet and capacity,
    /// as ratios to the first row (root; 2 CPUs).
    Pods {
        /// Idle interfaces beside the two busy ones (comma-separated; 0 is always run).
        #[arg(long, value_delimiter = ',', default_value = "248")]
        idle: Vec<usize>,
        /// Frame size in bytes with FCS (64..1518).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(64..=1518))]
        size: u16,
        /// Seconds measured per variant.
        #[arg(long, default_value_t = 5.0)]
        duration_s: f64,
        /// Seconds before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup_s: f64,
        /// Skip the af_packet PMD reference.
        #[arg(long)]
        no_pmd: bool,
        /// Skip bulk TCP between two pods (network namespaces; python3, taskset).
        #[arg(long)]
        no_tcp: bool,
        /// Print the rows as JSON lines.
        #[arg(long)]
        json: bool,
        /// The vrouter binary (default: next to this one).
        #[arg(long)]
        vrouter: Option<PathBuf>,
        /// Keep the configurations and logs (in the system's temp dir).
        #[arg(long)]
        keep: bool,
    },
    /// Rewrite the table, CSV and plots from a results.json (after changing the plots,
    /// or to compare runs).
    Report {
        /// A results.json written by `run` or `standard`.
        #[arg(long)]
        from: PathBuf,
        /// Where to write.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// The standard set (`make bench`): every scenario at 64 bytes and 64K flows, then
    /// VXLAN encapsulation over frame sizes, flow counts and lcores, then latency at
    /// three offered rates.
    Standard {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug)]
struct Common {
    /// RX burst size (1-64), for the vrouter and testpmd alike.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 3.0)]
    duration_s: f64,
    /// Seconds before measuring (flows set up, caches warm).
    #[arg(long, default_value_t = 1.5)]
    warmup_s: f64,
    /// Skip the dpdk-testpmd reference runs.
    #[arg(long)]
    no_testpmd: bool,
    /// Skip the OVS-DPDK reference runs.
    #[arg(long)]
    no_ovs: bool,
    /// Write results.json, results.csv, table.txt and the plots here.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// The vrouter binary (default: next to this one).
    #[arg(long)]
    vrouter: Option<PathBuf>,
    /// Directory of the OVS-DPDK scripts.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/ovs"))]
    ovs_scripts: PathBuf,
    /// Keep the captures, configurations and logs of every run (in the system's temp dir).
    #[arg(long)]
    keep: bool,
}

fn hugepages_free_mb() -> u64 {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        })
        .unwrap_or(false);
    if !mounted {
        return 0;
    }
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get("HugePages_Free:") * get("Hugepagesize:") / 1024
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn env_for(c: &Common) -> Result<Env> {
    let vrouter = match &c.vrouter {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this program")?
            .join("vrouter"),
    };
    if !vrouter.is_file() {
        bail!(
            "{}: no vrouter binary (build it: cargo build --release --bins, or give --vrouter)",
            vrouter.display()
        );
    }
    if !(1..=64).contains(&c.burst) {
        bail!("--burst {}: bursts go from 1 to 64", c.burst);
    }
    if c.duration_s <= 0.0 || c.warmup_s < 0.5 {
        bail!("--duration-s must be positive and --warmup-s at least 0.5");
    }
    let testpmd = if c.no_testpmd {
        None
    } else {
        Some(
            which("dpdk-testpmd")
                .context("dpdk-testpmd is not installed (package dpdk), or give --no-testpmd")?,
        )
    };
    let ovs = if c.no_ovs {
        None
    } else {
        let o = Ovs::find(&c.ovs_scripts);
        if o.is_none() {
            eprintln!(
                "OVS-DPDK is not installed ({}): no OVS column (scripts/setup --ovs installs it)",
                perf::ovs::VSWITCHD
            );
        }
        o
    };
    let work = std::env::temp_dir().join(format!("vrperf.{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    Ok(Env {
        vrouter,
        testpmd,
        ovs,
        duration: c.duration_s,
        warmup: c.warmup_s,
        work,
        // Room for the largest pools of the standard set.
        hugepages: hugepages_free_mb() >= 1536,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

fn points_of(
    scenarios: &[&'static dyn Scenario],
    sizes: &[Size],
    flows: &[u32],
    lcores: &[usize],
    burst: usize,
) -> Vec<Point> {
    let mut v = Vec::new();
    for &s in scenarios {
        for &size in sizes {
            for &f in flows {
                for &l in lcores {
                    v.push(Point {
                        scenario: s,
                        size,
                        flows: f,
                        lcores: l,
                        burst,
                    });
                }
            }
        }
    }
    v
}

/// The standard set.
fn standard(cpus: usize, burst: usize) -> Vec<Point> {
    let all = scenarios::all();
    let vx = scenarios::by_name("vxlan-encap").expect("vxlan-encap exists");
    let mut v = Vec::new();
    for s in &all {
        let flows = if s.kind() == Kind::Setup {
            262_144
        } else {
            65_536
        };
        v.extend(points_of(&[*s], &[Size::Fixed(64)], &[flows], &[1], burst));
    }
    let sizes = [128, 256, 512, 1024, 1518].map(Size::Fixed);
    v.extend(points_of(&[vx], &sizes, &[65_536], &[1], burst));
    v.extend(points_of(&[vx], &[Size::Imix], &[65_536], &[1], burst));
    v.extend(points_of(
        &[vx],
        &[Size::Fixed(64)],
        &[1, 1024, 262_144],
        &[1],
        burst,
    ));
    let more: Vec<usize> = [2, 4, 8]
        .into_iter()
        .filter(|&l| l < cpus.max(2) * 2 && l <= cpus.max(2))
        .collect();
    v.extend(points_of(
        &[vx],
        &[Size::Fixed(64)],
        &[65_536],
        &more,
        burst,
    ));
    v
}

/// Latency runs of the standard set: VXLAN encapsulation, 64 bytes, 1024 flows.
const LATENCY_RATES_MPPS: [f64; 3] = [0.5, 2.0, 4.0];

/// Runs `vrperf latency` in a child process (the EAL starts once per process).
fn latency_child(rate_mpps: f64, c: &Common) -> Result<perf::latency::Latency> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["latency", "--json", "--rate-mpps", &rate_mpps.to_string()])
        .args(["--duration-s", &c.duration_s.to_string()])
        .output()
        .context("running vrperf latency")?;
    if !out.status.success() {
        bail!(
            "vrperf latency exited with {}: {}",
            out.status,
            runner::last_lines(&String::from_utf8_lossy(&out.stderr), 3)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("reading {line:?}"))
}

fn run(points: Vec<Point>, latency_rates: &[f64], c: &Common) -> Result<()> {
    let env = env_for(c)?;
    let total: u64 =
        points.iter().map(|p| runner::steps(p, &env)).sum::<u64>() + latency_rates.len() as u64;
    let started = Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Some(b)
    } else {
        None
    };
    let mut cache = Cache::default();
    let mut rows = Vec::new();
    let mut done = 0u64;
    for p in &points {
        let row = runner::run_point(&env, p, &mut cache, |msg| {
            done += 1;
            match &bar {
                Some(b) => {
                    b.set_position(done - 1);
                    b.set_message(msg.to_string());
                }
                None => eprintln!(
                    "[{done}/{total} {:>4.0}s] {msg}",
                    started.elapsed().as_secs_f64()
                ),
            }
        })?;
        rows.push(row);
    }
    let mut latency = Vec::new();
    for &r in latency_rates {
        done += 1;
        let msg = format!("latency vxlan-encap 64 B at {r} Mpps");
        match &bar {
            Some(b) => {
                b.set_position(done - 1);
                b.set_message(msg);
            }
            None => eprintln!(
                "[{done}/{total} {:>4.0}s] {msg}",
                started.elapsed().as_secs_f64()
            ),
        }
        match latency_child(r, c) {
            Ok(l) => latency.push(l),
            Err(e) => eprintln!("latency at {r} Mpps: {e:#}"),
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let results = Results {
        machine: Machine::here(env.hugepages, env.ovs.is_some()),
        duration_s: env.duration,
        warmup_s: env.warmup,
        rows,
        latency,
    };
    print!("{}", report::header(&results));
    print!("{}", report::table(&results.rows));
    print!("{}", report::latency_table(&results.latency));
    if let Some(dir) = &c.out {
        report::write(dir, &results)?;
        let plots = perf::plot::write(dir, &results.rows)?;
        println!(
            "wrote {}/results.json, results.csv, table.txt{}",
            dir.display(),
            plots.iter().map(|p| format!(", {p}")).collect::<String>()
        );
    }
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    if c.keep {
        println!("captures and logs kept in {}", env.work.display());
    } else {
        let _ = std::fs::remove_dir_all(&env.work);
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::List => {
            for s in scenarios::all() {
                let kind = match s.kind() {
                    Kind::Forward => "rate",
                    Kind::Setup => "setup",
                };
                let ovs = if s.ovs().is_some() {
                    " [+OVS-DPDK]"
                } else {
                    ""
                };
                println!("{:<14} {:<5} {}{ovs}", s.name(), kind, s.about());
            }
        }
        Cmd::Run {
            scenario: names,
            size,
            flows,
            lcores,
            common,
        } => {
            let scenarios: Vec<&'static dyn Scenario> = if names.iter().any(|n| n == "all") {
                scenarios::all()
            } else {
                names
                    .iter()
                    .map(|n| {
                        scenarios::by_name(n)
                            .with_context(|| format!("no scenario {n:?} (vrperf list shows them)"))
                    })
                    .collect::<Result<_>>()?
            };
            if let Some(f) = flows.iter().find(|f| !(1..=1 << 20).contains(*f)) {
                bail!("--flows {f}: from 1 to 1048576");
            }
            if let Some(l) = lcores.iter().find(|l| !(1..=64).contains(*l)) {
                bail!("--lcores {l}: from 1 to 64");
            }
            run(
                points_of(&scenarios, &size, &flows, &lcores, common.burst),
                &[],
                &common,
            )?;
        }
        Cmd::Latency {
            scenario: name,
            size,
            flows,
            rate_mpps,
            duration_s,
            warmup_s,
            json,
        } => {
            let s = scenarios::by_name(&name)
                .with_context(|| format!("no scenario {name:?} (vrperf list shows them)"))?;
            let l = perf::latency::run(&perf::latency::Options {
                scenario: s,
                size,
                flows,
                rate_pps: rate_mpps * 1e6,
                duration: duration_s,
                warmup: warmup_s,
                hugepages: hugepages_free_mb() >= 1024,
            })?;
            if json {
                println!("{}", serde_json::to_string(&l)?);
            } else {
                print!("{}", report::latency_table(std::slice::from_ref(&l)));
            }
        }
        Cmd::Pods {
            idle,
            size,
            duration_s,
            warmup_s,
            no_pmd,
            no_tcp,
            json,
            vrouter,
            keep,
        } => {
            let vrouter = match vrouter {
                Some(p) => p,
                None => std::env::current_exe()?
                    .parent()
                    .context("no directory for this program")?
                    .join("vrouter"),
            };
            if !vrouter.is_file() {
                bail!("{}: no vrouter binary (give --vrouter)", vrouter.display());
            }
            let work = perf::pods::work_dir(keep);
            let opts = perf::pods::Options {
                vrouter,
                idle,
                len: usize::from(size) - 4,
                duration: duration_s,
                warmup: warmup_s,
                pmd: !no_pmd,
                tcp: !no_tcp,
                work: work.clone(),
            };
            let rows = perf::pods::run(&opts)?;
            let tcp = if opts.tcp {
                perf::pods::tcp(&opts)?
            } else {
                Vec::new()
            };
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
                for r in &tcp {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                print!("{}", perf::pods::table(&rows));
                if !tcp.is_empty() {
                    print!("\n{}", perf::pods::tcp_table(&tcp));
                }
            }
            perf::pods::clean(&work, keep);
        }
        Cmd::Report { from, out } => {
            let res: Results = serde_json::from_slice(
                &std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?,
            )
            .with_context(|| format!("{}: not a vrperf results file", from.display()))?;
            report::write(&out, &res)?;
            let plots = perf::plot::write(&out, &res.rows)?;
            print!("{}{}", report::header(&res), report::table(&res.rows));
            print!("{}", report::latency_table(&res.latency));
            println!("wrote {} ({} plots)", out.display(), plots.len());
        }
        Cmd::Standard { common } => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            run(standard(cpus, common.burst), &LATENCY_RATES_MPPS, &common)?;
        }
    }
    Ok(())
}
