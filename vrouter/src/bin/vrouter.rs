//! The vrouter daemon. Today: `vrouter probe`, which checks that DPDK works here and shows
//! the ports it finds. The forwarding daemon arrives with the lcore runtime.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dpdk_bindings::EalBuilder;
use vrouter::probe;

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
    }
    Ok(())
}
