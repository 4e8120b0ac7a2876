//! `vrouter run` as a real process: net_pcap vdevs replay input captures into the vifs of
//! the testbed topology, and what the vrouter sends is read back from the output
//! captures and decoded independently (etherparse, and tshark for the MPLS label).

use std::path::{Path, PathBuf};
use std::process::Command;

use etherparse::{NetSlice, SlicedPacket};
use vr_tests::{unique_prefix, workspace_bin};
use vrouter::config::{ActionCfg, Config, Encap, PolicyCfg, RuleCfg};
use vrouter::pcap;
use vrouter::tables::TunnelKind;
use vrouter::testbed::{self, *};
use vrouter::wire::{self, MacAddr};

const VIFS: [&str; 4] = ["fabric", "vhost0", "vm1", "vm2"];

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique_prefix(tag));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gw() -> MacAddr {
    vrouter::tables::GlobalConfig::default().vrouter_mac
}

/// Writes the config and input captures, runs the daemon, returns the stats JSON.
fn run(dir: &Path, inputs: &[(&str, Vec<Vec<u8>>)]) -> serde_json::Value {
    run_with(dir, inputs, |_| {})
}

fn run_with(
    dir: &Path,
    inputs: &[(&str, Vec<Vec<u8>>)],
    tweak: impl FnOnce(&mut Config),
) -> serde_json::Value {
    for name in VIFS {
        let frames = inputs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        pcap::write(dir.join(format!("{name}_in.pcap")), &frames).unwrap();
    }
    let mut cfg = testbed::config(|name| {
        let i = VIFS.iter().position(|v| *v == name).unwrap();
        Some(format!(
            "net_pcap{i},rx_pcap={d}/{name}_in.pcap,tx_pcap={d}/{name}_out.pcap",
            d = dir.display()
        ))
    });
    tweak(&mut cfg);
    let cfg_path = dir.join("vrouter.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();
    let stats = dir.join("stats.json");
    let out = Command::new(workspace_bin("vrouter"))
        .arg("run")
        .arg("--config")
        .arg(&cfg_path)
        .args([
            "--exit-idle-ms",
            "1500",
            "--mbufs",
            "4095",
            "--no-socket",
            "--stats-json",
        ])
        .arg(&stats)
        .args([
            "--",
            "--no-huge",
            "-m",
            "256",
            "-l",
            "0",
            "--file-prefix",
            &unique_prefix("vrrun"),
        ])
        .output()
        .expect("run vrouter");
    assert!(
        out.status.success(),
        "vrouter run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(stats).unwrap()).unwrap()
}

fn output(dir: &Path, name: &str) -> Vec<Vec<u8>> {
    pcap::read(dir.join(format!("{name}_out.pcap"))).unwrap()
}

#[test]
fn pcap_replay_through_the_daemon_forwards_encaps_decaps_and_answers_arp() {
    let dir = scratch("vrrun");
    let inner = ipv4_frame(
        MacAddr([2, 0xb, 0, 0, 0, 5]),
        gw(),
        REMOTE_IP,
        VM1_IP,
        17,
        9,
        4000,
        0,
        b"from-b",
    );
    let inputs = vec![
        (
            "vm1",
            vec![
                vm1_udp(VM2_IP, 4000, 53, b"to-vm2"),
                vm1_udp(REMOTE_IP, 4001, 7, b"to-remote"),
                arp_request(std::net::Ipv4Addr::new(10, 1, 1, 1)),
            ],
        ),
        (
            "fabric",
            vec![
                from_node_b(TunnelKind::MplsUdp, VM1_LABEL, &inner[14..]),
                from_node_b(TunnelKind::MplsGre, VM1_LABEL, &inner[14..]),
                from_node_b(TunnelKind::Vxlan, VNI, &inner),
                // Truncated: the outer IPv4 header says more bytes than the frame has.
                from_node_b(TunnelKind::MplsUdp, VM1_LABEL, &inner[14..])[..40].to_vec(),
            ],
        ),
    ];
    let stats = run(&dir, &inputs);

    // vm2 got the local packet, L2 rewritten and TTL decremented.
    let vm2 = output(&dir, "vm2");
    assert_eq!(vm2.len(), 1, "vm2 output");
    let p = SlicedPacket::from_ethernet(&vm2[0]).unwrap();
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("IPv4")
    };
    assert_eq!(ip.header().destination_addr(), VM2_IP);
    assert_eq!(ip.header().ttl(), 63);
    assert_eq!(&vm2[0][..6], &VM2_MAC.0);

    // The fabric got one MPLSoUDP packet with node B's label.
    let fabric = output(&dir, "fabric");
    assert_eq!(fabric.len(), 1, "fabric output");
    let p = SlicedPacket::from_ethernet(&fabric[0]).unwrap();
    let Some(NetSlice::Ipv4(outer)) = p.net else {
        panic!("outer IPv4")
    };
    assert_eq!(
        (
            outer.header().source_addr(),
            outer.header().destination_addr()
        ),
        (NODE_A, NODE_B)
    );
    let udp = &fabric[0][34..];
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 6635);
    assert_eq!(
        wire::mpls::Repr::parse(&udp[8..]).unwrap().label,
        REMOTE_LABEL
    );

    // tshark, told that UDP 6635 carries MPLS, decodes the same label and inner address.
    if let Ok(t) = Command::new("tshark")
        .arg("-r")
        .arg(dir.join("fabric_out.pcap"))
        .args([
            "-d",
            "udp.port==6635,mpls",
            "-T",
            "fields",
            "-e",
            "mpls.label",
            "-e",
            "ip.dst",
        ])
        .output()
    {
        let text = String::from_utf8_lossy(&t.stdout);
        assert!(
            t.status.success(),
            "tshark: {}",
            String::from_utf8_lossy(&t.stderr)
        );
        assert!(
            text.contains("20") && text.contains(&REMOTE_IP.to_string()),
            "tshark saw: {text}"
        );
    }

    // vm1 got the ARP answer and the packets from node B, decapsulated from MPLSoUDP,
    // MPLSoGRE and VXLAN alike.
    let vm1 = output(&dir, "vm1");
    assert_eq!(vm1.len(), 4, "vm1 output");
    assert!(
        vm1.iter().any(|f| f[12..14] == [0x08, 0x06] && f[21] == 2),
        "an ARP reply"
    );
    let decapped: Vec<_> = vm1.iter().filter(|f| f.ends_with(b"from-b")).collect();
    assert_eq!(decapped.len(), 3);
    for f in decapped {
        assert_eq!(&f[..6], &VM1_MAC.0);
        assert_eq!(
            f.len(),
            inner.len(),
            "exactly the inner frame, outer headers gone"
        );
    }

    // The daemon's own counters agree, and the malformed frame was counted, not fatal.
    assert_eq!(stats["rx"], 7);
    assert_eq!(stats["tx"], 6);
    assert_eq!(stats["arp_replies"], 1);
    assert_eq!(
        (stats["decap"].as_u64(), stats["encap"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(stats["drops"]["invalid_packet"], 1);
    vr_tests::assert_each_packet_counted_once(&stats);
    assert_eq!(stats["vifs"]["vm1"]["rx"], 3);
    assert_eq!(stats["vifs"]["fabric"]["tx"], 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_configuration_is_refused_with_the_object_named() {
    let dir = scratch("vrbadcfg");
    let mut cfg = testbed::config(|_| None);
    cfg.routes[0].nh = 999;
    let p = dir.join("bad.toml");
    std::fs::write(&p, toml::to_string(&cfg).unwrap()).unwrap();
    let out = Command::new(workspace_bin("vrouter"))
        .args(["run", "--config"])
        .arg(&p)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("route 10.1.1.3/32 in vrf 1") && err.contains("nh 999 does not exist"),
        "{err}"
    );
    std::fs::write(&p, "[[vif]]\nid = 'x'\n").unwrap();
    let out = Command::new(workspace_bin("vrouter"))
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("parsing"),
        "syntax error reported"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn policy_drops_vxlan_encap_and_ecmp_spread_through_the_daemon() {
    let dir = scratch("vrpol");
    let syn = wire::tcp::flags::SYN;
    let tcp = |dst, sport, dport| ipv4_frame(VM1_MAC, gw(), VM1_IP, dst, 6, sport, dport, syn, b"");
    let mut vm1 = vec![
        tcp(VM2_IP, 1000, 80),
        tcp(VM2_IP, 1001, 81),
        vm1_udp(VM2_IP, 1002, 9000, b"udp"),
    ];
    vm1.extend((0..10u16).map(|i| vm1_udp(REMOTE_IP, 3000 + i, 9001, b"vx")));
    vm1.extend((0..60u16).map(|i| tcp(VIP, 20000 + i, 80)));
    let stats = run_with(&dir, &[("vm1", vm1)], |cfg| {
        cfg.global.encap_priority = vec![Encap::Vxlan];
        cfg.policies.push(PolicyCfg {
            name: "sg-web".into(),
            rules: vec![RuleCfg {
                proto: Some(6),
                src: Default::default(),
                dst: Default::default(),
                sport: None,
                dport: Some((80, 80)),
                action: ActionCfg::Pass,
            }],
            default: ActionCfg::Deny,
            network: false,
        });
        cfg.vifs
            .iter_mut()
            .find(|v| v.name == "vm2")
            .unwrap()
            .ingress = vec!["sg-web".into()];
    });
    // TCP 81 and UDP to vm2 were denied by its security group, and counted.
    assert_eq!(stats["drops"]["policy_deny"], 2, "{stats}");

    // Everything on the fabric is VXLAN with node B's VNI.
    let fabric = output(&dir, "fabric");
    assert!(
        fabric.len() >= 10 + 10,
        "remote traffic and a share of the VIP: {}",
        fabric.len()
    );
    for f in &fabric {
        let udp = &f[34..];
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4789);
        assert_eq!(
            wire::vxlan::Repr::parse(&udp[8..]).unwrap().vni,
            REMOTE_LABEL
        );
    }
    // The 60 VIP connections spread over vm1, vm2 and node B.
    let vm2 = output(&dir, "vm2");
    let vm1 = output(&dir, "vm1");
    let vip_on = |frames: &[Vec<u8>]| {
        frames
            .iter()
            .filter(|f| f.len() >= 38 && f[36..38] == 80u16.to_be_bytes())
            .count()
    };
    let vip_fabric = fabric.len() - 10;
    let (a, b, c) = (vip_on(&vm1), vip_on(&vm2) - 1, vip_fabric);
    assert_eq!(a + b + c, 60, "vm1 {a} vm2 {b} node B {c}");
    assert!(
        a >= 3 && b >= 3 && c >= 3,
        "spread: vm1 {a} vm2 {b} node B {c}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
