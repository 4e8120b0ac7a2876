//! `vrouter demo`: the inputs of the `make run` demo - the testbed topology as a config
//! whose vifs are net_pcap devices, and a capture of traffic for each input.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};

use crate::pcap;
use crate::tables::{GlobalConfig, TunnelKind};
use crate::testbed::{self, *};
use crate::wire::{self, MacAddr};

/// The vifs, in port order.
pub const VIFS: [&str; 4] = ["fabric", "vhost0", "vm1", "vm2"];

/// Input traffic per vif.
pub fn traffic() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let gw = GlobalConfig::default().vrouter_mac;
    let mut vm1 = vec![arp_request(Ipv4Addr::new(10, 1, 1, 1))];
    for i in 0..20u16 {
        vm1.push(vm1_udp(VM2_IP, 5000 + i, 9000, b"vm1->vm2"));
        vm1.push(vm1_udp(REMOTE_IP, 6000 + i, 9001, b"vm1->node-b"));
    }
    // 60 connections to the service VIP: spread over vm1, vm2 and node B.
    for i in 0..60u16 {
        vm1.push(vm1_udp(VIP, 20000 + i, 80, b"service"));
    }
    // SNAT to the outside through the node's address.
    let outside = Ipv4Addr::new(198, 51, 100, 7);
    vm1.push(ipv4_frame(
        VM1_MAC,
        gw,
        VM1_IP,
        outside,
        6,
        41000,
        443,
        wire::tcp::flags::SYN,
        b"",
    ));
    // Malformed frames: counted, never fatal.
    vm1.push(vm1_udp(VM2_IP, 1, 2, b"x")[..30].to_vec());
    let inner = ipv4_frame(
        MacAddr([2, 0xb, 0, 0, 0, 5]),
        gw,
        REMOTE_IP,
        VM1_IP,
        17,
        9001,
        6000,
        0,
        b"node-b->vm1",
    );
    let mut fabric = Vec::new();
    for kind in [TunnelKind::MplsUdp, TunnelKind::MplsGre] {
        fabric.push(from_node_b(kind, VM1_LABEL, &inner[14..]));
    }
    fabric.push(from_node_b(TunnelKind::Vxlan, VNI, &inner));
    fabric.push(from_node_b(TunnelKind::MplsUdp, 999, &inner[14..]));
    vec![("vm1", vm1), ("fabric", fabric)]
}

/// Writes `vrouter.toml` and the input captures into `dir`.
pub fn write(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let inputs = traffic();
    for name in VIFS {
        let frames = inputs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        pcap::write(dir.join(format!("{name}_in.pcap")), &frames)?;
    }
    let cfg = testbed::config(|name| {
        let i = VIFS.iter().position(|v| *v == name).unwrap_or(0);
        Some(format!(
            "net_pcap{i},rx_pcap={d}/{name}_in.pcap,tx_pcap={d}/{name}_out.pcap",
            d = dir.display()
        ))
    });
    let text = toml::to_string(&cfg).context("serialising the demo configuration")?;
    std::fs::write(dir.join("vrouter.toml"), text)?;
    Ok(())
}

/// Writes `perf.toml` and `perf_in.pcap` into `dir`: vm1 replays `flows` distinct 64-byte
/// frames to node B's VMs without end (net_pcap `infinite_rx`), encapsulated with `encap`
/// and sent to a `net_null` fabric. For forwarding-rate runs beside dpdk-testpmd on the
/// same vdevs.
pub fn write_perf(dir: &Path, flows: usize, encap: crate::config::Encap) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let frames: Vec<Vec<u8>> = (0..flows.max(1))
        .map(|i| {
            let dst = Ipv4Addr::new(10, 1, 2, 1 + (i % 250) as u8);
            vm1_udp(dst, 1024 + (i / 250) as u16, 9001, &[0x5a; 18])
        })
        .collect();
    pcap::write(dir.join("perf_in.pcap"), &frames)?;
    let mut cfg = testbed::config(|name| match name {
        "vm1" => Some(format!(
            "net_pcap0,rx_pcap={}/perf_in.pcap,infinite_rx=1",
            dir.display()
        )),
        "fabric" => Some("net_null0,no-rx=1".into()),
        _ => None,
    });
    cfg.global.encap_priority = vec![encap];
    std::fs::write(
        dir.join("perf.toml"),
        toml::to_string(&cfg).context("serialising")?,
    )?;
    Ok(())
}
