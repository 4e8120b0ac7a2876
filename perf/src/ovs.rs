//! The OVS-DPDK reference: Debian's openvswitch-switch-dpdk doing the same encapsulation
//! work on the same capture, driven by `perf/ovs/<work>` (its own ovsdb and vswitchd in a
//! network namespace of its own; see the script).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::frames::Size;
use crate::measure::{Measure, Point, Timing, last_lines};
use crate::scenario::OvsWork;

/// The DPDK build of ovs-vswitchd that Debian installs.
pub const VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";

/// Where the scripts are.
#[derive(Debug, Clone)]
pub struct Ovs {
    /// Directory of the per-work scripts.
    pub scripts: PathBuf,
}

impl Ovs {
    /// OVS-DPDK when it is installed and the scripts are there.
    pub fn find(scripts: &Path) -> Option<Ovs> {
        (Path::new(VSWITCHD).exists() && scripts.join("vxlan-encap").exists()).then(|| Ovs {
            scripts: scripts.to_path_buf(),
        })
    }

    /// Runs `work` on the capture of `p`; the rate comes from the PMD counters over the
    /// measured seconds.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        work: OvsWork,
        p: &Point,
        dir: &Path,
        rx_args: &[String],
        mbufs: u32,
        size: Size,
        env: Timing,
    ) -> Result<Measure> {
        let script = self.scripts.join(match work {
            OvsWork::VxlanEncap => "vxlan-encap",
        });
        let input = format!("net_pcap0,{},infinite_rx=1", rx_args.join(","));
        // PMD threads on CPUs 1..=lcores (wrapping), as the vrouter's lcores.
        let cpus: Vec<String> = (1..=p.lcores)
            .map(|i| (i % env.cpus.max(1)).to_string())
            .collect();
        let mem_mb = (u64::from(mbufs) * 2560 / (1 << 20) + 512).to_string();
        let mem: Vec<&str> = if env.hugepages {
            vec!["--huge-unlink", "-m", &mem_mb]
        } else {
            vec!["--no-huge", "-m", &mem_mb]
        };
        let out = Command::new("timeout")
            .args([
                "-k",
                "5",
                &((env.warmup + env.duration) as u64 + 60).to_string(),
            ])
            .arg(&script)
            .arg(dir.join("ovs"))
            .arg(&input)
            .arg(cpus.join(","))
            .arg(env.warmup.to_string())
            .arg((env.duration.round() as u64).max(1).to_string())
            .args(&mem)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        std::fs::write(
            dir.join("ovs.log"),
            [&out.stdout[..], &out.stderr[..]].concat(),
        )?;
        if !out.status.success() {
            bail!(
                "{} exited with {}: {}",
                script.display(),
                out.status,
                last_lines(&String::from_utf8_lossy(&out.stderr), 3)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("reading {line:?}"))?;
        let pps = v["rx_pps"].as_f64().unwrap_or(0.0);
        if pps <= 0.0 || v["fabric_tx"].as_u64().unwrap_or(0) == 0 {
            bail!("OVS-DPDK forwarded nothing: {line}");
        }
        Ok(Measure::new(
            pps,
            p.lcores,
            size,
            v["cycles_per_packet"].as_f64(),
        ))
    }
}
