//! `vrouter probe`: boots the EAL, brings every port up and moves a burst through it.
//!
//! It answers "does DPDK work here, with which ports?" before anything else runs: for each
//! port it prints the driver, MAC, link and queues, then sends a burst of test frames and
//! reads what comes back (a net_ring port loops frames back; net_null makes up its own).

use std::fmt;

use anyhow::{Context, Result};
use dpdk_bindings::{
    Burst, DEFAULT_DATA_ROOM, Eal, Mempool, Port, PortConfig, SocketId, port_info,
};

/// A broadcast Ethernet frame with an IPv4/UDP test payload, 64 bytes on the wire without FCS.
pub fn test_frame(seq: u16) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    // IPv4: version 4, IHL 5, total length 46, TTL 64, UDP, 192.0.2.1 -> 192.0.2.2
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[18..20].copy_from_slice(&seq.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[192, 0, 2, 1]);
    f[30..34].copy_from_slice(&[192, 0, 2, 2]);
    let mut sum = 0u32;
    for c in f[14..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&4001u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// What the probe found on one port.
#[derive(Debug, Clone)]
pub struct PortReport {
    /// Port id.
    pub port: u16,
    /// Device name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// Link up.
    pub link_up: bool,
    /// Link speed, Mbit/s.
    pub speed_mbps: u32,
    /// Most RX queues.
    pub max_rx_queues: u16,
    /// Frames handed to TX.
    pub sent: usize,
    /// Frames read back from RX.
    pub received: usize,
    /// Received frames identical to one that was sent.
    pub echoed: usize,
}

impl fmt::Display for PortReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mac;
        write!(
            f,
            "port {} {} driver={} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} link={} speed={}Mb/s max_rxq={} tx={} rx={} echoed={}",
            self.port,
            self.name,
            self.driver,
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
            if self.link_up { "up" } else { "down" },
            self.speed_mbps,
            self.max_rx_queues,
            self.sent,
            self.received,
            self.echoed
        )
    }
}

/// The whole probe result.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// EAL lcores.
    pub lcores: u32,
    /// Whether hugepages back the EAL memory.
    pub hugepages: bool,
    /// TSC frequency.
    pub tsc_hz: u64,
    /// One entry per port.
    pub ports: Vec<PortReport>,
}

/// Whether this machine has free hugepages on a mounted hugetlbfs (else use `--no-huge`).
pub fn hugepages_available() -> bool {
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        })
        .unwrap_or(false);
    free >= 64 && mounted
}

/// Runs the probe on an initialised EAL, sending `frames` test frames per port.
pub fn run(eal: &Eal, frames: usize) -> Result<ProbeReport> {
    let pool = std::sync::Arc::new(
        Mempool::new(
            eal,
            "probe_pool",
            4095,
            64,
            DEFAULT_DATA_ROOM,
            SocketId::ANY,
        )
        .context("creating the probe mbuf pool")?,
    );
    let mut ports = Vec::new();
    for id in eal.ports() {
        let info = port_info(eal, id).with_context(|| format!("reading {id}"))?;
        let cfg = PortConfig {
            rx_desc: 512,
            tx_desc: 512,
            ..PortConfig::default()
        };
        let mut port = Port::configure(eal, id, &cfg, &pool)
            .with_context(|| format!("configuring {id} ({})", info.driver))?;
        let (mut rxq, mut txq) = port.take_queues().context("queues already taken")?;
        let (rx, tx) = (&mut rxq[0], &mut txq[0]);

        let frames = frames.min(dpdk_bindings::MAX_BURST);
        let mut burst = Burst::new();
        let mut sent_frames = Vec::new();
        for seq in 0..frames {
            let frame = test_frame(seq as u16);
            let mut m = pool.alloc().context("mbuf pool exhausted")?;
            anyhow::ensure!(
                m.extend_from_slice(&frame),
                "test frame does not fit an mbuf"
            );
            sent_frames.push(frame);
            if burst.push(m).is_err() {
                break;
            }
        }
        let mut sent = 0;
        for _ in 0..100 {
            if burst.is_empty() {
                break;
            }
            sent += tx.tx_burst(&mut burst);
        }
        burst.clear();

        let (mut received, mut echoed) = (0, 0);
        for _ in 0..100 {
            let n = rx.rx_burst(&mut burst);
            received += n;
            echoed += burst
                .as_slice()
                .iter()
                .filter(|m| sent_frames.iter().any(|f| m.data() == f))
                .count();
            burst.clear();
            if received >= frames {
                break;
            }
        }
        let link = port.link()?;
        ports.push(PortReport {
            port: id.raw(),
            name: info.name,
            driver: info.driver,
            mac: port.mac()?,
            link_up: link.up,
            speed_mbps: link.speed_mbps,
            max_rx_queues: info.max_rx_queues,
            sent,
            received,
            echoed,
        });
    }
    Ok(ProbeReport {
        lcores: eal.lcore_count(),
        hugepages: eal.has_hugepages(),
        tsc_hz: eal.tsc_hz(),
        ports,
    })
}
