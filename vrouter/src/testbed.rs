//! A small one-node topology and frame builders, for tests, benchmarks and the demo.
//!
//! ```text
//!  vif 2 vm1 10.1.1.3 --+                      +-- vif 0 fabric 192.0.2.1 -- node B 192.0.2.2
//!  vif 3 vm2 10.1.1.4 --+-- VRF 1 (VN red) ----+                             (10.1.2.0/24)
//!                       |   VIP 10.1.1.100 = ECMP{vm1, vm2, node B}
//!                       |   0.0.0.0/0 -> SNAT to 192.0.2.1        vif 1 vhost0 (VRF 0)
//! ```
//! Labels 17/18 and VNI 5001 lead to vm1/vm2 and VRF 1; node B's VMs are behind label 20.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::config::{
    Config, GlobalSection, LabelCfg, MemberCfg, NexthopCfg, NexthopKind, RouteCfg, VifCfg,
    VifKindCfg, VniCfg, VrfCfg,
};
use crate::flow::{AgingConfig, FlowTable};
use crate::nat::SnatPools;
use crate::packet::{PacketBuf, VecBuf};
use crate::pipeline::{Disposition, Pipeline};
use crate::tables::{
    GlobalConfig, NhId, TableReader, TableSizes, TablesWriter, TunnelKind, VifId, VrfId,
};
use crate::wire::{self, EtherType, IpProtocol, MacAddr, checksum};

/// Fabric vif.
pub const FABRIC: VifId = VifId(0);
/// Host vif (vhost0).
pub const HOST: VifId = VifId(1);
/// First VM's vif.
pub const VM1: VifId = VifId(2);
/// Second VM's vif.
pub const VM2: VifId = VifId(3);
/// The fabric VRF.
pub const FABRIC_VRF: VrfId = VrfId(0);
/// The VN's VRF.
pub const RED: VrfId = VrfId(1);
/// This node's fabric address.
pub const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The remote node's fabric address.
pub const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// vm1's address.
pub const VM1_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 3);
/// vm2's address.
pub const VM2_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 4);
/// A VM on node B.
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 5);
/// The service VIP (ECMP over vm1, vm2 and node B).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 100);
/// vm1's MAC.
pub const VM1_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x03]);
/// vm2's MAC.
pub const VM2_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x04]);
/// Our fabric MAC.
pub const FABRIC_MAC: MacAddr = MacAddr([0x02, 0xfa, 0, 0, 0, 0x01]);
/// Node B's fabric MAC.
pub const NODE_B_MAC: MacAddr = MacAddr([0x02, 0xfa, 0, 0, 0, 0x02]);
/// The fabric gateway's MAC (for SNAT).
pub const GATEWAY_MAC: MacAddr = MacAddr([0x02, 0xfa, 0, 0, 0, 0xfe]);
/// MPLS label of vm1.
pub const VM1_LABEL: u32 = 17;
/// MPLS label of vm2.
pub const VM2_LABEL: u32 = 18;
/// Label of node B's VMs (as B advertised it).
pub const REMOTE_LABEL: u32 = 20;
/// VXLAN VNI of the VN.
pub const VNI: u32 = 5001;
/// Nexthops.
pub const NH_VM1: NhId = NhId(1);
/// vm2 nexthop.
pub const NH_VM2: NhId = NhId(2);
/// Tunnel to node B.
pub const NH_NODE_B: NhId = NhId(3);
/// The VIP's composite.
pub const NH_VIP: NhId = NhId(5);
/// SNAT to the node's address.
pub const NH_SNAT: NhId = NhId(6);

/// The topology plus one lcore's pipeline.
#[derive(Debug)]
pub struct Testbed {
    /// Table writer.
    pub writer: TablesWriter,
    /// Reader for the pipeline.
    pub reader: TableReader,
    /// The pipeline.
    pub pipeline: Pipeline,
    /// SNAT pools.
    pub snat: Arc<SnatPools>,
}

/// The topology as a configuration; `device(name)` gives each vif's DPDK device (none
/// for the in-process testbed).
pub fn config(device: impl Fn(&str) -> Option<String>) -> Config {
    let vr_mac = GlobalConfig::default().vrouter_mac.to_string();
    let m = |x: MacAddr| x.to_string();
    let vif = |id: VifId, name: &str, kind, mac: String, vrf: VrfId, ip| VifCfg {
        id: id.0,
        name: name.into(),
        kind,
        device: device(name),
        mac,
        vrf: vrf.0,
        ip4: Some(ip),
        ip6: None,
        mtu: 1500,
        ingress: vec![],
        egress: vec![],
        attr: 0,
        vm_mac: None,
        allowed: vec![],
    };
    let nh = |id: NhId, kind| NexthopCfg { id: id.0, kind };
    let route = |prefix: String, nh: NhId, label| RouteCfg {
        vrf: RED.0,
        prefix,
        nh: nh.0,
        label,
        attr: 0,
    };
    Config {
        global: GlobalSection {
            encap_priority: vec![],
            vrouter_mac: None,
            fabric_vif: Some(FABRIC.0),
            host_vif: Some(HOST.0),
            max_vifs: None,
            vif_max_flows: None,
            vif_max_snat_ports: None,
            snat_ports: None,
        },
        vrfs: vec![VrfCfg { id: FABRIC_VRF.0 }, VrfCfg { id: RED.0 }],
        vifs: vec![
            vif(
                FABRIC,
                "fabric",
                VifKindCfg::Physical,
                m(FABRIC_MAC),
                FABRIC_VRF,
                NODE_A,
            ),
            vif(
                HOST,
                "vhost0",
                VifKindCfg::Host,
                m(FABRIC_MAC),
                FABRIC_VRF,
                NODE_A,
            ),
            vif(VM1, "vm1", VifKindCfg::Virtual, vr_mac.clone(), RED, VM1_IP),
            vif(VM2, "vm2", VifKindCfg::Virtual, vr_mac.clone(), RED, VM2_IP),
        ],
        nexthops: vec![
            nh(
                NH_VM1,
                NexthopKind::Encap {
                    vif: VM1.0,
                    dmac: m(VM1_MAC),
                    smac: vr_mac.clone(),
                },
            ),
            nh(
                NH_VM2,
                NexthopKind::Encap {
                    vif: VM2.0,
                    dmac: m(VM2_MAC),
                    smac: vr_mac,
                },
            ),
            nh(
                NH_NODE_B,
                NexthopKind::Tunnel {
                    vif: FABRIC.0,
                    src: NODE_A,
                    dst: NODE_B,
                    smac: m(FABRIC_MAC),
                    dmac: m(NODE_B_MAC),
                    encaps: vec![],
                    inner_dmac: None,
                },
            ),
            nh(NhId(4), NexthopKind::Discard),
            nh(
                NH_SNAT,
                NexthopKind::Snat {
                    vif: FABRIC.0,
                    ip: NODE_A,
                    smac: m(FABRIC_MAC),
                    dmac: m(GATEWAY_MAC),
                },
            ),
            nh(
                NH_VIP,
                NexthopKind::Composite {
                    members: vec![
                        MemberCfg {
                            nh: NH_VM1.0,
                            label: 0,
                            weight: 1,
                        },
                        MemberCfg {
                            nh: NH_VM2.0,
                            label: 0,
                            weight: 1,
                        },
                        MemberCfg {
                            nh: NH_NODE_B.0,
                            label: REMOTE_LABEL,
                            weight: 1,
                        },
                    ],
                },
            ),
        ],
        routes: vec![
            route(format!("{VM1_IP}/32"), NH_VM1, 0),
            route(format!("{VM2_IP}/32"), NH_VM2, 0),
            route("10.1.2.0/24".into(), NH_NODE_B, REMOTE_LABEL),
            route(format!("{VIP}/32"), NH_VIP, 0),
            route("0.0.0.0/0".into(), NH_SNAT, 0),
        ],
        labels: vec![
            LabelCfg {
                label: VM1_LABEL,
                nh: NH_VM1.0,
            },
            LabelCfg {
                label: VM2_LABEL,
                nh: NH_VM2.0,
            },
        ],
        vnis: vec![VniCfg {
            vni: VNI,
            vrf: RED.0,
        }],
        policies: vec![],
        attrs: vec![],
    }
}

/// Small tables holding the topology, published.
pub fn writer() -> TablesWriter {
    let mut w = TablesWriter::new(TableSizes {
        vifs: 64,
        vrfs: 16,
        nexthops: 1024,
        labels: 1024,
        attrs: 64,
    });
    config(|_| None)
        .apply(&mut w)
        .expect("the testbed configuration applies");
    w.publish();
    w
}

impl Testbed {
    /// Builds the topology with a flow table of `flows` entries.
    pub fn new(flows: u32) -> Testbed {
        Self::with_snat(flows, SnatPools::default())
    }

    /// Builds the topology with given SNAT pools.
    pub fn with_snat(flows: u32, snat: SnatPools) -> Testbed {
        let w = writer();
        let snat = Arc::new(snat);
        let table = Arc::new(FlowTable::with_snat(flows, Arc::clone(&snat)));
        let pipeline = Pipeline::new(table, Arc::clone(&snat), AgingConfig::millis());
        let reader = w.reader();
        Testbed {
            writer: w,
            reader,
            pipeline,
            snat,
        }
    }

    /// Runs frames received on `vif` through the pipeline; returns each packet's
    /// disposition and bytes afterwards.
    pub fn run(&mut self, vif: VifId, frames: &[Vec<u8>], now: u64) -> Vec<(Disposition, Vec<u8>)> {
        let mut bufs: Vec<VecBuf> = frames.iter().map(|f| VecBuf::new(f)).collect();
        let mut out =
            vec![Disposition::Drop(crate::pipeline::DropReason::InvalidPacket); bufs.len()];
        let snap = Arc::clone(self.reader.load());
        self.pipeline.process(&snap, vif, &mut bufs, &mut out, now);
        out.into_iter()
            .zip(bufs.iter().map(|b| b.data().to_vec()))
            .collect()
    }

    /// Adds a service (a native load balancer, nexthop `id`) at `vip` in the VN, balanced
    /// over `members` (nexthop, label, address) with `ports` (protocol, port, target
    /// port), and publishes.
    pub fn add_service(
        &mut self,
        (id, vip): (u32, Ipv4Addr),
        members: &[(NhId, u32, Ipv4Addr)],
        ports: &[(u8, u16, u16)],
        affinity: bool,
    ) {
        let cfg = crate::config::NexthopCfg {
            id,
            kind: NexthopKind::Service {
                members: members
                    .iter()
                    .map(|&(nh, label, addr)| crate::config::ServiceMemberCfg {
                        nh: nh.0,
                        label,
                        weight: 1,
                        addr: addr.into(),
                    })
                    .collect(),
                ports: ports
                    .iter()
                    .map(|&(proto, port, target)| crate::config::ServicePortCfg {
                        proto,
                        port,
                        target,
                    })
                    .collect(),
                affinity,
            },
        };
        crate::config::apply_nexthop(&mut self.writer, &cfg).expect("the service applies");
        let route = crate::tables::RouteEntry {
            nh: NhId(id),
            label: 0,
            attr: 0,
        };
        self.writer
            .add_route(RED, vip.into(), 32, route)
            .expect("the VIP route applies");
        self.writer.publish();
    }

    /// Runs what the pipeline gave back after the bursts so far (held fragments whose
    /// first one came, the pieces of packets cut to fit their path), as the runtime does.
    pub fn released(&mut self, now: u64) -> Vec<(Disposition, Vec<u8>)> {
        let snap = Arc::clone(self.reader.load());
        let mut out = Vec::new();
        while let Some(h) = self.pipeline.next_released() {
            let mut buf = VecBuf::new(h.bytes());
            let d = self.pipeline.resume(&snap, h, &mut buf, now);
            out.push((d, buf.data().to_vec()));
        }
        out
    }

    /// Runs one frame.
    pub fn run_one(&mut self, vif: VifId, frame: Vec<u8>, now: u64) -> (Disposition, Vec<u8>) {
        self.run(vif, &[frame], now).remove(0)
    }
}

/// An Ethernet + IPv4 + (TCP|UDP|ICMP echo) frame with valid checksums, built with our
/// emitters. `flags` are TCP flags (proto 6); for ICMP `sport` is the echo identifier.
#[allow(clippy::too_many_arguments)]
pub fn ipv4_frame(
    smac: MacAddr,
    dmac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let l4_len = match proto {
        6 => 20,
        _ => 8,
    } + payload.len();
    let mut f = vec![0u8; 14 + 20 + l4_len];
    wire::ethernet::Repr {
        src: smac,
        dst: dmac,
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut f[..14]));
    wire::ipv4::Repr {
        ident: 1,
        ..wire::ipv4::Repr::tunnel(src, dst, IpProtocol::from(proto), l4_len)
    }
    .emit(&mut f[14..34])
    .expect("ipv4 header");
    let l4 = &mut f[34..];
    let ps = checksum::pseudo_v4(src, dst, proto, l4_len as u16);
    match proto {
        6 => {
            wire::tcp::Repr {
                src_port: sport,
                dst_port: dport,
                flags,
                seq: 1,
                ack: 0,
            }
            .emit(l4)
            .expect("tcp");
            l4[20..].copy_from_slice(payload);
            wire::tcp::Packet::new_unchecked(l4).fill_checksum(ps);
        }
        1 => {
            l4[0] = wire::icmp::ECHO_REQUEST_V4;
            l4[4..6].copy_from_slice(&sport.to_be_bytes());
            l4[6..8].copy_from_slice(&1u16.to_be_bytes());
            l4[8..].copy_from_slice(payload);
            wire::icmp::Packet::new_unchecked(l4).fill_checksum_v4();
        }
        _ => {
            wire::udp::Repr {
                src_port: sport,
                dst_port: dport,
                payload_len: payload.len(),
            }
            .emit(l4)
            .expect("udp");
            l4[8..].copy_from_slice(payload);
            wire::udp::Packet::new_unchecked(l4).fill_checksum(ps);
        }
    }
    f
}

/// An ARP request from vm1 for `target`.
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&VM1_MAC.0);
    f.extend_from_slice(&[0x08, 0x06]);
    f.resize(42, 0);
    let r = wire::arp::Repr {
        op: wire::arp::Operation::Request,
        sha: VM1_MAC,
        spa: VM1_IP,
        tha: MacAddr::ZERO,
        tpa: target,
    };
    // 42 bytes hold the request: emit cannot fail.
    let _ = r.emit(&mut f[14..]);
    f
}

/// A UDP frame from vm1's MAC to the vrouter (the VM's gateway).
pub fn vm1_udp(dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let gw = GlobalConfig::default().vrouter_mac;
    ipv4_frame(VM1_MAC, gw, VM1_IP, dst, 17, sport, dport, 0, payload)
}

/// Wraps an inner packet (IP for MPLS, Ethernet for VXLAN) in node B's tunnel to us.
pub fn from_node_b(kind: TunnelKind, label: u32, inner: &[u8]) -> Vec<u8> {
    let tunnel = match kind {
        TunnelKind::MplsUdp => 8 + 4,
        TunnelKind::MplsGre => 4 + 4,
        TunnelKind::Vxlan => 8 + 8,
    };
    let mut f = vec![0u8; 14 + 20 + tunnel];
    wire::ethernet::Repr {
        src: NODE_B_MAC,
        dst: FABRIC_MAC,
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut wire::ethernet::Frame::new_unchecked(&mut f[..14]));
    let proto = if kind == TunnelKind::MplsGre {
        IpProtocol::Gre
    } else {
        IpProtocol::Udp
    };
    wire::ipv4::Repr::tunnel(NODE_B, NODE_A, proto, tunnel + inner.len())
        .emit(&mut f[14..34])
        .expect("outer ipv4");
    let t = &mut f[34..];
    let mpls = wire::mpls::Repr {
        label,
        tc: 0,
        bos: true,
        ttl: 64,
    };
    match kind {
        TunnelKind::MplsUdp => {
            wire::udp::Repr {
                src_port: 50000,
                dst_port: 6635,
                payload_len: 4 + inner.len(),
            }
            .emit(t)
            .expect("udp");
            mpls.emit(&mut t[8..]).expect("label");
        }
        TunnelKind::MplsGre => {
            wire::gre::Repr::emit_base(wire::gre::PROTO_MPLS, t).expect("gre");
            mpls.emit(&mut t[4..]).expect("label");
        }
        TunnelKind::Vxlan => {
            wire::udp::Repr {
                src_port: 50000,
                dst_port: 4789,
                payload_len: 8 + inner.len(),
            }
            .emit(t)
            .expect("udp");
            wire::vxlan::Repr { vni: label }
                .emit(&mut t[8..])
                .expect("vni");
        }
    }
    f.extend_from_slice(inner);
    f
}
